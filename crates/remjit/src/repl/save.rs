//! `%save FILE`: the live cells as one program a compiler builds natively. Declarations stay
//! at file scope in cell order (a function or variable redefined by a later cell keeps only its
//! last definition, in C++ per overload: the same parameter types; a cell's own `#if`/`#else`
//! branches stay); the statements of all cells run in order in `main`.

use super::split::{Item, ItemKind, Lang};

/// The program text of `items`, each with its cell's number.
pub fn program(items: &[(u32, &Item)], lang: Lang) -> String {
    let mut top = String::new();
    let mut main = String::new();
    for (k, &(cell, item)) in items.iter().enumerate() {
        let later = || items[k + 1..].iter().filter(|(c, _)| *c != cell);
        let redefined_later = |name: &str| {
            later().any(|(_, later)| match &later.kind {
                ItemKind::Function { name: n, .. } => n == name && lang == Lang::C,
                ItemKind::Variable(v) => v.names.iter().any(|(n, _)| n == name),
                _ => false,
            })
        };
        // C++ overloads share a name: a later definition replaces one of the same parameter
        // types only.
        let function_redefined_later = |name: &str, prototype: &Option<String>| {
            let sig = prototype.as_deref().map(signature);
            redefined_later(name)
                || sig.is_some()
                    && later().any(|(_, later)| match &later.kind {
                        ItemKind::Function {
                            name: n,
                            prototype: Some(p),
                        } => n == name && Some(signature(p)) == sig,
                        _ => false,
                    })
        };
        match &item.kind {
            ItemKind::Directive | ItemKind::Carried => push(&mut top, &item.text),
            ItemKind::Function { name, prototype } if function_redefined_later(name, prototype) => {
            }
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

/// A prototype's parameter types, without parameter names, default arguments and spacing:
/// `int f(const char *s, int n = 2);` gives `constchar*,int`.
fn signature(prototype: &str) -> String {
    const TYPE_WORDS: &[&str] = &[
        "int", "char", "long", "short", "double", "float", "unsigned", "signed", "bool", "void",
        "auto", "const", "volatile", "wchar_t", "char8_t", "char16_t", "char32_t",
    ];
    let (Some(open), Some(close)) = (prototype.find('('), prototype.rfind(')')) else {
        return prototype.to_string();
    };
    let Some(params) = prototype.get(open + 1..close) else {
        return prototype.to_string();
    };
    let mut types = Vec::new();
    for p in params.split(',') {
        let p = p.split('=').next().unwrap_or(p).trim();
        let start = p.trim_end_matches(|c: char| c.is_alphanumeric() || c == '_');
        let last = &p[start.len()..];
        let named = !start.trim().is_empty() && !last.is_empty() && !TYPE_WORDS.contains(&last);
        let ty = if named { start } else { p };
        types.push(ty.split_whitespace().collect::<String>());
    }
    types.join(",")
}

fn push(s: &mut String, text: &str) {
    s.push_str(text);
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn signatures_drop_names_defaults_and_spaces() {
        assert_eq!(
            signature("int f(const char *s, int n = 2);"),
            "constchar*,int"
        );
        assert_eq!(signature("int f(const char*, int);"), "constchar*,int");
        assert_eq!(signature("int f(unsigned int);"), "unsignedint");
        assert_eq!(signature("std::string g(std::string s);"), "std::string");
        assert_ne!(signature("int f(int a);"), signature("int f(double a);"));
        assert_eq!(signature("int f();"), "");
    }
}
