//! The layout stage: where every kept section, the GOT, the stubs and the TLS image go in one
//! allocation of three page-aligned segments (code, read-only data, read-write data + zero fill).

use foldhash::HashMap;

use object::elf;
use object::read::elf::SectionHeader;
use object::LittleEndian as LE;

use crate::error::{Error, Result};
use crate::link::arch::Arch;
use crate::link::resolve::LinkObject;

/// The three segments of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Seg {
    /// Code: read + execute.
    Text = 0,
    /// Read-only data (also `.eh_frame` and the TLS template).
    Ro = 1,
    /// Read-write data, then zero fill.
    Rw = 2,
}

/// Where one input section goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Not loaded.
    None,
    /// At an offset in a segment.
    Mem {
        /// The segment.
        seg: Seg,
        /// Offset from the segment's start.
        off: u64,
    },
    /// A `.tdata` section: template at `off` in the read-only segment, `tls_off` in the block.
    TlsData {
        /// Offset of the template copy in the read-only segment.
        off: u64,
        /// Offset in the TLS block.
        tls_off: u64,
    },
    /// A `.tbss` section: only an offset in the TLS block.
    TlsBss {
        /// Offset in the TLS block.
        tls_off: u64,
    },
}

/// What kind of initializer/finalizer table a section is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitKind {
    /// `.preinit_array`.
    Preinit,
    /// `.init_array[.N]` or `.ctors[.N]`.
    Init {
        /// Priority (lower runs first; 65536 when none).
        prio: u32,
        /// Entries run last to first (`.ctors`).
        reversed: bool,
    },
    /// `.fini_array[.N]` or `.dtors[.N]`.
    Fini {
        /// Priority.
        prio: u32,
        /// Entries run first to last (`.dtors`).
        forward: bool,
    },
}

/// Classifies init/fini sections by name.
pub fn init_kind(name: &[u8]) -> Option<InitKind> {
    let prio = |rest: &[u8]| -> Option<u32> {
        if rest.is_empty() {
            return Some(65536);
        }
        std::str::from_utf8(rest.strip_prefix(b".")?)
            .ok()?
            .parse()
            .ok()
    };
    if name == b".preinit_array" {
        Some(InitKind::Preinit)
    } else if let Some(r) = name.strip_prefix(b".init_array") {
        Some(InitKind::Init {
            prio: prio(r)?,
            reversed: false,
        })
    } else if let Some(r) = name.strip_prefix(b".ctors") {
        let p = prio(r)?;
        Some(InitKind::Init {
            prio: if p == 65536 { p } else { 65535 - p.min(65535) },
            reversed: true,
        })
    } else if let Some(r) = name.strip_prefix(b".fini_array") {
        Some(InitKind::Fini {
            prio: prio(r)?,
            forward: false,
        })
    } else if let Some(r) = name.strip_prefix(b".dtors") {
        let p = prio(r)?;
        Some(InitKind::Fini {
            prio: if p == 65536 { p } else { 65535 - p.min(65535) },
            forward: true,
        })
    } else {
        None
    }
}

/// Counts of linker-made entries, decided by scanning relocations.
#[derive(Debug, Default, Clone, Copy)]
pub struct Synthesized {
    /// GOT words.
    pub got_entries: u64,
    /// Stubs (each also has a GOT word, counted in `got_entries`).
    pub stubs: u64,
    /// General-dynamic TLS pairs `{module, offset}`.
    pub tls_pairs: u64,
    /// TLS descriptors `{resolver, arg, module, offset}`.
    pub tls_descs: u64,
}

/// A TLS image: template offset in the read-only segment, template size, block size, align.
pub type TlsImage = (u64, u64, u64, u64);

/// The result of layout: segment sizes and offsets and every section's place.
#[derive(Debug)]
pub struct Layout {
    /// Per object, per section.
    pub places: Vec<Vec<Place>>,
    /// Segment start offsets from the allocation base.
    pub seg_start: [u64; 3],
    /// Bytes of content per segment.
    pub seg_content: [u64; 3],
    /// The strictest alignment inside each segment: a segment may start at any address so
    /// aligned (a small link's segments share pages with others', see `memory::pack`).
    pub seg_align: [u64; 3],
    /// Zero fill after the read-write content.
    pub bss_size: u64,
    /// Total size in bytes (page multiple).
    pub total: u64,
    /// Offset of the first stub in the text segment.
    pub stubs_off: u64,
    /// Size of one stub.
    pub stub_size: u64,
    /// Offset of the GOT in the read-write segment (also `_GLOBAL_OFFSET_TABLE_`).
    pub got_off: u64,
    /// Offset of the TLS pairs (after the GOT words).
    pub tls_pairs_off: u64,
    /// Offset of the TLS descriptors.
    pub tls_descs_off: u64,
    /// Size of one TLS descriptor.
    pub tls_desc_size: u64,
    /// Offset of this link's `__dso_handle` word in the read-write segment.
    pub dso_off: u64,
    /// `.eh_frame` in the read-only segment: (offset, size including the zero terminator).
    pub eh_frame: Option<(u64, u64)>,
    /// TLS image: template offset in the read-only segment, template size, block size, align.
    pub tls: Option<TlsImage>,
    /// Common symbols: name -> offset in the read-write segment (in the zero fill).
    pub commons: HashMap<Vec<u8>, u64>,
    /// Sections named like C identifiers, for `__start_`/`__stop_`: name -> (seg, start, end).
    pub named_groups: HashMap<Vec<u8>, (Seg, u64, u64)>,
    /// Sections mapped from their files: (object, section, segment, offset).
    pub file_maps: Vec<(usize, usize, Seg, u64)>,
}

impl Layout {
    /// Offset from the allocation base of `off` in `seg`.
    pub fn offset(&self, seg: Seg, off: u64) -> u64 {
        self.seg_start[seg as usize] + off
    }
}

/// The strictest alignment a section or common symbol may ask for (a larger one is an error).
pub const MAX_ALIGN: u64 = 1 << 20;

/// The most memory one link may lay out; every offset of a layout stays below it, so sums of
/// an offset, a size and an alignment never overflow.
pub const MAX_LINK_SIZE: u64 = 1 << 36;

/// Checks an alignment read from a file: 0 or a power of two, at most [`MAX_ALIGN`]. Returns
/// the alignment to use (at least 1) or what is wrong with it.
pub fn check_align(a: u64) -> std::result::Result<u64, String> {
    if a > 1 && !a.is_power_of_two() {
        Err(format!("alignment {a:#x} is not a power of two"))
    } else if a > MAX_ALIGN {
        Err(format!(
            "alignment {a:#x} exceeds remjit's limit of {MAX_ALIGN:#x} (1 MiB)"
        ))
    } else {
        Ok(a.max(1))
    }
}

/// `v` rounded up to a multiple of `a`. Callers keep `v` at most [`MAX_LINK_SIZE`] and `a` at
/// most a page or [`MAX_ALIGN`], so this cannot overflow.
fn align_up(v: u64, a: u64) -> u64 {
    let a = a.max(1);
    v.div_ceil(a) * a
}

/// `off + size`, if it stays within [`MAX_LINK_SIZE`].
fn grow(off: u64, size: u64) -> Option<u64> {
    off.checked_add(size).filter(|&e| e <= MAX_LINK_SIZE)
}

/// The error for a section whose size does not fit in one link.
fn too_large(objects: &[LinkObject<'_>], obj: usize, sec: usize, size: u64) -> Error {
    let f = &objects[obj].file;
    let name = f.section_label(sec);
    Error::malformed(
        &f.name,
        format!(
            "section {name}: size {size:#x} makes the link larger than remjit's limit of \
             {MAX_LINK_SIZE:#x} bytes (64 GiB)"
        ),
    )
}

/// The error for linker-made parts that would not fit in one link.
fn link_too_large(what: &str) -> Error {
    Error::Memory(format!(
        "{what} make the link larger than remjit's limit of {MAX_LINK_SIZE:#x} bytes (64 GiB)"
    ))
}

fn is_c_identifier(name: &[u8]) -> bool {
    !name.is_empty()
        && !name[0].is_ascii_digit()
        && name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Whether a section is loaded: allocated, not a note or group, not dropped with its COMDAT group.
pub fn is_loaded(o: &LinkObject<'_>, index: usize, shdr: &crate::object::Shdr) -> bool {
    let flags = shdr.sh_flags(LE);
    let ty = shdr.sh_type(LE);
    flags & u64::from(elf::SHF_ALLOC) != 0
        && ty != elf::SHT_NOTE
        && ty != elf::SHT_GROUP
        && !o.discarded.get(index).copied().unwrap_or(true)
}

struct Item {
    obj: usize,
    sec: usize,
    size: u64,
    align: u64,
    group: usize,
    /// For a section mapped from its file: its file offset modulo the page size.
    file_page_off: Option<u64>,
}

/// The sections of each kind, in the order they are laid out.
#[derive(Default)]
struct Lists {
    text: Vec<Item>,
    ro: Vec<Item>,
    rw: Vec<Item>,
    bss: Vec<Item>,
    eh: Vec<Item>,
    tdata: Vec<Item>,
    tbss: Vec<Item>,
}

impl Lists {
    fn push(&mut self, item: Item, shdr: &crate::object::Shdr, name: &[u8], unwind_type: u32) {
        let flags = shdr.sh_flags(LE);
        let nobits = shdr.sh_type(LE) == elf::SHT_NOBITS;
        let list = if flags & u64::from(elf::SHF_TLS) != 0 {
            if nobits {
                &mut self.tbss
            } else {
                &mut self.tdata
            }
        } else if shdr.sh_type(LE) == unwind_type || name == b".eh_frame" {
            &mut self.eh
        } else if flags & u64::from(elf::SHF_EXECINSTR) != 0 {
            &mut self.text
        } else if nobits {
            // Read-only zero fill is rare; it can live with the writable zero fill.
            &mut self.bss
        } else if flags & u64::from(elf::SHF_WRITE) != 0 {
            &mut self.rw
        } else {
            &mut self.ro
        };
        list.push(item);
    }
}

/// Sorts the loaded sections of `objects` into lists, checking each one's size and alignment.
fn collect(
    objects: &[LinkObject<'_>],
    page: u64,
    mappable: &dyn Fn(usize, usize) -> Option<u64>,
    group_names: &mut Vec<Vec<u8>>,
    unwind_type: u32,
) -> Result<Lists> {
    let mut lists = Lists::default();
    let mut group_of: HashMap<Vec<u8>, usize> = HashMap::default();
    for (oi, o) in objects.iter().enumerate() {
        for (si, shdr) in o.file.sections.iter().enumerate() {
            if !is_loaded(o, si, shdr) {
                continue;
            }
            let name = o.file.section_name(si)?;
            let align = check_align(shdr.sh_addralign(LE)).map_err(|why| {
                Error::malformed(
                    &o.file.name,
                    format!("section {}: {why}", o.file.section_label(si)),
                )
            })?;
            let size = shdr.sh_size(LE);
            if size > MAX_LINK_SIZE {
                return Err(too_large(objects, oi, si, size));
            }
            let group = if is_c_identifier(name) {
                let next = group_names.len();
                let g = *group_of.entry(name.to_vec()).or_insert(next);
                if g == next {
                    group_names.push(name.to_vec());
                }
                g
            } else {
                0
            };
            let item = Item {
                obj: oi,
                sec: si,
                size,
                align,
                group,
                file_page_off: mappable(oi, si)
                    .map(|fo| fo % page)
                    .filter(|fpo| fpo % align == 0),
            };
            lists.push(item, shdr, name, unwind_type);
        }
    }
    // Sections named like C identifiers are kept together for `__start_`/`__stop_`.
    for list in [
        &mut lists.text,
        &mut lists.ro,
        &mut lists.rw,
        &mut lists.bss,
    ] {
        list.sort_by_key(|i| i.group);
    }
    Ok(lists)
}

/// Places lists of sections one after the other, recording `__start_`/`__stop_` groups and
/// sections mapped from their files.
struct Placer<'a, 'o> {
    objects: &'a [LinkObject<'o>],
    page: u64,
    group_names: Vec<Vec<u8>>,
    named_groups: HashMap<Vec<u8>, (Seg, u64, u64)>,
    file_maps: Vec<(usize, usize, Seg, u64)>,
}

impl Placer<'_, '_> {
    /// Places `list` in `seg` from `off`; returns the end offset.
    fn place(
        &mut self,
        list: &[Item],
        seg: Seg,
        mut off: u64,
        places: &mut [Vec<Place>],
    ) -> Result<u64> {
        for it in list {
            let too_large = || too_large(self.objects, it.obj, it.sec, it.size);
            if let Some(fpo) = it.file_page_off {
                // Pages of its own, at the file offset's position within a page.
                off = align_up(off, self.page) + fpo;
                places[it.obj][it.sec] = Place::Mem { seg, off };
                self.file_maps.push((it.obj, it.sec, seg, off));
                off = align_up(grow(off, it.size).ok_or_else(too_large)?, self.page);
                continue;
            }
            off = align_up(off, it.align);
            places[it.obj][it.sec] = Place::Mem { seg, off };
            let end = grow(off, it.size).ok_or_else(too_large)?;
            if it.group != 0 {
                let e = self
                    .named_groups
                    .entry(self.group_names[it.group].clone())
                    .or_insert((seg, off, off));
                e.2 = end;
            }
            off = end;
        }
        Ok(off)
    }

    /// Packs `.eh_frame` sections from `r` in the read-only segment, zero terminated; returns
    /// the end offset and the table's (offset, size).
    fn place_eh_frame(
        &self,
        eh: &[Item],
        mut r: u64,
        places: &mut [Vec<Place>],
    ) -> Result<(u64, Option<(u64, u64)>)> {
        if eh.is_empty() {
            return Ok((r, None));
        }
        // Records must follow each other without gaps: a zero word would end the table.
        r = align_up(r, 8);
        let start = r;
        for it in eh {
            r = align_up(r, 4);
            places[it.obj][it.sec] = Place::Mem {
                seg: Seg::Ro,
                off: r,
            };
            r = grow(r, it.size).ok_or_else(|| too_large(self.objects, it.obj, it.sec, it.size))?;
        }
        r = grow(r, 4).ok_or_else(|| link_too_large(".eh_frame sections"))?;
        Ok((r, Some((start, r - start))))
    }

    /// Lays out the TLS template (`.tdata`) from `r` in the read-only segment and the TLS
    /// block; returns the end offset and (template offset, template size, block size, align).
    fn place_tls(
        &self,
        tdata: &[Item],
        tbss: &[Item],
        r: u64,
        places: &mut [Vec<Place>],
    ) -> Result<(u64, Option<TlsImage>)> {
        if tdata.is_empty() && tbss.is_empty() {
            return Ok((r, None));
        }
        let align = tdata.iter().chain(tbss).map(|i| i.align).max().unwrap_or(1);
        let template = align_up(r, align);
        let mut toff = 0;
        let mut init_size = 0;
        for (i, it) in tdata.iter().chain(tbss).enumerate() {
            toff = align_up(toff, it.align);
            places[it.obj][it.sec] = if i < tdata.len() {
                Place::TlsData {
                    off: template + toff,
                    tls_off: toff,
                }
            } else {
                Place::TlsBss { tls_off: toff }
            };
            toff = grow(toff, it.size)
                .ok_or_else(|| too_large(self.objects, it.obj, it.sec, it.size))?;
            if i + 1 == tdata.len() {
                init_size = toff;
            }
        }
        let end = grow(template, init_size).ok_or_else(|| link_too_large("TLS sections"))?;
        Ok((
            end,
            Some((template, init_size, align_up(toff, align), align)),
        ))
    }
}

/// Lays out all loaded sections of `objects` plus the linker-made parts.
///
/// `mappable(obj, sec)` gives, for a large section that will be mapped from its file rather than
/// copied, its file offset; such a section gets pages of its own at an address congruent to
/// that offset modulo the page size. Sizes and alignments come from hostile files: a size that
/// would take the link past [`MAX_LINK_SIZE`] or a bad alignment is an error naming the object
/// and section.
pub fn layout<A: Arch>(
    objects: &[LinkObject<'_>],
    synth: Synthesized,
    commons: &[(Vec<u8>, u64, u64)],
    page: u64,
    mappable: &dyn Fn(usize, usize) -> Option<u64>,
) -> Result<Layout> {
    let mut places: Vec<Vec<Place>> = objects
        .iter()
        .map(|o| vec![Place::None; o.file.sections.len()])
        .collect();
    let mut group_names: Vec<Vec<u8>> = vec![Vec::new()];
    let lists = collect(
        objects,
        page,
        mappable,
        &mut group_names,
        A::UNWIND_SECTION_TYPE,
    )?;
    let mut placer = Placer {
        objects,
        page,
        group_names,
        named_groups: HashMap::default(),
        file_maps: Vec::new(),
    };
    // `off` followed by `n` entries of `each` bytes.
    let after = |off: u64, n: u64, each: u64, what: &str| {
        n.checked_mul(each)
            .and_then(|size| grow(off, size))
            .ok_or_else(|| link_too_large(what))
    };

    // Text: sections, then stubs.
    let t = placer.place(&lists.text, Seg::Text, 0, &mut places)?;
    let stubs_off = align_up(t, 16);
    let t = after(stubs_off, synth.stubs, A::STUB_SIZE, "stubs")?;

    // Read-only: sections, TLS template, then `.eh_frame` packed and zero terminated.
    let r = placer.place(&lists.ro, Seg::Ro, 0, &mut places)?;
    let (r, tls) = placer.place_tls(&lists.tdata, &lists.tbss, r, &mut places)?;
    let (r, eh_frame) = placer.place_eh_frame(&lists.eh, r, &mut places)?;

    // Read-write: sections, GOT, TLS pairs and descriptors, `__dso_handle`, then zero fill.
    let w = placer.place(&lists.rw, Seg::Rw, 0, &mut places)?;
    let got_off = align_up(w, 16);
    let entries = "GOT and TLS entries";
    let tls_pairs_off = after(got_off, synth.got_entries, 8, entries)?;
    let tls_descs_off = after(tls_pairs_off, synth.tls_pairs, 16, entries)?;
    let dso_off = after(tls_descs_off, synth.tls_descs, A::TLS_DESC_SIZE, entries)?;
    // `__dso_handle`, then a word holding this module's TLS id.
    let content_w = after(dso_off, 2, 8, entries)?;
    let mut z = placer.place(&lists.bss, Seg::Rw, content_w, &mut places)?;
    let mut common_offs = HashMap::default();
    for (name, size, align) in commons {
        z = align_up(z, *align);
        common_offs.insert(name.clone(), z);
        z = grow(z, *size).ok_or_else(|| link_too_large("common symbols"))?;
    }

    let most = |lists: &[&[Item]], least: u64| {
        lists
            .iter()
            .flat_map(|l| l.iter().map(|i| i.align))
            .fold(least, u64::max)
    };
    let seg_align = [
        most(&[&lists.text], 16),
        most(&[&lists.ro, &lists.tdata, &lists.tbss, &lists.eh], 8),
        commons
            .iter()
            .map(|c| c.2)
            .fold(most(&[&lists.rw, &lists.bss], 16), u64::max),
    ];
    let seg_start = [0, align_up(t, page), align_up(t, page) + align_up(r, page)];
    let total = seg_start[2] + align_up(z, page);
    if total > MAX_LINK_SIZE {
        return Err(link_too_large("the sections together"));
    }
    Ok(Layout {
        places,
        seg_start,
        seg_content: [t, r, content_w],
        seg_align,
        bss_size: z - content_w,
        total,
        stubs_off,
        stub_size: A::STUB_SIZE,
        got_off,
        tls_pairs_off,
        tls_descs_off,
        tls_desc_size: A::TLS_DESC_SIZE,
        dso_off,
        eh_frame,
        tls,
        commons: common_offs,
        named_groups: placer.named_groups,
        file_maps: placer.file_maps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_priorities() {
        assert_eq!(
            init_kind(b".init_array.00101"),
            Some(InitKind::Init {
                prio: 101,
                reversed: false
            })
        );
        assert_eq!(
            init_kind(b".ctors.65434"),
            Some(InitKind::Init {
                prio: 101,
                reversed: true
            })
        );
        assert_eq!(
            init_kind(b".fini_array"),
            Some(InitKind::Fini {
                prio: 65536,
                forward: false
            })
        );
        assert_eq!(init_kind(b".init_arrayx"), None);
        assert_eq!(init_kind(b".text"), None);
    }

    #[test]
    fn identifiers() {
        assert!(is_c_identifier(b"my_section1"));
        assert!(!is_c_identifier(b".data"));
        assert!(!is_c_identifier(b"1abc"));
    }
}
