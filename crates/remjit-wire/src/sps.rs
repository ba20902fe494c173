//! Simple Packed Serialization, as LLVM ORC encodes it: fixed-width little-endian integers,
//! `bool` as one byte, sequences and strings as a u64 count then the elements, tuples as the
//! concatenation of their fields, `Error` as a flag then (if set) a message, `Expected<T>` as a
//! has-value flag then the value or the message.

use crate::{Result, WireError};

/// A type with an SPS encoding.
pub trait Sps: Sized {
    /// Appends the encoding of `self`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes a value, advancing `r`.
    fn decode(r: &mut Reader<'_>) -> Result<Self>;
    /// The smallest encoded size (used to bound allocations from untrusted counts).
    const MIN_SIZE: usize = 1;

    /// The encoding as a fresh buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes a whole buffer (trailing bytes are an error).
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let v = Self::decode(&mut r)?;
        if !r.is_empty() {
            return Err(WireError::BadData(format!(
                "{} trailing bytes",
                r.remaining()
            )));
        }
        Ok(v)
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(WireError::BadData(format!(
                "needs {n} bytes, {} left",
                self.bytes.len()
            )));
        }
        let (a, b) = self.bytes.split_at(n);
        self.bytes = b;
        Ok(a)
    }
    /// Reads a sequence count, checked against the bytes left for elements of `min` bytes.
    pub fn count(&mut self, min: usize) -> Result<usize> {
        let n = u64::decode(self)?;
        if n > (self.bytes.len() / min.max(1)) as u64 {
            return Err(WireError::BadData(format!(
                "sequence of {n} elements cannot fit in {} bytes",
                self.bytes.len()
            )));
        }
        Ok(n as usize)
    }
}

macro_rules! int_sps {
    ($($t:ty),*) => {$(
        impl Sps for $t {
            const MIN_SIZE: usize = std::mem::size_of::<$t>();
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self> {
                let b = r.take(std::mem::size_of::<$t>())?;
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                Ok(<$t>::from_le_bytes(a))
            }
        }
    )*};
}
int_sps!(u8, i8, u16, i16, u32, i32, u64, i64);

impl Sps for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        match r.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(WireError::BadData(format!("bool byte {b}"))),
        }
    }
}

impl Sps for String {
    const MIN_SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u64).encode(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.count(1)?;
        let b = r.take(n)?;
        // LLVM strings are bytes; keep them lossless where valid, readable where not.
        Ok(String::from_utf8_lossy(b).into_owned())
    }
}

/// `SPSSequence<char>`: raw bytes, decoded in one copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Sps for Bytes {
    const MIN_SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        (self.0.len() as u64).encode(out);
        out.extend_from_slice(&self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.count(1)?;
        Ok(Bytes(r.take(n)?.to_vec()))
    }
}

impl<T: Sps> Sps for Vec<T> {
    const MIN_SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u64).encode(out);
        for x in self {
            x.encode(out);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.count(T::MIN_SIZE)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(T::decode(r)?);
        }
        Ok(v)
    }
}

macro_rules! tuple_sps {
    ($($n:ident),*) => {
        impl<$($n: Sps),*> Sps for ($($n,)*) {
            const MIN_SIZE: usize = 0 $(+ $n::MIN_SIZE)*;
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($n,)*) = self;
                $($n.encode(out);)*
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self> {
                Ok(($($n::decode(r)?,)*))
            }
        }
    };
}
tuple_sps!(A);
tuple_sps!(A, B);
tuple_sps!(A, B, C);
tuple_sps!(A, B, C, D);
tuple_sps!(A, B, C, D, E);

/// `SPSError`: success, or a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpsError(pub Option<String>);

impl SpsError {
    /// Success.
    pub const OK: SpsError = SpsError(None);
    /// As a Rust result.
    pub fn into_result(self) -> std::result::Result<(), String> {
        match self.0 {
            None => Ok(()),
            Some(m) => Err(m),
        }
    }
}

impl From<std::result::Result<(), String>> for SpsError {
    fn from(r: std::result::Result<(), String>) -> Self {
        SpsError(r.err())
    }
}

impl Sps for SpsError {
    fn encode(&self, out: &mut Vec<u8>) {
        match &self.0 {
            None => false.encode(out),
            Some(m) => {
                true.encode(out);
                m.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(SpsError(if bool::decode(r)? {
            Some(String::decode(r)?)
        } else {
            None
        }))
    }
}

/// `SPSExpected<T>`: a value, or an error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<T>(pub std::result::Result<T, String>);

impl<T: Sps> Sps for Expected<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match &self.0 {
            Ok(v) => {
                true.encode(out);
                v.encode(out);
            }
            Err(m) => {
                false.encode(out);
                m.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Expected(if bool::decode(r)? {
            Ok(T::decode(r)?)
        } else {
            Err(String::decode(r)?)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_bytes() {
        // SimplePackedSerialization.h: strings are a u64 length then the bytes.
        assert_eq!(
            "ab".to_string().to_bytes(),
            vec![2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']
        );
        assert_eq!(SpsError::OK.to_bytes(), vec![0]);
        assert_eq!(
            SpsError(Some("x".into())).to_bytes(),
            vec![1, 1, 0, 0, 0, 0, 0, 0, 0, b'x']
        );
        assert_eq!(
            Expected::<u64>(Ok(5)).to_bytes(),
            vec![1, 5, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!((true, 7u32).to_bytes(), vec![1, 7, 0, 0, 0]);
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        let mut b = Vec::new();
        u64::MAX.encode(&mut b);
        assert!(Vec::<u64>::from_bytes(&b).is_err());
        assert!(String::from_bytes(&b).is_err());
        assert!(Bytes::from_bytes(&b).is_err());
        assert!(bool::from_bytes(&[2]).is_err());
        assert!(u64::from_bytes(&[1, 2]).is_err());
        assert!(u8::from_bytes(&[1, 2]).is_err(), "trailing bytes");
    }

    proptest! {
        #[test]
        fn round_trips(a in any::<u64>(), s in ".*", v in proptest::collection::vec(any::<u8>(), 0..64),
                       xs in proptest::collection::vec((any::<u64>(), any::<bool>()), 0..16)) {
            let t = (a, s.clone(), Bytes(v.clone()), xs.clone());
            let back = <(u64, String, Bytes, Vec<(u64, bool)>)>::from_bytes(&t.to_bytes()).unwrap();
            prop_assert_eq!(back, t);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = <(String, Vec<(u64, Bytes)>, Expected<u64>)>::from_bytes(&bytes);
            let _ = crate::types::FinalizeRequest::from_bytes(&bytes);
            let _ = crate::types::SetupMessage::from_bytes(&bytes);
        }
    }
}
