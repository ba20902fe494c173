//! The executor side of remjit: the runtime that JIT'd code calls into (thread-locals, exit
//! handlers, constructors, unwind registration) and, in the binary, the SimpleRemoteEPC server.
#![deny(missing_docs)]

pub mod crash;
pub mod fds;
pub mod runtime;
pub mod server;
pub mod signals;
pub mod vm;
