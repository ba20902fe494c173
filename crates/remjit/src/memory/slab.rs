//! The slab allocator (the seed's `MapperJITLinkMemoryManager`): one large reservation on first
//! use, page-aligned allocations carved from it first-fit, freed ranges coalesced and reused, and
//! a further reservation near the first only when it is full, so that all JIT'd memory of a
//! session stays within +-2 GiB.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::memory::mapper::{AllocInfo, MemoryMapper};
use crate::memory::pack::{self, Pack, Packs};

/// Free address ranges, coalesced: start -> length.
#[derive(Debug, Default, Clone)]
pub struct FreeList {
    ranges: BTreeMap<u64, u64>,
}

impl FreeList {
    /// An empty free list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns `[start, start + len)` to the list, merging it with its neighbours.
    pub fn insert(&mut self, mut start: u64, mut len: u64) {
        if len == 0 {
            return;
        }
        if let Some((&prev, &plen)) = self.ranges.range(..start).next_back() {
            if prev + plen == start {
                self.ranges.remove(&prev);
                start = prev;
                len += plen;
            }
        }
        if let Some(&nlen) = self.ranges.get(&(start + len)) {
            self.ranges.remove(&(start + len));
            len += nlen;
        }
        self.ranges.insert(start, len);
    }

    /// Takes the lowest range of `len` bytes aligned to `align` (a power of two).
    pub fn take(&mut self, len: u64, align: u64) -> Option<u64> {
        let (start, flen, at) = self.ranges.iter().find_map(|(&s, &l)| {
            let at = s.checked_add(align - 1)? & !(align - 1);
            (at.checked_add(len)? <= s + l).then_some((s, l, at))
        })?;
        self.ranges.remove(&start);
        self.insert(start, at - start);
        self.insert(at + len, start + flen - (at + len));
        Some(at)
    }

    /// Takes exactly `[start, start + len)` when it is free (false, and nothing changes, when
    /// any of it is not).
    pub fn take_at(&mut self, start: u64, len: u64) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        let Some((&s, &l)) = self.ranges.range(..=start).next_back() else {
            return false;
        };
        if end > s + l {
            return false;
        }
        self.ranges.remove(&s);
        self.insert(s, start - s);
        self.insert(end, s + l - end);
        true
    }

    /// Total free bytes.
    pub fn total(&self) -> u64 {
        self.ranges.values().sum()
    }

    /// The free ranges, lowest first.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &l)| (s, l))
    }
}

/// What happened when a low wish for `need` bytes ended at `at`, above 2 GiB.
fn high_note(at: u64, need: u64) -> String {
    format!(
        "JIT'd memory lies at {at:#x}, above 2 GiB: the process that runs the code has no free \
         range of {} KiB below 2 GiB",
        need.div_ceil(1024)
    )
}

/// An allocation being linked: its range and the controller's working memory for it.
#[derive(Debug)]
pub struct InFlightAlloc {
    /// Executor address of the first byte.
    pub base: u64,
    /// Size in bytes (whole pages).
    pub size: u64,
    /// Controller-writable view of `[base, base + size)`.
    pub working: *mut u8,
}

/// A finalized allocation: JIT'd code and data in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalizedAlloc {
    /// Executor address of the first byte.
    pub base: u64,
    /// Size in bytes (whole pages).
    pub size: u64,
}

struct SlabState {
    reservations: Vec<(u64, u64)>,
    free: FreeList,
    /// Why a low wish ended above 2 GiB, if it did.
    high: Option<String>,
    /// Where the next allocation should start ([`SlabAllocator::place_next_at`]).
    wish: Option<u64>,
}

/// Below this, 32-bit references reach (absolute addresses, and the host's data copies).
const TWO_GIB: u64 = 1 << 31;

/// The least a low slab shrinks to before one above 2 GiB is taken instead.
const MIN_LOW_SLAB: u64 = 2 << 20;

/// The slab allocator over any [`MemoryMapper`].
pub struct SlabAllocator {
    mapper: Arc<dyn MemoryMapper>,
    slab_size: u64,
    low: bool,
    state: Mutex<SlabState>,
    /// Small links' shared pages.
    packs: Mutex<Packs>,
}

impl SlabAllocator {
    /// A slab of `slab_size` bytes of address space per reservation. With `low`, the first
    /// reservation is placed below 2 GiB when possible (for absolute 32-bit addressing).
    pub fn new(mapper: Arc<dyn MemoryMapper>, slab_size: u64, low: bool) -> Self {
        SlabAllocator {
            mapper,
            slab_size,
            low,
            state: Mutex::new(SlabState {
                reservations: Vec::new(),
                free: FreeList::new(),
                high: None,
                wish: None,
            }),
            packs: Mutex::new(Packs::default()),
        }
    }

    /// Every later link gets pages of its own, none shares a pack (see
    /// [`SlabAllocator::allocate_packed`]).
    pub fn no_packs(&self) -> Result<()> {
        self.lock_packs()?.unsupported = true;
        Ok(())
    }

    /// The mapper underneath.
    pub fn mapper(&self) -> &Arc<dyn MemoryMapper> {
        &self.mapper
    }

    /// The reservations made so far: (start, size).
    pub fn reservations(&self) -> Vec<(u64, u64)> {
        self.state
            .lock()
            .map(|s| s.reservations.clone())
            .unwrap_or_default()
    }

    /// Why JIT'd memory lies above 2 GiB although it was wanted below (`None` if it does not):
    /// 32-bit references to it and from it to the host's data copies may then fail.
    pub fn high_placement(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.high.clone())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, SlabState>> {
        self.state
            .lock()
            .map_err(|_| Error::Memory("slab state poisoned".into()))
    }

    /// Reserves exactly the given ranges (the reservations of an earlier session, see
    /// [`SlabAllocator::reservations`]) before anything else is allocated, so that
    /// [`SlabAllocator::place_next_at`] finds their addresses free. Nothing to do for mappers
    /// that reserve per allocation. Stops at the first range that cannot be had.
    pub fn reserve_exact(&self, ranges: &[(u64, u64)]) -> Result<()> {
        if self.mapper.reserves_per_allocation() {
            return Ok(());
        }
        for &(at, len) in ranges {
            self.mapper.reserve_at(at, len)?;
            let mut st = self.lock()?;
            st.reservations.push((at, len));
            st.free.insert(at, len);
        }
        Ok(())
    }

    /// Asks that the next [`SlabAllocator::allocate`] start exactly at `addr`: it does when
    /// that range is free (or, for mappers reserving per allocation, can be reserved there),
    /// else the allocation goes wherever it would have gone. Callers compare the base. `None`
    /// withdraws a wish no allocation took.
    pub fn place_next_at(&self, addr: Option<u64>) -> Result<()> {
        self.lock()?.wish = addr;
        Ok(())
    }

    /// Carves `size` bytes (rounded up to pages) and prepares them as working memory.
    pub fn allocate(&self, size: u64) -> Result<InFlightAlloc> {
        let page = self.mapper.page_size();
        let size = size.max(1).div_ceil(page) * page;
        let wish = self.lock()?.wish.take();
        if self.mapper.reserves_per_allocation() {
            let near = self.lock()?.reservations.first().map(|r| r.0);
            let exact = wish.and_then(|at| self.mapper.reserve_at(at, size).ok());
            let base = match exact {
                Some(b) => b,
                None => self.mapper.reserve(size, near, self.low)?,
            };
            let working = match self.mapper.prepare(base, size) {
                Ok(w) => w,
                Err(e) => {
                    let _ = self.mapper.release(&[(base, size)]);
                    return Err(e);
                }
            };
            let mut st = self.lock()?;
            if self.low && base.saturating_add(size) > TWO_GIB {
                st.high = Some(high_note(base, size));
            }
            st.reservations.push((base, size));
            drop(st);
            return Ok(InFlightAlloc {
                base,
                size,
                working,
            });
        }
        let base = {
            let mut st = self.lock()?;
            let exact = wish.filter(|&at| at.is_multiple_of(page) && st.free.take_at(at, size));
            match exact.or_else(|| st.free.take(size, page)) {
                Some(b) => b,
                None => {
                    let want = size.max(self.slab_size).div_ceil(page) * page;
                    let near = st.reservations.first().map(|r| r.0);
                    // Low address space can be fragmented: settle for a smaller low slab (not
                    // under 2 MiB unless the allocation is smaller) before a high one.
                    let need = size.max(want.min(MIN_LOW_SLAB));
                    let (at, want) = self.mapper.reserve_slab(want, need, near, self.low)?;
                    if self.low && at.saturating_add(want) > TWO_GIB {
                        st.high = Some(high_note(at, need));
                    }
                    if let Some(first) = near {
                        let far = at.abs_diff(first).max((at + want).abs_diff(first));
                        if far > (1 << 31) {
                            tracing::warn!(
                                "a further JIT reservation lies beyond +-2 GiB of the first; \
                                 far references go through the GOT and stubs"
                            );
                        }
                    }
                    st.reservations.push((at, want));
                    st.free.insert(at, want);
                    st.free
                        .take(size, page)
                        .ok_or_else(|| Error::Memory("fresh reservation too small".into()))?
                }
            }
        };
        match self.mapper.prepare(base, size) {
            Ok(working) => Ok(InFlightAlloc {
                base,
                size,
                working,
            }),
            Err(e) => {
                self.lock()?.free.insert(base, size);
                Err(e)
            }
        }
    }

    /// Memory for a small link whose segments (code, read-only data, read-write data with zero
    /// fill) have these sizes and alignments: pieces of a pack's areas, shared with other
    /// links ([`pack`]), and the segments' offsets from the returned base. `None` when the
    /// segments are too large or the mapper does not pack: [`SlabAllocator::allocate`] then.
    pub fn allocate_packed(
        &self,
        sizes: [u64; 3],
        aligns: [u64; 3],
    ) -> Result<Option<(InFlightAlloc, [u64; 3])>> {
        if !Packs::fits(sizes, aligns) || self.mapper.reserves_per_allocation() {
            return Ok(None);
        }
        let mut packs = self.lock_packs()?;
        if packs.unsupported {
            return Ok(None);
        }
        let mapper = &self.mapper;
        let mut populate = |pack: u64, addr: u64, len: u64| mapper.populate_pack(pack, addr, len);
        let window = match packs.place(sizes, aligns, &mut populate) {
            Some(w) => w,
            None => {
                let range = self.allocate(3 * pack::AREA)?;
                match self.mapper.map_pack(range.base, pack::AREA) {
                    Ok(Some(working)) => packs.add(Pack::new(range.base, working as u64)),
                    Ok(None) => {
                        packs.unsupported = true;
                        self.return_range(range.base, range.size);
                        return Ok(None);
                    }
                    Err(e) => {
                        self.return_range(range.base, range.size);
                        return Err(e);
                    }
                }
                packs
                    .place(sizes, aligns, &mut populate)
                    .ok_or_else(|| Error::Memory("fresh pack too small".into()))?
            }
        };
        let (base, size, working, starts) = window;
        Ok(Some((
            InFlightAlloc {
                base,
                size,
                working,
            },
            starts,
        )))
    }

    fn lock_packs(&self) -> Result<std::sync::MutexGuard<'_, Packs>> {
        self.packs
            .lock()
            .map_err(|_| Error::Memory("slab packs poisoned".into()))
    }

    /// Frees the packed link at `base` (its pieces zeroed for reuse, an idle pack given back);
    /// false if `base` is not a packed link.
    fn free_packed(&self, base: u64) -> bool {
        let Ok(mut packs) = self.lock_packs() else {
            return false;
        };
        match packs.free(base) {
            None => false,
            Some(None) => true,
            Some(Some(idle)) => {
                drop(packs);
                self.drop_pack(&idle);
                true
            }
        }
    }

    /// Unmaps a pack's writable view and returns its range.
    fn drop_pack(&self, p: &Pack) {
        match self.mapper.unmap_pack(p.base, pack::AREA) {
            Ok(()) => self.return_range(p.base, 3 * pack::AREA),
            Err(e) => tracing::warn!("cannot unmap an idle pack: {e}; leaking its range"),
        }
    }

    /// Finalizes an allocation: protections and finalize actions.
    pub fn finalize(&self, alloc: InFlightAlloc, info: &AllocInfo) -> Result<FinalizedAlloc> {
        match self.mapper.initialize(info) {
            Ok(_) => Ok(FinalizedAlloc {
                base: alloc.base,
                size: alloc.size,
            }),
            Err(e) => {
                self.abandon(alloc);
                Err(e)
            }
        }
    }

    /// Gives back an allocation that was never finalized (a failed link).
    pub fn abandon(&self, alloc: InFlightAlloc) {
        if self.free_packed(alloc.base) {
            return;
        }
        if self.mapper.reserves_per_allocation() {
            self.forget_reservation(alloc.base);
            let _ = self.mapper.release(&[(alloc.base, alloc.size)]);
        } else {
            self.return_range(alloc.base, alloc.size);
        }
    }

    /// Zeroes a range that may have been written (a failed link, an idle pack) and returns it
    /// to the free list.
    fn return_range(&self, base: u64, size: u64) {
        if let Err(e) = self.mapper.discard(base, size) {
            tracing::warn!("cannot reset an abandoned allocation: {e}; leaking its range");
            return;
        }
        if let Ok(mut st) = self.lock() {
            st.free.insert(base, size);
        }
    }

    fn forget_reservation(&self, base: u64) {
        if let Ok(mut st) = self.lock() {
            st.reservations.retain(|r| r.0 != base);
        }
    }

    /// Frees finalized allocations: dealloc actions, pages back to the OS, range reused.
    pub fn deallocate(&self, allocs: &[FinalizedAlloc]) -> Result<()> {
        let bases: Vec<u64> = allocs.iter().map(|a| a.base).collect();
        let result = self.mapper.deinitialize(&bases);
        if self.mapper.reserves_per_allocation() {
            for a in allocs {
                self.forget_reservation(a.base);
            }
            let ranges: Vec<(u64, u64)> = allocs.iter().map(|a| (a.base, a.size)).collect();
            return result.and(self.mapper.release(&ranges));
        }
        let paged: Vec<&FinalizedAlloc> = allocs
            .iter()
            .filter(|a| !self.free_packed(a.base))
            .collect();
        let mut st = self.lock()?;
        for a in paged {
            st.free.insert(a.base, a.size);
        }
        result
    }

    /// Returns every reservation to the OS. Only for a session that is completely done.
    pub fn release_all(&self) -> Result<()> {
        for p in self.lock_packs()?.take_all() {
            // Only the writable views: the reservations go below.
            let _ = self.mapper.unmap_pack(p.base, pack::AREA);
        }
        let res = std::mem::take(&mut self.lock()?.reservations);
        self.lock()?.free = FreeList::new();
        self.mapper.release(&res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn coalesces_and_reuses() {
        let mut f = FreeList::new();
        f.insert(0x10000, 0x10000);
        let a = f.take(0x1000, 0x1000).unwrap();
        let b = f.take(0x2000, 0x1000).unwrap();
        assert_eq!((a, b), (0x10000, 0x11000));
        f.insert(a, 0x1000);
        assert_eq!(
            f.take(0x1000, 0x1000),
            Some(0x10000),
            "freed range is reused"
        );
        f.insert(0x10000, 0x1000);
        f.insert(b, 0x2000);
        assert_eq!(f.ranges().collect::<Vec<_>>(), vec![(0x10000, 0x10000)]);
    }

    /// A remote executor whose low address space holds at most `low_room` bytes: larger wishes
    /// land high. Records every reserve and release.
    struct FragmentedExecutor {
        low_room: u64,
        log: Mutex<Vec<String>>,
    }

    impl MemoryMapper for FragmentedExecutor {
        fn page_size(&self) -> u64 {
            4096
        }
        fn reserve(&self, size: u64, _near: Option<u64>, _low: bool) -> Result<u64> {
            let at = if size <= self.low_room {
                0x4010_0000
            } else {
                0x7f00_0000_0000
            };
            self.log
                .lock()
                .unwrap()
                .push(format!("reserve {size:#x} at {at:#x}"));
            Ok(at)
        }
        fn prepare(&self, _addr: u64, _len: u64) -> Result<*mut u8> {
            Ok(std::ptr::null_mut())
        }
        fn initialize(&self, info: &AllocInfo) -> Result<u64> {
            Ok(info.mapping_base)
        }
        fn deinitialize(&self, _allocations: &[u64]) -> Result<()> {
            Ok(())
        }
        fn release(&self, reservations: &[(u64, u64)]) -> Result<()> {
            for (at, size) in reservations {
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("release {size:#x} at {at:#x}"));
            }
            Ok(())
        }
    }

    #[test]
    fn a_high_slab_is_given_back_and_halved_until_it_goes_low() {
        let exec = Arc::new(FragmentedExecutor {
            low_room: 300 << 20,
            log: Mutex::new(Vec::new()),
        });
        let slab = SlabAllocator::new(exec.clone(), 1 << 30, true);
        let a = slab.allocate(5000).unwrap();
        assert_eq!((a.base, a.size), (0x4010_0000, 0x2000));
        assert_eq!(slab.reservations(), vec![(0x4010_0000, 256 << 20)]);
        assert_eq!(slab.high_placement(), None);
        assert_eq!(
            *exec.log.lock().unwrap(),
            [
                "reserve 0x40000000 at 0x7f0000000000",
                "release 0x40000000 at 0x7f0000000000",
                "reserve 0x20000000 at 0x7f0000000000",
                "release 0x20000000 at 0x7f0000000000",
                "reserve 0x10000000 at 0x40100000",
            ]
        );
        // Nothing low at all: down to 2 MiB, then the high slab is kept and the cause noted.
        let none = Arc::new(FragmentedExecutor {
            low_room: 0,
            log: Mutex::new(Vec::new()),
        });
        let slab = SlabAllocator::new(none.clone(), 1 << 30, true);
        assert_eq!(slab.allocate(4096).unwrap().base, 0x7f00_0000_0000);
        assert_eq!(
            none.log.lock().unwrap().len(),
            2 * 9 + 1,
            "1 GiB halved to 2 MiB"
        );
        assert_eq!(
            slab.high_placement().as_deref(),
            Some(
                "JIT'd memory lies at 0x7f0000000000, above 2 GiB: the process that runs the \
                 code has no free range of 2048 KiB below 2 GiB"
            )
        );
    }

    #[test]
    fn exact_ranges_are_taken_only_when_wholly_free() {
        let mut f = FreeList::new();
        f.insert(0x10000, 0x4000);
        assert!(f.take_at(0x11000, 0x1000));
        assert!(!f.take_at(0x11000, 0x1000), "taken already");
        assert!(!f.take_at(0x12000, 0x3000), "runs past the free range");
        assert!(!f.take_at(0x8000, 0x1000), "below every free range");
        assert_eq!(
            f.ranges().collect::<Vec<_>>(),
            vec![(0x10000, 0x1000), (0x12000, 0x2000)]
        );
        assert!(f.take_at(0x12000, 0x2000));
        assert_eq!(f.total(), 0x1000);
    }

    #[test]
    fn alignment_splits_range() {
        let mut f = FreeList::new();
        f.insert(0x1000, 0x10000);
        assert_eq!(f.take(0x1000, 0x4000), Some(0x4000));
        assert_eq!(f.total(), 0xf000);
        assert_eq!(f.take(0x3000, 0x1000), Some(0x1000));
    }

    proptest! {
        /// Random allocate/free sequences: no overlap, alignment kept, everything coalesces back.
        #[test]
        fn no_overlap_and_full_coalescing(ops in proptest::collection::vec((1u64..16, 0u32..3, any::<bool>()), 1..200)) {
            const PAGE: u64 = 0x1000;
            let total = 256 * PAGE;
            let mut f = FreeList::new();
            f.insert(0x100000, total);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (pages, align_log, free_one) in ops {
                if free_one && !live.is_empty() {
                    let (s, l) = live.swap_remove((pages as usize) % live.len());
                    f.insert(s, l);
                } else {
                    let align = PAGE << align_log;
                    if let Some(s) = f.take(pages * PAGE, align) {
                        prop_assert_eq!(s % align, 0);
                        for &(o, ol) in &live {
                            prop_assert!(s + pages * PAGE <= o || o + ol <= s, "overlap");
                        }
                        prop_assert!(s >= 0x100000 && s + pages * PAGE <= 0x100000 + total);
                        live.push((s, pages * PAGE));
                    }
                }
                let used: u64 = live.iter().map(|l| l.1).sum();
                prop_assert_eq!(used + f.total(), total);
            }
            for (s, l) in live { f.insert(s, l); }
            prop_assert_eq!(f.ranges().collect::<Vec<_>>(), vec![(0x100000, total)]);
        }
    }
}
