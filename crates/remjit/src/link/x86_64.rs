//! Everything x86-64 about a link: the relocation descriptor table, the GOTPCRELX relaxations,
//! the stub and TLS descriptor code, the unwind section type, the relocation names.

use object::elf;

use super::arch::Arch;
use super::reloc::{write_value, Formula, RelocDesc, Width};

/// The x86-64 psABI (with GNU's TLS descriptors).
pub struct X86_64;

impl Arch for X86_64 {
    /// `jmp *slot(%rip)` padded with `int3`.
    const STUB_SIZE: u64 = 8;
    /// `{resolver, &arg}` then the argument `{module id, offset}` the resolver reads.
    const TLS_DESC_SIZE: u64 = 32;
    const TLS_DESC_ID_WORD: u64 = 16;
    const UNWIND_SECTION_TYPE: u32 = elf::SHT_X86_64_UNWIND;

    fn reloc(r_type: u32) -> Option<RelocDesc> {
        reloc_desc(r_type)
    }

    fn reloc_name(r_type: u32) -> String {
        reloc_name(r_type)
    }

    fn relax_got_load(
        code: &mut [u8],
        field: usize,
        r_type: u32,
        place: u64,
        target: u64,
        addend: i64,
    ) -> bool {
        // The REX prefix of `R_X86_64_REX_GOTPCRELX` must lie in the section too.
        let prefix = usize::from(r_type == elf::R_X86_64_REX_GOTPCRELX);
        relaxation_for(code, field, prefix)
            .is_some_and(|kind| apply_relaxation(code, field, kind, place, target, addend))
    }

    fn write_stub(mem: &mut [u8], at: usize, stub_addr: u64, slot_addr: u64) -> bool {
        write_stub(mem, at, stub_addr, slot_addr)
    }

    fn write_tls_descriptor(mem: &mut [u8], at: usize, desc_addr: u64, resolver: u64, offset: u64) {
        let arg = desc_addr + Self::TLS_DESC_ID_WORD;
        for (i, word) in [resolver, arg, 0, offset].into_iter().enumerate() {
            write_value(mem, at + 8 * i, Width::B64, word);
        }
    }
}

/// The relocation table: one descriptor per type remjit applies, `None` for the others
/// (`R_X86_64_COPY`, `GLOB_DAT`, `JUMP_SLOT`, `RELATIVE`, `IRELATIVE`, `TLSDESC`, `DTPMOD64`:
/// dynamic relocations, never in a relocatable object).
pub fn reloc_desc(r_type: u32) -> Option<RelocDesc> {
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
    Some(RelocDesc { formula, width })
}

/// Readable name of an x86-64 relocation type.
pub fn reloc_name(r_type: u32) -> String {
    let n = match r_type {
        elf::R_X86_64_NONE => "R_X86_64_NONE",
        elf::R_X86_64_64 => "R_X86_64_64",
        elf::R_X86_64_PC32 => "R_X86_64_PC32",
        elf::R_X86_64_GOT32 => "R_X86_64_GOT32",
        elf::R_X86_64_PLT32 => "R_X86_64_PLT32",
        elf::R_X86_64_COPY => "R_X86_64_COPY",
        elf::R_X86_64_GLOB_DAT => "R_X86_64_GLOB_DAT",
        elf::R_X86_64_JUMP_SLOT => "R_X86_64_JUMP_SLOT",
        elf::R_X86_64_RELATIVE => "R_X86_64_RELATIVE",
        elf::R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL",
        elf::R_X86_64_32 => "R_X86_64_32",
        elf::R_X86_64_32S => "R_X86_64_32S",
        elf::R_X86_64_16 => "R_X86_64_16",
        elf::R_X86_64_PC16 => "R_X86_64_PC16",
        elf::R_X86_64_8 => "R_X86_64_8",
        elf::R_X86_64_PC8 => "R_X86_64_PC8",
        elf::R_X86_64_DTPMOD64 => "R_X86_64_DTPMOD64",
        elf::R_X86_64_DTPOFF64 => "R_X86_64_DTPOFF64",
        elf::R_X86_64_TPOFF64 => "R_X86_64_TPOFF64",
        elf::R_X86_64_TLSGD => "R_X86_64_TLSGD",
        elf::R_X86_64_TLSLD => "R_X86_64_TLSLD",
        elf::R_X86_64_DTPOFF32 => "R_X86_64_DTPOFF32",
        elf::R_X86_64_GOTTPOFF => "R_X86_64_GOTTPOFF",
        elf::R_X86_64_TPOFF32 => "R_X86_64_TPOFF32",
        elf::R_X86_64_PC64 => "R_X86_64_PC64",
        elf::R_X86_64_GOTOFF64 => "R_X86_64_GOTOFF64",
        elf::R_X86_64_GOTPC32 => "R_X86_64_GOTPC32",
        elf::R_X86_64_GOT64 => "R_X86_64_GOT64",
        elf::R_X86_64_GOTPCREL64 => "R_X86_64_GOTPCREL64",
        elf::R_X86_64_GOTPC64 => "R_X86_64_GOTPC64",
        elf::R_X86_64_GOTPLT64 => "R_X86_64_GOTPLT64",
        elf::R_X86_64_PLTOFF64 => "R_X86_64_PLTOFF64",
        elf::R_X86_64_SIZE32 => "R_X86_64_SIZE32",
        elf::R_X86_64_SIZE64 => "R_X86_64_SIZE64",
        elf::R_X86_64_GOTPC32_TLSDESC => "R_X86_64_GOTPC32_TLSDESC",
        elf::R_X86_64_TLSDESC_CALL => "R_X86_64_TLSDESC_CALL",
        elf::R_X86_64_TLSDESC => "R_X86_64_TLSDESC",
        elf::R_X86_64_IRELATIVE => "R_X86_64_IRELATIVE",
        elf::R_X86_64_GOTPCRELX => "R_X86_64_GOTPCRELX",
        elf::R_X86_64_REX_GOTPCRELX => "R_X86_64_REX_GOTPCRELX",
        other => return format!("relocation type {other}"),
    };
    n.to_string()
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
    let direct = target.wrapping_add(addend as u64).wrapping_sub(place);
    match kind {
        Relaxation::MovToLea => relax_mov_to_lea(code, field, direct),
        Relaxation::CallToDirect => relax_call_to_direct(code, field, direct),
        Relaxation::JmpToDirect => relax_jmp_to_direct(code, field, direct),
    }
}

/// `8b /r` (`mov foo@GOTPCREL(%rip), %reg`) -> `8d /r` (`lea foo(%rip), %reg`): same length,
/// same displacement field, now `direct` (S + A - P).
fn relax_mov_to_lea(code: &mut [u8], field: usize, direct: u64) -> bool {
    if !Width::S32.fits(direct) {
        return false;
    }
    code[field - 2] = 0x8d;
    write_value(code, field, Width::S32, direct);
    true
}

/// `ff 15` (`call *foo@GOTPCREL(%rip)`) -> `67 e8` (`addr32 call foo`): the prefix keeps the
/// length, the displacement field stays where it was.
fn relax_call_to_direct(code: &mut [u8], field: usize, direct: u64) -> bool {
    if !Width::S32.fits(direct) {
        return false;
    }
    code[field - 2] = 0x67;
    code[field - 1] = 0xe8;
    write_value(code, field, Width::S32, direct);
    true
}

/// `ff 25` (`jmp *foo@GOTPCREL(%rip)`) -> `e9 rel32; 90` (`jmp foo; nop`): the jump starts one
/// byte earlier, and so does its displacement field.
fn relax_jmp_to_direct(code: &mut [u8], field: usize, direct: u64) -> bool {
    // `direct` is relative to the old field's address plus the addend (-4: the old end); the
    // new rel32 is relative to the end of `e9 rel32`, one byte before the old end.
    let v = direct.wrapping_add(1);
    if !Width::S32.fits(v) {
        return false;
    }
    code[field - 2] = 0xe9;
    write_value(code, field - 1, Width::S32, v);
    code[field + 3] = 0x90;
    true
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
    fn table_knows_tls_models() {
        assert_eq!(
            reloc_desc(elf::R_X86_64_TPOFF32).unwrap().formula,
            Formula::StaticTls
        );
        assert!(reloc_desc(elf::R_X86_64_COPY).is_none());
        assert_eq!(reloc_name(elf::R_X86_64_COPY), "R_X86_64_COPY");
    }
}
