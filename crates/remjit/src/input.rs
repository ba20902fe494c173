//! Finding and reading inputs: object files, archives, shared libraries, GNU linker scripts
//! and C/C++ sources (compiled on the fly). Files are memory-mapped, never copied.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};

/// The bytes of one input: a read-only memory map of the file, or owned bytes (objects handed
/// over in memory, or compiled from source).
pub enum InputBytes {
    /// A memory map of a file, and the file (so that large sections can be mapped from it
    /// into JIT memory instead of copied).
    Mapped(memmap2::Mmap, Arc<std::fs::File>),
    /// Bytes owned by remjit.
    Owned(Vec<u8>),
}

impl Deref for InputBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            InputBytes::Mapped(m, _) => m,
            InputBytes::Owned(v) => v,
        }
    }
}

/// One input file with its display name.
#[derive(Clone)]
pub struct InputFile {
    /// The name used in messages (a path, or a name given by the API user).
    pub name: Arc<str>,
    /// The contents.
    pub bytes: Arc<InputBytes>,
}

impl InputFile {
    /// The file and offset that hold `data`, when `data` lies in this input's file mapping.
    pub fn file_range(&self, data: &[u8]) -> Option<(Arc<std::fs::File>, u64)> {
        let InputBytes::Mapped(map, file) = &*self.bytes else {
            return None;
        };
        let start = map.as_ptr() as usize;
        let p = data.as_ptr() as usize;
        (p >= start && p + data.len() <= start + map.len())
            .then(|| (file.clone(), (p - start) as u64))
    }
}

/// What an input file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// An ELF relocatable object (`ET_REL`).
    Object,
    /// A static archive.
    Archive,
    /// An ELF shared object.
    SharedLibrary,
    /// A GNU linker script (`GROUP ( ... )`, `INPUT ( ... )`).
    LinkerScript,
    /// Link-time-optimisation bytecode without machine code (`-flto`).
    Lto,
    /// Anything else.
    Unknown,
}

/// Classifies `bytes` by magic number.
pub fn classify(bytes: &[u8]) -> InputKind {
    if bytes.starts_with(b"\x7fELF") {
        // e_type sits at offset 16 for both classes; decide finer errors when parsing.
        match bytes.get(16..18) {
            // A PIE executable is ET_DYN too; parsing it as an object explains the mistake.
            Some([3, 0]) if !is_executable(bytes) => InputKind::SharedLibrary,
            Some([1, 0]) if is_slim_lto(bytes) => InputKind::Lto,
            _ => InputKind::Object,
        }
    } else if bytes.starts_with(b"!<arch>\n") || bytes.starts_with(b"!<thin>\n") {
        InputKind::Archive
    } else if bytes.starts_with(b"BC\xc0\xde") || bytes.starts_with(b"\xde\xc0\x17\x0b") {
        // LLVM bitcode (clang -flto), bare or in its wrapper.
        InputKind::Lto
    } else if is_linker_script(bytes) {
        InputKind::LinkerScript
    } else {
        InputKind::Unknown
    }
}

type Elf64 = object::elf::FileHeader64<object::LittleEndian>;

/// Whether an ELF64 `ET_DYN` file is an executable (PIE) rather than a shared library. A
/// library may have a program interpreter too (libc.so.6 does, to run as a program): what
/// marks a PIE is `DF_1_PIE`, or, from linkers that predate it, an interpreter and no soname.
pub fn is_executable(bytes: &[u8]) -> bool {
    use object::read::elf::{Dyn, FileHeader, ProgramHeader};
    use object::LittleEndian as LE;
    let Ok(header) = Elf64::parse(bytes) else {
        return false;
    };
    let Ok(phdrs) = header.program_headers(LE, bytes) else {
        return false;
    };
    let interp = phdrs.iter().any(|p| p.p_type(LE) == object::elf::PT_INTERP);
    let dynamic = phdrs
        .iter()
        .find_map(|p| p.dynamic(LE, bytes).ok().flatten());
    let Some(dynamic) = dynamic else {
        return interp;
    };
    let tag = |t: u32| {
        dynamic
            .iter()
            .find(|d| d.d_tag(LE) == u64::from(t))
            .map(|d| d.d_val(LE))
    };
    let pie =
        tag(object::elf::DT_FLAGS_1).is_some_and(|f| f & u64::from(object::elf::DF_1_PIE) != 0);
    pie || (interp && tag(object::elf::DT_SONAME).is_none())
}

/// Whether a relocatable ELF object holds only GCC's LTO bytecode (`-flto` without
/// `-ffat-lto-objects`): `.gnu.lto_*` sections and no machine code.
pub fn is_slim_lto(bytes: &[u8]) -> bool {
    use object::read::elf::{FileHeader, SectionHeader};
    use object::LittleEndian as LE;
    let Ok(header) = Elf64::parse(bytes) else {
        return false;
    };
    let Ok(sections) = header.sections(LE, bytes) else {
        return false;
    };
    let mut lto = false;
    for s in sections.iter() {
        let name = sections.section_name(LE, s).unwrap_or_default();
        lto |= name.starts_with(b".gnu.lto_");
        let code = s.sh_flags(LE) & u64::from(object::elf::SHF_EXECINSTR) != 0;
        if code && s.sh_size(LE) > 0 {
            return false;
        }
    }
    lto
}

fn is_linker_script(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // A character cut by the 4096-byte limit: the text before it.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    let stripped = strip_comments(text);
    let t = stripped.trim_start();
    t.starts_with("GROUP") || t.starts_with("INPUT") || t.starts_with("OUTPUT_FORMAT")
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find("*/") {
            Some(end) => rest = &rest[start + 2 + end + 2..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The files a GNU linker script names in `GROUP` and `INPUT` (`AS_NEEDED` ones included).
pub fn linker_script_inputs(text: &str) -> Vec<String> {
    let text = strip_comments(text);
    let mut files = Vec::new();
    let mut tokens = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .filter(|t| !t.is_empty())
        .peekable();
    let mut in_list = false;
    while let Some(tok) = tokens.next() {
        match tok {
            "GROUP" | "INPUT" => in_list = true,
            "AS_NEEDED" => {}
            "OUTPUT_FORMAT" | "OUTPUT_ARCH" | "SEARCH_DIR" | "ENTRY" => {
                in_list = false;
                tokens.next();
            }
            _ if in_list => files.push(tok.to_string()),
            _ => {}
        }
    }
    files
}

/// Files smaller than this are read rather than mapped.
const SMALL_FILE: u64 = 64 * 1024;

/// The most read from an input that is a pipe or socket (whose size is known only at its end).
const MAX_STREAM: u64 = 1 << 30;

/// Memory-maps `path` (reads it, when small).
pub fn map_file(path: &Path) -> Result<InputFile> {
    let io = |error| Error::Io {
        path: path.display().to_string(),
        error,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        // Said here: a large directory would otherwise fail to map with "No such device".
        return Err(io(std::io::Error::from_raw_os_error(libc::EISDIR)));
    }
    let device = {
        use std::os::unix::fs::FileTypeExt;
        meta.file_type().is_char_device() || meta.file_type().is_block_device()
    };
    if device {
        // Read to its end, /dev/zero would fill memory.
        return Err(io(std::io::Error::other("a device, not an input file")));
    }
    let len = meta.len();
    let bytes = if !meta.file_type().is_file() {
        // A pipe or socket (`<(...)`, /dev/stdin): read to its end, up to a bound.
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, MAX_STREAM + 1), &mut v)
            .map_err(io)?;
        if v.len() as u64 > MAX_STREAM {
            return Err(io(std::io::Error::other(format!(
                "more than {MAX_STREAM} bytes from a pipe: give a file instead"
            ))));
        }
        InputBytes::Owned(v)
    } else if len < SMALL_FILE {
        // Small files: one read costs less than a mapping and its page faults; the size is
        // known, so no probing (read_to_end's fstat, lseek and final empty read).
        let mut v = vec![0; len as usize];
        std::io::Read::read_exact(&mut file, &mut v).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                io(std::io::Error::other("the file shrank while it was read"))
            } else {
                io(e)
            }
        })?;
        InputBytes::Owned(v)
    } else {
        // SAFETY: the map is read-only; a file truncated underneath us is the user's race, as
        // with every linker that maps its inputs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        InputBytes::Mapped(map, Arc::new(file))
    };
    Ok(InputFile {
        name: Arc::from(path.display().to_string()),
        bytes: Arc::new(bytes),
    })
}

/// Library search directories: the user's `-L` first, then the system's and the compiler's.
#[derive(Debug, Clone, Default)]
pub struct LibrarySearch {
    /// Directories from `-L`, in order.
    pub user_dirs: Vec<PathBuf>,
}

const SYSTEM_LIB_DIRS: &[&str] = &[
    "/usr/local/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/local/lib",
    "/lib",
    "/usr/lib",
];

/// A command for the compiler named by `spec`, a value of `$CC`/`$CXX`: its first word is the
/// program and the others its first arguments (`ccache gcc`, `gcc -std=c11`), as make does.
pub fn compiler_command(spec: &str) -> std::process::Command {
    let mut words = spec.split_whitespace();
    let mut cmd = std::process::Command::new(words.next().unwrap_or(spec));
    cmd.args(words);
    cmd
}

/// The compiler's own library directories (`cc -print-search-dirs`), asked once and only when a
/// library is not found in the system directories (libstdc++ lives there).
fn compiler_lib_dirs() -> &'static [PathBuf] {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
        let Ok(out) = compiler_command(&cc).arg("-print-search-dirs").output() else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("libraries: ="))
            .map(|l| {
                l.split(':')
                    .map(PathBuf::from)
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    })
}

impl LibrarySearch {
    /// The first of `candidates` (file names) in the search directories: `-L` ones, the
    /// system's, then the compiler's (asked only when needed).
    fn search(&self, candidates: &[String]) -> Option<PathBuf> {
        let first = self
            .user_dirs
            .iter()
            .cloned()
            .chain(SYSTEM_LIB_DIRS.iter().map(PathBuf::from));
        let mut dirs = first.chain(compiler_lib_dirs().iter().cloned());
        dirs.find_map(|dir| candidates.iter().map(|c| dir.join(c)).find(|p| p.is_file()))
    }

    /// The directories searched, for messages.
    fn searched(&self) -> String {
        let dirs = self
            .user_dirs
            .iter()
            .cloned()
            .chain(SYSTEM_LIB_DIRS.iter().map(PathBuf::from))
            .chain(compiler_lib_dirs().iter().cloned());
        let names: Vec<String> = dirs.map(|p| p.display().to_string()).collect();
        names.join(" ")
    }

    /// Finds `-l NAME` the way the system linker does: each directory in turn, `libNAME.so`
    /// before `libNAME.a`; `-l :FILE` names a file exactly.
    pub fn find(&self, name: &str) -> Result<PathBuf> {
        let candidates: Vec<String> = match name.strip_prefix(':') {
            Some(exact) => vec![exact.to_string()],
            None => vec![format!("lib{name}.so"), format!("lib{name}.a")],
        };
        self.search(&candidates)
            .ok_or_else(|| Error::LibraryNotFound {
                name: name.to_string(),
                searched: self.searched(),
            })
    }

    /// Finds a file named in a linker script as GNU ld does: `-lNAME` as `-l`; an absolute path
    /// (or `=PATH`, relative to the sysroot `/`) as it is; any other name in the current
    /// directory, then in the library search directories.
    pub fn find_script_input(&self, script: &str, name: &str) -> Result<PathBuf> {
        if let Some(lib) = name.strip_prefix("-l") {
            return self.find(lib);
        }
        let path = match name.strip_prefix('=') {
            Some(in_sysroot) => Path::new("/").join(in_sysroot.trim_start_matches('/')),
            None => PathBuf::from(name),
        };
        if path.is_file() {
            return Ok(path);
        }
        let found = if path.is_absolute() {
            None
        } else {
            self.search(&[name.to_string()])
        };
        found.ok_or_else(|| Error::ScriptInputNotFound {
            script: script.to_string(),
            name: name.to_string(),
            searched: if path.is_absolute() {
                "no such file".to_string()
            } else {
                format!("searched the current directory and {}", self.searched())
            },
        })
    }
}

/// Whether `path` names a C or C++ source file that remjit compiles itself.
pub fn source_language(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()? {
        "c" => Some("c"),
        "cc" | "cpp" | "cxx" | "C" | "c++" => Some("c++"),
        _ => None,
    }
}

/// Compiles a C or C++ source with `$CC`/`$CXX` (`cc`/`c++`) `-c -fPIC -O2`, then `$CFLAGS` or
/// `$CXXFLAGS` and `extra_flags` (`-Xcc`), into owned bytes. The object is written in a fresh
/// private directory (random name, mode 0700) that is removed before this returns, and also if
/// remjit is interrupted meanwhile.
pub fn compile_source(path: &Path, lang: &str, extra_flags: &[String]) -> Result<InputFile> {
    let (compiler, flags_var) = if lang == "c" {
        (
            std::env::var("CC").unwrap_or_else(|_| "cc".into()),
            "CFLAGS",
        )
    } else {
        (
            std::env::var("CXX").unwrap_or_else(|_| "c++".into()),
            "CXXFLAGS",
        )
    };
    let env_flags = std::env::var(flags_var).unwrap_or_default();
    let fail = |message: String| Error::Compile {
        path: path.display().to_string(),
        message,
    };
    let tmp = std::env::temp_dir();
    let dir = tempfile::Builder::new()
        .prefix("remjit-cc-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&tmp)
        .map_err(|e| {
            fail(format!(
                "cannot create a private directory in {}: {e}",
                tmp.display()
            ))
        })?;
    let obj = dir.path().join("out.o");
    let bytes = {
        let _cleanup = interrupt::CleanupOnSignal::new(dir.path(), &obj);
        let result = compiler_command(&compiler)
            .args(["-c", "-fPIC", "-O2"])
            .args(env_flags.split_whitespace())
            .args(extra_flags)
            .arg(path)
            .arg("-o")
            .arg(&obj)
            .output();
        match result {
            Err(e) => Err(fail(format!("cannot run {compiler}: {e}"))),
            Ok(out) if !out.status.success() => {
                let said = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
                Err(fail(if said.is_empty() {
                    format!("{compiler} {} (writing {})", out.status, obj.display())
                } else {
                    said
                }))
            }
            Ok(_) => {
                std::fs::read(&obj).map_err(|e| fail(format!("cannot read {}: {e}", obj.display())))
            }
        }
    };
    let dir_name = dir.path().display().to_string();
    dir.close()
        .map_err(|e| fail(format!("cannot remove {dir_name}: {e}")))?;
    Ok(InputFile {
        name: Arc::from(path.display().to_string()),
        bytes: Arc::new(InputBytes::Owned(bytes?)),
    })
}

/// Removal of a compiler's scratch directory when SIGINT, SIGTERM or SIGHUP ends remjit while
/// the compiler runs.
mod interrupt {
    use std::ffi::CString;
    use std::path::Path;
    use std::sync::atomic::{AtomicPtr, Ordering};
    use std::sync::Mutex;

    struct Paths {
        file: CString,
        dir: CString,
    }

    /// The paths to remove, owned by the live guard (null when none).
    static PENDING: AtomicPtr<Paths> = AtomicPtr::new(std::ptr::null_mut());
    /// One guard at a time (compiles from several threads take turns).
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

    extern "C" fn on_signal(sig: libc::c_int) {
        let p = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
        // SAFETY: unlink, rmdir, signal and raise are async-signal-safe; `p` was leaked by the
        // guard and is never freed once taken here.
        unsafe {
            if !p.is_null() {
                libc::unlink((*p).file.as_ptr());
                libc::rmdir((*p).dir.as_ptr());
            }
            // Die of the signal, as without the handler, once it returns.
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }

    /// While alive, the signals above (where their action is the default) remove `file` and
    /// `dir` before ending remjit.
    pub struct CleanupOnSignal {
        old: Vec<(libc::c_int, libc::sigaction)>,
        _turn: std::sync::MutexGuard<'static, ()>,
    }

    impl CleanupOnSignal {
        pub fn new(dir: &Path, file: &Path) -> Self {
            let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
            let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).ok();
            if let (Some(file), Some(dir)) = (c(file), c(dir)) {
                let paths = Box::into_raw(Box::new(Paths { file, dir }));
                PENDING.store(paths, Ordering::SeqCst);
            }
            let mut old = Vec::new();
            for sig in SIGNALS {
                // SAFETY: installing a handler that only makes async-signal-safe calls; the
                // previous action is saved and restored on drop.
                unsafe {
                    let mut prev: libc::sigaction = std::mem::zeroed();
                    // An ignored signal stays ignored, and a handler the host installed
                    // stays the host's: only the default action (death) gets the cleanup.
                    if libc::sigaction(sig, std::ptr::null(), &mut prev) != 0
                        || prev.sa_sigaction != libc::SIG_DFL
                    {
                        continue;
                    }
                    let mut act: libc::sigaction = std::mem::zeroed();
                    act.sa_sigaction = on_signal as *const () as usize;
                    libc::sigemptyset(&mut act.sa_mask);
                    if libc::sigaction(sig, &act, std::ptr::null_mut()) == 0 {
                        old.push((sig, prev));
                    }
                }
            }
            CleanupOnSignal { old, _turn: turn }
        }
    }

    impl Drop for CleanupOnSignal {
        fn drop(&mut self) {
            for (sig, prev) in &self.old {
                // SAFETY: restoring the action saved above.
                unsafe { libc::sigaction(*sig, prev, std::ptr::null_mut()) };
            }
            let p = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
            if !p.is_null() {
                // SAFETY: `p` came from Box::into_raw above and no handler took it.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linker_script_of_debian_libm() {
        let text = "/* GNU ld script\n*/\nOUTPUT_FORMAT(elf64-x86-64)\nGROUP ( /lib/x86_64-linux-gnu/libm.so.6  AS_NEEDED ( /lib/x86_64-linux-gnu/libmvec.so.1 ) )\n";
        assert_eq!(classify(text.as_bytes()), InputKind::LinkerScript);
        assert_eq!(
            linker_script_inputs(text),
            vec![
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib/x86_64-linux-gnu/libmvec.so.1"
            ]
        );
    }

    /// Whether an ELF64 file has a `PT_INTERP` program header.
    fn has_interpreter(bytes: &[u8]) -> bool {
        use object::read::elf::{FileHeader, ProgramHeader};
        use object::LittleEndian as LE;
        Elf64::parse(bytes)
            .and_then(|h| h.program_headers(LE, bytes))
            .is_ok_and(|p| p.iter().any(|p| p.p_type(LE) == object::elf::PT_INTERP))
    }

    #[test]
    fn libraries_with_an_interpreter_are_libraries_and_pies_are_not() {
        let libc = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        assert!(has_interpreter(&libc), "libc.so.6 runs as a program too");
        assert_eq!(classify(&libc), InputKind::SharedLibrary);
        let pie = std::fs::read("/usr/bin/ls").unwrap();
        assert_eq!(pie.get(16..18), Some(&[3u8, 0][..]), "Debian builds PIEs");
        assert_eq!(classify(&pie), InputKind::Object);
    }

    #[test]
    fn script_names_are_found_as_ld_finds_them() {
        let search = LibrarySearch::default();
        let libc = "/lib/x86_64-linux-gnu/libc.so.6";
        assert_eq!(
            search.find_script_input("s", libc).unwrap(),
            Path::new(libc)
        );
        let in_sysroot = search.find_script_input("s", &format!("={libc}")).unwrap();
        assert_eq!(in_sysroot, Path::new(libc));
        let by_search = search.find_script_input("s", "libc.so.6").unwrap();
        assert!(
            by_search.ends_with("x86_64-linux-gnu/libc.so.6"),
            "{by_search:?}"
        );
        assert!(search.find_script_input("s", "-lm").is_ok());
        let e = search
            .find_script_input("s", "/nowhere/libx.a")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "s: linker script input `/nowhere/libx.a` not found (no such file)"
        );
    }

    #[test]
    fn a_script_cut_inside_a_character_at_the_limit_is_a_script() {
        let mut text = "GROUP ( /lib/x86_64-linux-gnu/libm.so.6 )\n/* ".to_string();
        text.push_str(&"x".repeat(4095 - text.len()));
        text.push_str("\u{e9} */\n");
        assert_eq!(text.as_bytes()[4095..4097], "\u{e9}".as_bytes()[..]);
        assert_eq!(classify(text.as_bytes()), InputKind::LinkerScript);
        assert_eq!(classify(b"GROUP ( a.o ) \xff"), InputKind::Unknown);
    }

    #[test]
    fn classify_magic() {
        assert_eq!(classify(b"!<arch>\nxxxx"), InputKind::Archive);
        assert_eq!(classify(b"hello"), InputKind::Unknown);
    }
}
