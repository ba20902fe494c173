//! The executor's JIT memory: one low slab of address space, carved into the ranges the
//! controller reserves. Every segment the controller asks to fill, protect or run must lie in
//! a range handed out here; anything else is refused.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::runtime::access::{self, ProtMap};
use crate::runtime::jit_debug;
use crate::vm;

/// Address space per slab reservation.
const SLAB: u64 = 1 << 30;

/// Bytes of each area of a pack mapped when the pack is made (remjit's first batch).
const PACK_READY: u64 = 16 << 10;

/// One range given to the controller.
#[derive(Debug)]
pub struct Range {
    /// Size in bytes.
    pub size: u64,
    /// Dealloc actions of finalized allocations in it, by allocation base (run newest first).
    pub dealloc: Vec<(u64, Vec<super::services::Action>)>,
    /// Backing memfd for shared ranges (kept open while mapped).
    pub shared: Option<std::os::fd::OwnedFd>,
    /// Name of the POSIX shared-memory object behind it, until unlinked.
    pub shm_name: Option<String>,
}

#[derive(Default)]
struct State {
    slabs: Vec<(u64, u64)>,
    free: BTreeMap<u64, u64>,
    /// Ranges handed out, by base (ordered: finding the one holding an address is a range query).
    ranges: BTreeMap<u64, Range>,
    /// Copy-manager ranges reserved but not finalized yet.
    unfinalized: std::collections::HashSet<u64>,
    /// When a shared-memory allocation was last initialized.
    last_shared: Option<std::time::Instant>,
    /// Access in force (LLVM protection bits). Pages of a range not listed are inaccessible.
    prots: ProtMap,
    /// Packs in shared ranges (`vm::protect_pack`): small links' segments share their pages.
    packs: vm::PackSet<()>,
    /// Where the next reservation must start ([`Memory::reserve_next_at`]).
    wish: Option<u64>,
}

impl State {
    /// [`Memory::check`] under the lock already held.
    fn handed_out(&self, addr: u64, len: u64) -> Result<u64, String> {
        let end = access::end_of(addr, len)?;
        self.holder(addr)
            .filter(|&(b, size)| end <= b.saturating_add(size))
            .map(|(b, _)| b)
            .ok_or_else(|| access::not_handed_out(addr, end))
    }

    /// The range handed out that holds `addr`: (base, size).
    fn holder(&self, addr: u64) -> Option<(u64, u64)> {
        let (&b, r) = self.ranges.range(..=addr).next_back()?;
        (addr < b.saturating_add(r.size)).then_some((b, r.size))
    }
}

/// The executor's memory.
#[derive(Default)]
pub struct Memory {
    state: Mutex<State>,
    finalized: std::sync::Condvar,
}

fn page() -> u64 {
    rustix::param::page_size() as u64
}

/// The lowest free range of at least `size` bytes, below 2 GiB when `low`.
fn fitting_free(free: &BTreeMap<u64, u64>, size: u64, low: bool) -> Option<(u64, u64)> {
    free.iter()
        .find(|(&s, &l)| l >= size && (!low || s + size <= vm::TWO_GIB))
        .map(|(&s, &l)| (s, l))
}

impl State {
    /// Where `size` bytes come from: free space below 2 GiB, else a fresh reservation there
    /// (as large as the free gaps allow, see [`vm::reserve_low`]), else free space anywhere,
    /// else a fresh reservation near the first. Returns the free range to carve from.
    fn find_space(&mut self, size: u64) -> Result<(u64, u64), String> {
        if let Some(f) = fitting_free(&self.free, size, true) {
            return Ok(f);
        }
        let fresh = match vm::reserve_low(size.max(SLAB), size) {
            Some(r) => r,
            None => {
                if let Some(f) = fitting_free(&self.free, size, false) {
                    return Ok(f);
                }
                let near = self.slabs.first().map(|s| s.0);
                let want = size.max(SLAB);
                (
                    vm::reserve_near(want, near).map_err(|e| format!("mmap: {e}"))?,
                    want,
                )
            }
        };
        self.slabs.push(fresh);
        Ok(fresh)
    }

    /// Where exactly `size` bytes at `at` come from: the free space of a slab when it holds
    /// them, else a fresh slab of just that range when nothing is mapped there.
    fn exact_space(&mut self, at: u64, size: u64) -> Result<(u64, u64), String> {
        let end = at.checked_add(size).ok_or("address overflows")?;
        let taken = || format!("{at:#x}..{end:#x} is not free in this executor");
        if let Some((&s, &l)) = self.free.range(..=at).next_back() {
            if end <= s.saturating_add(l) {
                self.free.remove(&s);
                if at > s {
                    self.free.insert(s, at - s);
                }
                return Ok((at, s + l - at));
            }
        }
        let overlaps = |&(s, l): &(u64, u64)| at < s.saturating_add(l) && s < end;
        if !at.is_multiple_of(page()) || self.slabs.iter().any(overlaps) {
            return Err(taken());
        }
        // A whole slab from there when free (the ranges after it come next), else just this.
        let fresh = [SLAB.max(size), size]
            .into_iter()
            .find_map(|len| Some((vm::reserve_exact(at, len)?, len)))
            .ok_or_else(taken)?;
        self.slabs.push(fresh);
        Ok(fresh)
    }

    /// Unmaps slabs above 2 GiB that are wholly free: a low wish that ended high (and was given
    /// back to retry smaller) must not be handed out again.
    fn drop_idle_high_slabs(&mut self) {
        let free = &mut self.free;
        self.slabs.retain(|&(s, l)| {
            if s + l <= vm::TWO_GIB {
                return true;
            }
            let Some((&fs, &fl)) = free.range(..=s).next_back() else {
                return true;
            };
            if fs + fl < s + l {
                return true;
            }
            // SAFETY: a slab of ours with nothing handed out in it.
            if unsafe { libc::munmap(s as *mut libc::c_void, l as usize) } != 0 {
                return true;
            }
            free.remove(&fs);
            if s > fs {
                free.insert(fs, s - fs);
            }
            if fs + fl > s + l {
                free.insert(s + l, fs + fl - (s + l));
            }
            false
        });
    }
}

impl Memory {
    /// Hands out `size` bytes (rounded to pages) of inaccessible address space, below 2 GiB
    /// whenever a free gap there holds them, else near earlier ranges when possible.
    pub fn reserve(&self, size: u64) -> Result<u64, String> {
        let size = size.max(1).div_ceil(page()) * page();
        let mut st = self.state.lock().map_err(|_| "memory state poisoned")?;
        let (start, len) = match st.wish.take() {
            Some(at) => st.exact_space(at, size)?,
            None => st.find_space(size)?,
        };
        st.free.remove(&start);
        if len > size {
            st.free.insert(start + size, len - size);
        }
        st.ranges.insert(
            start,
            Range {
                size,
                dealloc: Vec::new(),
                shared: None,
                shm_name: None,
            },
        );
        Ok(start)
    }

    /// Makes the next [`Memory::reserve`] start exactly at `addr` or fail (it takes the wish).
    pub fn reserve_next_at(&self, addr: u64) -> Result<(), String> {
        let mut st = self.state.lock().map_err(|_| "memory state poisoned")?;
        st.wish = Some(addr);
        Ok(())
    }

    /// Notes that the copy-manager range at `base` waits for its content.
    pub fn mark_unfinalized(&self, base: u64) {
        if let Ok(mut st) = self.state.lock() {
            st.unfinalized.insert(base);
        }
    }

    /// Notes that the range at `base` got its content (or is gone).
    pub fn mark_finalized(&self, base: u64) {
        if let Ok(mut st) = self.state.lock() {
            st.unfinalized.remove(&base);
        }
        self.finalized.notify_all();
    }

    /// Notes shared-memory activity (an allocation initialized): LLVM's shared-memory
    /// controller allocates without telling the executor, so quiet time is the only signal.
    pub fn note_shared_activity(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.last_shared = Some(std::time::Instant::now());
        }
        self.finalized.notify_all();
    }

    /// Waits (at most `limit`) until no range waits for its content and shared-memory
    /// initializations have paused. LLVM 19 controllers can ask to run code before they have
    /// sent (or initialized) all the code it calls; waiting here turns that race into a delay.
    pub fn wait_for_pending(&self, limit: std::time::Duration) {
        const QUIET: std::time::Duration = std::time::Duration::from_millis(100);
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let deadline = std::time::Instant::now() + limit;
        loop {
            let busy_shared = st.last_shared.is_some_and(|t| t.elapsed() < QUIET);
            if st.unfinalized.is_empty() && !busy_shared {
                return;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            let step = (deadline - now).min(QUIET);
            match self.finalized.wait_timeout(st, step) {
                Ok((g, _)) => st = g,
                Err(_) => return,
            }
        }
    }

    /// Notes the protection now in force on `[addr, addr + len)` (rounded out to pages).
    pub fn note_prot(&self, addr: u64, len: u64, prot: u8) {
        let start = addr & !(page() - 1);
        let end = addr
            .saturating_add(len)
            .div_ceil(page())
            .saturating_mul(page());
        if let Ok(mut st) = self.state.lock() {
            st.prots.set(start, end, prot);
        }
    }

    /// Notes the protection now in force on exactly `[addr, addr + len)` (a piece of a pack).
    pub fn note_prot_exact(&self, addr: u64, len: u64, prot: u8) {
        if let Ok(mut st) = self.state.lock() {
            st.prots.set(addr, addr.saturating_add(len), prot);
        }
    }

    /// The protection bits of the pack area holding all of `[addr, addr + len)`, if any.
    pub fn pack_area_bits(&self, addr: u64, len: u64) -> Option<u8> {
        self.state.lock().ok()?.packs.area_bits(addr, len)
    }

    /// Gives the three areas of `area` bytes at `addr`, in one shared range handed out, the
    /// protections of a pack (`on`), or makes them inaccessible again.
    pub fn pack(&self, addr: u64, area: u64, on: bool) -> Result<(), String> {
        let len = area
            .checked_mul(3)
            .filter(|&l| l > 0 && addr.is_multiple_of(page()) && area.is_multiple_of(page()))
            .ok_or_else(|| format!("bad pack of 3 x {area:#x} bytes at {addr:#x}"))?;
        let mut st = self.state.lock().map_err(|_| "memory state poisoned")?;
        let base = st.handed_out(addr, len)?;
        if st.ranges.get(&base).is_none_or(|r| r.shared.is_none()) {
            return Err(format!("pack at {addr:#x}: not shared memory"));
        }
        if on {
            // The first pages of each area are mapped now; the rest as JIT'd code first
            // touches them (remjit populates its own view ahead of its links).
            let ready = area.min(PACK_READY);
            vm::protect_pack(addr, area, ready).map_err(|e| format!("pack at {addr:#x}: {e}"))?;
            st.packs.add(addr, area, ());
            return Ok(());
        }
        st.packs
            .remove(addr)
            .ok_or_else(|| format!("no pack at {addr:#x}"))?;
        st.prots.set(addr, addr + len, 0);
        super::services::protect(addr, len, 0)
    }

    /// Whether `addr` lies in executable memory (finalized code).
    pub fn is_executable(&self, addr: u64) -> bool {
        self.state
            .lock()
            .is_ok_and(|st| st.prots.covered(addr, 1, 4))
    }

    /// Checks that `[addr, addr + len)` lies in memory handed out and writable now.
    pub fn check_writable(&self, addr: u64, len: u64) -> Result<u64, String> {
        self.check_access(addr, len, access::prot::WRITE, access::not_writable)
    }

    /// Checks that `[addr, addr + len)` lies in memory handed out and readable now.
    pub fn check_readable(&self, addr: u64, len: u64) -> Result<u64, String> {
        self.check_access(addr, len, access::prot::READ, access::not_readable)
    }

    /// [`Memory::check`], then that every byte has the protection bits `need` (`refusal`
    /// words the error).
    fn check_access(
        &self,
        addr: u64,
        len: u64,
        need: u8,
        refusal: fn(u64, u64) -> String,
    ) -> Result<u64, String> {
        let st = self.state.lock().map_err(|_| "memory state poisoned")?;
        let base = st.handed_out(addr, len)?;
        if len > 0 && !st.prots.covered(addr, len, need) {
            return Err(refusal(addr, addr.saturating_add(len)));
        }
        Ok(base)
    }

    /// Whether `addr` lies in a range handed out.
    pub fn is_handed_out(&self, addr: u64) -> bool {
        self.state.lock().is_ok_and(|st| st.holder(addr).is_some())
    }

    /// The range `[addr, addr + len)` lies in one range handed out: returns that range's base.
    pub fn check(&self, addr: u64, len: u64) -> Result<u64, String> {
        let st = self.state.lock().map_err(|_| "memory state poisoned")?;
        st.handed_out(addr, len)
    }

    /// Runs `f` on the range based at `base`.
    pub fn with_range<T>(&self, base: u64, f: impl FnOnce(&mut Range) -> T) -> Result<T, String> {
        let mut st = self.state.lock().map_err(|_| "memory state poisoned")?;
        let r = st
            .ranges
            .get_mut(&base)
            .ok_or_else(|| format!("no reservation at {base:#x}"))?;
        Ok(f(r))
    }

    /// Takes the dealloc actions of allocations based at `bases` (any range), newest first.
    /// The allocation's memory may be reused: debug objects registered in it are deregistered.
    pub fn take_dealloc(&self, alloc_base: u64) -> Result<Vec<super::services::Action>, String> {
        let mut st = self.state.lock().map_err(|_| "memory state poisoned")?;
        // An allocation lies in the range that holds its base.
        if let Some((b, size)) = st.holder(alloc_base) {
            if let Some(r) = st.ranges.get_mut(&b) {
                if let Some(i) = r.dealloc.iter().position(|d| d.0 == alloc_base) {
                    // It ends at the next allocation of the range at the latest.
                    let next = r.dealloc.iter().map(|d| d.0).filter(|&a| a > alloc_base);
                    let end = next.min().unwrap_or(b.saturating_add(size));
                    jit_debug::memory_freed(alloc_base, end - alloc_base);
                    return Ok(r.dealloc.remove(i).1);
                }
            }
        }
        Err(format!("no finalized allocation at {alloc_base:#x}"))
    }

    /// Gives a whole range back: fresh pages, and its space returns to the free list.
    pub fn release(&self, base: u64) -> Result<(), String> {
        let mut st = self.state.lock().map_err(|_| "memory state poisoned")?;
        let r = st
            .ranges
            .remove(&base)
            .ok_or_else(|| format!("no reservation at {base:#x}"))?;
        st.unfinalized.remove(&base);
        jit_debug::memory_freed(base, r.size);
        st.prots.set(base, base + r.size, 0);
        st.packs.drain_range(base, r.size);
        self.finalized.notify_all();
        vm::reset(base, r.size).map_err(|e| format!("freeing {base:#x}: {e}"))?;
        drop(r.shared);
        // Coalesce with neighbours.
        let (mut start, mut len) = (base, r.size);
        if let Some((&p, &pl)) = st.free.range(..start).next_back() {
            if p + pl == start {
                st.free.remove(&p);
                start = p;
                len += pl;
            }
        }
        if let Some(&nl) = st.free.get(&(start + len)) {
            st.free.remove(&(start + len));
            len += nl;
        }
        st.free.insert(start, len);
        st.drop_idle_high_slabs();
        Ok(())
    }

    /// Resets pages of an allocation inside a range (its range stays handed out).
    pub fn reset_pages(&self, addr: u64, len: u64) -> Result<(), String> {
        self.check(addr, len)?;
        self.note_prot(addr, len, 0);
        vm::reset(addr, len).map_err(|e| format!("freeing {addr:#x}: {e}"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Taken by the tests that reserve slabs (a gigabyte each, below 2 GiB when they can): run
    /// in parallel, they filled the low 2 GiB that another expects to find room in.
    pub(crate) static SLABS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// [`SLABS`], even after a test that held it failed.
    pub(crate) fn slabs_lock() -> std::sync::MutexGuard<'static, ()> {
        SLABS.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn a_released_high_range_is_not_handed_out_for_a_smaller_low_wish() {
        let _slabs = slabs_lock();
        let m = Memory::default();
        // More than fits below 2 GiB: high. The controller gives it back to ask for less.
        let high = m.reserve(3 << 30).unwrap();
        assert!(high >= vm::TWO_GIB, "{high:#x}");
        m.release(high).unwrap();
        assert!(
            m.state.lock().unwrap().slabs.is_empty(),
            "the wholly free high slab is unmapped"
        );
        let low = m.reserve(512 << 20).unwrap();
        assert!(low + (512 << 20) <= vm::TWO_GIB, "{low:#x} is not low");
        m.release(low).unwrap();
        // A low slab stays for reuse.
        assert_eq!(m.reserve(4096).unwrap(), low);
        let slabs = m.state.lock().unwrap().slabs.clone();
        for (s, l) in slabs {
            // SAFETY: the test's own reservations.
            unsafe { libc::munmap(s as *mut libc::c_void, l as usize) };
        }
    }

    #[test]
    fn a_reservation_asked_at_an_address_gets_it_or_fails() {
        let _slabs = slabs_lock();
        let m = Memory::default();
        let first = m.reserve(3 * 4096).unwrap();
        m.release(first).unwrap();
        // Free space of a slab, at the address asked, once.
        m.reserve_next_at(first + 4096).unwrap();
        assert_eq!(m.reserve(4096).unwrap(), first + 4096);
        assert_eq!(m.reserve(4096).unwrap(), first, "first fit again");
        // A range handed out already, or one with something mapped there, is refused.
        m.reserve_next_at(first).unwrap();
        let end = first + 4096;
        assert_eq!(
            m.reserve(4096),
            Err(format!("{first:#x}..{end:#x} is not free in this executor"))
        );
        let elsewhere = vm::reserve(4096, None, false).unwrap();
        m.reserve_next_at(elsewhere).unwrap();
        assert!(m.reserve(4096).is_err());
        // Outside every slab and free: a fresh slab starting there.
        // SAFETY: our own reservation, given back to be asked for.
        unsafe { libc::munmap(elsewhere as *mut libc::c_void, 4096) };
        m.reserve_next_at(elsewhere).unwrap();
        assert_eq!(m.reserve(4096).unwrap(), elsewhere);
        let slabs = m.state.lock().unwrap().slabs.clone();
        for (s, l) in slabs {
            // SAFETY: the test's own reservations.
            unsafe { libc::munmap(s as *mut libc::c_void, l as usize) };
        }
    }
}
