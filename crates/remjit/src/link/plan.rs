//! Stage 2, the plan: the linker-made entries (GOT words, stubs, TLS pairs and descriptors) and
//! the layout, as data. [`plan`] is the one place that decides which entries exist; the writer
//! and the link map only look them up ([`Placed`]).

use foldhash::HashMap;
use std::sync::Arc;

use object::elf;
use object::read::elf::{Rela, SectionHeader};
use object::LittleEndian as LE;

use super::arch::Arch;
use super::layout::{self, Layout, Place, Seg, Synthesized};
use super::reloc::{Formula, RelocDesc, Width};
use super::resolve::LinkObject;
use super::symbols::{key_of, Class, Key, Resolved};
use super::{LinkEnv, LinkInput, RelocContext};
use crate::error::{Error, Result};
use crate::memory::FileMap;

/// Linker-made entries, in allocation order, each with the class of its target.
#[derive(Default)]
pub(super) struct Entries<'d> {
    pub got: Vec<(Key<'d>, Class<'d>)>,
    pub got_index: HashMap<Key<'d>, usize>,
    pub stubs: Vec<Key<'d>>,
    pub stub_index: HashMap<Key<'d>, usize>,
    /// `None` is the local-dynamic pair.
    pub pairs: Vec<(Option<Key<'d>>, Class<'d>)>,
    pub pair_index: HashMap<Option<Key<'d>>, usize>,
    pub descs: Vec<(Key<'d>, Class<'d>)>,
    pub desc_index: HashMap<Key<'d>, usize>,
}

/// The entry a relocation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Got,
    /// A stub, and the GOT word it jumps through.
    Stub,
    TlsPair,
    LocalDynamicPair,
    TlsDescriptor,
}

impl<'d> Entries<'d> {
    fn add(&mut self, need: Need, key: Key<'d>, class: Class<'d>) {
        match need {
            Need::Got => {
                self.got(key, class);
            }
            Need::Stub => {
                self.got(key, class);
                if !self.stub_index.contains_key(&key) {
                    self.stub_index.insert(key, self.stubs.len());
                    self.stubs.push(key);
                }
            }
            Need::TlsPair => self.pair(Some(key), class),
            Need::LocalDynamicPair => self.pair(None, Class::Null),
            Need::TlsDescriptor => {
                if !self.desc_index.contains_key(&key) {
                    self.desc_index.insert(key, self.descs.len());
                    self.descs.push((key, class));
                }
            }
        }
    }

    fn got(&mut self, key: Key<'d>, class: Class<'d>) -> usize {
        *self.got_index.entry(key).or_insert_with(|| {
            self.got.push((key, class));
            self.got.len() - 1
        })
    }

    fn pair(&mut self, key: Option<Key<'d>>, class: Class<'d>) {
        if !self.pair_index.contains_key(&key) {
            self.pair_index.insert(key, self.pairs.len());
            self.pairs.push((key, class));
        }
    }

    fn counts(&self) -> Synthesized {
        Synthesized {
            got_entries: self.got.len() as u64,
            stubs: self.stubs.len() as u64,
            tls_pairs: self.pairs.len() as u64,
            tls_descs: self.descs.len() as u64,
        }
    }
}

const STATIC_TLS: &str = "initial-exec/local-exec thread-local access cannot reach a JIT'd \
                          module's thread-locals: compile with -fPIC (or -ftls-model=global-dynamic)";

/// Which entry a relocation of `desc` against a target of `class` needs (the static TLS
/// models are refused here, before anything is written).
fn need(desc: RelocDesc, class: Class<'_>) -> std::result::Result<Option<Need>, &'static str> {
    let (ifunc, external_fn) = (class.is_ifunc(), class.is_external_function());
    Ok(Some(match desc.formula {
        Formula::None | Formula::TlsDescCall | Formula::DtpOff | Formula::Size => return Ok(None),
        Formula::StaticTls => return Err(STATIC_TLS),
        Formula::GotPcRel | Formula::GotPcRelRelaxable | Formula::GotOffset => Need::Got,
        Formula::Branch | Formula::PltGotRelative if ifunc || external_fn => Need::Stub,
        // As JITLink does: a branch to an absolute address goes through a stub when the
        // address is out of the call's reach.
        Formula::Branch if matches!(class, Class::Absolute(_)) => Need::Stub,
        Formula::PcRelative | Formula::Absolute
            if ifunc || (external_fn && desc.width != Width::B64) =>
        {
            Need::Stub
        }
        Formula::TlsGd => Need::TlsPair,
        Formula::TlsLd => Need::LocalDynamicPair,
        Formula::TlsDesc => Need::TlsDescriptor,
        _ => return Ok(None),
    }))
}

/// Stage 2: entries and layout, before any memory is allocated.
pub(super) struct Plan<'d> {
    /// The linker-made entries.
    pub entries: Entries<'d>,
    /// Where every section and entry goes.
    pub layout: Layout,
    /// Large sections without relocations, mapped from their files rather than copied.
    pub file_maps: Vec<FileMap>,
}

/// Sections at least this large, without relocations, are mapped from their files.
const FILE_MAP_THRESHOLD: u64 = 256 * 1024;

/// Stage 2: scans every relocation of the loaded sections for the entries it needs, then lays
/// out the sections, the entries and the commons.
pub(super) fn plan<'d, A: Arch>(
    r: &Resolved<'d>,
    inputs: &[LinkInput],
    env: &LinkEnv<'_>,
) -> Result<Plan<'d>> {
    let mut entries = Entries::default();
    for (oi, o) in r.res.objects.iter().enumerate() {
        for (si, shdr) in o.file.sections.iter().enumerate() {
            if layout::is_loaded(o, si, shdr) {
                scan_section::<A>(r, oi, o, si, &mut entries)?;
            }
        }
    }
    stub_exported_ifuncs(r, &mut entries);
    let page = env.slab.mapper().page_size();
    // Large sections without relocations are mapped from their files, not copied.
    let file_of = |oi: usize, si: usize| -> Option<(Arc<std::fs::File>, u64)> {
        let o = &r.res.objects[oi];
        let shdr = o.file.section(si).ok()?;
        if shdr.sh_type(LE) != elf::SHT_PROGBITS
            || shdr.sh_size(LE) < FILE_MAP_THRESHOLD
            || o.file.rela_for.get(si).copied().unwrap_or(0) != 0
            || !env.slab.mapper().can_map_files()
        {
            return None;
        }
        let data = o.file.section_data(shdr).ok()?;
        inputs.iter().find_map(|i| match i {
            LinkInput::Object(f) | LinkInput::Archive(f) => f.file_range(data),
        })
    };
    let mappable = |oi: usize, si: usize| file_of(oi, si).map(|(_, off)| off);
    let lay = layout::layout::<A>(
        &r.res.objects,
        entries.counts(),
        &r.commons,
        page,
        &mappable,
    )?;
    let mut file_maps = Vec::new();
    for &(oi, si, seg, off) in &lay.file_maps {
        let (file, foff) = file_of(oi, si).ok_or_else(|| Error::Memory("file vanished".into()))?;
        let size = r.res.objects[oi].file.section(si)?.sh_size(LE);
        let start = lay.offset(seg, off);
        let page_start = start & !(page - 1);
        file_maps.push(FileMap {
            offset: page_start,
            len: (start + size).div_ceil(page) * page - page_start,
            file,
            file_offset: foff - (start - page_start),
        });
    }
    Ok(Plan {
        entries,
        layout: lay,
        file_maps,
    })
}

/// Gives every IFUNC the link exports a stub: later modules call it there (its GOT word holds
/// the function the resolver chose once the module is finalized), never the resolver itself.
fn stub_exported_ifuncs<'d>(r: &Resolved<'d>, entries: &mut Entries<'d>) {
    let mut names: Vec<&'d [u8]> = r
        .res
        .globals
        .iter()
        .filter(|(&name, g)| {
            (g.exported || r.res.in_kept_comdat(g.def)) && r.global_class(name, g.def).is_ifunc()
        })
        .map(|(&name, _)| name)
        .collect();
    // In name order: the same inputs get the same layout.
    names.sort_unstable();
    for name in names {
        let class = r.global_class(name, r.res.globals[name].def);
        entries.add(Need::Stub, Key::Name(name), class);
    }
}

/// Adds the entries the relocations of one section need.
fn scan_section<'d, A: Arch>(
    r: &Resolved<'d>,
    oi: usize,
    o: &LinkObject<'d>,
    si: usize,
    entries: &mut Entries<'d>,
) -> Result<()> {
    for rela in o.file.relocations(si)? {
        let r_type = rela.r_type(LE, false);
        let sym = rela.r_sym(LE, false) as usize;
        let ctx = || RelocContext {
            obj: o,
            sec: si,
            offset: rela.r_offset(LE),
            r_type,
            sym,
            kind_name: A::reloc_name,
        };
        let Some(desc) = A::reloc(r_type) else {
            return Err(ctx().error("relocation type not supported by remjit"));
        };
        let class = *r.classes[oi]
            .get(sym)
            .ok_or_else(|| Error::malformed(&o.file.name, "relocation names a missing symbol"))?;
        let key = key_of(o, oi, sym)?;
        if let Some(need) = need(desc, class).map_err(|e| ctx().error(e))? {
            entries.add(need, key, class);
        }
    }
    Ok(())
}

/// A plan at its address: every address the writer, the finalize request and the link map
/// read, computed the same way for all of them.
#[derive(Clone, Copy)]
pub(super) struct Placed<'p, 'd> {
    pub plan: &'p Plan<'d>,
    /// Executor address of the allocation.
    pub base: u64,
}

impl<'p, 'd> Placed<'p, 'd> {
    pub fn layout(&self) -> &'p Layout {
        &self.plan.layout
    }

    /// Executor address of `off` in `seg`.
    pub fn addr(&self, seg: Seg, off: u64) -> u64 {
        self.base + self.plan.layout.offset(seg, off)
    }

    /// `_GLOBAL_OFFSET_TABLE_`: the GOT's address.
    pub fn got_base(&self) -> u64 {
        self.addr(Seg::Rw, self.plan.layout.got_off)
    }

    /// Address of GOT word `i`.
    pub fn got_word(&self, i: usize) -> u64 {
        self.got_base() + i as u64 * 8
    }

    /// Address of stub `i`.
    pub fn stub_at(&self, i: usize) -> u64 {
        let l = &self.plan.layout;
        self.addr(Seg::Text, l.stubs_off) + i as u64 * l.stub_size
    }

    /// Address of TLS pair `i`.
    pub fn pair_at(&self, i: usize) -> u64 {
        self.addr(Seg::Rw, self.plan.layout.tls_pairs_off) + i as u64 * 16
    }

    /// Address of TLS descriptor `i`.
    pub fn desc_at(&self, i: usize) -> u64 {
        let l = &self.plan.layout;
        self.addr(Seg::Rw, l.tls_descs_off) + i as u64 * l.tls_desc_size
    }

    /// Offset of `key`'s GOT word from the GOT.
    pub fn got_entry(&self, key: &Key<'d>) -> Option<u64> {
        self.plan.entries.got_index.get(key).map(|&i| i as u64 * 8)
    }

    /// Address of `key`'s stub.
    pub fn stub(&self, key: &Key<'d>) -> Option<u64> {
        self.plan
            .entries
            .stub_index
            .get(key)
            .map(|&i| self.stub_at(i))
    }

    /// Address of `key`'s general-dynamic pair (`None`: the local-dynamic pair).
    pub fn pair(&self, key: &Option<Key<'d>>) -> Option<u64> {
        self.plan
            .entries
            .pair_index
            .get(key)
            .map(|&i| self.pair_at(i))
    }

    /// Address of `key`'s TLS descriptor.
    pub fn desc(&self, key: &Key<'d>) -> Option<u64> {
        self.plan
            .entries
            .desc_index
            .get(key)
            .map(|&i| self.desc_at(i))
    }

    /// Offset from the base of a loaded section's bytes (`.tdata`: its template).
    pub fn section_offset(&self, oi: usize, si: usize) -> Option<u64> {
        let l = &self.plan.layout;
        match l.places[oi][si] {
            Place::Mem { seg, off } => Some(l.offset(seg, off)),
            Place::TlsData { off, .. } => Some(l.offset(Seg::Ro, off)),
            _ => None,
        }
    }

    /// Address of a resolved symbol (None: a thread-local, which has no address).
    pub fn symbol_address(&self, c: Class<'_>) -> std::result::Result<Option<u64>, String> {
        let lay = &self.plan.layout;
        Ok(Some(match c {
            Class::Section {
                obj, sec, value, ..
            } => match lay.places[obj][sec] {
                // Symbol values come from the file: any value is an address, never an index.
                Place::Mem { seg, off } => self.addr(seg, off).wrapping_add(value),
                Place::TlsData { .. } | Place::TlsBss { .. } => return Ok(None),
                Place::None => return Err("symbol in a section that is not loaded".into()),
            },
            Class::Common { name, .. } => self.addr(
                Seg::Rw,
                *lay.commons.get(name).ok_or("common not laid out")?,
            ),
            Class::Absolute(v) => v,
            Class::GotBase => self.got_base(),
            Class::DsoHandle => self.addr(Seg::Rw, lay.dso_off),
            Class::SectionBound { section, stop } => match lay.named_groups.get(section) {
                Some(&(seg, start, end)) => self.addr(seg, if stop { end } else { start }),
                None => 0,
            },
            Class::External { addr, .. } => addr,
            Class::ForeignTls { .. } | Class::TlsModuleBase => return Ok(None),
            Class::Null => 0,
            Class::Discarded => return Err("symbol in a discarded COMDAT section".into()),
        }))
    }

    /// Offset of a thread-local of this link in the module's TLS block.
    pub fn tls_offset(&self, c: Class<'_>) -> Option<u64> {
        let lay = &self.plan.layout;
        match c {
            Class::TlsModuleBase => lay.tls.map(|_| 0),
            Class::Section {
                obj, sec, value, ..
            } => match lay.places[obj][sec] {
                Place::TlsData { tls_off, .. } | Place::TlsBss { tls_off } => {
                    Some(tls_off.wrapping_add(value))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Address of this module's `__dso_handle` word; the word after it holds the module's TLS
    /// id.
    pub fn dso_handle(&self) -> u64 {
        self.addr(Seg::Rw, self.plan.layout.dso_off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::x86_64::X86_64;

    fn need_for(r_type: u32, class: Class<'_>) -> std::result::Result<Option<Need>, &'static str> {
        need(X86_64::reloc(r_type).unwrap(), class)
    }

    const LIBC_FN: Class<'static> = Class::External {
        addr: 0x7f00_0000_1000,
        data: false,
    };
    const LIBC_DATA: Class<'static> = Class::External {
        addr: 0x7f00_0000_2000,
        data: true,
    };
    const IFUNC: Class<'static> = Class::Section {
        obj: 0,
        sec: 1,
        value: 0,
        size: 0,
        ifunc: true,
    };

    #[test]
    fn calls_to_functions_outside_the_link_get_stubs() {
        assert_eq!(need_for(elf::R_X86_64_PLT32, LIBC_FN), Ok(Some(Need::Stub)));
        assert_eq!(need_for(elf::R_X86_64_PC32, LIBC_FN), Ok(Some(Need::Stub)));
        assert_eq!(need_for(elf::R_X86_64_32, LIBC_FN), Ok(Some(Need::Stub)));
        // A 64-bit field reaches anything: no stub.
        assert_eq!(need_for(elf::R_X86_64_64, LIBC_FN), Ok(None));
        assert_eq!(need_for(elf::R_X86_64_PC64, LIBC_FN), Ok(None));
        // Data is never called through a stub.
        assert_eq!(need_for(elf::R_X86_64_PC32, LIBC_DATA), Ok(None));
        // As JITLink: a call to an `-abs` address may need a stub, other references not.
        assert_eq!(
            need_for(elf::R_X86_64_PLT32, Class::Absolute(1 << 40)),
            Ok(Some(Need::Stub))
        );
        assert_eq!(
            need_for(elf::R_X86_64_PC32, Class::Absolute(1 << 40)),
            Ok(None)
        );
    }

    #[test]
    fn ifuncs_are_always_reached_through_stubs() {
        for r in [elf::R_X86_64_PLT32, elf::R_X86_64_PC32, elf::R_X86_64_64] {
            assert_eq!(need_for(r, IFUNC), Ok(Some(Need::Stub)), "type {r}");
        }
    }

    #[test]
    fn got_and_tls_entries() {
        for r in [
            elf::R_X86_64_GOTPCREL,
            elf::R_X86_64_GOTPCRELX,
            elf::R_X86_64_REX_GOTPCRELX,
            elf::R_X86_64_GOTPCREL64,
            elf::R_X86_64_GOT32,
            elf::R_X86_64_GOT64,
            elf::R_X86_64_GOTPLT64,
        ] {
            assert_eq!(need_for(r, LIBC_DATA), Ok(Some(Need::Got)), "type {r}");
        }
        assert_eq!(
            need_for(elf::R_X86_64_TLSGD, Class::Null),
            Ok(Some(Need::TlsPair))
        );
        assert_eq!(
            need_for(elf::R_X86_64_TLSLD, Class::Null),
            Ok(Some(Need::LocalDynamicPair))
        );
        assert_eq!(
            need_for(elf::R_X86_64_GOTPC32_TLSDESC, Class::Null),
            Ok(Some(Need::TlsDescriptor))
        );
        for r in [
            elf::R_X86_64_DTPOFF32,
            elf::R_X86_64_TLSDESC_CALL,
            elf::R_X86_64_SIZE64,
        ] {
            assert_eq!(need_for(r, Class::Null), Ok(None), "type {r}");
        }
        for r in [
            elf::R_X86_64_GOTTPOFF,
            elf::R_X86_64_TPOFF32,
            elf::R_X86_64_TPOFF64,
        ] {
            assert_eq!(need_for(r, Class::Null), Err(STATIC_TLS), "type {r}");
        }
    }

    #[test]
    fn entries_are_made_once_per_target() {
        let mut e = Entries::default();
        let (f, g) = (Key::Name(b"f"), Key::Name(b"g"));
        e.add(Need::Got, f, LIBC_FN);
        e.add(Need::Stub, f, LIBC_FN);
        e.add(Need::Stub, g, LIBC_FN);
        e.add(Need::Stub, f, LIBC_FN);
        e.add(Need::LocalDynamicPair, f, LIBC_FN);
        e.add(Need::LocalDynamicPair, g, LIBC_FN);
        // The stub of `f` jumps through the GOT word its GOTPCREL made.
        assert_eq!(e.got_index[&f], 0);
        assert_eq!(e.got_index[&g], 1);
        assert_eq!((e.stubs.len(), e.stub_index[&g]), (2, 1));
        assert_eq!(e.pairs.len(), 1);
        let c = e.counts();
        assert_eq!(
            (c.got_entries, c.stubs, c.tls_pairs, c.tls_descs),
            (2, 2, 1, 0)
        );
    }
}
