//! Shared JIT memory: the controller writes code and data through its own mapping of the same
//! pages, so no content crosses the wire.
//!
//! Two flavours. LLVM 19's `ExecutorSharedMemoryMapperService` (named POSIX shared memory, for
//! LLVM controllers) — with unguessable names, `O_EXCL`, mode 0600, and every name this
//! executor created unlinked on release and at exit whatever the controller did. And remjit's:
//! an anonymous memfd passed over the unix socket with `SCM_RIGHTS`, which nobody else can open.

use std::cell::Cell;
use std::ffi::{c_void, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use remjit_wire::sps::{Expected, Sps, SpsError};
use remjit_wire::types::SharedMemoryFinalizeRequest;

use super::services::Services;

thread_local! {
    /// A descriptor the current reply must carry (SCM_RIGHTS), set by `memfd_reserve`.
    pub static ATTACH_FD: Cell<Option<i32>> = const { Cell::new(None) };
    /// Where the controller's next allocation in a shared reservation probably starts
    /// (reservation, end of the allocation this thread just initialized): the slab carves
    /// upwards.
    static NEXT: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
    /// How far `allocate_ahead` went: (reservation, offset in its file).
    static AHEAD_UNTIL: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Bytes of a shared reservation's file given pages ahead of the controller's writes.
const AHEAD: u64 = 64 << 10;

/// Whether [`allocate_ahead`] has work.
pub fn ahead_pending() -> bool {
    NEXT.with(|n| n.get().is_some())
}

/// Gives the file pages where the controller's next allocations probably go, so that its
/// writes there only map them instead of allocating and clearing them (measured: about half
/// the cost of each first write to a page). Called when idle, after a reply went out; a
/// window is given once, when the allocations come within half of it of its end.
pub fn allocate_ahead(s: &Services) {
    let Some((reservation, end)) = NEXT.with(Cell::take) else {
        return;
    };
    let _ = s.memory.with_range(reservation, |r| {
        let Some(fd) = r.shared.as_ref() else { return };
        let at = end.saturating_sub(reservation).next_multiple_of(4096);
        let (res, until) = AHEAD_UNTIL.get();
        let done = if res == reservation { until } else { 0 };
        if at.saturating_add(AHEAD / 2) <= done {
            return;
        }
        let from = at.max(done);
        let to = at.saturating_add(AHEAD).min(r.size);
        AHEAD_UNTIL.set((reservation, to));
        if from < to {
            // SAFETY: fallocate on the reservation's own file, within its size (KEEP_SIZE:
            // never grows it), under the memory lock that keeps the file open.
            unsafe {
                libc::fallocate(
                    fd.as_raw_fd(),
                    libc::FALLOC_FL_KEEP_SIZE,
                    from as libc::off_t,
                    (to - from) as libc::off_t,
                )
            };
        }
    });
}

/// Names of POSIX shared-memory objects this executor created and has not unlinked yet.
static NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Unlinks every shared-memory name this executor created (at exit, on hangup).
pub fn unlink_all_names() {
    if let Ok(mut names) = NAMES.lock() {
        for n in names.drain(..) {
            if let Ok(c) = CString::new(n) {
                // SAFETY: shm_unlink of a name we created.
                unsafe { libc::shm_unlink(c.as_ptr()) };
            }
        }
    }
}

fn unlink_name(name: &str) {
    if let Ok(c) = CString::new(name) {
        // SAFETY: shm_unlink of a name we created.
        unsafe { libc::shm_unlink(c.as_ptr()) };
    }
    if let Ok(mut names) = NAMES.lock() {
        names.retain(|n| n != name);
    }
}

fn unguessable_name() -> String {
    let mut r = [0u8; 16];
    // SAFETY: getrandom into a stack buffer.
    let got = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    if got != r.len() as isize {
        // Fall back on time and address-space noise; O_EXCL still protects the create.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        r[..16].copy_from_slice(&t.to_le_bytes());
    }
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("/remjit-{}-{hex}", std::process::id())
}

/// Maps `fd` shared over the reservation at `base`, inaccessible until initialized.
fn map_shared(base: u64, size: u64, fd: i32) -> Result<(), String> {
    // SAFETY: replaces pages of our own reservation.
    let p = unsafe {
        libc::mmap(
            base as *mut c_void,
            size as usize,
            libc::PROT_NONE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap shared: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn reserve_backed(s: &Services, size: u64, fd: OwnedFd) -> Result<u64, String> {
    // SAFETY: ftruncate on our own descriptor.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
        return Err(format!("ftruncate: {}", std::io::Error::last_os_error()));
    }
    let base = s.memory.reserve(size)?;
    let len = s.memory.with_range(base, |r| r.size)?;
    if let Err(e) = map_shared(base, len.min(size.div_ceil(4096) * 4096), fd.as_raw_fd()) {
        let _ = s.memory.release(base);
        return Err(e);
    }
    s.memory.with_range(base, |r| r.shared = Some(fd))?;
    Ok(base)
}

/// LLVM: `Expected<(addr, name)>(instance, size)`.
pub fn shm_reserve(s: &Services, args: &[u8]) -> Vec<u8> {
    let r = (|| {
        let (_, size): (u64, u64) = u64_pair(args)?;
        if size == 0 || size > 1 << 40 {
            return Err(format!("cannot reserve {size} bytes"));
        }
        let name = unguessable_name();
        let c = CString::new(name.clone()).map_err(|_| "bad name")?;
        // SAFETY: shm_open with O_EXCL of a fresh name.
        let fd = unsafe {
            libc::shm_open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                0o600,
            )
        };
        if fd < 0 {
            return Err(format!("shm_open: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a descriptor we own from here on.
        let fd = crate::fds::out_of_the_way(unsafe { OwnedFd::from_raw_fd(fd) });
        if let Ok(mut n) = NAMES.lock() {
            n.push(name.clone());
        }
        match reserve_backed(s, size, fd) {
            Ok(base) => {
                s.memory
                    .with_range(base, |r| r.shm_name = Some(name.clone()))?;
                Ok((base, name))
            }
            Err(e) => {
                // SAFETY: our own name.
                unsafe { libc::shm_unlink(c.as_ptr()) };
                Err(e)
            }
        }
    })();
    Expected(r).to_bytes()
}

/// remjit: `Expected<addr>(size)`; the memfd rides along with the reply (SCM_RIGHTS).
pub fn memfd_reserve(s: &Services, args: &[u8]) -> Vec<u8> {
    let r = (|| {
        let size = u64::from_bytes(args).map_err(|e| format!("memfd reserve: {e}"))?;
        if size == 0 || size > 1 << 40 {
            return Err(format!("cannot reserve {size} bytes"));
        }
        // SAFETY: memfd_create with a constant name.
        let fd = unsafe { libc::memfd_create(c"remjit-jit".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a descriptor we own.
        let fd = crate::fds::out_of_the_way(unsafe { OwnedFd::from_raw_fd(fd) });
        let raw = fd.as_raw_fd();
        let base = reserve_backed(s, size, fd)?;
        ATTACH_FD.with(|a| a.set(Some(raw)));
        Ok(base)
    })();
    Expected(r).to_bytes()
}

fn u64_pair(args: &[u8]) -> Result<(u64, u64), String> {
    <(u64, u64)>::from_bytes(args).map_err(|e| format!("malformed arguments: {e}"))
}

/// LLVM: `Expected<addr>(instance, reservation, SharedMemoryFinalizeRequest)`.
pub fn shm_initialize(s: &Services, args: &[u8]) -> Vec<u8> {
    let r = (|| {
        let (_, reservation, req): (u64, u64, SharedMemoryFinalizeRequest) =
            Sps::from_bytes(args).map_err(|e| format!("initialize: malformed arguments: {e}"))?;
        let base = req
            .segments
            .iter()
            .map(|x| x.addr)
            .min()
            .ok_or("initialize: no segments")?;
        if s.memory.check(base, 1)? != reservation {
            return Err(format!(
                "segments at {base:#x} are not in reservation {reservation:#x}"
            ));
        }
        s.finalize_shared(base, &req)?;
        s.memory.note_shared_activity();
        let end = req
            .segments
            .iter()
            .map(|x| x.addr.saturating_add(x.size))
            .max();
        NEXT.with(|n| n.set(end.map(|e| (reservation, e))));
        Ok(base)
    })();
    Expected(r).to_bytes()
}

/// LLVM: `Error(instance, seq<allocation>)`: dealloc actions, then the pages are given back.
pub fn shm_deinitialize(s: &Services, args: &[u8]) -> Vec<u8> {
    let r = (|| {
        let (_, bases): (u64, Vec<u64>) =
            Sps::from_bytes(args).map_err(|e| format!("deinitialize: malformed arguments: {e}"))?;
        let mut first = Ok(());
        for base in bases.iter().rev() {
            match s.memory.take_dealloc(*base) {
                Ok(actions) => {
                    let r = s.run_dealloc_actions(&actions);
                    if first.is_ok() {
                        first = r;
                    }
                }
                Err(e) => {
                    if first.is_ok() {
                        first = Err(e);
                    }
                }
            }
        }
        first
    })();
    SpsError::from(r).to_bytes()
}

/// LLVM: `Error(instance, seq<reservation>)`.
pub fn shm_release(s: &Services, args: &[u8]) -> Vec<u8> {
    let r = (|| {
        let (_, bases): (u64, Vec<u64>) =
            Sps::from_bytes(args).map_err(|e| format!("release: malformed arguments: {e}"))?;
        for b in bases {
            if let Some(name) = s.memory.with_range(b, |r| r.shm_name.take())? {
                unlink_name(&name);
            }
            let actions = s.memory.with_range(b, |r| std::mem::take(&mut r.dealloc))?;
            for (_, a) in actions.iter().rev() {
                let _ = s.run_dealloc_actions(a);
            }
            s.memory.release(b)?;
        }
        Ok(())
    })();
    SpsError::from(r).to_bytes()
}

/// remjit: `Error(seq<(addr, len, path, file_offset)>)`: maps file pages copy-on-write over
/// JIT memory (large sections without relocations), instead of the controller copying them.
pub fn map_files(s: &Services, args: &[u8]) -> Vec<u8> {
    let r = (|| {
        let maps: Vec<(u64, u64, String, u64)> =
            Sps::from_bytes(args).map_err(|e| format!("map_files: malformed arguments: {e}"))?;
        for (addr, len, path, off) in maps {
            s.memory.check(addr, len)?;
            let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            // SAFETY: replaces pages of JIT memory of ours with a private file mapping.
            let p = unsafe {
                libc::mmap(
                    addr as *mut c_void,
                    len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_FIXED,
                    file.as_raw_fd(),
                    off as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(format!("mmap {path}: {}", std::io::Error::last_os_error()));
            }
            s.memory.note_prot(addr, len, 3);
        }
        Ok(())
    })();
    SpsError::from(r).to_bytes()
}

/// remjit: `Error((addr, area, on))`: a pack's protections on, or off ([`Memory::pack`]).
///
/// [`Memory::pack`]: super::memory::Memory::pack
pub fn pack(s: &Services, args: &[u8]) -> Vec<u8> {
    let r = <(u64, u64, bool)>::from_bytes(args)
        .map_err(|e| format!("pack: malformed arguments: {e}"))
        .and_then(|(addr, area, on)| s.memory.pack(addr, area, on));
    SpsError::from(r).to_bytes()
}

/// remjit: `Error(seq<(addr, len)>)`: the reservation's shared pages back over ranges that
/// `map_files` had mapped from files.
pub fn restore_shared(s: &Services, args: &[u8]) -> Vec<u8> {
    let r = (|| {
        let ranges: Vec<(u64, u64)> = Sps::from_bytes(args)
            .map_err(|e| format!("restore_shared: malformed arguments: {e}"))?;
        for (addr, len) in ranges {
            let base = s.memory.check(addr, len)?;
            let fd = s
                .memory
                .with_range(base, |r| r.shared.as_ref().map(|f| f.as_raw_fd()))?;
            let Some(fd) = fd else {
                return Err(format!("{addr:#x} is not shared memory"));
            };
            // SAFETY: remaps pages of our own reservation from its own memfd.
            let p = unsafe {
                libc::mmap(
                    addr as *mut c_void,
                    len as usize,
                    libc::PROT_NONE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    (addr - base) as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(format!("mmap: {}", std::io::Error::last_os_error()));
            }
            s.memory.note_prot(addr, len, 0);
        }
        Ok(())
    })();
    SpsError::from(r).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of the reservation's file that hold memory.
    fn pages_held(s: &Services, base: u64) -> u64 {
        s.memory
            .with_range(base, |r| {
                // SAFETY: fstat of the reservation's own file into a local.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                let fd = r.shared.as_ref().unwrap().as_raw_fd();
                assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
                st.st_blocks as u64 * 512 / 4096
            })
            .unwrap()
    }

    #[test]
    fn pages_are_given_ahead_of_the_allocations_once_per_window() {
        let _slabs = super::super::memory::tests::slabs_lock();
        let s = Services::new();
        let size = 1u64 << 20;
        let out = memfd_reserve(&s, &size.to_bytes());
        let base = Expected::<u64>::from_bytes(&out).unwrap().0.unwrap();
        ATTACH_FD.with(|a| a.take());
        assert_eq!(pages_held(&s, base), 0);
        // An allocation ended 100 bytes into its second page: the window starts on the third.
        NEXT.with(|n| n.set(Some((base, base + 4096 + 100))));
        assert!(ahead_pending());
        allocate_ahead(&s);
        assert!(!ahead_pending());
        assert_eq!(pages_held(&s, base), AHEAD / 4096);
        // Still in the first half of the window: nothing more.
        NEXT.with(|n| n.set(Some((base, base + 3 * 4096))));
        allocate_ahead(&s);
        assert_eq!(pages_held(&s, base), AHEAD / 4096);
        // Past its middle: the window moves on (the pages already given stay).
        let at = 2 * 4096 + AHEAD / 2 + 4096;
        NEXT.with(|n| n.set(Some((base, base + at))));
        allocate_ahead(&s);
        assert_eq!(pages_held(&s, base), (at + AHEAD) / 4096 - 2);
        // Never past the reservation.
        NEXT.with(|n| n.set(Some((base, base + size - 4096))));
        allocate_ahead(&s);
        assert!(pages_held(&s, base) <= size / 4096);
        assert!(s.memory.release(base).is_ok());
    }

    fn call_pack(s: &Services, addr: u64, area: u64, on: bool) -> Result<(), String> {
        SpsError::from_bytes(&pack(s, &(addr, area, on).to_bytes()))
            .unwrap()
            .into_result()
    }

    #[test]
    fn a_pack_is_protected_once_and_its_pieces_need_no_mprotect() {
        let _slabs = super::super::memory::tests::slabs_lock();
        use remjit_wire::types::SharedMemorySegFinalizeRequest as Seg;
        let s = Services::new();
        let area = 16 * 4096;
        let out = memfd_reserve(&s, &(4 * area).to_bytes());
        let base = Expected::<u64>::from_bytes(&out).unwrap().0.unwrap();
        ATTACH_FD.with(|a| a.take());
        assert_eq!(
            call_pack(&s, base + 1, area, true),
            Err(format!(
                "bad pack of 3 x {area:#x} bytes at {:#x}",
                base + 1
            ))
        );
        call_pack(&s, base, area, true).unwrap();
        let perms: Vec<String> = (0..4)
            .map(|i| crate::vm::perms_at(base + i * area))
            .collect();
        assert_eq!(perms, ["r-xs", "r--s", "rw-s", "---s"]);
        // Two links' segments in the areas: no protection changes, exactly their bytes known.
        for (code, data) in [(base, base + 2 * area), (base + 48, base + 2 * area + 32)] {
            let req = SharedMemoryFinalizeRequest {
                segments: vec![
                    Seg {
                        prot: 5,
                        addr: code,
                        size: 40,
                    },
                    Seg {
                        prot: 3,
                        addr: data,
                        size: 24,
                    },
                ],
                actions: Vec::new(),
            };
            s.finalize_shared(code, &req).unwrap();
        }
        assert!(s.memory.is_executable(base + 48));
        assert!(
            !s.memory.is_executable(base + 44),
            "between the two links' code"
        );
        assert!(s.memory.check_writable(base + 2 * area + 24, 8).is_err());
        assert_eq!(crate::vm::perms_at(base), "r-xs");
        // A segment whose protection is not its area's is refused.
        let wrong = SharedMemoryFinalizeRequest {
            segments: vec![Seg {
                prot: 3,
                addr: base + 96,
                size: 8,
            }],
            actions: Vec::new(),
        };
        assert_eq!(
            s.finalize_shared(base + 96, &wrong),
            Err(format!(
                "segment at {:#x} lies in a pack area of protection 5 instead of 3",
                base + 96
            ))
        );
        call_pack(&s, base, area, false).unwrap();
        assert_eq!(crate::vm::perms_at(base), "---s");
        assert_eq!(
            call_pack(&s, base, area, false),
            Err(format!("no pack at {base:#x}"))
        );
        assert!(s.memory.release(base).is_ok());
        let plain = s.memory.reserve(3 * area).unwrap();
        assert_eq!(
            call_pack(&s, plain, area, true),
            Err(format!("pack at {plain:#x}: not shared memory"))
        );
        assert!(s.memory.release(plain).is_ok());
    }
}
