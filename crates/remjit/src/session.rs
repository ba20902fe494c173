//! The library API: a session to which inputs are added and linked module by module, later
//! modules using the symbols of earlier ones, as a REPL or a JIT compiler needs.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::executor::{Executor, InProcessExecutor};
use crate::input::{self, InputFile, InputKind, LibrarySearch};
use crate::link::{self, FunctionSymbol, LinkEnv, LinkInput, LinkTimes, SessionSymbol};
use crate::memory::{FinalizedAlloc, SlabAllocator};

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
        }
    }
}

/// A module of a session: what one [`Session::link`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleId(pub u64);

struct Module {
    alloc: FinalizedAlloc,
    exports: Vec<Vec<u8>>,
    functions: Vec<FunctionSymbol>,
    finalizers: Vec<u64>,
    objects: Vec<String>,
    finalized_for_exit: bool,
}

/// A JIT session over one executor.
pub struct Session {
    executor: Arc<dyn Executor>,
    slab: SlabAllocator,
    options: SessionOptions,
    symbols: HashMap<Vec<u8>, SessionSymbol>,
    overrides: HashMap<Vec<u8>, u64>,
    absolutes: HashMap<Vec<u8>, u64>,
    comdats: HashSet<Vec<u8>>,
    modules: BTreeMap<ModuleId, Module>,
    pending: Vec<LinkInput>,
    pending_archives: Vec<LinkInput>,
    next_id: u64,
    search: LibrarySearch,
    last_times: LinkTimes,
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
        let slab = SlabAllocator::new(executor.mapper(), options.slab_size, true);
        let search = LibrarySearch {
            user_dirs: options.library_dirs.clone(),
        };
        Ok(Session {
            executor,
            slab,
            options,
            symbols: HashMap::new(),
            overrides,
            absolutes,
            comdats: HashSet::new(),
            modules: BTreeMap::new(),
            pending: Vec::new(),
            pending_archives: Vec::new(),
            next_id: 1,
            search,
            last_times: LinkTimes::default(),
        })
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

    fn add_input(&mut self, f: InputFile, path: &Path, depth: u32) -> Result<()> {
        match input::classify(&f.bytes) {
            InputKind::Object => self.pending.push(LinkInput::Object(f)),
            InputKind::Archive => self.pending_archives.push(LinkInput::Archive(f)),
            InputKind::SharedLibrary => self.dlopen(path)?,
            InputKind::Lto => return Err(Error::Lto(f.name.to_string())),
            InputKind::LinkerScript if depth < 8 => {
                let text = String::from_utf8_lossy(&f.bytes).into_owned();
                for name in input::linker_script_inputs(&text) {
                    let p = self.search.find_script_input(&f.name, &name)?;
                    let g = input::map_file(&p)?;
                    self.add_input(g, &p, depth + 1)?;
                }
            }
            InputKind::LinkerScript | InputKind::Unknown => {
                return Err(Error::UnknownInput(f.name.to_string()))
            }
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

    /// Sets the `argc`/`argv` that constructors and `main` see (argv[0] first).
    pub fn set_program_args(&self, args: &[String]) -> Result<()> {
        self.executor.set_program_args(args)
    }

    /// Links everything added since the last link into one module and finalizes it
    /// (constructors run unless disabled).
    pub fn link(&mut self) -> Result<ModuleId> {
        let mut inputs = std::mem::take(&mut self.pending);
        inputs.append(&mut self.pending_archives);
        if !inputs.iter().any(|i| matches!(i, LinkInput::Object(_))) {
            return Err(Error::Usage(
                "nothing to link: no object files given".into(),
            ));
        }
        let env = LinkEnv {
            session: &self.symbols,
            overrides: &self.overrides,
            absolutes: &self.absolutes,
            phony_externals: self.options.phony_externals,
            executor: self.executor.as_ref(),
            slab: &self.slab,
            run_initializers: self.options.run_initializers,
            required_entry: self.options.required_entry.as_deref(),
        };
        let m =
            link::link(&inputs, &mut self.comdats, &env).map_err(|e| self.placement_cause(e))?;
        self.last_times = m.times;
        let id = ModuleId(self.next_id);
        self.next_id += 1;
        let mut exports = Vec::with_capacity(m.exports.len());
        for (name, sym) in m.exports {
            self.symbols.insert(name.clone(), sym);
            exports.push(name);
        }
        self.modules.insert(
            id,
            Module {
                alloc: m.alloc,
                exports,
                functions: m.functions,
                finalizers: m.finalizers,
                objects: m.objects,
                finalized_for_exit: false,
            },
        );
        Ok(id)
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

    /// Stage timings of the last link.
    pub fn last_link_times(&self) -> LinkTimes {
        self.last_times
    }

    /// The address of an exported symbol of any module.
    pub fn lookup(&self, name: &str) -> Option<u64> {
        self.symbols.get(name.as_bytes()).map(|s| s.addr)
    }

    fn entry(&self, name: &str) -> Result<u64> {
        match self.symbols.get(name.as_bytes()) {
            Some(s) if s.addr != 0 => Ok(s.addr),
            _ => Err(Error::SymbolNotFound(format!(
                "{name} (no linked module defines it)"
            ))),
        }
    }

    /// Runs `entry` as `main` with `args` (argv[0] first) and returns its status.
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

    /// The function containing `addr`, as `(module objects, symbol, offset)`.
    pub fn symbolize(&self, addr: u64) -> Option<(String, String, u64)> {
        for m in self.modules.values() {
            if addr < m.alloc.base || addr >= m.alloc.base + m.alloc.size {
                continue;
            }
            let i = m.functions.partition_point(|f| f.addr <= addr);
            let f = m.functions.get(i.checked_sub(1)?)?;
            if addr < f.addr.saturating_add(f.size.max(1)) {
                return Some((m.objects.join(" "), f.name.clone(), addr - f.addr));
            }
        }
        None
    }

    /// Every JIT'd function, for crash reports.
    pub fn jit_functions(&self) -> Vec<remjit_executor::crash::JitFunction> {
        let mut out = Vec::new();
        for m in self.modules.values() {
            let module = m.objects.join(" ");
            out.extend(
                m.functions
                    .iter()
                    .map(|f| remjit_executor::crash::JitFunction {
                        start: f.addr,
                        end: f.addr.saturating_add(f.size.max(1)),
                        name: f.name.clone(),
                        module: module.clone(),
                    }),
            );
        }
        out
    }

    /// Removes a module: its exit handlers and finalizers run, its unwind tables and TLS are
    /// deregistered, its memory returns to the slab, and its symbols leave the session.
    pub fn remove_module(&mut self, id: ModuleId) -> Result<()> {
        let m = self
            .modules
            .remove(&id)
            .ok_or_else(|| Error::Usage(format!("no module {}", id.0)))?;
        for name in &m.exports {
            self.symbols.remove(name);
        }
        self.slab.deallocate(&[m.alloc])
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
