//! The fixup stage: the x86-64 relocation table (formula and allowed range per type), GOT
//! relaxation, and range-checked writes into working memory.

use object::elf;

/// How a relocation's value is computed. Letters as in the x86-64 psABI: S symbol, A addend,
/// P place, G GOT entry offset, GOT the GOT's address, L the stub ("PLT entry"), Z symbol size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formula {
    /// Nothing to do.
    None,
    /// S + A.
    Absolute,
    /// S + A - P.
    PcRelative,
    /// L + A - P (S + A - P when the target is reachable directly).
    Branch,
    /// G + GOT + A - P.
    GotPcRel,
    /// G + GOT + A - P, or S + A - P with the instruction relaxed from a GOT load.
    GotPcRelRelaxable,
    /// G + A.
    GotOffset,
    /// S + A - GOT.
    GotRelative,
    /// GOT + A - P.
    GotPc,
    /// L + A - GOT.
    PltGotRelative,
    /// Z + A.
    Size,
    /// Address of the general-dynamic TLS pair + A - P.
    TlsGd,
    /// Address of the local-dynamic TLS pair + A - P.
    TlsLd,
    /// Offset of S in its module's TLS block + A.
    DtpOff,
    /// Address of the TLS descriptor + A - P.
    TlsDesc,
    /// Marker on the descriptor call: nothing to write.
    TlsDescCall,
    /// Static TLS models (initial- and local-exec): not possible in a JIT'd module.
    StaticTls,
}

/// What a value must fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// Nothing written.
    Zero,
    /// 8 bits, signed or unsigned.
    B8,
    /// 8 bits signed (PC-relative).
    S8,
    /// 16 bits, signed or unsigned.
    B16,
    /// 16 bits signed.
    S16,
    /// 32 bits zero-extended.
    U32,
    /// 32 bits sign-extended.
    S32,
    /// 64 bits.
    B64,
}

impl Width {
    /// Bytes written.
    pub fn bytes(self) -> usize {
        match self {
            Width::Zero => 0,
            Width::B8 | Width::S8 => 1,
            Width::B16 | Width::S16 => 2,
            Width::U32 | Width::S32 => 4,
            Width::B64 => 8,
        }
    }

    /// Whether `v` (as a two's-complement 64-bit value) fits.
    pub fn fits(self, v: u64) -> bool {
        let s = v as i64;
        match self {
            Width::Zero | Width::B64 => true,
            Width::B8 => (-128..=255).contains(&s),
            Width::S8 => (-128..=127).contains(&s),
            Width::B16 => (-32768..=65535).contains(&s),
            Width::S16 => (-32768..=32767).contains(&s),
            Width::U32 => v <= u64::from(u32::MAX),
            Width::S32 => i32::try_from(s).is_ok(),
        }
    }

    /// Human description of the range, for errors.
    pub fn describe(self) -> &'static str {
        match self {
            Width::Zero => "",
            Width::B8 => "8 bits",
            Width::S8 => "a signed 8-bit value",
            Width::B16 => "16 bits",
            Width::S16 => "a signed 16-bit value",
            Width::U32 => "an unsigned 32-bit value (below 4 GiB)",
            Width::S32 => "a signed 32-bit value (+-2 GiB)",
            Width::B64 => "64 bits",
        }
    }
}

/// A row of the relocation table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelocKind {
    /// How the value is computed.
    pub formula: Formula,
    /// Where it must fit.
    pub width: Width,
}

/// The relocation table: `None` for types remjit does not apply.
pub fn reloc_kind(r_type: u32) -> Option<RelocKind> {
    use Formula as F;
    use Width as W;
    let (formula, width) = match r_type {
        elf::R_X86_64_NONE => (F::None, W::Zero),
        elf::R_X86_64_64 => (F::Absolute, W::B64),
        elf::R_X86_64_32 => (F::Absolute, W::U32),
        elf::R_X86_64_32S => (F::Absolute, W::S32),
        elf::R_X86_64_16 => (F::Absolute, W::B16),
        elf::R_X86_64_8 => (F::Absolute, W::B8),
        elf::R_X86_64_PC64 => (F::PcRelative, W::B64),
        elf::R_X86_64_PC32 => (F::PcRelative, W::S32),
        elf::R_X86_64_PC16 => (F::PcRelative, W::S16),
        elf::R_X86_64_PC8 => (F::PcRelative, W::S8),
        elf::R_X86_64_PLT32 => (F::Branch, W::S32),
        elf::R_X86_64_PLTOFF64 => (F::PltGotRelative, W::B64),
        elf::R_X86_64_GOTPCREL => (F::GotPcRel, W::S32),
        elf::R_X86_64_GOTPCRELX | elf::R_X86_64_REX_GOTPCRELX => (F::GotPcRelRelaxable, W::S32),
        elf::R_X86_64_GOTPCREL64 => (F::GotPcRel, W::B64),
        elf::R_X86_64_GOT32 => (F::GotOffset, W::S32),
        elf::R_X86_64_GOT64 | elf::R_X86_64_GOTPLT64 => (F::GotOffset, W::B64),
        elf::R_X86_64_GOTOFF64 => (F::GotRelative, W::B64),
        elf::R_X86_64_GOTPC32 => (F::GotPc, W::S32),
        elf::R_X86_64_GOTPC64 => (F::GotPc, W::B64),
        elf::R_X86_64_SIZE32 => (F::Size, W::U32),
        elf::R_X86_64_SIZE64 => (F::Size, W::B64),
        elf::R_X86_64_TLSGD => (F::TlsGd, W::S32),
        elf::R_X86_64_TLSLD => (F::TlsLd, W::S32),
        elf::R_X86_64_DTPOFF32 => (F::DtpOff, W::S32),
        elf::R_X86_64_DTPOFF64 => (F::DtpOff, W::B64),
        elf::R_X86_64_GOTPC32_TLSDESC => (F::TlsDesc, W::S32),
        elf::R_X86_64_TLSDESC_CALL => (F::TlsDescCall, W::Zero),
        elf::R_X86_64_GOTTPOFF | elf::R_X86_64_TPOFF32 | elf::R_X86_64_TPOFF64 => {
            (F::StaticTls, W::Zero)
        }
        _ => return None,
    };
    Some(RelocKind { formula, width })
}

/// Writes `value` little-endian with the width's size at `at` in `mem`.
/// The caller has checked bounds and range.
pub fn write_value(mem: &mut [u8], at: usize, width: Width, value: u64) {
    let n = width.bytes();
    mem[at..at + n].copy_from_slice(&value.to_le_bytes()[..n]);
}

/// How a GOT load can be rewritten when the target is reachable directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relaxation {
    /// `mov foo@GOTPCREL(%rip), %reg` -> `lea foo(%rip), %reg`.
    MovToLea,
    /// `call *foo@GOTPCREL(%rip)` -> `addr32 call foo`.
    CallToDirect,
    /// `jmp *foo@GOTPCREL(%rip)` -> `jmp foo; nop`.
    JmpToDirect,
}

/// Which relaxation the instruction bytes before a GOTPCRELX field allow. `code` is the
/// relocated section alone (never its neighbours), `field` the offset of the 32-bit
/// displacement in it, and `prefix_bytes` the bytes the instruction has before its ModRM byte
/// and opcode (1 for `R_X86_64_REX_GOTPCRELX`, whose REX prefix must lie in the section too).
/// `None` when the bytes do not fit in the section or name no known instruction.
pub fn relaxation_for(code: &[u8], field: usize, prefix_bytes: usize) -> Option<Relaxation> {
    if field < 2 + prefix_bytes || field.checked_add(4)? > code.len() {
        return None;
    }
    let (op, modrm) = (code[field - 2], code[field - 1]);
    match (op, modrm) {
        // mod = 00, r/m = 101: RIP-relative.
        (0x8b, m) if m & 0xc7 == 0x05 => Some(Relaxation::MovToLea),
        (0xff, 0x15) => Some(Relaxation::CallToDirect),
        (0xff, 0x25) => Some(Relaxation::JmpToDirect),
        _ => None,
    }
}

/// Rewrites the instruction around the displacement at `field` and writes a direct PC-relative
/// displacement to `target` (`place` is the address of the field; `addend` the relocation's).
/// `kind` comes from [`relaxation_for`] on the same `code` and `field`, which checked bounds.
/// Returns false when the direct displacement would not fit (nothing is written then).
pub fn apply_relaxation(
    code: &mut [u8],
    field: usize,
    kind: Relaxation,
    place: u64,
    target: u64,
    addend: i64,
) -> bool {
    match kind {
        Relaxation::MovToLea | Relaxation::CallToDirect => {
            let v = target.wrapping_add(addend as u64).wrapping_sub(place);
            if !Width::S32.fits(v) {
                return false;
            }
            if kind == Relaxation::MovToLea {
                code[field - 2] = 0x8d;
            } else {
                code[field - 2] = 0x67;
                code[field - 1] = 0xe8;
            }
            write_value(code, field, Width::S32, v);
            true
        }
        Relaxation::JmpToDirect => {
            // `e9 rel32` starts one byte earlier; the displacement is relative to its end.
            let end = place.wrapping_add(3);
            let v = target
                .wrapping_add(addend as u64)
                .wrapping_add(4)
                .wrapping_sub(end);
            if !Width::S32.fits(v) {
                return false;
            }
            code[field - 2] = 0xe9;
            write_value(code, field - 1, Width::S32, v);
            code[field + 3] = 0x90;
            true
        }
    }
}

/// Writes a stub at `at` (executor address `stub_addr`) jumping through the word at `slot_addr`.
pub fn write_stub(mem: &mut [u8], at: usize, stub_addr: u64, slot_addr: u64) -> bool {
    let disp = slot_addr.wrapping_sub(stub_addr + 6);
    if !Width::S32.fits(disp) {
        return false;
    }
    mem[at] = 0xff;
    mem[at + 1] = 0x25;
    write_value(mem, at + 2, Width::S32, disp);
    mem[at + 6] = 0xcc;
    mem[at + 7] = 0xcc;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, NasmFormatter};

    fn decode(bytes: &[u8], ip: u64) -> Vec<String> {
        let mut d = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
        let mut f = NasmFormatter::new();
        let mut out = Vec::new();
        let mut ins = Instruction::default();
        while d.can_decode() {
            d.decode_out(&mut ins);
            let mut s = String::new();
            f.format(&ins, &mut s);
            out.push(s);
        }
        out
    }

    #[test]
    fn mov_from_got_becomes_lea() {
        // mov rax, [rip + 0] ; field at 3, place 0x1003, target 0x2000, addend -4
        let mut code = vec![0x48, 0x8b, 0x05, 0, 0, 0, 0];
        let k = relaxation_for(&code, 3, 1).unwrap();
        assert_eq!(k, Relaxation::MovToLea);
        assert!(apply_relaxation(&mut code, 3, k, 0x1003, 0x2000, -4));
        assert_eq!(decode(&code, 0x1000), vec!["lea rax,[rel 2000h]"]);
    }

    #[test]
    fn call_through_got_becomes_direct() {
        let mut code = vec![0xff, 0x15, 0, 0, 0, 0];
        let k = relaxation_for(&code, 2, 0).unwrap();
        assert!(apply_relaxation(&mut code, 2, k, 0x1002, 0x5000, -4));
        assert_eq!(code[..2], [0x67, 0xe8]);
        assert_eq!(decode(&code, 0x1000), vec!["call 0000000000005000h"]);
    }

    #[test]
    fn jmp_through_got_becomes_direct() {
        let mut code = vec![0xff, 0x25, 0, 0, 0, 0];
        let k = relaxation_for(&code, 2, 0).unwrap();
        assert!(apply_relaxation(&mut code, 2, k, 0x1002, 0x5000, -4));
        assert_eq!(decode(&code, 0x1000), vec!["jmp 0000000000005000h", "nop"]);
    }

    #[test]
    fn relaxation_needs_the_instruction_inside_the_section() {
        // The opcode would lie before the section, or the field past its end.
        assert_eq!(relaxation_for(&[0x05, 0, 0, 0, 0], 1, 0), None);
        assert_eq!(relaxation_for(&[0x8b, 0x05, 0, 0, 0, 0], 2, 1), None);
        assert_eq!(relaxation_for(&[0x8b, 0x05, 0, 0, 0], 2, 0), None);
        assert_eq!(
            relaxation_for(&[0x8b, 0x05, 0, 0, 0, 0], usize::MAX, 0),
            None
        );
        assert_eq!(
            relaxation_for(&[0x8b, 0x05, 0, 0, 0, 0], 2, 0),
            Some(Relaxation::MovToLea)
        );
    }

    #[test]
    fn relaxation_refused_out_of_range() {
        let mut code = vec![0x48, 0x8b, 0x05, 0, 0, 0, 0];
        let before = code.clone();
        assert!(!apply_relaxation(
            &mut code,
            3,
            Relaxation::MovToLea,
            0x1003,
            0x7fff_0000_0000,
            -4
        ));
        assert_eq!(code, before);
    }

    #[test]
    fn stub_jumps_through_slot() {
        let mut mem = vec![0u8; 8];
        assert!(write_stub(&mut mem, 0, 0x40_0000, 0x40_1000));
        assert_eq!(
            decode(&mem[..6], 0x40_0000),
            vec!["jmp qword [rel 401000h]"]
        );
    }

    #[test]
    fn widths() {
        assert!(Width::S32.fits((-5i64) as u64));
        assert!(!Width::U32.fits((-5i64) as u64));
        assert!(!Width::S32.fits(0x8000_0000));
        assert!(Width::U32.fits(0x8000_0000));
        assert!(Width::B16.fits(0xffff) && !Width::S16.fits(0xffff));
    }

    #[test]
    fn table_knows_tls_models() {
        assert_eq!(
            reloc_kind(elf::R_X86_64_TPOFF32).unwrap().formula,
            Formula::StaticTls
        );
        assert!(reloc_kind(elf::R_X86_64_COPY).is_none());
    }
}
