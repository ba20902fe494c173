//! Bad input gets a clear error: non-zero exit, a message that names the problem, no panic,
//! no hang.

mod common;

use std::path::PathBuf;

use common::*;

fn fails_with(inputs: &[PathBuf], extra: &[&str], needles: &[&str]) -> String {
    let out = jit(&["--in-process"], inputs, extra, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0), "must fail: {stderr}");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert!(stderr.starts_with("remjit: error: "), "{stderr}");
    for n in needles {
        assert!(
            stderr.to_lowercase().contains(&n.to_lowercase()),
            "expected `{n}` in: {stderr}"
        );
    }
    stderr
}

fn small_object(dir: &std::path::Path) -> PathBuf {
    let src = dir.join("small.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    compile(dir, &src, "small.o", &["-O2"])
}

#[test]
fn not_elf() {
    let dir = work_dir("err-not-elf");
    let p = dir.join("notes.o");
    std::fs::write(&p, "just some text\n").unwrap();
    fails_with(&[p], &[], &["notes.o", "not an ELF"]);
}

#[test]
fn truncated_object() {
    let dir = work_dir("err-truncated");
    let o = small_object(&dir);
    let bytes = std::fs::read(&o).unwrap();
    for (name, len) in [("half.o", bytes.len() / 2), ("header.o", 40)] {
        let p = dir.join(name);
        std::fs::write(&p, &bytes[..len]).unwrap();
        fails_with(&[p], &[], &[name, "malformed"]);
    }
}

#[test]
fn wrong_machine() {
    let dir = work_dir("err-machine");
    let o = small_object(&dir);
    let mut bytes = std::fs::read(&o).unwrap();
    // e_machine = EM_AARCH64.
    bytes[18] = 183;
    bytes[19] = 0;
    let p = dir.join("arm.o");
    std::fs::write(&p, &bytes).unwrap();
    fails_with(&[p], &[], &["arm.o", "wrong machine", "AArch64"]);
}

#[test]
fn not_relocatable() {
    let dir = work_dir("err-exec");
    let o = small_object(&dir);
    let exe = dir.join("prog");
    let st = std::process::Command::new("gcc")
        .arg(&o)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(st.success());
    // Named .o so it is taken as an object; the ELF type says executable.
    let p = dir.join("prog.o");
    std::fs::copy(&exe, &p).unwrap();
    fails_with(&[p], &[], &["prog.o", "not a relocatable object"]);
}

#[test]
fn undefined_symbols_list_every_name_and_referencer() {
    let dir = work_dir("err-undef");
    let a = dir.join("a.c");
    std::fs::write(
        &a,
        "int missing_alpha(void); int missing_beta(void);\n\
         int main(void) { return missing_alpha() + missing_beta(); }\n",
    )
    .unwrap();
    let b = dir.join("b.c");
    std::fs::write(
        &b,
        "int missing_alpha(void); int f(void) { return missing_alpha(); }\n",
    )
    .unwrap();
    let ao = compile(&dir, &a, "a.o", &["-O2"]);
    let bo = compile(&dir, &b, "b.o", &["-O2"]);
    let e = fails_with(
        &[ao, bo],
        &[],
        &["2 undefined symbol", "missing_alpha", "missing_beta"],
    );
    let alpha = e.lines().find(|l| l.contains("missing_alpha")).unwrap();
    assert!(alpha.contains("a.o") && alpha.contains("b.o"), "{alpha}");
    let beta = e.lines().find(|l| l.contains("missing_beta")).unwrap();
    assert!(beta.contains("a.o") && !beta.contains("b.o"), "{beta}");
}

#[test]
fn phony_externals_resolve_to_null() {
    let dir = work_dir("err-phony");
    let a = dir.join("a.c");
    std::fs::write(
        &a,
        "int missing_gamma(void);\n\
         int main(void) { int (*volatile p)(void) = missing_gamma; return p == 0 ? 5 : 6; }\n",
    )
    .unwrap();
    let ao = compile(&dir, &a, "a.o", &["-O0", "-fPIC"]);
    let out = jit(&["--in-process", "--phony-externals"], &[ao], &[], &[]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn duplicate_definitions_name_both_objects() {
    let dir = work_dir("err-dup");
    let a = dir.join("first.c");
    std::fs::write(&a, "int twice = 1; int main(void) { return 0; }\n").unwrap();
    let b = dir.join("second.c");
    std::fs::write(&b, "int twice = 2;\n").unwrap();
    let ao = compile(&dir, &a, "first.o", &["-O2"]);
    let bo = compile(&dir, &b, "second.o", &["-O2"]);
    fails_with(
        &[ao, bo],
        &[],
        &["duplicate", "twice", "first.o", "second.o"],
    );
}

#[test]
fn static_tls_model_asks_for_fpic() {
    let dir = work_dir("err-tls");
    let a = dir.join("tls.c");
    std::fs::write(
        &a,
        "_Thread_local int counter; int main(void) { return ++counter; }\n",
    )
    .unwrap();
    let ao = compile(&dir, &a, "tls.o", &["-O2"]);
    fails_with(
        &[ao],
        &[],
        &["tls.o", ".text", "R_X86_64_TPOFF32", "counter", "-fPIC"],
    );
}

#[test]
fn missing_file_and_library() {
    fails_with(
        &[PathBuf::from("/nonexistent/x.o")],
        &[],
        &["/nonexistent/x.o"],
    );
    let dir = work_dir("err-lib");
    let o = small_object(&dir);
    fails_with(
        &[o],
        &["-l", "surely_not_a_library"],
        &["library not found", "surely_not_a_library"],
    );
}

#[test]
fn missing_entry_point() {
    let dir = work_dir("err-entry");
    let o = small_object(&dir);
    fails_with(&[o], &["--entry=nowhere"], &["nowhere"]);
}
