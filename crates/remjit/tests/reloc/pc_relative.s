# PC-relative relocations at the ends of their ranges: R_X86_64_PC32, PC16, PC8, PC64.
# .text is first in the slab, so each field's address is known: 0x40000000 + offset.
# ARGS: -slab-address=0x40000000 -slab-allocate 1Mb -slab-page-size 4096
# ARGS: -abs pc32_hi=0xbfffffff -abs pc32_lo=0xffffffffc0000004
# ARGS: -abs pc16_hi=0x40008007 -abs pc16_lo=0x3fff800a
# ARGS: -abs pc8_hi=0x4000008b -abs pc8_lo=0x3fffff8d -abs far=0x123456789abcdef0

        .text
# jitlink-check: section_addr(pc_relative.o, .text) = 0x40000000
# jitlink-check: pc32_max = 0x40000000
# jitlink-check: *{4}pc32_max = 0x7fffffff
# jitlink-check: *{4}pc32_max = (pc32_hi - pc32_max)[31:0]
pc32_max: .long pc32_hi - .
# jitlink-check: *{4}pc32_min = 0x80000000
pc32_min: .long pc32_lo - .
# jitlink-check: *{2}pc16_max = 0x7fff
pc16_max: .word pc16_hi - .
# jitlink-check: *{2}pc16_min = 0x8000
pc16_min: .word pc16_lo - .
# jitlink-check: *{1}pc8_max = 0x7f
pc8_max: .byte pc8_hi - .
# jitlink-check: *{1}pc8_min = 0x80
pc8_min: .byte pc8_lo - .
# jitlink-check: *{8}pc64 = far - pc64
pc64:   .quad far - .
# With an addend, and against a local symbol of another section.
# jitlink-check: *{4}pc32_local = (data_word + 8 - pc32_local)[31:0]
pc32_local: .long data_word + 8 - .
# RIP-relative data access: the displacement is relative to the next instruction.
# jitlink-check: decode_operand(rip_load, 4) = data_word - next_pc(rip_load)
rip_load:
        movl data_word(%rip), %eax

        .data
        .quad 0
data_word: .long 42
