//! Turning a cell into an object: the generated source (prelude, the cell's declarations, a
//! function running its statements) compiled by the system compiler in a private directory.

use std::path::PathBuf;

use super::split::{Item, ItemKind, Lang};
use crate::error::{Error, Result};

/// The support module's object, compiled from support/support.c when remjit was built.
const SUPPORT_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/remjit-repl-support.o"));
/// Cells compile as position-independent code: a thread-local of another cell lives in another
/// module, reached through `__tls_get_addr`, never with the initial-exec model gcc uses for an
/// `extern __thread` in (PIE) executable code.
const TLS_MODEL: &str = "-fPIC";
const SUPPORT_C_H: &str = include_str!("support/support_c.h");
const SUPPORT_CXX_H: &str = include_str!("support/support_cxx.h");

/// The compiler of a REPL session, with its private directory.
pub struct Compiler {
    lang: Lang,
    /// The compiler of cells.
    program: String,
    flags: Vec<String>,
    /// The flag that drops source excerpts and carets from diagnostics (clang and gcc differ).
    no_caret: &'static str,
    dir: tempfile::TempDir,
    /// Its lock file, locked while this compiler lives (see `sweep_stale_dirs`).
    _lock: std::fs::File,
    header: PathBuf,
    /// The precompiled head of the prelude: its text and the header to `-include`.
    pch: std::cell::RefCell<Option<(String, PathBuf)>>,
    pch_builds: std::cell::Cell<u32>,
    /// How many compiles read the head as text since the last precompiled one was built.
    textual_heads: std::cell::Cell<u32>,
    /// Warnings of compiles that succeeded, since [`Compiler::take_warnings`].
    warnings: std::cell::RefCell<String>,
    /// Time spent in compiler processes since [`Compiler::take_time`].
    spent: std::cell::Cell<std::time::Duration>,
}

/// The declarations earlier cells left for a new one.
#[derive(Debug, Default, Clone)]
pub struct Prelude {
    /// Up to the last `#include`: compiled once into a precompiled header.
    pub head: String,
    /// The rest, compiled with each cell.
    pub tail: String,
}

fn io_error(path: &std::path::Path, error: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        error,
    }
}

impl Compiler {
    /// The compiler for `lang`: `program`, else `$CC`/`$CXX`, else gcc/g++.
    pub fn new(lang: Lang, program: Option<String>, flags: &[String]) -> Result<Compiler> {
        let env = |var: &str, default: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let program = program.unwrap_or_else(|| match lang {
            Lang::C => env("CC", "gcc"),
            Lang::Cxx => env("CXX", "g++"),
        });
        sweep_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|e| io_error(std::path::Path::new("a temporary directory"), e))?;
        let lock = lock_dir(dir.path())?;
        let header = dir.path().join(match lang {
            Lang::C => "remjit-repl.h",
            Lang::Cxx => "remjit-repl.hh",
        });
        let text = match lang {
            Lang::C => SUPPORT_C_H,
            Lang::Cxx => SUPPORT_CXX_H,
        };
        std::fs::write(&header, text).map_err(|e| io_error(&header, e))?;
        let no_caret = if is_clang(&program) {
            "-fno-caret-diagnostics"
        } else {
            "-fno-diagnostics-show-caret"
        };
        Ok(Compiler {
            lang,
            program,
            flags: flags.to_vec(),
            no_caret,
            dir,
            _lock: lock,
            header,
            pch: Default::default(),
            pch_builds: Default::default(),
            textual_heads: Default::default(),
            spent: Default::default(),
            warnings: Default::default(),
        })
    }

    /// The warnings of successful compiles since the last call.
    pub fn take_warnings(&self) -> String {
        self.warnings.take()
    }

    /// The time spent in compiler processes since the last call.
    pub fn take_time(&self) -> std::time::Duration {
        self.spent.take()
    }

    /// The support module's object (C, whatever the session's language).
    pub fn support_object(&self) -> Result<Vec<u8>> {
        Ok(SUPPORT_OBJECT.to_vec())
    }

    /// What a finished compiler process left: the object, or its diagnostics. Its time and
    /// warnings are added up for [`Compiler::take_time`] and [`Compiler::take_warnings`].
    fn collect(
        &self,
        out: std::io::Result<std::process::Output>,
        started: std::time::Instant,
        obj: Option<&std::path::Path>,
    ) -> std::result::Result<Option<Vec<u8>>, String> {
        self.spent.set(self.spent.get() + started.elapsed());
        let out = out.map_err(|e| format!("cannot run the compiler `{}`: {e}", self.program))?;
        if !out.status.success() {
            let mut d = String::from_utf8_lossy(&out.stderr).into_owned();
            if d.is_empty() {
                d = format!("the compiler `{}` failed ({})", self.program, out.status);
            }
            return Err(d);
        }
        self.warnings
            .borrow_mut()
            .push_str(&String::from_utf8_lossy(&out.stderr));
        let Some(obj) = obj else { return Ok(None) };
        std::fs::read(obj)
            .map(Some)
            .map_err(|e| format!("cannot read {}: {e}", obj.display()))
    }

    /// Compiles cell `number` after `prelude`; `show` names the value's type in C. The object
    /// (none for a cell that only declares: it is checked, by the preprocessor alone when it
    /// holds only directives), or the compiler's diagnostics.
    pub fn compile(
        &self,
        number: u32,
        prelude: &Prelude,
        items: &[Item],
        show: Option<&str>,
    ) -> std::result::Result<Option<Vec<u8>>, String> {
        let p = self.start(number, prelude, items, show);
        self.finish(p)
    }

    /// Starts compiling cell `number` in the background (see [`Compiler::compile`]).
    pub fn start(
        &self,
        number: u32,
        prelude: &Prelude,
        items: &[Item],
        show: Option<&str>,
    ) -> Pending {
        self.start_unit(
            prelude,
            &[UnitCell {
                number,
                items,
                show,
            }],
            true,
        )
    }

    /// Starts compiling `cells` (one or more, in order) after `prelude` as one translation
    /// unit: one object, each cell's code in its own generated function. The prelude's head
    /// is precompiled first if `eager` (cells typed one by one: each compiles in a fraction of
    /// the time then), else once compiles read it as text a few times (building it costs
    /// several such compiles, in C++).
    pub fn start_unit(&self, prelude: &Prelude, cells: &[UnitCell], eager: bool) -> Pending {
        let all = || cells.iter().flat_map(|c| c.items.iter());
        let directives = all().all(|i| matches!(i.kind, ItemKind::Directive));
        let declarations = all().all(|i| matches!(i.kind, ItemKind::Directive | ItemKind::Carried));
        // A cell that includes headers itself makes a new head: precompile the next one.
        let includes = all().any(|i| i.kind == ItemKind::Directive && is_include(&i.text));
        let pch = if includes || directives || prelude.head.is_empty() {
            None
        } else if eager || self.textual_heads.get() >= TEXTUAL_HEADS {
            self.precompiled(&prelude.head)
        } else {
            self.existing_pch(&prelude.head)
        };
        if pch.is_none() && !prelude.head.is_empty() {
            self.textual_heads.set(self.textual_heads.get() + 1);
        }
        let (header, mut text) = match pch {
            Some(h) => (h, prelude.tail.clone()),
            None => (
                self.header.clone(),
                format!("{}{}", prelude.head, prelude.tail),
            ),
        };
        for c in cells {
            text = generate(self.lang, c.number, &text, c.items, c.show);
        }
        let number = cells.first().map_or(0, |c| c.number);
        let ext = match self.lang {
            Lang::C => "c",
            Lang::Cxx => "cc",
        };
        // A unit of several cells has names of its own: a compile of its first cell alone
        // (after the unit failed) may run while the unit's files are being removed.
        let stem = match cells.len() {
            1 => format!("cell{number}"),
            _ => format!("unit{number}"),
        };
        let src = self.dir.path().join(format!("{stem}.{ext}"));
        let obj = self.dir.path().join(format!("{stem}.o"));
        let mut pending = Pending {
            child: Err(String::new()),
            src: src.clone(),
            obj: obj.clone(),
            makes_object: !declarations,
            started: std::time::Instant::now(),
        };
        if let Err(e) = std::fs::write(&src, text) {
            pending.child = Err(format!("cannot write {}: {e}", src.display()));
            return pending;
        }
        let mut cmd = crate::input::compiler_command(&self.program);
        match (directives, declarations) {
            (true, _) => cmd.args(["-E", "-o", "/dev/null"]),
            (_, true) => cmd.arg("-fsyntax-only"),
            _ => cmd.arg("-c").arg("-o").arg(&obj),
        };
        cmd.args(["-pipe", "-g1", "-O0", "-fno-diagnostics-color", TLS_MODEL])
            .arg(self.no_caret)
            .arg("-include")
            .arg(&header)
            .args(&self.flags)
            .arg(&src)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        pending.child = cmd
            .spawn()
            .map_err(|e| format!("cannot run the compiler `{}`: {e}", self.program));
        pending
    }

    /// Waits for a compile [`Compiler::start`] began: the object, or the diagnostics.
    pub fn finish(&self, mut p: Pending) -> std::result::Result<Option<Vec<u8>>, String> {
        let child = std::mem::replace(&mut p.child, Err(String::new()))?;
        let out = child.wait_with_output();
        let obj = p.makes_object.then_some(p.obj.as_path());
        self.collect(out, p.started, obj)
    }
}

impl Pending {
    /// Whether its compiler is still running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Ok(c) => matches!(c.try_wait(), Ok(None)),
            Err(_) => false,
        }
    }
}

/// A compiler process running in the background; dropped unfinished, it is killed. Its
/// files go with it.
pub struct Pending {
    child: std::result::Result<std::process::Child, String>,
    src: PathBuf,
    obj: PathBuf,
    makes_object: bool,
    started: std::time::Instant,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.src);
        let _ = std::fs::remove_file(&self.obj);
    }
}

/// Compiles of units that read the prelude's head as text before it is precompiled: building
/// a C++ head of the standard headers costs about as much as three or four compiles reading
/// it (a precompiled one is read in a fraction of that), so, not knowing how many compiles
/// follow, build it once that much was spent without it.
const TEXTUAL_HEADS: u32 = 4;

/// A cell of a compile unit: its number, items and (C) the expression naming its value's type.
#[derive(Clone, Copy)]
pub struct UnitCell<'a> {
    pub number: u32,
    pub items: &'a [Item],
    pub show: Option<&'a str>,
}

impl Compiler {
    /// The precompiled header of `head`, if the last one built is for it.
    fn existing_pch(&self, head: &str) -> Option<PathBuf> {
        let pch = self.pch.borrow();
        let (text, h) = pch.as_ref()?;
        (text == head && !head.is_empty()).then(|| h.clone())
    }

    /// The header to `-include` for a prelude whose head is `head`, precompiled (again when
    /// the head changed); `None` for an empty head, or when precompiling fails (the cell then
    /// compiles the head as text).
    fn precompiled(&self, head: &str) -> Option<PathBuf> {
        if head.is_empty() {
            return None;
        }
        if let Some(h) = self.existing_pch(head) {
            return Some(h);
        }
        let n = self.pch_builds.get() + 1;
        self.pch_builds.set(n);
        self.textual_heads.set(0);
        let ext = match self.lang {
            Lang::C => "h",
            Lang::Cxx => "hh",
        };
        let h = self.dir.path().join(format!("prelude{n}.{ext}"));
        let text = format!("#include \"{}\"\n{head}", self.header.display());
        std::fs::write(&h, text).ok()?;
        let mut gch = h.clone().into_os_string();
        gch.push(".gch");
        let lang = match self.lang {
            Lang::C => "c-header",
            Lang::Cxx => "c++-header",
        };
        let mut cmd = crate::input::compiler_command(&self.program);
        cmd.args([
            "-g1",
            "-O0",
            "-fno-diagnostics-color",
            TLS_MODEL,
            "-x",
            lang,
        ])
        .args(&self.flags)
        .arg(&h)
        .arg("-o")
        .arg(&gch);
        let t = std::time::Instant::now();
        let ok = cmd.output().is_ok_and(|o| o.status.success());
        self.spent.set(self.spent.get() + t.elapsed());
        // The previous one is no longer needed.
        if let Some((_, old)) = self.pch.borrow_mut().take() {
            let mut old_gch = old.clone().into_os_string();
            old_gch.push(".gch");
            let _ = std::fs::remove_file(&old);
            let _ = std::fs::remove_file(old_gch);
        }
        if !ok {
            return None;
        }
        *self.pch.borrow_mut() = Some((head.to_string(), h.clone()));
        Some(h)
    }
}

/// The symbol holding the type name of cell `number`'s `auto` variable `name` (C++).
pub fn auto_type_symbol(number: u32, name: &str) -> String {
    format!("__remjit_type_{number}_{name}")
}

/// The private directories are `remjit-repl-PID-XXXXXX` in the temporary directory.
const DIR_PREFIX: &str = "remjit-repl-";

/// The lock file in each private directory, locked (`flock`) by the REPL that owns it.
const LOCK_FILE: &str = "lock";

/// A private directory without its lock file this long after its last change is left over
/// (its REPL died before locking it, or was an older remjit); a younger one is being made.
const UNLOCKED_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Creates and locks `dir`'s lock file, held while the returned file is open.
fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let f = std::fs::File::create(&path).map_err(|e| io_error(&path, e))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| io_error(&path, e.into()))?;
    Ok(f)
}

/// A lock file this young may not be locked yet by the REPL that just created it.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether the file at `path` last changed more than `age` ago.
fn older_than(path: &std::path::Path, age: std::time::Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > age))
}

/// Whether the private directory `dir` belongs to no live REPL: its lock file can be locked
/// (the owner's lock went with its process, whatever PID namespace it ran in), or it has none
/// long after it was made.
fn abandoned(dir: &std::path::Path) -> bool {
    let path = dir.join(LOCK_FILE);
    match std::fs::File::open(&path) {
        Ok(f) => {
            use rustix::fs::{flock, FlockOperation};
            let free = flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok();
            free && older_than(&path, LOCK_GRACE)
        }
        Err(_) => older_than(dir, UNLOCKED_GRACE),
    }
}

/// Removes the private directories of REPLs that ended without cleaning up (killed, or their
/// terminal closed): those whose lock no process holds.
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let ours = name.to_str().is_some_and(|n| n.starts_with(DIR_PREFIX));
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if ours && is_dir && abandoned(&e.path()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Whether `program` is clang (its `--version` says so; `cc` may be either).
fn is_clang(program: &str) -> bool {
    crate::input::compiler_command(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("clang"))
}

/// Whether a directive is an `#include`.
pub fn is_include(directive: &str) -> bool {
    let d = directive.trim_start().trim_start_matches('#').trim_start();
    d.starts_with("include")
}

/// The source of cell `number`.
pub fn generate(
    lang: Lang,
    number: u32,
    prelude: &str,
    items: &[Item],
    show: Option<&str>,
) -> String {
    let mut s = String::from(prelude);
    let at = |s: &mut String, line: u32| s.push_str(&format!("#line {line} \"cell {number}\"\n"));
    let mut body = String::new();
    for item in items {
        match &item.kind {
            ItemKind::Directive | ItemKind::Carried | ItemKind::Function { .. } => {
                at(&mut s, item.line);
                s.push_str(&item.text);
                s.push('\n');
            }
            ItemKind::Variable(v) => {
                at(&mut s, item.line);
                s.push_str(&v.definition);
                s.push('\n');
                if lang == Lang::Cxx && v.extern_decl.is_empty() {
                    // `auto`: the type is the compiler's; record its name for later cells.
                    for (name, _) in &v.names {
                        s.push_str(&format!(
                            "#line 1 \"<remjit>\"\nextern \"C\" const char *const {} = \
                             ::__remjit::tn<decltype({name})>();\n",
                            auto_type_symbol(number, name)
                        ));
                    }
                }
                for init in &v.inits {
                    at(&mut body, item.line);
                    body.push_str(init);
                    body.push('\n');
                }
            }
            ItemKind::Statement => {
                at(&mut body, item.line);
                body.push_str(&item.text);
                body.push('\n');
            }
            ItemKind::Expression => {
                // The expression keeps its own lines and columns: the code around it is on
                // lines of its own (no macro, whose arguments could not hold `#line`).
                let (open, close) = match (lang, show) {
                    (Lang::C, Some(t)) => (
                        "{ __auto_type __remjit_v = (".to_string(),
                        format!(
                            "); const char *__remjit_t = {t}; __remjit_show_c(&__remjit_v, \
                             sizeof __remjit_v, __builtin_classify_type(__remjit_v), \
                             __remjit_t ? __remjit_t : __REMJIT_TYPE(__remjit_v)); }}"
                        ),
                    ),
                    (Lang::C, None) => ("(void)(".to_string(), ");".to_string()),
                    (Lang::Cxx, _) if !has_lambda(&item.text) => {
                        // A temporary is returned by value, an lvalue by reference: the
                        // expression's type needs it written twice (same lines, same messages).
                        let mut open = String::from(
                            "::__remjit::run([&]() -> ::__remjit::keep_t<decltype((\n",
                        );
                        at(&mut open, item.line);
                        open.push_str(&item.text);
                        open.push_str("\n#line 1 \"<remjit>\"\n))> { return (");
                        (open, "); });".to_string())
                    }
                    (Lang::Cxx, _) => (
                        // C++17 has no lambda in `decltype`: references as they come.
                        "::__remjit::run([&]() -> decltype(auto) { return (".to_string(),
                        "); });".to_string(),
                    ),
                };
                body.push_str(&format!("#line 1 \"<remjit>\"\n{open}\n"));
                at(&mut body, item.line);
                body.push_str(&item.text);
                body.push_str(&format!("\n#line 1 \"<remjit>\"\n{close}\n"));
            }
        }
    }
    let any_body = items.iter().any(|i| {
        matches!(i.kind, ItemKind::Statement | ItemKind::Expression)
            || matches!(&i.kind, ItemKind::Variable(v) if !v.inits.is_empty())
    });
    if any_body {
        let linkage = if lang == Lang::Cxx {
            "extern \"C\" "
        } else {
            ""
        };
        s.push_str(&format!(
            "#line 1 \"<remjit>\"\nstatic void __remjit_body_{number}(void) {{\n{body}}}\n\
             #line 1 \"<remjit>\"\n{linkage}int __remjit_cell_{number}(void) \
             {{ __remjit_body_{number}(); __remjit_flush(); return 0; }}\n"
        ));
    }
    s
}

/// Whether a C++ expression holds a lambda (a `[` that follows no operand).
fn has_lambda(src: &str) -> bool {
    use super::lex::Kind;
    let toks = super::lex::lex(src).tokens;
    toks.iter().enumerate().any(|(k, t)| {
        t.kind == Kind::Punct
            && t.text(src) == "["
            && k.checked_sub(1).is_none_or(|p| {
                let prev = toks[p].text(src);
                let operand =
                    matches!(prev, ")" | "]") || (toks[p].kind != Kind::Punct && prev != "return");
                !operand
            })
    })
}

/// The compiler's messages without the lines about generated code (nor the repeats an
/// expression written twice gives).
pub fn tidy_diagnostics(text: &str) -> String {
    let mut out = String::new();
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        if !seen.insert(line) {
            continue;
        }
        let generated = line.contains("__remjit")
            || line.contains("__REMJIT")
            || line.contains("remjit-repl.h");
        let context = line.ends_with("At top level:") || line.starts_with("In file included from");
        // An error in generated code after one in the cell follows from it.
        let follows = line.starts_with("<remjit>:") && out.contains(": error: ");
        if generated || context || follows {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
