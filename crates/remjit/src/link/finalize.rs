//! Stage 4, the finalize request: segments with their protections and the actions that run
//! when the allocation is finalized (unwind registration, TLS registration, id words, IFUNC
//! resolution, constructors), plus what the module exports.

use object::elf;
use object::read::elf::{SectionHeader, Sym};
use object::LittleEndian as LE;

use super::layout::{self, InitKind, Place, Seg};
use super::plan::Placed;
use super::symbols::{lossy, Class, Key, Resolved};
use super::write::Image;
use super::{FunctionSymbol, LinkEnv, SessionSymbol, SymbolKind};
use crate::error::Result;
use crate::memory::{AllocAction, AllocActionPair, AllocInfo, FileMap, Prot, SegmentInfo};

/// Stage 4: what to send to finalize the allocation, and the module's finalizers.
pub(super) struct FinalizeRequest {
    /// Segments, actions and file maps.
    pub info: AllocInfo,
    /// Finalizers in the order to run them.
    pub finalizers: Vec<u64>,
    /// The word holding this module's TLS id, if it has thread-locals.
    pub tls_id_slot: Option<u64>,
}

/// Stage 4: the finalize request for the image written at `p`, whose working memory is `mem`.
pub(super) fn request(
    r: &Resolved<'_>,
    p: Placed<'_, '_>,
    image: Image,
    mem: &[u8],
    file_maps: Vec<FileMap>,
    env: &LinkEnv<'_>,
) -> Result<FinalizeRequest> {
    let lay = p.layout();
    let (init_fns, fini_fns) = init_tables(r, p, mem)?;
    let tls_id_slot = image.id_slots.first().copied();
    let mut actions = Vec::new();
    // Without running code nothing unwinds: `--noexec` leaves the unwinder alone (its parser
    // would be the first to read a hostile `.eh_frame`).
    if let Some((off, _)) = lay.eh_frame.filter(|_| env.run_initializers) {
        let addr = p.addr(Seg::Ro, off);
        actions.push(AllocActionPair {
            finalize: AllocAction::RegisterEhFrame { addr },
            dealloc: Some(AllocAction::DeregisterEhFrame { addr }),
        });
    }
    if let Some((template, init_size, mem_size, align)) = lay.tls {
        let first = image.id_slots.first().copied();
        actions.push(AllocActionPair {
            finalize: AllocAction::RegisterTls {
                init: p.addr(Seg::Ro, template),
                init_size,
                mem_size,
                align,
                id_slots: image.id_slots,
            },
            dealloc: first.map(|id_slot| AllocAction::DeregisterTls { id_slot }),
        });
    }
    for (from, to) in image.copy_words {
        actions.push(AllocActionPair {
            finalize: AllocAction::CopyWord { from, to },
            dealloc: None,
        });
    }
    for (slot, resolver) in image.ifuncs {
        actions.push(AllocActionPair {
            finalize: AllocAction::ResolveIfunc { slot, resolver },
            dealloc: None,
        });
    }
    if env.run_initializers {
        actions.push(AllocActionPair {
            finalize: AllocAction::RunInitializers { fns: init_fns },
            dealloc: Some(AllocAction::RunFinalizers {
                dso: p.dso_handle(),
                fns: fini_fns.clone(),
            }),
        });
    }
    Ok(FinalizeRequest {
        info: AllocInfo {
            mapping_base: p.base,
            segments: segments(p),
            actions,
            file_maps,
            pipelined: env.pipelined_initialize,
        },
        finalizers: fini_fns,
        tls_id_slot,
    })
}

/// The three segments: code, read-only data, read-write data then zero fill.
fn segments(p: Placed<'_, '_>) -> Vec<SegmentInfo> {
    let lay = p.layout();
    let prots = [Prot::READ_EXEC, Prot::READ, Prot::READ_WRITE];
    (0..3)
        .map(|i| SegmentInfo {
            offset: lay.seg_start[i],
            content_size: lay.seg_content[i],
            zero_fill_size: if i == 2 { lay.bss_size } else { 0 },
            prot: prots[i],
        })
        .collect()
}

/// Initializers and finalizers in the order to run them, read back from the relocated tables.
fn init_tables(r: &Resolved<'_>, p: Placed<'_, '_>, mem: &[u8]) -> Result<(Vec<u64>, Vec<u64>)> {
    let lay = p.layout();
    let mut inits: Vec<(u32, usize, u64)> = Vec::new();
    let mut preinits: Vec<u64> = Vec::new();
    let mut finis: Vec<(u32, usize, u64)> = Vec::new();
    let mut seq = 0usize;
    let mut push = |list: &mut Vec<(u32, usize, u64)>, prio: u32, words: Vec<u64>| {
        for w in words {
            list.push((prio, seq, w));
            seq += 1;
        }
    };
    for (oi, o) in r.res.objects.iter().enumerate() {
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
                    push(&mut inits, prio, words);
                }
                InitKind::Fini { prio, forward } => {
                    if forward {
                        words.reverse();
                    }
                    push(&mut finis, prio, words);
                }
            }
        }
    }
    inits.sort();
    finis.sort();
    let mut init_fns = preinits;
    init_fns.extend(inits.iter().map(|i| i.2));
    let fini_fns: Vec<u64> = finis.iter().rev().map(|f| f.2).collect();
    Ok((init_fns, fini_fns))
}

/// Exported symbols (and those of kept COMDAT groups, whatever their visibility).
pub(super) fn exports(
    r: &Resolved<'_>,
    p: Placed<'_, '_>,
    tls_id_slot: Option<u64>,
) -> Vec<(Vec<u8>, SessionSymbol)> {
    let mut exports = Vec::new();
    for (&name, g) in &r.res.globals {
        if !g.exported && !r.res.in_kept_comdat(g.def) {
            continue;
        }
        let class = r.global_class(name, g.def);
        let kind = match (class, p.tls_offset(class)) {
            (_, Some(offset)) => match tls_id_slot {
                Some(id_slot) => SymbolKind::ThreadLocal { id_slot, offset },
                None => continue,
            },
            (Class::Section { obj, sec, .. }, None) => {
                let exec = r.res.objects[obj]
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
            // Its stub, which reaches the function the resolver chose (see plan).
            _ if class.is_ifunc() => match p.stub(&Key::Name(name)) {
                Some(a) => a,
                None => continue,
            },
            _ => match p.symbol_address(class) {
                Ok(Some(a)) => a,
                _ => continue,
            },
        };
        let size = class.size();
        exports.push((name.to_vec(), SessionSymbol { addr, kind, size }));
    }
    exports
}

/// Every function symbol defined by each object, by address, for crash reports.
pub(super) fn functions(r: &Resolved<'_>, p: Placed<'_, '_>) -> Vec<FunctionSymbol> {
    let mut functions = Vec::new();
    for (oi, o) in r.res.objects.iter().enumerate() {
        for (i, sym) in o.file.symbols().iter().enumerate().skip(1) {
            if sym.st_type() != elf::STT_FUNC {
                continue;
            }
            let class = r.classes[oi][i];
            if let Ok(Some(addr)) = p.symbol_address(class) {
                if let Class::Section { obj, .. } = class {
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
    functions
}
