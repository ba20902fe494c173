//! The layout stage: where every kept section, the GOT, the stubs and the TLS image go in one
//! allocation of three page-aligned segments (code, read-only data, read-write data + zero fill).

use std::collections::HashMap;

use object::elf;
use object::read::elf::SectionHeader;
use object::LittleEndian as LE;

use crate::error::Result;
use crate::link::resolve::LinkObject;

/// Size of a stub: `jmp *slot(%rip)` padded with `int3`.
pub const STUB_SIZE: u64 = 8;

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

/// The result of layout: segment sizes and offsets and every section's place.
#[derive(Debug)]
pub struct Layout {
    /// Per object, per section.
    pub places: Vec<Vec<Place>>,
    /// Segment start offsets from the allocation base.
    pub seg_start: [u64; 3],
    /// Bytes of content per segment.
    pub seg_content: [u64; 3],
    /// Zero fill after the read-write content.
    pub bss_size: u64,
    /// Total size in bytes (page multiple).
    pub total: u64,
    /// Offset of the first stub in the text segment.
    pub stubs_off: u64,
    /// Offset of the GOT in the read-write segment (also `_GLOBAL_OFFSET_TABLE_`).
    pub got_off: u64,
    /// Offset of the TLS pairs (after the GOT words).
    pub tls_pairs_off: u64,
    /// Offset of the TLS descriptors.
    pub tls_descs_off: u64,
    /// Offset of this link's `__dso_handle` word in the read-write segment.
    pub dso_off: u64,
    /// `.eh_frame` in the read-only segment: (offset, size including the zero terminator).
    pub eh_frame: Option<(u64, u64)>,
    /// TLS image: template offset in the read-only segment, template size, block size, align.
    pub tls: Option<(u64, u64, u64, u64)>,
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

fn align_up(v: u64, a: u64) -> u64 {
    let a = a.max(1);
    v.div_ceil(a) * a
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

/// Lays out all loaded sections of `objects` plus the linker-made parts.
///
/// `mappable(obj, sec)` gives, for a large section that will be mapped from its file rather than
/// copied, its file offset; such a section gets pages of its own at an address congruent to
/// that offset modulo the page size.
pub fn layout(
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
    let mut text: Vec<Item> = Vec::new();
    let mut ro: Vec<Item> = Vec::new();
    let mut rw: Vec<Item> = Vec::new();
    let mut bss: Vec<Item> = Vec::new();
    let mut eh: Vec<Item> = Vec::new();
    let mut tdata: Vec<Item> = Vec::new();
    let mut tbss: Vec<Item> = Vec::new();
    let mut group_of: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut group_names: Vec<Vec<u8>> = vec![Vec::new()];
    for (oi, o) in objects.iter().enumerate() {
        for (si, shdr) in o.file.sections.iter().enumerate() {
            if !is_loaded(o, si, shdr) {
                continue;
            }
            let flags = shdr.sh_flags(LE);
            let name = o.file.section_name(si)?;
            let nobits = shdr.sh_type(LE) == elf::SHT_NOBITS;
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
                size: shdr.sh_size(LE),
                align: shdr.sh_addralign(LE).max(1),
                group,
                file_page_off: mappable(oi, si)
                    .map(|fo| fo % page)
                    .filter(|fpo| fpo % shdr.sh_addralign(LE).max(1) == 0),
            };
            if flags & u64::from(elf::SHF_TLS) != 0 {
                if nobits {
                    tbss.push(item)
                } else {
                    tdata.push(item)
                }
            } else if shdr.sh_type(LE) == elf::SHT_X86_64_UNWIND || name == b".eh_frame" {
                eh.push(item)
            } else if flags & u64::from(elf::SHF_EXECINSTR) != 0 {
                text.push(item)
            } else if flags & u64::from(elf::SHF_WRITE) != 0 {
                if nobits {
                    bss.push(item)
                } else {
                    rw.push(item)
                }
            } else if nobits {
                // Read-only zero fill is rare; it can live with the writable zero fill.
                bss.push(item)
            } else {
                ro.push(item)
            }
        }
    }
    // Sections named like C identifiers are kept together for `__start_`/`__stop_`.
    for list in [&mut text, &mut ro, &mut rw, &mut bss] {
        list.sort_by_key(|i| i.group);
    }
    let mut named_groups: HashMap<Vec<u8>, (Seg, u64, u64)> = HashMap::new();
    let mut file_maps = Vec::new();
    let mut place_list = |list: &[Item], seg: Seg, mut off: u64, places: &mut Vec<Vec<Place>>| {
        for it in list {
            if let Some(fpo) = it.file_page_off {
                // Pages of its own, at the file offset's position within a page.
                off = align_up(off, page) + fpo;
                places[it.obj][it.sec] = Place::Mem { seg, off };
                file_maps.push((it.obj, it.sec, seg, off));
                off = align_up(off + it.size, page);
                continue;
            }
            off = align_up(off, it.align);
            places[it.obj][it.sec] = Place::Mem { seg, off };
            if it.group != 0 {
                let e = named_groups
                    .entry(group_names[it.group].clone())
                    .or_insert((seg, off, off));
                e.2 = off + it.size;
            }
            off += it.size;
        }
        off
    };

    // Text: sections, then stubs.
    let mut t = place_list(&text, Seg::Text, 0, &mut places);
    let stubs_off = align_up(t, 16);
    t = stubs_off + synth.stubs * STUB_SIZE;

    // Read-only: sections, TLS template, then `.eh_frame` packed and zero terminated.
    let mut r = place_list(&ro, Seg::Ro, 0, &mut places);
    let mut tls = None;
    if !tdata.is_empty() || !tbss.is_empty() {
        let align = tdata
            .iter()
            .chain(&tbss)
            .map(|i| i.align)
            .max()
            .unwrap_or(1);
        r = align_up(r, align);
        let template = r;
        let mut toff = 0;
        for it in &tdata {
            toff = align_up(toff, it.align);
            places[it.obj][it.sec] = Place::TlsData {
                off: template + toff,
                tls_off: toff,
            };
            toff += it.size;
        }
        let init_size = toff;
        for it in &tbss {
            toff = align_up(toff, it.align);
            places[it.obj][it.sec] = Place::TlsBss { tls_off: toff };
            toff += it.size;
        }
        r += init_size;
        tls = Some((template, init_size, align_up(toff, align), align));
    }
    let mut eh_frame = None;
    if !eh.is_empty() {
        // Records must follow each other without gaps: a zero word would end the table.
        r = align_up(r, 8);
        let start = r;
        for it in &eh {
            r = align_up(r, 4);
            places[it.obj][it.sec] = Place::Mem {
                seg: Seg::Ro,
                off: r,
            };
            r += it.size;
        }
        r += 4;
        eh_frame = Some((start, r - start));
    }

    // Read-write: sections, GOT, TLS pairs and descriptors, `__dso_handle`, then zero fill.
    let mut w = place_list(&rw, Seg::Rw, 0, &mut places);
    let got_off = align_up(w, 16);
    let tls_pairs_off = got_off + synth.got_entries * 8;
    let tls_descs_off = tls_pairs_off + synth.tls_pairs * 16;
    let dso_off = tls_descs_off + synth.tls_descs * 32;
    // `__dso_handle`, then a word holding this module's TLS id.
    w = dso_off + 16;
    let content_w = w;
    let mut z = place_list(&bss, Seg::Rw, w, &mut places);
    let mut common_offs = HashMap::new();
    for (name, size, align) in commons {
        z = align_up(z, *align);
        common_offs.insert(name.clone(), z);
        z += size;
    }

    let seg_start = [0, align_up(t, page), align_up(t, page) + align_up(r, page)];
    let total = seg_start[2] + align_up(z, page);
    Ok(Layout {
        places,
        seg_start,
        seg_content: [t, r, content_w],
        bss_size: z - content_w,
        total,
        stubs_off,
        got_off,
        tls_pairs_off,
        tls_descs_off,
        dso_off,
        eh_frame,
        tls,
        commons: common_offs,
        named_groups,
        file_maps,
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
