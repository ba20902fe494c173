//! Stage 3, the written image: section bytes copied into working memory, the plan's entries
//! filled in, every relocation applied. The writer decides nothing about entries: it looks
//! them up in the plan ([`Placed`]).

use object::elf;
use object::read::elf::{Rela, SectionHeader};
use object::LittleEndian as LE;

use super::arch::Arch;
use super::layout::{Place, Seg};
use super::plan::Placed;
use super::reloc::{self, Formula, Operands, Width};
use super::resolve::LinkObject;
use super::symbols::{key_name, key_of, Class, Key, Resolved};
use super::{LinkEnv, RelocContext};
use crate::error::{Error, Result};
use crate::object::ElfRela;

/// Stage 3: what the written image still needs when it is finalized.
#[derive(Default)]
pub(super) struct Image {
    /// GOT slots of IFUNCs and their resolvers: the slot gets the resolver's result.
    pub ifuncs: Vec<(u64, u64)>,
    /// Words copied at finalize time, (from, to): TLS module ids of earlier links.
    pub copy_words: Vec<(u64, u64)>,
    /// Words that receive this module's TLS id (the module's own id word first).
    pub id_slots: Vec<u64>,
}

/// Stage 3: writes the sections and the plan's entries into `mem` (the working memory of the
/// allocation at `p.base`) and applies every relocation.
pub(super) fn write<A: Arch>(
    r: &Resolved<'_>,
    p: Placed<'_, '_>,
    mem: &mut [u8],
    env: &LinkEnv<'_>,
) -> Result<Image> {
    copy_sections(r, p, mem)?;
    let mut image = Image::default();
    if p.layout().tls.is_some() {
        // The module's own id word, found again for deregistration and by later links.
        image.id_slots.push(p.dso_handle() + 8);
    }
    write_got(r, p, mem, env.run_initializers, &mut image)?;
    write_stubs::<A>(p, mem)?;
    write_tls_entries::<A>(r, p, mem, env, &mut image)?;
    let dso = (p.dso_handle() - p.base) as usize;
    reloc::write_value(mem, dso, Width::B64, p.dso_handle());
    reloc::write_value(mem, dso + 8, Width::B64, 0);
    for (oi, o) in r.res.objects.iter().enumerate() {
        for (si, shdr) in o.file.sections.iter().enumerate() {
            apply_section::<A>(r, p, mem, oi, si, shdr)?;
        }
    }
    Ok(image)
}

/// Section contents: the one copy, from the input map into working memory (sections mapped
/// from their files need none), and the `.eh_frame` terminator.
fn copy_sections(r: &Resolved<'_>, p: Placed<'_, '_>, mem: &mut [u8]) -> Result<()> {
    let lay = p.layout();
    for (oi, o) in r.res.objects.iter().enumerate() {
        for (si, shdr) in o.file.sections.iter().enumerate() {
            if lay.file_maps.iter().any(|m| m.0 == oi && m.1 == si) {
                continue;
            }
            let Some(off) = p.section_offset(oi, si) else {
                continue;
            };
            // Zero fill needs no writes: working memory from the slab reads as zeroes (fresh,
            // or reset when freed or abandoned), so its pages are not even touched.
            if shdr.sh_type(LE) == elf::SHT_NOBITS {
                continue;
            }
            let data = o.file.section_data(shdr)?;
            let off = off as usize;
            mem[off..off + data.len()].copy_from_slice(data);
        }
    }
    if let Some((off, size)) = lay.eh_frame {
        let end = lay.offset(Seg::Ro, off + size) as usize;
        mem[end - 4..end].fill(0);
    }
    Ok(())
}

/// GOT words. IFUNC slots are filled by their resolver at finalize time; when no code of the
/// inputs may run (`--noexec`), the resolver is not called and the slot holds the resolver's
/// own address.
fn write_got(
    r: &Resolved<'_>,
    p: Placed<'_, '_>,
    mem: &mut [u8],
    run_initializers: bool,
    image: &mut Image,
) -> Result<()> {
    for (i, (key, class)) in p.plan.entries.got.iter().enumerate() {
        let slot = p.got_word(i);
        let value = if class.is_ifunc() {
            let resolver = p.symbol_address(*class).ok().flatten().unwrap_or(0);
            if !run_initializers {
                resolver
            } else {
                image.ifuncs.push((slot, resolver));
                0
            }
        } else {
            match p.symbol_address(*class) {
                Ok(Some(a)) => a,
                Ok(None) => {
                    return Err(Error::Usage(format!(
                        "thread-local `{}` is accessed through the GOT as if it were ordinary data",
                        key_name(&r.res, key)
                    )))
                }
                Err(e) => return Err(Error::Usage(format!("{}: {e}", key_name(&r.res, key)))),
            }
        };
        reloc::write_value(mem, (slot - p.base) as usize, Width::B64, value);
    }
    Ok(())
}

/// Stubs, each jumping through its target's GOT word.
fn write_stubs<A: Arch>(p: Placed<'_, '_>, mem: &mut [u8]) -> Result<()> {
    let entries = &p.plan.entries;
    for (i, key) in entries.stubs.iter().enumerate() {
        let stub = p.stub_at(i);
        let slot = p.got_word(entries.got_index[key]);
        if !A::write_stub(mem, (stub - p.base) as usize, stub, slot) {
            return Err(Error::Memory("stub cannot reach its GOT slot".into()));
        }
    }
    Ok(())
}

/// TLS pairs {module id, offset} and descriptors; the module id words are recorded in `image`
/// to be filled at finalize time.
fn write_tls_entries<A: Arch>(
    r: &Resolved<'_>,
    p: Placed<'_, '_>,
    mem: &mut [u8],
    env: &LinkEnv<'_>,
    image: &mut Image,
) -> Result<()> {
    let entries = &p.plan.entries;
    // Where the id word gets its value: an earlier link's id word, or this module's id.
    let mut id_word = |at: u64, from: Option<u64>| match from {
        Some(from) => image.copy_words.push((from, at)),
        None => image.id_slots.push(at),
    };
    for (i, (key, class)) in entries.pairs.iter().enumerate() {
        let at = p.pair_at(i);
        let (foreign, off) = tls_entry(r, p, key, *class)?;
        id_word(at, foreign);
        let at = (at - p.base) as usize;
        reloc::write_value(mem, at, Width::B64, 0);
        reloc::write_value(mem, at + 8, Width::B64, off);
    }
    let resolver = if entries.descs.is_empty() {
        0
    } else {
        env.executor.tlsdesc_resolver()?
    };
    for (i, (key, class)) in entries.descs.iter().enumerate() {
        let at = p.desc_at(i);
        let (foreign, off) = tls_entry(r, p, &Some(*key), *class)?;
        id_word(at + A::TLS_DESC_ID_WORD, foreign);
        A::write_tls_descriptor(mem, (at - p.base) as usize, at, resolver, off);
    }
    Ok(())
}

/// The id word to copy (a thread-local of an earlier link) and the offset of a TLS entry's
/// variable in its module's block.
fn tls_entry<'d>(
    r: &Resolved<'d>,
    p: Placed<'_, 'd>,
    key: &Option<Key<'d>>,
    class: Class<'d>,
) -> Result<(Option<u64>, u64)> {
    match (key, class) {
        (None, _) => Ok((None, 0)),
        (_, Class::ForeignTls { id_slot, offset }) => Ok((Some(id_slot), offset)),
        (Some(k), c) => match p.tls_offset(c) {
            Some(off) => Ok((None, off)),
            None => Err(Error::Usage(format!(
                "`{}` is used as a thread-local but is not one defined by JIT'd code \
                 (thread-locals of shared libraries are not supported)",
                key_name(&r.res, k)
            ))),
        },
    }
}

/// One placed section, whose relocations are being applied.
struct Section<'a, 'd> {
    obj: &'a LinkObject<'d>,
    oi: usize,
    si: usize,
    /// Executor address of its first byte.
    addr: u64,
    size: u64,
    executable: bool,
    /// An `.eh_frame` laid out in the unwind table.
    is_eh_frame: bool,
}

/// Applies the relocations of one section, if it is placed. Every write is bounded by the
/// section, never by the allocation around it.
fn apply_section<A: Arch>(
    r: &Resolved<'_>,
    p: Placed<'_, '_>,
    mem: &mut [u8],
    oi: usize,
    si: usize,
    shdr: &crate::object::Shdr,
) -> Result<()> {
    let Some(sec_off) = p.section_offset(oi, si) else {
        return Ok(());
    };
    let o = &r.res.objects[oi];
    let lay = p.layout();
    let size = shdr.sh_size(LE);
    let code = usize::try_from(size)
        .ok()
        .and_then(|n| mem.get_mut(sec_off as usize..)?.get_mut(..n))
        .ok_or_else(|| Error::Memory("a section lies outside its allocation".into()))?;
    let in_unwind_table = matches!(lay.places[oi][si], Place::Mem { seg: Seg::Ro, off }
        if lay.eh_frame.is_some_and(|(s, n)| off >= s && off < s + n));
    let sec = Section {
        obj: o,
        oi,
        si,
        addr: p.base + sec_off,
        size,
        executable: shdr.sh_flags(LE) & u64::from(elf::SHF_EXECINSTR) != 0,
        is_eh_frame: in_unwind_table && o.file.section_name(si)? == b".eh_frame",
    };
    for rela in o.file.relocations(si)? {
        apply::<A>(r, p, &sec, code, rela)?;
    }
    Ok(())
}

/// What a relocation's formula reads about its target, from the plan.
struct Target<'a, 'p, 'd> {
    p: Placed<'p, 'd>,
    class: Class<'d>,
    key: &'a Key<'d>,
}

impl Operands for Target<'_, '_, '_> {
    fn symbol(&self) -> std::result::Result<u64, String> {
        match self.p.symbol_address(self.class) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => {
                Err("a thread-local is used as an ordinary address: compile with -fPIC".into())
            }
            Err(e) => Err(e),
        }
    }
    fn is_ifunc(&self) -> bool {
        self.class.is_ifunc()
    }
    fn is_external_function(&self) -> bool {
        self.class.is_external_function()
    }
    fn stub(&self) -> Option<u64> {
        self.p.stub(self.key)
    }
    fn got_entry(&self) -> Option<u64> {
        self.p.got_entry(self.key)
    }
    fn got(&self) -> u64 {
        self.p.got_base()
    }
    fn size(&self) -> u64 {
        self.class.size()
    }
    fn tls_pair(&self, local_dynamic: bool) -> Option<u64> {
        self.p.pair(&(!local_dynamic).then_some(*self.key))
    }
    fn tls_desc(&self) -> Option<u64> {
        self.p.desc(self.key)
    }
    fn dtp_offset(&self) -> Option<u64> {
        match (self.p.tls_offset(self.class), self.class) {
            (Some(off), _) => Some(off),
            (None, Class::ForeignTls { offset, .. }) => Some(offset),
            _ => None,
        }
    }
}

/// Applies one relocation of `sec`, whose bytes are `code`.
fn apply<A: Arch>(
    r: &Resolved<'_>,
    p: Placed<'_, '_>,
    sec: &Section<'_, '_>,
    code: &mut [u8],
    rela: &ElfRela,
) -> Result<()> {
    let r_type = rela.r_type(LE, false);
    let sym = rela.r_sym(LE, false) as usize;
    let r_offset = rela.r_offset(LE);
    let ctx = RelocContext {
        obj: sec.obj,
        sec: sec.si,
        offset: r_offset,
        r_type,
        sym,
        kind_name: A::reloc_name,
    };
    let Some(desc) = A::reloc(r_type) else {
        return Err(ctx.error("relocation type not supported by remjit"));
    };
    let width = desc.width.bytes() as u64;
    if r_offset.checked_add(width).is_none_or(|end| end > sec.size) {
        return Err(ctx.error(format!(
            "its {width}-byte field lies outside the section ({:#x} bytes): malformed object",
            sec.size
        )));
    }
    // Within the section.
    let at = r_offset as usize;
    let place = sec.addr + r_offset;
    let addend = rela.r_addend(LE);
    let class = *r.classes[sec.oi]
        .get(sym)
        .ok_or_else(|| ctx.error("no such symbol"))?;
    let key = key_of(sec.obj, sec.oi, sym)?;
    if class == Class::Discarded {
        if sec.is_eh_frame {
            neutralize_discarded_fde(code, at, desc.formula, desc.width, place);
            return Ok(());
        }
        return Err(ctx.error(
            "refers to a section dropped with its COMDAT group (another copy of the group was \
             kept): the objects were compiled inconsistently",
        ));
    }
    // Only code is rewritten; elsewhere the GOT serves.
    if desc.formula == Formula::GotPcRelRelaxable && sec.executable && class.is_direct() {
        if let Ok(Some(s)) = p.symbol_address(class) {
            if A::relax_got_load(code, at, r_type, place, s, addend) {
                return Ok(());
            }
        }
    }
    let target = Target {
        p,
        class,
        key: &key,
    };
    let Some(value) =
        reloc::value(desc, addend as u64, place, &target).map_err(|e| ctx.error(e))?
    else {
        return Ok(());
    };
    reloc::write_field(code, at, desc.width, value).map_err(|_| {
        let library_data = match class {
            Class::External { data: true, addr } => Some(addr),
            _ => None,
        };
        ctx.error(reloc::range_problem(
            desc.formula,
            desc.width,
            library_data,
            value,
        ))
    })
}

/// An FDE of a dropped COMDAT copy: its pc_begin is made to decode to 0 so the unwinder skips
/// it.
fn neutralize_discarded_fde(
    code: &mut [u8],
    at: usize,
    formula: Formula,
    width: Width,
    place: u64,
) {
    let v = if formula == Formula::PcRelative {
        0u64.wrapping_sub(place)
    } else {
        0
    };
    // Out of range: left as it is.
    let _ = reloc::write_field(code, at, width, v);
}
