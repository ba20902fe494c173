//! Feeds arbitrary bytes to the linker, as an object (or as an archive when they start with
//! `!<arch>\n`, linked with a small object that references the names test archives define), in
//! process and with `--noexec` semantics: no constructor, no IFUNC resolver, no code of the
//! input ever runs. Every input must link or fail with an error; never panic or crash.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use object::write::{Object, Relocation, StandardSection, Symbol, SymbolSection};
use object::{elf, Architecture, BinaryFormat, Endianness, RelocationFlags, SymbolFlags};
use object::{SymbolKind, SymbolScope};
use remjit::executor::{Executor, InProcessExecutor};
use remjit::input::{InputBytes, InputFile};
use remjit::link::{link, LinkEnv, LinkInput, NameMap};
use remjit::memory::SlabAllocator;

/// Names that the seed archives define; the referencing object pulls their members in.
const ARCHIVE_NAMES: &[&str] = &["main", "f", "g", "helper", "sqlite3_libversion"];

struct Context {
    executor: InProcessExecutor,
    slab: SlabAllocator,
    overrides: NameMap<u64>,
    referencer: Vec<u8>,
}

/// An object whose `.text` calls every name of `ARCHIVE_NAMES`.
fn referencing_object() -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = obj.section_id(StandardSection::Text);
    let code = [0xe8, 0, 0, 0, 0].repeat(ARCHIVE_NAMES.len());
    obj.append_section_data(text, &code, 16);
    for (i, name) in ARCHIVE_NAMES.iter().enumerate() {
        let sym = obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value: 0,
            size: 0,
            kind: SymbolKind::Text,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
        let r = Relocation {
            offset: i as u64 * 5 + 1,
            symbol: sym,
            addend: -4,
            flags: RelocationFlags::Elf {
                r_type: elf::R_X86_64_PLT32,
            },
        };
        obj.add_relocation(text, r).expect("relocation");
    }
    obj.write().expect("object")
}

fn context() -> Context {
    let executor = InProcessExecutor::new();
    let slab = SlabAllocator::new(executor.mapper(), 256 << 20, false);
    let overrides = executor
        .runtime_symbols()
        .expect("runtime symbols")
        .into_iter()
        .map(|(n, a)| (n.into_bytes(), a))
        .collect();
    Context {
        executor,
        slab,
        overrides,
        referencer: referencing_object(),
    }
}

thread_local! {
    static CONTEXT: Context = context();
}

fn input(name: &str, bytes: Vec<u8>) -> InputFile {
    InputFile {
        name: Arc::from(name),
        bytes: Arc::new(InputBytes::Owned(bytes)),
    }
}

fuzz_target!(|data: &[u8]| {
    CONTEXT.with(|cx| {
        let inputs = if data.starts_with(b"!<arch>\n") {
            vec![
                LinkInput::Object(input("ref.o", cx.referencer.clone())),
                LinkInput::Archive(input("fuzz.a", data.to_vec())),
            ]
        } else {
            vec![LinkInput::Object(input("fuzz.o", data.to_vec()))]
        };
        let (session, absolutes) = (NameMap::default(), NameMap::default());
        let env = LinkEnv {
            session: &session,
            overrides: &cx.overrides,
            absolutes: &absolutes,
            phony_externals: true,
            executor: &cx.executor,
            slab: &cx.slab,
            run_initializers: false,
            pipelined_initialize: false,
            required_entry: None,
            record_map: false,
            function_symbols: true,
            comdat_kept: &|_| false,
            comdat_symbol: &|_| None,
            before_initializers: None,
        };
        if let Ok(module) = link(&inputs, &env) {
            cx.slab.deallocate(&[module.alloc]).expect("deallocate");
        }
    });
});
