# R_X86_64_SIZE32 and SIZE64 (the symbol's size plus the addend), and R_X86_64_NONE.
# ARGS:

        .data
# Global: llvm-mc would turn @SIZE of a local into the size of its section's symbol (0).
        .globl table
        .type table,@object
table:  .zero 24
        .size table, 24

# jitlink-check: *{4}size32 = 24
size32: .long table@SIZE
# The largest value SIZE32 takes.
# jitlink-check: *{4}size32_max = 0xffffffff
size32_max: .long table@SIZE + 0xffffffe7
# jitlink-check: *{8}size64 = 24 + 100
size64: .quad table@SIZE + 100
        .text
# jitlink-check: decode_operand(size_imm, 1) = 24
size_imm:
        movl $table@SIZE, %eax
# R_X86_64_NONE: nothing is written.
# jitlink-check: *{4}none = 0x12345678
none:
        .reloc none, R_X86_64_NONE, table
        .long 0x12345678
