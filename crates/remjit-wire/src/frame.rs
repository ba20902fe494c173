//! Frames: a header of four little-endian u64 — total size (header included), opcode, sequence
//! number, tag address — followed by the argument bytes (LLVM's SimpleRemoteEPCUtils).

use std::io::{Read, Write};

use crate::{Result, WireError};

/// Size of a frame header.
pub const HEADER_SIZE: u64 = 32;

/// The message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Executor -> controller, once, first: target info and bootstrap symbols.
    Setup = 0,
    /// Either side: the session ends.
    Hangup = 1,
    /// The result of a CallWrapper, with the caller's sequence number.
    Result = 2,
    /// Call the wrapper function at the tag address with the argument bytes.
    CallWrapper = 3,
}

impl Opcode {
    /// The opcode for a wire value.
    pub fn from_u64(v: u64) -> Option<Opcode> {
        Some(match v {
            0 => Opcode::Setup,
            1 => Opcode::Hangup,
            2 => Opcode::Result,
            3 => Opcode::CallWrapper,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its kind.
    pub opcode: Opcode,
    /// Sequence number (per sending side; Results carry the call's).
    pub seq: u64,
    /// Tag address (the wrapper function for CallWrapper).
    pub tag: u64,
    /// Argument bytes.
    pub payload: Vec<u8>,
}

/// Encodes a frame header for `payload_len` argument bytes.
pub fn encode_header(opcode: Opcode, seq: u64, tag: u64, payload_len: usize) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..8].copy_from_slice(&(HEADER_SIZE + payload_len as u64).to_le_bytes());
    h[8..16].copy_from_slice(&(opcode as u64).to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&tag.to_le_bytes());
    h
}

/// Writes one frame (header and payload in one write where possible).
pub fn write_frame(
    w: &mut dyn Write,
    opcode: Opcode,
    seq: u64,
    tag: u64,
    payload: &[u8],
) -> Result<()> {
    let h = encode_header(opcode, seq, tag, payload.len());
    if payload.len() <= 4096 {
        let mut buf = Vec::with_capacity(32 + payload.len());
        buf.extend_from_slice(&h);
        buf.extend_from_slice(payload);
        w.write_all(&buf)?;
    } else {
        w.write_all(&h)?;
        w.write_all(payload)?;
    }
    Ok(())
}

/// Decodes and checks a header: (opcode, seq, tag, payload length).
pub fn decode_header(h: &[u8; 32], max_size: u64) -> Result<(Opcode, u64, u64, usize)> {
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    let size = word(0);
    if size < HEADER_SIZE {
        return Err(WireError::BadFrame(format!(
            "message size {size} is below the 32-byte header"
        )));
    }
    if size > max_size {
        return Err(WireError::BadFrame(format!(
            "message size {size} exceeds the limit of {max_size} bytes"
        )));
    }
    let opcode = Opcode::from_u64(word(1))
        .ok_or_else(|| WireError::BadFrame(format!("unknown opcode {}", word(1))))?;
    Ok((opcode, word(2), word(3), (size - HEADER_SIZE) as usize))
}

/// Payload bytes of a frame that room is made for before they arrive.
const PREALLOCATED: usize = 64 << 10;

/// Reads one frame; `Ok(None)` on a clean end of stream before a header.
pub fn read_frame(r: &mut dyn Read, max_size: u64) -> Result<Option<Frame>> {
    let mut h = [0u8; 32];
    let mut got = 0;
    while got < 32 {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(WireError::BadFrame(
                    "stream ended inside a frame header".into(),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (opcode, seq, tag, len) = decode_header(&h, max_size)?;
    // Room for a usual frame at once (one read takes it whole); beyond that, grow as bytes
    // arrive: a lying size costs no more memory than the bytes actually sent.
    let mut payload = Vec::with_capacity(len.min(PREALLOCATED));
    let mut limited = r.take(len as u64);
    limited.read_to_end(&mut payload)?;
    if payload.len() != len {
        return Err(WireError::BadFrame(format!(
            "stream ended after {} of {len} payload bytes",
            payload.len()
        )));
    }
    Ok(Some(Frame {
        opcode,
        seq,
        tag,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes() {
        // MsgSize 35, CallWrapper (3), seq 7, tag 0x1000: four little-endian u64.
        let h = encode_header(Opcode::CallWrapper, 7, 0x1000, 3);
        assert_eq!(&h[0..8], &[35, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&h[8..16], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&h[16..24], &[7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&h[24..32], &[0, 0x10, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Opcode::Result, 9, 0, b"abc").unwrap();
        let f = read_frame(&mut &buf[..], 1 << 20).unwrap().unwrap();
        assert_eq!(
            f,
            Frame {
                opcode: Opcode::Result,
                seq: 9,
                tag: 0,
                payload: b"abc".to_vec()
            }
        );
        assert!(read_frame(&mut &buf[..0], 1 << 20).unwrap().is_none());
    }

    #[test]
    fn hostile_frames_are_errors() {
        let mut small = encode_header(Opcode::Result, 0, 0, 0);
        small[0] = 31;
        assert!(read_frame(&mut &small[..], 1 << 20).is_err());
        let huge = encode_header(Opcode::Result, 0, 0, usize::MAX >> 1);
        assert!(read_frame(&mut &huge[..], 1 << 20).is_err());
        let mut bad_op = encode_header(Opcode::Result, 0, 0, 0);
        bad_op[8] = 9;
        assert!(read_frame(&mut &bad_op[..], 1 << 20).is_err());
        let cut = encode_header(Opcode::Result, 0, 0, 100);
        assert!(
            read_frame(&mut &cut[..], 1 << 20).is_err(),
            "payload cut short"
        );
        assert!(
            read_frame(&mut &cut[..10], 1 << 20).is_err(),
            "header cut short"
        );
    }
}
