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
pub mod ring;
pub mod sps;
pub mod tcp;
pub mod types;

/// What can go wrong reading the wire.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed.
    #[error("transport: {0}")]
    Io(std::io::Error),
    /// A frame header is invalid.
    #[error("bad frame: {0}")]
    BadFrame(String),
    /// SPS bytes do not decode as the expected type.
    #[error("bad SPS data: {0}")]
    BadData(String),
}

// Not `#[from]`: that would make the I/O error also the `source()`, and a report printing the
// chain would say it twice.
impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        WireError::Io(e)
    }
}

/// Result type of this crate.
pub type Result<T, E = WireError> = std::result::Result<T, E>;
