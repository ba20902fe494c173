//! Feeds arbitrary bytes to the frame decoder: it must return frames or errors, never panic,
//! and never allocate more than the bytes it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use remjit_wire::frame::read_frame;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    while let Ok(Some(f)) = read_frame(&mut r, 1 << 20) {
        assert!(f.payload.len() <= data.len());
    }
});
