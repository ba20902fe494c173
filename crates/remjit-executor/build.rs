//! Gives the executor binary copies of the C and C++ runtimes' exported data (see
//! anchors_build.rs).
include!("anchors_build.rs");

fn main() {
    let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    link_anchors_into_bins(&dir, &[], &["remjit-executor"]);
    println!("cargo:rerun-if-changed=build.rs");
}
