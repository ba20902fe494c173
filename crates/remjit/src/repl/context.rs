//! What compiling a cell needs from the cells before it: the prelude of their declarations and
//! what the splitter and the value printer know (type names, variables and their types). It is
//! plain data, so that the next cell can be compiled ahead against a copy that already holds
//! the current cell.

use std::collections::HashMap;

use super::compile::{self, Compiler, Pending, Prelude};
use super::split::{self, Item, ItemKind, Known, Lang};

/// A declaration later cells see.
#[derive(Debug, Clone)]
struct PreludeEntry {
    cell: u32,
    line: u32,
    /// The variable or C function it declares (a redefinition hides it).
    name: Option<String>,
    text: String,
    hidden_by: Option<u32>,
}

/// The declarations and names of the live cells.
#[derive(Debug, Clone, Default)]
pub struct Context {
    prelude: Vec<PreludeEntry>,
    /// Type names and variables, for splitting.
    pub known: Known,
    /// Variables' declared types, for naming values in C.
    var_types: HashMap<String, String>,
    /// Struct and union types, for naming values in C.
    records: Vec<String>,
    /// The functions defined so far (the last part of their names), for compiling cells
    /// together ([`super::batch`]).
    functions: std::collections::HashSet<String>,
    /// Changes with every cell absorbed or removed (a cell compiled ahead is valid only for
    /// the generation it was compiled for).
    pub generation: u64,
}

impl Context {
    /// A kept cell's declarations join the prelude, its names what the splitter knows.
    pub fn absorb(&mut self, number: u32, items: &[Item], lang: Lang) {
        self.generation += 1;
        for item in items {
            self.learn(item, lang);
            let (name, text) = match &item.kind {
                ItemKind::Directive | ItemKind::Carried => (None, item.text.clone()),
                ItemKind::Function {
                    name,
                    prototype: Some(p),
                } => ((lang == Lang::C).then(|| name.clone()), p.clone()),
                ItemKind::Variable(v) if !v.extern_decl.is_empty() => {
                    for (n, _) in &v.names {
                        self.hide(n, number);
                    }
                    let name = v.names.first().map(|n| n.0.clone());
                    (name, v.extern_decl.clone())
                }
                _ => continue,
            };
            if let Some(n) = &name {
                self.hide(n, number);
            }
            self.prelude.push(PreludeEntry {
                cell: number,
                line: item.line,
                name,
                text,
                hidden_by: None,
            });
        }
    }

    /// What an item tells the splitter and the value printer.
    fn learn(&mut self, item: &Item, lang: Lang) {
        match &item.kind {
            ItemKind::Variable(v) => {
                for (n, t) in &v.names {
                    self.known.variables.insert(n.clone());
                    if let Some(t) = t {
                        self.var_types.insert(n.clone(), t.clone());
                    }
                }
            }
            ItemKind::Carried => {
                let (names, records) = split::declared_types(item, lang);
                self.known.types.extend(names);
                self.records.extend(records);
            }
            ItemKind::Function { name, .. } => {
                self.functions.insert(last_part(name).to_string());
            }
            _ => {}
        }
    }

    /// Hides earlier cells' declarations of `name` (a redefinition may change its type); not
    /// those of cell `by` itself (`#if`/`#else` branches may each define it).
    fn hide(&mut self, name: &str, by: u32) {
        for p in &mut self.prelude {
            if p.hidden_by.is_none() && p.cell != by && p.name.as_deref() == Some(name) {
                p.hidden_by = Some(by);
            }
        }
    }

    /// The context of `cells` (number and items, oldest first), as after they were absorbed
    /// one by one. Its generation moves on by two from this one's: a cell compiled ahead
    /// expects this generation plus one (the current cell absorbed), never a rebuilt one.
    pub fn rebuilt<'a>(
        &self,
        cells: impl Iterator<Item = (u32, &'a [Item])>,
        lang: Lang,
    ) -> Context {
        let mut c = Context::default();
        for (number, items) in cells {
            c.absorb(number, items, lang);
        }
        c.generation = self.generation + 2;
        c
    }

    /// Whether a live cell defines `name`: a variable, or a function (by the last part of
    /// its name).
    pub(super) fn defines(&self, name: &str) -> bool {
        self.known.variables.contains(name)
            || self.functions.contains(last_part(name))
            || (self.prelude.iter())
                .any(|p| p.hidden_by.is_none() && p.name.as_deref() == Some(name))
    }

    /// The declarations of the live cells, with `#line` directives naming their cells; not
    /// those of names the new cell defines again (perhaps with another type). The part up to
    /// the last `#include` is the head, precompiled when nothing in it gave way.
    pub(super) fn prelude_text(&self, redefined: &[String]) -> Prelude {
        let gives_way = |p: &PreludeEntry| p.name.as_ref().is_some_and(|n| redefined.contains(n));
        let live: Vec<&PreludeEntry> = self
            .prelude
            .iter()
            .filter(|p| p.hidden_by.is_none())
            .collect();
        let head_len = live
            .iter()
            .rposition(|p| compile::is_include(&p.text))
            .map_or(0, |k| k + 1);
        let head_len = if live[..head_len].iter().any(|p| gives_way(p)) {
            0
        } else {
            head_len
        };
        let mut out = Prelude::default();
        for (k, p) in live.iter().enumerate() {
            if gives_way(p) {
                continue;
            }
            let s = if k < head_len {
                &mut out.head
            } else {
                &mut out.tail
            };
            s.push_str(&format!(
                "#line {} \"cell {}\"\n{}\n",
                p.line, p.cell, p.text
            ));
        }
        out
    }

    /// In C, what names the type of the final expression: its declared type when it is a
    /// variable, else a chain over the struct and union types declared so far.
    pub(super) fn value_type_expr(&self, items: &[Item], lang: Lang) -> Option<String> {
        if lang != Lang::C {
            return None;
        }
        let expr = items.iter().find(|i| i.kind == ItemKind::Expression)?;
        if let Some(t) = self.var_types.get(expr.text.trim()) {
            return Some(format!("\"{t}\""));
        }
        let mut chain = String::new();
        for r in &self.records {
            for t in [r.clone(), format!("{r} *")] {
                chain.push_str(&format!(
                    "__builtin_types_compatible_p(__typeof__(__remjit_v), {t}) ? \"{t}\" : "
                ));
            }
        }
        chain.push_str("(const char *)0");
        Some(chain)
    }

    /// Starts compiling cell `number` against this context.
    pub fn start(&self, compiler: &Compiler, number: u32, items: &[Item], lang: Lang) -> Pending {
        let prelude = self.prelude_text(&defined_names(items, lang));
        let show = self.value_type_expr(items, lang);
        compiler.start(number, &prelude, items, show.as_deref())
    }

    /// Waits for a compile [`Context::start`] began; a C expression of type void is compiled
    /// again as a statement (`items` then say so).
    pub fn finish(
        &self,
        compiler: &Compiler,
        pending: Pending,
        number: u32,
        items: &mut [Item],
        lang: Lang,
    ) -> Result<Option<Vec<u8>>, String> {
        match compiler.finish(pending) {
            Err(d) if lang == Lang::C && d.contains("declared void") && has_expression(items) => {
                for i in items.iter_mut() {
                    if i.kind == ItemKind::Expression {
                        i.kind = ItemKind::Statement;
                        i.text.push(';');
                    }
                }
                let p = self.start(compiler, number, items, lang);
                compiler.finish(p)
            }
            r => r,
        }
    }
}

/// The variables (and in C the functions) `items` define: their earlier declarations give way.
pub(super) fn defined_names(items: &[Item], lang: Lang) -> Vec<String> {
    let mut out = Vec::new();
    for i in items {
        match &i.kind {
            ItemKind::Variable(v) => out.extend(v.names.iter().map(|n| n.0.clone())),
            ItemKind::Function { name, .. } if lang == Lang::C => out.push(name.clone()),
            _ => {}
        }
    }
    out
}

/// `b` of `a::b`.
pub(super) fn last_part(name: &str) -> &str {
    name.rsplit("::").next().unwrap_or(name)
}

fn has_expression(items: &[Item]) -> bool {
    items.iter().any(|i| i.kind == ItemKind::Expression)
}
