//! Hostile objects: gcc output patched at the offsets of one field, or objects crafted with
//! `object`'s writer. Each gets a clear error naming object and section in every mode (never a
//! panic, a signal or a silent wrong link), or, where the input is legal, a correct link that
//! touches nothing outside the relocated section.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use object::read::elf::{FileHeader, SectionHeader};
use object::write::{Object, Relocation, Symbol, SymbolSection};
use object::{elf, Architecture, BinaryFormat, Endianness, LittleEndian as LE, RelocationFlags};
use object::{SectionKind, SymbolFlags, SymbolKind, SymbolScope};
use remjit::{Session, SessionOptions};

/// In process, out of process with shared memory (the default), and copying over the wire.
const MODES: [&[&str]; 3] = [&["--in-process"], &[], &["--no-shared-memory"]];

/// A gcc object to patch, with where its parts are.
struct Patchable {
    bytes: Vec<u8>,
}

impl Patchable {
    fn compile(dir: &Path, name: &str, source: &str) -> Patchable {
        Patchable::compile_with(dir, name, source, &["-O2"])
    }

    fn compile_with(dir: &Path, name: &str, source: &str, flags: &[&str]) -> Patchable {
        let src = dir.join(format!("{name}.c"));
        std::fs::write(&src, source).unwrap();
        let obj = compile(dir, &src, &format!("{name}.o"), flags);
        Patchable {
            bytes: std::fs::read(obj).unwrap(),
        }
    }

    fn header(&self) -> &elf::FileHeader64<LE> {
        elf::FileHeader64::<LE>::parse(&*self.bytes).unwrap()
    }

    /// Index and header of the section called `name`.
    fn section(&self, name: &str) -> (usize, elf::SectionHeader64<LE>) {
        let sections = self.header().sections(LE, &*self.bytes).unwrap();
        let (i, s) = sections
            .iter()
            .enumerate()
            .find(|(_, s)| sections.section_name(LE, s).unwrap() == name.as_bytes())
            .unwrap_or_else(|| panic!("gcc output has no {name}"));
        (i, *s)
    }

    /// File offset of the header of section `name`.
    fn section_header_at(&self, name: &str) -> usize {
        let (i, _) = self.section(name);
        self.header().e_shoff.get(LE) as usize + i * 64
    }

    /// File offset of relocation `n` of the relocation section `name`.
    fn rela_at(&self, name: &str, n: usize) -> usize {
        let (_, s) = self.section(name);
        assert!(
            s.sh_size(LE) as usize >= (n + 1) * 24,
            "{name} has no entry {n}"
        );
        s.sh_offset(LE) as usize + n * 24
    }

    /// File offset of the symbol called `name`.
    fn symbol_at(&self, name: &str) -> usize {
        let (_, symtab) = self.section(".symtab");
        let (_, strtab) = self.section(".strtab");
        let strings = &self.bytes[strtab.sh_offset(LE) as usize..];
        (0..symtab.sh_size(LE) as usize / 24)
            .map(|i| symtab.sh_offset(LE) as usize + i * 24)
            .find(|&at| {
                let st_name = u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap());
                strings[st_name as usize..].starts_with(format!("{name}\0").as_bytes())
            })
            .unwrap_or_else(|| panic!("gcc output has no symbol {name}"))
    }

    fn size_of(&self, name: &str) -> u64 {
        self.section(name).1.sh_size(LE)
    }

    /// A copy with `value` written little-endian at `at`, saved as `dir/name`.
    fn patched(&self, dir: &Path, name: &str, at: usize, value: &[u8]) -> PathBuf {
        let mut b = self.bytes.clone();
        b[at..at + value.len()].copy_from_slice(value);
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    }
}

const HELLO: &str = "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n";

/// Runs `remjit MODE obj EXTRA` in every mode and asserts exit 1 with exactly
/// `remjit: error: {expected}`, no panic and no signal.
fn fails_exactly(obj: &Path, extra: &[&str], expected: &str) {
    for mode in MODES {
        let out = jit(mode, &[obj.to_path_buf()], extra, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{mode:?}: panic: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("remjit: error: {expected}"),
            "{mode:?}"
        );
    }
}

#[test]
fn relocation_offset_of_all_ones_is_an_error() {
    let dir = work_dir("hostile-roff");
    let hello = Patchable::compile(&dir, "hello", HELLO);
    let at = hello.rela_at(".rela.text.startup", 0);
    let obj = hello.patched(&dir, "roff.o", at, &u64::MAX.to_le_bytes());
    let size = hello.size_of(".text.startup");
    fails_exactly(
        &obj,
        &["--noexec"],
        &format!(
            "{}: section .text.startup+0xffffffffffffffff: R_X86_64_PC32 against `.LC0`: its \
             4-byte field lies outside the section ({size:#x} bytes): malformed object",
            obj.display()
        ),
    );
}

#[test]
fn relocation_offset_wrapping_before_the_section_is_an_error() {
    // `.eh_frame` lies past the start of its allocation: 2^64-4 would wrap to 4 bytes before it.
    let dir = work_dir("hostile-wrap");
    let hello = Patchable::compile(&dir, "hello", HELLO);
    let at = hello.rela_at(".rela.eh_frame", 0);
    let obj = hello.patched(&dir, "wrap.o", at, &(u64::MAX - 3).to_le_bytes());
    let size = hello.size_of(".eh_frame");
    let expected = format!(
        "{}: section .eh_frame+0xfffffffffffffffc: R_X86_64_PC32 against `.text.startup`: its \
         4-byte field lies outside the section ({size:#x} bytes): malformed object",
        obj.display()
    );
    fails_exactly(&obj, &["--noexec"], &expected);
    // Also when the program would run.
    fails_exactly(&obj, &[], &expected);
}

#[test]
fn bad_section_alignments_are_errors() {
    let dir = work_dir("hostile-align");
    let hello = Patchable::compile(&dir, "hello", HELLO);
    let at = hello.section_header_at(".text.startup") + 48;
    for (name, align, why) in [
        (
            "align-ones.o",
            u64::MAX,
            "alignment 0xffffffffffffffff is not a power of two",
        ),
        ("align-three.o", 3, "alignment 0x3 is not a power of two"),
        (
            "align-huge.o",
            1 << 40,
            "alignment 0x10000000000 exceeds remjit's limit of 0x100000 (1 MiB)",
        ),
    ] {
        let obj = hello.patched(&dir, name, at, &align.to_le_bytes());
        fails_exactly(
            &obj,
            &["--noexec"],
            &format!(
                "{}: malformed ELF object: section .text.startup: {why}",
                obj.display()
            ),
        );
    }
}

#[test]
fn huge_zero_fill_is_an_error() {
    let dir = work_dir("hostile-bss");
    let src = "static char big[64];\nchar *get(void) { return big; }\n";
    let obj = Patchable::compile(&dir, "bss", src);
    let at = obj.section_header_at(".bss") + 32;
    let p = obj.patched(&dir, "bss-huge.o", at, &(1u64 << 63).to_le_bytes());
    fails_exactly(
        &p,
        &["--noexec", "--entry", "get"],
        &format!(
            "{}: malformed ELF object: section .bss: size 0x8000000000000000 makes the link \
             larger than remjit's limit of 0x1000000000 bytes (64 GiB)",
            p.display()
        ),
    );
}

#[test]
fn bad_common_symbol_alignment_is_an_error() {
    let dir = work_dir("hostile-common");
    let src = "int counter;\nint main(void) { return counter; }\n";
    let obj = Patchable::compile_with(&dir, "common", src, &["-O2", "-fcommon"]);
    // A common symbol's st_value is its alignment.
    let at = obj.symbol_at("counter") + 8;
    let p = obj.patched(&dir, "common-align.o", at, &3u64.to_le_bytes());
    fails_exactly(
        &p,
        &["--noexec"],
        &format!(
            "{}: malformed ELF object: common symbol `counter`: alignment 0x3 is not a power \
             of two",
            p.display()
        ),
    );
}

#[test]
fn ifunc_data_symbol_is_an_error() {
    let dir = work_dir("hostile-ifunc-data");
    let src = "#include <stdio.h>\nint main(void) { puts(\"a rather long string, aligned to eight\"); return 0; }\n";
    let obj = Patchable::compile(&dir, "str8", src);
    assert!(obj.size_of(".rodata.str1.8") > 0);
    // st_info of `.LC0`: local binding, type STT_GNU_IFUNC.
    let at = obj.symbol_at(".LC0") + 4;
    let p = obj.patched(&dir, "ifunc-data.o", at, &[elf::STT_GNU_IFUNC]);
    let expected = format!(
        "{}: malformed ELF object: IFUNC symbol `.LC0` lies in section .rodata.str1.8, which is \
         not executable (an IFUNC symbol names its resolver function)",
        p.display()
    );
    fails_exactly(&p, &["--noexec"], &expected);
    fails_exactly(&p, &[], &expected);
}

#[test]
fn noexec_calls_no_ifunc_resolver() {
    let dir = work_dir("hostile-ifunc-noexec");
    let marker = dir.join("resolver-ran");
    let src = format!(
        "#include <fcntl.h>\n#include <unistd.h>\n\
         static int impl(void) {{ return 7; }}\n\
         static void *resolve(void) {{ close(open(\"{}\", O_CREAT | O_WRONLY, 0600)); return (void *)impl; }}\n\
         int get(void) __attribute__((ifunc(\"resolve\")));\n\
         int main(void) {{ return get(); }}\n",
        marker.display()
    );
    let obj = Patchable::compile(&dir, "ifunc", &src);
    let p = dir.join("ifunc.o");
    std::fs::write(&p, &obj.bytes).unwrap();
    for mode in MODES {
        let _ = std::fs::remove_file(&marker);
        let out = jit(mode, std::slice::from_ref(&p), &["--noexec"], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{mode:?}: {stderr}");
        assert!(
            !marker.exists(),
            "{mode:?}: --noexec ran the IFUNC resolver"
        );
    }
    // Without --noexec the resolver runs (so the check above can fail).
    let out = jit(&["--in-process"], &[p], &[], &[]);
    assert_eq!(out.status.code(), Some(7));
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();
}

/// An object with two sections laid out back to back: `prev` (ending in the bytes of a
/// `mov foo@GOTPCREL(%rip)` opcode and ModRM) and `next`, whose `R_X86_64_GOTPCRELX` at
/// `offset` refers to `target` in `.data`.
fn gotpcrelx_object(next_kind: SectionKind, next: &[u8], offset: u64) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let mut section = |name: &str, kind, data: &[u8], sym: &str| {
        let sec = obj.add_section(Vec::new(), name.as_bytes().to_vec(), kind);
        obj.append_section_data(sec, data, 1);
        let id = obj.add_symbol(Symbol {
            name: sym.as_bytes().to_vec(),
            value: 0,
            size: data.len() as u64,
            kind: SymbolKind::Data,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Section(sec),
            flags: SymbolFlags::None,
        });
        (sec, id)
    };
    section(
        ".text.prev",
        SectionKind::Text,
        &[0xc3, 0x48, 0x8b, 0x05],
        "prev",
    );
    let (next_sec, _) = section(".next", next_kind, next, "next");
    let (_, target) = section(".data", SectionKind::Data, &[1, 2, 3, 4], "target");
    obj.add_relocation(
        next_sec,
        Relocation {
            offset,
            symbol: target,
            addend: -4,
            flags: RelocationFlags::Elf {
                r_type: elf::R_X86_64_REX_GOTPCRELX,
            },
        },
    )
    .unwrap();
    obj.write().unwrap()
}

/// Links `bytes` in process; returns the session and the addresses of `prev`, `next`, `target`.
fn link_in_process(bytes: Vec<u8>) -> (Session, [u64; 3]) {
    let mut s = Session::in_process(SessionOptions {
        run_initializers: false,
        ..SessionOptions::default()
    })
    .unwrap();
    s.add_object_bytes("gotpcrelx.o", bytes);
    s.link().unwrap();
    let addrs = ["prev", "next", "target"].map(|n| s.lookup(n).unwrap());
    (s, addrs)
}

/// The GOT word that the 32-bit displacement at `field` (addend -4) points at.
fn got_word_of(field: u64) -> u64 {
    // SAFETY: `field` and the GOT lie in the finalized, readable memory of a live session.
    unsafe {
        let disp = (field as *const i32).read_unaligned() as i64;
        let slot = field.wrapping_add(4).wrapping_add(disp as u64);
        (slot as *const u64).read_unaligned()
    }
}

fn bytes_at(addr: u64, n: usize) -> Vec<u8> {
    // SAFETY: readable memory of a live session.
    unsafe { std::slice::from_raw_parts(addr as *const u8, n).to_vec() }
}

#[test]
fn gotpcrelx_at_the_start_of_a_section_is_not_relaxed_into_its_neighbour() {
    // The field is at offset 0 of `.next`: the opcode bytes "before" it belong to `prev`.
    let bytes = gotpcrelx_object(SectionKind::Text, &[0, 0, 0, 0, 0xc3], 0);
    let (_s, [prev, next, target]) = link_in_process(bytes);
    assert_eq!(
        next,
        prev + 4,
        "the sections must be back to back for this test"
    );
    assert_eq!(bytes_at(prev, 4), [0xc3, 0x48, 0x8b, 0x05]);
    assert_eq!(got_word_of(next), target);
}

#[test]
fn gotpcrelx_in_data_is_not_relaxed() {
    // A well-formed `mov` inside a data section: left alone, the GOT serves.
    let bytes = gotpcrelx_object(SectionKind::Data, &[0x48, 0x8b, 0x05, 0, 0, 0, 0], 3);
    let (_s, [_, next, target]) = link_in_process(bytes);
    assert_eq!(bytes_at(next, 3), [0x48, 0x8b, 0x05]);
    assert_eq!(got_word_of(next + 3), target);
}

#[test]
fn gotpcrelx_in_code_is_still_relaxed() {
    let bytes = gotpcrelx_object(SectionKind::Text, &[0x48, 0x8b, 0x05, 0, 0, 0, 0, 0xc3], 3);
    let (_s, [_, next, target]) = link_in_process(bytes);
    // lea target(%rip), %rax
    assert_eq!(bytes_at(next, 3), [0x48, 0x8d, 0x05]);
    // SAFETY: readable memory of a live session.
    let disp = unsafe { ((next + 3) as *const i32).read_unaligned() } as i64;
    assert_eq!((next + 7).wrapping_add(disp as u64), target);
}
