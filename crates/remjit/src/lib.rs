//! remjit: a JIT linker for ELF x86-64 relocatable objects and static archives, with efficient
//! remote execution.
//!
//! The pipeline, one module per stage: [`input`] finds and maps files, [`object`] parses one
//! object in place, [`link`] resolves symbols, lays out, allocates from the slab, writes and
//! relocates, and finalizes through a [`memory::MemoryMapper`]; [`executor`] is where the code
//! runs; [`session`] is the API a REPL or JIT compiler uses, module by module.
//!
//! # Sessions: modules, shadowing, dependencies
//!
//! A [`Session`] links its inputs one module at a time; later modules use the symbols of
//! earlier ones. The model an embedder (or a REPL) can rely on:
//! - **Shadowing.** A module may define a name a live module already defines: the newest
//!   definition is the visible one for later links and for [`Session::lookup`] /
//!   [`Session::lookup_symbol`]; removing it makes the one below visible again. Removing an
//!   older definer leaves the newer one in place.
//! - **COMDAT groups** (C++ inline functions, templates, vtables) are kept once per session,
//!   in the first module that brings them; later modules drop their copies and bind to the
//!   kept one, even when its symbols are hidden (`-fvisibility-inlines-hidden`).
//! - **Dependencies.** A module depends on every module its relocations bound to (symbols it
//!   uses, COMDAT copies it shares): [`Session::module_dependencies`],
//!   [`Session::module_users`]. [`Session::remove_module`] refuses to remove a module that live
//!   modules use, naming them; removing modules newest first always works.
//! - **Symbols.** [`Session::lookup_symbol`] gives address, kind (function, data,
//!   thread-local), size and defining module.
//!
//! Calling JIT'd code: [`Session::run_main`] (an `int f(int, char **)`, whose result comes
//! back, in process and remote) and [`Session::call_void`].
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use remjit::{Session, SessionOptions, SymbolKind};
//! let dir = tempfile::tempdir()?;
//! let src = |name: &str, text: &str| -> std::io::Result<std::path::PathBuf> {
//!     let p = dir.path().join(name);
//!     std::fs::write(&p, text)?;
//!     Ok(p)
//! };
//! let mut s = Session::in_process(SessionOptions::default())?;
//! s.add_file(&src("one.c", "int answer(void) { return 1; }")?)?;
//! let first = s.link()?;
//! s.add_file(&src("two.c", "int answer(void) { return 42; }")?)?;
//! let second = s.link()?;
//! s.add_file(&src("use.c", "int answer(void); int twice(void) { return 2 * answer(); }")?)?;
//! let user = s.link()?;
//!
//! // The newest definition is visible, and the user bound to it.
//! let info = s.lookup_symbol("answer").unwrap();
//! assert_eq!((info.kind, info.module), (SymbolKind::Function, second));
//! assert_eq!(s.run_main("twice", &["twice".into()])?, 84);
//! assert_eq!(s.module_users(second), vec![user]);
//! assert!(s.remove_module(second).is_err()); // `user` still calls it
//!
//! s.remove_module(user)?;
//! s.remove_module(second)?; // the first definition comes back
//! assert_eq!(s.lookup_symbol("answer").unwrap().module, first);
//! assert_eq!(s.run_main("answer", &["answer".into()])?, 1);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod check;
pub mod debug;
pub mod error;
pub mod executor;
pub mod input;
pub mod link;
pub mod memory;
pub mod object;
pub mod remote;
pub mod repl;
pub mod session;

pub use error::{Error, Result};
pub use link::SymbolKind;
pub use session::{ModuleId, Session, SessionOptions, SymbolInfo};
