//! Stage 1, resolved symbols: what every symbol of every object stands for once the inputs are
//! read and resolved ([`Resolved`]), made by [`resolve`].

use foldhash::HashMap;

use object::elf;
use object::read::elf::{SectionHeader, Sym};
use object::LittleEndian as LE;

use super::resolve::{GlobalDef, LinkObject, Resolution};
use super::{LinkEnv, LinkInput, SessionSymbol, SymbolKind};
use crate::error::{Error, Result, UndefinedSymbol};
use crate::object::ObjectFile;

/// A symbol as the linker sees it once resolved: where its address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class<'d> {
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

impl Class<'_> {
    /// Whether this is an IFUNC of this link (its users go through a stub or GOT slot).
    pub(super) fn is_ifunc(self) -> bool {
        matches!(self, Class::Section { ifunc: true, .. })
    }

    /// Whether this is a function outside this link.
    pub(super) fn is_external_function(self) -> bool {
        matches!(self, Class::External { data: false, .. })
    }

    /// The symbol's size (0 when it has none).
    pub(super) fn size(self) -> u64 {
        match self {
            Class::Section { size, .. } | Class::Common { size, .. } => size,
            _ => 0,
        }
    }

    /// Whether a direct reference may replace a GOT load of this symbol: its address is fixed
    /// at link time and is not an IFUNC's.
    pub(super) fn is_direct(self) -> bool {
        matches!(
            self,
            Class::Section { ifunc: false, .. }
                | Class::Absolute(_)
                | Class::Common { .. }
                | Class::External { .. }
                | Class::DsoHandle
                | Class::SectionBound { .. }
        )
    }
}

/// Identity of a relocation target for the GOT, stubs and TLS entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Key<'d> {
    Name(&'d [u8]),
    Local(usize, usize),
}

/// Stage 1: the objects taking part and what each of their symbols stands for.
pub(super) struct Resolved<'d> {
    /// The objects and global definitions.
    pub res: Resolution<'d>,
    /// Per object, per symbol index.
    pub classes: Vec<Vec<Class<'d>>>,
    /// Common symbols (name, size, alignment), sorted by name.
    pub commons: Vec<(Vec<u8>, u64, u64)>,
    /// Names bound to symbols of earlier links.
    pub imports: Vec<Vec<u8>>,
    /// Names bound to the kept copy of a dropped COMDAT definition.
    pub comdat_imports: Vec<Vec<u8>>,
}

pub(super) const SYNTHETIC_GOT: &[u8] = b"_GLOBAL_OFFSET_TABLE_";
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

pub(super) fn lossy(b: &[u8]) -> String {
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

/// Reads the inputs: every object parsed in place, archives indexed.
pub(super) fn read<'d>(
    inputs: &'d [LinkInput],
    env: &LinkEnv<'_>,
    arena: &'d super::resolve::AlignedArena,
) -> Result<Resolution<'d>> {
    let mut res = Resolution::new(arena);
    for input in inputs {
        match input {
            LinkInput::Object(f) => {
                let file = ObjectFile::parse(f.name.to_string(), &f.bytes)?;
                res.add_object(file, env.comdat_kept)?;
            }
            LinkInput::Archive(f) => res.add_archive(&f.name, &f.bytes)?,
        }
    }
    Ok(res)
}

/// Stage 1: loads archive members, checks duplicates and the entry, binds every reference
/// (the session, the runtime, `-abs` symbols, then one lookup in the executing process) and
/// classifies every symbol of every object.
pub(super) fn resolve<'d>(mut res: Resolution<'d>, env: &LinkEnv<'_>) -> Result<Resolved<'d>> {
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
    let mut bound = bind_references(&res, env)?;
    let commons = classify_globals(&res, &mut bound.name_class)?;
    let classes = classify_symbols(&res, &bound.name_class)?;
    Ok(Resolved {
        classes,
        commons,
        imports: bound.imports,
        comdat_imports: bound.comdat_imports,
        res,
    })
}

/// References to names the link does not define, bound.
struct Bound<'d> {
    name_class: HashMap<&'d [u8], Class<'d>>,
    imports: Vec<Vec<u8>>,
    comdat_imports: Vec<Vec<u8>>,
}

/// Binds each name the link references but does not define: synthetic symbols, kept COMDAT
/// copies, the session, the runtime's overrides, `-abs` symbols, then the executing process
/// (one batch); strong references nothing defines are an error naming their referrers.
fn bind_references<'d>(res: &Resolution<'d>, env: &LinkEnv<'_>) -> Result<Bound<'d>> {
    let mut name_class: HashMap<&'d [u8], Class<'d>> = HashMap::default();
    let mut to_look_up: Vec<&'d [u8]> = Vec::new();
    let (mut imports, mut comdat_imports) = (Vec::new(), Vec::new());
    for &(name, _) in &res.references {
        if res.globals.contains_key(name) {
            continue;
        }
        let kept_copy = || (env.comdat_symbol)(name);
        let class = if let Some(c) = synthetic(name) {
            c
        } else if let Some(s) = res.comdat_dropped.contains(name).then(kept_copy).flatten() {
            comdat_imports.push(name.to_vec());
            foreign_class(s)
        } else if let Some(s) = env.session.get(name) {
            imports.push(name.to_vec());
            foreign_class(*s)
        } else if let Some(&addr) = env.overrides.get(name) {
            Class::External { addr, data: false }
        } else if let Some(&v) = env.absolutes.get(name) {
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
        return Err(undefined_error(res, &undefined));
    }
    Ok(Bound {
        name_class,
        imports,
        comdat_imports,
    })
}

fn undefined_error(res: &Resolution<'_>, undefined: &[&[u8]]) -> Error {
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
    Error::Undefined(list)
}

/// Classifies the link's global definitions into `name_class`; returns the common symbols
/// (name, size, alignment), sorted for a deterministic placement.
fn classify_globals<'d>(
    res: &Resolution<'d>,
    name_class: &mut HashMap<&'d [u8], Class<'d>>,
) -> Result<Vec<(Vec<u8>, u64, u64)>> {
    let mut commons: Vec<(Vec<u8>, u64, u64)> = Vec::new();
    for (&name, g) in &res.globals {
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
    commons.sort();
    Ok(commons)
}

/// The class of every symbol of every object: locals from their sections, globals by name.
fn classify_symbols<'d>(
    res: &Resolution<'d>,
    name_class: &HashMap<&'d [u8], Class<'d>>,
) -> Result<Vec<Vec<Class<'d>>>> {
    let mut classes: Vec<Vec<Class<'d>>> = Vec::with_capacity(res.objects.len());
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
    Ok(classes)
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

pub(super) fn key_of<'d>(o: &LinkObject<'d>, oi: usize, sym: usize) -> Result<Key<'d>> {
    let s = &o.file.symbols()[sym];
    if s.st_bind() == elf::STB_LOCAL {
        Ok(Key::Local(oi, sym))
    } else {
        Ok(Key::Name(o.file.symbol_name(s)?))
    }
}

/// A key's symbol name, for errors.
pub(super) fn key_name(res: &Resolution<'_>, key: &Key<'_>) -> String {
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

impl<'d> Resolved<'d> {
    /// The class of a global definition of this link.
    pub(super) fn global_class(&self, name: &'d [u8], def: GlobalDef) -> Class<'d> {
        match def {
            GlobalDef::Section { obj, sym } => self.classes[obj][sym],
            GlobalDef::Absolute { value, .. } => Class::Absolute(value),
            GlobalDef::Common { size, .. } => Class::Common { name, size },
        }
    }
}
