//! Splitting a cell into top-level items and telling what each is: directives, type
//! declarations, functions, variables (which stay at file scope and are carried to later cells)
//! and statements (which run at once, in a generated function). Heuristic, as any REPL's is
//! before the compiler sees the code: ordinary C and C++ come out right, and an odd case ends
//! in a compiler diagnostic rather than a wrong result.

use std::collections::HashSet;

use super::lex::{lex, Kind, Token};

/// The language of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// C (gcc or $CC).
    C,
    /// C++ (g++ or $CXX).
    Cxx,
}

/// What a top-level item of a cell is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    /// A preprocessor line: carried to later cells as it is.
    Directive,
    /// Types, templates, `using`, namespaces, prototypes, `extern` declarations, inline
    /// functions, C++ constants: carried to later cells as they are.
    Carried,
    /// A function definition: compiled in its cell; later cells see `prototype`.
    Function {
        /// Its name (for redefinitions).
        name: String,
        /// Its declaration for later cells (none for an out-of-class member).
        prototype: Option<String>,
    },
    /// A variable definition: defined in its cell; later cells see `extern_decl`.
    Variable(Variable),
    /// Statements, run in the cell's generated function.
    Statement,
    /// The cell's final expression without `;`: its value is printed.
    Expression,
}

/// A variable definition, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The declared names with their type as written (`struct point`, `int *`), for value
    /// printing; no type for arrays and function pointers.
    pub names: Vec<(String, Option<String>)>,
    /// The definition to compile (`static` dropped; in C, initializers that are not constant
    /// moved to `inits`).
    pub definition: String,
    /// The `extern` declaration later cells see.
    pub extern_decl: String,
    /// `name = initializer;` statements run with the cell's statements (C only).
    pub inits: Vec<String>,
}

/// One item: what it is, its text and its first line in the cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// What it is.
    pub kind: ItemKind,
    /// Its text (with its `;`, one added when the cell's last item had none).
    pub text: String,
    /// Its first line in the cell, from 1.
    pub line: u32,
}

/// What the splitter knows of earlier cells.
#[derive(Debug, Default, Clone)]
pub struct Known {
    /// Type names declared so far (typedefs, C++ classes).
    pub types: HashSet<String>,
    /// Variables defined so far.
    pub variables: HashSet<String>,
}

/// Words that begin a declaration.
const DECL_WORDS: &[&str] = &[
    "int",
    "char",
    "short",
    "long",
    "unsigned",
    "signed",
    "float",
    "double",
    "void",
    "_Bool",
    "bool",
    "const",
    "volatile",
    "static",
    "extern",
    "register",
    "auto",
    "inline",
    "constexpr",
    "consteval",
    "constinit",
    "thread_local",
    "_Thread_local",
    "__thread",
    "struct",
    "union",
    "enum",
    "class",
    "typename",
    "wchar_t",
    "char8_t",
    "char16_t",
    "char32_t",
    "_Complex",
    "__int128",
    "_Atomic",
    "_Alignas",
    "alignas",
    "__attribute__",
    "__extension__",
    "virtual",
    "explicit",
    "friend",
    "mutable",
    "__auto_type",
    "typeof",
    "__typeof__",
    "decltype",
];

/// Library type names a cell commonly declares variables with.
const LIB_TYPES: &[&str] = &[
    "size_t",
    "ssize_t",
    "ptrdiff_t",
    "intptr_t",
    "uintptr_t",
    "intmax_t",
    "uintmax_t",
    "FILE",
    "int8_t",
    "int16_t",
    "int32_t",
    "int64_t",
    "uint8_t",
    "uint16_t",
    "uint32_t",
    "uint64_t",
    "time_t",
    "clock_t",
    "off_t",
    "pid_t",
    "va_list",
    "wint_t",
    "fpos_t",
    "div_t",
    "jmp_buf",
    "pthread_t",
    "pthread_mutex_t",
    "string",
    "vector",
    "map",
];

/// Words that begin a statement.
const STATEMENT_WORDS: &[&str] = &[
    "if",
    "for",
    "while",
    "do",
    "switch",
    "return",
    "break",
    "continue",
    "goto",
    "try",
    "throw",
    "case",
    "default",
    "else",
    "delete",
    "co_return",
    "co_yield",
    "co_await",
];

/// Words that begin an item carried as it is.
const CARRIED_WORDS: &[&str] = &[
    "typedef",
    "template",
    "using",
    "namespace",
    "static_assert",
    "_Static_assert",
    "asm",
    "__asm__",
];

/// A cell's tokens with its text.
struct Cell<'a> {
    src: &'a str,
    toks: Vec<Token>,
}

impl<'a> Cell<'a> {
    fn text(&self, i: usize) -> &'a str {
        self.toks.get(i).map_or("", |t| t.text(self.src))
    }

    fn is(&self, i: usize, s: &str) -> bool {
        self.toks
            .get(i)
            .is_some_and(|t| t.kind != Kind::Str && t.text(self.src) == s)
    }

    fn kind(&self, i: usize) -> Option<Kind> {
        self.toks.get(i).map(|t| t.kind)
    }

    /// The source text of tokens `a..b`, as written.
    fn span(&self, a: usize, b: usize) -> &'a str {
        if a >= b {
            return "";
        }
        self.src
            .get(self.toks[a].start..self.toks[b - 1].end)
            .unwrap_or("")
    }

    /// The source text of tokens `a..b` with the tokens `skip` picks blanked out (lines and
    /// columns stay where they were).
    fn blank(&self, a: usize, b: usize, skip: &dyn Fn(usize) -> bool) -> String {
        let mut out = self.span(a, b).to_string();
        let base = self.toks.get(a).map_or(0, |t| t.start);
        for k in a..b {
            if skip(k) {
                let t = self.toks[k];
                out.replace_range(t.start - base..t.end - base, &" ".repeat(t.end - t.start));
            }
        }
        out
    }

    /// Tokens `a..b` joined by single spaces, some of them left out.
    fn join(&self, a: usize, b: usize, skip: &dyn Fn(usize) -> bool) -> String {
        let mut out = String::new();
        for i in a..b {
            if skip(i) {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(self.text(i));
        }
        out
    }
}

/// Splits a cell into items.
pub fn split(src: &str, lang: Lang, known: &Known) -> Vec<Item> {
    split_at_most(src, lang, known, true)
}

/// Splits a cell into items; an unterminated item gets a `;` and is re-classified once, if
/// `retry` (a `;` does not close an open bracket, so a second try would go on for ever).
fn split_at_most(src: &str, lang: Lang, known: &Known, retry: bool) -> Vec<Item> {
    let lexed = lex(src);
    let cell = Cell {
        src,
        toks: lexed.tokens,
    };
    let mut items = Vec::new();
    let mut i = 0;
    while i < cell.toks.len() {
        let (end, terminated) = chunk_end(&cell, i);
        let mut item = classify(&cell, i, end, lang, known);
        if !terminated && !matches!(item.kind, ItemKind::Directive) {
            // A block-ending `}` would have ended the item: what is left open is an
            // expression (its value printed) or a declaration missing its `;`.
            if matches!(item.kind, ItemKind::Statement) && !starts_statement(&cell, i) {
                item.kind = ItemKind::Expression;
            } else {
                item.text.push(';');
                if retry {
                    item = classify_text(&item.text, item.line, lang, known).unwrap_or(item);
                }
            }
        }
        items.push(item);
        i = end;
    }
    items
}

/// Whether a whole cell reads as a function declarator still waiting for its body: a
/// declaration ending in the `)` of its parameter list, with no `=`, `;` or `{` at depth 0
/// (`int fib(int n)` with `{` on the next line); or `if (...)`, `for (...)`, `while (...)`,
/// `switch (...)` with nothing after the condition.
pub fn awaits_body(src: &str) -> bool {
    let cell = Cell {
        src,
        toks: lex(src).tokens,
    };
    let n = cell.toks.len();
    if n < 3 || !cell.is(n - 1, ")") || cell.toks.iter().any(|t| t.kind == Kind::Directive) {
        return false;
    }
    let Some(paren) = find_depth0(&cell, 0, n, "(") else {
        return false;
    };
    let closes_at_end = skip_balanced(&cell, paren, n) == n;
    if matches!(cell.text(0), "if" | "for" | "while" | "switch") {
        return paren == 1 && closes_at_end;
    }
    let stray = ["=", ";", "{"]
        .iter()
        .any(|w| find_depth0(&cell, 0, n, w).is_some());
    closes_at_end
        && !stray
        && cell.kind(paren - 1) == Some(Kind::Ident)
        && !STATEMENT_WORDS.contains(&cell.text(0))
        && is_declaration(&cell, 0, n, &Known::default())
}

/// Why a cell cannot be kept, if it cannot: a structured binding at file scope (C++) that
/// [`bind_structured`] left alone (`static`, `thread_local`...) names no variable a later cell
/// could declare `extern`.
pub fn refusal(items: &[Item], lang: Lang) -> Option<String> {
    if lang != Lang::Cxx {
        return None;
    }
    let binding = items.iter().find(|i| {
        matches!(i.kind, ItemKind::Variable(_) | ItemKind::Carried)
            && is_structured_binding(&i.text)
            && !i.text.contains(BINDING_MARK)
    })?;
    Some(format!(
        "{}: a `static` or `thread_local` structured binding is not kept at the top level \
         (later cells could not declare its names); drop the `static` (`auto [a, b] = ...;`) \
         or bind in a block (`{{ static auto [a, b] = ...; ... }}`)",
        binding.line
    ))
}

/// The hidden variable holding the object of cell `number`'s `k`th top-level structured
/// binding.
fn binding_object(number: u32, k: usize) -> String {
    format!("__remjit_sb_{number}_{k}")
}

/// C++ structured bindings at the top level (`auto [a, b] = std::pair{1, 2};`) become a hidden
/// global holding the object (`auto __remjit_sb_N_K = std::pair{1, 2};`, an `auto` variable
/// like any other) and a binding to it, `auto &[a, b] = __remjit_sb_N_K;`, carried to later
/// cells: each declares the names anew, bound to the same object. Bindings declared `static`,
/// `thread_local` and the like stay as they are (and are refused).
pub fn bind_structured(items: &mut Vec<Item>, number: u32, lang: Lang, known: &Known) {
    if lang != Lang::Cxx {
        return;
    }
    let mut k = 0;
    let mut i = 0;
    while i < items.len() {
        let it = &items[i];
        let plain = matches!(it.kind, ItemKind::Variable(_) | ItemKind::Carried)
            && is_structured_binding(&it.text)
            && !it.text.contains(BINDING_MARK);
        let parts = plain.then(|| binding_parts(&it.text)).flatten();
        let Some((before, names, after)) = parts else {
            i += 1;
            continue;
        };
        let object = binding_object(number, k);
        let line = it.line;
        let hidden = format!("{before}{object}{after}");
        let Some(holder) = classify_text(&hidden, line, lang, known) else {
            i += 1;
            continue;
        };
        let binding = Item {
            kind: ItemKind::Carried,
            text: format!("auto &[{names}] {BINDING_MARK} {object};"),
            line,
        };
        items.splice(i..=i, [holder, binding]);
        k += 1;
        i += 2;
    }
}

/// What marks the carried binding [`bind_structured`] makes (and [`refusal`] lets through).
const BINDING_MARK: &str = "= /* remjit */";

/// `QUALIFIERS auto [NAMES] INIT`: (the text before `[`, NAMES, the text after `]`), for
/// bindings that may live at namespace scope as a plain global.
fn binding_parts(text: &str) -> Option<(&str, &str, &str)> {
    let open = text.find('[')?;
    let close = open + text[open..].find(']')?;
    let before = &text[..open];
    let words = [
        "static",
        "thread_local",
        "extern",
        "inline",
        "constexpr",
        "constinit",
    ];
    if before.split_whitespace().any(|w| words.contains(&w)) {
        return None;
    }
    Some((before, &text[open + 1..close], &text[close + 1..]))
}

/// `auto [a, b] = ...;`, `const auto &[x, y] = ...;`.
fn is_structured_binding(text: &str) -> bool {
    let lexed = lex(text);
    let cell = Cell {
        src: text,
        toks: lexed.tokens,
    };
    let mut k = 0;
    let mut auto = false;
    while k < cell.toks.len() {
        match cell.text(k) {
            "auto" => auto = true,
            "const" | "volatile" | "static" | "thread_local" | "inline" | "constexpr" | "&"
            | "&&" | "extern" | "constinit" => {}
            "[" => return auto,
            _ => return false,
        }
        k += 1;
    }
    false
}

/// Re-classifies one item's text (after a `;` was added).
fn classify_text(text: &str, line: u32, lang: Lang, known: &Known) -> Option<Item> {
    let mut items = split_at_most(text, lang, known, false);
    if items.len() != 1 {
        return None;
    }
    let mut item = items.pop()?;
    item.line = line;
    Some(item)
}

fn starts_statement(cell: &Cell, i: usize) -> bool {
    STATEMENT_WORDS.contains(&cell.text(i)) || cell.is(i, "{")
}

/// Where the item starting at token `i` ends (exclusive), and whether it ended with its own
/// `;` or `}` rather than at the end of the cell.
fn chunk_end(cell: &Cell, i: usize) -> (usize, bool) {
    if cell.kind(i) == Some(Kind::Directive) {
        return (i + 1, true);
    }
    let first = cell.text(i);
    let mut depth = 0usize;
    let mut brace_ends = false;
    let mut j = i;
    while j < cell.toks.len() {
        if cell.kind(j) == Some(Kind::Directive) && depth == 0 {
            return (j, false);
        }
        if cell.kind(j) == Some(Kind::Punct) {
            match cell.text(j) {
                "{" => {
                    if depth == 0 {
                        brace_ends = block_ends_item(cell, i, j);
                    }
                    depth += 1;
                }
                "(" | "[" => depth += 1,
                ")" | "]" => depth = depth.saturating_sub(1),
                "}" => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 && brace_ends {
                        let next = cell.text(j + 1);
                        let more = (next == "else" && first == "if")
                            || (next == "catch" && first == "try")
                            || (next == "while" && first == "do");
                        if !more {
                            return (j + 1, true);
                        }
                        brace_ends = false;
                    }
                }
                ";" if depth == 0 => {
                    if first == "if" && cell.is(j + 1, "else") {
                        j += 1;
                        continue;
                    }
                    return (j + 1, true);
                }
                _ => {}
            }
        }
        j += 1;
    }
    (j, false)
}

/// Whether the `{` at `brace` (depth 0) opens a body whose `}` ends the item: a function, a
/// namespace, an `extern "C"` block or a statement, but not a class or an initializer.
fn block_ends_item(cell: &Cell, start: usize, brace: usize) -> bool {
    let first = cell.text(start);
    if brace == start || STATEMENT_WORDS.contains(&first) {
        return first != "do";
    }
    if first == "namespace" || (first == "extern" && cell.kind(start + 1) == Some(Kind::Str)) {
        return true;
    }
    if first == "[" && !cell.is(start + 1, "[") {
        return false; // a lambda (`[[...]]` would be an attribute)
    }
    let mut depth = 0usize;
    let mut parens = false;
    let mut k = start;
    while k < brace {
        match cell.text(k) {
            "(" => {
                let attr = matches!(
                    cell.text(k.wrapping_sub(1)),
                    "__attribute__" | "alignas" | "_Alignas" | "__declspec" | "decltype"
                );
                if depth == 0 && !attr {
                    parens = true;
                }
                depth += 1;
            }
            "[" | "<" if depth > 0 => depth += 1,
            ")" | "]" => depth = depth.saturating_sub(1),
            "=" if depth == 0 && !cell.is(k.wrapping_sub(1), "operator") => return false,
            _ => {}
        }
        k += 1;
    }
    parens
}

/// Classifies tokens `a..b`.
fn classify(cell: &Cell, a: usize, b: usize, lang: Lang, known: &Known) -> Item {
    let line = cell.toks[a].line;
    let text = cell.span(a, b).to_string();
    let item = |kind| Item {
        kind,
        text: text.clone(),
        line,
    };
    if cell.kind(a) == Some(Kind::Directive) {
        return item(ItemKind::Directive);
    }
    let first = cell.text(a);
    if CARRIED_WORDS.contains(&first)
        || (first == "extern" && cell.kind(a + 1) == Some(Kind::Str))
        || is_type_definition(cell, a, b)
    {
        return item(ItemKind::Carried);
    }
    if starts_statement(cell, a) {
        return item(ItemKind::Statement);
    }
    if cell.is(b - 1, "}") && block_ends_item(cell, a, find_depth0(cell, a, b, "{").unwrap_or(a)) {
        return function(cell, a, b, lang, text, line);
    }
    if !is_declaration(cell, a, b, known) {
        return item(ItemKind::Statement);
    }
    declaration(cell, a, b, lang, known, text, line)
}

/// The first token `what` at bracket depth 0 in `a..b`.
fn find_depth0(cell: &Cell, a: usize, b: usize, what: &str) -> Option<usize> {
    let mut depth = 0usize;
    for k in a..b {
        let t = cell.text(k);
        if t == what && depth == 0 && cell.kind(k) == Some(Kind::Punct) {
            return Some(k);
        }
        match t {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// `struct S {...};`, `struct S;`, `class C : B {...};`, `enum class E {...};`: a type and no
/// variable.
fn is_type_definition(cell: &Cell, a: usize, b: usize) -> bool {
    if !matches!(cell.text(a), "struct" | "union" | "enum" | "class") {
        return false;
    }
    let mut k = a + 1;
    if matches!(cell.text(k), "class" | "struct") {
        k += 1;
    }
    while cell.text(k) == "__attribute__" || cell.text(k) == "alignas" {
        k += 1;
        if cell.is(k, "(") {
            k = skip_balanced(cell, k, b);
        }
    }
    if cell.kind(k) == Some(Kind::Ident) {
        k += 1;
    }
    if cell.is(k, "final") {
        k += 1;
    }
    matches!(cell.text(k), "{" | ";" | ":")
}

/// The index past the bracket group opening at `k`.
fn skip_balanced(cell: &Cell, k: usize, b: usize) -> usize {
    let mut depth = 0usize;
    let mut j = k;
    while j < b {
        match cell.text(j) {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    b
}

/// Whether `a..b` declares something: it starts with a declaration word or a known type name,
/// or reads `Name [<...>] [*&]* name` followed by `=`, `;`, `[`, `,`, `(` or `{`.
fn is_declaration(cell: &Cell, a: usize, b: usize, known: &Known) -> bool {
    let first = cell.text(a);
    if DECL_WORDS.contains(&first) {
        return true;
    }
    if cell.kind(a) != Some(Kind::Ident) {
        return false;
    }
    let mut k = a;
    if cell.is(k, "::") {
        k += 1;
    }
    loop {
        if cell.kind(k) != Some(Kind::Ident) {
            return false;
        }
        k += 1;
        if cell.is(k, "<") {
            k = match skip_angles(cell, k, b) {
                Some(e) => e,
                None => return false,
            };
        }
        if cell.is(k, "::") {
            k += 1;
            continue;
        }
        break;
    }
    let named_type = known.types.contains(first) || LIB_TYPES.contains(&first);
    let mut stars = 0;
    while matches!(cell.text(k), "*" | "&" | "&&" | "const" | "volatile") {
        k += 1;
        stars += 1;
    }
    if cell.kind(k) != Some(Kind::Ident) {
        return false;
    }
    // A qualified name: `T A::s = ...` defines a static member.
    while cell.is(k + 1, "::") && cell.kind(k + 2) == Some(Kind::Ident) {
        k += 2;
    }
    if known.variables.contains(first) && stars > 0 {
        return false; // `x * y;` with x a variable: an expression
    }
    named_type || matches!(cell.text(k + 1), "=" | ";" | "[" | "," | "(" | "{" | "")
}

/// Past the `>` matching the `<` at `k`, if the group closes before `b` (and holds no `;`).
fn skip_angles(cell: &Cell, k: usize, b: usize) -> Option<usize> {
    let mut depth = 0i32;
    for j in k..b {
        match cell.text(j) {
            "<" => depth += 1,
            ">" => depth -= 1,
            ">>" => depth -= 2,
            ";" | "{" | "}" => return None,
            "(" => {
                // decltype(...) or a value: skip the parentheses.
                continue;
            }
            _ => {}
        }
        if depth <= 0 {
            return Some(j + 1);
        }
    }
    None
}

/// A function definition: its name, and its prototype for later cells.
fn function(cell: &Cell, a: usize, b: usize, lang: Lang, text: String, line: u32) -> Item {
    let brace = find_depth0(cell, a, b, "{").unwrap_or(b);
    let paren = find_depth0(cell, a, brace, "(").unwrap_or(brace);
    let name = cell.text(paren.wrapping_sub(1)).to_string();
    let qualified = paren >= 2 && cell.is(paren - 2, "::");
    let words: Vec<&str> = (a..paren).map(|k| cell.text(k)).collect();
    let is_inline = words
        .iter()
        .any(|w| matches!(*w, "inline" | "constexpr" | "consteval" | "__inline"));
    if is_inline {
        let text = if lang == Lang::C && !words.contains(&"static") {
            format!("static {text}")
        } else {
            text
        };
        return Item {
            kind: ItemKind::Carried,
            text,
            line,
        };
    }
    let not_static = |k: usize| cell.text(k) == "static" && k < paren;
    let definition = cell.blank(a, b, &not_static);
    let prototype = (!qualified).then(|| format!("{};", cell.join(a, brace, &not_static)));
    Item {
        kind: ItemKind::Function { name, prototype },
        text: definition,
        line,
    }
}

/// A declaration ending in `;`: a prototype or `extern` declaration (carried), or a variable
/// definition.
fn declaration(
    cell: &Cell,
    a: usize,
    b: usize,
    lang: Lang,
    known: &Known,
    text: String,
    line: u32,
) -> Item {
    let carried = |text: String| Item {
        kind: ItemKind::Carried,
        text,
        line,
    };
    let words: Vec<&str> = (a..b).map(|k| cell.text(k)).collect();
    if words.contains(&"extern") || words.contains(&"typedef") {
        return carried(text);
    }
    let cxx_const = lang == Lang::Cxx
        && words
            .iter()
            .take_while(|w| **w != "=" && **w != "*")
            .any(|w| matches!(*w, "const" | "constexpr"));
    if cxx_const || words.contains(&"inline") {
        return carried(text); // C++ constants have internal linkage: each cell has its own
    }
    // A lambda's type has no name a later cell could declare: an inline variable instead,
    // carried as it is (one copy in the session, as for any COMDAT).
    let lambda = (a..b).any(|k| cell.is(k, "=") && cell.is(k + 1, "["));
    if lang == Lang::Cxx && words.first() == Some(&"auto") && lambda {
        return carried(format!("inline {text}"));
    }
    let Some(decls) = declarators(cell, a, b, lang, known) else {
        return carried(text); // a prototype
    };
    variable(cell, a, b, lang, known, &decls, line)
}

/// The name in the nested declarator `(*name...)` spanning `open..close`, or `None` when it
/// declares a function (`(*name(params))`, a prototype returning a pointer) or names nothing.
fn nested_name(cell: &Cell, open: usize, close: usize) -> Option<usize> {
    let mut j = open;
    while j < close
        && matches!(
            cell.text(j),
            "(" | "*" | "&" | "&&" | "^" | "const" | "volatile" | "restrict" | "__restrict"
        )
    {
        j += 1;
    }
    if cell.kind(j) != Some(Kind::Ident) || j >= close || cell.is(j + 1, "(") {
        return None;
    }
    Some(j)
}

/// One declarator of a variable definition, as token ranges.
struct Declarator {
    /// Its name token.
    name: usize,
    /// Where its declarator starts (pointer stars included) and where its initializer starts
    /// (`=`, `{` or `(`; equal to `end` without one).
    start: usize,
    init: usize,
    end: usize,
}

/// The declarators of a variable definition in `a..b` (the `;` at `b - 1`), or `None` for a
/// function prototype.
fn declarators(
    cell: &Cell,
    a: usize,
    b: usize,
    lang: Lang,
    known: &Known,
) -> Option<Vec<Declarator>> {
    let end = if cell.is(b - 1, ";") { b - 1 } else { b };
    // The declaration specifiers end before the first declarator's name or pointer.
    let mut k = a;
    let mut spec_end = a;
    while k < end {
        let t = cell.text(k);
        if matches!(t, "*" | "&" | "&&" | "(" | "=" | "[" | "{" | ",") {
            break;
        }
        if t == "<" {
            k = skip_angles(cell, k, end)?;
            spec_end = k;
            continue;
        }
        if t == "__attribute__" || t == "alignas" || t == "decltype" || t == "typeof" {
            k = skip_balanced(cell, k + 1, end);
            spec_end = k;
            continue;
        }
        k += 1;
        spec_end = k;
    }
    // The last word before that is the first declarator's name, unless a pointer or a nested
    // declarator (`(*name)`, `(&name)`, `(^name)`: not a parameter list) begins there.
    let nested = cell.is(k, "(") && matches!(cell.text(k + 1), "*" | "&" | "^");
    if !nested && !matches!(cell.text(k), "*" | "&" | "&&") {
        spec_end = spec_end.saturating_sub(1).max(a);
        // A qualified name (`A::s`) is a name too.
        while spec_end >= a + 2
            && cell.is(spec_end - 1, "::")
            && cell.kind(spec_end - 2) == Some(Kind::Ident)
        {
            spec_end -= 2;
        }
    }
    let mut out = Vec::new();
    let mut k = spec_end;
    while k < end {
        let start = k;
        while matches!(
            cell.text(k),
            "*" | "&" | "&&" | "const" | "volatile" | "restrict" | "__restrict"
        ) {
            k += 1;
        }
        if cell.is(k, "(") {
            // A function pointer or array pointer: `(*name)(...)`.
            let close = skip_balanced(cell, k, end);
            let name = nested_name(cell, k, close)?;
            k = close;
            while cell.is(k, "(") || cell.is(k, "[") {
                k = skip_balanced(cell, k, end);
            }
            let init = k;
            k = declarator_end(cell, k, end);
            out.push(Declarator {
                name,
                start,
                init,
                end: k,
            });
            k += 1;
            continue;
        }
        if cell.kind(k) != Some(Kind::Ident) {
            return None;
        }
        while cell.is(k + 1, "::") && cell.kind(k + 2) == Some(Kind::Ident) {
            k += 2;
        }
        let name = k;
        k += 1;
        while cell.is(k, "[") {
            k = skip_balanced(cell, k, end);
        }
        if cell.is(k, "(") && !is_direct_init(cell, k, end, lang, known) {
            return None; // `T name(params)`: a prototype
        }
        let init = k;
        k = declarator_end(cell, k, end);
        out.push(Declarator {
            name,
            start,
            init,
            end: k,
        });
        k += 1;
    }
    (!out.is_empty()).then_some(out)
}

/// Where the declarator whose initializer starts at `k` ends: at the next comma outside
/// brackets that a declarator follows (not one between template arguments, as in
/// `std::pair<int, int>(1, 2)`), else at `end`.
fn declarator_end(cell: &Cell, mut k: usize, end: usize) -> usize {
    while let Some(c) = find_depth0(cell, k, end, ",") {
        let mut j = c + 1;
        while matches!(cell.text(j), "*" | "&" | "&&" | "const" | "volatile") {
            j += 1;
        }
        let named = cell.kind(j) == Some(Kind::Ident)
            && (j + 1 >= end || matches!(cell.text(j + 1), "=" | "[" | "(" | "{" | ","));
        if named || cell.is(j, "(") {
            return c;
        }
        k = c + 1;
    }
    end
}

/// Whether `(` at `k` starts a C++ direct initializer (`std::string s("hi")`) rather than a
/// parameter list.
fn is_direct_init(cell: &Cell, k: usize, end: usize, lang: Lang, known: &Known) -> bool {
    if lang == Lang::C || cell.is(k + 1, ")") {
        return false;
    }
    let t = cell.text(k + 1);
    let literal = matches!(
        cell.kind(k + 1),
        Some(Kind::Number | Kind::Str | Kind::Char)
    );
    literal
        || matches!(
            t,
            "-" | "+" | "!" | "{" | "&" | "true" | "false" | "nullptr"
        )
        || (known.variables.contains(t) && !cell.is(k + 2, "*"))
        || (k + 1 < end && cell.kind(k + 1) == Some(Kind::Ident) && cell.is(k + 2, "("))
}

/// A variable definition: its definition, `extern` declaration, names and types.
fn variable(
    cell: &Cell,
    a: usize,
    b: usize,
    lang: Lang,
    known: &Known,
    decls: &[Declarator],
    line: u32,
) -> Item {
    if let Some(d) = decls.iter().find(|d| cell.is(d.name.wrapping_sub(1), "::")) {
        // A static member's definition (`int A::n = 4;`): compiled in its cell as it is, as
        // an out-of-class member function is; the class declares it to later cells.
        return Item {
            kind: ItemKind::Function {
                name: cell.text(d.name).to_string(),
                prototype: None,
            },
            text: cell.span(a, b).to_string(),
            line,
        };
    }
    let first_start = decls[0].start;
    let storage = |k: usize| {
        k < first_start
            && match cell.text(k) {
                "static" | "register" => true,
                "auto" => lang == Lang::C,
                _ => false,
            }
    };
    let specs = cell.join(a, first_start, &storage);
    let type_words = cell.join(a, first_start, &|k| {
        storage(k)
            || matches!(
                cell.text(k),
                "extern" | "_Thread_local" | "thread_local" | "__thread"
            )
    });
    let mut defs = Vec::new();
    let mut dynamic = false;
    let mut externs = Vec::new();
    let mut inits = Vec::new();
    let mut names = Vec::new();
    for d in decls {
        let name = cell.text(d.name).to_string();
        let declarator = cell.join(d.start, d.init, &|_| false);
        let array_or_fn = (d.start..d.init).any(|k| matches!(cell.text(k), "[" | "("));
        let stars = cell.join(d.start, d.name, &|_| false);
        let ty = (!array_or_fn && !specs.contains("auto")).then(|| {
            format!(
                "{type_words}{}{stars}",
                if stars.is_empty() { "" } else { " " }
            )
        });
        names.push((name.clone(), ty));
        externs.push(sized_array(cell, d).unwrap_or_else(|| declarator.clone()));
        let init = cell.span(d.init, d.end);
        if lang == Lang::C && is_dynamic_init(cell, d.init, d.end, known) {
            defs.push(declarator);
            dynamic = true;
            let value = init.trim_start().trim_start_matches('=');
            inits.push(format!("{name} ={value};"));
        } else {
            defs.push(format!("{declarator} {init}").trim_end().to_string());
        }
    }
    let extern_decl = if specs.contains("auto") {
        // The type is the compiler's to deduce: later cells cannot name it.
        String::new()
    } else {
        format!("extern {specs} {};", externs.join(", "))
    };
    let definition = if dynamic {
        format!("{specs} {};", defs.join(", "))
    } else {
        cell.blank(a, b, &storage)
    };
    Item {
        kind: ItemKind::Variable(Variable {
            names,
            definition,
            extern_decl,
            inits,
        }),
        text: cell.span(a, b).to_string(),
        line,
    }
}

/// `name[]` with a brace initializer as `name [N]` (N its elements), so that later cells know
/// the size (`sizeof`); `None` otherwise (designated initializers included).
fn sized_array(cell: &Cell, d: &Declarator) -> Option<String> {
    let open = (d.name..d.init).find(|&k| cell.is(k, "["))?;
    if !cell.is(open + 1, "]") || !cell.is(d.init, "=") || !cell.is(d.init + 1, "{") {
        return None;
    }
    let close = skip_balanced(cell, d.init + 1, d.end);
    let mut count = 0;
    let mut depth = 0usize;
    let mut empty = true;
    for k in d.init + 2..close.saturating_sub(1) {
        match cell.text(k) {
            "." | "[" if depth == 0 => return None,
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => depth = depth.saturating_sub(1),
            "," if depth == 0 => {
                count += 1;
                empty = true;
                continue;
            }
            _ => {}
        }
        empty = false;
    }
    if !empty {
        count += 1;
    }
    let before = cell.join(d.start, open + 1, &|_| false);
    let after = cell.join(open + 1, d.init, &|_| false);
    Some(format!("{before} {count} {after}"))
}

/// Whether a C initializer (`= ...` in `a..b`) needs code to run: it names a variable or
/// calls a function. Brace and string initializers are left to the compiler.
fn is_dynamic_init(cell: &Cell, a: usize, b: usize, known: &Known) -> bool {
    if !cell.is(a, "=") || cell.is(a + 1, "{") || cell.kind(a + 1) == Some(Kind::Str) {
        return false;
    }
    (a + 1..b).any(|k| {
        let t = cell.text(k);
        cell.kind(k) == Some(Kind::Ident)
            && (known.variables.contains(t)
                || (cell.is(k + 1, "(") && !matches!(t, "sizeof" | "_Alignof" | "alignof")))
    })
}

/// The type names an item declares: typedef names and C++ class names (usable alone), and
/// the struct or union types (for naming values in C).
pub fn declared_types(item: &Item, lang: Lang) -> (Vec<String>, Vec<String>) {
    let lexed = lex(&item.text);
    let cell = Cell {
        src: &item.text,
        toks: lexed.tokens,
    };
    let n = cell.toks.len();
    let mut names = Vec::new();
    let mut records = Vec::new();
    let first = cell.text(0);
    if first == "typedef" {
        // The name is the last identifier at depth 0, or the one inside `(*name)`.
        let mut depth = 0usize;
        let mut name = None;
        for k in 1..n {
            match cell.text(k) {
                "(" | "[" | "{" => depth += 1,
                ")" | "]" | "}" => depth = depth.saturating_sub(1),
                _ if cell.kind(k) == Some(Kind::Ident) && (depth == 0 || cell.is(k - 1, "*")) => {
                    name = Some(cell.text(k).to_string());
                }
                _ => {}
            }
        }
        if let Some(name) = name {
            if matches!(cell.text(1), "struct" | "union") {
                records.push(name.clone());
            }
            names.push(name);
        }
    } else if first == "using" && cell.is(2, "=") {
        names.push(cell.text(1).to_string());
    } else if matches!(first, "struct" | "union" | "class" | "enum") {
        let mut k = 1;
        if matches!(cell.text(k), "class" | "struct") {
            k += 1;
        }
        if cell.kind(k) == Some(Kind::Ident) {
            let tag = cell.text(k).to_string();
            if first != "enum" {
                records.push(format!("{first} {tag}"));
            }
            if lang == Lang::Cxx {
                names.push(tag);
            }
        }
    } else if first == "template" {
        if let Some(k) =
            (0..n).find(|&k| matches!(cell.text(k), "class" | "struct") && cell.is(k + 2, "{"))
        {
            names.push(cell.text(k + 1).to_string());
        }
    }
    (names, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str, lang: Lang) -> Vec<String> {
        let mut known = Known::default();
        known.variables.insert("x".into());
        known.types.insert("point_t".into());
        split(src, lang, &known)
            .iter()
            .map(|i| match &i.kind {
                ItemKind::Directive => "dir".to_string(),
                ItemKind::Carried => format!("carried:{}", i.text),
                ItemKind::Function { name, .. } => format!("fn:{name}"),
                ItemKind::Variable(v) => format!(
                    "var:{}|{}|{}",
                    v.definition,
                    v.extern_decl,
                    v.inits.join(" ")
                ),
                ItemKind::Statement => format!("stmt:{}", i.text),
                ItemKind::Expression => format!("expr:{}", i.text),
            })
            .map(|s| s.split_whitespace().collect::<String>())
            .collect()
    }

    /// Asserts the kinds of `src`'s items, whitespace aside.
    fn check(src: &str, lang: Lang, expect: &[&str]) {
        let want: Vec<String> = expect
            .iter()
            .map(|s| s.split_whitespace().collect::<String>())
            .collect();
        assert_eq!(kinds(src, lang), want, "{src}");
    }

    /// An item an added `;` does not close is classified once, not again and again (that
    /// overflowed the stack).
    #[test]
    fn unclosed_items_end() {
        for src in [
            "int a[",
            "{",
            "enum {",
            "struct S {",
            "int f() {",
            "int x = (",
        ] {
            for lang in [Lang::C, Lang::Cxx] {
                let items = split(src, lang, &Known::default());
                assert_eq!(items.len(), 1, "{src}");
                assert!(items[0].text.starts_with(src), "{src}");
            }
        }
    }

    /// A parenthesised declarator is a variable (a pointer to a function or to an array), not a
    /// parameter list; a function returning a function pointer is still a prototype.
    #[test]
    fn nested_declarators() {
        check(
            "int (*p)(void);",
            Lang::C,
            &["var:int (*p)(void);|extern int ( * p ) ( void );|"],
        );
        check(
            "int (*pa)[3] = 0;",
            Lang::C,
            &["var:int (*pa)[3] = 0;|extern int ( * pa ) [ 3 ];|"],
        );
        check(
            "void (*signal(int, void (*)(int)))(int);",
            Lang::C,
            &["carried:void (*signal(int, void (*)(int)))(int);"],
        );
    }

    proptest::proptest! {
        /// Any mix of C tokens splits (and is read as complete or not) without a panic or a
        /// recursion without end (an unclosed `[` after an added `;` overflowed the stack).
        #[test]
        fn token_soup_splits(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "int", "x", "a", "S", "::", "(", ")", "[", "]", "{", "}", ";", "=", "*", "&",
                    ",", "1", "\"s\"", "auto", "struct", "enum", "if", "else", "return",
                    "\n#if 1\n", "\n#endif\n", "<", ">", "[]", " ",
                ]),
                0..16,
            )
        ) {
            let text = parts.join(" ");
            for lang in [Lang::C, Lang::Cxx] {
                let items = split(&text, lang, &Known::default());
                let _ = (refusal(&items, lang), awaits_body(&text));
            }
            let _ = crate::repl::lex::is_complete(&text);
        }
    }

    /// A structured binding at file scope is refused (in C++); one in a block is a statement.
    #[test]
    fn structured_bindings_are_refused() {
        let refused = |src: &str| {
            let mut items = split(src, Lang::Cxx, &Known::default());
            bind_structured(&mut items, 4, Lang::Cxx, &Known::default());
            refusal(&items, Lang::Cxx)
        };
        for src in [
            "static auto [m, n] = f();",
            "thread_local auto [m, n] = f();",
        ] {
            assert!(
                refused(src).is_some_and(|m| m.starts_with("1: a `static` or `thread_local`")),
                "{src}"
            );
        }
        for src in [
            "auto [a, b] = std::pair<int, int>(1, 2);",
            "const auto &[x, y] = q;",
            "{ auto [a, b] = q; }",
            "auto p = q;",
            "int a[2] = {1, 2};",
            "a[0]",
        ] {
            assert_eq!(refused(src), None, "{src}");
        }
    }

    /// A top-level structured binding: a hidden global holds the object, the names are bound
    /// to it in this cell and carried to later ones; template arguments' commas separate no
    /// declarators.
    #[test]
    fn structured_bindings_hold_their_object_in_a_hidden_global() {
        let mut items = split(
            "auto& [a, b] = std::pair<int, int>{1, 2};",
            Lang::Cxx,
            &Known::default(),
        );
        bind_structured(&mut items, 4, Lang::Cxx, &Known::default());
        assert_eq!(items.len(), 2, "{items:?}");
        let ItemKind::Variable(v) = &items[0].kind else {
            panic!("{items:?}");
        };
        assert_eq!(v.names, [("__remjit_sb_4_0".to_string(), None)]);
        assert_eq!(
            items[0].text,
            "auto& __remjit_sb_4_0 = std::pair<int, int>{1, 2};"
        );
        assert_eq!(items[1].kind, ItemKind::Carried);
        assert_eq!(
            items[1].text,
            "auto &[a, b] = /* remjit */ __remjit_sb_4_0;"
        );
    }

    /// A function declarator whose body comes on the next line waits for it; expressions and
    /// statements ending in `)` do not.
    #[test]
    fn function_declarators_await_their_body() {
        for src in [
            "int fib(int n)",
            "static point_t *make(int x, int y)",
            "std::vector<int> f()",
            "if (x)",
            "for (i = 0; i < 3; i++)",
        ] {
            assert!(awaits_body(src), "{src}");
        }
        for src in [
            "f(3)",
            "printf(\"%d\", x)",
            "int x = f(3)",
            "if (x) f(1)",
            "while (x > 0) x--;",
            "int f(void);",
            "int f(void) { return 1; }",
            "(x)",
            "sizeof(int)",
        ] {
            assert!(!awaits_body(src), "{src}");
        }
    }

    #[test]
    fn c_items() {
        check(
            "#include <stdio.h>\nint x = 3;",
            Lang::C,
            &["dir", "var:int x = 3;|extern int x;|"],
        );
        check(
            "int y = x * 2;",
            Lang::C,
            &["var:int y;|extern int y;|y = x * 2;"],
        );
        check(
            "static int a[] = {1, 2}, *p;",
            Lang::C,
            &["var:int a [ ] = {1, 2}, * p;|extern int a [ 2 ], * p;|"],
        );
        check("int sq(int v) { return v * v; }", Lang::C, &["fn:sq"]);
        check("int sq(int v);", Lang::C, &["carried:int sq(int v);"]);
        check(
            "struct point { int x, y; };",
            Lang::C,
            &["carried:struct point { int x, y; };"],
        );
        check(
            "struct point p = {1, 2};",
            Lang::C,
            &["var:struct point p = {1, 2};|extern struct point p;|"],
        );
        check("x = 5; x", Lang::C, &["stmt:x = 5;", "expr:x"]);
        check(
            "printf(\"%d\\n\", x);",
            Lang::C,
            &["stmt:printf(\"%d\\n\", x);"],
        );
        check(
            "for (int i = 0; i < 3; i++) { x += i; }",
            Lang::C,
            &["stmt:for (int i = 0; i < 3; i++) { x += i; }"],
        );
        check(
            "if (x) { x = 1; } else x = 2;",
            Lang::C,
            &["stmt:if (x) { x = 1; } else x = 2;"],
        );
        check(
            "point_t q;",
            Lang::C,
            &["var:point_t q;|extern point_t q;|"],
        );
        check(
            "typedef struct { int a; } s_t;",
            Lang::C,
            &["carried:typedef struct { int a; } s_t;"],
        );
        check("int z = 4", Lang::C, &["var:int z = 4;|extern int z;|"]);
        check("x * 2", Lang::C, &["expr:x * 2"]);
        check(
            "FILE *f = fopen(\"a\", \"r\");",
            Lang::C,
            &["var:FILE * f;|extern FILE * f;|f = fopen(\"a\", \"r\");"],
        );
    }

    #[test]
    fn cxx_items() {
        check(
            "std::vector<int> v{1, 2};",
            Lang::Cxx,
            &["var:std::vector < int > v {1, 2};|extern std::vector < int > v;|"],
        );
        check(
            "std::string s(\"hi\");",
            Lang::Cxx,
            &["var:std::string s (\"hi\");|extern std::string s;|"],
        );
        assert_eq!(
            kinds("class A { public: int f() { return 1; } };", Lang::Cxx).len(),
            1
        );
        assert!(kinds(
            "template <class T> T twice(T a) { return a + a; }",
            Lang::Cxx
        )[0]
        .starts_with("carried:"));
        check("int A::g() { return 2; }", Lang::Cxx, &["fn:g"]);
        check("int Cnt::n = 4;", Lang::Cxx, &["fn:n"]);
        check(
            "[](int a) { return a; }(4)",
            Lang::Cxx,
            &["expr:[](int a) { return a; }(4)"],
        );
        check("[[nodiscard]] int h() { return 1; }", Lang::Cxx, &["fn:h"]);
        check("std::string A::s = \"x\";", Lang::Cxx, &["fn:s"]);
        check("int *A::p, A::q;", Lang::Cxx, &["fn:p"]);
        assert!(kinds("const int N = 3;", Lang::Cxx)[0].starts_with("carried:"));
        assert!(kinds("using namespace std;", Lang::Cxx)[0].starts_with("carried:"));
        check(
            "std::cout << x << std::endl;",
            Lang::Cxx,
            &["stmt:std::cout << x << std::endl;"],
        );
        check(
            "auto f = [](int a) { return a; };",
            Lang::Cxx,
            &["carried:inline auto f = [](int a) { return a; };"],
        );
    }
}
