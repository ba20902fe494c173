# Each code model's access patterns, as GCC emits them. The slab sits below 2 GiB so that the
# small non-PIC model's 32-bit absolute addresses fit.
# ARGS: -slab-address=0x40000000

        .text
# Small, non-PIC: absolute 32-bit addresses (R_X86_64_32 zero-extended, 32S sign-extended).
# jitlink-check: decode_operand(small_imm, 1) = small_var
small_imm:
        movl $small_var, %eax
# jitlink-check: decode_operand(small_indexed, 4) = small_var
small_indexed:
        movl small_var(,%rdi,4), %eax
# Small, PIC: RIP-relative data (PC32) and functions called directly (PLT32).
# jitlink-check: decode_operand(small_pic, 4) = small_var - next_pc(small_pic)
small_pic:
        movl small_var(%rip), %eax
# jitlink-check: decode_operand(small_pic_call, 0) = helper - next_pc(small_pic_call)
small_pic_call:
        callq helper@PLT
# Medium, non-PIC: large data (.ldata) by a 64-bit absolute address.
# jitlink-check: decode_operand(medium_big, 1) = big_var
medium_big:
        movabsq $big_var, %rax
# Medium, PIC: the GOT's address RIP-relative (GOTPC32), large data at a GOTOFF64 from it.
# jitlink-check: decode_operand(medium_got, 4) = _GLOBAL_OFFSET_TABLE_ - next_pc(medium_got)
medium_got:
        leaq _GLOBAL_OFFSET_TABLE_(%rip), %rdx
# jitlink-check: decode_operand(medium_gotoff, 1) = big_var - _GLOBAL_OFFSET_TABLE_
medium_gotoff:
        movabsq $big_var@GOTOFF, %rax
# Large, PIC: the GOT's address from GOTPC64, then data through GOT64 and calls via PLTOFF64.
large_base:
        leaq large_base(%rip), %rbx
# jitlink-check: decode_operand(large_gotpc, 1) = _GLOBAL_OFFSET_TABLE_ - large_base
large_gotpc:
        movabsq $_GLOBAL_OFFSET_TABLE_ - large_base, %r11
        addq %r11, %rbx
# jitlink-check: decode_operand(large_got, 1) = got_addr(code_models.o, big_var) - _GLOBAL_OFFSET_TABLE_
# jitlink-check: *{8}got_addr(code_models.o, big_var) = big_var
large_got:
        movabsq $big_var@GOT, %rax
        movq (%rbx,%rax), %rax
# jitlink-check: decode_operand(large_call, 1) = helper - _GLOBAL_OFFSET_TABLE_
large_call:
        movabsq $helper@PLTOFF, %rax
        addq %rbx, %rax
        callq *%rax
        retq

        .globl helper
        .type helper,@function
helper:
        retq
        .size helper, .-helper

        .data
small_var:
        .long 1
        .section .ldata,"awl",@progbits
        .globl big_var
big_var:
        .quad 2
