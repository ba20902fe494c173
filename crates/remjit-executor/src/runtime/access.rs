//! Reading and writing the executing process's memory for the controller (an embedder's
//! `read_memory`/`write_memory`), and the map of protections in force on JIT memory that decides
//! what may be written or called. The executor's services and the in-process controller share
//! these checks, so both refuse the same requests with the same words.

use std::collections::BTreeMap;

/// Most bytes one read or write may move.
pub const MAX_ACCESS: u64 = 16 << 20;

/// LLVM's protection bits as the map records them.
pub mod prot {
    /// Readable.
    pub const READ: u8 = 1;
    /// Writable.
    pub const WRITE: u8 = 2;
    /// Executable.
    pub const EXEC: u8 = 4;
}

/// The protections in force on JIT memory, by page-aligned start: `(end, bits)`. Pages not
/// listed are inaccessible (or not JIT memory at all).
#[derive(Debug, Default, Clone)]
pub struct ProtMap {
    ranges: BTreeMap<u64, (u64, u8)>,
}

impl ProtMap {
    /// Records that `[start, end)` now has protection `bits` (0: none, which forgets it).
    pub fn set(&mut self, start: u64, end: u64, bits: u8) {
        // Trim or split the entries that overlap.
        let overlapping: Vec<(u64, u64, u8)> = self
            .ranges
            .range(..end)
            .rev()
            .take_while(|(_, &(e, _))| e > start)
            .map(|(&s, &(e, p))| (s, e, p))
            .collect();
        for (s, e, p) in overlapping {
            self.ranges.remove(&s);
            if s < start {
                self.ranges.insert(s, (start, p));
            }
            if e > end {
                self.ranges.insert(end, (e, p));
            }
        }
        if bits != 0 && start < end {
            self.ranges.insert(start, (end, bits));
        }
    }

    /// Whether every byte of `[addr, addr + len)` (at least one) has all the bits in `need`.
    pub fn covered(&self, addr: u64, len: u64, need: u8) -> bool {
        let Some(end) = addr.checked_add(len.max(1)) else {
            return false;
        };
        let mut at = addr;
        while at < end {
            match self.ranges.range(..=at).next_back() {
                Some((_, &(e, p))) if e > at && p & need == need => at = e,
                _ => return false,
            }
        }
        true
    }

    /// Whether any byte of `[addr, addr + len)` is listed at all.
    pub fn touches(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len.max(1));
        self.ranges
            .range(..end)
            .next_back()
            .is_some_and(|(_, &(e, _))| e > addr)
    }
}

/// `addr..addr+len`, checked: the end, or the error naming the overflow.
pub fn end_of(addr: u64, len: u64) -> Result<u64, String> {
    addr.checked_add(len)
        .ok_or_else(|| format!("range {addr:#x}+{len:#x} overflows"))
}

/// The refusal of a range that lies outside JIT memory.
pub fn not_handed_out(addr: u64, end: u64) -> String {
    format!("{addr:#x}..{end:#x} is not in memory this executor handed out")
}

/// The refusal of a range without write access.
pub fn not_writable(addr: u64, end: u64) -> String {
    format!(
        "{addr:#x}..{end:#x} is not writable (finalized read-only or executable, or never made \
         accessible)"
    )
}

/// The refusal of a range without read access.
pub fn not_readable(addr: u64, end: u64) -> String {
    format!("{addr:#x}..{end:#x} is not readable (reserved but never made accessible)")
}

/// The refusal of code that is not (or no longer) finalized executable JIT memory.
pub fn not_code(addr: u64) -> String {
    format!("{addr:#x} is not in finalized executable memory; refusing to call it")
}

/// Checks a size asked for over the wire against [`MAX_ACCESS`].
pub fn check_size(what: &str, len: u64) -> Result<(), String> {
    if len > MAX_ACCESS {
        return Err(format!(
            "{what} of {len} bytes refused: at most {MAX_ACCESS} bytes per request"
        ));
    }
    Ok(())
}

/// Reads `len` bytes at `addr` of this process without faulting: memory that is not mapped
/// readable is an error, never a crash.
pub fn read(addr: u64, len: u64) -> Result<Vec<u8>, String> {
    check_size("read", len)?;
    let end = end_of(addr, len)?;
    let mut out = vec![0u8; len as usize];
    if len == 0 {
        return Ok(out);
    }
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: out.len(),
    };
    // SAFETY: process_vm_readv(2) on our own process writes only into `out` (len bytes), and
    // reports memory that is not mapped readable as an error instead of faulting.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n < 0 || n as u64 != len {
        return Err(format!(
            "{addr:#x}..{end:#x} is not mapped readable in the executor"
        ));
    }
    Ok(out)
}

/// Writes `bytes` at `addr` of this process.
///
/// # Safety
/// The range must be writable memory that the caller owns (JIT memory checked against a
/// [`ProtMap`] or the executor's ranges).
pub unsafe fn write(addr: u64, bytes: &[u8]) {
    // SAFETY: the caller vouches for the range; `bytes` cannot overlap JIT memory we write.
    std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_splits_and_answers() {
        let mut m = ProtMap::default();
        m.set(0x1000, 0x4000, prot::READ | prot::WRITE);
        m.set(0x2000, 0x3000, prot::READ | prot::EXEC);
        assert!(m.covered(0x1000, 0x1000, prot::WRITE));
        assert!(!m.covered(0x1000, 0x1001, prot::WRITE));
        assert!(m.covered(0x2000, 0x1000, prot::EXEC));
        assert!(m.covered(0x1000, 0x3000, prot::READ));
        assert!(m.touches(0x3fff, 8) && !m.touches(0x4000, 8) && !m.touches(0, 0x1000));
        m.set(0x1000, 0x4000, 0);
        assert!(!m.touches(0x1000, 0x3000));
    }

    #[test]
    fn reads_refuse_unmapped_memory_and_huge_sizes() {
        let x = 0x1122_3344_5566_7788u64;
        let got = read(&x as *const u64 as u64, 8).unwrap();
        assert_eq!(got, x.to_le_bytes());
        assert_eq!(
            read(8, 16).unwrap_err(),
            "0x8..0x18 is not mapped readable in the executor"
        );
        assert_eq!(
            read(8, MAX_ACCESS + 1).unwrap_err(),
            "read of 16777217 bytes refused: at most 16777216 bytes per request"
        );
    }
}
