//! remjit: a JIT linker for ELF x86-64 relocatable objects and static archives, running the
//! linked code in-process or in a separate executor process.
#![deny(missing_docs)]
