# Absolute relocations at the ends of their ranges: R_X86_64_64, 32, 32S, 16, 8.
# ARGS: -abs big=0x123456789abcdef0 -abs u32max=0xffffffff -abs s32min=0xffffffff80000000
# ARGS: -abs s32max=0x7fffffff -abs u16max=0xffff -abs s16min=0xffffffffffff8000
# ARGS: -abs u8max=0xff -abs s8min=0xffffffffffffff80

        .text
# R_X86_64_32S in code (the small non-PIC model), sign-extended by the CPU.
# jitlink-check: decode_operand(load_s32min, 4) = s32min
load_s32min:
        movq s32min, %rax
# jitlink-check: decode_operand(load_s32max, 4) = s32max
load_s32max:
        movq s32max(,%rdi,8), %rax
# R_X86_64_32 as an immediate.
# As in LLVM, a 32-bit immediate decodes sign-extended.
# jitlink-check: decode_operand(imm_u32max, 1) = 0xffffffffffffffff
# jitlink-check: *{4}(imm_u32max + 1) = 0xffffffff
imm_u32max:
        movl $u32max, %eax
# R_X86_64_64 as movabs's immediate (the medium and large models).
# jitlink-check: decode_operand(imm_big, 1) = big - 16
imm_big:
        movabsq $big - 16, %rax

        .data
# jitlink-check: *{8}d64 = big + 5
d64:    .quad big + 5
# jitlink-check: *{4}d32 = 0xffffffff
d32:    .long u32max
# jitlink-check: *{2}d16_max = 0xffff
d16_max: .word u16max
# jitlink-check: *{2}d16_min = 0x8000
d16_min: .word s16min
# jitlink-check: *{1}d8_max = 0xff
d8_max: .byte u8max
# jitlink-check: *{1}d8_min = 0x80
d8_min: .byte s8min
# A local symbol's address plus an addend.
# jitlink-check: *{8}d64_local = d8_min + 0x10
d64_local: .quad d8_min + 0x10
