//! The link pipeline, one stage value after another:
//!
//! inputs -> `symbols::Resolved` (read + resolve) -> `plan::Plan` (linker-made entries +
//! layout) -> allocation -> `write::Image` (sections written, relocations applied) ->
//! `finalize::FinalizeRequest` -> [`LinkedModule`].
//!
//! One call to [`link`] turns a set of objects and archives into one allocation in the
//! executing process: code, read-only data and writable data in three page-aligned segments of
//! one slab range, with the GOT, stubs, TLS pairs and descriptors made by the linker, and one
//! list of actions (unwind registration, TLS registration, IFUNC resolution, constructors) that
//! runs when the allocation is finalized. What is specific to x86-64 lives in [`x86_64`],
//! behind [`arch::Arch`].

pub mod arch;
mod finalize;
pub mod layout;
pub mod map;
mod plan;
pub mod reloc;
pub mod resolve;
mod symbols;
#[cfg(test)]
mod tests;
mod write;
pub mod x86_64;

use foldhash::HashMap;

/// The name tables a link reads ([`LinkEnv`]): hashed with foldhash, seeded per process.
pub type NameMap<V> = HashMap<Vec<u8>, V>;
use std::time::{Duration, Instant};

use object::elf;

use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::input::InputFile;
use crate::memory::{FinalizedAlloc, InFlightAlloc, SlabAllocator};
use arch::Arch;
use plan::{Placed, Plan};
use resolve::LinkObject;
use symbols::{lossy, Resolved};

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
    pub session: &'a NameMap<SessionSymbol>,
    /// Names bound to the executor's runtime (`__tls_get_addr`, `atexit`, ...).
    pub overrides: &'a NameMap<u64>,
    /// Absolute symbols given by the user (`--abs`).
    pub absolutes: &'a NameMap<u64>,
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
    /// The executor may finish initializing after the link returns
    /// ([`crate::SessionOptions::pipelined_initialize`]).
    pub pipelined_initialize: bool,
    /// A symbol the link (or an earlier one) must define, checked before anything runs.
    pub required_entry: Option<&'a str>,
    /// Record a [`map::LinkMap`] of the link (for `-check`).
    pub record_map: bool,
    /// List the module's functions ([`LinkedModule::functions`]: crash reports, profiler
    /// maps); see [`crate::SessionOptions::function_symbols`].
    pub function_symbols: bool,
    /// Whether an earlier link kept the COMDAT group with this signature (this link then
    /// drops its copy).
    pub comdat_kept: &'a dyn Fn(&[u8]) -> bool,
    /// A symbol of any visibility defined in a COMDAT group an earlier link kept: where a
    /// dropped copy's definitions resolve.
    pub comdat_symbol: &'a dyn Fn(&[u8]) -> Option<SessionSymbol>,
    /// Called once the module is written and before its finalize actions (constructors, IFUNC
    /// resolvers) run, so that a crash in them can be attributed to its functions.
    pub before_initializers: Option<&'a dyn Fn(&PlacedModule<'_>)>,
}

/// A module written into its memory whose initializers have not run yet.
pub struct PlacedModule<'a> {
    /// Its memory in the executing process.
    pub base: u64,
    /// The size of that memory.
    pub size: u64,
    /// Names of the objects linked.
    pub objects: &'a [String],
    /// Its functions, by address.
    pub functions: &'a [FunctionSymbol],
    /// Its inputs with DWARF, with their sections' load addresses.
    pub debug_inputs: &'a [crate::debug::DebugInput],
    /// Whether finalizing it runs code of the inputs (constructors, IFUNC resolvers): only
    /// then can its finalize crash in its functions.
    pub runs_code: bool,
}

/// Time spent in each stage of a link.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkTimes {
    /// Parsing objects and archives.
    pub read: Duration,
    /// Symbol resolution, archive members, the external lookup.
    pub resolve: Duration,
    /// The plan (entries and layout) and allocation.
    pub layout: Duration,
    /// Writing sections and entries and applying relocations (and the `--check` link map).
    pub fixup: Duration,
    /// The finalize request, protections and finalize actions (constructors included), and
    /// the module's exports.
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

/// Links `inputs` into one module of the session. COMDAT groups that the session already
/// holds ([`LinkEnv::comdat_kept`]) are dropped; the result names the groups this link kept.
pub fn link(inputs: &[LinkInput], env: &LinkEnv<'_>) -> Result<LinkedModule> {
    // Objects of another machine are refused when read: x86-64 is the only architecture.
    link_stages::<x86_64::X86_64>(inputs, env)
}

/// The stages, each a function of the previous stage's value.
fn link_stages<A: Arch>(inputs: &[LinkInput], env: &LinkEnv<'_>) -> Result<LinkedModule> {
    let mut times = LinkTimes::default();
    let t0 = Instant::now();
    let arena = resolve::AlignedArena::default();
    let res = symbols::read(inputs, env, &arena)?;
    times.read = t0.elapsed();

    let t1 = Instant::now();
    let resolved = symbols::resolve(res, env)?;
    times.resolve = t1.elapsed();

    let t2 = Instant::now();
    let mut plan = plan::plan::<A>(&resolved, inputs, env)?;
    let alloc = allocate(env.slab, &mut plan.layout)?;
    times.layout = t2.elapsed();

    let t3 = Instant::now();
    let p = Placed {
        plan: &plan,
        base: alloc.base,
    };
    // SAFETY: `working` is the controller's writable view of the whole allocation. For a
    // packed link (see `memory::pack`) the window between its pieces holds other links'
    // pieces too: the writer only writes where the layout placed this link's sections and
    // entries, all inside its own pieces (with `--check` the link map copies the whole
    // window; other links' bytes in it are not looked at).
    let mem = unsafe { std::slice::from_raw_parts_mut(alloc.working, alloc.size as usize) };
    let written = write_stage::<A>(&resolved, p, mem, env);
    let (image, recorded) = match written {
        Ok(w) => w,
        Err(e) => {
            env.slab.abandon(alloc);
            return Err(e);
        }
    };
    times.fixup = t3.elapsed();

    let t4 = Instant::now();
    let file_maps = plan.file_maps.clone();
    let request = match finalize::request(&resolved, p, image, mem, file_maps, env) {
        Ok(r) => r,
        Err(e) => {
            env.slab.abandon(alloc);
            return Err(e);
        }
    };
    let placed = Placed {
        plan: &plan,
        base: alloc.base,
    };
    let functions = match env.function_symbols {
        true => finalize::functions(&resolved, placed),
        false => Vec::new(),
    };
    let objects: Vec<String> = resolved
        .res
        .objects
        .iter()
        .map(|o| o.file.name.clone())
        .collect();
    let debug_inputs =
        crate::debug::collect_inputs(&resolved.res.objects, &plan.layout, alloc.base);
    if let Some(hook) = env.before_initializers {
        hook(&PlacedModule {
            base: alloc.base,
            size: alloc.size,
            objects: &objects,
            functions: &functions,
            debug_inputs: &debug_inputs,
            runs_code: request
                .info
                .actions
                .iter()
                .any(|a| a.finalize.runs_input_code()),
        });
    }
    let fin = env.slab.finalize(alloc, &request.info)?;
    let parts = Parts {
        functions,
        objects,
        debug_inputs,
    };
    let mut module = module(resolved, &plan, fin, request, parts, times, recorded);
    module.times.finalize = t4.elapsed();
    Ok(module)
}

/// Memory for a layout: pieces of pages shared with other small links when it is small
/// (its segments then start where the pieces are), else pages of its own.
fn allocate(slab: &SlabAllocator, lay: &mut layout::Layout) -> Result<InFlightAlloc> {
    if lay.file_maps.is_empty() {
        let c = lay.seg_content;
        let sizes = [c[0], c[1], c[2].saturating_add(lay.bss_size)];
        if let Some((alloc, starts)) = slab.allocate_packed(sizes, lay.seg_align)? {
            lay.seg_start = starts;
            return Ok(alloc);
        }
    }
    slab.allocate(lay.total)
}

/// Stage 3 and, when asked for, the link map derived from the plan and the written image.
fn write_stage<A: Arch>(
    resolved: &Resolved<'_>,
    p: Placed<'_, '_>,
    mem: &mut [u8],
    env: &LinkEnv<'_>,
) -> Result<(write::Image, Option<map::LinkMap>)> {
    let image = write::write::<A>(resolved, p, mem, env)?;
    let recorded = env
        .record_map
        .then(|| map::build(resolved, p, mem, env.absolutes))
        .transpose()?;
    Ok((image, recorded))
}

/// What the module's crash reports and debuggers need, made before its initializers run.
struct Parts {
    functions: Vec<FunctionSymbol>,
    objects: Vec<String>,
    debug_inputs: Vec<crate::debug::DebugInput>,
}

/// The linked module: the finalized allocation and what the session keeps of the link.
fn module(
    resolved: Resolved<'_>,
    plan: &Plan<'_>,
    fin: FinalizedAlloc,
    request: finalize::FinalizeRequest,
    parts: Parts,
    times: LinkTimes,
    map: Option<map::LinkMap>,
) -> LinkedModule {
    let res = &resolved.res;
    let base = fin.base;
    let p = Placed { plan, base };
    let mut exports = finalize::exports(&resolved, p, request.tls_id_slot);
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
    LinkedModule {
        alloc: fin,
        exports,
        functions: parts.functions,
        dso: p.dso_handle(),
        finalizers: request.finalizers,
        objects: parts.objects,
        debug_inputs: parts.debug_inputs,
        kept_comdats: res.kept_comdats.iter().map(|s| s.to_vec()).collect(),
        comdat_symbols,
        used_comdats: res.session_comdats.iter().map(|s| s.to_vec()).collect(),
        imports: resolved.imports,
        comdat_imports: resolved.comdat_imports,
        times,
        map,
    }
}

/// Where a relocation is, for error messages.
struct RelocContext<'a, 'd> {
    obj: &'a LinkObject<'d>,
    sec: usize,
    offset: u64,
    r_type: u32,
    sym: usize,
    /// The architecture's relocation names.
    kind_name: fn(u32) -> String,
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
            kind: (self.kind_name)(self.r_type),
            symbol: self.symbol_name(),
            problem: problem.into(),
        }))
    }
}
