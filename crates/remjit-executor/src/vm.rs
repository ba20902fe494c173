//! Address-space reservations placed where JIT'd code needs them: below 2 GiB (next to a
//! non-PIE host's copy-relocated data, and for absolute 32-bit addresses), or within +-2 GiB of
//! an earlier reservation (the small code model across reservations).

const TWO_GIB: u64 = 1 << 31;

/// Tries to map `size` bytes of inaccessible address space at exactly `addr`.
fn map_at(addr: u64, size: u64) -> Option<u64> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            size as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    if p as u64 != addr {
        // Kernels before 4.17 treat the flag as a hint.
        // SAFETY: we just mapped it.
        unsafe { libc::munmap(p, size as usize) };
        return None;
    }
    Some(addr)
}

/// Candidate addresses for a reservation of `size` bytes, best first.
pub fn candidate_addresses(size: u64, near: Option<u64>, low: bool) -> Vec<u64> {
    const STEP: u64 = 1 << 28;
    let mut c = Vec::new();
    if let Some(n) = near {
        // Just below and just above the existing reservation, within +-2 GiB of it.
        for k in 0..8u64 {
            let below = n.checked_sub(size + k * STEP).map(|a| a & !(STEP - 1));
            if let Some(a) = below.filter(|&a| a >= 1 << 24) {
                c.push(a);
            }
            c.push((n + (k + 1) * STEP) & !(STEP - 1));
        }
    } else if low && size + (1 << 24) <= TWO_GIB {
        // Highest first below 2 GiB: leaves room under it for a non-PIE host's heap.
        let mut a = (TWO_GIB - size) & !(STEP - 1);
        while a >= 1 << 28 {
            c.push(a);
            a -= STEP;
        }
    }
    c
}

/// Free gaps of the address space below 2 GiB (from /proc/self/maps), highest first: with a
/// non-PIE host the heap may start anywhere in the first GiB, so fixed guesses are not enough.
fn low_gaps() -> Vec<(u64, u64)> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let mut used: Vec<(u64, u64)> = maps
        .lines()
        .filter_map(|l| {
            let range = l.split_whitespace().next()?;
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    used.sort();
    let mut gaps = Vec::new();
    let mut prev_end = 1u64 << 24;
    for (start, end) in used {
        if start > prev_end {
            gaps.push((prev_end, start.min(TWO_GIB)));
        }
        prev_end = prev_end.max(end);
        if prev_end >= TWO_GIB {
            break;
        }
    }
    if prev_end < TWO_GIB {
        gaps.push((prev_end, TWO_GIB));
    }
    gaps.retain(|g| g.1 > g.0);
    gaps.reverse();
    gaps
}

/// Reserves `size` bytes of inaccessible address space, preferring the candidates above and
/// falling back to anywhere.
pub fn reserve(size: u64, near: Option<u64>, low: bool) -> std::io::Result<u64> {
    if low && near.is_none() {
        const ALIGN: u64 = 2 << 20;
        for (start, end) in low_gaps() {
            // The top of the gap, leaving a little room above the mappings below (a heap).
            let Some(at) = end.checked_sub(size).map(|a| a & !(ALIGN - 1)) else {
                continue;
            };
            if at >= start {
                if let Some(a) = map_at(at, size) {
                    return Ok(a);
                }
            }
        }
    }
    for addr in candidate_addresses(size, near, low) {
        if let Some(a) = map_at(addr, size) {
            return Ok(a);
        }
    }
    // SAFETY: a fresh anonymous mapping wherever the kernel likes.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p as u64)
}

/// Replaces `[addr, addr + len)` with fresh inaccessible pages: gives the memory back (RSS
/// falls), drops file or shared mappings there, and leaves zeroes for the next user.
pub fn reset(addr: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: the caller owns the range (a reservation of its own).
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_reservation_avoids_what_is_mapped_there() {
        // Block the first guesses (the top of the low 2 GiB) with small mappings.
        let blockers: Vec<u64> = (1..=4u64)
            .filter_map(|k| map_at(TWO_GIB - k * (256 << 20), 4096))
            .collect();
        let size = 256 << 20;
        let at = reserve(size, None, true).unwrap();
        assert!(at + size <= TWO_GIB, "{at:#x} is not below 2 GiB");
        for b in &blockers {
            assert!(at + size <= *b || *b + 4096 <= at, "overlaps a blocker");
        }
        // SAFETY: our own mappings.
        unsafe {
            libc::munmap(at as *mut libc::c_void, size as usize);
            for b in blockers {
                libc::munmap(b as *mut libc::c_void, 4096);
            }
        }
    }
}
