//! The resolve stage: which objects take part (archive members are pulled in on demand, to a
//! fixed point), which COMDAT copies are kept, and where every global symbol is defined.

use foldhash::{HashMap, HashSet};

use object::elf;
use object::read::elf::Sym;
use object::LittleEndian as LE;

use crate::error::{DuplicateSymbol, Error, Result};
use crate::object::{ElfSym, ObjectFile};

/// An object taking part in a link, with what the resolve stage decided about it.
pub struct LinkObject<'d> {
    /// The parsed object.
    pub file: ObjectFile<'d>,
    /// Its index in the link.
    pub index: usize,
    /// For each section: dropped because another copy of its COMDAT group is kept.
    pub discarded: Vec<bool>,
    /// For each section: a member of a COMDAT group (kept or dropped).
    pub in_comdat: Vec<bool>,
}

/// Where a global symbol of this link is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalDef {
    /// In a section of an object: (object, symbol index).
    Section {
        /// Object index in the link.
        obj: usize,
        /// Symbol index in that object.
        sym: usize,
    },
    /// An absolute value (`SHN_ABS`).
    Absolute {
        /// Object index in the link.
        obj: usize,
        /// The value.
        value: u64,
    },
    /// A common symbol, allocated in `.bss` by the link.
    Common {
        /// Object index of the first definition.
        obj: usize,
        /// Largest size seen.
        size: u64,
        /// Strictest alignment seen.
        align: u64,
    },
}

impl GlobalDef {
    /// The defining object.
    pub fn obj(&self) -> usize {
        match *self {
            GlobalDef::Section { obj, .. }
            | GlobalDef::Absolute { obj, .. }
            | GlobalDef::Common { obj, .. } => obj,
        }
    }
}

/// A global definition with its binding.
#[derive(Debug, Clone, Copy)]
pub struct Global {
    /// Where it is.
    pub def: GlobalDef,
    /// Weak definitions yield to strong ones.
    pub weak: bool,
    /// Visible outside the link (default or protected visibility).
    pub exported: bool,
}

/// Who references a symbol that no object of the link defines (yet).
#[derive(Debug, Default)]
pub struct Reference {
    /// Referencing objects, in first-reference order.
    pub objects: Vec<usize>,
    /// Whether any reference is strong (weak references never fail or pull archive members).
    pub strong: bool,
}

/// An archive's index: which member defines which symbol.
struct ArchiveIndex<'d> {
    name: String,
    data: &'d [u8],
    /// The archive, parsed once: members are found by offset without a new parse.
    archive: object::read::archive::ArchiveFile<'d>,
    /// Symbol -> the member defining it.
    defines: HashMap<&'d [u8], MemberLoc<'d>>,
    /// Members already loaded, by location.
    loaded: HashSet<MemberLoc<'d>>,
}

/// Where an archive member is: by header offset (from the symbol index) or already read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MemberLoc<'d> {
    Offset(u64),
    Read { name: &'d [u8], data: &'d [u8] },
}

/// Holds copies of bytes that a link reads in place but that come from elsewhere (the members
/// of thin archives). Members of ordinary archives need none: ELF structures are read at any
/// alignment (object's `unaligned` feature), so they are parsed where they lie in the archive.
#[derive(Default)]
pub struct AlignedArena {
    chunks: std::cell::RefCell<Vec<Box<[u64]>>>,
}

impl AlignedArena {
    /// An aligned copy of `data` (e.g. read from a file) that lives as long as the arena.
    pub fn keep<'a>(&'a self, data: &[u8]) -> &'a [u8] {
        let mut words = vec![0u64; data.len().div_ceil(8)].into_boxed_slice();
        let ptr = words.as_mut_ptr() as *mut u8;
        // SAFETY: `words` holds at least `data.len()` bytes; the box's heap block never moves
        // and is dropped only with the arena, after every borrow of it has ended.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, data.len());
            self.chunks.borrow_mut().push(words);
            std::slice::from_raw_parts(ptr, data.len())
        }
    }
}

/// The contents of a member of a thin archive: the file it names, relative to the archive's
/// directory.
fn thin_member(archive: &str, member: &[u8]) -> Result<Vec<u8>> {
    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(member);
    let dir = std::path::Path::new(archive)
        .parent()
        .unwrap_or(std::path::Path::new(""));
    let path = dir.join(name);
    let bad = |what: String| {
        Error::malformed(
            archive,
            format!("thin archive member {}: {what}", path.display()),
        )
    };
    // Only a regular file: a device such as /dev/zero would never end.
    let file = std::fs::File::open(&path).map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, meta.len()), &mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    Ok(bytes)
}

/// The resolve stage's result and working state.
pub struct Resolution<'d> {
    /// Objects in link order (explicit inputs first, then archive members as pulled in).
    pub objects: Vec<LinkObject<'d>>,
    /// Global definitions by name.
    pub globals: HashMap<&'d [u8], Global>,
    /// References to names this link does not define, in first-reference order.
    pub references: Vec<(&'d [u8], Reference)>,
    reference_index: HashMap<&'d [u8], usize>,
    archives: Vec<ArchiveIndex<'d>>,
    duplicates: Vec<DuplicateSymbol>,
    arena: &'d AlignedArena,
    /// COMDAT groups this link keeps (none of them is in the session yet).
    pub kept_comdats: Vec<&'d [u8]>,
    kept_index: HashSet<&'d [u8]>,
    /// COMDAT groups dropped because an earlier link of the session kept them.
    pub session_comdats: Vec<&'d [u8]>,
    /// Names whose definition was dropped with a COMDAT group: they resolve to the kept copy.
    pub comdat_dropped: HashSet<&'d [u8]>,
}

fn is_global_binding(bind: u8) -> bool {
    bind == elf::STB_GLOBAL || bind == elf::STB_WEAK || bind == elf::STB_GNU_UNIQUE
}

/// A common symbol's definition, its size and alignment checked (both come from the file).
fn common_def(file: &ObjectFile<'_>, obj: usize, sym: &ElfSym, name: &[u8]) -> Result<GlobalDef> {
    let bad = |why: String| {
        Error::malformed(
            &file.name,
            format!("common symbol `{}`: {why}", String::from_utf8_lossy(name)),
        )
    };
    let align = crate::link::layout::check_align(sym.st_value(LE)).map_err(bad)?;
    let size = sym.st_size(LE);
    if size > crate::link::layout::MAX_LINK_SIZE {
        return Err(bad(format!(
            "size {size:#x} exceeds remjit's limit of 64 GiB for one link"
        )));
    }
    Ok(GlobalDef::Common { obj, size, align })
}

impl<'d> Resolution<'d> {
    /// An empty resolution; members of thin archives are read into `arena`.
    pub fn new(arena: &'d AlignedArena) -> Self {
        Resolution {
            arena,
            objects: Vec::new(),
            globals: HashMap::default(),
            references: Vec::new(),
            reference_index: HashMap::default(),
            archives: Vec::new(),
            duplicates: Vec::new(),
            kept_comdats: Vec::new(),
            kept_index: HashSet::default(),
            session_comdats: Vec::new(),
            comdat_dropped: HashSet::default(),
        }
    }

    /// Which COMDAT groups of `file` this link keeps: a group is dropped when this link or
    /// an earlier one of the session (`in_session`) already keeps a copy. Returns the
    /// sections dropped and the sections in any group.
    fn comdat_sections(
        &mut self,
        file: &ObjectFile<'d>,
        in_session: &dyn Fn(&[u8]) -> bool,
    ) -> (Vec<bool>, Vec<bool>) {
        let mut discarded = vec![false; file.sections.len()];
        let mut in_comdat = vec![false; file.sections.len()];
        for group in &file.comdat_groups {
            let sig = group.signature;
            let drop = if self.kept_index.contains(sig) {
                true
            } else if in_session(sig) {
                if !self.session_comdats.contains(&sig) {
                    self.session_comdats.push(sig);
                }
                true
            } else {
                self.kept_index.insert(sig);
                self.kept_comdats.push(sig);
                false
            };
            for &m in &group.members {
                discarded[m] |= drop;
                in_comdat[m] = true;
            }
        }
        (discarded, in_comdat)
    }

    /// Adds an object; `in_session` tells which COMDAT groups earlier links of the session
    /// kept.
    pub fn add_object(
        &mut self,
        file: ObjectFile<'d>,
        in_session: &dyn Fn(&[u8]) -> bool,
    ) -> Result<()> {
        let obj = self.objects.len();
        let (discarded, in_comdat) = self.comdat_sections(&file, in_session);
        for (index, sym) in file.symbols().iter().enumerate().skip(1) {
            let bind = sym.st_bind();
            if !is_global_binding(bind) {
                continue;
            }
            let name = file.symbol_name(sym)?;
            if name.is_empty() {
                continue;
            }
            let weak = bind == elf::STB_WEAK;
            let shndx = sym.st_shndx(LE);
            let vis = sym.st_visibility();
            let exported = vis == elf::STV_DEFAULT || vis == elf::STV_PROTECTED;
            let def = if shndx == elf::SHN_UNDEF {
                None
            } else if shndx == elf::SHN_COMMON {
                Some(common_def(&file, obj, sym, name)?)
            } else if shndx == elf::SHN_ABS {
                Some(GlobalDef::Absolute {
                    obj,
                    value: sym.st_value(LE),
                })
            } else {
                match file.symbol_section(sym, index)? {
                    Some(s) if s < discarded.len() && !discarded[s] => {
                        Some(GlobalDef::Section { obj, sym: index })
                    }
                    Some(s) if s < discarded.len() => {
                        self.comdat_dropped.insert(name);
                        None
                    }
                    _ => {
                        return Err(Error::malformed(
                            &file.name,
                            format!("symbol {index} is defined in a missing section"),
                        ))
                    }
                }
            };
            match def {
                None => self.reference(name, obj, weak),
                Some(def) => self.define(name, def, weak, exported, &file.name),
            }
        }
        self.objects.push(LinkObject {
            file,
            index: obj,
            discarded,
            in_comdat,
        });
        Ok(())
    }

    fn reference(&mut self, name: &'d [u8], obj: usize, weak: bool) {
        let i = *self.reference_index.entry(name).or_insert_with(|| {
            self.references.push((name, Reference::default()));
            self.references.len() - 1
        });
        let r = &mut self.references[i].1;
        if r.objects.last() != Some(&obj) {
            r.objects.push(obj);
        }
        r.strong |= !weak;
    }

    fn define(&mut self, name: &'d [u8], def: GlobalDef, weak: bool, exported: bool, file: &str) {
        let new = Global {
            def,
            weak,
            exported,
        };
        let Some(old) = self.globals.get_mut(name) else {
            self.globals.insert(name, new);
            return;
        };
        match (&mut old.def, def) {
            // Commons merge: largest size, strictest alignment.
            (
                GlobalDef::Common { size, align, .. },
                GlobalDef::Common {
                    size: s2,
                    align: a2,
                    ..
                },
            ) => {
                *size = (*size).max(s2);
                *align = (*align).max(a2);
            }
            // A real definition beats a common one, a common one beats a weak one.
            (GlobalDef::Common { .. }, _) if !weak => *old = new,
            (_, GlobalDef::Common { .. }) if old.weak => *old = new,
            (GlobalDef::Common { .. }, _) | (_, GlobalDef::Common { .. }) => {}
            _ if weak => {}
            _ if old.weak => *old = new,
            _ => {
                let first = self.objects.get(old.def.obj()).map(|o| o.file.name.clone());
                self.duplicates.push(DuplicateSymbol {
                    name: String::from_utf8_lossy(name).into_owned(),
                    first: first.unwrap_or_else(|| file.to_string()),
                    second: file.to_string(),
                });
            }
        }
    }

    /// Registers an archive whose members are loaded on demand.
    pub fn add_archive(&mut self, name: &str, data: &'d [u8]) -> Result<()> {
        let archive = object::read::archive::ArchiveFile::parse(data)
            .map_err(|e| Error::malformed(name, format!("bad archive: {e}")))?;
        let mut defines = HashMap::default();
        match archive
            .symbols()
            .map_err(|e| Error::malformed(name, format!("bad archive symbol index: {e}")))?
        {
            Some(symbols) => {
                for s in symbols {
                    let s = s.map_err(|e| {
                        Error::malformed(name, format!("bad archive symbol index: {e}"))
                    })?;
                    // The first member defining a name wins, as with the system linker.
                    defines
                        .entry(s.name())
                        .or_insert(MemberLoc::Offset(s.offset().0));
                }
            }
            None => {
                // No index: read each member's symbol table.
                for member in archive.members() {
                    let member =
                        member.map_err(|e| Error::malformed(name, format!("bad archive: {e}")))?;
                    let Ok(mdata) = self.member_bytes(name, data, &member) else {
                        continue;
                    };
                    let Ok(obj) = ObjectFile::parse(String::new(), mdata) else {
                        continue;
                    };
                    for sym in obj.symbols().iter().skip(1) {
                        let sh = sym.st_shndx(LE);
                        if is_global_binding(sym.st_bind()) && sh != elf::SHN_UNDEF {
                            if let Ok(n) = obj.symbol_name(sym) {
                                defines.entry(n).or_insert(MemberLoc::Read {
                                    name: member.name(),
                                    data: mdata,
                                });
                            }
                        }
                    }
                }
            }
        }
        self.archives.push(ArchiveIndex {
            name: name.to_string(),
            data,
            archive,
            defines,
            loaded: HashSet::default(),
        });
        Ok(())
    }

    /// A member's bytes: in the archive (in place, at whatever alignment the archive gives
    /// it), or for a thin archive in the file it names.
    fn member_bytes(
        &self,
        archive: &str,
        data: &'d [u8],
        member: &object::read::archive::ArchiveMember<'d>,
    ) -> Result<&'d [u8]> {
        if member.is_thin() {
            return Ok(self.arena.keep(&thin_member(archive, member.name())?));
        }
        let bytes = member
            .data(data)
            .map_err(|e| Error::malformed(archive, format!("bad archive member: {e}")))?;
        Ok(bytes)
    }

    /// Loads archive members for strongly referenced names until nothing changes. `provided`
    /// tells which names something outside the link's objects already defines.
    pub fn load_archive_members(
        &mut self,
        in_session: &dyn Fn(&[u8]) -> bool,
        provided: &dyn Fn(&[u8]) -> bool,
    ) -> Result<()> {
        if self.archives.is_empty() {
            return Ok(());
        }
        let mut next = 0;
        // References only grow; each pass looks at the ones added since the last.
        while next < self.references.len() {
            let (name, strong) = {
                let (n, r) = &self.references[next];
                (*n, r.strong)
            };
            next += 1;
            if !strong || self.globals.contains_key(name) || provided(name) {
                continue;
            }
            let found = self
                .archives
                .iter()
                .enumerate()
                .find_map(|(ai, a)| a.defines.get(name).map(|&loc| (ai, loc)));
            let Some((ai, loc)) = found else { continue };
            if !self.archives[ai].loaded.insert(loc) {
                continue;
            }
            let a = &self.archives[ai];
            let (aname, adata, archive) = (a.name.clone(), a.data, a.archive);
            let (mname, mdata) = match loc {
                MemberLoc::Read { name, data } => (name, data),
                MemberLoc::Offset(off) => {
                    let bad = |e| Error::malformed(&aname, format!("bad archive member: {e}"));
                    let member = archive
                        .member(object::read::archive::ArchiveOffset(off))
                        .map_err(bad)?;
                    (member.name(), self.member_bytes(&aname, adata, &member)?)
                }
            };
            let mname = format!("{aname}({})", String::from_utf8_lossy(mname));
            if crate::input::is_slim_lto(mdata) {
                return Err(Error::Lto(mname));
            }
            let file = ObjectFile::parse(mname, mdata)?;
            self.add_object(file, in_session)?;
            // A reference that this member satisfied but that came earlier in the list needs
            // no revisit: definitions are looked up when the list is consumed.
        }
        Ok(())
    }

    /// Fails with every duplicate definition found.
    pub fn check_duplicates(&mut self) -> Result<()> {
        if self.duplicates.is_empty() {
            Ok(())
        } else {
            Err(Error::Duplicate(std::mem::take(&mut self.duplicates)))
        }
    }

    /// Who references `name`, if it is referenced and not defined by the link.
    pub fn referrers(&self, name: &[u8]) -> Option<&Reference> {
        self.reference_index
            .get(name)
            .map(|&i| &self.references[i].1)
    }

    /// Whether a definition lies in a COMDAT group this link keeps.
    pub fn in_kept_comdat(&self, def: GlobalDef) -> bool {
        let GlobalDef::Section { obj, sym } = def else {
            return false;
        };
        let Some(o) = self.objects.get(obj) else {
            return false;
        };
        let Some(s) = o.file.symbols().get(sym) else {
            return false;
        };
        match o.file.symbol_section(s, sym) {
            Ok(Some(sec)) => o.in_comdat.get(sec) == Some(&true),
            _ => false,
        }
    }

    /// Whether the name is referenced strongly somewhere.
    pub fn is_strong_reference(&self, name: &[u8]) -> bool {
        self.reference_index
            .get(name)
            .map(|&i| self.references[i].1.strong)
            .unwrap_or(false)
    }
}
