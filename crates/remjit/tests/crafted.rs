//! Edge cases no compiler emits on demand, crafted with `object`'s writer and linked through
//! the library API.

use object::write::{Comdat, Object, Relocation, StandardSection, Symbol, SymbolSection};
use object::{
    elf, Architecture, BinaryFormat, ComdatKind, Endianness, RelocationFlags, SymbolFlags,
    SymbolKind, SymbolScope,
};
use remjit::error::Error;
use remjit::{Session, SessionOptions};

fn new_object() -> Object<'static> {
    Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little)
}

fn func(
    obj: &mut Object<'_>,
    name: &str,
    code: &[u8],
    scope: SymbolScope,
) -> (object::write::SymbolId, object::write::SectionId) {
    let text = obj.section_id(StandardSection::Text);
    let off = obj.append_section_data(text, code, 16);
    let sym = obj.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
        value: off,
        size: code.len() as u64,
        kind: SymbolKind::Text,
        scope,
        weak: false,
        section: SymbolSection::Section(text),
        flags: SymbolFlags::None,
    });
    (sym, text)
}

fn session() -> Session {
    Session::in_process(SessionOptions::default()).unwrap()
}

#[test]
fn out_of_range_relocation_names_everything() {
    let mut obj = new_object();
    // `mov al, imm8` whose immediate must hold the address of `far_away`.
    let (_, text) = func(&mut obj, "tiny", &[0xb0, 0x00, 0xc3], SymbolScope::Dynamic);
    let target = func(&mut obj, "far_away", &[0xc3], SymbolScope::Dynamic).0;
    obj.add_relocation(
        text,
        Relocation {
            offset: 1,
            symbol: target,
            addend: 0,
            flags: RelocationFlags::Elf {
                r_type: elf::R_X86_64_8,
            },
        },
    )
    .unwrap();
    let mut s = session();
    s.add_object_bytes("crafted8.o", obj.write().unwrap());
    let e = s.link().unwrap_err();
    let Error::Relocation(r) = &e else {
        panic!("expected a relocation error, got {e}")
    };
    assert_eq!(r.object, "crafted8.o");
    assert_eq!(r.section, ".text");
    assert_eq!(r.offset, 1);
    assert_eq!(r.kind, "R_X86_64_8");
    assert_eq!(r.symbol, "far_away");
    assert!(r.problem.contains("does not fit"), "{e}");
}

#[test]
fn unsupported_relocation_type_is_an_error() {
    let mut obj = new_object();
    let (_, text) = func(&mut obj, "uses_copy", &[0x90; 8], SymbolScope::Dynamic);
    let target = func(&mut obj, "whatever", &[0xc3], SymbolScope::Dynamic).0;
    obj.add_relocation(
        text,
        Relocation {
            offset: 0,
            symbol: target,
            addend: 0,
            flags: RelocationFlags::Elf {
                r_type: elf::R_X86_64_COPY,
            },
        },
    )
    .unwrap();
    let mut s = session();
    s.add_object_bytes("copy.o", obj.write().unwrap());
    let e = s.link().unwrap_err().to_string();
    assert!(
        e.contains("copy.o") && e.contains("R_X86_64_COPY") && e.contains("not supported"),
        "{e}"
    );
}

/// An object with a COMDAT group holding `shared_helper` (returning `value`) and a caller.
fn comdat_object(caller: &str, value: u8) -> Vec<u8> {
    let mut obj = new_object();
    let sec = obj.add_section(
        Vec::new(),
        b".text.shared_helper".to_vec(),
        object::SectionKind::Text,
    );
    let off = obj.append_section_data(sec, &[0xb8, value, 0, 0, 0, 0xc3], 16);
    let helper = obj.add_symbol(Symbol {
        name: b"shared_helper".to_vec(),
        value: off,
        size: 6,
        kind: SymbolKind::Text,
        scope: SymbolScope::Dynamic,
        weak: true,
        section: SymbolSection::Section(sec),
        flags: SymbolFlags::None,
    });
    obj.add_comdat(Comdat {
        kind: ComdatKind::Any,
        symbol: helper,
        sections: vec![sec],
    });
    // caller: jmp shared_helper
    let (_, text) = func(&mut obj, caller, &[0xe9, 0, 0, 0, 0], SymbolScope::Dynamic);
    obj.add_relocation(
        text,
        Relocation {
            offset: 1,
            symbol: helper,
            addend: -4,
            flags: RelocationFlags::Elf {
                r_type: elf::R_X86_64_PLT32,
            },
        },
    )
    .unwrap();
    obj.write().unwrap()
}

#[test]
fn comdat_keeps_one_copy() {
    let mut s = session();
    s.add_object_bytes("first.o", comdat_object("call_first", 1));
    s.add_object_bytes("second.o", comdat_object("call_second", 2));
    s.link().unwrap();
    // SAFETY: functions of the module just linked: int(void).
    let (a, b): (extern "C" fn() -> i32, extern "C" fn() -> i32) = unsafe {
        (
            std::mem::transmute::<usize, extern "C" fn() -> i32>(
                s.lookup("call_first").unwrap() as usize
            ),
            std::mem::transmute::<usize, extern "C" fn() -> i32>(
                s.lookup("call_second").unwrap() as usize
            ),
        )
    };
    assert_eq!(
        (a(), b()),
        (1, 1),
        "both callers reach the first, kept copy"
    );
}

#[test]
fn relocation_with_missing_symbol_is_malformed() {
    let mut obj = new_object();
    let (_, text) = func(&mut obj, "f", &[0x90; 8], SymbolScope::Dynamic);
    let target = func(&mut obj, "g", &[0xc3], SymbolScope::Dynamic).0;
    obj.add_relocation(
        text,
        Relocation {
            offset: 0,
            symbol: target,
            addend: 0,
            flags: RelocationFlags::Elf {
                r_type: elf::R_X86_64_64,
            },
        },
    )
    .unwrap();
    let mut bytes = obj.write().unwrap();
    // Point the relocation's symbol index past the symbol table: find the .rela.text entry
    // (r_offset 0, r_info = (sym << 32) | 1) and corrupt the symbol index.
    let pat_pos = (0..bytes.len() - 24)
        .find(|&i| {
            bytes[i..i + 8] == [0; 8]
                && bytes[i + 8..i + 12] == 1u32.to_le_bytes()
                && bytes[i + 12..i + 16] != [0; 4]
        })
        .expect("the relocation entry");
    bytes[pat_pos + 12..pat_pos + 16].copy_from_slice(&999u32.to_le_bytes());
    let mut s = session();
    s.add_object_bytes("badsym.o", bytes);
    let e = s.link().unwrap_err().to_string();
    assert!(e.contains("badsym.o") && e.contains("malformed"), "{e}");
}

/// A link that fails in the fixup stage, after `data` bytes of its sections were written, then
/// one with `zeroes` bytes of zero fill: they read as zeroes.
fn failed_link_then_zero_fill(data: usize, zeroes: u64) {
    let mut obj = new_object();
    let text = obj.section_id(StandardSection::Data);
    obj.append_section_data(text, &vec![0xab; data], 16);
    let (_, code) = func(&mut obj, "tiny2", &[0xb0, 0x00, 0xc3], SymbolScope::Dynamic);
    let target = func(&mut obj, "far_away2", &[0xc3], SymbolScope::Dynamic).0;
    obj.add_relocation(
        code,
        Relocation {
            offset: 1,
            symbol: target,
            addend: 0,
            flags: RelocationFlags::Elf {
                r_type: elf::R_X86_64_8,
            },
        },
    )
    .unwrap();
    let mut s = session();
    s.add_object_bytes("dirty.o", obj.write().unwrap());
    assert!(s.link().is_err());
    // ...must not leave its bytes for the zero fill of the next one.
    let mut obj = new_object();
    let bss = obj.add_section(
        Vec::new(),
        b".bss".to_vec(),
        object::SectionKind::UninitializedData,
    );
    let off = obj.append_section_bss(bss, zeroes, 16);
    obj.add_symbol(Symbol {
        name: b"zeroes".to_vec(),
        value: off,
        size: zeroes,
        kind: SymbolKind::Data,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Section(bss),
        flags: SymbolFlags::None,
    });
    s.add_object_bytes("clean.o", obj.write().unwrap());
    s.link().unwrap();
    let z = s.lookup("zeroes").unwrap();
    // SAFETY: finalized JIT'd data of `zeroes` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(z as *const u8, zeroes as usize) };
    assert!(bytes.iter().all(|&b| b == 0));
}

#[test]
fn failed_link_leaves_zeroed_memory_behind() {
    failed_link_then_zero_fill(60000, 1 << 16);
}

/// The same for small links, whose pieces of shared pages the next link gets.
#[test]
fn failed_small_link_leaves_zeroed_pieces_behind() {
    failed_link_then_zero_fill(200, 256);
}
