//! `remjit-cxx`: `remjit` with the C++ runtime loaded at start and its data copied below
//! 2 GiB (see build.rs). `remjit` starts without libstdc++ and runs itself again as this
//! program, or starts this program as the executor, when a link needs the C++ runtime.
// main.rs's `#![no_main]` and C `main` are this crate's (its inner attribute lands in a module
// here, hence the allow). Its unit tests run in remjit's test build, not again here.
#![cfg_attr(not(test), no_main)]
#![allow(unused_attributes)]

#[cfg(not(test))]
#[path = "../main.rs"]
mod cli;
