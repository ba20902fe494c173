//! Address-space reservations placed where JIT'd code needs them: below 2 GiB (next to a
//! non-PIE host's copy-relocated data, and for absolute 32-bit addresses), or within +-2 GiB of
//! an earlier reservation (the small code model across reservations).

/// Everything below is in reach of 32-bit absolute and (from the host) PC-relative references.
pub const TWO_GIB: u64 = 1 << 31;

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

/// Candidate addresses near `near` for a reservation of `size` bytes, best first: just below
/// and just above the existing reservation, within +-2 GiB of it.
fn candidate_addresses(size: u64, near: u64) -> Vec<u64> {
    const STEP: u64 = 1 << 28;
    let mut c = Vec::new();
    for k in 0..8u64 {
        let below = near
            .checked_sub(size.saturating_add(k * STEP))
            .map(|a| a & !(STEP - 1));
        if let Some(a) = below.filter(|&a| a >= 1 << 24) {
            c.push(a);
        }
        if let Some(a) = near.checked_add((k + 1) * STEP) {
            c.push(a & !(STEP - 1));
        }
    }
    c
}

/// Lowest address given to JIT'd memory: the first MiB stays unmapped, so that a null pointer
/// with a small offset still faults.
const FLOOR: u64 = 1 << 20;

/// Alignment of low reservations.
const ALIGN: u64 = 2 << 20;

/// Free gaps of the address space between [`FLOOR`] and 2 GiB (from /proc/self/maps), highest
/// first: below and between the executable, its heap and whatever else landed low. Where the
/// heap or ASLR put things does not matter, only what is free.
fn low_gaps() -> Vec<(u64, u64)> {
    let mut used: Vec<(u64, u64)> = mappings().into_iter().map(|m| (m.0, m.1)).collect();
    used.sort_unstable();
    free_between(&used, FLOOR, TWO_GIB)
}

/// This process's mappings (from /proc/self/maps): start, end and permissions (`r-xs`, ...).
pub fn mappings() -> Vec<(u64, u64, String)> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    maps.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (a, b) = words.next()?.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                words.next()?.to_string(),
            ))
        })
        .collect()
}

/// The permissions of the mapping holding `addr` (empty if none).
pub fn perms_at(addr: u64) -> String {
    mappings()
        .into_iter()
        .find(|m| m.0 <= addr && addr < m.1)
        .map(|m| m.2)
        .unwrap_or_default()
}

/// The gaps of `[lo, hi)` that no range of `used` (sorted) covers, highest first.
fn free_between(used: &[(u64, u64)], lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut gaps = Vec::new();
    let mut prev_end = lo;
    for &(start, end) in used {
        if prev_end >= hi {
            break;
        }
        if start > prev_end {
            gaps.push((prev_end, start.min(hi)));
        }
        prev_end = prev_end.max(end);
    }
    if prev_end < hi {
        gaps.push((prev_end, hi));
    }
    gaps.retain(|g| g.1 > g.0);
    gaps.reverse();
    gaps
}

/// Where in `gaps` (highest first) a low reservation goes: the top of the highest gap that
/// holds `want` bytes, else of one that holds a [`smaller_wish`], down to `need`. Returns
/// (address, size).
fn pick_low(gaps: &[(u64, u64)], want: u64, need: u64) -> Option<(u64, u64)> {
    const PAGE: u64 = 4096;
    let mut w = want.max(need);
    loop {
        let align = if w >= ALIGN { ALIGN } else { PAGE };
        for &(start, end) in gaps {
            let at = end.checked_sub(w).map(|a| a & !(align - 1));
            if let Some(at) = at.filter(|&a| a >= start) {
                return Some((at, w));
            }
        }
        w = smaller_wish(w, need, PAGE)?;
    }
}

/// The next size to try after a reservation of `w` bytes did not go where wanted: half of it
/// (whole pages), or `need` itself last; `None` once `w` is down to `need`.
pub fn smaller_wish(w: u64, need: u64, page: u64) -> Option<u64> {
    let half = (w / 2).div_ceil(page) * page;
    match half {
        h if h >= w || w <= need => None,
        h if h < need => Some(need),
        h => Some(h),
    }
}

/// What `f` makes of the dynamic loader's first entry (the main program); `None` if the
/// loader lists nothing.
pub fn main_program<T, F: FnOnce(&libc::dl_phdr_info) -> T>(f: F) -> Option<T> {
    struct Visit<F, T> {
        f: Option<F>,
        out: Option<T>,
    }
    unsafe extern "C" fn first<F: FnOnce(&libc::dl_phdr_info) -> T, T>(
        info: *mut libc::dl_phdr_info,
        _: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid entry; `data` is the Visit below, borrowed for
        // the walk, which this callback stops at once.
        unsafe {
            let v = &mut *(data as *mut Visit<F, T>);
            if let Some(f) = v.f.take() {
                v.out = Some(f(&*info));
            }
        }
        1
    }
    let mut v = Visit {
        f: Some(f),
        out: None,
    };
    // SAFETY: the callback is instantiated for this Visit's types and only runs during the
    // call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(first::<F, T>),
            &mut v as *mut Visit<F, T> as *mut libc::c_void,
        )
    };
    v.out
}

/// Where the main program's image starts when its code lies below 2 GiB (the remjit binaries
/// load theirs near the top of it, see anchors_build.rs), else 2 GiB: the top of the free low
/// space in a fresh process. The image is the segments from 64 MiB below its code up (a
/// headers' page that the linker left at its default address is not part of it).
fn low_image_start() -> u64 {
    let image = main_program(|info| {
        // SAFETY: the loader's program headers of the main program, valid while it is loaded.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let loads = || {
            phdrs
                .iter()
                .filter(|p| p.p_type == libc::PT_LOAD)
                .map(|p| (info.dlpi_addr.wrapping_add(p.p_vaddr), p.p_flags))
        };
        let code = loads()
            .filter(|l| l.1 & libc::PF_X != 0)
            .map(|l| l.0)
            .min()?;
        loads()
            .map(|l| l.0)
            .filter(|&a| a >= code.saturating_sub(64 << 20))
            .min()
    });
    image.flatten().unwrap_or(TWO_GIB).min(TWO_GIB)
}

/// Reserves between `need` and `want` bytes of inaccessible address space below 2 GiB, in the
/// real free gaps there (halving `want` until one holds it); `None` when no gap holds `need`.
/// Returns (address, size).
pub fn reserve_low(want: u64, need: u64) -> Option<(u64, u64)> {
    // Where the map would put it when the space below the host's image (or the top of the
    // low space) is free, as for the first reservation of a process: tried first, without
    // reading the map.
    let w = want.max(need);
    let align = if w >= ALIGN { ALIGN } else { 4096 };
    if let Some(at) = low_image_start().checked_sub(w).map(|a| a & !(align - 1)) {
        if at >= FLOOR && map_at(at, w).is_some() {
            return Some((at, w));
        }
    }
    // Another thread may map into a gap between reading the map and mapping: look again.
    for _ in 0..4 {
        let (at, size) = pick_low(&low_gaps(), want, need)?;
        if let Some(a) = map_at(at, size) {
            return Some((a, size));
        }
    }
    None
}

/// Reserves `size` bytes of inaccessible address space within +-2 GiB of `near` when possible,
/// else anywhere.
pub fn reserve_near(size: u64, near: Option<u64>) -> std::io::Result<u64> {
    for addr in near
        .map(|n| candidate_addresses(size, n))
        .unwrap_or_default()
    {
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

/// Reserves between `need` and `want` bytes: with `low`, below 2 GiB wherever a free gap
/// holds it (see [`reserve_low`]); otherwise, or when none does, `want` bytes near `near` or
/// anywhere. Returns (address, size); the caller tells a failed low wish by the address.
pub fn place(want: u64, need: u64, near: Option<u64>, low: bool) -> std::io::Result<(u64, u64)> {
    if low {
        if let Some(r) = reserve_low(want, need) {
            return Ok(r);
        }
    }
    Ok((reserve_near(want, near)?, want))
}

/// Reserves `size` bytes, below 2 GiB with `low` when a free gap holds them (see [`place`]).
pub fn reserve(size: u64, near: Option<u64>, low: bool) -> std::io::Result<u64> {
    place(size, size, near, low).map(|r| r.0)
}

/// Reserves `size` bytes of inaccessible address space at exactly `addr` (page aligned), never
/// over an existing mapping; `None` when anything lies there.
pub fn reserve_exact(addr: u64, size: u64) -> Option<u64> {
    map_at(addr, size)
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

/// Protections of a pack's three areas: code, read-only data, read-write data.
const PACK_PROTS: [i32; 3] = [
    libc::PROT_READ | libc::PROT_EXEC,
    libc::PROT_READ,
    libc::PROT_READ | libc::PROT_WRITE,
];

/// LLVM protection bits (R = 1, W = 2, X = 4) of pack area `i` (0, 1 or 2).
pub fn pack_area_bits(i: u64) -> Option<u8> {
    [5u8, 1, 3].get(usize::try_from(i).ok()?).copied()
}

/// The packs mapped in a process, by base: (area size, the mapper's data about it).
#[derive(Debug)]
pub struct PackSet<T> {
    at: std::collections::BTreeMap<u64, (u64, T)>,
}

impl<T> Default for PackSet<T> {
    fn default() -> Self {
        PackSet {
            at: std::collections::BTreeMap::new(),
        }
    }
}

impl<T> PackSet<T> {
    /// Notes the pack at `base`.
    pub fn add(&mut self, base: u64, area: u64, data: T) {
        self.at.insert(base, (area, data));
    }

    /// The pack at `base`: its area size and data.
    pub fn get(&self, base: u64) -> Option<&(u64, T)> {
        self.at.get(&base)
    }

    /// Forgets the pack at `base`: its area size and data.
    pub fn remove(&mut self, base: u64) -> Option<(u64, T)> {
        self.at.remove(&base)
    }

    /// The protection bits of the pack area holding all of `[addr, addr + len)`, if one does.
    pub fn area_bits(&self, addr: u64, len: u64) -> Option<u8> {
        let (&base, &(area, _)) = self.at.range(..=addr).next_back()?;
        let last = addr.checked_add(len.max(1) - 1)?;
        let i = (addr - base) / area.max(1);
        (i == (last - base) / area.max(1))
            .then(|| pack_area_bits(i))
            .flatten()
    }

    /// Forgets (and returns) the packs inside `[start, start + len)`.
    pub fn drain_range(&mut self, start: u64, len: u64) -> Vec<(u64, u64, T)> {
        let end = start.saturating_add(len);
        let inside: Vec<u64> = self.at.range(start..end).map(|(&b, _)| b).collect();
        inside
            .into_iter()
            .filter_map(|b| self.at.remove(&b).map(|(a, d)| (b, a, d)))
            .collect()
    }
}

/// Gives the three areas of `area` bytes at `addr` (shared file pages the caller mapped there)
/// their final protections once: code (read + execute), read-only data, read-write data. Small
/// links then get pieces of them and need no `mprotect` of their own. The first `ready` bytes
/// of each area are populated (best effort), so the links' first accesses there take no page
/// faults ([`populate_pack`] does the next ones ahead of use). Used in process ([`map_pack`])
/// and by the executor's pack service alike.
pub fn protect_pack(addr: u64, area: u64, ready: u64) -> std::io::Result<()> {
    for (i, prot) in PACK_PROTS.into_iter().enumerate() {
        let at = addr + i as u64 * area;
        // SAFETY: pages of the caller's own reservation, mapped from its file.
        if unsafe { libc::mprotect(at as *mut libc::c_void, area as usize, prot) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        populate(at, ready.min(area), prot & libc::PROT_WRITE != 0);
    }
    Ok(())
}

/// Populates `[addr, addr + len)` of pack area `i` (0 code, 1 read-only data, 2 data) in the
/// view that runs the code, as its protection allows, and the same bytes of the writable view
/// at `view` (0: none).
pub fn populate_pack(addr: u64, len: u64, i: u64, view: u64) {
    populate(addr, len, pack_area_bits(i) == Some(3));
    if view != 0 {
        populate(view, len, true);
    }
}

/// Faults `[addr, addr + len)` in ahead of use (for writing when `write`); on kernels without
/// `MADV_POPULATE_*` (before 5.14) the first accesses fault instead.
pub fn populate(addr: u64, len: u64, write: bool) {
    let advice = if write {
        libc::MADV_POPULATE_WRITE
    } else {
        libc::MADV_POPULATE_READ
    };
    // SAFETY: advice only; the caller's own mapping.
    unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, advice) };
}

/// Maps a pack of three areas of `area` bytes at `addr` (inside a reservation of the
/// caller's) from `fd` at `file_off`, protected by [`protect_pack`], the first `ready` bytes
/// of each area populated in both views. Returns the address of a second, read-write (never
/// executable) view of the same three areas: the writable alias through which the linker
/// writes code and read-only data.
pub fn map_pack(
    fd: std::os::fd::BorrowedFd<'_>,
    file_off: u64,
    addr: u64,
    area: u64,
    ready: u64,
) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let len = area
        .checked_mul(3)
        .ok_or(std::io::ErrorKind::InvalidInput)? as usize;
    let raw = fd.as_raw_fd();
    let off = libc::off_t::try_from(file_off).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: a fresh shared mapping of the caller's file where the kernel chooses.
    let alias = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            raw,
            off,
        )
    };
    if alias == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: replaces pages of the caller's own reservation with its own file.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            raw,
            off,
        )
    };
    let r = if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        protect_pack(addr, area, ready)
    };
    if let Err(e) = r {
        // SAFETY: the alias mapped above, not handed out.
        unsafe { libc::munmap(alias, len) };
        return Err(e);
    }
    for i in 0..3 {
        populate(alias as u64 + i * area, ready.min(area), true);
    }
    Ok(alias as u64)
}

/// Undoes [`map_pack`]'s alias and gives the file's pages of the pack back (the pack's range
/// in the reservation is the caller's to [`reset`]).
pub fn unmap_pack(
    fd: std::os::fd::BorrowedFd<'_>,
    file_off: u64,
    alias: u64,
    area: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = area.saturating_mul(3);
    // SAFETY: the alias [`map_pack`] returned, no longer used.
    if unsafe { libc::munmap(alias as *mut libc::c_void, len as usize) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: punches a hole in the caller's own file (KEEP_SIZE: the size stays).
    let r = unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            file_off as libc::off_t,
            len as libc::off_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loader's first entry is this test program: one of its loaded segments holds this
    /// function.
    #[test]
    fn main_program_is_this_program() {
        let here = main_program_is_this_program as *const () as u64;
        let holds_here = main_program(|info| {
            // SAFETY: the loader's program headers of the main program.
            let phdrs =
                unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
            phdrs.iter().any(|p| {
                let start = info.dlpi_addr.wrapping_add(p.p_vaddr);
                p.p_type == libc::PT_LOAD && (start..start + p.p_memsz).contains(&here)
            })
        });
        assert_eq!(holds_here, Some(true));
        // A PIE test program lies above 2 GiB: the low space's top is 2 GiB itself.
        assert_eq!(low_image_start(), TWO_GIB);
    }

    #[test]
    fn gaps_are_what_nothing_covers() {
        let used = [
            (0x40_0000, 0x50_0000),
            (0x4000_0000, 0x4010_0000),
            (0x7000_0000, 0x9000_0000),
        ];
        assert_eq!(
            free_between(&used, FLOOR, TWO_GIB),
            vec![
                (0x4010_0000, 0x7000_0000),
                (0x50_0000, 0x4000_0000),
                (FLOOR, 0x40_0000)
            ]
        );
        assert_eq!(free_between(&[(0, 1 << 40)], FLOOR, TWO_GIB), vec![]);
    }

    #[test]
    fn low_pick_halves_into_the_real_gaps() {
        // A 1 MiB mapping at 1 GiB leaves no 1 GiB gap below 2 GiB: halve to 512 MiB, placed
        // at the top of the highest gap.
        let gaps = [(0x4010_0000, TWO_GIB), (0x60_0000, 0x4000_0000)];
        assert_eq!(
            pick_low(&gaps, 1 << 30, 4096),
            Some((TWO_GIB - (512 << 20), 512 << 20))
        );
        // Exactly what fits is taken whole; nothing smaller than `need` is accepted.
        assert_eq!(
            pick_low(&gaps, 64 << 20, 64 << 20),
            Some((TWO_GIB - (64 << 20), 64 << 20))
        );
        assert_eq!(pick_low(&gaps, 4 << 30, 1 << 30), None);
        assert_eq!(pick_low(&[], 1 << 30, 4096), None);
        // A small gap still takes a small need, page aligned.
        let small = [(0x30_0000, 0x30_3000)];
        assert_eq!(pick_low(&small, 1 << 30, 0x3000), Some((0x30_0000, 0x3000)));
        // A size that is not a power of two halves to whole pages.
        let (at, size) = pick_low(&[(FLOOR, FLOOR + (3 << 20))], 5 << 20, 4096).unwrap();
        assert_eq!((at % 4096, size % 4096), (0, 0));
        assert!(at >= FLOOR && at + size <= FLOOR + (3 << 20));
    }

    #[test]
    fn low_reservation_avoids_what_is_mapped_there() {
        // Other tests of this binary take low address space of their own, in parallel: the
        // check runs alone, in a child process of this test binary.
        const CHILD: &str = "REMJIT_VM_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let name = "vm::tests::low_reservation_avoids_what_is_mapped_there";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{stdout}");
            assert!(stdout.contains("1 passed"), "{stdout}");
            return;
        }
        // With the top of the low 2 GiB free (nothing of this test binary, a PIE, is there),
        // a reservation goes at once where the map of free gaps would put it.
        let by_map = pick_low(&low_gaps(), 64 << 20, 4096).map(|p| p.0);
        let top = reserve(64 << 20, None, true).unwrap();
        assert_eq!((Some(top), top), (by_map, TWO_GIB - (64 << 20)));
        // SAFETY: our own mapping.
        unsafe { libc::munmap(top as *mut libc::c_void, 64 << 20) };
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
