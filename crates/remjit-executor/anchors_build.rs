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
    let base = image_base_arg();
    let link = |bin: &str, obj: &std::path::Path, libs: &str| {
        let arg = |a: &str| println!("cargo:rustc-link-arg-bin={bin}={a}");
        arg(&obj.display().to_string());
        // Kept through --gc-sections: its relocations are the point.
        arg("-Wl,--undefined=remjit_copy_relocation_anchors");
        // Loaded low, the executable holds the copy-relocated instances.
        arg("-no-pie");
        // Its code near the top of the low 2 GiB (see IMAGE_BASE).
        if let Some(base) = &base {
            arg(base);
        }
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

/// Where the host binaries' code loads: near the top of the low 2 GiB (the executor's
/// `vm::low_image_start` reserves below it). The kernel starts the heap up to 1 GiB above the
/// executable's end, so from the linkers' default of 2 or 4 MiB it split the low space in 1 run
/// of ~40 and no gigabyte slab fitted there (LLVM's controllers ask for exactly 1 GiB); from
/// here it starts above 2 GiB, or just under it, and 1.87 GiB below the code stay free.
const IMAGE_BASE: u64 = 0x7800_0000;

/// The linker option that loads the binaries' code at [`IMAGE_BASE`], for the linker rustc
/// uses here: lld and mold take `--image-base` (lld refuses `-Ttext-segment`), GNU ld
/// `-Ttext-segment` (and `--image-base` only for PE), and all of them `-Ttext` (which leaves
/// the headers' page low). Found by linking an empty program with each, with this build's
/// rustc, flags and linker; `None` (the linker's default, with a warning) when none works.
fn image_base_arg() -> Option<String> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let src = out.join("image_base_probe.rs");
    std::fs::write(&src, "fn main() {}\n").expect("writing the probe");
    let exe = out.join("image_base_probe");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    for option in ["--image-base", "-Ttext-segment", "-Ttext"] {
        let arg = format!("-Wl,{option}={IMAGE_BASE:#x}");
        let mut cmd = std::process::Command::new(&rustc);
        cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()))
            .args(["--crate-type", "bin", "-C", "link-arg=-no-pie", "-C"])
            .arg(format!("link-arg={arg}"))
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .stderr(std::process::Stdio::null());
        if let Ok(target) = std::env::var("TARGET") {
            cmd.args(["--target", &target]);
        }
        if let Ok(linker) = std::env::var("RUSTC_LINKER") {
            cmd.arg(format!("-Clinker={linker}"));
        }
        if cmd.status().is_ok_and(|s| s.success()) && code_starts_at_base(&exe) {
            return Some(arg);
        }
    }
    println!("cargo:warning=the linker takes no image base option: the heap may split the low 2 GiB");
    None
}

/// Whether the lowest executable segment of `exe` starts at [`IMAGE_BASE`] or just above (the
/// read-only segment may come first).
fn code_starts_at_base(exe: &std::path::Path) -> bool {
    use object::read::elf::{FileHeader, ProgramHeader};
    let Ok(data) = std::fs::read(exe) else {
        return false;
    };
    let Ok(header) = object::elf::FileHeader64::<object::Endianness>::parse(&*data) else {
        return false;
    };
    let Ok(endian) = header.endian() else {
        return false;
    };
    let code = header.program_headers(endian, &*data).ok().and_then(|p| {
        p.iter()
            .filter(|p| {
                p.p_type(endian) == object::elf::PT_LOAD
                    && p.p_flags(endian) & object::elf::PF_X != 0
            })
            .map(|p| p.p_vaddr(endian))
            .min()
    });
    code.is_some_and(|c| (IMAGE_BASE..IMAGE_BASE + (64 << 20)).contains(&c))
}
