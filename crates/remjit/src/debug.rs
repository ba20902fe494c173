//! What debuggers and profilers learn of each module, told to the process that runs it:
//!
//! - GDB's JIT interface: the inputs that carry DWARF are merged into one object with their
//!   DWARF relocated to the load addresses (`merge`), several modules' inputs in one object
//!   (`groups`: gdb's cost per registration grows with the objects it holds); removing a
//!   module rebuilds its group without it.
//! - perf: the perf map and the jitdump file (with line tables, from the DWARF relocated here).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use object::elf;
use object::read::elf::{Rela, SectionHeader, Sym};
use object::LittleEndian as LE;
use remjit_executor::runtime::perf::{PerfFunction, PerfOutputs};

use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::link::layout::{Layout, Place};
use crate::link::resolve::LinkObject;
use crate::link::FunctionSymbol;
use crate::object::ObjectFile;

mod groups;
mod merge;
pub use groups::{GdbGroups, InputsOf, MAX_GROUP_BYTES};
pub use merge::{group_debug_object, merged_debug_object};

/// An input object with debug info, and where each of its sections was loaded (0: not loaded).
#[derive(Debug, Clone)]
pub struct DebugInput {
    /// The object's name, for messages.
    pub name: String,
    /// The object file.
    pub bytes: Vec<u8>,
    /// Load address of each section, by section index (0 when not loaded).
    pub section_addrs: Vec<u64>,
}

fn has_debug_info(o: &ObjectFile<'_>) -> bool {
    (1..o.sections.len()).any(|i| o.section_name(i).is_ok_and(|n| n == b".debug_info"))
}

/// The objects of a link that carry DWARF, with their sections' load addresses.
pub(crate) fn collect_inputs(
    objects: &[LinkObject<'_>],
    lay: &Layout,
    base: u64,
) -> Vec<DebugInput> {
    let mut out = Vec::new();
    for (oi, o) in objects.iter().enumerate() {
        if !has_debug_info(&o.file) {
            continue;
        }
        let places = lay.places.get(oi).map(Vec::as_slice).unwrap_or(&[]);
        let section_addrs = (0..o.file.sections.len())
            .map(|si| match places.get(si) {
                Some(Place::Mem { seg, off }) => base + lay.offset(*seg, *off),
                Some(Place::TlsData { off, .. }) => {
                    base + lay.offset(crate::link::layout::Seg::Ro, *off)
                }
                _ => 0,
            })
            .collect();
        out.push(DebugInput {
            name: o.file.name.clone(),
            bytes: o.file.data().to_vec(),
            section_addrs,
        });
    }
    out
}

/// One input as a debugger could see it, the simpler shape (modules register
/// [`merged_debug_object`]'s; `benches/jit_debug.rs` compares what gdb makes of both): a copy
/// with each loaded section's `sh_addr` set, and the allocatable sections that were not loaded
/// (COMDAT copies another module brought first) dropped from what gdb loads: no longer
/// `SHF_ALLOC`, and their symbols undefined. Left as they were they would sit at address 0 in
/// every object: gdb would take code at 0 for real (a breakpoint location at 0x0 for an inline
/// function every module has), and each registration would sort all those equal addresses in
/// its section map, walking all objfiles per comparison.
pub fn debug_object(input: &DebugInput) -> Result<Vec<u8>> {
    let bad = |what: &str| Error::malformed(&input.name, format!("debug object: {what}"));
    let mut out = input.bytes.clone();
    let shoff = le(&out, 0x28, 8).ok_or_else(|| bad("truncated ELF header"))?;
    let shentsize = le(&out, 0x3a, 2).ok_or_else(|| bad("truncated ELF header"))?;
    let shnum = le(&out, 0x3c, 2).ok_or_else(|| bad("truncated ELF header"))?;
    if shentsize < 64 {
        return Err(bad("section header entries are too small"));
    }
    let len = out.len();
    let header = |i: u64| {
        i.checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o.checked_add(64).is_some_and(|e| e <= len))
            .ok_or_else(|| bad("section header table out of bounds"))
    };
    let mut dropped = vec![false; shnum as usize];
    let mut symtabs = Vec::new();
    for i in 1..shnum {
        let h = header(i)?;
        // In bounds (checked by `header`): sh_type at +4, sh_flags at +8, sh_addr at +16.
        let flags = le(&out, h + 8, 8).unwrap_or(0);
        let addr = input.section_addrs.get(i as usize).copied().unwrap_or(0);
        if addr != 0 {
            out[h + 16..h + 24].copy_from_slice(&addr.to_le_bytes());
        } else if flags & u64::from(elf::SHF_ALLOC) != 0 {
            let cleared = flags & !u64::from(elf::SHF_ALLOC);
            out[h + 8..h + 16].copy_from_slice(&cleared.to_le_bytes());
            dropped[i as usize] = true;
        }
        if le(&out, h + 4, 4) == Some(u64::from(elf::SHT_SYMTAB)) {
            symtabs.push(h);
        }
    }
    for h in symtabs {
        let (off, size) = (le(&out, h + 24, 8), le(&out, h + 32, 8));
        let syms = off
            .zip(size)
            .and_then(|(o, s)| {
                Some(usize::try_from(o).ok()?..usize::try_from(o.checked_add(s)?).ok()?)
            })
            .filter(|r| r.end <= out.len())
            .ok_or_else(|| bad("symbol table out of bounds"))?;
        for sym in out[syms].chunks_exact_mut(24) {
            let shndx = usize::from(u16::from_le_bytes([sym[6], sym[7]]));
            if dropped.get(shndx) == Some(&true) && sym[4] & 0xf != elf::STT_SECTION {
                // Undefined: st_shndx, st_value and st_size 0.
                sym[6..24].fill(0);
            }
        }
    }
    Ok(out)
}

/// The little-endian number of `len` bytes at `at`, if in bounds.
fn le(b: &[u8], at: usize, len: usize) -> Option<u64> {
    let src = b.get(at..at.checked_add(len)?)?;
    let mut v = [0u8; 8];
    v[..len].copy_from_slice(src);
    Some(u64::from_le_bytes(v))
}

/// The DWARF sections of an object, relocated as if linked at the load addresses.
fn relocated_dwarf(input: &DebugInput) -> Result<HashMap<String, Vec<u8>>> {
    let o = ObjectFile::parse(input.name.clone(), &input.bytes)?;
    let mut out = HashMap::new();
    let target = |s: usize| input.section_addrs.get(s).copied().unwrap_or(0);
    for i in 1..o.sections.len() {
        let name = o.section_name(i)?;
        let shdr = o.section(i)?;
        if !name.starts_with(b".debug") || shdr.sh_type(LE) == elf::SHT_RELA {
            continue;
        }
        let mut data = o.section_data(shdr)?.to_vec();
        apply_relocations(&o, i, &mut data, 0, &target)?;
        out.insert(String::from_utf8_lossy(name).into_owned(), data);
    }
    Ok(out)
}

/// Applies the relocations of section `i` of `o` to `data` (its bytes, or their first part): a
/// symbol of section `s` is at `target(s)` plus its value, and the section itself at `place`
/// (for PC-relative ones). Types other than absolute and PC-relative ones are left alone.
fn apply_relocations(
    o: &ObjectFile<'_>,
    i: usize,
    data: &mut [u8],
    place: u64,
    target: &dyn Fn(usize) -> u64,
) -> Result<()> {
    for rela in o.relocations(i)? {
        let index = rela.r_sym(LE, false) as usize;
        let Some(sym) = o.symbols().get(index) else {
            continue;
        };
        let base = o.symbol_section(sym, index)?.map_or(0, target);
        let value = base
            .wrapping_add(sym.st_value(LE))
            .wrapping_add(rela.r_addend(LE) as u64);
        let at = rela.r_offset(LE);
        let pc = place.wrapping_add(at);
        let (width, value) = match rela.r_type(LE, false) {
            elf::R_X86_64_64 | elf::R_X86_64_DTPOFF64 => (8, value),
            elf::R_X86_64_32 | elf::R_X86_64_32S | elf::R_X86_64_DTPOFF32 => (4, value),
            elf::R_X86_64_PC32 | elf::R_X86_64_PLT32 => (4, value.wrapping_sub(pc)),
            elf::R_X86_64_PC64 => (8, value.wrapping_sub(pc)),
            _ => continue,
        };
        let Ok(at) = usize::try_from(at) else {
            continue;
        };
        if let Some(dst) = at.checked_add(width).and_then(|e| data.get_mut(at..e)) {
            dst.copy_from_slice(&value.to_le_bytes()[..width]);
        }
    }
    Ok(())
}

type Reader = gimli::EndianArcSlice<gimli::LittleEndian>;

fn line_context(input: &DebugInput) -> Option<addr2line::Context<Reader>> {
    let sections = relocated_dwarf(input).ok()?;
    let dwarf = gimli::Dwarf::load(|id| -> std::result::Result<Reader, gimli::Error> {
        let data = sections.get(id.name()).cloned().unwrap_or_default();
        Ok(gimli::EndianArcSlice::new(
            Arc::from(data),
            gimli::LittleEndian,
        ))
    })
    .ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}

/// Finds the source lines of JIT'd code for a crash report. Each module's DWARF is read at
/// its first question (only a crash asks: linking costs nothing more), then kept.
pub struct SourceLines<'a> {
    /// Each module's memory (base, size) and its inputs with DWARF.
    modules: Vec<(u64, u64, &'a [DebugInput])>,
    contexts: RefCell<HashMap<usize, Vec<addr2line::Context<Reader>>>>,
}

impl<'a> SourceLines<'a> {
    /// Over modules given as (memory base, memory size, inputs with DWARF).
    pub fn new(modules: Vec<(u64, u64, &'a [DebugInput])>) -> Self {
        SourceLines {
            modules,
            contexts: RefCell::new(HashMap::new()),
        }
    }

    /// `file.c:LINE` of the code at `addr`, when its object has DWARF for it. A file under the
    /// current directory is named relative to it.
    pub fn line(&self, addr: u64) -> Option<String> {
        // Small links' memory windows overlap (their pieces share pages): every module whose
        // window holds `addr` is asked.
        let mut contexts = self.contexts.borrow_mut();
        let (file, line) = self
            .modules
            .iter()
            .enumerate()
            .filter(|(_, &(base, size, _))| addr >= base && addr - base < size)
            .find_map(|(i, &(_, _, inputs))| {
                let ctxs = contexts
                    .entry(i)
                    .or_insert_with(|| inputs.iter().filter_map(line_context).collect());
                ctxs.iter().find_map(|ctx| {
                    let loc = ctx.find_location(addr).ok()??;
                    Some((loc.file?.to_string(), loc.line?))
                })
            })?;
        let cwd = std::env::current_dir().ok();
        Some(format!("{}:{line}", shown_path(&file, cwd.as_deref())))
    }
}

/// A source path as a crash report shows it: relative to `cwd` (the current directory) when
/// under it.
fn shown_path(file: &str, cwd: Option<&std::path::Path>) -> String {
    cwd.and_then(|d| std::path::Path::new(file).strip_prefix(d).ok())
        .map_or(file.to_string(), |p| p.display().to_string())
}

/// Each function's `(address, line, file)` rows by its address, for the in-process crash
/// handler (which cannot read DWARF when the crash comes). Empty without DWARF.
pub fn function_lines(
    functions: &[FunctionSymbol],
    inputs: &[DebugInput],
) -> HashMap<u64, Vec<(u64, u32, std::sync::Arc<str>)>> {
    if inputs.is_empty() {
        return HashMap::new();
    }
    let cwd = std::env::current_dir().ok();
    // One string per file, shared by its rows.
    let mut shown: HashMap<String, std::sync::Arc<str>> = HashMap::new();
    let mut show = |p: String| {
        let s = shown
            .entry(p)
            .or_insert_with_key(|p| shown_path(p, cwd.as_deref()).into());
        s.clone()
    };
    perf_functions(functions, inputs)
        .into_iter()
        .map(|f| {
            let rows = f.lines.into_iter();
            (f.addr, rows.map(|(a, l, p)| (a, l, show(p))).collect())
        })
        .collect()
}

/// The module's functions with their line tables (where some input has DWARF for them; DWARF
/// that cannot be read only leaves the line tables out: they are an aid, not the code).
pub fn perf_functions(functions: &[FunctionSymbol], inputs: &[DebugInput]) -> Vec<PerfFunction> {
    let contexts: Vec<_> = inputs.iter().filter_map(line_context).collect();
    functions
        .iter()
        .filter(|f| f.size > 0)
        .map(|f| {
            let mut lines = Vec::new();
            for ctx in &contexts {
                let Ok(rows) = ctx.find_location_range(f.addr, f.addr + f.size) else {
                    continue;
                };
                for (addr, _, loc) in rows {
                    if let (Some(file), Some(line)) = (loc.file, loc.line) {
                        lines.push((addr, line, file.to_string()));
                    }
                }
                if !lines.is_empty() {
                    break;
                }
            }
            PerfFunction {
                addr: f.addr,
                size: f.size,
                name: f.name.clone(),
                lines,
            }
        })
        .collect()
}

/// After a module is finalized: writes the perf records asked for, in the process that runs
/// the code (its debug objects are registered by [`GdbGroups::add`]).
pub fn record_perf(
    exec: &dyn Executor,
    perf: PerfOutputs,
    functions: &[FunctionSymbol],
    inputs: &[DebugInput],
) -> Result<()> {
    if !(perf.map || perf.jitdump) {
        return Ok(());
    }
    let fns = if perf.jitdump {
        perf_functions(functions, inputs)
    } else {
        perf_functions(functions, &[])
    };
    exec.record_perf(&fns, perf)
}
