//! Every x86-64 relocation type, tested as LLVM tests JITLink: small assembly files linked with
//! `remjit -noexec -abs NAME=ADDR -check=FILE obj.o`, whose `# jitlink-check:` rules read the
//! relocated bytes; and each range limit one step past, with its error.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// The three ways to run: in process, an executor sharing memory, an executor fed copies.
const MODES: [&[&str]; 3] = [&["--in-process"], &[], &["--no-shared-memory"]];

/// Assembles `source` as `dir/name.o` with llvm-mc.
fn assemble(dir: &Path, name: &str, source: &str) {
    let src = dir.join(format!("{name}.s"));
    std::fs::write(&src, source).unwrap();
    let out = Command::new("llvm-mc-19")
        .args(["-triple=x86_64-unknown-linux-gnu", "-filetype=obj", "-o"])
        .arg(dir.join(format!("{name}.o")))
        .arg(&src)
        .output()
        .expect("llvm-mc-19 (package llvm-19)");
    assert!(
        out.status.success(),
        "{name}.s: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `# ARGS:` lines of a test source, split on blanks.
fn args_of(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|l| l.strip_prefix("# ARGS:"))
        .flat_map(|l| l.split_whitespace().map(str::to_string))
        .collect()
}

/// Runs `remjit -noexec ARGS -check=name.s name.o` in `dir` in one mode.
fn link(dir: &Path, name: &str, mode: &[&str], args: &[String]) -> Output {
    let mut cmd = Command::new(common::remjit());
    cmd.current_dir(dir)
        .args(mode)
        .arg("-noexec")
        .args(args)
        .arg(format!("-check={name}.s"))
        .arg(format!("{name}.o"));
    common::run_with_timeout(&mut cmd, Duration::from_secs(60))
}

/// Links tests/reloc/NAME.s in every mode; every rule must hold.
fn check_file(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/reloc/{name}.s"));
    let source = std::fs::read_to_string(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assemble(dir.path(), name, &source);
    for mode in MODES {
        let out = link(dir.path(), name, mode, &args_of(&source));
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name} {mode:?}: status {:?}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Links `source` (as t.s) in every mode and expects exit status 1 with exactly `stderr`.
fn expect_failure(source: &str, args: &str, stderr: &str) {
    expect_failure_in(&MODES, source, args, stderr);
}

/// The same in process only: for link errors, which do not depend on where code would run
/// (out of process, remjit gives a failed link's executor time to report a crash first).
fn expect_link_error(source: &str, args: &str, stderr: &str) {
    expect_failure_in(&MODES[..1], source, args, stderr);
}

fn expect_failure_in(modes: &[&[&str]], source: &str, args: &str, stderr: &str) {
    let dir = tempfile::tempdir().unwrap();
    assemble(dir.path(), "t", source);
    let args: Vec<String> = args.split_whitespace().map(str::to_string).collect();
    for &mode in modes {
        let out = link(dir.path(), "t", mode, &args);
        assert_eq!(out.status.code(), Some(1), "{mode:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), stderr, "{mode:?}");
    }
}

#[test]
fn absolute_widths() {
    check_file("abs_widths");
}

#[test]
fn pc_relative() {
    check_file("pc_relative");
}

#[test]
fn branches_and_stubs() {
    check_file("branches");
}

#[test]
fn got_and_relaxations() {
    check_file("got");
}

#[test]
fn size_and_none() {
    check_file("size_none");
}

#[test]
fn thread_locals() {
    check_file("tls");
}

/// `remjit: error: t.o: section SEC+OFF: TYPE against `x`: PROBLEM` and a newline.
fn reloc_error(place: &str, kind: &str, sym: &str, problem: &str) -> String {
    format!("remjit: error: t.o: section {place}: {kind} against `{sym}`: {problem}\n")
}

fn absolute_too_big(addr: &str, range: &str) -> String {
    format!(
        "the absolute address {addr} does not fit in {range}: compile with -fPIC or -mcmodel=large"
    )
}

fn value_too_big(value: &str, range: &str) -> String {
    format!("value {value} does not fit in {range}: compile with -fPIC or -mcmodel=large")
}

#[test]
fn absolute_one_step_past_the_range() {
    let cases = [
        (
            ".data\n.long x",
            "0x100000000",
            "R_X86_64_32",
            ".data+0x0",
            "an unsigned 32-bit value (below 4 GiB)",
        ),
        (
            ".data\n.long x",
            "0xffffffffffffffff",
            "R_X86_64_32",
            ".data+0x0",
            "an unsigned 32-bit value (below 4 GiB)",
        ),
        (
            ".text\nmovq x, %rax",
            "0x80000000",
            "R_X86_64_32S",
            ".text+0x4",
            "a signed 32-bit value (+-2 GiB)",
        ),
        (
            ".text\nmovq x, %rax",
            "0xffffffff7fffffff",
            "R_X86_64_32S",
            ".text+0x4",
            "a signed 32-bit value (+-2 GiB)",
        ),
        (
            ".data\n.word x",
            "0x10000",
            "R_X86_64_16",
            ".data+0x0",
            "16 bits",
        ),
        (
            ".data\n.word x",
            "0xffffffffffff7fff",
            "R_X86_64_16",
            ".data+0x0",
            "16 bits",
        ),
        (
            ".data\n.byte x",
            "0x100",
            "R_X86_64_8",
            ".data+0x0",
            "8 bits",
        ),
        (
            ".data\n.byte x",
            "0xffffffffffffff7f",
            "R_X86_64_8",
            ".data+0x0",
            "8 bits",
        ),
    ];
    for (src, addr, kind, place, range) in cases {
        let problem = absolute_too_big(addr, range);
        expect_link_error(
            src,
            &format!("-abs x={addr}"),
            &reloc_error(place, kind, "x", &problem),
        );
    }
}

#[test]
fn pc_relative_one_step_past_the_range() {
    // .text starts the slab at 0x40000000: the field is there.
    let cases = [
        (
            ".long x - .",
            "0xc0000000",
            "R_X86_64_PC32",
            "0x80000000",
            "a signed 32-bit value (+-2 GiB)",
        ),
        (
            ".long x - .",
            "0xffffffffbfffffff",
            "R_X86_64_PC32",
            "0xffffffff7fffffff",
            "a signed 32-bit value (+-2 GiB)",
        ),
        (
            ".word x - .",
            "0x40008000",
            "R_X86_64_PC16",
            "0x8000",
            "a signed 16-bit value",
        ),
        (
            ".word x - .",
            "0x3fff7fff",
            "R_X86_64_PC16",
            "0xffffffffffff7fff",
            "a signed 16-bit value",
        ),
        (
            ".byte x - .",
            "0x40000080",
            "R_X86_64_PC8",
            "0x80",
            "a signed 8-bit value",
        ),
        (
            ".byte x - .",
            "0x3fffff7f",
            "R_X86_64_PC8",
            "0xffffffffffffff7f",
            "a signed 8-bit value",
        ),
    ];
    for (src, addr, kind, value, range) in cases {
        let problem = value_too_big(value, range);
        expect_link_error(
            &format!(".text\n{src}"),
            &format!("-slab-address=0x40000000 -abs x={addr}"),
            &reloc_error(".text+0x0", kind, "x", &problem),
        );
    }
}

#[test]
fn size_one_step_past_the_range() {
    let src = ".data\n.globl t\n.type t,@object\nt: .zero 24\n.size t, 24\n.long t@SIZE - 25";
    let problem = "the symbol's size plus the addend, 0xffffffffffffffff, does not fit in an \
                   unsigned 32-bit value (below 4 GiB)";
    expect_link_error(
        src,
        "",
        &reloc_error(".data+0x18", "R_X86_64_SIZE32", "t", problem),
    );
}

#[test]
fn static_tls_models_are_refused() {
    let tbss = "\n.section .tbss,\"awT\",@nobits\nx: .zero 4";
    let problem = "initial-exec/local-exec thread-local access cannot reach a JIT'd module's \
                   thread-locals: compile with -fPIC (or -ftls-model=global-dynamic)";
    let cases = [
        (
            ".text\nmovq x@gottpoff(%rip), %rax",
            "R_X86_64_GOTTPOFF",
            ".text+0x3",
        ),
        (
            ".text\nmovl %fs:x@tpoff, %eax",
            "R_X86_64_TPOFF32",
            ".text+0x4",
        ),
        (".data\n.quad x@tpoff", "R_X86_64_TPOFF64", ".data+0x0"),
    ];
    for (src, kind, place) in cases {
        expect_link_error(
            &format!("{src}{tbss}"),
            "",
            &reloc_error(place, kind, "x", problem),
        );
    }
}

#[test]
fn unsupported_type_is_named() {
    expect_failure(
        ".data\n.reloc ., R_X86_64_COPY, y\n.quad 0",
        "-abs y=1",
        &reloc_error(
            ".data+0x0",
            "R_X86_64_COPY",
            "y",
            "relocation type not supported by remjit",
        ),
    );
}

#[test]
fn failed_rules_print_both_values() {
    expect_failure(
        ".data\n# jitlink-check: *{8}w = y + 1\n# jitlink-check: *{8}w = y\n\
         # jitlink-check: *{8}w = nosuch\nw: .quad y",
        "-abs y=5",
        "remjit: check failed: t.s: line 2: `*{8}w = y + 1`: 0x5 != 0x6\n\
         remjit: check failed: t.s: line 4: `*{8}w = nosuch`: no symbol `nosuch` in this link\n",
    );
}

#[test]
fn check_files_repeat() {
    let dir = tempfile::tempdir().unwrap();
    assemble(
        dir.path(),
        "t",
        "# jitlink-check: *{8}w = y\n.data\nw: .quad y",
    );
    std::fs::write(dir.path().join("more.s"), "# jitlink-check: *{4}w = 6\n").unwrap();
    for mode in MODES {
        let args = [
            "-abs".to_string(),
            "y=5".into(),
            "--check".into(),
            "more.s".into(),
        ];
        let out = link(dir.path(), "t", mode, &args);
        assert_eq!(out.status.code(), Some(1), "{mode:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "remjit: check failed: more.s: line 1: `*{4}w = 6`: 0x5 != 0x6\n",
            "{mode:?}"
        );
    }
}

#[test]
fn check_file_without_rules_is_an_error() {
    expect_failure(
        ".data\n# jitlink-check is not a rule without its colon\nw: .quad 1",
        "",
        "remjit: error: check file t.s: no `# jitlink-check:` rules in the check file\n",
    );
}

/// Without -noexec the rules are checked after the link and before `main` runs; a failed rule
/// stops remjit before running anything.
#[test]
fn checks_run_before_main() {
    let program = |rule: &str| {
        format!(
            "# jitlink-check: {rule}\n.text\n.globl main\nmain:\n  subq $8, %rsp\n  \
             leaq msg(%rip), %rdi\n  callq puts@PLT\n  movl $7, %eax\n  addq $8, %rsp\n  ret\n\
             .section .rodata\nmsg: .asciz \"ran\"\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    for (rule, status, stdout) in [("*{1}msg = 0x72", 7, "ran\n"), ("*{1}msg = 0x52", 1, "")] {
        assemble(dir.path(), "t", &program(rule));
        let check = format!("-check={}", dir.path().join("t.s").display());
        for mode in MODES {
            let out = common::jit(mode, &[dir.path().join("t.o")], &[&check], &[]);
            assert_eq!(out.status.code(), Some(status), "{rule} {mode:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                stdout,
                "{rule} {mode:?}"
            );
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if status == 1 {
                let t = dir.path().join("t.s");
                let want = format!(
                    "remjit: check failed: {}: line 1: `*{{1}}msg = 0x52`: 0x72 != 0x52\n",
                    t.display()
                );
                assert_eq!(stderr, want, "{mode:?}");
            } else {
                assert_eq!(stderr, "", "{mode:?}");
            }
        }
    }
}

#[test]
fn code_models() {
    check_file("code_models");
}
