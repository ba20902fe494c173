//! A small C/C++ lexer for the REPL: enough to find where a cell ends, split it into top-level
//! items and tell declarations from statements. It never fails: what it does not know is
//! punctuation, and the compiler has the last word.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An identifier or keyword.
    Ident,
    /// A number.
    Number,
    /// A string literal (any prefix).
    Str,
    /// A character literal.
    Char,
    /// Punctuation, one operator.
    Punct,
    /// A whole preprocessor line, continuations included.
    Directive,
}

/// One token: its kind, byte range in the text and 1-based line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: Kind,
    /// Byte offset of its first character.
    pub start: usize,
    /// Byte offset just past it.
    pub end: usize,
    /// The line it starts on, from 1.
    pub line: u32,
}

impl Token {
    /// Its text in `src`.
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        src.get(self.start..self.end).unwrap_or("")
    }
}

/// Tokens of `src`, and whether a comment or literal is left open at the end.
pub struct Lexed {
    /// The tokens, in order.
    pub tokens: Vec<Token>,
    /// A `/* ...` comment, string or character literal runs to the end of the text.
    pub open: bool,
}

/// Operators of more than one character, longest first.
const OPERATORS: &[&str] = &[
    "<<=", ">>=", "...", "->*", "::", "->", "++", "--", "<<", ">>", "<=", ">=", "==", "!=", "&&",
    "||", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", ".*",
];

fn is_ident_start(c: u8) -> bool {
    c == b'_' || c == b'$' || c.is_ascii_alphabetic() || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    line: u32,
    /// Only blanks since the start of the line (a `#` there starts a directive).
    line_start: bool,
    open: bool,
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> u8 {
        self.b.get(self.i + k).copied().unwrap_or(0)
    }

    fn bump(&mut self) {
        if self.peek(0) == b'\n' {
            self.line += 1;
            self.line_start = true;
        }
        self.i += 1;
    }

    /// Skips blanks and comments; false at the end of the text.
    fn skip_space(&mut self) -> bool {
        while self.i < self.b.len() {
            match (self.peek(0), self.peek(1)) {
                (b'/', b'/') => {
                    while self.i < self.b.len() && self.peek(0) != b'\n' {
                        self.i += 1;
                    }
                }
                (b'/', b'*') => {
                    self.i += 2;
                    while self.i < self.b.len() && !(self.peek(0) == b'*' && self.peek(1) == b'/') {
                        self.bump();
                    }
                    if self.i >= self.b.len() {
                        self.open = true;
                        return false;
                    }
                    self.i += 2;
                }
                (b'\\', b'\n') => {
                    self.i += 1;
                    self.bump();
                }
                (c, _) if c.is_ascii_whitespace() => self.bump(),
                _ => return true,
            }
        }
        false
    }

    /// A quoted literal ending at the next unescaped `quote` on the line.
    fn quoted(&mut self, quote: u8) {
        self.i += 1;
        loop {
            match self.peek(0) {
                0 if self.i >= self.b.len() => {
                    self.open = true;
                    return;
                }
                b'\n' => {
                    self.open = true;
                    return;
                }
                b'\\' => self.i += 2,
                c if c == quote => {
                    self.i += 1;
                    return;
                }
                _ => self.i += 1,
            }
        }
    }

    /// A C++ raw string `R"delim( ... )delim"`, from its `"`.
    fn raw_string(&mut self) {
        let open = self.i + 1;
        let Some(paren) = self.b[open..].iter().position(|&c| c == b'(') else {
            self.quoted(b'"');
            return;
        };
        let delim = &self.b[open..open + paren];
        let mut close = Vec::with_capacity(delim.len() + 2);
        close.push(b')');
        close.extend_from_slice(delim);
        close.push(b'"');
        let body = open + paren + 1;
        match self.b[body..].windows(close.len()).position(|w| w == close) {
            Some(p) => {
                let end = body + p + close.len();
                while self.i < end {
                    self.bump();
                }
            }
            None => {
                self.open = true;
                self.i = self.b.len();
            }
        }
    }

    /// A directive line with its continuations.
    fn directive(&mut self) {
        while self.i < self.b.len() {
            match (self.peek(0), self.peek(1)) {
                (b'\\', b'\n') => {
                    self.i += 1;
                    self.bump();
                }
                (b'\n', _) => return,
                (b'/', b'*') => {
                    // A comment inside a directive may span lines.
                    self.i += 2;
                    while self.i < self.b.len() && !(self.peek(0) == b'*' && self.peek(1) == b'/') {
                        self.bump();
                    }
                    self.i = (self.i + 2).min(self.b.len());
                }
                _ => self.i += 1,
            }
        }
    }

    fn next(&mut self) -> Option<Token> {
        if !self.skip_space() {
            return None;
        }
        let start = self.i;
        let line = self.line;
        let c = self.peek(0);
        let at_line_start = self.line_start;
        self.line_start = false;
        let kind = if c == b'#' && at_line_start {
            self.directive();
            Kind::Directive
        } else if is_ident_start(c) {
            while is_ident_char(self.peek(0)) {
                self.i += 1;
            }
            let word = &self.b[start..self.i];
            match (self.peek(0), word) {
                (b'"', b"R" | b"LR" | b"uR" | b"UR" | b"u8R") => {
                    self.raw_string();
                    Kind::Str
                }
                (b'"', b"L" | b"u" | b"U" | b"u8") => {
                    self.quoted(b'"');
                    Kind::Str
                }
                (b'\'', b"L" | b"u" | b"U" | b"u8") => {
                    self.quoted(b'\'');
                    Kind::Char
                }
                _ => Kind::Ident,
            }
        } else if c.is_ascii_digit() || (c == b'.' && self.peek(1).is_ascii_digit()) {
            self.number();
            Kind::Number
        } else if c == b'"' {
            self.quoted(b'"');
            Kind::Str
        } else if c == b'\'' {
            self.quoted(b'\'');
            Kind::Char
        } else {
            let rest = &self.b[self.i..];
            let len = OPERATORS
                .iter()
                .find(|op| rest.starts_with(op.as_bytes()))
                .map_or(1, |op| op.len());
            self.i += len;
            Kind::Punct
        };
        Some(Token {
            kind,
            start,
            end: self.i,
            line,
        })
    }

    fn number(&mut self) {
        loop {
            let c = self.peek(0);
            let exp = matches!(c, b'e' | b'E' | b'p' | b'P');
            if exp && matches!(self.peek(1), b'+' | b'-') {
                self.i += 2;
            } else if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'\'' {
                self.i += 1;
            } else {
                return;
            }
        }
    }
}

/// Splits `src` into tokens.
pub fn lex(src: &str) -> Lexed {
    let mut lx = Lexer {
        b: src.as_bytes(),
        i: 0,
        line: 1,
        line_start: true,
        open: false,
    };
    let mut tokens = Vec::new();
    while let Some(t) = lx.next() {
        tokens.push(t);
    }
    Lexed {
        tokens,
        open: lx.open,
    }
}

/// Whether `src` is a whole cell: no bracket, comment or literal left open, and no final
/// line ending in `\`.
pub fn is_complete(src: &str) -> bool {
    if src
        .trim_end_matches(['\n', '\r', ' ', '\t'])
        .ends_with('\\')
    {
        return false;
    }
    let lexed = lex(src);
    if lexed.open {
        return false;
    }
    let mut depth: i64 = 0;
    let mut conditionals: i64 = 0;
    for t in &lexed.tokens {
        if t.kind == Kind::Directive {
            conditionals += conditional_step(t.text(src));
        }
        if t.kind == Kind::Punct {
            match t.text(src) {
                "(" | "[" | "{" => depth += 1,
                ")" | "]" | "}" => depth -= 1,
                _ => {}
            }
        }
    }
    depth <= 0 && conditionals <= 0
}

/// How a directive changes the nesting of preprocessor conditionals: +1 for `#if`, `#ifdef`,
/// `#ifndef`; -1 for `#endif`.
fn conditional_step(directive: &str) -> i64 {
    let word = directive
        .trim_start_matches('#')
        .trim_start()
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .next()
        .unwrap_or("");
    match word {
        "if" | "ifdef" | "ifndef" => 1,
        "endif" => -1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<&str> {
        lex(src).tokens.iter().map(|t| t.text(src)).collect()
    }

    #[test]
    fn tokens_and_directives() {
        assert_eq!(
            texts("#include <stdio.h>\nint x = 1e+3; // c\nchar *s = \"a\\\"b\";"),
            [
                "#include <stdio.h>",
                "int",
                "x",
                "=",
                "1e+3",
                ";",
                "char",
                "*",
                "s",
                "=",
                "\"a\\\"b\"",
                ";"
            ]
        );
        assert_eq!(texts("a->b::c"), ["a", "->", "b", "::", "c"]);
        assert_eq!(texts("R\"x(a)\"b)x\" y"), ["R\"x(a)\"b)x\"", "y"]);
        assert_eq!(lex("x\n  y").tokens[1].line, 2);
    }

    #[test]
    fn completeness() {
        assert!(is_complete("int x = 3;"));
        assert!(!is_complete("int f() {"));
        assert!(!is_complete("int f() {\n  return 1;"));
        assert!(is_complete("int f() {\n  return 1;\n}"));
        assert!(!is_complete("printf(\"%d\\n\",\n"));
        assert!(!is_complete("int x = 1 + \\"));
        assert!(!is_complete("/* open"));
        assert!(is_complete("char c = '}';"));
        assert!(is_complete("const char *s = \"{\";"));
        // A preprocessor conditional is one cell up to its `#endif`.
        assert!(!is_complete("#ifdef X\nint a = 1;\n"));
        assert!(!is_complete("#if 1\n#  ifndef Y\nint a;\n#endif\n"));
        assert!(is_complete(
            "#if 1\n#  ifndef Y\nint a;\n# endif\n#else\nint b;\n#endif\n"
        ));
        assert!(is_complete("#define IF_X 1\n#include <stdio.h>\n"));
    }
}
