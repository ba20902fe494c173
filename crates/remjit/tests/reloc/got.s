# GOT relocations: R_X86_64_GOTPCREL, GOTPCRELX and REX_GOTPCRELX (relaxed and not),
# GOTPCREL64, GOT32, GOT64, GOTPLT64, GOTPC32, GOTPC64, GOTOFF64, PLTOFF64.
# ARGS: -slab-address=0x40000000 -abs ext=0x7fff00001000 -abs near=0x40100000

        .text
# Global: llvm-mc would turn `.reloc` references to a local into its section's symbol.
        .globl target
        .type target,@function
target:
        retq
        .size target, .-target

# Plain GOTPCREL is never relaxed: the load goes through the GOT entry.
# jitlink-check: decode_operand(gotpcrel, 4) = got_addr(got.o, target) - next_pc(gotpcrel)
# jitlink-check: *{8}got_addr(got.o, target) = target
gotpcrel:
        .reloc gotpcrel + 3, R_X86_64_GOTPCREL, target - 4
        movq 0(%rip), %rax

# REX_GOTPCRELX mov of a reachable symbol becomes `lea target(%rip), %rax`.
# jitlink-check: *{1}(mov_relaxed + 1) = 0x8d
# jitlink-check: decode_operand(mov_relaxed, 4) = target - next_pc(mov_relaxed)
mov_relaxed:
        movq target@GOTPCREL(%rip), %rax
# GOTPCRELX (no REX) mov, relaxed the same way.
# jitlink-check: *{1}mov32_relaxed = 0x8d
# jitlink-check: decode_operand(mov32_relaxed, 4) = target - next_pc(mov32_relaxed)
mov32_relaxed:
        movl target@GOTPCREL(%rip), %eax
# `call *target@GOTPCREL(%rip)` becomes `addr32 call target`.
# jitlink-check: *{2}call_relaxed = 0xe867
# jitlink-check: decode_operand(call_relaxed, 0) = target - next_pc(call_relaxed)
call_relaxed:
        call *target@GOTPCREL(%rip)
# `jmp *target@GOTPCREL(%rip)` becomes `jmp target; nop`.
# jitlink-check: *{1}jmp_relaxed = 0xe9
# jitlink-check: decode_operand(jmp_relaxed, 0) = target - next_pc(jmp_relaxed)
# jitlink-check: *{1}(jmp_relaxed + 5) = 0x90
jmp_relaxed:
        jmp *target@GOTPCREL(%rip)

# An absolute symbol in reach is relaxed too (as JITLink does): `lea near(%rip), %rcx`.
# jitlink-check: *{1}(mov_abs_relaxed + 1) = 0x8d
# jitlink-check: decode_operand(mov_abs_relaxed, 4) = near - next_pc(mov_abs_relaxed)
mov_abs_relaxed:
        movq near@GOTPCREL(%rip), %rcx

# Not relaxable: an instruction other than mov/call/jmp keeps the GOT load.
# jitlink-check: *{1}(add_kept + 1) = 0x03
# jitlink-check: decode_operand(add_kept, 5) = got_addr(got.o, target) - next_pc(add_kept)
add_kept:
        addq target@GOTPCREL(%rip), %rax
# Not relaxable: an absolute symbol out of reach stays behind its GOT entry.
# jitlink-check: *{1}(mov_abs_kept + 1) = 0x8b
# jitlink-check: decode_operand(mov_abs_kept, 4) = got_addr(got.o, ext) - next_pc(mov_abs_kept)
# jitlink-check: *{8}got_addr(got.o, ext) = ext
mov_abs_kept:
        movq ext@GOTPCREL(%rip), %rax
# Relaxable form, but the target (libc's puts) is out of reach: the GOT load stays.
# jitlink-check: *{1}(mov_far_kept + 1) = 0x8b
# jitlink-check: decode_operand(mov_far_kept, 4) = got_addr(got.o, puts) - next_pc(mov_far_kept)
# jitlink-check: *{8}got_addr(got.o, puts) = puts
mov_far_kept:
        movq puts@GOTPCREL(%rip), %rax
# Not relaxable: the call through the GOT to an absolute symbol out of reach stays indirect.
# jitlink-check: *{2}call_abs_kept = 0x15ff
# jitlink-check: decode_operand(call_abs_kept, 3) = got_addr(got.o, ext) - next_pc(call_abs_kept)
call_abs_kept:
        call *ext@GOTPCREL(%rip)

# The large code model: GOT address from GOTPC64, then GOTOFF64, GOT64 and PLTOFF64.
# jitlink-check: decode_operand(gotpc64, 1) = _GLOBAL_OFFSET_TABLE_ - large_base
large_base:
        leaq large_base(%rip), %rbx
gotpc64:
        movabsq $_GLOBAL_OFFSET_TABLE_ - large_base, %r11
# jitlink-check: decode_operand(gotoff64, 1) = target - _GLOBAL_OFFSET_TABLE_
gotoff64:
        movabsq $target@GOTOFF, %rax
# jitlink-check: decode_operand(got64, 1) = got_addr(got.o, ext) - _GLOBAL_OFFSET_TABLE_
got64:
        movabsq $ext@GOT, %rax
# A local function needs no stub: PLTOFF64 is its address from the GOT base.
# jitlink-check: decode_operand(pltoff64, 1) = target - _GLOBAL_OFFSET_TABLE_
pltoff64:
        movabsq $target@PLTOFF, %rax
# A function of the executing process goes through its stub: PLTOFF64 is the stub's address.
# jitlink-check: decode_operand(pltoff64_libc, 1) = stub_addr(got.o, puts) - _GLOBAL_OFFSET_TABLE_
pltoff64_libc:
        movabsq $puts@PLTOFF, %rax
# GOTPC32: the GOT's address, PC-relative.
# jitlink-check: decode_operand(gotpc32, 4) = _GLOBAL_OFFSET_TABLE_ - next_pc(gotpc32)
gotpc32:
        leaq _GLOBAL_OFFSET_TABLE_(%rip), %r15

        .data
# jitlink-check: *{4}got32 = got_addr(got.o, ext) - _GLOBAL_OFFSET_TABLE_
got32:  .long ext@GOT
# jitlink-check: *{8}gotplt64 = got_addr(got.o, ext) - _GLOBAL_OFFSET_TABLE_
gotplt64:
        .reloc gotplt64, R_X86_64_GOTPLT64, ext
        .quad 0
# jitlink-check: *{8}gotpcrel64 = got_addr(got.o, ext) + 8 - gotpcrel64
gotpcrel64:
        .reloc gotpcrel64, R_X86_64_GOTPCREL64, ext + 8
        .quad 0
