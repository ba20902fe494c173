//! Cells that arrived together (a script through a pipe) compiled a unit at a time: several
//! consecutive cells in one translation unit, one compiler process, one object and module, each
//! cell's statements still in a generated function of its own, run in cell order.
//!
//! A unit keeps the REPL's behaviour because of what it may hold (see [`Builder::accepts`]):
//! - no cell redefines a name (the prelude would have to give way in the middle of it), nor
//!   defines one an earlier cell of the unit names (it would bind there, where one cell at a
//!   time finds it undefined);
//! - no cell names a function an earlier cell of the unit defines: a call inside one module
//!   binds directly, and a later redefinition must reach it (through the session's stub, as
//!   between modules);
//! - in C++, no cell after one that runs statements defines variables (a module's
//!   constructors run when it is linked, before the unit's first cell runs);
//! - a C++ `auto` variable ends the plan (later cells need its type, known once it ran).
//!
//! A unit that fails to compile, compiles with warnings or fails to link is split: the cell at
//! fault (the first its diagnostics name) is compiled alone, so its diagnostics are exactly
//! those it had before. Cells run one by one; a cell that fails ends the unit (the cells after
//! it are planned again when they come, against the context the failure left). The unit's module belongs to its first
//! cell's record; after a crash, the object kept for replaying is compiled again without the
//! cells that were not kept, when they defined anything. `%undo` of a later cell of a unit
//! compiles the unit again without it: what the module defines and the new object does not
//! leaves the session ([`crate::Session::retract`]), the new object is what a recovery links;
//! the code stays in place until the unit's first cell is undone (its module removed).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::compile::{Compiler, Pending, Prelude, UnitCell};
use super::context::{defined_names, last_part, Context};
use super::split::{self, Item, ItemKind, Lang};
use super::{Event, ModuleId, Outcome, Repl};
use crate::error::{Error, Result};

/// The most cells in one unit.
const MAX_UNIT: usize = 48;
/// The most cells planned ahead.
const MAX_PLAN: usize = 256;

/// A cell planned into a unit.
pub(super) struct PlannedCell {
    src: String,
    number: u32,
    /// The context generation it was planned for.
    generation: u64,
    items: Vec<Item>,
    /// In C, what names its value's type.
    show: Option<String>,
}

/// Where a unit's compile is.
enum State {
    Idle,
    Running(Pending),
    /// Linked as the module of its first cell.
    Linked,
}

/// Consecutive cells compiled together (or one cell alone).
pub(super) struct Unit {
    prelude: Prelude,
    cells: Vec<PlannedCell>,
    /// The next cell to evaluate.
    cursor: usize,
    state: State,
}

/// The cells planned ahead, a unit at a time.
#[derive(Default)]
pub(super) struct Plan {
    units: VecDeque<Unit>,
}

/// What a unit's source needs again after a crash: its prelude and cells.
pub(super) struct UnitSource {
    prelude: Prelude,
    cells: Vec<(u32, Vec<Item>, Option<String>)>,
}

/// The unit being gathered.
struct Builder {
    /// The prelude before its first cell, with that cell's redefinitions given way (later
    /// cells redefine nothing).
    prelude: Prelude,
    cells: Vec<PlannedCell>,
    functions: HashSet<String>,
    /// The words of its cells' sources (a later cell must not define what one names).
    words: HashSet<String>,
    runs: bool,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            prelude: Prelude::default(),
            cells: Vec::new(),
            functions: HashSet::new(),
            words: HashSet::new(),
            runs: false,
        }
    }

    /// Whether a cell (`src`, split into `items` against `ctx`, the context before it) keeps
    /// the REPL's behaviour in this unit.
    fn accepts(&self, src: &str, items: &[Item], ctx: &Context, lang: Lang) -> bool {
        if self.cells.is_empty() {
            return true;
        }
        let functions = items.iter().filter_map(|i| match &i.kind {
            ItemKind::Function { name, .. } => Some(name.clone()),
            _ => None,
        });
        let mut names = defined_names(items, lang).into_iter().chain(functions);
        let named = |n: &String| ctx.defines(n) || self.words.contains(last_part(n));
        let redefines = names.any(|n| named(&n));
        let calls = identifiers(src).any(|w| self.functions.contains(w));
        let constructs = lang == Lang::Cxx && self.runs && !items.iter().all(plain_declaration);
        self.cells.len() < MAX_UNIT && !redefines && !calls && !constructs
    }

    /// Adds a cell; `ctx` is the context before it.
    fn push(&mut self, cell: PlannedCell, ctx: &Context, lang: Lang) {
        if self.cells.is_empty() {
            self.prelude = ctx.prelude_text(&defined_names(&cell.items, lang));
        }
        for i in &cell.items {
            if let ItemKind::Function { name, .. } = &i.kind {
                self.functions.insert(last_part(name).to_string());
            }
        }
        self.runs |= cell.items.iter().any(runs_code);
        // Not `h` of `#include <stdio.h>`.
        let named = cell.items.iter().filter(|i| i.kind != ItemKind::Directive);
        for i in named {
            self.words.extend(identifiers(&i.text).map(str::to_string));
        }
        self.cells.push(cell);
    }

    fn finish(self) -> Unit {
        Unit {
            prelude: self.prelude,
            cells: self.cells,
            cursor: 0,
            state: State::Idle,
        }
    }
}

/// The words of `src` that could name something.
fn identifiers(src: &str) -> impl Iterator<Item = &str> {
    src.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
}

/// Whether an item runs code in the cell's generated function.
fn runs_code(item: &Item) -> bool {
    match &item.kind {
        ItemKind::Statement | ItemKind::Expression => true,
        ItemKind::Variable(v) => !v.inits.is_empty(),
        _ => false,
    }
}

/// A C++ item that constructs nothing when its module is linked: a directive, or a type,
/// alias or template declaration without `static` members.
fn plain_declaration(item: &Item) -> bool {
    match &item.kind {
        ItemKind::Directive | ItemKind::Statement | ItemKind::Expression => true,
        // An out-of-class definition may be a static data member's.
        ItemKind::Function { prototype, .. } => prototype.is_some(),
        ItemKind::Variable(v) => constant_scalars(v),
        ItemKind::Carried => {
            let mut words = identifiers(&item.text);
            let first = words.next().unwrap_or("");
            let kinds = [
                "class", "struct", "union", "enum", "typedef", "using", "template",
            ];
            kinds.contains(&first) && !identifiers(&item.text).any(|w| w == "static")
        }
    }
}

/// Whether a C++ variable definition is of scalars with constant initializers (initialized
/// when loaded, no constructor): `int total = 0;`, `const double k = 2.5, *p = nullptr;`.
fn constant_scalars(v: &split::Variable) -> bool {
    const SCALAR: &[&str] = &[
        "int", "long", "short", "char", "unsigned", "signed", "bool", "float", "double", "const",
    ];
    const VALUES: &[&str] = &["true", "false", "nullptr"];
    let names: Vec<&str> = v.names.iter().map(|n| n.0.as_str()).collect();
    let scalar_types = v.names.iter().all(|(_, t)| {
        t.as_deref()
            .is_some_and(|t| identifiers(t).all(|w| SCALAR.contains(&w)))
    });
    let only_literals = identifiers(&v.definition)
        .all(|w| SCALAR.contains(&w) || VALUES.contains(&w) || names.contains(&w));
    scalar_types && only_literals
}

impl Plan {
    /// Plans cell `number` (`src`, `items`) and the cells that arrived after it (`next`) into
    /// units, each cell against the context as it will be once the cells before it are kept.
    pub(super) fn new(
        ctx: &Context,
        lang: Lang,
        first: (u32, &str, Vec<Item>),
        next: &[String],
    ) -> Plan {
        let (mut number, src, mut items) = first;
        let mut src = src.to_string();
        // The context as the cells before the next one leave it: a copy only when there is a
        // next one (a copy costs what the session's declarations do).
        let mut chain: Option<Context> = None;
        let mut units = VecDeque::new();
        let mut unit = Builder::new();
        let mut rest = next.iter().take(MAX_PLAN);
        loop {
            let now = chain.as_ref().unwrap_or(ctx);
            if !unit.accepts(&src, &items, now, lang) {
                units.push_back(std::mem::replace(&mut unit, Builder::new()).finish());
            }
            let show = now.value_type_expr(&items, lang);
            let generation = now.generation;
            let auto = items
                .iter()
                .any(|i| matches!(&i.kind, ItemKind::Variable(v) if v.extern_decl.is_empty()));
            let cell = PlannedCell {
                src,
                number,
                generation,
                items,
                show,
            };
            unit.push(cell, now, lang);
            // Later cells need an `auto` variable's type, known once its cell ran.
            let Some(next) = rest
                .next()
                .filter(|n| !auto && !n.trim_start().starts_with('%'))
            else {
                break;
            };
            let now = chain.get_or_insert_with(|| ctx.clone());
            let last = unit.cells.last().map(|c| (c.number, &c.items));
            if let Some((n, items)) = last {
                now.absorb(n, items, lang);
            }
            let mut next_items = split::split(next, lang, &now.known);
            split::bind_structured(&mut next_items, number + 1, lang, &now.known);
            if next_items.is_empty() || split::refusal(&next_items, lang).is_some() {
                break;
            }
            (number, src, items) = (number + 1, next.clone(), next_items);
        }
        units.push_back(unit.finish());
        for u in &units {
            let n: Vec<u32> = u.cells.iter().map(|c| c.number).collect();
            tracing::debug!("compile unit of cells {n:?}");
        }
        Plan { units }
    }

    /// Finds cell `number` (`src`, for context `generation`) as the next cell of a unit:
    /// the units before it are dropped (their compiles killed). Its items, or `None` (the plan
    /// is dropped).
    pub(super) fn take(&mut self, src: &str, number: u32, generation: u64) -> Option<Vec<Item>> {
        while let Some(u) = self.units.front() {
            if u.cells.iter().any(|c| c.number == number) {
                break;
            }
            self.units.pop_front();
        }
        let matches = self
            .units
            .front()
            .and_then(|u| u.cells.get(u.cursor))
            .is_some_and(|c| c.number == number && c.src == src && c.generation == generation);
        if !matches {
            self.units.clear();
            return None;
        }
        let u = self.units.front_mut()?;
        u.cursor += 1;
        Some(u.cells[u.cursor - 1].items.clone())
    }

    /// Starts the compiles of the current unit and of those after it while fewer compilers
    /// than cores run (the cells before a unit run meanwhile; its compile rarely waits).
    fn start(&mut self, compiler: &Compiler) {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        // One cell and nothing queued behind: cells come one by one (the head is worth
        // precompiling).
        let alone = self.units.len() == 1;
        let mut running = 0;
        for (k, u) in self.units.iter_mut().enumerate() {
            match &mut u.state {
                State::Running(p) => running += usize::from(p.running()),
                State::Linked => {}
                State::Idle if k > 0 && running >= cores => break,
                State::Idle => {
                    let cells: Vec<UnitCell> = u.cells.iter().map(PlannedCell::unit_cell).collect();
                    let eager = alone && u.cells.len() == 1;
                    u.state = State::Running(compiler.start_unit(&u.prelude, &cells, eager));
                    running += 1;
                }
            }
        }
    }

    /// Splits the current unit, which failed, from its current cell on: the cells before
    /// `culprit` (the cell its diagnostics name first) as a unit again, the culprit alone (the
    /// current cell alone when no later cell is named), the rest as a unit; `ctx` is the
    /// context before the current cell.
    fn split_front(&mut self, ctx: &Context, lang: Lang, culprit: Option<u32>) {
        let Some(u) = self.units.pop_front() else {
            return;
        };
        let mut cells: Vec<PlannedCell> = u
            .cells
            .into_iter()
            .skip(u.cursor.saturating_sub(1))
            .collect();
        let Some(first) = cells.first().map(|c| c.number) else {
            return;
        };
        tracing::debug!("the unit of cell {first} is split at cell {culprit:?}");
        let at = culprit
            .filter(|&n| n > first)
            .and_then(|n| cells.iter().position(|c| c.number == n))
            .unwrap_or(0);
        let mut rest = cells.split_off(at);
        let after = rest.split_off(1.min(rest.len()));
        let mut ctx = ctx.clone();
        let mut units = VecDeque::new();
        for group in [cells, rest, after] {
            if group.is_empty() {
                continue;
            }
            let mut redefined = Vec::new();
            for c in &group {
                redefined.extend(defined_names(&c.items, lang));
            }
            let prelude = ctx.prelude_text(&redefined);
            for c in &group {
                ctx.absorb(c.number, &c.items, lang);
            }
            units.push_back(Unit {
                prelude,
                cells: group,
                cursor: usize::from(units.is_empty()),
                state: State::Idle,
            });
        }
        units.append(&mut self.units);
        self.units = units;
    }
}

/// The cell that diagnostics name first (`cell N:LINE:COL: ...` at the start of a line).
fn first_cell_named(diagnostics: &str) -> Option<u32> {
    diagnostics.lines().find_map(|l| {
        let rest = l.strip_prefix("cell ")?;
        let (n, _) = rest.split_once(':')?;
        n.parse().ok()
    })
}

impl PlannedCell {
    fn unit_cell(&self) -> UnitCell<'_> {
        UnitCell {
            number: self.number,
            items: &self.items,
            show: self.show.as_deref(),
        }
    }
}

/// What became of a cell's unit.
enum Step {
    Linked(Linked),
    Alone,
    Again,
}

/// The object and module a cell got.
pub(super) struct Linked {
    pub object: Option<Arc<Vec<u8>>>,
    pub module: Option<ModuleId>,
    /// The unit's source, for the first cell of a unit of several.
    pub unit: Option<Arc<UnitSource>>,
}

impl Repl {
    /// Compiles (or takes from its unit) and links cell `number`; `None` when it failed (the
    /// events say why). Fills in the compile and link times (from `t0`).
    pub(super) fn compile_and_link(
        &mut self,
        number: u32,
        items: &mut [Item],
        out: &mut Outcome,
        t0: Instant,
    ) -> Option<Linked> {
        loop {
            self.plan.start(&self.compiler);
            match self.link_unit(out, t0) {
                Step::Linked(linked) => return Some(linked),
                Step::Alone => return self.compile_cell(number, items, out, t0),
                Step::Again => {}
            }
        }
    }

    /// The cell's unit, when it has several cells: its module (linked with its first cell),
    /// or `Again` when it failed (it is split); `Alone` for a cell compiled on its own.
    fn link_unit(&mut self, out: &mut Outcome, t0: Instant) -> Step {
        let lang = self.options.lang;
        let Some(u) = self.plan.units.front_mut().filter(|u| u.cells.len() > 1) else {
            return Step::Alone;
        };
        let none = Linked {
            object: None,
            module: None,
            unit: None,
        };
        let pending = match std::mem::replace(&mut u.state, State::Idle) {
            State::Linked => {
                u.state = State::Linked;
                out.times.compile = t0.elapsed();
                return Step::Linked(none);
            }
            State::Running(p) => p,
            State::Idle => {
                self.plan.split_front(&self.ctx, lang, None);
                return Step::Again;
            }
        };
        let name = format!("cell {}", u.cells[0].number);
        self.compiler.take_warnings();
        let compiled = self.compiler.finish(pending);
        let warnings = self.compiler.take_warnings();
        let t1 = Instant::now();
        out.times.compile = t1 - t0;
        out.times.compiler = self.compiler.take_time();
        let object = match compiled {
            Ok(o) if warnings.trim().is_empty() => o.map(Arc::new),
            Ok(_) => {
                self.plan
                    .split_front(&self.ctx, lang, first_cell_named(&warnings));
                return Step::Again;
            }
            Err(d) => {
                self.plan.split_front(&self.ctx, lang, first_cell_named(&d));
                return Step::Again;
            }
        };
        let module = match &object {
            None => None,
            Some(o) => {
                self.session.add_object_bytes(&name, o.to_vec());
                let Ok(m) = self.session.link() else {
                    self.plan.split_front(&self.ctx, lang, None);
                    return Step::Again;
                };
                Some(m)
            }
        };
        out.times.link = t1.elapsed();
        let Some(u) = self.plan.units.front_mut() else {
            return Step::Linked(none);
        };
        u.state = State::Linked;
        let source = UnitSource {
            prelude: u.prelude.clone(),
            cells: (u.cells.iter())
                .map(|c| (c.number, c.items.clone(), c.show.clone()))
                .collect(),
        };
        Step::Linked(Linked {
            unit: object.is_some().then(|| Arc::new(source)),
            object,
            module,
        })
    }

    /// Compiles and links a cell on its own (its compile may have started ahead).
    fn compile_cell(
        &mut self,
        number: u32,
        items: &mut [Item],
        out: &mut Outcome,
        t0: Instant,
    ) -> Option<Linked> {
        let lang = self.options.lang;
        let pending = match self.plan.units.front_mut() {
            Some(u) if u.cells.len() == 1 && u.cells[0].number == number => {
                match std::mem::replace(&mut u.state, State::Idle) {
                    State::Running(p) => Some(p),
                    _ => None,
                }
            }
            _ => None,
        };
        let pending =
            pending.unwrap_or_else(|| self.ctx.start(&self.compiler, number, items, lang));
        // The next unit compiles meanwhile.
        if let Some(u) = self.plan.units.front_mut() {
            u.state = State::Linked;
        }
        self.plan.start(&self.compiler);
        self.compiler.take_time();
        self.compiler.take_warnings();
        let compiled = self
            .ctx
            .finish(&self.compiler, pending, number, items, lang);
        let object = match compiled {
            Ok(o) => {
                let warnings = super::compile::tidy_diagnostics(&self.compiler.take_warnings());
                if !warnings.trim().is_empty() {
                    out.events.push(Event::Diagnostics(warnings));
                }
                o.map(Arc::new)
            }
            Err(diagnostics) => {
                let shown = super::compile::tidy_diagnostics(&diagnostics);
                out.events.push(Event::Diagnostics(shown));
                return None;
            }
        };
        let t1 = Instant::now();
        out.times.compile = t1 - t0;
        out.times.compiler = self.compiler.take_time();
        let module = match &object {
            None => None,
            Some(o) => {
                self.session
                    .add_object_bytes(&format!("cell {number}"), o.to_vec());
                match self.session.link() {
                    Ok(m) => Some(m),
                    Err(e) => {
                        // The linker's messages name the object, "cell N", often first.
                        let e = e.to_string();
                        let named = e.starts_with(&format!("cell {number}:"));
                        let e = if named {
                            e
                        } else {
                            format!("cell {number}: {e}")
                        };
                        out.events.push(Event::Error(e));
                        return None;
                    }
                }
            }
        };
        out.times.link = t1.elapsed();
        Some(Linked {
            object,
            module,
            unit: None,
        })
    }

    /// Cell `number` of a unit was not kept: if a cell of the unit from it on defined
    /// anything, the object kept for replaying (the unit's first cell's) is compiled again
    /// with the cells before it only.
    pub(super) fn trim_unit(&mut self, number: u32) {
        let Some(rec) = self.cells.iter_mut().rev().find(|c| c.unit.is_some()) else {
            return;
        };
        let Some(source) = rec.unit.clone() else {
            return;
        };
        let Some(cut) = source.cells.iter().position(|c| c.0 == number) else {
            return;
        };
        let defines = source.cells[cut..]
            .iter()
            .flat_map(|c| c.1.iter())
            .any(|i| matches!(i.kind, ItemKind::Function { .. } | ItemKind::Variable(_)));
        if cut == 0 || !defines {
            return;
        }
        if let Ok(Some(o)) = self
            .compiler
            .finish(source.start_prefix(&self.compiler, cut))
        {
            rec.object = Some(Arc::new(o));
        }
    }

    /// `%undo` of cell `number`, a later cell of the unit whose module is that of the live
    /// cell at `first`: the unit is compiled again without it (and without the cells after
    /// it, undone before). The names the module defines that the new object does not (the
    /// cell's functions and variables, its generated ones) leave the session; a recovery
    /// links the unit's object at its address and withdraws them again (an object compiled
    /// without the cell would place the earlier cells' code and data elsewhere). The code
    /// stays in place until the unit's first cell is undone and its module removed. No other
    /// module can be bound to those names: the cells linked after this one were undone first.
    pub(super) fn retract_unit_cell(&mut self, first: usize, number: u32) -> Result<()> {
        let rec = &self.cells[first];
        let (Some(source), Some(module)) = (rec.unit.clone(), rec.module) else {
            return Ok(());
        };
        let Some(cut) = source.cells.iter().position(|c| c.0 == number) else {
            return Ok(());
        };
        let failed = |why: String| {
            Error::Usage(format!(
                "cannot undo cell {number}: compiling its unit again without it failed: {why}"
            ))
        };
        let object = self
            .compiler
            .finish(source.start_prefix(&self.compiler, cut))
            .map_err(failed)?;
        let kept = match &object {
            Some(o) => defined_symbols(o).map_err(|e| failed(e.to_string()))?,
            None => HashSet::new(),
        };
        let gone: Vec<String> = (self.session.module_exports(module).into_iter())
            .filter(|n| !kept.contains(n.as_str()))
            .collect();
        let names: Vec<&str> = gone.iter().map(String::as_str).collect();
        self.session.retract(module, &names)?;
        tracing::debug!("cell {number} undone in its unit: {names:?} retracted");
        self.cells[first].retracted.extend(gone);
        Ok(())
    }
}

impl UnitSource {
    /// Starts compiling the unit's cells before the `cut`th.
    fn start_prefix(&self, compiler: &Compiler, cut: usize) -> Pending {
        let cells: Vec<UnitCell> = (self.cells[..cut.min(self.cells.len())].iter())
            .map(|c| UnitCell {
                number: c.0,
                items: &c.1,
                show: c.2.as_deref(),
            })
            .collect();
        compiler.start_unit(&self.prelude, &cells, false)
    }

    /// Whether cell `number` is one of the unit's.
    pub(super) fn has(&self, number: u32) -> bool {
        self.cells.iter().any(|c| c.0 == number)
    }
}

/// The global (and weak) symbols an object defines.
fn defined_symbols(object: &[u8]) -> object::Result<HashSet<String>> {
    use object::{Object, ObjectSymbol};
    let file = object::File::parse(object)?;
    let defined = (file.symbols())
        .filter(|s| s.is_global() && !s.is_undefined())
        .filter_map(|s| s.name().ok().map(str::to_string));
    Ok(defined.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first cell of each unit a script is planned into.
    fn unit_starts(lang: Lang, script: &str) -> Vec<u32> {
        let cells: Vec<String> = script.lines().map(|l| format!("{l}\n")).collect();
        let ctx = Context::default();
        let items = split::split(&cells[0], lang, &ctx.known);
        let plan = Plan::new(&ctx, lang, (1, &cells[0], items), &cells[1..]);
        plan.units.iter().map(|u| u.cells[0].number).collect()
    }

    #[test]
    fn a_unit_ends_before_a_call_of_its_function_or_a_redefinition() {
        let script = "#include <stdio.h>\nint n = 1;\nint f(int x) { return x + n; }\n\
                      n += 1;\nint g(void) { return 2; }\nf(3)\nint n = 5;\nprintf(\"%d\\n\", n);\n";
        assert_eq!(unit_starts(Lang::C, script), vec![1, 6, 7]);
    }

    /// `h` is named (declared and called) before a later cell defines it: that cell starts a
    /// unit, so the call does not bind inside the unit (one cell at a time it fails to link).
    #[test]
    fn a_unit_ends_before_a_definition_of_a_name_it_mentions() {
        let script = "#include <stdio.h>\nint h(void);\nint k = 2;\nh()\n\
                      int h(void) { return 5; }\nh()\nint stdio = 1;\n";
        assert_eq!(unit_starts(Lang::C, script), vec![1, 5, 6]);
    }

    #[test]
    fn cxx_constructors_do_not_follow_statements_in_a_unit() {
        let script = "#include <string>\nstd::string s = \"a\";\ns += \"b\";\nint k = 3;\n\
                      std::string t = s;\nk + 1\n";
        assert_eq!(unit_starts(Lang::Cxx, script), vec![1, 5]);
    }

    #[test]
    fn the_plan_stops_after_an_auto_variable_and_at_a_command() {
        let script = "int a = 1;\nauto b = a;\nint c = 2;\n";
        let starts = unit_starts(Lang::Cxx, script);
        assert_eq!(starts, vec![1]);
        let cells = ["int a = 1;\n", "%undo\n", "a\n"].map(String::from);
        let ctx = Context::default();
        let items = split::split(&cells[0], Lang::C, &ctx.known);
        let plan = Plan::new(&ctx, Lang::C, (1, &cells[0], items), &cells[1..]);
        assert_eq!(plan.units.len(), 1);
        assert_eq!(plan.units[0].cells.len(), 1);
    }

    #[test]
    fn diagnostics_name_their_first_cell() {
        let d =
            "cell 3: In function ‘__remjit_body_3’:\ncell 3:1:9: error: x\ncell 5:1:1: error: y\n";
        assert_eq!(first_cell_named(d), Some(3));
        assert_eq!(first_cell_named("<remjit>:1:2: error: z\n"), None);
    }
}
