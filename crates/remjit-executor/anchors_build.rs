// Shared by the build scripts of remjit-executor and remjit (included with `include!`): builds
// the copy-relocation anchors in csrc/ and links them, non-PIE, into the crate's binaries.

/// Compiles `csrc/*.c{,c}` under `executor_dir` and links them into this crate's binaries.
fn link_anchors_into_bins(executor_dir: &std::path::Path) {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let src = executor_dir.join("csrc");
    for (file, compiler) in [("anchors.c", "cc"), ("anchors_cxx.cc", "c++")] {
        let obj = out.join(format!("{file}.o"));
        let status = std::process::Command::new(compiler)
            .args(["-c", "-O2", "-fno-pic", "-fno-pie"])
            .arg(src.join(file))
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
        assert!(status.success(), "compiling {file} failed");
        println!("cargo:rustc-link-arg-bins={}", obj.display());
        println!("cargo:rerun-if-changed={}", src.join(file).display());
    }
    // Kept through --gc-sections: their relocations are the point.
    println!("cargo:rustc-link-arg-bins=-Wl,--undefined=remjit_copy_relocation_anchors");
    println!("cargo:rustc-link-arg-bins=-Wl,--undefined=remjit_cxx_copy_relocation_anchors");
    // Loaded low, the executable holds the copy-relocated instances.
    println!("cargo:rustc-link-arg-bins=-no-pie");
    // JIT'd code may use libm and libstdc++ without naming them (the C and C++ runtimes).
    println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed,-lm,-lstdc++,--as-needed");
    println!(
        "cargo:rerun-if-changed={}",
        executor_dir.join("anchors_build.rs").display()
    );
}
