//! remjit: a JIT linker for ELF x86-64 relocatable objects and static archives, with efficient
//! remote execution.
//!
//! The pipeline, one module per stage: [`input`] finds and maps files, [`object`] parses one
//! object in place, [`link`] resolves symbols, lays out, allocates from the slab, writes and
//! relocates, and finalizes through a [`memory::MemoryMapper`]; [`executor`] is where the code
//! runs; [`session`] is the API a REPL or JIT compiler uses, module by module.
#![deny(missing_docs)]

pub mod error;
pub mod executor;
pub mod input;
pub mod link;
pub mod memory;
pub mod object;
pub mod remote;
pub mod session;

pub use error::{Error, Result};
pub use link::SymbolKind;
pub use session::{ModuleId, Session, SessionOptions, SymbolInfo};
