//! The structured messages of LLVM 19's executor services (TargetProcessControlTypes.h,
//! ExecutorSymbolDef.h, SimpleRemoteEPCUtils.h), with their SPS encodings.

use crate::sps::{Bytes, Reader, Sps};
use crate::Result;

macro_rules! sps_struct {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name { $($(#[$fm])* pub $field: $ty),* }
        impl Sps for $name {
            const MIN_SIZE: usize = 0 $(+ <$ty as Sps>::MIN_SIZE)*;
            fn encode(&self, out: &mut Vec<u8>) { $(self.$field.encode(out);)* }
            fn decode(r: &mut Reader<'_>) -> Result<Self> {
                Ok($name { $($field: <$ty>::decode(r)?),* })
            }
        }
    };
}

sps_struct!(
    /// The executor's Setup payload (`SimpleRemoteEPCExecutorInfo`).
    SetupMessage {
        /// Target triple.
        target_triple: String,
        /// Page size.
        page_size: u64,
        /// Bootstrap values by name.
        bootstrap_map: Vec<(String, Bytes)>,
        /// Bootstrap symbols by name.
        bootstrap_symbols: Vec<(String, u64)>,
    }
);

sps_struct!(
    /// `ExecutorAddrRange`.
    AddrRange {
        /// First byte.
        start: u64,
        /// One past the last.
        end: u64,
    }
);

sps_struct!(
    /// `WrapperFunctionCall`: a wrapper function and its SPS argument bytes (address 0: none).
    WrapperFunctionCall {
        /// The wrapper function.
        function: u64,
        /// Its arguments.
        args: Bytes,
    }
);

sps_struct!(
    /// `AllocActionCallPair`: run `finalize` now, `dealloc` when freed.
    AllocActionCallPair {
        /// The finalize action.
        finalize: WrapperFunctionCall,
        /// The dealloc action (function 0: none).
        dealloc: WrapperFunctionCall,
    }
);

/// Protection bits of a `RemoteAllocGroup` (one byte on the wire).
pub mod prot {
    /// Readable.
    pub const READ: u8 = 1;
    /// Writable.
    pub const WRITE: u8 = 2;
    /// Executable.
    pub const EXEC: u8 = 4;
    /// Finalize-lifetime (freed after finalization).
    pub const FINALIZE: u8 = 8;
}

sps_struct!(
    /// `SegFinalizeRequest`: one segment with its content (copy-over-the-wire memory manager).
    SegFinalizeRequest {
        /// Protection bits ([`prot`]).
        prot: u8,
        /// Address.
        addr: u64,
        /// Size (content, then zero fill).
        size: u64,
        /// Content bytes.
        content: Bytes,
    }
);

sps_struct!(
    /// `FinalizeRequest`.
    FinalizeRequest {
        /// Segments.
        segments: Vec<SegFinalizeRequest>,
        /// Actions.
        actions: Vec<AllocActionCallPair>,
    }
);

sps_struct!(
    /// `SharedMemorySegFinalizeRequest`: a segment already written through shared memory.
    SharedMemorySegFinalizeRequest {
        /// Protection bits ([`prot`]).
        prot: u8,
        /// Address.
        addr: u64,
        /// Size.
        size: u64,
    }
);

sps_struct!(
    /// `SharedMemoryFinalizeRequest`.
    SharedMemoryFinalizeRequest {
        /// Segments.
        segments: Vec<SharedMemorySegFinalizeRequest>,
        /// Actions.
        actions: Vec<AllocActionCallPair>,
    }
);

sps_struct!(
    /// `RemoteSymbolLookupSetElement`: a name and whether it must be found.
    LookupElement {
        /// Symbol name.
        name: String,
        /// Required (failure to find it is an error) or weakly referenced.
        required: bool,
    }
);

/// `JITSymbolFlags` bits.
pub mod symbol_flags {
    /// Weak.
    pub const WEAK: u8 = 2;
    /// Absolute.
    pub const ABSOLUTE: u8 = 8;
    /// Exported.
    pub const EXPORTED: u8 = 16;
    /// Callable (a function).
    pub const CALLABLE: u8 = 32;
}

sps_struct!(
    /// `ExecutorSymbolDef`: an address and `JITSymbolFlags` (flags byte, target flags byte).
    ExecutorSymbolDef {
        /// Address (0: not found).
        addr: u64,
        /// Flags ([`symbol_flags`]).
        flags: u8,
        /// Target flags.
        target_flags: u8,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_bytes() {
        let s = SetupMessage {
            target_triple: "x".into(),
            page_size: 4096,
            bootstrap_map: vec![],
            bootstrap_symbols: vec![("f".into(), 0x10)],
        };
        let b = s.to_bytes();
        let mut want = vec![1, 0, 0, 0, 0, 0, 0, 0, b'x'];
        want.extend_from_slice(&4096u64.to_le_bytes());
        want.extend_from_slice(&0u64.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, b'f']);
        want.extend_from_slice(&0x10u64.to_le_bytes());
        assert_eq!(b, want);
        assert_eq!(SetupMessage::from_bytes(&b).unwrap(), s);
    }

    #[test]
    fn segment_request_layout() {
        // RemoteAllocGroup is one byte; then address, size, content sequence.
        let r = SegFinalizeRequest {
            prot: prot::READ | prot::EXEC,
            addr: 0x1000,
            size: 0x20,
            content: Bytes(vec![0xc3]),
        };
        let b = r.to_bytes();
        assert_eq!(b.len(), 1 + 8 + 8 + 8 + 1);
        assert_eq!(b[0], 5);
        assert_eq!(SegFinalizeRequest::from_bytes(&b).unwrap(), r);
    }
}
