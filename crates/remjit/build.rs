//! The `remjit` binaries, like the executor, are non-PIE executables holding copy-relocated
//! instances of the runtimes' exported data, for in-process JIT'd code (see
//! crates/remjit-executor/anchors_build.rs): `remjit` those of the C runtime, `remjit-cxx`
//! those of the C++ runtime too (it loads libstdc++ at start; remjit hands it the runs that
//! need it).
include!("../remjit-executor/anchors_build.rs");

fn main() {
    let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    link_anchors_into_bins(
        &dir.join("../remjit-executor"),
        &["remjit"],
        &["remjit-cxx"],
    );
    compile_repl_support(&dir.join("src/repl/support/support.c"));
    println!("cargo:rerun-if-changed=build.rs");
}

/// The REPL's support module (value printing, output flushing), compiled here once rather
/// than at every start of `remjit repl`: its object is embedded in the library.
fn compile_repl_support(src: &std::path::Path) {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let obj = out.join("remjit-repl-support.o");
    let status = std::process::Command::new("cc")
        .args(["-c", "-O1", "-w", "-x", "c"])
        .arg(src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| panic!("cannot run cc: {e}"));
    assert!(status.success(), "compiling {} failed", src.display());
    println!("cargo:rerun-if-changed={}", src.display());
}
