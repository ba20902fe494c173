//! `remjit repl` driven through a pipe (and once through a pseudo-terminal), in process and out
//! of process: C and C++ sessions whose variables and types persist, value printing, `%undo`,
//! redefinition, `%save`, crash recovery with replay, Ctrl-C, and a session over TCP.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{remjit, run_with_timeout};

/// Runs `remjit repl ARGS` with `input` on stdin.
fn repl(args: &[&str], input: &str) -> Output {
    repl_env(args, input, &[])
}

/// Runs `remjit repl ARGS` with `input` on stdin and `env` set.
fn repl_env(args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input");
    std::fs::write(&file, input).unwrap();
    let mut cmd = Command::new(remjit());
    cmd.arg("repl")
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::fs::File::open(&file).unwrap());
    run_with_timeout(&mut cmd, Duration::from_secs(180))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts the exact stdout of a session and its exit status.
fn assert_session(args: &[&str], input: &str, stdout: &str, status: i32) -> Output {
    let out = repl(args, input);
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert_eq!(text(&out.stdout), stdout, "{args:?}; stderr:\n{err}");
    assert_eq!(out.status.code(), Some(status), "{args:?}; stderr:\n{err}");
    out
}

/// In process, out of process with shared memory, and with copies.
const MODES: &[&[&str]] = &[&["--in-process"], &[], &["--no-shared-memory"]];

const C_SESSION: &str = r#"#include <stdio.h>
#include <string.h>
int counter = 40;
struct point { int x, y; };
typedef struct point point_t;
point_t origin = {3, 4};
int norm2(point_t p) {
  return p.x * p.x + p.y * p.y;
}
counter += 2;
printf("counter=%d norm2=%d\n", counter, norm2(origin));
counter
char name[16] = "remjit";
strlen(name)
#define TWICE(v) ((v) * 2)
TWICE(counter) \
  + 1
origin.x = 10;
norm2(origin)
"#;

const C_EXPECTED: &str = "counter=42 norm2=25\n(int) 42\n(unsigned long) 6\n(int) 85\n(int) 116\n";

#[test]
fn c_variables_types_and_macros_persist() {
    for mode in MODES.iter().chain([&["--no-compile-ahead"][..]].iter()) {
        assert_session(mode, C_SESSION, C_EXPECTED, 0);
    }
}

/// A REPL killed before it could clean up leaves its directory; the next REPL removes it: its
/// lock file is locked by no process. A directory whose lock is held (here by this test, as
/// by a live REPL in any PID namespace) stays.
#[test]
fn stale_private_directories_are_removed() {
    let make = |name: &str| {
        let dir = std::env::temp_dir().join(format!("remjit-repl-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cell1.c"), "int x;").unwrap();
        let lock = std::fs::File::create(dir.join("lock")).unwrap();
        // Made an hour ago: no REPL is between creating and locking it.
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        lock.set_modified(hour_ago).unwrap();
        (dir, lock)
    };
    let (stale, _) = make(&format!("{}-stale", std::process::id()));
    let (live, held) = make(&format!("{}-live", std::process::id()));
    // SAFETY: flock on a descriptor of ours.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    assert_session(&["--in-process"], "1 + 1\n", "(int) 2\n", 0);
    let (stale_left, live_left) = (stale.exists(), live.exists());
    let _ = std::fs::remove_dir_all(&stale);
    let _ = std::fs::remove_dir_all(&live);
    assert!(!stale_left, "{} is still there", stale.display());
    assert!(live_left, "{} was removed while locked", live.display());
}

/// A thread-local keeps its value across cells (cells are compiled -fPIC: another cell's
/// thread-local is reached through __tls_get_addr).
#[test]
fn thread_locals_persist() {
    for mode in &MODES[..2] {
        assert_session(mode, "__thread int t = 1;\nt += 4;\nt\n", "(int) 5\n", 0);
    }
}

/// clang compiles the cells as well as gcc (its own diagnostics flags, its precompiled
/// headers).
#[test]
fn clang_compiles_the_cells() {
    let out = repl_env(&[], C_SESSION, &[("CC", "clang-19")]);
    assert_eq!(text(&out.stdout), C_EXPECTED, "{}", text(&out.stderr));
    let out = repl_env(&[], "int x = 1;\nint y = nope;\nx\n", &[("CC", "clang-19")]);
    assert_eq!(text(&out.stdout), "(int) 1\n");
    assert_eq!(
        text(&out.stderr),
        "cell 2:1:9: error: use of undeclared identifier 'nope'\n"
    );
    let input = "#include <string>\nstd::string s = \"a\";\ns + \"b\"\n";
    let out = repl_env(&["--lang", "c++"], input, &[("CXX", "clang++-19")]);
    assert_eq!(
        text(&out.stdout),
        "(std::string) \"ab\"\n",
        "{}",
        text(&out.stderr)
    );
}

/// A cell compiled ahead on the assumption that the one before is kept is compiled again when
/// that one fails.
#[test]
fn compiled_ahead_cells_follow_failures() {
    let out = repl(&[], "double v = nope;\nv\nint w = 3;\nw\n");
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "(int) 3\n", "{err}");
    assert!(
        err.contains("cell 1:1:12: error: ‘nope’ undeclared"),
        "{err}"
    );
    assert!(err.contains("cell 2:1:1: error: ‘v’ undeclared"), "{err}");
}

/// A cell still open at the end of input is reported, not submitted (and never overflows the
/// stack); the cells before it ran.
#[test]
fn an_open_cell_at_end_of_input_is_reported() {
    for open in [
        "int a[",
        "{",
        "enum {",
        "struct S {",
        "int f() {",
        "int x = (",
    ] {
        let out = repl(&["--in-process"], &format!("6 * 7\n{open}\n"));
        let err = text(&out.stderr);
        assert_eq!(text(&out.stdout), "(int) 42\n", "{open}: {err}");
        assert_eq!(err, "remjit: incomplete cell at end of input\n", "{open}");
        assert_eq!(out.status.code(), Some(1), "{open}: {err}");
    }
}

/// `int (*p)(void);` defines one pointer that later cells share (it was taken for a prototype,
/// and each cell had its own null `p`); a redefined function reaches the pointers to it.
#[test]
fn function_pointer_variables_persist() {
    let input = "int f(void) { return 1; }\nint (*p)(void);\np = f;\np == f\np()\n\
                 int (*q)(void) = f;\nq()\nint f(void) { return 3; }\nq() + p()\n";
    for mode in MODES {
        assert_session(mode, input, "(int) 1\n(int) 1\n(int) 1\n(int) 6\n", 0);
    }
    let cxx = "(bool) true\n(int) 1\n(int) 1\n(int) 6\n";
    assert_session(&["--lang", "c++"], input, cxx, 0);
}

/// A C++ expression's temporary is returned by value (`V{1}.x` returned a reference to a dead
/// temporary and crashed), an lvalue by reference; a static const member without definition is
/// not odr-used; an xvalue is copied (or, move-only, referred to: never moved from); an error
/// is reported once; a cell starting with a lambda is an expression (it was taken for a
/// function definition).
#[test]
fn cxx_temporaries_and_constants_print() {
    let input = "#include <string>\n#include <utility>\nstruct V { int x; };\nV{1}.x\n\
                 struct S { static const int v = 5; };\nS::v\nstd::string s = \"abc\";\n\
                 std::move(s)\ns\nchar nm[8] = \"hi\";\nnm\nnope + 1\n([](int a) { return a * 2; }(4))\n\
                 [](int a) { return a * 3; }(4)\n\
                 struct MO { int v = 5; MO() = default; MO(MO &&o) : v(o.v) { o.v = 0; } };\n\
                 MO mo;\nstd::move(mo)\nmo.v\n";
    let expected = "(int) 1\n(int) 5\n(std::string) \"abc\"\n(std::string) \"abc\"\n\
                    (char [8]) \"hi\"\n(int) 8\n(int) 12\n(MO) { 05 00 00 00 }\n(int) 5\n";
    for mode in [&["--in-process"][..], &[]] {
        let out = assert_session(&[&["--lang", "c++"], mode].concat(), input, expected, 1);
        assert_eq!(
            text(&out.stderr),
            "cell 12:1:1: error: ‘nope’ was not declared in this scope\n"
        );
    }
}

/// A structured binding at the top level is refused with a message (it made every later cell
/// fail: "structured binding declaration cannot be 'extern'"); one in a block runs.
/// Top-level structured bindings (of a pair, a struct, an array) are kept: a hidden global
/// holds the object, later cells see the names, assignments through them persist and come
/// back after a crash.
#[test]
fn top_level_structured_bindings_are_kept() {
    let input = "#include <utility>\n#include <cstdio>\nauto [a, b] = std::pair<int, int>(1, 2);\n\
                 a + b\nb = 10;\nstd::printf(\"%d %d\\n\", a, b);\n\
                 struct P { int x; double y; };\nconst auto &[px, py] = P{3, 4.5};\npy\n\
                 int arr[2] = {7, 8};\nauto &[r0, r1] = arr;\nr1 = 9;\narr[1]\n\
                 *(int *)0 = 1;\na + b + r1\n";
    let expected = "(int) 3\n1 10\n(double) 4.5\n(int) 9\n(int) 20\n";
    let out = assert_session(&["--lang", "c++"], input, expected, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("remjit: executor restarted; 13 cells relinked"),
        "{err}"
    );
    let out = repl(
        &["--lang", "c++"],
        "#include <utility>\nstatic auto [a, b] = std::pair{1, 2};\n",
    );
    assert_eq!(
        text(&out.stderr),
        "remjit: error: cell 2:1: a `static` or `thread_local` structured binding is not kept \
         at the top level (later cells could not declare its names); drop the `static` (`auto \
         [a, b] = ...;`) or bind in a block (`{ static auto [a, b] = ...; ... }`)\n"
    );
}

#[test]
fn static_member_definitions_are_kept() {
    let input = "#include <string>\n\
                 struct Cnt { static int n; static std::string s; static int *p; };\n\
                 int Cnt::n = 4;\nCnt::n\nstd::string Cnt::s = \"hey\";\nCnt::s\n\
                 int *Cnt::p = &Cnt::n;\n*Cnt::p += 1;\nCnt::n\nint Cnt::n = 9;\nCnt::n\n";
    let expected = "(int) 4\n(std::string) \"hey\"\n(int) 5\n(int) 9\n";
    for mode in [&["--in-process"][..], &[]] {
        assert_session(&[&["--lang", "c++"], mode].concat(), input, expected, 0);
    }
}

/// A function (or an `if`) whose `{` is on the next line is one cell, as is a preprocessor
/// conditional up to its `#endif`, both branches of which may define the same variable (they
/// were cut into cells that did not compile, or a variable no later cell saw).
#[test]
fn bodies_on_the_next_line_and_conditionals_are_one_cell() {
    let input =
        "#include <stdio.h>\nint fib(int n)\n{\n  return n < 2 ? n : fib(n - 1) + fib(n - 2);\n}\n\
                 fib(10)\nint sq(int v)\n  {\n  return v * v; }\nsq(fib(5))\n\
                 if (sq(2) == 4)\n{\n  puts(\"four\");\n}\n\
                 #define TWO 2\n#if TWO == 2\nint a = 22;\n#else\nint a = 33;\n#endif\na\n\
                 #ifdef TWO\n# ifndef THREE\nint f(void) { return a + 1; }\n# endif\n#endif\nf()\n";
    let expected = "(int) 55\n(int) 25\nfour\n(int) 22\n(int) 23\n";
    for mode in MODES.iter().chain([&["--no-compile-ahead"][..]].iter()) {
        assert_session(mode, input, expected, 0);
    }
    assert_session(&["--lang", "c++"], input, expected, 0);
}

#[test]
fn cxx_session() {
    let input = r#"#include <iostream>
#include <string>
#include <vector>
std::string greeting = "hello";
std::vector<int> v{1, 2, 3};
class Counter {
 public:
  int next() { return ++n; }
 private:
  int n = 0;
};
Counter c;
v.push_back(4);
c.next();
std::cout << greeting << " " << v.size() << " " << c.next() << std::endl;
greeting + " world"
v
c.next()
template <class T> T twice(T a) { return a + a; }
twice(2.25)
auto words = std::vector<std::string>{"x", "y"};
auto add = [](int a, int b) { return a + b; };
words.size() + add(1, 2)
"#;
    let expected = "hello 4 2\n(std::string) \"hello world\"\n(std::vector<int>) size 4\n(int) 3\n(double) 4.5\n(unsigned long) 5\n";
    for mode in [&["--in-process"][..], &[]] {
        assert_session(&[&["--lang", "c++"], mode].concat(), input, expected, 0);
    }
}

#[test]
fn c_values_of_each_kind() {
    let input = r#"#include <stdbool.h>
enum color { RED, GREEN, BLUE };
enum color c = BLUE;
struct pair { int a, b; };
struct pair pr = {1, 2};
int x = 7;
bool yes = true;
const char *s = "hi\n";
char *none = 0;
42
3.5
2.0f
-7LL
10u
'a'
(char)'b'
yes
c
pr
s
none
(void *)0x1000
x == 7
sizeof(struct pair)
unsigned char uc = 200;
uc
1.0f / 3
"#;
    let expected = "(int) 42\n(double) 3.5\n(float) 2\n(long long) -7\n(unsigned int) 10\n\
                    (int) 97\n(char) 'b'\n(bool) true\n(enum color) 2\n\
                    (struct pair) { 01 00 00 00 02 00 00 00 }\n(const char *) \"hi\\n\"\n\
                    (char *) 0x0\n(void *) 0x1000\n(int) 1\n(unsigned long) 8\n\
                    (unsigned char) '\\xc8'\n(float) 0.333333343\n";
    assert_session(&[], input, expected, 0);
    // A pointer prints in hex.
    let out = repl(&[], "int x = 1;\n&x\n");
    let v = text(&out.stdout);
    assert!(v.starts_with("(int *) 0x") && v.len() > 12, "{v}");
}

#[test]
fn cxx_values_of_each_kind() {
    let input = r#"#include <string>
#include <map>
enum class Mode : unsigned char { Off, On };
struct P { int a; };
true
'x'
Mode::On
nullptr
std::string("abc")
std::map<int, int>{{1, 2}, {3, 4}}
"lit"
P{5}
1.0 / 3
char nm[3] = {'a', 'b', 'c'};
nm
1.0f / 3
"#;
    // A char array without a NUL shows its own bytes only.
    let expected = "(bool) true\n(char) 'x'\n(Mode) 1\n(std::nullptr_t) 0x0\n\
                    (std::string) \"abc\"\n(std::map<int, int>) size 2\n(const char [4]) \"lit\"\n\
                    (P) { 05 00 00 00 }\n(double) 0.33333333333333331\n(char [3]) \"abc\"\n\
                    (float) 0.333333343\n";
    assert_session(&["--lang", "c++"], input, expected, 0);
}

#[test]
fn redefinition_reaches_earlier_callers_and_undo_restores() {
    let input = r#"int f(void) { return 1; }
int g(void) { return f() * 10; }
g()
int f(void) { return 2; }
g()
%undo
%undo
g()
int v = 5;
double v = 2.5;
v
%undo
%undo
v
"#;
    let out = assert_session(
        &[],
        input,
        "(int) 10\n(int) 20\n(int) 10\n(double) 2.5\n(int) 5\n",
        0,
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("remjit: cell 5 removed\nremjit: cell 4 removed\n"),
        "{err}"
    );
}

#[test]
fn diagnostics_name_the_cell_and_line() {
    let out = repl(&[], "int ok = 1;\nint f(void) {\n  return nope;\n}\nok\n");
    let err = text(&out.stderr);
    assert!(err.contains("cell 2:2:10: error:"), "{err}");
    assert!(err.contains("nope"), "{err}");
    assert!(!err.contains("__remjit"), "{err}");
    assert_eq!(text(&out.stdout), "(int) 1\n");
    assert_eq!(out.status.code(), Some(1));
}

/// Crashes of each kind end the executor; a fresh one gets the earlier cells, their
/// statements replayed, so the values are back.
#[test]
fn recovery_after_crashes() {
    let input = r#"#include <stdio.h>
#include <stdlib.h>
int x = 1;
x = 41;
printf("printed once\n");
int *null = 0;
*null = 3;
x + 1
abort();
x + 2
exit(3);
x + 3
"#;
    for mode in &MODES[1..] {
        let out = assert_session(
            mode,
            input,
            "printed once\n(int) 42\n(int) 43\n(int) 44\n",
            1,
        );
        let err = text(&out.stderr);
        assert!(
            err.contains("remjit: cell 7: the JIT'd code crashed: SIGSEGV (signal 11) at address 0x0, in `__remjit_body_7`"),
            "{err}"
        );
        assert!(err.contains("at cell 7:1"), "{err}");
        assert!(
            err.contains("remjit: cell 9: the JIT'd program died of SIGABRT"),
            "{err}"
        );
        assert!(
            err.contains("remjit: cell 11: the executor exited with status 3"),
            "{err}"
        );
        assert!(
            err.contains("remjit: executor restarted; 6 cells relinked, 2 replayed in "),
            "{err}"
        );
    }
    // Without replay, the fresh executor starts empty.
    let out = repl(
        &["--no-replay"],
        "int x = 4;\n*(int *)0 = 1;\nint y = 2;\ny\n",
    );
    assert_eq!(text(&out.stdout), "(int) 2\n");
    assert!(text(&out.stderr).contains("remjit: executor restarted empty"));
}

/// After a crash every cell comes back at the same addresses: `&g` and `&f` print the same
/// as before, even though an undone cell took a call stub that no replay makes again (the
/// session's stubs come back where they were), and pointers stored before still hold.
#[test]
fn recovery_keeps_the_addresses() {
    let input = "int g = 5;\nint h(void) { return 2; }\n%undo\nint f(void) { return g; }\n\
                 int *pg = &g; int (*pf)(void) = f;\n(void *)&g\n(void *)&f\n(void *)pg\n\
                 *(int *)0 = 1;\n(void *)&g\n(void *)&f\n(void *)pg\npf() + *pg\n";
    for mode in &MODES[1..] {
        let out = repl(mode, input);
        let (stdout, err) = (text(&out.stdout), text(&out.stderr));
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 7, "{mode:?}: {stdout}{err}");
        assert!(lines[0].starts_with("(void *) 0x"), "{stdout}");
        assert_eq!(lines[0], lines[2], "{mode:?}: {stdout}");
        assert_eq!(lines[..3], lines[3..6], "{mode:?}: {stdout}");
        assert_eq!(lines[6], "(int) 10", "{mode:?}");
        assert!(
            err.contains("remjit: executor restarted; 6 cells relinked, 4 replayed in "),
            "{err}"
        );
        assert!(!err.contains("new addresses"), "{err}");
    }
}

/// Where the new executor cannot give the old addresses (in process, the old memory stays
/// mapped), the cells are linked elsewhere, still work, and the note says so: the support
/// module, the two cells' unit (they arrived together) and the block of call stubs.
#[test]
fn a_restart_that_cannot_keep_the_addresses_says_so() {
    let out = assert_session(
        &["--in-process"],
        "int g = 4;\nint f(void) { return g; }\n%restart\nf()\n",
        "(int) 4\n",
        0,
    );
    let err = text(&out.stderr);
    assert!(
        err.starts_with("remjit: executor restarted; 2 cells relinked, 0 replayed in "),
        "{err}"
    );
    assert!(
        err.ends_with(
            " ms (3 modules or stub blocks at new addresses: the new executor could not give \
             the old ones, so pointers from before the restart into them are stale)\n"
        ),
        "{err}"
    );
}

/// A cell whose replay crashes (it behaves differently the second time): the REPL says so
/// and starts empty rather than stopping.
#[test]
fn a_replay_that_crashes_restarts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let input = format!(
        "#include <stdio.h>\n#include <stdlib.h>\nint k = 7;\n\
         if (fopen(\"{m}\", \"r\")) abort(); else fclose(fopen(\"{m}\", \"w\"));\n\
         *(int *)0 = 1;\nk\nint j = 2;\nj\n",
        m = marker.display()
    );
    let out = repl(&[], &input);
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "(int) 2\n", "{err}");
    assert!(
        err.contains("remjit: error: replaying the cells failed: "),
        "{err}"
    );
    assert!(err.contains("remjit: executor restarted empty\n"), "{err}");
    assert!(err.contains("cell 6:1:1: error: ‘k’ undeclared"), "{err}");
}

#[test]
fn recovery_after_an_uncaught_exception() {
    let input = r#"#include <string>
#include <stdexcept>
std::string s = "kept";
s += "!";
throw std::runtime_error("boom");
s
"#;
    let out = assert_session(&["--lang", "c++"], input, "(std::string) \"kept!\"\n", 1);
    let err = text(&out.stderr);
    assert!(err.contains("what():  boom"), "{err}");
    assert!(
        err.contains("remjit: cell 5: the JIT'd program died of SIGABRT"),
        "{err}"
    );
    assert!(
        err.contains("executor restarted; 4 cells relinked"),
        "{err}"
    );
}

#[test]
fn saved_session_compiles_natively() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saved.c");
    let input = format!("{C_SESSION}%save {}\n", file.display());
    assert_session(&[], &input, C_EXPECTED, 0);
    assert_eq!(native_output(&file), "counter=42 norm2=25\n");
}

/// The stdout of saved C program `file`, compiled natively by gcc (next to it).
fn native_output(file: &std::path::Path) -> String {
    let exe = file.with_extension("exe");
    let cpp = file.extension().is_some_and(|e| e == "cpp");
    let cc = Command::new(if cpp { "g++" } else { "gcc" })
        .arg(file)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(cc.status.success(), "{}", text(&cc.stderr));
    text(&Command::new(&exe).output().unwrap().stdout)
}

/// A saved session keeps both branches of a cell's `#if`/`#else` (the later branch's variable
/// dropped the earlier one's definition), its function pointer and its function whose body
/// was on the next line.
/// C++ `%save` keeps only the last definition of a redefined function, and every overload.
#[test]
fn saved_cxx_redefinitions_compile_natively() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saved.cpp");
    let input = format!(
        "#include <cstdio>\nint f(int a) {{ return a; }}\nf(1)\n\
         int f(int b) {{ return b * 2; }}\nint f(double d) {{ return 7; }}\n\
         std::printf(\"%d %d\\n\", f(2), f(1.5));\n%save {}\n",
        file.display()
    );
    assert_session(&["--lang", "c++"], &input, "(int) 1\n4 7\n", 0);
    assert_eq!(native_output(&file), "4 7\n");
}

#[test]
fn saved_conditionals_compile_natively() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saved.c");
    let input = format!(
        "#include <stdio.h>\nint f(void) {{ return 1; }}\nint (*p)(void);\np = f;\n\
         #if 1\nint a = 2;\n#else\nint a = 3;\n#endif\nint g(int n)\n{{ return n + a; }}\n\
         printf(\"%d\\n\", g(p()));\n%save {}\n",
        file.display()
    );
    assert_session(&[], &input, "3\n", 0);
    assert_eq!(native_output(&file), "3\n");
}

#[test]
fn commands_lib_time_restart_help() {
    let input = "%lib z\n#include <zlib.h>\nconst char *v = 0;\nv = zlibVersion();\n\
                 %time on\nint n = 2;\n%time off\nn += 40;\n%restart\nv == zlibVersion()\nn\n\
                 %help\n%nonsense\n%quit\nn\n";
    let out = repl(&[], input);
    let stdout = text(&out.stdout);
    let err = text(&out.stderr);
    assert!(
        stdout.starts_with("(int) 1\n(int) 42\nCells: C or C++"),
        "{stdout}\n{err}"
    );
    assert!(stdout.contains("%save FILE"), "{stdout}");
    assert_eq!(err.matches("remjit: time: compile ").count(), 1, "{err}");
    assert!(
        err.contains("remjit: executor restarted; 5 cells relinked, 2 replayed in "),
        "{err}"
    );
    assert!(
        err.contains("remjit: error: unknown command `%nonsense`: %help lists them"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
}

/// A token (64 hex digits): tests need distinct ones, not secret ones.
fn test_token(seed: u8) -> String {
    (0..32u8).map(|i| format!("{:02x}", i ^ seed)).collect()
}

/// `remjit-executor listen=127.0.0.1:0` with `token`, its stdout to `stdout`: the child and
/// its address.
fn listen(token: &str, stdout: Stdio) -> (std::process::Child, String) {
    listen_with(token, stdout, &[])
}

/// A listening executor killed (and reaped) when the test ends, passing or not: a
/// `keep-listening` one never ends by itself.
struct Listener(std::process::Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// [`listen`] with more arguments (`keep-listening`).
fn listen_with(token: &str, stdout: Stdio, args: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut exec = Command::new(remjit().with_file_name("remjit-executor"))
        .arg("listen=127.0.0.1:0")
        .args(args)
        .env("REMJIT_TOKEN", token)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(exec.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    // Whatever else it says is read (and dropped), never left to fill the pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (exec, addr)
}

#[test]
fn session_over_tcp() {
    let token = test_token(11);
    let (exec, addr) = listen(&token, Stdio::piped());
    let input = "#include <stdio.h>\nint x = 20;\nx += 1;\nprintf(\"remote %d\\n\", x);\nx * 2\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input");
    std::fs::write(&file, input).unwrap();
    let mut cmd = Command::new(remjit());
    cmd.args(["repl", &format!("--oop-executor-connect={addr}")])
        .env("REMJIT_TOKEN", &token)
        .stdin(std::fs::File::open(&file).unwrap());
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
    // The value comes back to the controller; printf writes on the executor's stdout.
    assert_eq!(text(&out.stdout), "(int) 42\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    let done = exec.wait_with_output().unwrap();
    assert_eq!(text(&done.stdout), "remote 21\n");
}

/// Over TCP to an executor serving one session, a crash ends it: no executor can be had
/// again, and the REPL ends with an error (saying what would let it reconnect) instead of
/// going on without one.
#[test]
fn a_crash_over_tcp_ends_the_session() {
    let token = test_token(12);
    let (mut exec, addr) = listen(&token, Stdio::null());
    let connect = format!("--oop-executor-connect={addr}");
    let out = repl_env(
        &[&connect, "--oop-executor-timeout=5"],
        "int x = 1;\n*(int *)0 = 1;\nx\n",
        &[("REMJIT_TOKEN", &token)],
    );
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "", "{err}");
    assert!(
        err.contains("remjit: error: cannot restart the executor: "),
        "{err}"
    );
    assert!(
        err.contains("start the executor with `remjit-executor listen=... keep-listening`"),
        "{err}"
    );
    assert!(
        err.ends_with("remjit: error: the session is lost: no executor runs its code\n"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1));
    let _ = exec.kill();
    let _ = exec.wait();
}

/// Over TCP to a `keep-listening` executor, a crash ends only that connection's session
/// process: the REPL connects again, relinks every cell at the same addresses and replays,
/// and the listener serves on.
#[test]
fn a_crash_over_tcp_reconnects_and_replays() {
    let token = test_token(12);
    let (exec, addr) = listen_with(&token, Stdio::null(), &["keep-listening"]);
    let _listener = Listener(exec);
    let connect = format!("--oop-executor-connect={addr}");
    let input = "int g = 5;\nint f(void) { return g; }\n(void *)&g\n(void *)&f\ng = 7;\n\
                 *(int *)0 = 1;\n(void *)&g\n(void *)&f\nf()\n";
    let out = repl_env(&[&connect], input, &[("REMJIT_TOKEN", &token)]);
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}{err}");
    assert!(lines[0].starts_with("(void *) 0x"), "{stdout}");
    assert_eq!(lines[..2], lines[2..4], "{stdout}");
    assert_eq!(lines[4], "(int) 7");
    assert!(
        err.contains("remjit: cell 6: the executor closed the connection"),
        "{err}"
    );
    assert!(
        err.contains("remjit: executor restarted; 5 cells relinked, 3 replayed in "),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The listener still serves.
    let again = repl_env(&[&connect], "6 * 7\n", &[("REMJIT_TOKEN", &token)]);
    assert_eq!(text(&again.stdout), "(int) 42\n", "{}", text(&again.stderr));
}

/// Ctrl-C over TCP reaches the executor as urgent data: the looping cell is interrupted, the
/// REPL connects again (to a `keep-listening` executor), replays and goes on with the next
/// cell.
#[test]
fn ctrl_c_over_tcp_interrupts_the_cell() {
    let token = test_token(13);
    let (mut exec, addr) = listen_with(&token, Stdio::piped(), &["keep-listening"]);
    let mut out = exec.stdout.take().unwrap();
    let _listener = Listener(exec);
    let mut repl = Command::new(remjit())
        .args(["repl", &format!("--oop-executor-connect={addr}")])
        .env("REMJIT_TOKEN", &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = repl.stdin.take().unwrap();
    stdin
        .write_all(b"#include <stdio.h>\nint x = 41;\nputs(\"spin\" \"ning\"); fflush(stdout); while (1) {}\n")
        .unwrap();
    // The cell runs once the executor printed its marker (its stdout is the executor's).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = out.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(8).any(|w| w == b"spinning") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = (repl.kill(), repl.wait());
        panic!("the looping cell never ran");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(repl.id() as libc::pid_t, libc::SIGINT) };
    stdin.write_all(b"x + 1\n").unwrap();
    drop(stdin);
    let st = common::wait_bounded(&mut repl, Duration::from_secs(60), "the REPL");
    let (mut stdout, mut stderr) = (String::new(), String::new());
    repl.stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    repl.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(stdout, "(int) 42\n", "{stderr}");
    assert!(stderr.contains("remjit: cell 3: interrupted\n"), "{stderr}");
    assert!(
        stderr.contains("remjit: executor restarted; 2 cells relinked, 0 replayed in "),
        "{stderr}"
    );
    assert_eq!(st.code(), Some(1), "{st:?}: {stderr}");
}

/// Everything the terminal shows until it shows `what` anew (or the deadline passes).
fn read_until(master: &mut std::fs::File, seen: &mut String, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    let from = seen.len();
    while !seen[from..].contains(what) {
        if Instant::now() > deadline {
            return false;
        }
        match master.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(_) => return false,
        }
    }
    true
}

/// In a real terminal: line editing reads the cells, and Ctrl-C (sent once the loop's cell
/// printed its marker) ends an infinite loop (the executor dies of SIGINT, the REPL restarts it
/// and replays) without ending the session; a function's body may start on the next line, and
/// Ctrl-D on a continuation line ends the session with the open cell reported.
#[test]
fn terminal_ctrl_c_interrupts_an_infinite_loop() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty with no name, termios or window size.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    // SAFETY: fresh descriptors we own.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    // SAFETY: fcntl on our descriptor.
    unsafe { libc::fcntl(m, libc::F_SETFL, libc::O_NONBLOCK) };
    let mut cmd = Command::new(remjit());
    cmd.arg("repl")
        .env("TERM", "dumb")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and the controlling-terminal ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // Only the REPL (and its executor) hold the terminal now: its end reads as end of file.
    drop(cmd);
    drop(slave);
    let mut master = std::fs::File::from(master);
    let mut seen = String::new();
    assert!(
        read_until(&mut master, &mut seen, "[1]> "),
        "no prompt: {seen}"
    );
    step(&mut master, &mut seen, "#include <stdio.h>\r", "[2]> ");
    step(&mut master, &mut seen, "int x = 5;\r", "[3]> ");
    step(&mut master, &mut seen, "x += 1;\r", "[4]> ");
    // The loop is running once its cell printed the marker (the echo of the line shows
    // `"spin" "ning"`, never the joined word).
    step(
        &mut master,
        &mut seen,
        "puts(\"spin\" \"ning\"); fflush(stdout); while (1) {}\r",
        "spinning",
    );
    step(&mut master, &mut seen, "\x03", "[5]> ");
    step(&mut master, &mut seen, "x\r", "(int) 6");
    // A function's `{` on the next line: the continuation prompt, then one cell.
    step(&mut master, &mut seen, "int four(void)\r", "...> ");
    step(&mut master, &mut seen, "{ return 4; }\r", "[7]> ");
    step(&mut master, &mut seen, "four()\r", "(int) 4");
    // Ctrl-D on a continuation line: the open cell is reported, the REPL ends with status 1.
    step(&mut master, &mut seen, "int a[\r", "...> ");
    master.write_all(b"\x04").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the REPL did not end: {seen}");
        let _ = read_until(&mut master, &mut seen, "\u{0}");
    };
    // What the REPL wrote just before it ended is still in the terminal: read it to the end
    // (the terminal reads as ended once no process holds it).
    let _ = read_until(&mut master, &mut seen, "\u{0}");
    assert_eq!(status.code(), Some(1), "{seen}");
    assert!(
        seen.contains("remjit: incomplete cell at end of input"),
        "{seen}"
    );
    assert!(seen.contains("remjit: cell 4: interrupted"), "{seen}");
    assert!(
        seen.contains("executor restarted; 3 cells relinked, 1 replayed"),
        "{seen}"
    );
}

/// Types `send` and waits until the terminal shows `wait`.
fn step(master: &mut std::fs::File, seen: &mut String, send: &str, wait: &str) {
    master.write_all(send.as_bytes()).unwrap();
    assert!(
        read_until(master, seen, wait),
        "waiting for {wait:?}; saw:\n{seen}"
    );
}

/// Cells that arrive together compile as one unit: a cell of it that warns or does not
/// compile is reported at its own cell and line (the unit is split, that cell compiled alone),
/// and the cells after it run.
#[test]
fn a_cell_that_fails_in_a_unit_is_reported_at_its_cell() {
    let input = "#include <stdio.h>\nint a = 1;\nint b = nope;\na + 2\n";
    for mode in MODES {
        let out = assert_session(mode, input, "(int) 3\n", 1);
        assert_eq!(
            text(&out.stderr),
            "cell 3:1:9: error: ‘nope’ undeclared here (not in a function)\n"
        );
    }
    let input = "int a = 1;\nchar c = 1000;\na + 1\nint b = nope;\nc + 0\na + 2\n";
    let out = assert_session(&[], input, "(int) 2\n(int) -24\n(int) 3\n", 1);
    assert_eq!(
        text(&out.stderr),
        "cell 2:1:10: warning: overflow in conversion from ‘int’ to ‘char’ changes value from \
         ‘1000’ to ‘-24’ [-Woverflow]\ncell 4:1:9: error: ‘nope’ undeclared here (not in a \
         function)\n"
    );
}

/// The output of a unit's cells (their own and their values) comes in cell order.
#[test]
fn output_of_a_unit_comes_in_cell_order() {
    let input = "#include <stdio.h>\nprintf(\"one\\n\");\n1\nprintf(\"two\\n\");\nint t = 2;\nt\n";
    for mode in MODES {
        assert_session(mode, input, "one\n(int) 1\ntwo\n(int) 2\n", 0);
    }
}

/// A crash in the middle of a unit: the cells after it have not run when it is reported,
/// they run once after the restart; the object replayed for the unit no longer holds the
/// definitions of the cells that were not kept (`h` is undefined once its later copy is
/// undone), as if each cell had been compiled on its own.
#[test]
fn a_crash_in_the_middle_of_a_unit() {
    let input = "#include <stdio.h>\nint x = 1;\nx += 1;\n*(volatile int *)0 = 1;\n\
                 int h(void) { return 9; }\nprintf(\"after %d\\n\", x + h());\n\
                 %undo\n%undo\n%restart\nint h(void);\nh()\nx\n";
    for mode in &MODES[1..] {
        let out = assert_session(mode, input, "after 11\n(int) 2\n", 1);
        let err = text(&out.stderr);
        let crash = err.find("remjit: cell 4: the JIT'd code crashed: SIGSEGV");
        assert!(crash.is_some(), "{err}");
        assert!(
            err.contains(
                "remjit: executor restarted; 3 cells relinked, 1 replayed in \
                 "
            ),
            "{err}"
        );
        assert!(
            err.contains("remjit: cell 6 removed\nremjit: cell 5 removed\n"),
            "{err}"
        );
        assert!(
            err.contains(
                "remjit: error: cell 8: 1 undefined symbol(s):\n  h (referenced by cell 8)"
            ),
            "{err}"
        );
    }
}

/// `%undo` of a cell compiled in a unit with the cell before it forgets its declarations
/// only; the earlier cell's function stays.
#[test]
fn undo_of_a_cell_of_a_unit() {
    let input = "int f(void) { return 1; }\nint v = 2;\n%undo\nv\nf()\n";
    let out = assert_session(&[], input, "(int) 1\n", 1);
    assert_eq!(
        text(&out.stderr),
        "remjit: cell 2 removed\ncell 3:1:1: error: ‘v’ undeclared (first use in this function)\n\
         cell 3:1:1: note: each undeclared identifier is reported only once for each function it \
         appears in\n"
    );
}

/// C++ cells after statements: a variable whose initializer runs code is not compiled with
/// them (its constructor would run when the unit is linked, before the statements).
#[test]
fn cxx_initializers_run_after_the_statements_before_them() {
    let input = "int x = 1;\nx = 5;\nint y = x;\ny\nint k = 3;\nk\n#include <string>\n\
                 std::string s = std::to_string(x + y);\ns\n";
    for mode in [&["--in-process"][..], &[]] {
        let args = [&["--lang", "c++"], mode].concat();
        assert_session(&args, input, "(int) 5\n(int) 3\n(std::string) \"10\"\n", 0);
    }
}

/// A piped script (cells compiled ahead, in units) prints exactly what it prints one cell at a
/// time: values, output, diagnostics and status; a C++ one with `auto`, lambdas, templates and
/// a redefinition, a C one with a void call, a static function, enums and a warning.
#[test]
fn units_print_what_cells_one_at_a_time_print() {
    let cxx = "#include <vector>\n#include <string>\nauto v = std::vector<int>{1, 2, 3};\n\
               v.size()\nauto f = [](int x) { return x * 2; };\nf(21)\n\
               int g(int x) { return x + 1; }\nauto w = g(4);\nw\n\
               struct P { int a; std::string s; };\nP p{1, \"x\"};\np.s\n\
               template <class T> T twice(T x) { return x + x; }\ntwice(std::string(\"ab\"))\n\
               int g(int x) { return x + 100; }\nw = g(1);\nw\n";
    let c = "#include <stdio.h>\ntypedef struct { double x, y; } vec;\n\
             vec add(vec a, vec b) { vec r = {a.x + b.x, a.y + b.y}; return r; }\n\
             vec o = {1, 2};\no = add(o, o);\no.x\nenum color { RED, GREEN };\n\
             enum color c = GREEN;\nc\nstatic int hidden(void) { return 7; }\nhidden()\n\
             int arr[3] = {1, 2, 3};\nchar ch = 1000;\narr[2] += hidden();\narr[2]\n\
             void hello(void) { printf(\"hello\\n\"); }\nhello()\nnope\nconst char *msg = \"hi\";\n\
             msg\n";
    for (lang, input) in [("c++", cxx), ("c", c)] {
        let piped = repl(&["--lang", lang], input);
        let one_by_one = repl(&["--lang", lang, "--no-compile-ahead"], input);
        assert_eq!(text(&piped.stdout), text(&one_by_one.stdout), "{lang}");
        assert_eq!(text(&piped.stderr), text(&one_by_one.stderr), "{lang}");
        assert_eq!(piped.status.code(), one_by_one.status.code(), "{lang}");
        assert!(
            text(&piped.stdout).lines().count() >= 6,
            "{lang}: {piped:?}"
        );
    }
}

/// The unit of the first three cells (they arrived together); the third defines `h` and `g`.
const UNIT_OF_THREE: &str = "#include <stdio.h>\nint x = 1;\nint twice(int v) { return 2 * v; }\n\
                             int g = 7; int h(void) { return g + 1; }\n%undo\n";

/// `%undo` of the last cell of a unit takes its definitions out of the session, as for a cell
/// linked on its own: `h` and `g` are undefined for later cells (declared again, they do not
/// link), a new `h` links, the earlier cells' definitions stay; `%save` leaves the undone
/// cell out. Piped (a unit) and one cell at a time print the same.
#[test]
fn undo_of_the_last_cell_of_a_unit_takes_its_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saved.c");
    let input = format!(
        "{UNIT_OF_THREE}int h(void);\nh()\nextern int g;\ng\nint h(void) {{ return 5; }}\nh()\n\
         printf(\"%d\\n\", twice(x) + h());\n%save {}\n",
        file.display()
    );
    let expected = "(int) 5\n7\n";
    let piped = assert_session(&[], &input, expected, 1);
    let err = text(&piped.stderr);
    assert_eq!(
        err,
        format!(
            "remjit: cell 4 removed\n\
             remjit: error: cell 6: 1 undefined symbol(s):\n  h (referenced by cell 6)\n\
             remjit: error: cell 8: 1 undefined symbol(s):\n  g (referenced by cell 8)\n\
             remjit: saved to {}\n",
            file.display()
        )
    );
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(!saved.contains("g + 1"), "{saved}");
    assert_eq!(native_output(&file), "7\n");
    for mode in [&["--no-compile-ahead"][..], &["--in-process"]] {
        let one = assert_session(mode, &input, expected, 1);
        assert_eq!(text(&one.stderr), err, "{mode:?}");
    }
}

/// A unit whose first cell redefines `f` (a redefinition starts a unit; no later cell of one
/// redefines anything): undoing its later cell keeps the new `f`; undoing the first uncovers
/// the earlier body, which a cell compiled before calls again through the stub.
#[test]
fn undo_of_a_unit_cell_by_cell_uncovers_the_earlier_definition() {
    let input = "int f(void) { return 1; }\nint callf(void) { return f() * 10; }\ncallf()\n\
                 int f(void) { return 2; }\nint k(void) { return 3; }\n%undo\nint k(void);\n\
                 k()\n%undo\ncallf()\n%undo\n%undo\ncallf()\n";
    let out = assert_session(&[], input, "(int) 10\n(int) 20\n(int) 10\n", 1);
    assert_eq!(
        text(&out.stderr),
        "remjit: cell 5 removed\nremjit: error: cell 7: 1 undefined symbol(s):\n  \
         k (referenced by cell 7)\nremjit: cell 6 removed\nremjit: cell 8 removed\n\
         remjit: cell 4 removed\n"
    );
}

/// A crash after `%undo` of a unit's last cell: the unit's module comes back at its address
/// without the undone cell (its `h` stays undefined), the earlier cells' state is replayed.
#[test]
fn recovery_after_undo_of_the_last_cell_of_a_unit() {
    let input = format!(
        "{UNIT_OF_THREE}(void *)&twice\nx += 1;\n*(volatile int *)0 = 1;\n(void *)&twice\n\
         int h(void);\nh()\ntwice(x)\n"
    );
    for mode in &MODES[1..] {
        let out = repl(mode, &input);
        let (stdout, err) = (text(&out.stdout), text(&out.stderr));
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{mode:?}: {stdout}{err}");
        assert!(lines[0].starts_with("(void *) 0x"), "{stdout}");
        assert_eq!(lines[0], lines[1], "{mode:?}: {stdout}");
        assert_eq!(lines[2], "(int) 4", "{mode:?}");
        assert!(
            err.contains("remjit: executor restarted; 5 cells relinked, 2 replayed in "),
            "{err}"
        );
        assert!(!err.contains("new addresses"), "{err}");
        assert!(
            err.contains(
                "remjit: error: cell 10: 1 undefined symbol(s):\n  h (referenced by cell 10)"
            ),
            "{err}"
        );
    }
}
