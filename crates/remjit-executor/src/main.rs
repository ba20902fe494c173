//! `remjit-executor`: runs JIT'd code for a remjit (or LLVM ORC) controller.
fn main() {
    eprintln!("remjit-executor: the SimpleRemoteEPC server is not built yet");
    std::process::exit(1);
}
