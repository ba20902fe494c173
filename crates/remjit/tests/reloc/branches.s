# Calls and jumps (R_X86_64_PLT32): direct when the target is in reach, through a stub (a
# GOT slot and `jmp *slot(%rip)`) when an absolute target is more than +-2 GiB away.
# ARGS: -slab-address=0x40000000 -abs near=0x40100000 -abs far=0x7fff12345678

        .text
        .globl local_func
        .type local_func,@function
local_func:
        retq
        .size local_func, .-local_func

# jitlink-check: decode_operand(call_local, 0) = local_func - next_pc(call_local)
call_local:
        callq local_func@PLT
# jitlink-check: decode_operand(call_near, 0) = near - next_pc(call_near)
call_near:
        callq near@PLT
# jitlink-check: decode_operand(call_far, 0) = stub_addr(branches.o, far) - next_pc(call_far)
call_far:
        callq far@PLT
# jitlink-check: decode_operand(jmp_far, 0) = stub_addr(branches.o, far) - next_pc(jmp_far)
jmp_far:
        jmp far@PLT

# A function of the executing process (libc's puts, far from the slab) goes through a stub.
# jitlink-check: decode_operand(call_libc, 0) = stub_addr(branches.o, puts) - next_pc(call_libc)
# jitlink-check: *{8}got_addr(branches.o, puts) = puts
call_libc:
        callq puts@PLT

# An IFUNC is always called through its stub; its slot is filled when the module is finalized
# by running the resolver. Under -noexec no resolver runs: the slot holds the resolver itself.
        .globl ifn
        .type ifn,@gnu_indirect_function
ifn:
        leaq local_func(%rip), %rax
        retq
# jitlink-check: decode_operand(call_ifunc, 0) = stub_addr(branches.o, ifn) - next_pc(call_ifunc)
# jitlink-check: *{8}got_addr(branches.o, ifn) = ifn
call_ifunc:
        callq ifn@PLT

# The stub jumps through the GOT slot, which holds the target.
# jitlink-check: *{2}stub_addr(branches.o, far) = 0x25ff
# jitlink-check: *{4}(stub_addr(branches.o, far) + 2) = \
# jitlink-check:     (got_addr(branches.o, far) - (stub_addr(branches.o, far) + 6))[31:0]
# jitlink-check: *{8}got_addr(branches.o, far) = far
