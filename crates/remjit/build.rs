//! The `remjit` binary, like the executor, is a non-PIE executable holding copy-relocated
//! instances of the C and C++ runtimes' exported data, for in-process JIT'd code (see
//! crates/remjit-executor/anchors_build.rs).
include!("../remjit-executor/anchors_build.rs");

fn main() {
    let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    link_anchors_into_bins(&dir.join("../remjit-executor"));
    println!("cargo:rerun-if-changed=build.rs");
}
