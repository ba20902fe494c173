//! Errors of the linker and the session, each carrying enough context to act on.

use std::fmt;

/// Result type of the remjit library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A symbol that no input, library or earlier link defines, with who referenced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndefinedSymbol {
    /// The symbol's name.
    pub name: String,
    /// Every object that referenced it.
    pub referenced_by: Vec<String>,
}

/// A strong symbol defined by two inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateSymbol {
    /// The symbol's name.
    pub name: String,
    /// The object whose definition came first.
    pub first: String,
    /// The object that defined it again.
    pub second: String,
}

/// A relocation that remjit cannot apply, with where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: section {section}+{offset:#x}: {kind} against `{symbol}`: {problem}")]
pub struct RelocationError {
    /// The object holding the relocation.
    pub object: String,
    /// The section it applies to.
    pub section: String,
    /// The offset in that section.
    pub offset: u64,
    /// The relocation type's name.
    pub kind: String,
    /// The symbol it references.
    pub symbol: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

/// Everything that can go wrong while reading, linking or running JIT'd code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said (in the message, so not also a `source()`: said once).
        error: std::io::Error,
    },
    /// The input is neither ELF, an archive, a linker script nor a source file.
    #[error("{0}: not an ELF object, archive or linker script")]
    UnknownInput(String),
    /// A linker script reached through too many other linker scripts (one names itself?).
    #[error("{script}: linker scripts nested more than {depth} deep (does a script name itself?)")]
    ScriptNesting {
        /// The linker script not read.
        script: String,
        /// The nesting limit.
        depth: u32,
    },
    /// The input is malformed or cut short.
    #[error("{path}: malformed ELF object: {what}")]
    Malformed {
        /// The object.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// The ELF file is not for x86-64.
    #[error("{path}: wrong machine: {machine} (remjit links ELF64 x86-64 only)")]
    WrongMachine {
        /// The object.
        path: String,
        /// A description of what it is for.
        machine: String,
    },
    /// The ELF file is an executable or shared object where a relocatable object is needed.
    #[error("{path}: not a relocatable object (ELF type {kind}); give remjit .o files, archives or shared libraries")]
    NotRelocatable {
        /// The object.
        path: String,
        /// The ELF type found.
        kind: String,
    },
    /// A `-l NAME` that no search directory holds.
    #[error("library not found: -l{name} (searched: {searched})")]
    LibraryNotFound {
        /// The library name.
        name: String,
        /// The directories searched.
        searched: String,
    },
    /// A file named in a linker script that no search directory holds.
    #[error("{script}: linker script input `{name}` not found ({searched})")]
    ScriptInputNotFound {
        /// The linker script.
        script: String,
        /// The name it gives.
        name: String,
        /// Where remjit looked.
        searched: String,
    },
    /// An object holding link-time-optimisation bytecode and no machine code.
    #[error("{0}: compiled with -flto (no machine code): rebuild without -flto")]
    Lto(String),
    /// A compiler run for a source input failed.
    #[error("compiling {path} failed: {message}")]
    Compile {
        /// The source file.
        path: String,
        /// The compiler's diagnostics or the launch failure.
        message: String,
    },
    /// One or more symbols are defined nowhere.
    #[error("{}", format_undefined(.0))]
    Undefined(Vec<UndefinedSymbol>),
    /// One or more strong symbols are defined twice.
    #[error("{}", format_duplicates(.0))]
    Duplicate(Vec<DuplicateSymbol>),
    /// A relocation that remjit cannot apply.
    #[error("{0}")]
    Relocation(Box<RelocationError>),
    /// A shared library could not be loaded or a symbol looked up in it.
    #[error("{0}")]
    Dylib(String),
    /// Memory could not be reserved, mapped or protected.
    #[error("JIT memory: {0}")]
    Memory(String),
    /// The entry point is defined by no input.
    #[error("entry point `{0}` is not defined by the inputs")]
    EntryNotDefined(String),
    /// A symbol asked for by name (entry point, lookup) does not exist.
    #[error("symbol not found: {0}")]
    SymbolNotFound(String),
    /// The executor failed to run something.
    #[error("executor: {0}")]
    Executor(String),
    /// Misuse of the API or a bad option.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Whether this is a link that found symbols of the C++ runtime undefined.
    pub fn lacks_cxx_runtime(&self) -> bool {
        matches!(self, Error::Undefined(list) if list.iter().any(|u| is_cxx_runtime(&u.name)))
    }
}

fn format_undefined(list: &[UndefinedSymbol]) -> String {
    let mut s = format!("{} undefined symbol(s):", list.len());
    let mut runtime = false;
    for u in list {
        s.push_str(&format!("\n  {}", u.name));
        if let Some(d) = demangle(&u.name) {
            s.push_str(&format!(" [{d}]"));
        }
        s.push_str(&format!(" (referenced by {})", u.referenced_by.join(", ")));
        runtime |= is_cxx_runtime(&u.name);
    }
    if runtime {
        s.push_str("\nhint: symbols of the C++ runtime (libstdc++) are missing: add `-l stdc++`");
    }
    s
}

/// The C++ (Itanium ABI) name behind a mangled symbol, if it is one.
pub fn demangle(name: &str) -> Option<String> {
    if !name.starts_with("_Z") {
        return None;
    }
    let symbol = cpp_demangle::Symbol::new(name.as_bytes()).ok()?;
    symbol.demangle().ok().filter(|d| d != name)
}

/// Whether the C++ runtime (libstdc++ and its ABI library) defines `name`: the `std`,
/// `__gnu_cxx` and `__cxxabiv1` namespaces, `operator new`/`delete`, `__cxa_*`, the personality.
pub fn is_cxx_runtime(name: &str) -> bool {
    if name.starts_with("__cxa_")
        || name.starts_with("__gxx_personality")
        || name == "__dynamic_cast"
    {
        return true;
    }
    let Some(d) = demangle(name) else {
        return false;
    };
    let mut d = d.as_str();
    for prefix in [
        "typeinfo for ",
        "typeinfo name for ",
        "vtable for ",
        "VTT for ",
        "construction vtable for ",
        "guard variable for ",
    ] {
        d = d.strip_prefix(prefix).unwrap_or(d);
    }
    [
        "std::",
        "__gnu_cxx::",
        "__cxxabiv1::",
        "operator new",
        "operator delete",
    ]
    .iter()
    .any(|p| d.starts_with(p))
}

fn format_duplicates(list: &[DuplicateSymbol]) -> String {
    let mut s = format!("{} duplicate symbol(s):", list.len());
    for d in list {
        s.push_str(&format!(
            "\n  {} (defined in {} and in {})",
            d.name, d.first, d.second
        ));
    }
    s
}

impl Error {
    /// A malformed-object error for `path`.
    pub(crate) fn malformed(path: &str, what: impl fmt::Display) -> Self {
        Error::Malformed {
            path: path.to_string(),
            what: what.to_string(),
        }
    }
}
