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
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The input is neither ELF, an archive, a linker script nor a source file.
    #[error("{0}: not an ELF object, archive or linker script")]
    UnknownInput(String),
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

fn format_undefined(list: &[UndefinedSymbol]) -> String {
    let mut s = format!("{} undefined symbol(s):", list.len());
    for u in list {
        s.push_str(&format!(
            "\n  {} (referenced by {})",
            u.name,
            u.referenced_by.join(", ")
        ));
    }
    s
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
