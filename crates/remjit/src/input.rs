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
    /// Anything else.
    Unknown,
}

/// Classifies `bytes` by magic number.
pub fn classify(bytes: &[u8]) -> InputKind {
    if bytes.starts_with(b"\x7fELF") {
        // e_type sits at offset 16 for both classes; decide finer errors when parsing.
        match bytes.get(16..18) {
            // A PIE executable is ET_DYN too; parsing it as an object explains the mistake.
            Some([3, 0]) if !has_interpreter(bytes) => InputKind::SharedLibrary,
            _ => InputKind::Object,
        }
    } else if bytes.starts_with(b"!<arch>\n") || bytes.starts_with(b"!<thin>\n") {
        InputKind::Archive
    } else if is_linker_script(bytes) {
        InputKind::LinkerScript
    } else {
        InputKind::Unknown
    }
}

/// Whether an ELF64 file has a `PT_INTERP` program header (an executable, PIE or not).
pub fn has_interpreter(bytes: &[u8]) -> bool {
    let u = |at: usize, n: usize| -> Option<u64> {
        let b = bytes.get(at..at.checked_add(n)?)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u(32, 8), u(54, 2), u(56, 2)) else {
        return false;
    };
    (0..phnum).any(|i| {
        let at = phoff.saturating_add(i.saturating_mul(phentsize)) as usize;
        u(at, 4) == Some(3)
    })
}

fn is_linker_script(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(&bytes[..bytes.len().min(4096)]) else {
        return false;
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

/// Memory-maps `path` (reads it, when small).
pub fn map_file(path: &Path) -> Result<InputFile> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let bytes = if len < SMALL_FILE {
        // Small files: one read costs less than a mapping and its page faults.
        let mut v = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut file, &mut v).map_err(io)?;
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

/// The compiler's own library directories (`cc -print-search-dirs`), asked once and only when a
/// library is not found in the system directories (libstdc++ lives there).
fn compiler_lib_dirs() -> &'static [PathBuf] {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
        let Ok(out) = std::process::Command::new(cc)
            .arg("-print-search-dirs")
            .output()
        else {
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
    /// Finds `-l NAME` the way the system linker does: each directory in turn, `libNAME.so`
    /// before `libNAME.a`; `-l :FILE` names a file exactly.
    pub fn find(&self, name: &str) -> Result<PathBuf> {
        let candidates: Vec<String> = match name.strip_prefix(':') {
            Some(exact) => vec![exact.to_string()],
            None => vec![format!("lib{name}.so"), format!("lib{name}.a")],
        };
        let system = SYSTEM_LIB_DIRS.iter().map(PathBuf::from);
        let search = |dirs: &mut dyn Iterator<Item = PathBuf>| {
            for dir in dirs {
                for c in &candidates {
                    let p = dir.join(c);
                    if p.is_file() {
                        return Some(p);
                    }
                }
            }
            None
        };
        if let Some(p) = search(&mut self.user_dirs.iter().cloned().chain(system.clone())) {
            return Ok(p);
        }
        if let Some(p) = search(&mut compiler_lib_dirs().iter().cloned()) {
            return Ok(p);
        }
        let searched: Vec<String> = self
            .user_dirs
            .iter()
            .cloned()
            .chain(system)
            .chain(compiler_lib_dirs().iter().cloned())
            .map(|p| p.display().to_string())
            .collect();
        Err(Error::LibraryNotFound {
            name: name.to_string(),
            searched: searched.join(" "),
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

/// Compiles a C or C++ source with `$CC`/`$CXX` (`cc`/`c++`) `-c -fPIC -O2` into owned bytes.
pub fn compile_source(path: &Path, lang: &str) -> Result<InputFile> {
    let compiler = if lang == "c" {
        std::env::var("CC").unwrap_or_else(|_| "cc".into())
    } else {
        std::env::var("CXX").unwrap_or_else(|_| "c++".into())
    };
    let fail = |message: String| Error::Compile {
        path: path.display().to_string(),
        message,
    };
    let dir = std::env::temp_dir().join(format!(
        "remjit-cc-{}-{}",
        std::process::id(),
        COMPILE_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let obj = dir.join("out.o");
    let result = std::process::Command::new(&compiler)
        .args(["-c", "-fPIC", "-O2"])
        .arg(path)
        .arg("-o")
        .arg(&obj)
        .output();
    let bytes = match result {
        Err(e) => Err(fail(format!("cannot run {compiler}: {e}"))),
        Ok(out) if !out.status.success() => Err(fail(
            String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        )),
        Ok(_) => std::fs::read(&obj).map_err(|e| fail(e.to_string())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(InputFile {
        name: Arc::from(path.display().to_string()),
        bytes: Arc::new(InputBytes::Owned(bytes?)),
    })
}

static COMPILE_COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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

    #[test]
    fn classify_magic() {
        assert_eq!(classify(b"!<arch>\nxxxx"), InputKind::Archive);
        assert_eq!(classify(b"hello"), InputKind::Unknown);
    }
}
