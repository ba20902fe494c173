// Shared by the build scripts of remjit-executor and remjit (included with `include!`): gives
// the crate's binaries copy relocations for the exported data of the C and C++ runtimes.
//
// JIT'd position-dependent and PIE code reaches a library's data with 32-bit references, as in
// a native non-PIE (or copy-relocating PIE) link, where the static linker gives the executable a
// COPY relocation: the dynamic linker then places the one instance of the object in the
// executable, below 2 GiB, and the library itself uses it. The host binaries do that for every
// object JIT'd code may name: this script reads the dynamic symbol tables of libc, libm,
// libstdc++ and libgcc_s, writes a C file whose function takes the absolute address of each
// defined object of a default (`@@`) version, and links it into the (non-PIE) binaries.

/// The libraries whose data the host binaries copy, and the compiler that finds each. The
/// lean binaries (`remjit`, `remjit-executor`) copy the first three's, which every process of
/// theirs loads anyway; `remjit-cxx` (remjit with the C++ runtime, also started as the executor
/// of programs that need it) copies libstdc++'s too, and only it loads libstdc++ at start.
const ANCHOR_LIBRARIES: [(&str, &str); 4] = [
    ("cc", "libc.so.6"),
    ("cc", "libm.so.6"),
    ("cc", "libgcc_s.so.1"),
    ("c++", "libstdc++.so.6"),
];

/// How many of [`ANCHOR_LIBRARIES`] the lean binaries copy from.
const LEAN_LIBRARIES: usize = 3;

/// Whether a library's exported object is left to the library.
///
/// What is copied, by class: libc's public variables (`stdin`/`stdout`/`stderr`, `environ`,
/// `optind`..., `tzname`, `program_invocation_name`, the argp/error/obstack hooks) and libm's
/// `signgam`, which libc and libm reach through their GOT, so they use the copy as they do in
/// a native program; libstdc++'s typeinfos, typeinfo names, vtables and VTTs (copied after the
/// library's own relocations, so their pointers are right; type comparison works by name
/// anyway), the standard streams, locale ids and facet statics, and guard variables
/// (`STB_GNU_UNIQUE` ones included, which the dynamic linker binds to the executable's copy).
/// Every one of them is what a native link of code naming it copies too.
///
/// Left out: `_IO_*` (stdio's own FILE objects, jump tables and list head: a jump table outside
/// libc's vtable section fails its validation, "invalid stdio handle", and copied FILEs would
/// split the list of open streams); GLIBC_PRIVATE and old versions (see [`exported_objects`]);
/// and names that are not plain identifiers (none in practice; they could not be declared).
fn anchor_excluded(name: &[u8]) -> bool {
    name.starts_with(b"_IO_")
        || name.is_empty()
        || !name
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'$')
}

/// Where `compiler` finds `lib` (`-print-file-name`); `None` when it does not.
fn library_path(compiler: &str, lib: &str) -> Option<std::path::PathBuf> {
    let out = std::process::Command::new(compiler)
        .arg(format!("-print-file-name={lib}"))
        .output()
        .ok()?;
    let p = std::path::PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && p.is_absolute() && p.exists()).then_some(p)
}

/// The defined data objects of `data` (an ELF shared library) of a default version other than
/// GLIBC_PRIVATE, with a size.
fn exported_objects(data: &[u8]) -> Result<Vec<Vec<u8>>, object::read::Error> {
    use object::elf;
    use object::read::elf::{FileHeader, Sym};
    let header = elf::FileHeader64::<object::Endianness>::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let symbols = sections.symbols(endian, data, elf::SHT_DYNSYM)?;
    let versions = sections.versions(endian, data)?;
    let mut out = Vec::new();
    for (index, sym) in symbols.enumerate() {
        let bind = sym.st_bind();
        if sym.st_type() != elf::STT_OBJECT
            || sym.is_undefined(endian)
            || sym.st_size(endian) == 0
            || !matches!(bind, elf::STB_GLOBAL | elf::STB_WEAK | elf::STB_GNU_UNIQUE)
        {
            continue;
        }
        if let Some(v) = &versions {
            let vi = v.version_index(endian, index);
            if vi.is_hidden() {
                continue; // An old version (`@`), not what a new link binds to.
            }
            if v.version(vi)?.is_some_and(|ver| ver.name() == b"GLIBC_PRIVATE") {
                continue;
            }
        }
        let name = symbols.symbol_name(endian, sym)?;
        if !anchor_excluded(name) {
            out.push(name.to_vec());
        }
    }
    Ok(out)
}

/// The C source: one asm-labelled declaration per object and a function taking each address
/// absolutely (non-PIC), so that the static linker copies them into the executable.
fn anchors_source(names: &[Vec<u8>]) -> String {
    let mut decls = String::new();
    let mut uses = String::new();
    for (i, name) in names.iter().enumerate() {
        let name = String::from_utf8_lossy(name);
        decls.push_str(&format!("extern char remjit_a{i}[] __asm__(\"{name}\");\n"));
        uses.push_str(&format!("  s ^= (unsigned long)remjit_a{i};\n"));
    }
    format!(
        "/* Generated by anchors_build.rs: copy-relocation anchors ({} objects). */\n{decls}\
         unsigned long remjit_copy_relocation_anchors(void) {{\n  unsigned long s = 0;\n\
         {uses}  return s;\n}}\n",
        names.len()
    )
}

/// Collects the objects of the first `count` of [`ANCHOR_LIBRARIES`], first definition of a
/// name wins.
fn anchor_names(count: usize) -> Vec<Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    let mut names = Vec::new();
    for (compiler, lib) in &ANCHOR_LIBRARIES[..count] {
        let Some(path) = library_path(compiler, lib) else {
            println!("cargo:warning={compiler} does not find {lib}: its data gets no host copies");
            continue;
        };
        println!("cargo:rerun-if-changed={}", path.display());
        let data = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let objects = exported_objects(&data)
            .unwrap_or_else(|e| panic!("cannot read the symbols of {}: {e}", path.display()));
        for n in objects {
            if seen.insert(n.clone()) {
                names.push(n);
            }
        }
    }
    names
}

/// Generates and compiles the anchors of the first `count` libraries into `OUT_DIR/NAME.o`.
fn compile_anchors(name: &str, count: usize) -> std::path::PathBuf {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let src = out.join(format!("{name}.c"));
    std::fs::write(&src, anchors_source(&anchor_names(count))).expect("writing the anchors");
    let obj = out.join(format!("{name}.o"));
    let status = std::process::Command::new("cc")
        .args(["-c", "-O1", "-fno-pic", "-fno-pie"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| panic!("cannot run cc: {e}"));
    assert!(status.success(), "compiling {} failed", src.display());
    obj
}

/// Links the anchors into this crate's binaries: the lean ones (libc, libm, libgcc_s) into
/// every binary but those named in `cxx_bins`, which get libstdc++'s too and load it.
fn link_anchors_into_bins(executor_dir: &std::path::Path, lean_bins: &[&str], cxx_bins: &[&str]) {
    let lean = compile_anchors("anchors_lean", LEAN_LIBRARIES);
    let link = |bin: &str, obj: &std::path::Path, libs: &str| {
        let arg = |a: &str| println!("cargo:rustc-link-arg-bin={bin}={a}");
        arg(&obj.display().to_string());
        // Kept through --gc-sections: its relocations are the point.
        arg("-Wl,--undefined=remjit_copy_relocation_anchors");
        // Loaded low, the executable holds the copy-relocated instances.
        arg("-no-pie");
        // Its code and data near the top of the low 2 GiB (HOST_TEXT in vm.rs): the heap starts
        // up to 1 GiB above the executable's end (the kernel's brk randomization), so from the
        // default 2 MiB it split the low space in 1 run of ~40 and no gigabyte slab fitted there
        // (LLVM's controllers ask for exactly 1 GiB). From here it starts above 2 GiB or just
        // below, and 1.87 GiB below the executable stay free. `-Ttext` is the spelling GNU ld,
        // lld, gold and mold all take (lld refuses -Ttext-segment, GNU ld --image-base).
        arg("-Wl,-Ttext=0x78000000");
        // JIT'd code may use these libraries without naming them (the C and C++ runtimes).
        arg(&format!("-Wl,--no-as-needed,{libs},--as-needed"));
    };
    for bin in lean_bins {
        link(bin, &lean, "-lm,-lgcc_s");
    }
    if !cxx_bins.is_empty() {
        let full = compile_anchors("anchors_cxx", ANCHOR_LIBRARIES.len());
        for bin in cxx_bins {
            link(bin, &full, "-lm,-lstdc++,-lgcc_s");
        }
    }
    println!(
        "cargo:rerun-if-changed={}",
        executor_dir.join("anchors_build.rs").display()
    );
}
