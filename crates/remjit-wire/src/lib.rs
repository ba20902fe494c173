//! The SimpleRemoteEPC wire protocol of LLVM ORC, byte-compatible with LLVM 19: the 32-byte
//! frame codec ([`frame`]), Simple Packed Serialization ([`sps`]), the structured types the
//! executor services exchange ([`types`]) and the names they are found under ([`names`]).
//!
//! Decoding never trusts a length: a malformed or hostile frame is an error, not a crash or a
//! huge allocation.
#![deny(missing_docs)]

pub mod auth;
pub mod frame;
pub mod names;
pub mod sps;
pub mod types;

/// What can go wrong reading the wire.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed.
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
    /// A frame header is invalid.
    #[error("bad frame: {0}")]
    BadFrame(String),
    /// SPS bytes do not decode as the expected type.
    #[error("bad SPS data: {0}")]
    BadData(String),
}

/// Result type of this crate.
pub type Result<T, E = WireError> = std::result::Result<T, E>;
