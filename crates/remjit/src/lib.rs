//! remjit: a JIT linker for ELF x86-64 relocatable objects and static archives, with efficient
//! remote execution.
//!
//! The pipeline, one module per stage: [`input`] finds and maps files, [`object`] parses one
//! object in place, [`link`] resolves symbols, lays out, allocates from the slab, writes and
//! relocates, and finalizes through a [`memory::MemoryMapper`]; [`executor`] is where the code
//! runs; [`session`] is the API a REPL or JIT compiler uses, module by module.
//!
//! # Sessions: modules, redefinition, dependencies
//!
//! A [`Session`] links its inputs one module at a time; later modules use the symbols of
//! earlier ones. The model an embedder (or a REPL) can rely on:
//! - **Redefinition.** A module may define a name a live module already defines: the newest
//!   definition is the visible one for later links and for [`Session::lookup`] /
//!   [`Session::lookup_symbol`]; removing it makes the one below visible again. Removing an
//!   older definer leaves the newer one in place.
//! - **Call stubs.** A module's references to a *function* an earlier module defines go
//!   through a stub the session owns (`jmp *slot`), one per name: redefining the function
//!   re-points every earlier caller to the new body, and removing the redefinition points them
//!   back. `&f` in any later module is the stub's address ([`SymbolInfo::stub`]). References
//!   to data bind directly: a redefined variable is seen by later modules only.
//! - **COMDAT groups** (C++ inline functions, templates, vtables) are kept once per session,
//!   in the first module that brings them; later modules drop their copies and bind to the
//!   kept one, even when its symbols are hidden (`-fvisibility-inlines-hidden`).
//! - **Dependencies.** [`Session::remove_module`] refuses to remove a module that live
//!   modules need, naming them: modules bound to its data or its COMDAT copies, and modules
//!   calling a function that no other live module defines ([`Session::module_users`],
//!   [`Session::module_dependencies`]). Removing modules newest first always works.
//!   [`Session::retract`] withdraws some of a module's names without removing it (as removal
//!   would for those names; the memory goes with the module), under the same refusals.
//! - **Symbols.** [`Session::lookup_symbol`] gives address, kind (function, data,
//!   thread-local), size, defining module and call stub.
//!
//! # Running code, reading and writing memory
//!
//! [`Session::call`] calls a function by name with integer, pointer and floating-point
//! arguments ([`Arg`], at most 16) and reads its result as asked ([`RetKind`] -> [`Ret`]);
//! [`Session::read`] and [`Session::write`] access a variable by name, and
//! [`Session::read_memory`] / [`Session::write_memory`] any address (reads: anything mapped
//! readable; writes: writable JIT memory only; 16 MiB at most). The same calls work in process
//! and with [`remote::RemoteExecutor`] (over a socketpair or TCP); [`Session::run_main`] runs
//! an entry point as `main`.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use remjit::{Arg, Ret, RetKind, Session, SessionOptions};
//! let dir = tempfile::tempdir()?;
//! let src = |name: &str, text: &str| -> std::io::Result<std::path::PathBuf> {
//!     let p = dir.path().join(name);
//!     std::fs::write(&p, text)?;
//!     Ok(p)
//! };
//! let mut s = Session::in_process(SessionOptions::default())?;
//!
//! // A module with a global and functions (a C source is compiled; objects work the same).
//! s.add_file(&src(
//!     "lib.c",
//!     "long hits;\n\
//!      double scale(double x, long k, const long *p) { hits++; return x * k + *p; }\n\
//!      int answer(void) { return 1; }\n",
//! )?)?;
//! let lib = s.link()?;
//!
//! // Write a variable, call with a double, an integer and a pointer, read the variable.
//! s.write("hits", 0, &40i64.to_le_bytes())?;
//! let hits = s.lookup("hits").unwrap();
//! let r = s.call("scale", &[Arg::F64(2.5), Arg::I64(4), Arg::Ptr(hits)], RetKind::F64)?;
//! assert_eq!(r, Ret::F64(2.5 * 4.0 + 41.0));
//! assert_eq!(s.read("hits", 0, 8)?, 41i64.to_le_bytes());
//!
//! // A later module calls `answer`; a redefinition re-points that earlier caller.
//! s.add_file(&src("use.c", "int answer(void);\nint twice(void) { return 2 * answer(); }\n")?)?;
//! let user = s.link()?;
//! assert_eq!(s.call("twice", &[], RetKind::I32)?, Ret::I64(2));
//! s.add_file(&src("new.c", "int answer(void) { return 21; }\n")?)?;
//! let redefinition = s.link()?;
//! assert_eq!(s.call("twice", &[], RetKind::I32)?, Ret::I64(42));
//!
//! // Removing the redefinition points the caller back at the first body.
//! s.remove_module(redefinition)?;
//! assert_eq!(s.call("twice", &[], RetKind::I32)?, Ret::I64(2));
//!
//! // `lib` is the only definer of what `user` calls: refused until `user` goes.
//! assert!(s.remove_module(lib).is_err());
//! s.remove_module(user)?;
//! s.remove_module(lib)?;
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
pub(crate) mod redirect;
pub mod remote;
pub mod repl;
pub mod session;

pub use error::{Error, Result};
pub use executor::{Arg, Executor, Ret, RetKind};
pub use link::SymbolKind;
pub use session::{Layout, ModuleId, Session, SessionOptions, SymbolInfo};
