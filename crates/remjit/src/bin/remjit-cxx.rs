//! `remjit-cxx`: `remjit` with the C++ runtime loaded at start and its data copied below
//! 2 GiB (see build.rs). `remjit` starts without libstdc++ and runs itself again as this
//! program, or starts this program as the executor, when a link needs the C++ runtime.

#[path = "../main.rs"]
mod cli;

fn main() {
    cli::main()
}
