//! The link pipeline: read -> resolve -> layout -> allocate -> write + fixup -> finalize.
//!
//! One call to [`link`] turns a set of objects and archives into one allocation in the
//! executing process: code, read-only data and writable data in three page-aligned segments of
//! one slab range, with the GOT, stubs, TLS pairs and descriptors made by the linker, and one
//! list of actions (unwind registration, TLS registration, IFUNC resolution, constructors) that
//! runs when the allocation is finalized.

pub mod fixup;
pub mod layout;
pub mod map;
pub mod resolve;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use object::elf;
use object::read::elf::{Rela, SectionHeader, Sym};
use object::LittleEndian as LE;

use crate::error::{Error, Result, UndefinedSymbol};
use crate::executor::Executor;
use crate::input::InputFile;
use crate::memory::{
    AllocAction, AllocActionPair, AllocInfo, FileMap, FinalizedAlloc, Prot, SegmentInfo,
    SlabAllocator,
};
use crate::object::{reloc_name, ObjectFile};
use fixup::{Formula, Width};
use layout::{InitKind, Layout, Place, Seg, Synthesized};
use resolve::{GlobalDef, LinkObject, Resolution};

/// What a symbol exported by an earlier link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    /// Code.
    Function,
    /// Data (or anything that is not code).
    Data,
    /// A thread-local: the word holding its module's id and its offset in the module's block.
    ThreadLocal {
        /// Address of a word holding the TLS module id.
        id_slot: u64,
        /// Offset in the module's TLS block.
        offset: u64,
    },
}

/// A symbol of the session, defined by an earlier link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSymbol {
    /// Its address in the executing process (0 for thread-locals).
    pub addr: u64,
    /// What it is.
    pub kind: SymbolKind,
    /// Its size in bytes (`st_size`; 0 when unknown).
    pub size: u64,
}

/// One input of a link.
#[derive(Clone)]
pub enum LinkInput {
    /// A relocatable object: always loaded.
    Object(InputFile),
    /// A static archive: members loaded on demand.
    Archive(InputFile),
}

/// Everything a link needs from its session.
pub struct LinkEnv<'a> {
    /// Symbols of earlier links.
    pub session: &'a HashMap<Vec<u8>, SessionSymbol>,
    /// Names bound to the executor's runtime (`__tls_get_addr`, `atexit`, ...).
    pub overrides: &'a HashMap<Vec<u8>, u64>,
    /// Absolute symbols given by the user (`--abs`).
    pub absolutes: &'a HashMap<Vec<u8>, u64>,
    /// Resolve undefined symbols to 0 instead of failing.
    pub phony_externals: bool,
    /// Where the code runs.
    pub executor: &'a dyn Executor,
    /// Where the memory comes from.
    pub slab: &'a SlabAllocator,
    /// Run code of the inputs when finalizing: constructors and IFUNC resolvers, with the
    /// `.eh_frame` registered for them. Off for `--noexec`, which runs no code of the inputs:
    /// an IFUNC's GOT slot then holds its resolver's address.
    pub run_initializers: bool,
    /// A symbol the link (or an earlier one) must define, checked before anything runs.
    pub required_entry: Option<&'a str>,
    /// Record a [`map::LinkMap`] of the link (for `-check`).
    pub record_map: bool,
    /// Whether an earlier link kept the COMDAT group with this signature (this link then
    /// drops its copy).
    pub comdat_kept: &'a dyn Fn(&[u8]) -> bool,
    /// A symbol of any visibility defined in a COMDAT group an earlier link kept: where a
    /// dropped copy's definitions resolve.
    pub comdat_symbol: &'a dyn Fn(&[u8]) -> Option<SessionSymbol>,
}

/// Time spent in each stage of a link.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkTimes {
    /// Parsing objects and archives.
    pub read: Duration,
    /// Symbol resolution, archive members, the external lookup.
    pub resolve: Duration,
    /// Layout and allocation.
    pub layout: Duration,
    /// Writing sections and applying relocations.
    pub fixup: Duration,
    /// Protections and finalize actions (constructors included).
    pub finalize: Duration,
}

/// A function of a linked module, for reports on crashes.
#[derive(Debug, Clone)]
pub struct FunctionSymbol {
    /// Its name.
    pub name: String,
    /// Its address.
    pub addr: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// The result of a link: one finalized allocation and what it exports.
#[derive(Debug)]
pub struct LinkedModule {
    /// The memory.
    pub alloc: FinalizedAlloc,
    /// Exported symbols (default and protected visibility).
    pub exports: Vec<(Vec<u8>, SessionSymbol)>,
    /// Every function symbol, for crash reports.
    pub functions: Vec<FunctionSymbol>,
    /// The module's `__dso_handle`.
    pub dso: u64,
    /// Finalizers in the order to run them.
    pub finalizers: Vec<u64>,
    /// Names of the objects linked (archive members included).
    pub objects: Vec<String>,
    /// The objects that carry DWARF, for debuggers and profilers.
    pub debug_inputs: Vec<crate::debug::DebugInput>,
    /// COMDAT groups this link kept (new to the session).
    pub kept_comdats: Vec<Vec<u8>>,
    /// Symbols of any visibility defined in those groups.
    pub comdat_symbols: Vec<(Vec<u8>, SessionSymbol)>,
    /// COMDAT groups dropped because an earlier link kept them.
    pub used_comdats: Vec<Vec<u8>>,
    /// Names bound to symbols of earlier links ([`LinkEnv::session`]).
    pub imports: Vec<Vec<u8>>,
    /// Names bound to the kept copy of a dropped COMDAT definition.
    pub comdat_imports: Vec<Vec<u8>>,
    /// Stage timings.
    pub times: LinkTimes,
    /// Where everything went, when [`LinkEnv::record_map`] asked for it.
    pub map: Option<map::LinkMap>,
}

/// A symbol as the linker sees it once resolved: where its address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class<'d> {
    /// Defined in a loaded section of this link.
    Section {
        obj: usize,
        sec: usize,
        value: u64,
        size: u64,
        ifunc: bool,
    },
    /// A common symbol of this link.
    Common { name: &'d [u8], size: u64 },
    /// An absolute value.
    Absolute(u64),
    /// `_GLOBAL_OFFSET_TABLE_`.
    GotBase,
    /// `__dso_handle`.
    DsoHandle,
    /// `_TLS_MODULE_BASE_`: offset 0 of this link's TLS block (TLS descriptors, local-dynamic).
    TlsModuleBase,
    /// `__start_SEC` / `__stop_SEC`.
    SectionBound { section: &'d [u8], stop: bool },
    /// Outside this link: an earlier link, the runtime, or a library of the executing process.
    External { addr: u64, data: bool },
    /// A thread-local of an earlier link.
    ForeignTls { id_slot: u64, offset: u64 },
    /// Weak undefined (or phony): address 0.
    Null,
    /// A local symbol of a section dropped with its COMDAT group.
    Discarded,
}

/// Identity of a relocation target for the GOT, stubs and TLS entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key<'d> {
    Name(&'d [u8]),
    Local(usize, usize),
}

/// Linker-made entries, in allocation order.
#[derive(Default)]
struct Entries<'d> {
    got: Vec<(Key<'d>, Class<'d>)>,
    got_index: HashMap<Key<'d>, usize>,
    stubs: Vec<Key<'d>>,
    stub_index: HashMap<Key<'d>, usize>,
    /// `None` is the local-dynamic pair.
    pairs: Vec<(Option<Key<'d>>, Class<'d>)>,
    pair_index: HashMap<Option<Key<'d>>, usize>,
    descs: Vec<(Key<'d>, Class<'d>)>,
    desc_index: HashMap<Key<'d>, usize>,
}

impl<'d> Entries<'d> {
    fn got(&mut self, key: Key<'d>, class: Class<'d>) -> usize {
        *self.got_index.entry(key).or_insert_with(|| {
            self.got.push((key, class));
            self.got.len() - 1
        })
    }
    fn stub(&mut self, key: Key<'d>, class: Class<'d>) {
        self.got(key, class);
        if !self.stub_index.contains_key(&key) {
            self.stub_index.insert(key, self.stubs.len());
            self.stubs.push(key);
        }
    }
    fn pair(&mut self, key: Option<Key<'d>>, class: Class<'d>) {
        if !self.pair_index.contains_key(&key) {
            self.pair_index.insert(key, self.pairs.len());
            self.pairs.push((key, class));
        }
    }
    fn desc(&mut self, key: Key<'d>, class: Class<'d>) {
        if !self.desc_index.contains_key(&key) {
            self.desc_index.insert(key, self.descs.len());
            self.descs.push((key, class));
        }
    }
}

/// Sections at least this large, without relocations, are mapped from their files.
const FILE_MAP_THRESHOLD: u64 = 256 * 1024;

const SYNTHETIC_GOT: &[u8] = b"_GLOBAL_OFFSET_TABLE_";
const SYNTHETIC_DSO: &[u8] = b"__dso_handle";

fn synthetic(name: &[u8]) -> Option<Class<'_>> {
    if name == SYNTHETIC_GOT {
        Some(Class::GotBase)
    } else if name == SYNTHETIC_DSO {
        Some(Class::DsoHandle)
    } else if name == b"_TLS_MODULE_BASE_" {
        Some(Class::TlsModuleBase)
    } else if let Some(s) = name.strip_prefix(b"__start_") {
        Some(Class::SectionBound {
            section: s,
            stop: false,
        })
    } else {
        name.strip_prefix(b"__stop_").map(|s| Class::SectionBound {
            section: s,
            stop: true,
        })
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How code of this link reaches a symbol of an earlier link.
fn foreign_class(s: SessionSymbol) -> Class<'static> {
    match s.kind {
        SymbolKind::ThreadLocal { id_slot, offset } => Class::ForeignTls { id_slot, offset },
        SymbolKind::Function => Class::External {
            addr: s.addr,
            data: false,
        },
        SymbolKind::Data => Class::External {
            addr: s.addr,
            data: true,
        },
    }
}

/// Links `inputs` into one module of the session. COMDAT groups that the session already
/// holds ([`LinkEnv::comdat_kept`]) are dropped; the result names the groups this link kept.
pub fn link(inputs: &[LinkInput], env: &LinkEnv<'_>) -> Result<LinkedModule> {
    let mut times = LinkTimes::default();
    let t0 = Instant::now();

    // Read: parse every object in place; index archives.
    let arena = resolve::AlignedArena::default();
    let mut res = Resolution::new(&arena);
    for input in inputs {
        match input {
            LinkInput::Object(f) => {
                let file = ObjectFile::parse(f.name.to_string(), &f.bytes)?;
                res.add_object(file, env.comdat_kept)?;
            }
            LinkInput::Archive(f) => res.add_archive(&f.name, &f.bytes)?,
        }
    }
    times.read = t0.elapsed();

    // Resolve.
    let t1 = Instant::now();
    let provided = |name: &[u8]| {
        synthetic(name).is_some()
            || env.session.contains_key(name)
            || env.overrides.contains_key(name)
            || env.absolutes.contains_key(name)
    };
    res.load_archive_members(env.comdat_kept, &provided)?;
    res.check_duplicates()?;
    if let Some(entry) = env.required_entry {
        let e = entry.as_bytes();
        if !res.globals.contains_key(e) && !env.session.contains_key(e) {
            return Err(Error::EntryNotDefined(entry.to_string()));
        }
    }
    let mut name_class: HashMap<&[u8], Class<'_>> = HashMap::new();
    let mut to_look_up: Vec<&[u8]> = Vec::new();
    let (mut imports, mut comdat_imports) = (Vec::new(), Vec::new());
    for (name, _) in &res.references {
        if res.globals.contains_key(name) {
            continue;
        }
        let kept_copy = || (env.comdat_symbol)(name);
        let class = if let Some(c) = synthetic(name) {
            c
        } else if let Some(s) = res.comdat_dropped.contains(name).then(kept_copy).flatten() {
            comdat_imports.push(name.to_vec());
            foreign_class(s)
        } else if let Some(s) = env.session.get(*name) {
            imports.push(name.to_vec());
            foreign_class(*s)
        } else if let Some(&addr) = env.overrides.get(*name) {
            Class::External { addr, data: false }
        } else if let Some(&v) = env.absolutes.get(*name) {
            Class::Absolute(v)
        } else {
            to_look_up.push(name);
            continue;
        };
        name_class.insert(name, class);
    }
    let found = if to_look_up.is_empty() {
        Vec::new()
    } else {
        env.executor.lookup(&to_look_up)?
    };
    let mut undefined = Vec::new();
    for (name, f) in to_look_up.iter().zip(found) {
        let class = match f {
            Some(s) => Class::External {
                addr: s.addr,
                data: s.is_data,
            },
            // A dropped COMDAT definition never becomes a weak 0: it has a kept copy.
            None if res.comdat_dropped.contains(name) => {
                undefined.push(*name);
                continue;
            }
            None if env.phony_externals || !res.is_strong_reference(name) => Class::Null,
            None => {
                undefined.push(*name);
                continue;
            }
        };
        name_class.insert(name, class);
    }
    if !undefined.is_empty() {
        let list = undefined
            .iter()
            .map(|name| {
                let referenced_by = res
                    .referrers(name)
                    .map(|r| {
                        r.objects
                            .iter()
                            .map(|&o| res.objects[o].file.name.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                UndefinedSymbol {
                    name: lossy(name),
                    referenced_by,
                }
            })
            .collect();
        return Err(Error::Undefined(list));
    }
    let mut commons: Vec<(Vec<u8>, u64, u64)> = Vec::new();
    for (name, g) in &res.globals {
        let class = match g.def {
            GlobalDef::Section { obj, sym } => section_class(&res.objects[obj], sym)?,
            GlobalDef::Absolute { value, .. } => Class::Absolute(value),
            GlobalDef::Common { size, align, .. } => {
                commons.push((name.to_vec(), size, align));
                Class::Common { name, size }
            }
        };
        name_class.insert(name, class);
    }
    // Deterministic placement of commons.
    commons.sort();
    let mut classes: Vec<Vec<Class<'_>>> = Vec::with_capacity(res.objects.len());
    for o in &res.objects {
        let mut v = Vec::with_capacity(o.file.symbols().len());
        for (i, sym) in o.file.symbols().iter().enumerate() {
            let c = if i == 0 {
                Class::Null
            } else if sym.st_bind() == elf::STB_LOCAL {
                section_class(o, i)?
            } else {
                let name = o.file.symbol_name(sym)?;
                name_class.get(name).copied().unwrap_or(Class::Null)
            };
            v.push(c);
        }
        classes.push(v);
    }
    times.resolve = t1.elapsed();

    // Scan relocations for GOT entries, stubs and TLS entries.
    let t2 = Instant::now();
    let mut entries = Entries::default();
    for (oi, o) in res.objects.iter().enumerate() {
        for (si, shdr) in o.file.sections.iter().enumerate() {
            if !layout::is_loaded(o, si, shdr) {
                continue;
            }
            for rela in o.file.relocations(si)? {
                let r_type = rela.r_type(LE, false);
                let sym = rela.r_sym(LE, false) as usize;
                let ctx = || RelocContext {
                    obj: o,
                    sec: si,
                    offset: rela.r_offset(LE),
                    r_type,
                    sym,
                };
                let Some(kind) = fixup::reloc_kind(r_type) else {
                    return Err(ctx().error("relocation type not supported by remjit"));
                };
                let class = *classes[oi].get(sym).ok_or_else(|| {
                    Error::malformed(&o.file.name, "relocation names a missing symbol")
                })?;
                let key = key_of(o, oi, sym)?;
                let ifunc = matches!(class, Class::Section { ifunc: true, .. });
                let external_fn = matches!(class, Class::External { data: false, .. });
                match kind.formula {
                    Formula::None | Formula::TlsDescCall | Formula::DtpOff | Formula::Size => {}
                    Formula::StaticTls => {
                        return Err(ctx().error(
                            "initial-exec/local-exec thread-local access cannot reach a JIT'd \
                             module's thread-locals: compile with -fPIC (or -ftls-model=global-dynamic)",
                        ))
                    }
                    Formula::GotPcRel | Formula::GotPcRelRelaxable | Formula::GotOffset => {
                        entries.got(key, class);
                    }
                    Formula::Branch | Formula::PltGotRelative if ifunc || external_fn => {
                        entries.stub(key, class)
                    }
                    // As JITLink does: a branch to an absolute address goes through a stub
                    // when the address is out of the call's reach.
                    Formula::Branch if matches!(class, Class::Absolute(_)) => {
                        entries.stub(key, class)
                    }
                    Formula::PcRelative | Formula::Absolute
                        if ifunc || (external_fn && kind.width != Width::B64) =>
                    {
                        entries.stub(key, class)
                    }
                    Formula::TlsGd => entries.pair(Some(key), class),
                    Formula::TlsLd => entries.pair(None, Class::Null),
                    Formula::TlsDesc => entries.desc(key, class),
                    _ => {}
                }
            }
        }
    }
    let synth = Synthesized {
        got_entries: entries.got.len() as u64,
        stubs: entries.stubs.len() as u64,
        tls_pairs: entries.pairs.len() as u64,
        tls_descs: entries.descs.len() as u64,
    };
    let page = env.slab.mapper().page_size();
    // Large sections without relocations are mapped from their files, not copied.
    let file_of = |oi: usize, si: usize| -> Option<(std::sync::Arc<std::fs::File>, u64)> {
        let o = &res.objects[oi];
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
    let lay = layout::layout(&res.objects, synth, &commons, page, &mappable)?;
    let mut file_maps = Vec::new();
    for &(oi, si, seg, off) in &lay.file_maps {
        let (file, foff) = file_of(oi, si).ok_or_else(|| Error::Memory("file vanished".into()))?;
        let size = res.objects[oi].file.section(si)?.sh_size(LE);
        let start = lay.offset(seg, off);
        let page_start = start & !(page - 1);
        file_maps.push(FileMap {
            offset: page_start,
            len: (start + size).div_ceil(page) * page - page_start,
            file,
            file_offset: foff - (start - page_start),
        });
    }
    let alloc = env.slab.allocate(lay.total)?;
    times.layout = t2.elapsed();

    let t3 = Instant::now();
    let base = alloc.base;
    // SAFETY: `working` is the controller's writable view of the whole allocation.
    let mem = unsafe { std::slice::from_raw_parts_mut(alloc.working, alloc.size as usize) };
    let written = write_and_fix(&res, &classes, &entries, &lay, base, mem, env);
    let written = written.and_then(|w| {
        let recorded = env
            .record_map
            .then(|| map::build(&res, &classes, &entries, &lay, base, mem, env.absolutes))
            .transpose()?;
        Ok((w, recorded))
    });
    let ((actions, finalizers, mut exports, functions), recorded) = match written {
        Ok(w) => w,
        Err(e) => {
            env.slab.abandon(alloc);
            return Err(e);
        }
    };
    times.fixup = t3.elapsed();

    let t4 = Instant::now();
    let info = AllocInfo {
        mapping_base: base,
        segments: vec![
            SegmentInfo {
                offset: lay.seg_start[0],
                content_size: lay.seg_content[0],
                zero_fill_size: 0,
                prot: Prot::READ_EXEC,
            },
            SegmentInfo {
                offset: lay.seg_start[1],
                content_size: lay.seg_content[1],
                zero_fill_size: 0,
                prot: Prot::READ,
            },
            SegmentInfo {
                offset: lay.seg_start[2],
                content_size: lay.seg_content[2],
                zero_fill_size: lay.bss_size,
                prot: Prot::READ_WRITE,
            },
        ],
        actions,
        file_maps,
    };
    let fin = env.slab.finalize(alloc, &info)?;
    times.finalize = t4.elapsed();
    // Symbols of kept groups come back whatever their visibility; only exported ones leave.
    let mut comdat_symbols = Vec::new();
    exports.retain(|(name, sym)| match res.globals.get(name.as_slice()) {
        Some(g) => {
            if res.in_kept_comdat(g.def) {
                comdat_symbols.push((name.clone(), *sym));
            }
            g.exported
        }
        None => true,
    });
    Ok(LinkedModule {
        alloc: fin,
        exports,
        functions,
        dso: base + lay.offset(Seg::Rw, lay.dso_off),
        finalizers,
        objects: res.objects.iter().map(|o| o.file.name.clone()).collect(),
        debug_inputs: crate::debug::collect_inputs(&res.objects, &lay, base),
        kept_comdats: res.kept_comdats.iter().map(|s| s.to_vec()).collect(),
        comdat_symbols,
        used_comdats: res.session_comdats.iter().map(|s| s.to_vec()).collect(),
        imports,
        comdat_imports,
        times,
        map: recorded,
    })
}

/// Address of a resolved symbol (None: a thread-local, which has no address).
fn symbol_address(
    lay: &Layout,
    base: u64,
    got_base: u64,
    c: Class<'_>,
) -> std::result::Result<Option<u64>, String> {
    let addr_in = |seg: Seg, off: u64| base + lay.offset(seg, off);
    Ok(Some(match c {
        Class::Section {
            obj, sec, value, ..
        } => match lay.places[obj][sec] {
            // Symbol values come from the file: any value is an address, never an index.
            Place::Mem { seg, off } => addr_in(seg, off).wrapping_add(value),
            Place::TlsData { .. } | Place::TlsBss { .. } => return Ok(None),
            Place::None => return Err("symbol in a section that is not loaded".into()),
        },
        Class::Common { name, .. } => addr_in(
            Seg::Rw,
            *lay.commons.get(name).ok_or("common not laid out")?,
        ),
        Class::Absolute(v) => v,
        Class::GotBase => got_base,
        Class::DsoHandle => addr_in(Seg::Rw, lay.dso_off),
        Class::SectionBound { section, stop } => match lay.named_groups.get(section) {
            Some(&(seg, start, end)) => addr_in(seg, if stop { end } else { start }),
            None => 0,
        },
        Class::External { addr, .. } => addr,
        Class::ForeignTls { .. } | Class::TlsModuleBase => return Ok(None),
        Class::Null => 0,
        Class::Discarded => return Err("symbol in a discarded COMDAT section".into()),
    }))
}

fn section_class<'d>(o: &LinkObject<'d>, index: usize) -> Result<Class<'d>> {
    let sym = &o.file.symbols()[index];
    let shndx = sym.st_shndx(LE);
    if shndx == elf::SHN_UNDEF {
        return Ok(Class::Null);
    }
    if shndx == elf::SHN_ABS {
        return Ok(Class::Absolute(sym.st_value(LE)));
    }
    let Some(sec) = o.file.symbol_section(sym, index)? else {
        return Ok(Class::Null);
    };
    if o.discarded.get(sec).copied().unwrap_or(true) {
        return Ok(Class::Discarded);
    }
    let ifunc = sym.st_type() == elf::STT_GNU_IFUNC;
    if ifunc {
        check_ifunc_section(o, sec, sym)?;
    }
    Ok(Class::Section {
        obj: o.index,
        sec,
        value: sym.st_value(LE),
        size: sym.st_size(LE),
        ifunc,
    })
}

/// An IFUNC symbol names its resolver, a function: it must lie in an executable section (a
/// resolver in data would be "called" at finalize time).
fn check_ifunc_section(o: &LinkObject<'_>, sec: usize, sym: &crate::object::ElfSym) -> Result<()> {
    let shdr = o.file.section(sec)?;
    if shdr.sh_flags(LE) & u64::from(elf::SHF_EXECINSTR) != 0 {
        return Ok(());
    }
    Err(Error::malformed(
        &o.file.name,
        format!(
            "IFUNC symbol `{}` lies in section {}, which is not executable (an IFUNC symbol \
             names its resolver function)",
            lossy(o.file.symbol_name(sym)?),
            o.file.section_label(sec)
        ),
    ))
}

fn key_of<'d>(o: &LinkObject<'d>, oi: usize, sym: usize) -> Result<Key<'d>> {
    let s = &o.file.symbols()[sym];
    if s.st_bind() == elf::STB_LOCAL {
        Ok(Key::Local(oi, sym))
    } else {
        Ok(Key::Name(o.file.symbol_name(s)?))
    }
}

/// Where a relocation is, for error messages.
struct RelocContext<'a, 'd> {
    obj: &'a LinkObject<'d>,
    sec: usize,
    offset: u64,
    r_type: u32,
    sym: usize,
}

impl RelocContext<'_, '_> {
    fn symbol_name(&self) -> String {
        let f = &self.obj.file;
        let Some(s) = f.symbols().get(self.sym) else {
            return format!("symbol #{}", self.sym);
        };
        if s.st_type() == elf::STT_SECTION {
            if let Ok(Some(sec)) = f.symbol_section(s, self.sym) {
                if let Ok(n) = f.section_name(sec) {
                    return lossy(n);
                }
            }
        }
        f.symbol_name(s).map(lossy).unwrap_or_default()
    }

    fn error(&self, problem: impl Into<String>) -> Error {
        Error::Relocation(Box::new(crate::error::RelocationError {
            object: self.obj.file.name.clone(),
            section: self.obj.file.section_label(self.sec),
            offset: self.offset,
            kind: reloc_name(self.r_type),
            symbol: self.symbol_name(),
            problem: problem.into(),
        }))
    }
}

type Written = (
    Vec<AllocActionPair>,
    Vec<u64>,
    Vec<(Vec<u8>, SessionSymbol)>,
    Vec<FunctionSymbol>,
);

/// Writes section contents and linker-made entries into working memory and applies every
/// relocation; returns the finalize actions, finalizers, exports and function symbols.
fn write_and_fix<'d>(
    res: &Resolution<'d>,
    classes: &[Vec<Class<'d>>],
    entries: &Entries<'d>,
    lay: &Layout,
    base: u64,
    mem: &mut [u8],
    env: &LinkEnv<'_>,
) -> Result<Written> {
    let addr_in = |seg: Seg, off: u64| base + lay.offset(seg, off);
    let got_base = map::got_entry_addr(lay, base, 0);
    let tls_template = lay.tls.map(|t| addr_in(Seg::Ro, t.0));
    // The TLS module id is written into the first word of each pair and descriptor argument.
    let dso = lay.offset(Seg::Rw, lay.dso_off);
    let mut id_slots: Vec<u64> = Vec::new();
    if lay.tls.is_some() {
        // The module's own id word, found again for deregistration and by later links.
        id_slots.push(base + dso + 8);
    }
    let mut copy_words: Vec<(u64, u64)> = Vec::new();
    let mut ifuncs: Vec<(u64, u64)> = Vec::new();

    let address = |c: Class<'d>| symbol_address(lay, base, got_base, c);
    let tls_offset = |c: Class<'d>| -> Option<u64> {
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
    };
    let stub_addr = |key: &Key<'d>| -> Option<u64> {
        entries
            .stub_index
            .get(key)
            .map(|&i| map::stub_entry_addr(lay, base, i))
    };

    // Section contents: the one copy, from the input map into working memory (sections mapped
    // from their files need none).
    for (oi, o) in res.objects.iter().enumerate() {
        for (si, shdr) in o.file.sections.iter().enumerate() {
            if lay.file_maps.iter().any(|m| m.0 == oi && m.1 == si) {
                continue;
            }
            let off = match lay.places[oi][si] {
                Place::Mem { seg, off } => lay.offset(seg, off),
                Place::TlsData { off, .. } => lay.offset(Seg::Ro, off),
                _ => continue,
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

    // GOT words. IFUNC slots are filled by their resolver at finalize time; when no code of
    // the inputs may run (`--noexec`), the resolver is not called and the slot holds the
    // resolver's own address.
    for (i, (key, class)) in entries.got.iter().enumerate() {
        let slot = map::got_entry_addr(lay, base, i) - base;
        let value = if let Class::Section { ifunc: true, .. } = class {
            let resolver = address(*class).ok().flatten().unwrap_or(0);
            if !env.run_initializers {
                resolver
            } else {
                ifuncs.push((base + slot, resolver));
                0
            }
        } else {
            match address(*class) {
                Ok(Some(a)) => a,
                Ok(None) => {
                    return Err(Error::Usage(format!(
                        "thread-local `{}` is accessed through the GOT as if it were ordinary data",
                        key_name(res, key)
                    )))
                }
                Err(e) => return Err(Error::Usage(format!("{}: {e}", key_name(res, key)))),
            }
        };
        fixup::write_value(mem, slot as usize, Width::B64, value);
    }
    for (i, key) in entries.stubs.iter().enumerate() {
        let at = map::stub_entry_addr(lay, base, i) - base;
        let slot = got_base + entries.got_index[key] as u64 * 8;
        if !fixup::write_stub(mem, at as usize, base + at, slot) {
            return Err(Error::Memory("stub cannot reach its GOT slot".into()));
        }
    }
    // TLS pairs {module id, offset} and descriptors {resolver, &pair, module id, offset}.
    let tls_entry = |key: &Option<Key<'d>>, class: Class<'d>| -> Result<(Option<u64>, u64)> {
        match (key, class) {
            (None, _) => Ok((None, 0)),
            (_, Class::ForeignTls { id_slot, offset }) => Ok((Some(id_slot), offset)),
            (Some(k), c) => match tls_offset(c) {
                Some(off) => Ok((None, off)),
                None => Err(Error::Usage(format!(
                    "`{}` is used as a thread-local but is not one defined by JIT'd code \
                     (thread-locals of shared libraries are not supported)",
                    key_name(res, k)
                ))),
            },
        }
    };
    for (i, (key, class)) in entries.pairs.iter().enumerate() {
        let at = lay.offset(Seg::Rw, lay.tls_pairs_off) + i as u64 * 16;
        let (foreign, off) = tls_entry(key, *class)?;
        match foreign {
            Some(from) => copy_words.push((from, base + at)),
            None => id_slots.push(base + at),
        }
        fixup::write_value(mem, at as usize, Width::B64, 0);
        fixup::write_value(mem, at as usize + 8, Width::B64, off);
    }
    let resolver = if entries.descs.is_empty() {
        0
    } else {
        env.executor.tlsdesc_resolver()?
    };
    for (i, (key, class)) in entries.descs.iter().enumerate() {
        let at = lay.offset(Seg::Rw, lay.tls_descs_off) + i as u64 * 32;
        let (foreign, off) = tls_entry(&Some(*key), *class)?;
        match foreign {
            Some(from) => copy_words.push((from, base + at + 16)),
            None => id_slots.push(base + at + 16),
        }
        fixup::write_value(mem, at as usize, Width::B64, resolver);
        fixup::write_value(mem, at as usize + 8, Width::B64, base + at + 16);
        fixup::write_value(mem, at as usize + 16, Width::B64, 0);
        fixup::write_value(mem, at as usize + 24, Width::B64, off);
    }
    fixup::write_value(mem, dso as usize, Width::B64, base + dso);
    fixup::write_value(mem, dso as usize + 8, Width::B64, 0);

    // Relocations.
    for (oi, o) in res.objects.iter().enumerate() {
        for (si, shdr) in o.file.sections.iter().enumerate() {
            let sec_off = match lay.places[oi][si] {
                Place::Mem { seg, off } => lay.offset(seg, off),
                Place::TlsData { off, .. } => lay.offset(Seg::Ro, off),
                _ => continue,
            };
            let sec_size = shdr.sh_size(LE);
            let executable = shdr.sh_flags(LE) & u64::from(elf::SHF_EXECINSTR) != 0;
            // The section alone: every write of its relocations is bounded by it, never by the
            // allocation around it.
            let code = usize::try_from(sec_size)
                .ok()
                .and_then(|n| mem.get_mut(sec_off as usize..)?.get_mut(..n))
                .ok_or_else(|| Error::Memory("a section lies outside its allocation".into()))?;
            let is_eh_frame = matches!(lay.places[oi][si], Place::Mem { seg: Seg::Ro, off } if lay.eh_frame.is_some_and(|(s, n)| off >= s && off < s + n))
                && o.file.section_name(si)? == b".eh_frame";
            for rela in o.file.relocations(si)? {
                let r_type = rela.r_type(LE, false);
                let sym = rela.r_sym(LE, false) as usize;
                let r_offset = rela.r_offset(LE);
                let ctx = RelocContext {
                    obj: o,
                    sec: si,
                    offset: r_offset,
                    r_type,
                    sym,
                };
                let Some(kind) = fixup::reloc_kind(r_type) else {
                    return Err(ctx.error("relocation type not supported by remjit"));
                };
                let width = kind.width.bytes() as u64;
                if r_offset.checked_add(width).is_none_or(|end| end > sec_size) {
                    return Err(ctx.error(format!(
                        "its {width}-byte field lies outside the section ({sec_size:#x} bytes): \
                         malformed object"
                    )));
                }
                // Within the section.
                let at = r_offset as usize;
                let place = base + sec_off + r_offset;
                let addend = rela.r_addend(LE);
                let a = addend as u64;
                let class = *classes[oi]
                    .get(sym)
                    .ok_or_else(|| ctx.error("no such symbol"))?;
                let key = key_of(o, oi, sym)?;
                if class == Class::Discarded {
                    if is_eh_frame {
                        // An FDE of a dropped COMDAT copy: make its pc_begin decode to 0 so
                        // the unwinder skips it.
                        let v = if kind.formula == Formula::PcRelative {
                            0u64.wrapping_sub(place)
                        } else {
                            0
                        };
                        if kind.width.fits(v) {
                            fixup::write_value(code, at, kind.width, v);
                        }
                        continue;
                    }
                    return Err(ctx.error(
                        "refers to a section dropped with its COMDAT group (another copy of the \
                         group was kept): the objects were compiled inconsistently",
                    ));
                }
                let sym_addr = |c: Class<'d>| -> Result<u64> {
                    match address(c) {
                        Ok(Some(v)) => Ok(v),
                        Ok(None) => Err(ctx.error(
                            "a thread-local is used as an ordinary address: compile with -fPIC",
                        )),
                        Err(e) => Err(ctx.error(e)),
                    }
                };
                let ifunc = matches!(class, Class::Section { ifunc: true, .. });
                let got_entry = |k: &Key<'d>| entries.got_index.get(k).map(|&i| i as u64 * 8);
                let value: u64 = match kind.formula {
                    Formula::None | Formula::TlsDescCall => continue,
                    Formula::StaticTls => {
                        return Err(ctx.error(
                            "initial-exec/local-exec thread-local access: compile with -fPIC",
                        ))
                    }
                    Formula::Absolute => {
                        let s = if ifunc {
                            stub_addr(&key).unwrap_or(0)
                        } else {
                            sym_addr(class)?
                        };
                        let v = s.wrapping_add(a);
                        if kind.width.fits(v) {
                            v
                        } else if let (Some(stub), Class::External { data: false, .. }) =
                            (stub_addr(&key), class)
                        {
                            stub.wrapping_add(a)
                        } else {
                            v
                        }
                    }
                    Formula::PcRelative | Formula::Branch => {
                        let direct = if ifunc {
                            None
                        } else {
                            Some(sym_addr(class)?.wrapping_add(a).wrapping_sub(place))
                        };
                        match direct {
                            Some(v) if kind.width.fits(v) => v,
                            _ => match stub_addr(&key) {
                                Some(stub) => stub.wrapping_add(a).wrapping_sub(place),
                                None => direct.unwrap_or(0),
                            },
                        }
                    }
                    Formula::GotPcRel => {
                        let g = got_entry(&key).ok_or_else(|| ctx.error("no GOT entry"))?;
                        (got_base + g).wrapping_add(a).wrapping_sub(place)
                    }
                    Formula::GotPcRelRelaxable => {
                        let g = got_entry(&key).ok_or_else(|| ctx.error("no GOT entry"))?;
                        let direct_ok = matches!(
                            class,
                            Class::Section { ifunc: false, .. }
                                | Class::Absolute(_)
                                | Class::Common { .. }
                                | Class::External { .. }
                                | Class::DsoHandle
                                | Class::SectionBound { .. }
                        );
                        // Only code is rewritten; elsewhere the GOT serves.
                        let prefix = usize::from(r_type == elf::R_X86_64_REX_GOTPCRELX);
                        let relax = fixup::relaxation_for(code, at, prefix).filter(|_| executable);
                        if direct_ok {
                            if let (Some(relax), Ok(Some(s))) = (relax, address(class)) {
                                if fixup::apply_relaxation(code, at, relax, place, s, addend) {
                                    continue;
                                }
                            }
                        }
                        (got_base + g).wrapping_add(a).wrapping_sub(place)
                    }
                    Formula::GotOffset => {
                        let g = got_entry(&key).ok_or_else(|| ctx.error("no GOT entry"))?;
                        g.wrapping_add(a)
                    }
                    Formula::GotRelative => sym_addr(class)?.wrapping_add(a).wrapping_sub(got_base),
                    Formula::GotPc => got_base.wrapping_add(a).wrapping_sub(place),
                    Formula::PltGotRelative => {
                        let l = match stub_addr(&key) {
                            Some(s) => s,
                            None => sym_addr(class)?,
                        };
                        l.wrapping_add(a).wrapping_sub(got_base)
                    }
                    Formula::Size => {
                        let z = match class {
                            Class::Section { size, .. } | Class::Common { size, .. } => size,
                            _ => 0,
                        };
                        z.wrapping_add(a)
                    }
                    Formula::TlsGd | Formula::TlsLd => {
                        let k = if kind.formula == Formula::TlsLd {
                            None
                        } else {
                            Some(key)
                        };
                        let i = *entries
                            .pair_index
                            .get(&k)
                            .ok_or_else(|| ctx.error("no TLS entry"))?;
                        let pair = addr_in(Seg::Rw, lay.tls_pairs_off) + i as u64 * 16;
                        pair.wrapping_add(a).wrapping_sub(place)
                    }
                    Formula::TlsDesc => {
                        let i = *entries
                            .desc_index
                            .get(&key)
                            .ok_or_else(|| ctx.error("no TLS descriptor"))?;
                        let d = addr_in(Seg::Rw, lay.tls_descs_off) + i as u64 * 32;
                        d.wrapping_add(a).wrapping_sub(place)
                    }
                    Formula::DtpOff => match (tls_offset(class), class) {
                        (Some(off), _) => off.wrapping_add(a),
                        (None, Class::ForeignTls { offset, .. }) => offset.wrapping_add(a),
                        _ => {
                            return Err(
                                ctx.error("DTPOFF against a symbol that is not thread-local")
                            )
                        }
                    },
                };
                if !kind.width.fits(value) {
                    return Err(ctx.error(range_problem(kind.formula, kind.width, class, value)));
                }
                fixup::write_value(code, at, kind.width, value);
            }
        }
    }

    // Initializers and finalizers, read back from the relocated tables.
    let mut inits: Vec<(u32, usize, u64)> = Vec::new();
    let mut preinits: Vec<u64> = Vec::new();
    let mut finis: Vec<(u32, usize, u64)> = Vec::new();
    let mut seq = 0usize;
    for (oi, o) in res.objects.iter().enumerate() {
        for (si, shdr) in o.file.sections.iter().enumerate() {
            let Place::Mem { seg, off } = lay.places[oi][si] else {
                continue;
            };
            let Some(kind) = layout::init_kind(o.file.section_name(si)?) else {
                continue;
            };
            let start = lay.offset(seg, off) as usize;
            let n = (shdr.sh_size(LE) / 8) as usize;
            let mut words: Vec<u64> = (0..n)
                .map(|k| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&mem[start + 8 * k..start + 8 * k + 8]);
                    u64::from_le_bytes(w)
                })
                .filter(|&w| w != 0 && w != u64::MAX)
                .collect();
            match kind {
                InitKind::Preinit => preinits.extend(words),
                InitKind::Init { prio, reversed } => {
                    if reversed {
                        words.reverse();
                    }
                    for w in words {
                        inits.push((prio, seq, w));
                        seq += 1;
                    }
                }
                InitKind::Fini { prio, forward } => {
                    if forward {
                        words.reverse();
                    }
                    for w in words {
                        finis.push((prio, seq, w));
                        seq += 1;
                    }
                }
            }
        }
    }
    inits.sort();
    finis.sort();
    let mut init_fns = preinits;
    init_fns.extend(inits.iter().map(|i| i.2));
    let fini_fns: Vec<u64> = finis.iter().rev().map(|f| f.2).collect();

    // Finalize actions: unwind tables, TLS, IFUNCs, then constructors.
    let mut actions = Vec::new();
    // Without running code nothing unwinds: `--noexec` leaves the unwinder alone (its parser
    // would be the first to read a hostile `.eh_frame`).
    if let Some((off, _)) = lay.eh_frame.filter(|_| env.run_initializers) {
        let addr = addr_in(Seg::Ro, off);
        actions.push(AllocActionPair {
            finalize: AllocAction::RegisterEhFrame { addr },
            dealloc: Some(AllocAction::DeregisterEhFrame { addr }),
        });
    }
    if let (Some((_, init_size, mem_size, align)), Some(init)) = (lay.tls, tls_template) {
        let first = id_slots.first().copied();
        actions.push(AllocActionPair {
            finalize: AllocAction::RegisterTls {
                init,
                init_size,
                mem_size,
                align,
                id_slots: id_slots.clone(),
            },
            dealloc: first.map(|id_slot| AllocAction::DeregisterTls { id_slot }),
        });
    }
    for (from, to) in copy_words {
        actions.push(AllocActionPair {
            finalize: AllocAction::CopyWord { from, to },
            dealloc: None,
        });
    }
    for (slot, resolver) in ifuncs {
        actions.push(AllocActionPair {
            finalize: AllocAction::ResolveIfunc { slot, resolver },
            dealloc: None,
        });
    }
    if env.run_initializers {
        actions.push(AllocActionPair {
            finalize: AllocAction::RunInitializers { fns: init_fns },
            dealloc: Some(AllocAction::RunFinalizers {
                dso: base + dso,
                fns: fini_fns.clone(),
            }),
        });
    }

    // Exports and function symbols.
    let mut exports = Vec::new();
    for (name, g) in &res.globals {
        if !g.exported && !res.in_kept_comdat(g.def) {
            continue;
        }
        let class = classes_of_global(res, classes, name, g.def);
        let kind = match (class, tls_offset(class)) {
            (_, Some(offset)) => match id_slots.first() {
                Some(&id_slot) => SymbolKind::ThreadLocal { id_slot, offset },
                None => continue,
            },
            (Class::Section { obj, sec, .. }, None) => {
                let exec = res.objects[obj]
                    .file
                    .section(sec)
                    .map(|s| s.sh_flags(LE) & u64::from(elf::SHF_EXECINSTR) != 0)
                    .unwrap_or(false);
                if exec {
                    SymbolKind::Function
                } else {
                    SymbolKind::Data
                }
            }
            _ => SymbolKind::Data,
        };
        let addr = match kind {
            SymbolKind::ThreadLocal { .. } => 0,
            _ => match address(class) {
                Ok(Some(a)) => a,
                _ => continue,
            },
        };
        let size = match class {
            Class::Section { size, .. } | Class::Common { size, .. } => size,
            _ => 0,
        };
        exports.push((name.to_vec(), SessionSymbol { addr, kind, size }));
    }
    let mut functions = Vec::new();
    for (oi, o) in res.objects.iter().enumerate() {
        for (i, sym) in o.file.symbols().iter().enumerate().skip(1) {
            if sym.st_type() != elf::STT_FUNC {
                continue;
            }
            if let Ok(Some(addr)) = address(classes[oi][i]) {
                if let Class::Section { obj, .. } = classes[oi][i] {
                    if obj != oi {
                        continue;
                    }
                }
                functions.push(FunctionSymbol {
                    name: o.file.symbol_name(sym).map(lossy).unwrap_or_default(),
                    addr,
                    size: sym.st_size(LE),
                });
            }
        }
    }
    functions.sort_by_key(|f| f.addr);
    Ok((actions, fini_fns, exports, functions))
}

fn classes_of_global<'d>(
    res: &Resolution<'d>,
    classes: &[Vec<Class<'d>>],
    name: &'d [u8],
    def: GlobalDef,
) -> Class<'d> {
    match def {
        GlobalDef::Section { obj, sym } => classes[obj][sym],
        GlobalDef::Absolute { value, .. } => Class::Absolute(value),
        GlobalDef::Common { obj, .. } => {
            let _ = res;
            let _ = obj;
            match res.globals.get(name).map(|g| g.def) {
                Some(GlobalDef::Common { size, .. }) => Class::Common { name, size },
                _ => Class::Null,
            }
        }
    }
}

fn key_name(res: &Resolution<'_>, key: &Key<'_>) -> String {
    match *key {
        Key::Name(n) => lossy(n),
        Key::Local(o, s) => {
            let f = &res.objects[o].file;
            f.symbols()
                .get(s)
                .and_then(|sym| f.symbol_name(sym).ok())
                .map(lossy)
                .unwrap_or_else(|| format!("local symbol #{s}"))
        }
    }
}

fn range_problem(formula: Formula, width: Width, class: Class<'_>, value: u64) -> String {
    let what = width.describe();
    // What a native link does with such data, and why remjit cannot.
    const COPIED: &str = "a native link would copy it into the executable, but remjit's host \
                          executables hold copies (below 2 GiB) of the exported data of libc \
                          (but for stdio's `_IO_*` internals), libm, libstdc++ and libgcc_s \
                          only";
    match (formula, class) {
        (Formula::Absolute, Class::External { data: true, addr }) => format!(
            "this is data of a shared library, at {addr:#x}: its absolute address does not fit \
             in {what}; {COPIED}: compile with -fPIC so the access goes through the GOT"
        ),
        (Formula::Size, _) => {
            format!("the symbol's size plus the addend, {value:#x}, does not fit in {what}")
        }
        (Formula::Absolute, _) => format!(
            "the absolute address {value:#x} does not fit in {what}: compile with -fPIC or \
             -mcmodel=large"
        ),
        (Formula::PcRelative, Class::External { data: true, addr }) if addr >= 1 << 31 => {
            format!(
                "this is data of a shared library, at {addr:#x}, beyond the reach of a 32-bit \
                 PC-relative reference from JIT'd code; {COPIED}: compile with -fPIC so the \
                 access goes through the GOT"
            )
        }
        (Formula::PcRelative, Class::External { data: true, addr }) => format!(
            "the host's copy of this data at {addr:#x} is out of reach of a 32-bit PC-relative \
             reference ({what}) from the JIT'd code: compile with -fPIC so the access goes \
             through the GOT"
        ),
        _ => {
            format!("value {value:#x} does not fit in {what}: compile with -fPIC or -mcmodel=large")
        }
    }
}
