//! Feeds arbitrary bytes to the SPS decoders of every structured message the services take.
#![no_main]
use libfuzzer_sys::fuzz_target;
use remjit_wire::sps::{Bytes, Expected, Sps, SpsError};
use remjit_wire::types::*;

fuzz_target!(|data: &[u8]| {
    let _ = SetupMessage::from_bytes(data);
    let _ = <(u64, FinalizeRequest)>::from_bytes(data);
    let _ = <(u64, u64, SharedMemoryFinalizeRequest)>::from_bytes(data);
    let _ = <(u64, u64, Vec<LookupElement>)>::from_bytes(data);
    let _ = Expected::<Vec<ExecutorSymbolDef>>::from_bytes(data);
    let _ = <(u64, String, u64)>::from_bytes(data);
    let _ = <Vec<(u64, Bytes)>>::from_bytes(data);
    let _ = <(u64, Vec<String>)>::from_bytes(data);
    let _ = SpsError::from_bytes(data);
    // What decodes must encode back to the same bytes.
    if let Ok(v) = <(u64, FinalizeRequest)>::from_bytes(data) {
        assert_eq!(v.to_bytes(), data);
    }
});
