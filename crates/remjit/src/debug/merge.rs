//! One debug object for all the inputs of a link, or of a group of modules (`groups`): gdb's
//! work per registration grows with the number of objfiles it holds and with their sections
//! (README, Debugging), so one object covers many inputs, with one section per block of memory,
//! not one object per input with a section per input section. It is built as a linker would,
//! with the symbols of every loaded section and each DWARF section the concatenation of the
//! inputs' (relocated here, so the object carries no relocations):
//!
//! - `.text` (`SHT_NOBITS`) spans the module's memory (one block of JIT memory: code, read-only
//!   and writable data), or for a group, each run of its modules' memory that lies end to end;
//!   every symbol is placed in one. Thread-local sections keep their own.
//! - `.eh_frame` is concatenated too, as a section that is not loaded (gdb reads it from the
//!   object to unwind JIT'd frames; the inputs' copies lie apart in memory).
//! - `.debug_aranges` is left out: its sets cannot simply be concatenated, and gdb reads the
//!   address ranges from the DWARF units themselves.
//! - What the link did not load (COMDAT copies an earlier module brought) is left out, with its
//!   symbols; DWARF that refers to it gets address 0, which gdb takes for discarded code.

use object::elf;
use object::read::elf::{SectionHeader, Sym};
use object::LittleEndian as LE;

use super::{apply_relocations, DebugInput};
use crate::error::{Error, Result};
use crate::object::ObjectFile;

/// A section of the merged object.
struct OutSection {
    name: Vec<u8>,
    sh_type: u32,
    flags: u64,
    addr: u64,
    align: u64,
    data: Vec<u8>,
    /// Size (for `SHT_NOBITS`; otherwise the data's).
    size: u64,
    link: u32,
    info: u32,
    entsize: u64,
}

impl OutSection {
    fn new(name: &[u8], sh_type: u32, data: Vec<u8>) -> Self {
        OutSection {
            name: name.to_vec(),
            sh_type,
            flags: 0,
            addr: 0,
            align: 1,
            size: data.len() as u64,
            data,
            link: 0,
            info: 0,
            entsize: 0,
        }
    }
}

/// Where each input section went: `Loaded(output index, its offset there)`, or a chunk of a
/// concatenated section at an offset (`Chunk(name, offset)`).
#[derive(Clone, PartialEq)]
enum Dest {
    None,
    Loaded(usize, u64),
    Chunk(Vec<u8>, u64),
}

/// `Dest::Loaded`'s index until the section spanning the loaded memory is placed.
const SPAN: usize = usize::MAX;

fn concatenated(name: &[u8]) -> bool {
    (name.starts_with(b".debug") && name != b".debug_aranges") || name == b".eh_frame"
}

/// The debug object of a link's inputs that carry DWARF (one or more): one section spans all
/// their loaded sections.
pub fn merged_debug_object(inputs: &[DebugInput]) -> Result<Vec<u8>> {
    build(&inputs.iter().collect::<Vec<_>>(), &[])
}

/// The debug object of a group of modules, given as each module's inputs with DWARF and the
/// memory `(base, size)` it holds: one section per run of adjacent module memory (modules
/// linked one after another lie end to end), so that gdb's map holds few sections and none
/// overlaps another object's.
pub fn group_debug_object(modules: &[(&[DebugInput], (u64, u64))]) -> Result<Vec<u8>> {
    let inputs: Vec<&DebugInput> = modules.iter().flat_map(|m| m.0.iter()).collect();
    let memory: Vec<(u64, u64)> = modules
        .iter()
        .map(|&(_, (base, size))| (base, base.saturating_add(size)))
        .collect();
    build(&inputs, &memory)
}

/// The merged object of `inputs`, with `memory` (ranges `[start, end)`; none: one range over
/// every loaded section) and the loaded sections covered by `.text` sections.
fn build(inputs: &[&DebugInput], memory: &[(u64, u64)]) -> Result<Vec<u8>> {
    let objs: Vec<ObjectFile<'_>> = inputs
        .iter()
        .map(|i| ObjectFile::parse(i.name.clone(), &i.bytes))
        .collect::<Result<_>>()?;
    let mut out = vec![OutSection::new(b"", elf::SHT_NULL, Vec::new())];
    let mut chunks: Vec<(Vec<u8>, u64)> = Vec::new(); // concatenated: name, size so far
    let mut dests: Vec<Vec<Dest>> = Vec::new();
    let mut loaded: Vec<(u64, u64)> = Vec::new();
    for (o, input) in objs.iter().zip(inputs) {
        let mut d = vec![Dest::None; o.sections.len()];
        for (s, dest) in d.iter_mut().enumerate().skip(1) {
            let (name, shdr) = (o.section_name(s)?, o.section(s)?);
            let addr = input.section_addrs.get(s).copied().unwrap_or(0);
            let alloc = shdr.sh_flags(LE) & u64::from(elf::SHF_ALLOC) != 0;
            if concatenated(name) && shdr.sh_type(LE) != elf::SHT_RELA {
                let size = eh_frame_len(o, s, name)?;
                let at = match chunks.iter_mut().find(|c| c.0 == name) {
                    Some(c) => {
                        c.1 += size;
                        c.1 - size
                    }
                    None => {
                        chunks.push((name.to_vec(), size));
                        0
                    }
                };
                *dest = Dest::Chunk(name.to_vec(), at);
            } else if alloc && addr != 0 && shdr.sh_size(LE) > 0 {
                if shdr.sh_flags(LE) & u64::from(elf::SHF_TLS) == 0 {
                    loaded.push((addr, addr.saturating_add(shdr.sh_size(LE))));
                    *dest = Dest::Loaded(SPAN, addr);
                    continue;
                }
                // Thread-local sections keep their own (gdb leaves them out of its map).
                let mut sec =
                    OutSection::new(name, shdr.sh_type(LE), o.section_data(shdr)?.to_vec());
                sec.flags = shdr.sh_flags(LE) & !u64::from(elf::SHF_GROUP);
                sec.addr = addr;
                sec.align = shdr.sh_addralign(LE).max(1);
                sec.size = shdr.sh_size(LE);
                *dest = Dest::Loaded(out.len(), 0);
                out.push(sec);
            }
        }
        dests.push(d);
    }
    place_in_spans(&mut out, &mut dests, &loaded, memory);
    let concat_at = out.len();
    for (name, size) in &chunks {
        // Sized up front: a group's sections run to megabytes.
        let data = Vec::with_capacity(usize::try_from(*size).unwrap_or(0));
        out.push(OutSection::new(name, elf::SHT_PROGBITS, data));
    }
    fill_chunks(&objs, inputs, &dests, &mut out[concat_at..])?;
    symbols(&objs, &dests, &mut out)?;
    write_elf(out)
}

/// Adds the `.text` sections (`SHT_NOBITS`) over the loaded memory and points the loaded
/// sections' destinations into them: one over `memory`'s runs of touching ranges, or without
/// `memory` one over all of `loaded` (gdb sorts every objfile's sections at each registration,
/// so the fewer the better).
fn place_in_spans(
    out: &mut Vec<OutSection>,
    dests: &mut [Vec<Dest>],
    loaded: &[(u64, u64)],
    memory: &[(u64, u64)],
) {
    let mut ranges: Vec<(u64, u64)> = memory.iter().copied().filter(|r| r.0 < r.1).collect();
    if ranges.is_empty() {
        let lo = loaded.iter().map(|r| r.0).min();
        let hi = loaded.iter().map(|r| r.1).max();
        ranges.extend(lo.zip(hi));
    } else {
        // A section outside the memory given (not expected) still gets a place.
        ranges.extend_from_slice(loaded);
    }
    ranges.sort_unstable();
    let mut spans: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match spans.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => spans.push((start, end)),
        }
    }
    let first = out.len();
    for &(lo, hi) in &spans {
        let mut sec = OutSection::new(b".text", elf::SHT_NOBITS, Vec::new());
        sec.flags = u64::from(elf::SHF_ALLOC | elf::SHF_EXECINSTR);
        sec.addr = lo;
        sec.size = hi - lo;
        out.push(sec);
    }
    for dest in dests.iter_mut().flatten() {
        if let Dest::Loaded(i @ SPAN, addr) = dest {
            // Every loaded section's start lies in a span (its own range is among them).
            let k = spans.partition_point(|s| s.0 <= *addr).saturating_sub(1);
            (*i, *addr) = (first + k, *addr - spans[k].0);
        }
    }
}

/// The bytes of `.eh_frame` up to its terminator, if any (records after it would be lost);
/// other sections whole.
fn eh_frame_len(o: &ObjectFile<'_>, s: usize, name: &[u8]) -> Result<u64> {
    let data = o.section_data(o.section(s)?)?;
    if name != b".eh_frame" {
        return Ok(data.len() as u64);
    }
    let mut at = 0usize;
    while let Some(len) = data.get(at..at + 4) {
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        match at.checked_add(4 + len).filter(|&e| e <= data.len()) {
            Some(end) if len != 0 && len != 0xffff_ffff => at = end,
            _ => break,
        }
    }
    Ok(at as u64)
}

/// Relocates each input's chunk where it lands and appends it to its concatenated section.
fn fill_chunks(
    objs: &[ObjectFile<'_>],
    inputs: &[&DebugInput],
    dests: &[Vec<Dest>],
    concat: &mut [OutSection],
) -> Result<()> {
    for ((o, input), d) in objs.iter().zip(inputs).zip(dests) {
        // A symbol's value: its section's load address, or its chunk's offset (the
        // concatenated sections are at address 0), or 0 (discarded).
        let target = |s: usize| match d.get(s) {
            Some(Dest::Chunk(_, at)) => *at,
            _ => input.section_addrs.get(s).copied().unwrap_or(0),
        };
        for (s, dest) in d.iter().enumerate() {
            let Dest::Chunk(name, at) = dest else {
                continue;
            };
            let len = eh_frame_len(o, s, name)? as usize;
            let mut data = o.section_data(o.section(s)?)?[..len].to_vec();
            apply_relocations(o, s, &mut data, *at, &target)?;
            let sec = concat
                .iter_mut()
                .find(|c| &c.name == name)
                .ok_or_else(|| Error::malformed(&input.name, "debug object: lost a section"))?;
            sec.data.extend_from_slice(&data);
            sec.size = sec.data.len() as u64;
        }
    }
    Ok(())
}

/// `.symtab` and `.strtab`: each input's symbols of loaded sections (and its file symbols),
/// locals first as ELF requires.
fn symbols(objs: &[ObjectFile<'_>], dests: &[Vec<Dest>], out: &mut Vec<OutSection>) -> Result<()> {
    let mut strtab = vec![0u8];
    let (mut locals, mut globals) = (vec![[0u8; 24]], Vec::new());
    for (o, d) in objs.iter().zip(dests) {
        for (index, sym) in o.symbols().iter().enumerate().skip(1) {
            let kind = sym.st_type();
            let (shndx, delta) = match o.symbol_section(sym, index)? {
                Some(s) => match d.get(s) {
                    Some(Dest::Loaded(n, delta)) => (*n as u16, *delta),
                    _ => continue,
                },
                None if kind == elf::STT_FILE => (elf::SHN_ABS, 0),
                None => continue,
            };
            if kind == elf::STT_SECTION {
                continue;
            }
            let mut e = [0u8; 24];
            e[0..4].copy_from_slice(&(strtab.len() as u32).to_le_bytes());
            strtab.extend_from_slice(o.symbol_name(sym)?);
            strtab.push(0);
            e[4] = sym.st_info();
            e[5] = sym.st_other();
            e[6..8].copy_from_slice(&shndx.to_le_bytes());
            let value = sym.st_value(LE).wrapping_add(delta);
            e[8..16].copy_from_slice(&value.to_le_bytes());
            e[16..24].copy_from_slice(&sym.st_size(LE).to_le_bytes());
            if sym.st_bind() == elf::STB_LOCAL {
                locals.push(e);
            } else {
                globals.push(e);
            }
        }
    }
    let strtab_index = out.len() as u32 + 1;
    let mut symtab = OutSection::new(b".symtab", elf::SHT_SYMTAB, Vec::new());
    symtab.info = locals.len() as u32;
    symtab.link = strtab_index;
    symtab.entsize = 24;
    symtab.align = 8;
    symtab.data = locals.into_iter().chain(globals).flatten().collect();
    symtab.size = symtab.data.len() as u64;
    out.push(symtab);
    out.push(OutSection::new(b".strtab", elf::SHT_STRTAB, strtab));
    Ok(())
}

/// The ELF file: header, section contents, `.shstrtab`, section headers.
fn write_elf(mut out: Vec<OutSection>) -> Result<Vec<u8>> {
    let mut shstrtab = vec![0u8];
    let mut names = Vec::with_capacity(out.len() + 1);
    for s in &out {
        names.push(if s.name.is_empty() {
            0
        } else {
            shstrtab.len() as u32
        });
        if !s.name.is_empty() {
            shstrtab.extend_from_slice(&s.name);
            shstrtab.push(0);
        }
    }
    names.push(shstrtab.len() as u32);
    shstrtab.extend_from_slice(b".shstrtab\0");
    out.push(OutSection::new(b".shstrtab", elf::SHT_STRTAB, shstrtab));
    let contents: usize = out.iter().map(|s| s.data.len() + 4096).sum();
    let mut file = Vec::with_capacity(64 + contents + 64 * out.len());
    file.resize(64, 0);
    let mut offsets = Vec::with_capacity(out.len());
    for s in &out {
        let align = s.align.clamp(1, 4096) as usize;
        file.resize(file.len().next_multiple_of(align), 0);
        offsets.push(file.len() as u64);
        if s.sh_type != elf::SHT_NOBITS {
            file.extend_from_slice(&s.data);
        }
    }
    file.resize(file.len().next_multiple_of(8), 0);
    let shoff = file.len() as u64;
    for ((s, name), off) in out.iter().zip(&names).zip(&offsets) {
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&s.sh_type.to_le_bytes());
        h[8..16].copy_from_slice(&s.flags.to_le_bytes());
        h[16..24].copy_from_slice(&s.addr.to_le_bytes());
        h[24..32]
            .copy_from_slice(&(if s.sh_type == elf::SHT_NULL { 0 } else { *off }).to_le_bytes());
        h[32..40].copy_from_slice(&s.size.to_le_bytes());
        h[40..44].copy_from_slice(&s.link.to_le_bytes());
        h[44..48].copy_from_slice(&s.info.to_le_bytes());
        h[48..56].copy_from_slice(&s.align.to_le_bytes());
        h[56..64].copy_from_slice(&s.entsize.to_le_bytes());
        file.extend_from_slice(&h);
    }
    let shnum = u16::try_from(out.len())
        .ok()
        .filter(|&n| n < elf::SHN_LORESERVE)
        .ok_or_else(|| Error::malformed("debug object", "too many sections to merge"))?;
    let h = &mut file[..64];
    h[0..4].copy_from_slice(b"\x7fELF");
    h[4] = elf::ELFCLASS64;
    h[5] = elf::ELFDATA2LSB;
    h[6] = elf::EV_CURRENT;
    h[16..18].copy_from_slice(&elf::ET_REL.to_le_bytes());
    h[18..20].copy_from_slice(&elf::EM_X86_64.to_le_bytes());
    h[20..24].copy_from_slice(&u32::from(elf::EV_CURRENT).to_le_bytes());
    h[40..48].copy_from_slice(&shoff.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes());
    h[58..60].copy_from_slice(&64u16.to_le_bytes());
    h[60..62].copy_from_slice(&shnum.to_le_bytes());
    h[62..64].copy_from_slice(&(shnum - 1).to_le_bytes());
    Ok(file)
}
