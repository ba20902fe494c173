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
    println!("cargo:rerun-if-changed=build.rs");
}
