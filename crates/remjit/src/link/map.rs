//! The link map: where a link put each input's symbols, sections, GOT entries and stubs, with a
//! copy of the written image before finalize — what `-check` rules read. It is derived from the
//! plan placed at its address ([`Placed`]) and the written image, never recorded on the side.

use foldhash::HashMap;

use object::elf;

use super::plan::Placed;
use super::symbols::{key_of, lossy, Resolved, SYNTHETIC_GOT};
use crate::check::CheckEnv;
use crate::error::Result;

/// Where one input object went.
#[derive(Debug, Clone, Default)]
pub struct ObjectMap {
    /// The object's name (`path` or `archive(member)`).
    pub name: String,
    /// Loaded sections: name -> address.
    pub sections: HashMap<String, u64>,
    /// The object's symbols (locals too) -> address.
    pub symbols: HashMap<String, u64>,
    /// Symbols with a GOT entry -> the entry's address.
    pub got: HashMap<String, u64>,
    /// Symbols with a stub -> the stub's address.
    pub stubs: HashMap<String, u64>,
}

impl ObjectMap {
    /// Whether `file` names this object: its path, its base name, or an archive member's name.
    pub fn is_named(&self, file: &str) -> bool {
        let base = self.name.rsplit('/').next().unwrap_or(&self.name);
        let member = base
            .split_once('(')
            .and_then(|(_, m)| m.strip_suffix(')'))
            .unwrap_or("");
        self.name == file || base == file || member == file
    }
}

/// Where a link put everything, and the image it wrote.
#[derive(Debug, Clone, Default)]
pub struct LinkMap {
    /// Executor address of the image's first byte.
    pub base: u64,
    /// The written image (the controller's working memory before finalize).
    pub image: Vec<u8>,
    /// Every symbol of the link (the first definition of a name wins), the absolute symbols
    /// and `_GLOBAL_OFFSET_TABLE_`.
    pub symbols: HashMap<String, u64>,
    /// Per input object.
    pub objects: Vec<ObjectMap>,
}

impl LinkMap {
    /// Looks up `key` in the table `pick` of input `file`; `what` names the table in errors.
    fn find(
        &self,
        file: &str,
        key: &str,
        what: &str,
        pick: impl Fn(&ObjectMap) -> &HashMap<String, u64>,
    ) -> std::result::Result<u64, String> {
        let o = self
            .objects
            .iter()
            .find(|o| o.is_named(file))
            .ok_or_else(|| format!("no input file `{file}` in this link"))?;
        pick(o)
            .get(key)
            .copied()
            .ok_or_else(|| format!("`{file}` has no {what} `{key}`"))
    }
}

impl CheckEnv for LinkMap {
    fn symbol(&self, name: &str) -> std::result::Result<u64, String> {
        self.symbols
            .get(name)
            .copied()
            .ok_or_else(|| format!("no symbol `{name}` in this link"))
    }

    fn got_addr(&self, file: &str, sym: &str) -> std::result::Result<u64, String> {
        self.find(file, sym, "GOT entry for", |o| &o.got)
    }

    fn stub_addr(&self, file: &str, sym: &str) -> std::result::Result<u64, String> {
        self.find(file, sym, "stub for", |o| &o.stubs)
    }

    fn section_addr(&self, file: &str, section: &str) -> std::result::Result<u64, String> {
        self.find(file, section, "loaded section", |o| &o.sections)
    }

    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let end = off.saturating_add(len).min(self.image.len());
        (off < self.image.len()).then(|| self.image[off..end].to_vec())
    }
}

/// The map of a written link, from the same plan, layout and symbol addresses the write stage
/// used; `mem` is the written image.
pub(super) fn build(
    r: &Resolved<'_>,
    p: Placed<'_, '_>,
    mem: &[u8],
    absolutes: &HashMap<Vec<u8>, u64>,
) -> Result<LinkMap> {
    let (res, lay, base) = (&r.res, p.layout(), p.base);
    let entries = &p.plan.entries;
    let mut image = mem.to_vec();
    // Sections mapped from their files are not in working memory: copy them in.
    for &(oi, si, seg, off) in &lay.file_maps {
        let f = &res.objects[oi].file;
        let data = f.section_data(f.section(si)?)?;
        let at = lay.offset(seg, off) as usize;
        if let Some(dst) = image.get_mut(at..at + data.len()) {
            dst.copy_from_slice(data);
        }
    }
    let got_base = p.got_base();
    let mut symbols: HashMap<String, u64> = HashMap::default();
    let mut objects = Vec::with_capacity(res.objects.len());
    for (oi, o) in res.objects.iter().enumerate() {
        let mut m = ObjectMap {
            name: o.file.name.clone(),
            ..ObjectMap::default()
        };
        for si in 0..o.file.sections.len() {
            let Some(off) = p.section_offset(oi, si) else {
                continue;
            };
            m.sections
                .insert(lossy(o.file.section_name(si)?), base + off);
        }
        for (i, sym) in o.file.symbols().iter().enumerate().skip(1) {
            if sym.st_type() == elf::STT_SECTION || sym.st_type() == elf::STT_FILE {
                continue;
            }
            let name = lossy(o.file.symbol_name(sym)?);
            if name.is_empty() {
                continue;
            }
            let key = key_of(o, oi, i)?;
            if let Some(&g) = entries.got_index.get(&key) {
                m.got.insert(name.clone(), p.got_word(g));
            }
            if let Some(&s) = entries.stub_index.get(&key) {
                m.stubs.insert(name.clone(), p.stub_at(s));
            }
            if let Ok(Some(a)) = p.symbol_address(r.classes[oi][i]) {
                m.symbols.insert(name.clone(), a);
                if sym.st_bind() == elf::STB_LOCAL {
                    symbols.entry(name).or_insert(a);
                } else {
                    symbols.insert(name, a);
                }
            }
        }
        objects.push(m);
    }
    for (name, &a) in absolutes {
        symbols.entry(lossy(name)).or_insert(a);
    }
    symbols.insert(lossy(SYNTHETIC_GOT), got_base);
    Ok(LinkMap {
        base,
        image,
        symbols,
        objects,
    })
}
