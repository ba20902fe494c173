# Thread-local access that a JIT'd module supports: general dynamic (R_X86_64_TLSGD), local
# dynamic (TLSLD with DTPOFF32/DTPOFF64) and descriptors (GOTPC32_TLSDESC, TLSDESC_CALL).
# Each refers to a pair {module id, offset} or a descriptor {resolver, argument, id, offset}
# that the linker made; the module id is filled in when the module's TLS is registered.
# ARGS:

        .section .tbss,"awT",@nobits
        .p2align 3
tls_a:  .zero 8
tls_b:  .zero 8

        .text
# General dynamic: the pair of tls_b holds its offset, 8.
# jitlink-check: *{8}(next_pc(gd_lea) + decode_operand(gd_lea, 4) + 8) = 8
gd_lea:
        data16 leaq tls_b@tlsgd(%rip), %rdi
gd_call:
        data16 data16 rex64 callq __tls_get_addr@PLT

# Local dynamic: the module's pair has offset 0; DTPOFF gives each variable's offset.
# jitlink-check: *{8}(next_pc(ld_lea) + decode_operand(ld_lea, 4) + 8) = 0
ld_lea:
        leaq tls_a@tlsld(%rip), %rdi
        callq __tls_get_addr@PLT
# jitlink-check: decode_operand(ld_dtpoff32, 4) = 8
ld_dtpoff32:
        leaq tls_b@dtpoff(%rax), %rcx
# jitlink-check: decode_operand(ld_dtpoff64, 1) = 8
ld_dtpoff64:
        movabsq $tls_b@dtpoff, %rdx

# Descriptor: its argument word points at its own {id, offset} half, offset 8.
# jitlink-check: *{8}(next_pc(desc_lea) + decode_operand(desc_lea, 4) + 8) = \
# jitlink-check:     next_pc(desc_lea) + decode_operand(desc_lea, 4) + 16
# jitlink-check: *{8}(next_pc(desc_lea) + decode_operand(desc_lea, 4) + 24) = 8
desc_lea:
        leaq tls_b@tlsdesc(%rip), %rax
# TLSDESC_CALL writes nothing: the call stays `call *(%rax)`.
# jitlink-check: *{2}desc_call = 0x10ff
desc_call:
        call *tls_b@tlscall(%rax)
