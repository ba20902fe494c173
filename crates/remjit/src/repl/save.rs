//! `%save FILE`: the live cells as one program a compiler builds natively. Declarations stay
//! at file scope in cell order (a function or variable redefined by a later cell keeps only its
//! last definition; a cell's own `#if`/`#else` branches stay); the statements of all cells run
//! in order in `main`.

use super::split::{Item, ItemKind, Lang};

/// The program text of `items`, each with its cell's number.
pub fn program(items: &[(u32, &Item)], lang: Lang) -> String {
    let mut top = String::new();
    let mut main = String::new();
    for (k, &(cell, item)) in items.iter().enumerate() {
        let redefined_later = |name: &str| {
            let mut later = items[k + 1..].iter().filter(|(c, _)| *c != cell);
            later.any(|(_, later)| match &later.kind {
                ItemKind::Function { name: n, .. } => n == name && lang == Lang::C,
                ItemKind::Variable(v) => v.names.iter().any(|(n, _)| n == name),
                _ => false,
            })
        };
        match &item.kind {
            ItemKind::Directive | ItemKind::Carried => push(&mut top, &item.text),
            ItemKind::Function { name, .. } if redefined_later(name) => {}
            ItemKind::Function { .. } => push(&mut top, &item.text),
            ItemKind::Variable(v) => {
                if v.names.iter().all(|(n, _)| !redefined_later(n)) {
                    push(&mut top, &v.definition);
                }
                for init in &v.inits {
                    push(&mut main, &format!("  {init}"));
                }
            }
            ItemKind::Statement => push(&mut main, &format!("  {}", item.text)),
            ItemKind::Expression => push(&mut main, &format!("  (void)({});", item.text)),
        }
    }
    format!("/* Saved by remjit repl. */\n{top}\nint main(void) {{\n{main}  return 0;\n}}\n")
}

fn push(s: &mut String, text: &str) {
    s.push_str(text);
    s.push('\n');
}
