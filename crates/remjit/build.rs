//! The `remjit` binary is a non-PIE executable: loaded low, it holds copy-relocated instances of
//! the C runtime's exported data (see remjit-executor's anchors), which JIT'd position-dependent
//! and PIE code reaches with 32-bit references from the low slab.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
