//! The wire protocol shared by the remjit controller and executor: LLVM ORC's SimpleRemoteEPC
//! frames, SPS (simple packed serialization), executor addresses and service names.
#![deny(missing_docs)]
