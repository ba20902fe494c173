//! The REPL engine behind `remjit repl`: C or C++ cells in; their output, values, diagnostics
//! and crash reports out. Each cell is compiled by the system compiler into an object and
//! linked as its own module of a [`Session`]; declarations are carried to later cells in a
//! prelude; when a cell kills the executor, a fresh one gets every earlier cell again.
//!
//! ```no_run
//! # fn main() -> remjit::Result<()> {
//! use remjit::repl::{Event, ExecutorSpec, Lang, Repl, ReplOptions};
//! let mut repl = Repl::new(ReplOptions::new(Lang::C), ExecutorSpec::InProcess)?;
//! repl.eval("int x = 6;");
//! let out = repl.eval("x * 7");
//! assert_eq!(out.events, vec![Event::Value("(int) 42".into())]);
//! # Ok(()) }
//! ```

pub mod exec;
pub mod lex;
pub mod split;

mod batch;
mod compile;
mod context;
mod save;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::executor::RetKind;
use crate::remote::Ending;
use crate::{ModuleId, Session, SessionOptions};

pub use compile::{Compiler, Pending, Prelude};
pub use context::Context;
pub use exec::{ExecutorSpec, Running};
pub use split::{Item, ItemKind, Known, Lang};

/// How a REPL behaves.
#[derive(Debug, Clone)]
pub struct ReplOptions {
    /// C or C++.
    pub lang: Lang,
    /// The compiler (default `$CC`/`$CXX`, else gcc/g++).
    pub compiler: Option<String>,
    /// Extra compiler flags (`-Xcc`).
    pub compile_flags: Vec<String>,
    /// Library directories (`-L`).
    pub library_dirs: Vec<PathBuf>,
    /// Libraries (`-l`), loaded at start and after each restart.
    pub libraries: Vec<String>,
    /// After a crash, run the earlier cells' statements again (off: restart empty).
    pub replay: bool,
}

impl ReplOptions {
    /// The defaults for `lang`.
    pub fn new(lang: Lang) -> ReplOptions {
        ReplOptions {
            lang,
            compiler: None,
            compile_flags: Vec::new(),
            library_dirs: Vec::new(),
            libraries: Vec::new(),
            replay: true,
        }
    }
}

/// Where a cell's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CellTimes {
    /// Splitting, writing and compiling.
    pub compile: Duration,
    /// Of which in the compiler's processes (the rest is the REPL's own share).
    pub compiler: Duration,
    /// Linking the object.
    pub link: Duration,
    /// Running the statements and reading the value back.
    pub run: Duration,
}

/// Something a cell produced, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The value of the final expression, e.g. `(int) 42` (for stdout).
    Value(String),
    /// Compiler diagnostics, in the user's cell and line numbers (for stderr).
    Diagnostics(String),
    /// An error: the cell was dropped (for stderr).
    Error(String),
    /// How the executor died, and where (for stderr).
    Crash(String),
    /// What the REPL did about it, e.g. `executor restarted; 12 cells replayed in 84 ms`.
    Note(String),
}

/// What one cell produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Values, diagnostics, reports, in order.
    pub events: Vec<Event>,
    /// The cell was kept (compiled, linked, ran).
    pub ok: bool,
    /// Where its time went.
    pub times: CellTimes,
}

/// A cell that compiled, linked and ran.
struct CellRecord {
    number: u32,
    items: Vec<Item>,
    /// Its object and module (none for a cell that only declares).
    object: Option<Arc<Vec<u8>>>,
    module: Option<ModuleId>,
    /// The generated function running its statements.
    entry: Option<String>,
    /// The first cell of a unit of several: the unit's source (its module is this cell's).
    unit: Option<Arc<batch::UnitSource>>,
    /// The names withdrawn from its module by `%undo` of later cells of its unit.
    retracted: Vec<String>,
}

/// Names the support module defines.
const SUPPORT_OBJECT: &str = "remjit-repl-support.o";

/// A REPL session.
pub struct Repl {
    options: ReplOptions,
    spec: ExecutorSpec,
    running: Running,
    session: Session,
    compiler: Compiler,
    support: Arc<Vec<u8>>,
    cells: Vec<CellRecord>,
    ctx: Context,
    /// The cells that arrived, planned into units, compiling while the current one runs.
    plan: batch::Plan,
    /// The executor died and none could be started again.
    lost: bool,
    next_cell: u32,
    /// Libraries `%lib` added.
    extra_libraries: Vec<String>,
    /// The support module's memory, where a restart links it again.
    support_base: Option<u64>,
}

/// Where the memory of a session that died lay: a restart links everything at the same
/// addresses when the fresh executor has them free.
struct OldPlaces {
    layout: crate::Layout,
    support: Option<u64>,
    /// How many modules (or stub blocks) landed elsewhere.
    moved: usize,
}

impl OldPlaces {
    /// Links the pending inputs at `base` (when known); counts a module that landed elsewhere.
    fn link(&mut self, session: &mut Session, base: Option<u64>) -> Result<ModuleId> {
        let Some(base) = base else {
            return session.link();
        };
        let m = session.link_at(base)?;
        if session.module_base(m) != Some(base) {
            self.moved += 1;
        }
        Ok(m)
    }
}

impl Repl {
    /// Starts a REPL: an executor, a session and the support module.
    pub fn new(options: ReplOptions, spec: ExecutorSpec) -> Result<Repl> {
        let compiler = Compiler::new(
            options.lang,
            options.compiler.clone(),
            &options.compile_flags,
        )?;
        let support = Arc::new(compiler.support_object()?);
        let running = spec.start()?;
        let session = Self::start_session(&running, &options, &support, &[], None)?;
        exec::route_interrupts(Some(&running));
        let support_base = session
            .modules()
            .first()
            .and_then(|&m| session.module_base(m));
        Ok(Repl {
            options,
            spec,
            running,
            session,
            compiler,
            support,
            cells: Vec::new(),
            ctx: Context::default(),
            plan: Default::default(),
            lost: false,
            next_cell: 1,
            extra_libraries: Vec::new(),
            support_base,
        })
    }

    /// A session over `running` with the support module and the libraries linked; with `old`,
    /// at the addresses of the session before.
    fn start_session(
        running: &Running,
        options: &ReplOptions,
        support: &Arc<Vec<u8>>,
        extra: &[String],
        old: Option<&mut OldPlaces>,
    ) -> Result<Session> {
        let session_options = SessionOptions {
            library_dirs: options.library_dirs.clone(),
            // Recovery re-links every cell at its earlier address: pages of its own each.
            share_pages: false,
            ..SessionOptions::default()
        };
        let mut session = Session::with_executor(running.executor(), session_options)?;
        session.set_program_args(&["remjit-repl".to_string()])?;
        for lib in options.libraries.iter().chain(extra) {
            session.add_library(lib)?;
        }
        session.add_object_bytes(SUPPORT_OBJECT, support.to_vec());
        match old {
            Some(old) => {
                if !session.adopt_layout(&old.layout)? {
                    old.moved += 1;
                }
                let base = old.support;
                old.link(&mut session, base)?;
            }
            None => {
                session.link()?;
            }
        }
        Ok(session)
    }

    /// The session underneath.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The executor running the code.
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// How many cells are live.
    pub fn cell_count(&self) -> usize {
        self.cells.len()
    }

    /// The number the next cell gets.
    pub fn next_cell(&self) -> u32 {
        self.next_cell
    }

    /// Evaluates one cell.
    pub fn eval(&mut self, src: &str) -> Outcome {
        self.eval_ahead(src, None)
    }

    /// Evaluates one cell and, meanwhile, compiles `next` (the cell that will follow) on the
    /// assumption that this one is kept ([`Repl::eval_queued`] with one cell queued).
    pub fn eval_ahead(&mut self, src: &str, next: Option<&str>) -> Outcome {
        let next: Vec<String> = next.into_iter().map(str::to_string).collect();
        self.eval_queued(src, &next)
    }

    /// Evaluates one cell; `next` are the cells that arrived after it (to be evaluated next,
    /// in order). Those that can go together are compiled as one translation unit, ahead,
    /// on the assumption that the cells before them are kept; a later [`Repl::eval_queued`]
    /// of the next cell uses that work if the assumption held.
    pub fn eval_queued(&mut self, src: &str, next: &[String]) -> Outcome {
        let mut out = Outcome::default();
        let number = self.next_cell;
        let lang = self.options.lang;
        let t0 = Instant::now();
        let mut items = match self.plan.take(src, number, self.ctx.generation) {
            Some(items) => items,
            None => {
                let mut items = split::split(src, lang, &self.ctx.known);
                if items.is_empty() {
                    out.ok = true;
                    return out;
                }
                split::bind_structured(&mut items, number, lang, &self.ctx.known);
                if let Some(why) = split::refusal(&items, lang) {
                    self.next_cell += 1;
                    out.events
                        .push(Event::Error(format!("cell {number}:{why}")));
                    return out;
                }
                let first = (number, src, items.clone());
                self.plan = batch::Plan::new(&self.ctx, lang, first, next);
                self.plan.take(src, number, self.ctx.generation);
                items
            }
        };
        self.next_cell += 1;
        let Some(linked) = self.compile_and_link(number, &mut items, &mut out, t0) else {
            return out;
        };
        let (object, module) = (linked.object, linked.module);
        let t2 = Instant::now();
        self.name_auto_types(number, &mut items);
        let has_statements = items
            .iter()
            .any(|i| matches!(i.kind, ItemKind::Statement | ItemKind::Expression) || has_inits(i));
        let entry = has_statements.then(|| entry_name(number));
        let has_value = items.iter().any(|i| i.kind == ItemKind::Expression);
        let ran = match &entry {
            Some(e) => self.run_cell(number, e, has_value),
            None => Ok(None),
        };
        out.times.run = t2.elapsed();
        match ran {
            Ok(value) => {
                out.events.extend(value.map(Event::Value));
                self.ctx.absorb(number, &items, lang);
                self.cells.push(CellRecord {
                    number,
                    items,
                    object,
                    module,
                    entry,
                    unit: linked.unit,
                    retracted: Vec::new(),
                });
                out.ok = true;
            }
            Err(e) => {
                self.trim_unit(number);
                if !self.crashed(number, e, &mut out.events) {
                    if let Some(m) = module {
                        let _ = self.session.remove_module(m);
                    }
                }
            }
        }
        out
    }

    /// C++ `auto` variables: their type names, as the compiler spelled them in the cell's
    /// `__remjit_type_N_name` strings, make their `extern` declarations for later cells (not
    /// for unnameable types: lambdas, unnamed classes).
    fn name_auto_types(&self, number: u32, items: &mut [Item]) {
        for item in items.iter_mut() {
            let ItemKind::Variable(v) = &mut item.kind else {
                continue;
            };
            if self.options.lang != Lang::Cxx || !v.extern_decl.is_empty() {
                continue;
            }
            let mut decls = Vec::new();
            for (name, _) in &v.names {
                match self.auto_type(&compile::auto_type_symbol(number, name)) {
                    // An array or function type (`int (&)[2]`) has no `T name` spelling.
                    Some(ty) if ty.contains(['(', '[']) => {
                        decls.push(format!("extern __typeof__({ty}) {name};"))
                    }
                    Some(ty) => decls.push(format!("extern {ty} {name};")),
                    None => {
                        decls.clear();
                        break;
                    }
                }
            }
            v.extern_decl = decls.join(" ");
        }
    }

    /// The type named by a `__PRETTY_FUNCTION__` string the pointer `symbol` points to.
    fn auto_type(&self, symbol: &str) -> Option<String> {
        let p = self.session.read(symbol, 0, 8).ok()?;
        let addr = u64::from_le_bytes(p.try_into().ok()?);
        // The string may end near the end of readable memory: shorter reads then.
        let mut text = [512, 128, 64]
            .iter()
            .find_map(|&n| self.session.read_memory(addr, n).ok())?;
        text.truncate(text.iter().position(|&b| b == 0)?);
        let text = String::from_utf8(text).ok()?;
        let ty = text.split_once("T = ")?.1.strip_suffix(']')?.trim();
        let unnameable = ["lambda", "{anonymous}", "<unnamed", "(anonymous"];
        (!ty.is_empty() && !unnameable.iter().any(|u| ty.contains(u))).then(|| ty.to_string())
    }

    /// Runs a cell's statements; reads its value back.
    fn run_cell(&self, number: u32, entry: &str, has_value: bool) -> Result<Option<String>> {
        let _ = number;
        self.call(entry)?;
        if !has_value {
            return Ok(None);
        }
        let value = self.read_value()?;
        Ok((!value.is_empty()).then(|| tidy_type_names(&value)))
    }

    /// Calls a function of the cells or the support module.
    fn call(&self, name: &str) -> Result<()> {
        call(&self.session, name)
    }

    /// The value buffer of the support module, read from the executor (one read, also over
    /// TCP), up to its NUL.
    fn read_value(&self) -> Result<String> {
        let mut bytes = self.session.read("__remjit_vbuf", 0, VALUE_BUFFER)?;
        if let Some(end) = bytes.iter().position(|&b| b == 0) {
            bytes.truncate(end);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A cell's call failed: if the executor died, report how and start a fresh one (true).
    fn crashed(&mut self, number: u32, e: Error, events: &mut Vec<Event>) -> bool {
        let ending = self
            .running
            .remote()
            .and_then(|r| exec::describe_ending(&self.session, r));
        let Some((ending, text)) = ending else {
            events.push(Event::Error(format!("cell {number}: {e}")));
            return false;
        };
        let text = match ending {
            Ending::Signaled(libc::SIGINT, _) => "interrupted".to_string(),
            // Over TCP, where all we see is the connection closing.
            Ending::Unknown if exec::take_interrupt() => "interrupted".to_string(),
            _ => text,
        };
        events.push(Event::Crash(format!("cell {number}: {text}")));
        match self.restart(self.options.replay) {
            Ok(note) => events.push(Event::Note(note)),
            Err(e) if self.options.replay && self.running.remote().is_some() => {
                // Replaying failed (an earlier cell crashes this time?): start empty.
                events.push(Event::Error(format!("replaying the cells failed: {e}")));
                match self.restart(false) {
                    Ok(note) => events.push(Event::Note(note)),
                    Err(e) => self.lost(e, events),
                }
            }
            Err(e) => self.lost(e, events),
        }
        true
    }

    /// No executor could be started: the session is over.
    fn lost(&mut self, e: Error, events: &mut Vec<Event>) {
        let hint = match self.spec {
            ExecutorSpec::Connect { .. } => {
                " (after a crash the REPL connects again: start the executor with \
                 `remjit-executor listen=... keep-listening`, which serves each connection in \
                 a process of its own)"
            }
            _ => "",
        };
        events.push(Event::Error(format!(
            "cannot restart the executor: {e}{hint}"
        )));
        self.lost = true;
    }

    /// Whether the executor is gone for good (it died and none could be started again).
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Starts a fresh executor; with `replay`, links every live cell again and runs their
    /// statements with output suppressed, else starts empty. Says what it did.
    pub fn restart(&mut self, replay: bool) -> Result<String> {
        let t = Instant::now();
        exec::route_interrupts(None);
        if let Some(r) = self.running.remote() {
            r.shutdown();
        }
        let mut old = OldPlaces {
            layout: self.session.layout(),
            support: self.support_base,
            moved: 0,
        };
        let bases: Vec<Option<u64>> = (self.cells.iter())
            .map(|c| c.module.and_then(|m| self.session.module_base(m)))
            .collect();
        self.running = self.spec.start()?;
        exec::route_interrupts(Some(&self.running));
        self.lost = false;
        let places = replay.then_some(&mut old);
        self.session = Self::start_session(
            &self.running,
            &self.options,
            &self.support,
            &self.extra_libraries,
            places,
        )?;
        let first = self.session.modules().first().copied();
        self.support_base = first.and_then(|m| self.session.module_base(m));
        if !replay {
            self.cells.clear();
            self.ctx = self.ctx.rebuilt(std::iter::empty(), self.options.lang);
            return Ok("executor restarted empty".into());
        }
        let quiet = self.cells.iter().any(|c| c.entry.is_some());
        if quiet {
            self.call("__remjit_quiet_on")?;
        }
        let mut replayed = 0;
        for (c, base) in self.cells.iter_mut().zip(bases) {
            // A later cell of a unit has its code in the unit's module.
            if let Some(o) = &c.object {
                self.session
                    .add_object_bytes(&format!("cell {}", c.number), o.to_vec());
                let m = old.link(&mut self.session, base)?;
                // The same object at the same address, less the undone cells' names (those
                // it still defines: a unit trimmed after a crash may define fewer).
                let defined = self.session.module_exports(m);
                let gone: Vec<&str> = (c.retracted.iter())
                    .filter(|n| defined.contains(n))
                    .map(String::as_str)
                    .collect();
                self.session.retract(m, &gone)?;
                c.module = Some(m);
            }
            if let Some(e) = &c.entry {
                call(&self.session, e)?;
                replayed += 1;
            }
        }
        if quiet {
            self.call("__remjit_quiet_off")?;
        }
        let moved = match old.moved {
            0 => String::new(),
            n => format!(
                " ({n} modules or stub blocks at new addresses: the new executor could not give \
                 the old ones, so pointers from before the restart into them are stale)"
            ),
        };
        Ok(format!(
            "executor restarted; {} cells relinked, {replayed} replayed in {} ms{moved}",
            self.cells.len(),
            t.elapsed().as_millis()
        ))
    }

    /// `%undo`: removes the last cell (its module, its declarations). Says which.
    pub fn undo(&mut self) -> Result<String> {
        let Some(last) = self.cells.last() else {
            return Err(Error::Usage("nothing to undo".into()));
        };
        let n = last.number;
        if let Some(m) = last.module {
            self.session.remove_module(m)?;
        } else if let Some(first) = self.unit_of(n) {
            self.retract_unit_cell(first, n)?;
        }
        self.cells.pop();
        let live = self.cells.iter().map(|c| (c.number, c.items.as_slice()));
        self.ctx = self.ctx.rebuilt(live, self.options.lang);
        Ok(format!("cell {n} removed"))
    }

    /// The live cell whose module holds cell `number`, a later cell of its unit.
    fn unit_of(&self, number: u32) -> Option<usize> {
        let k = self.cells.iter().rposition(|c| c.unit.is_some())?;
        let c = &self.cells[k];
        (c.number != number && c.unit.as_ref()?.has(number)).then_some(k)
    }

    /// `%lib NAME`: loads a library for later cells (and after restarts).
    pub fn add_library(&mut self, name: &str) -> Result<()> {
        self.session.add_library(name)?;
        self.extra_libraries.push(name.to_string());
        Ok(())
    }

    /// `%save FILE`: the live cells as one program that compiles natively.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let items: Vec<(u32, &Item)> = self
            .cells
            .iter()
            .flat_map(|c| c.items.iter().map(move |i| (c.number, i)))
            .collect();
        let text = save::program(&items, self.options.lang);
        std::fs::write(path, text).map_err(|error| Error::Io {
            path: path.display().to_string(),
            error,
        })
    }

    /// Ends the session (the executor too).
    pub fn shutdown(&self) {
        exec::route_interrupts(None);
        if let Some(r) = self.running.remote() {
            r.shutdown();
        }
    }
}

/// The size of the support module's value buffer (`__remjit_vbuf`).
const VALUE_BUFFER: u64 = 4096;

/// Calls `int name(void)` of a cell or the support module.
fn call(session: &Session, name: &str) -> Result<()> {
    session.call(name, &[], RetKind::I32).map(|_| ())
}

fn entry_name(number: u32) -> String {
    format!("__remjit_cell_{number}")
}

fn has_inits(item: &Item) -> bool {
    matches!(&item.kind, ItemKind::Variable(v) if !v.inits.is_empty())
}

/// Shorter spellings of the type names libstdc++'s templates and gcc print, in the value's
/// leading `(type)`.
fn tidy_type_names(s: &str) -> String {
    const NAMES: &[(&str, &str)] = &[
        (
            "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >",
            "std::string",
        ),
        ("std::__cxx11::basic_string<char>", "std::string"),
        ("std::basic_string<char>", "std::string"),
        ("std::__cxx11::", "std::"),
        ("long long unsigned int", "unsigned long long"),
        ("long long int", "long long"),
        ("long unsigned int", "unsigned long"),
        ("short unsigned int", "unsigned short"),
        ("long int", "long"),
        ("short int", "short"),
    ];
    let Some(rest) = s.strip_prefix('(') else {
        return s.to_string();
    };
    // The type ends at the `) ` before the value (types may hold parentheses).
    let Some(end) = rest.find(") ") else {
        return s.to_string();
    };
    let mut ty = rest[..end].to_string();
    for (long, short) in NAMES {
        ty = ty.replace(long, short);
    }
    format!("({ty}{}", &rest[end..])
}
