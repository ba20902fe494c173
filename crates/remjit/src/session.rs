//! The library API: a session to which inputs are added and linked module by module, later
//! modules using the symbols of earlier ones, as a REPL or a JIT compiler needs. The crate's
//! front page describes the model (redefinition through call stubs, dependencies) and shows
//! an embedder calling functions with arguments and reading and writing variables.
//!
//! ```no_run
//! # fn main() -> remjit::Result<()> {
//! let mut s = remjit::Session::in_process(remjit::SessionOptions::default())?;
//! s.add_file("hello.o".as_ref())?;
//! let module = s.link()?;
//! let status = s.run_main("main", &["hello".to_string()])?;
//! s.remove_module(module)?;
//! # let _ = status; Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use remjit_executor::runtime::perf::PerfOutputs;

use crate::debug::{self, GdbGroups};
use crate::error::{Error, Result};
use crate::executor::{Arg, Executor, InProcessExecutor, Ret, RetKind};
use crate::input::{self, InputFile, InputKind, LibrarySearch};
use crate::link::map::LinkMap;
use crate::link::{
    self, FunctionSymbol, LinkEnv, LinkInput, LinkTimes, LinkedModule, SessionSymbol, SymbolKind,
};
use crate::memory::{FinalizedAlloc, MemoryMapper, PretendMapper, SlabAllocator};
use crate::redirect::{CallStubs, StubLayout};

/// An executor's refusal, prefixed with what the session was doing (`calling `f``).
fn naming(e: Error, doing: &str) -> Error {
    match e {
        Error::Executor(m) => Error::Executor(format!("{doing}: {m}")),
        e => e,
    }
}

/// How deep linker scripts may name other linker scripts.
const MAX_SCRIPT_DEPTH: u32 = 8;

/// How a session behaves.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Address space per slab reservation (`--slab-allocate`), default 1 GiB.
    pub slab_size: u64,
    /// Resolve undefined symbols to 0 instead of failing (`--phony-externals`).
    pub phony_externals: bool,
    /// Absolute symbols (`--abs NAME=ADDR`).
    pub absolutes: Vec<(String, u64)>,
    /// Run constructors and IFUNC resolvers when a module is finalized (off for `--noexec`,
    /// which runs no code of the inputs).
    pub run_initializers: bool,
    /// Extra library directories (`-L`).
    pub library_dirs: Vec<PathBuf>,
    /// Flags for the compiler of C/C++ source inputs, after `$CFLAGS`/`$CXXFLAGS` (`-Xcc`).
    pub compile_flags: Vec<String>,
    /// A symbol each link must define, checked before any constructor runs (`--entry`).
    pub required_entry: Option<String>,
    /// Keep each module's [`LinkMap`] (for `-check`).
    pub record_link_map: bool,
    /// Place the slab at this address without running anything (`-noexec -slab-address`).
    pub slab_address: Option<u64>,
    /// perf records to write for each module (`--perf-map`, `--jitdump`).
    pub perf: PerfOutputs,
    /// Keep the table of JIT'd functions that the in-process crash handler
    /// ([`remjit_executor::crash::install_in_process`]) names current, published before each
    /// module's constructors run (each link then rebuilds the whole table).
    pub in_process_crash_table: bool,
    /// Small modules share pages with each other (packs, see the `memory::pack` module): no
    /// mprotect and no fresh page per module. Off for a session that must re-link modules at
    /// exact earlier addresses ([`Session::link_at`], the REPL's recovery): a packed module's
    /// pieces are placed by the packs, not at a requested base.
    pub share_pages: bool,
    /// Give exported functions call stubs through which later links call them (redefinable;
    /// see the session model in DESIGN.md). A session that links once (the `remjit`
    /// command without `--link-each`) needs none.
    pub call_stubs: bool,
    /// A link may return while the executor is still initializing its module (out of
    /// process, through the call mailbox): the next call to the executor waits for that first
    /// and fails with its error, if any. The executor initializes a module while the next one
    /// is linked; the `remjit` command uses it for `--link-each`, where nothing of the
    /// program runs before `main`. Memory read straight from shared pages in between may not
    /// show what the module's constructors wrote yet.
    pub pipelined_initialize: bool,
    /// Keep each module's function symbols (names, addresses, sizes): crash reports name the
    /// function a crash came from, and profiler maps list them. A session whose code never
    /// runs and that writes no profiler map can do without (the `remjit` command with
    /// `--noexec`): for a large library they are thousands of names.
    pub function_symbols: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            slab_size: 1 << 30,
            phony_externals: false,
            absolutes: Vec::new(),
            run_initializers: true,
            library_dirs: Vec::new(),
            compile_flags: Vec::new(),
            required_entry: None,
            record_link_map: false,
            in_process_crash_table: false,
            slab_address: None,
            perf: PerfOutputs::default(),
            share_pages: true,
            call_stubs: true,
            pipelined_initialize: false,
            function_symbols: true,
        }
    }
}

/// A module of a session: what one [`Session::link`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleId(pub u64);

impl std::fmt::Display for ModuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What [`Session::lookup_symbol`] knows of a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymbolInfo {
    /// Its address in the executing process (0 for thread-locals, whose address differs
    /// per thread).
    pub addr: u64,
    /// Function, data or thread-local.
    pub kind: SymbolKind,
    /// Its size in bytes, from the object's symbol table (0 when the compiler gave none).
    pub size: u64,
    /// The module whose definition is visible.
    pub module: ModuleId,
    /// For a function an earlier module defines: the session's call stub for the name, the
    /// address that later modules' calls and `&name` bind to (it jumps to the visible
    /// definition, whichever module that is).
    pub stub: Option<u64>,
}

/// Where a session's memory lies: its slab reservations and call stubs. A fresh session over
/// a fresh executor can take the same addresses ([`Session::adopt_layout`], then
/// [`Session::link_at`] each module's old [`Session::module_base`]), so that pointers into
/// JIT'd code and data taken before stay valid (a REPL restarting after a crash).
#[derive(Debug, Clone, Default)]
pub struct Layout {
    reservations: Vec<(u64, u64)>,
    stubs: StubLayout,
}

impl Layout {
    /// The address ranges (start, length) the session's memory was reserved in.
    pub fn reservations(&self) -> &[(u64, u64)] {
        &self.reservations
    }
}

struct Module {
    alloc: FinalizedAlloc,
    exports: Vec<Vec<u8>>,
    functions: Vec<FunctionSymbol>,
    finalizers: Vec<u64>,
    objects: Vec<String>,
    finalized_for_exit: bool,
    map: Option<LinkMap>,
    /// Its inputs with DWARF, read only to describe a crash (file:line).
    debug_inputs: Vec<debug::DebugInput>,
    /// Modules whose code or data this one's relocations bound to directly.
    deps: BTreeSet<ModuleId>,
    /// The names behind `deps` that were definitions (not COMDAT copies), with their module:
    /// what [`Session::retract`] checks.
    bound: Vec<(Vec<u8>, ModuleId)>,
    /// Functions this one's relocations bound to through the session's call stubs: it needs
    /// some module to define each, not a particular one.
    stub_imports: Vec<Vec<u8>>,
    /// COMDAT groups this module kept, and the group symbols it registered.
    comdats: Vec<Vec<u8>>,
    comdat_symbols: Vec<Vec<u8>>,
}

/// A JIT session over one executor.
pub struct Session {
    executor: Arc<dyn Executor>,
    slab: SlabAllocator,
    options: SessionOptions,
    /// What later links bind each name to: the top of its stack in `defs`, or for functions,
    /// the name's call stub.
    symbols: HashMap<Vec<u8>, SessionSymbol>,
    /// Call stubs of functions (see [`crate::redirect`]); off when nothing runs
    /// ([`SessionOptions::slab_address`]).
    stubs: CallStubs,
    redirect: bool,
    /// Every live definition of each name, oldest first: a redefinition shadows, removing it
    /// uncovers the one below.
    defs: HashMap<Vec<u8>, Vec<(ModuleId, SessionSymbol)>>,
    overrides: HashMap<Vec<u8>, u64>,
    absolutes: HashMap<Vec<u8>, u64>,
    /// Kept COMDAT groups by signature, with the module holding the copy.
    comdats: HashMap<Vec<u8>, ModuleId>,
    /// Symbols (any visibility) of the kept COMDAT groups, with their module.
    comdat_symbols: HashMap<Vec<u8>, (SessionSymbol, ModuleId)>,
    modules: BTreeMap<ModuleId, Module>,
    pending: Vec<LinkInput>,
    pending_archives: Vec<LinkInput>,
    next_id: u64,
    search: LibrarySearch,
    last_times: LinkTimes,
    /// The newest link that failed after its memory was written (a constructor crashed, say):
    /// what crash reports name.
    failed: Option<FailedLink>,
    /// The modules' debug objects as registered with gdb.
    gdb: GdbGroups,
    /// Whether a link's finalize ran code of its inputs (constructors, IFUNC resolvers).
    ran_input_code: bool,
}

/// What crash reports need of a link that failed once its code was in place.
struct FailedLink {
    base: u64,
    size: u64,
    objects: Vec<String>,
    functions: Vec<link::FunctionSymbol>,
    debug_inputs: Vec<debug::DebugInput>,
}

impl FailedLink {
    fn of(m: &link::PlacedModule<'_>) -> FailedLink {
        FailedLink {
            base: m.base,
            size: m.size,
            objects: m.objects.to_vec(),
            functions: m.functions.to_vec(),
            debug_inputs: m.debug_inputs.to_vec(),
        }
    }
}

impl Session {
    /// A session that runs code in this process.
    pub fn in_process(options: SessionOptions) -> Result<Session> {
        Session::with_executor(Arc::new(InProcessExecutor::new()), options)
    }

    /// A session over any executor.
    pub fn with_executor(executor: Arc<dyn Executor>, options: SessionOptions) -> Result<Session> {
        let overrides = executor
            .runtime_symbols()?
            .into_iter()
            .map(|(n, a)| (n.into_bytes(), a))
            .collect();
        let absolutes = options
            .absolutes
            .iter()
            .map(|(n, a)| (n.clone().into_bytes(), *a))
            .collect();
        // The slab goes below 2 GiB: next to the host's copies of the C runtime's data, which
        // position-dependent and PIE code reach with 32-bit references.
        let mapper: Arc<dyn MemoryMapper> = match options.slab_address {
            Some(a) => Arc::new(PretendMapper::new(a)?),
            None => executor.mapper(),
        };
        let slab = SlabAllocator::new(mapper, options.slab_size, true);
        if !options.share_pages {
            slab.no_packs()?;
        }
        let search = LibrarySearch {
            user_dirs: options.library_dirs.clone(),
        };
        let redirect = options.slab_address.is_none() && options.call_stubs;
        Ok(Session {
            executor,
            slab,
            options,
            symbols: HashMap::default(),
            stubs: CallStubs::default(),
            redirect,
            defs: HashMap::default(),
            overrides,
            absolutes,
            comdats: HashMap::default(),
            comdat_symbols: HashMap::default(),
            modules: BTreeMap::new(),
            pending: Vec::new(),
            pending_archives: Vec::new(),
            next_id: 1,
            search,
            last_times: LinkTimes::default(),
            failed: None,
            gdb: GdbGroups::new(),
            ran_input_code: false,
        })
    }

    /// Whether any link so far ran code of its inputs as it finalized (constructors, IFUNC
    /// resolvers; not with `run_initializers` off): until then, nothing of the program ran.
    pub fn ran_input_code(&self) -> bool {
        self.ran_input_code
    }

    /// The executor underneath.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }

    /// Adds a directory to search for `-l` libraries.
    pub fn add_library_dir(&mut self, dir: PathBuf) {
        self.search.user_dirs.push(dir);
    }

    /// Adds any input file for the next link: an object, an archive, a shared library (loaded
    /// now), a GNU linker script, or a C/C++ source (compiled now).
    pub fn add_file(&mut self, path: &Path) -> Result<()> {
        if let Some(lang) = input::source_language(path) {
            if !path.exists() {
                return Err(Error::Io {
                    path: path.display().to_string(),
                    error: std::io::Error::from_raw_os_error(libc::ENOENT),
                });
            }
            let f = input::compile_source(path, lang, &self.options.compile_flags)?;
            self.pending.push(LinkInput::Object(f));
            return Ok(());
        }
        let f = input::map_file(path)?;
        self.add_input(f, path, 0)
    }

    /// Adds an input file already read (by [`crate::input::map_file`]) from `path`, as
    /// [`Session::add_file`] would have read it: an object, an archive, a shared library
    /// (loaded now) or a GNU linker script; not a source.
    pub fn add_read_file(&mut self, path: &Path, f: InputFile) -> Result<()> {
        self.add_input(f, path, 0)
    }

    fn add_input(&mut self, f: InputFile, path: &Path, depth: u32) -> Result<()> {
        match input::classify(&f.bytes) {
            InputKind::Object => self.pending.push(LinkInput::Object(f)),
            InputKind::Archive => self.pending_archives.push(LinkInput::Archive(f)),
            InputKind::SharedLibrary => self.dlopen(path)?,
            InputKind::Lto => return Err(Error::Lto(f.name.to_string())),
            InputKind::LinkerScript if depth < MAX_SCRIPT_DEPTH => {
                let text = String::from_utf8_lossy(&f.bytes).into_owned();
                for name in input::linker_script_inputs(&text) {
                    let p = self.search.find_script_input(&f.name, &name)?;
                    let g = input::map_file(&p)?;
                    self.add_input(g, &p, depth + 1)?;
                }
            }
            InputKind::LinkerScript => {
                return Err(Error::ScriptNesting {
                    script: f.name.to_string(),
                    depth: MAX_SCRIPT_DEPTH,
                })
            }
            InputKind::Unknown => return Err(Error::UnknownInput(f.name.to_string())),
        }
        Ok(())
    }

    /// Adds an object held in memory (e.g. fresh from a compiler) for the next link.
    pub fn add_object_bytes(&mut self, name: &str, bytes: Vec<u8>) {
        self.pending.push(LinkInput::Object(InputFile {
            name: Arc::from(name),
            bytes: Arc::new(input::InputBytes::Owned(bytes)),
        }));
    }

    /// Whether an object waits for the next link (archives alone do not make a module).
    pub fn has_pending_objects(&self) -> bool {
        self.pending
            .iter()
            .any(|i| matches!(i, LinkInput::Object(_)))
    }

    /// Finds `-l NAME` and adds it.
    pub fn add_library(&mut self, name: &str) -> Result<()> {
        let p = self.search.find(name)?;
        self.add_file(&p)
    }

    /// Loads a shared library into the executing process (`--preload`): a path, or a bare
    /// name such as `libz.so.1` that the dynamic loader searches for itself.
    pub fn load_library(&mut self, path: &Path) -> Result<()> {
        let bare_name = !path.as_os_str().as_encoded_bytes().contains(&b'/');
        if !bare_name && !path.exists() {
            return Err(Error::Io {
                path: path.display().to_string(),
                error: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        self.dlopen(path)
    }

    /// Loads a shared library in the executor; the loader's message names the file once.
    fn dlopen(&self, path: &Path) -> Result<()> {
        self.executor.load_library(path).map_err(|e| match e {
            Error::Dylib(m) => {
                let p = path.display();
                Error::Dylib(m.replacen(&format!("{p}: {p}: "), &format!("{p}: "), 1))
            }
            e => e,
        })
    }

    /// Sets the `argc`/`argv` that constructors and `main` see (`argv[0]` first).
    pub fn set_program_args(&self, args: &[String]) -> Result<()> {
        self.executor.set_program_args(args)
    }

    /// Links everything added since the last link into one module and finalizes it
    /// (constructors run unless disabled).
    ///
    /// A definition of a name some live module already defines shadows it: later links and
    /// [`Session::lookup`] see the newest, and removing the newest uncovers the one below.
    /// A COMDAT group (C++ inline functions, templates) already kept by a live module is
    /// dropped from this link, and references to its symbols bind to the kept copy, hidden
    /// ones included. The new module depends on every module its references bound to.
    pub fn link(&mut self) -> Result<ModuleId> {
        let mut inputs = std::mem::take(&mut self.pending);
        inputs.append(&mut self.pending_archives);
        if !inputs.iter().any(|i| matches!(i, LinkInput::Object(_))) {
            return Err(Error::Usage(
                "nothing to link: no object files given".into(),
            ));
        }
        let placed = std::cell::RefCell::new(None);
        let runs_code = std::cell::Cell::new(false);
        let before_initializers = |m: &link::PlacedModule<'_>| {
            runs_code.set(m.runs_code);
            if self.options.in_process_crash_table {
                let mut table = self.jit_functions();
                table.extend(jit_functions_of(m.objects, m.functions, m.debug_inputs));
                remjit_executor::crash::set_jit_functions(table);
            }
            // Kept for crash reports only when its finalize runs its code (no copy otherwise).
            *placed.borrow_mut() = m.runs_code.then(|| FailedLink::of(m));
        };
        let comdat_kept = |sig: &[u8]| self.comdats.contains_key(sig);
        let comdat_symbol = |name: &[u8]| self.comdat_symbols.get(name).map(|s| s.0);
        let env = LinkEnv {
            session: &self.symbols,
            overrides: &self.overrides,
            absolutes: &self.absolutes,
            phony_externals: self.options.phony_externals,
            executor: self.executor.as_ref(),
            slab: &self.slab,
            run_initializers: self.options.run_initializers,
            pipelined_initialize: self.options.pipelined_initialize,
            required_entry: self.options.required_entry.as_deref(),
            record_map: self.options.record_link_map,
            function_symbols: self.options.function_symbols,
            comdat_kept: &comdat_kept,
            comdat_symbol: &comdat_symbol,
            before_initializers: Some(&before_initializers),
        };
        let linked = link::link(&inputs, &env);
        self.ran_input_code |= runs_code.get();
        self.failed = placed.into_inner();
        let m = linked.map_err(|e| self.placement_cause(e))?;
        self.failed = None;
        self.last_times = m.times;
        let id = ModuleId(self.next_id);
        self.next_id += 1;
        let memory = (m.alloc.base, m.alloc.size);
        let perf = debug::record_perf(
            self.executor.as_ref(),
            self.options.perf,
            &m.functions,
            &m.debug_inputs,
        );
        let names: Vec<Vec<u8>> = m.exports.iter().map(|e| e.0.clone()).collect();
        let module = self.register(id, m);
        self.modules.insert(id, module);
        let exec = self.executor.as_ref();
        let registered = (self.gdb).add(exec, id.0, memory, &debug_inputs_of(&self.modules));
        let redirected = self.refresh(&names);
        if let Err(e) = perf.and(registered).and(redirected) {
            // The caller gets no id for a failed link: take the module out again rather than
            // leave it live and unreachable.
            let _ = self.remove_module(id);
            return Err(e);
        }
        Ok(id)
    }

    /// Links like [`Session::link`], with the module's memory starting exactly at `base` when
    /// that range is free (compare [`Session::module_base`] to know), else wherever it goes.
    /// Only in a session without [`SessionOptions::share_pages`]: a small module's pieces in
    /// shared pages go where the packs have room.
    pub fn link_at(&mut self, base: u64) -> Result<ModuleId> {
        self.slab.place_next_at(Some(base))?;
        let linked = self.link();
        // A link that failed before allocating leaves the wish: withdraw it.
        self.slab.place_next_at(None)?;
        linked
    }

    /// Where module `id`'s memory starts.
    pub fn module_base(&self, id: ModuleId) -> Option<u64> {
        self.modules.get(&id).map(|m| m.alloc.base)
    }

    /// Where this session's memory lies, for [`Session::adopt_layout`].
    pub fn layout(&self) -> Layout {
        Layout {
            reservations: self.slab.reservations(),
            stubs: self.stubs.layout(),
        }
    }

    /// In a fresh session (nothing linked yet), takes the address space and call stubs of
    /// `layout` (another session's) at the same addresses, as far as the executor has them
    /// free. Returns false when some could not be had: their stubs, and modules linked at
    /// their old addresses there, land elsewhere.
    pub fn adopt_layout(&mut self, layout: &Layout) -> Result<bool> {
        if !self.modules.is_empty() {
            return Err(Error::Usage(
                "a layout is adopted before the first link".into(),
            ));
        }
        let reserved = self.slab.reserve_exact(&layout.reservations);
        if let Err(e) = &reserved {
            tracing::warn!("cannot take the earlier session's address space: {e}");
        }
        let moved = if self.redirect {
            self.stubs.restore(&layout.stubs, &self.slab)?
        } else {
            0
        };
        Ok(reserved.is_ok() && moved == 0)
    }

    /// The newest function definition of `name` that a call stub can jump to.
    fn stub_target(&self, name: &[u8]) -> Option<(ModuleId, u64)> {
        let stack = self.defs.get(name)?;
        stack
            .iter()
            .rev()
            .find(|(_, s)| s.kind == SymbolKind::Function && s.addr != 0)
            .map(|&(m, s)| (m, s.addr))
    }

    /// Brings the link view of `names` in line with their definition stacks: functions get
    /// (or keep) a call stub whose slot points at the newest definition; a name with no
    /// definition left leaves the view (its stub's slot is cleared, the stub kept for a
    /// later definition). The slots are written to the executor in one go.
    fn refresh(&mut self, names: &[Vec<u8>]) -> Result<()> {
        let mut writes = BTreeMap::new();
        for name in names {
            let Some(&(_, top)) = self.defs.get(name).and_then(|d| d.last()) else {
                self.symbols.remove(name);
                if let Some(stub) = self.stubs.get(name) {
                    writes.insert(self.stubs.slot(stub), 0);
                }
                continue;
            };
            let target = self.stub_target(name);
            let stubbable = self.redirect
                && !self.comdat_symbols.contains_key(name)
                && top.kind == SymbolKind::Function
                && top.addr != 0;
            let stub = match self.stubs.get(name) {
                Some(stub) => Some(stub),
                None if stubbable => Some(self.stubs.stub_for(name, &self.slab)?),
                None => None,
            };
            let mut view = top;
            if let Some(stub) = stub {
                writes.insert(self.stubs.slot(stub), target.map_or(0, |t| t.1));
                if stubbable {
                    view.addr = stub;
                }
            }
            self.symbols.insert(name.clone(), view);
        }
        self.stubs.write_slots(self.executor.as_ref(), &writes)
    }

    /// Records a linked module: its dependencies, then its definitions and COMDAT groups.
    /// The link view of its exports is [`Session::refresh`]ed after.
    fn register(&mut self, id: ModuleId, m: LinkedModule) -> Module {
        let mut deps = BTreeSet::new();
        let visible = |name: &Vec<u8>| self.defs.get(name).and_then(|d| d.last()).map(|d| d.0);
        let through_stub = |name: &Vec<u8>| {
            let stub = self.stubs.get(name);
            stub.is_some() && self.symbols.get(name).map(|s| s.addr) == stub
        };
        let (stub_imports, direct): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
            m.imports.into_iter().partition(through_stub);
        let bound: Vec<(Vec<u8>, ModuleId)> = (direct.into_iter())
            .filter_map(|n| visible(&n).map(|m| (n, m)))
            .collect();
        deps.extend(bound.iter().map(|b| b.1));
        let group_owner = |name: &Vec<u8>| self.comdat_symbols.get(name).map(|s| s.1);
        deps.extend(m.comdat_imports.iter().filter_map(group_owner));
        deps.extend(
            m.used_comdats
                .iter()
                .filter_map(|g| self.comdats.get(g).copied()),
        );
        let mut exports = Vec::with_capacity(m.exports.len());
        for (name, sym) in m.exports {
            self.defs.entry(name.clone()).or_default().push((id, sym));
            exports.push(name);
        }
        let mut comdat_symbols = Vec::new();
        for (name, sym) in m.comdat_symbols {
            if let std::collections::hash_map::Entry::Vacant(v) = self.comdat_symbols.entry(name) {
                comdat_symbols.push(v.key().clone());
                v.insert((sym, id));
            }
        }
        for g in &m.kept_comdats {
            self.comdats.insert(g.clone(), id);
        }
        Module {
            alloc: m.alloc,
            exports,
            functions: m.functions,
            finalizers: m.finalizers,
            objects: m.objects,
            finalized_for_exit: false,
            deps,
            bound,
            stub_imports,
            comdats: m.kept_comdats,
            comdat_symbols,
            map: m.map,
            debug_inputs: m.debug_inputs,
        }
    }

    /// A relocation out of range when JIT'd memory could not be placed below 2 GiB: that is
    /// the cause, say so first.
    fn placement_cause(&self, e: Error) -> Error {
        match (e, self.slab.high_placement()) {
            (Error::Relocation(mut r), Some(note)) => {
                r.problem = format!("{note}; {}", r.problem);
                Error::Relocation(r)
            }
            (e, _) => e,
        }
    }

    /// Where module `id`'s link put everything, when [`SessionOptions::record_link_map`] is on.
    pub fn link_map(&self, id: ModuleId) -> Option<&LinkMap> {
        self.modules.get(&id)?.map.as_ref()
    }

    /// Stage timings of the last link.
    pub fn last_link_times(&self) -> LinkTimes {
        self.last_times
    }

    /// The address of an exported symbol of any module (the newest definition; see
    /// [`SymbolInfo::stub`] for the address later modules bind a function to).
    pub fn lookup(&self, name: &str) -> Option<u64> {
        self.lookup_symbol(name).map(|s| s.addr)
    }

    /// The visible (newest) definition of an exported symbol: address, kind, size, module, and
    /// for a function, the call stub later modules bind to.
    pub fn lookup_symbol(&self, name: &str) -> Option<SymbolInfo> {
        let &(module, s) = self.defs.get(name.as_bytes())?.last()?;
        let stub = self.stubs.get(name.as_bytes());
        let bound = self.symbols.get(name.as_bytes()).map(|v| v.addr);
        Some(SymbolInfo {
            addr: s.addr,
            kind: s.kind,
            size: s.size,
            module,
            stub: stub.filter(|&a| Some(a) == bound),
        })
    }

    /// The live modules, oldest first.
    pub fn modules(&self) -> Vec<ModuleId> {
        self.modules.keys().copied().collect()
    }

    /// The modules `id` uses now: those its relocations bound to directly (data, COMDAT copies
    /// it shares), and for each function it calls through a call stub, the module whose
    /// definition the stub jumps to at present.
    pub fn module_dependencies(&self, id: ModuleId) -> Vec<ModuleId> {
        let Some(m) = self.modules.get(&id) else {
            return Vec::new();
        };
        let mut deps = m.deps.clone();
        deps.extend(
            m.stub_imports
                .iter()
                .filter_map(|n| self.stub_target(n).map(|t| t.0)),
        );
        deps.into_iter().collect()
    }

    /// The live modules that keep `id` from being removed: those bound directly to its code
    /// or data or to its COMDAT copies, and those calling through a stub a function that no
    /// other live module defines. (A module calling a function `id` redefined is no user: the
    /// stub falls back to the definition below.)
    pub fn module_users(&self, id: ModuleId) -> Vec<ModuleId> {
        let only_definer = |name: &Vec<u8>| self.only_function_definer(name, id);
        self.modules
            .iter()
            .filter(|(&k, m)| {
                k != id && (m.deps.contains(&id) || m.stub_imports.iter().any(only_definer))
            })
            .map(|(&k, _)| k)
            .collect()
    }

    /// Whether `id` defines a function `name` and no other live module does.
    fn only_function_definer(&self, name: &[u8], id: ModuleId) -> bool {
        self.defs.get(name).is_some_and(|stack| {
            let mut fns = stack.iter().filter(|(_, s)| s.kind == SymbolKind::Function);
            fns.clone().any(|d| d.0 == id) && fns.all(|d| d.0 == id)
        })
    }

    /// The names module `id` defines for the session now (its exports, less those
    /// [`Session::retract`]ed), in no particular order.
    pub fn module_exports(&self, id: ModuleId) -> Vec<String> {
        self.modules.get(&id).map_or_else(Vec::new, |m| {
            let names = m.exports.iter();
            names
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect()
        })
    }

    /// Withdraws module `id`'s definitions of `names` from the session while its code and
    /// data stay in place: each name leaves the session as if the module were removed (the
    /// definition it shadowed becomes visible again, calls through the name's call stub go
    /// there; with none, later links and lookups find the name undefined). The memory returns
    /// with the module ([`Session::remove_module`]). A REPL that linked several cells as one
    /// module undoes its last cell this way. A COMDAT group's copy stays with the module
    /// (modules sharing it keep binding to it) even when its symbols are withdrawn.
    ///
    /// Refused, with nothing changed, for a name the module does not define, and for a name
    /// another live module's link bound to directly (its data, or a function of which no
    /// other module has a definition a call stub could jump to): the error names those
    /// modules, to be removed first.
    pub fn retract(&mut self, id: ModuleId, names: &[&str]) -> Result<()> {
        let Some(m) = self.modules.get(&id) else {
            return Err(Error::Usage(format!("no module {id}")));
        };
        let names: BTreeSet<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        let exported: BTreeSet<&[u8]> = m.exports.iter().map(Vec::as_slice).collect();
        if let Some(n) = names.iter().find(|n| !exported.contains(*n)) {
            return Err(Error::Usage(format!(
                "cannot retract `{}` from {}: the module does not define it",
                String::from_utf8_lossy(n),
                self.describe(id)
            )));
        }
        if let Some((name, users)) = names.iter().find_map(|&n| {
            let users = self.name_users(id, n);
            (!users.is_empty()).then_some((n, users))
        }) {
            let list: Vec<String> = users.iter().map(|&u| self.describe(u)).collect();
            return Err(Error::Usage(format!(
                "cannot retract `{}` from {}: used by {}; remove those first",
                String::from_utf8_lossy(name),
                self.describe(id),
                list.join(", ")
            )));
        }
        let names: Vec<Vec<u8>> = names.into_iter().map(<[u8]>::to_vec).collect();
        for name in &names {
            self.undefine(name, id);
        }
        if let Some(m) = self.modules.get_mut(&id) {
            m.exports.retain(|e| !names.contains(e));
        }
        self.refresh(&names)
    }

    /// The live modules other than `id` that need `id`'s definition of `name`: bound to it
    /// directly, or calling it through its stub with no other definition to fall back to.
    fn name_users(&self, id: ModuleId, name: &[u8]) -> Vec<ModuleId> {
        let only = self.only_function_definer(name, id);
        let uses = |m: &Module| {
            m.bound.iter().any(|(n, d)| *d == id && n == name)
                || (only && m.stub_imports.iter().any(|n| n == name))
        };
        (self.modules.iter())
            .filter(|(&k, m)| k != id && uses(m))
            .map(|(&k, _)| k)
            .collect()
    }

    /// How a module is named in messages: its number and objects.
    fn describe(&self, id: ModuleId) -> String {
        match self.modules.get(&id) {
            Some(m) => format!("module {id} ({})", m.objects.join(" ")),
            None => format!("module {id}"),
        }
    }

    fn entry(&self, name: &str) -> Result<u64> {
        match self.lookup_symbol(name) {
            Some(s) if s.addr != 0 => Ok(s.addr),
            _ => Err(Error::SymbolNotFound(format!(
                "{name} (no linked module defines it)"
            ))),
        }
    }

    /// Runs `entry` as `main` with `args` (`argv[0]` first) and returns its status.
    pub fn run_main(&self, entry: &str, args: &[String]) -> Result<i32> {
        let addr = self.entry(entry)?;
        self.executor.set_program_args(args)?;
        self.executor.run_main(addr)
    }

    /// Calls `void name(void)`.
    pub fn call_void(&self, name: &str) -> Result<()> {
        let addr = self.entry(name)?;
        self.executor.call_void(addr)
    }

    /// Calls the function `name` (the visible definition) with `args` and reads its result as
    /// `ret` says: `s.call("scale", &[Arg::F64(2.5), Arg::I64(3)], RetKind::F64)`. Integer
    /// and pointer arguments go in general registers, `double`/`float` in SSE registers, at
    /// most 16 in all (System V; no variadic functions, no structs by value). In process the
    /// code runs on this thread; a crash out of process ends the executor with a crash report.
    pub fn call(&self, name: &str, args: &[Arg], ret: RetKind) -> Result<Ret> {
        let info = self.symbol_for(name, "call")?;
        if info.kind != SymbolKind::Function {
            return Err(Error::Usage(format!(
                "cannot call `{name}`: it is data, not a function"
            )));
        }
        self.executor
            .call(info.addr, args, ret)
            .map_err(|e| naming(e, &format!("calling `{name}`")))
    }

    /// Reads `len` bytes of the variable (or function) `name`, from `offset` on. A symbol with
    /// a size (from its object's symbol table) bounds the read.
    pub fn read(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let addr = self.field(name, offset, len, "read")?;
        self.executor
            .read_memory(addr, len)
            .map_err(|e| naming(e, &format!("reading `{name}`")))
    }

    /// Writes `bytes` into the variable `name` from `offset` on (bounded like
    /// [`Session::read`]; only writable data, never code or `const` data).
    pub fn write(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<()> {
        let addr = self.field(name, offset, bytes.len() as u64, "write")?;
        self.executor
            .write_memory(addr, bytes)
            .map_err(|e| naming(e, &format!("writing `{name}`")))
    }

    /// Reads `len` bytes (at most 16 MiB) of the executing process at `addr` (what a pointer
    /// read from JIT'd memory points to: JIT memory, the heap, libraries).
    pub fn read_memory(&self, addr: u64, len: u64) -> Result<Vec<u8>> {
        self.executor.read_memory(addr, len)
    }

    /// Writes `bytes` (at most 16 MiB) at `addr`, which must lie in writable JIT memory.
    pub fn write_memory(&self, addr: u64, bytes: &[u8]) -> Result<()> {
        self.executor.write_memory(addr, bytes)
    }

    /// The visible definition of `name`, or the error for `what` (call, read, write).
    fn symbol_for(&self, name: &str, what: &str) -> Result<SymbolInfo> {
        self.lookup_symbol(name).ok_or_else(|| {
            Error::SymbolNotFound(format!(
                "{name} (cannot {what} it: no linked module defines it)"
            ))
        })
    }

    /// The address of `name` + `offset`, for `len` bytes within the symbol's size.
    fn field(&self, name: &str, offset: u64, len: u64, what: &str) -> Result<u64> {
        let info = self.symbol_for(name, what)?;
        if let SymbolKind::ThreadLocal { .. } = info.kind {
            return Err(Error::Usage(format!(
                "cannot {what} `{name}`: it is thread-local (each thread has its own copy)"
            )));
        }
        let end = offset.checked_add(len);
        if info.size != 0 && end.is_none_or(|e| e > info.size) {
            return Err(Error::Usage(format!(
                "cannot {what} `{name}` bytes {offset}..{}: the symbol is {} bytes",
                offset.saturating_add(len),
                info.size
            )));
        }
        info.addr.checked_add(offset).ok_or_else(|| {
            Error::Usage(format!("cannot {what} `{name}`: offset {offset} overflows"))
        })
    }

    /// The function containing `addr`, as `(module objects, symbol, offset)`.
    /// The live modules' code, and that of the newest link if it failed once its code was in
    /// place (its constructor crashed): (base, size, objects, functions, inputs with DWARF).
    fn code_ranges(&self) -> impl Iterator<Item = CodeRange<'_>> {
        let live = self.modules.values().map(|m| CodeRange {
            base: m.alloc.base,
            size: m.alloc.size,
            objects: &m.objects,
            functions: &m.functions,
            debug_inputs: &m.debug_inputs,
        });
        let failed = self.failed.iter().map(|f| CodeRange {
            base: f.base,
            size: f.size,
            objects: &f.objects,
            functions: &f.functions,
            debug_inputs: &f.debug_inputs,
        });
        live.chain(failed)
    }

    /// The function containing `addr`, as `(module objects, symbol, offset)`. The code of a
    /// link that failed in its constructors counts until the next link.
    pub fn symbolize(&self, addr: u64) -> Option<(String, String, u64)> {
        for m in self.code_ranges() {
            if addr < m.base || addr - m.base >= m.size {
                continue;
            }
            // Windows of small modules overlap (shared pages): the function decides.
            let i = m.functions.partition_point(|f| f.addr <= addr);
            let Some(f) = i.checked_sub(1).and_then(|i| m.functions.get(i)) else {
                continue;
            };
            if addr < f.addr.saturating_add(f.size.max(1)) {
                return Some((m.objects.join(" "), f.name.clone(), addr - f.addr));
            }
        }
        None
    }

    /// Finds source lines of JIT'd code (of objects with DWARF), for crash reports.
    pub fn source_lines(&self) -> debug::SourceLines<'_> {
        debug::SourceLines::new(
            self.code_ranges()
                .filter(|m| !m.debug_inputs.is_empty())
                .map(|m| (m.base, m.size, m.debug_inputs))
                .collect(),
        )
    }

    /// Every JIT'd function, for crash reports in process (with its line rows: this reads the
    /// DWARF of the inputs that have it).
    pub fn jit_functions(&self) -> Vec<remjit_executor::crash::JitFunction> {
        let mut out = Vec::new();
        for m in self.modules.values() {
            out.extend(jit_functions_of(&m.objects, &m.functions, &m.debug_inputs));
        }
        out
    }

    /// Removes a module: its exit handlers and finalizers run, its unwind tables and TLS are
    /// deregistered, its memory returns to the slab, its symbols leave the session (a
    /// definition it shadowed becomes visible again) and its COMDAT groups are released.
    ///
    /// Removing a module that live modules depend on (they call its functions, use its data,
    /// or share its copy of a COMDAT group) is refused: the error names those modules, to be
    /// removed first (newest first). Nothing changes then. The newest module is never used
    /// by another, so removing modules in reverse order of linking always works.
    pub fn remove_module(&mut self, id: ModuleId) -> Result<()> {
        if !self.modules.contains_key(&id) {
            return Err(Error::Usage(format!("no module {id}")));
        }
        let users = self.module_users(id);
        if !users.is_empty() {
            let list: Vec<String> = users.iter().map(|&u| self.describe(u)).collect();
            return Err(Error::Usage(format!(
                "cannot remove {}: used by {}; remove those first",
                self.describe(id),
                list.join(", ")
            )));
        }
        let Some(m) = self.modules.remove(&id) else {
            return Err(Error::Usage(format!("no module {id}")));
        };
        for name in &m.exports {
            self.undefine(name, id);
        }
        for g in &m.comdats {
            self.comdats.remove(g);
        }
        for name in &m.comdat_symbols {
            self.comdat_symbols.remove(name);
        }
        // Callers re-pointed before the code goes.
        let redirected = self.refresh(&m.exports);
        let exec = self.executor.as_ref();
        let deregistered = (self.gdb).remove(exec, id.0, &debug_inputs_of(&self.modules));
        let freed = self.slab.deallocate(&[m.alloc]);
        redirected.and(deregistered).and(freed)
    }

    /// Drops `id`'s definition of `name`; the one below on the stack becomes visible once
    /// the name is [`Session::refresh`]ed.
    fn undefine(&mut self, name: &[u8], id: ModuleId) {
        let Some(stack) = self.defs.get_mut(name) else {
            return;
        };
        stack.retain(|d| d.0 != id);
        if stack.is_empty() {
            self.defs.remove(name);
        }
    }

    /// For a program's end: runs every exit handler JIT'd code registered, then the modules'
    /// finalizers, newest module first. Memory stays mapped (stdio may still point into it).
    pub fn run_exit(&mut self) -> Result<()> {
        let mut fns = Vec::new();
        for m in self.modules.values_mut().rev() {
            if !m.finalized_for_exit {
                m.finalized_for_exit = true;
                fns.extend_from_slice(&m.finalizers);
            }
        }
        self.executor.run_exit(&fns)
    }

    /// The slab's reservations (start, size): all JIT'd memory lies in them.
    pub fn reservations(&self) -> Vec<(u64, u64)> {
        self.slab.reservations()
    }
}

/// The inputs with DWARF of the live modules, by their ids' numbers (for [`GdbGroups`]).
fn debug_inputs_of<'a>(
    modules: &'a BTreeMap<ModuleId, Module>,
) -> impl Fn(u64) -> &'a [debug::DebugInput] + 'a {
    move |k| {
        modules
            .get(&ModuleId(k))
            .map_or(&[][..], |m| &m.debug_inputs)
    }
}

/// A module's code, for naming addresses in crash reports.
struct CodeRange<'a> {
    base: u64,
    size: u64,
    objects: &'a [String],
    functions: &'a [link::FunctionSymbol],
    debug_inputs: &'a [debug::DebugInput],
}

/// The in-process crash handler's entries for one module's functions, with their line rows.
fn jit_functions_of(
    objects: &[String],
    functions: &[link::FunctionSymbol],
    debug_inputs: &[debug::DebugInput],
) -> Vec<remjit_executor::crash::JitFunction> {
    let module: std::sync::Arc<str> = objects.join(" ").into();
    let mut lines = debug::function_lines(functions, debug_inputs);
    functions
        .iter()
        .map(|f| remjit_executor::crash::JitFunction {
            start: f.addr,
            end: f.addr.saturating_add(f.size.max(1)),
            name: f.name.clone(),
            module: module.clone(),
            lines: lines.remove(&f.addr).unwrap_or_default(),
        })
        .collect()
}
