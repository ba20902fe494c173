//! Small links packed into shared pages (issue 13).
//!
//! A pack is a range of the slab split into three areas of [`AREA`] bytes, mapped once with the
//! final protections of code, read-only data and read-write data
//! ([`crate::memory::MemoryMapper::map_pack`]). A small link gets a piece of each area instead
//! of pages of its own: its code, read-only data and data then follow each other at the
//! distances of the areas, so the link's segment offsets ([`crate::link::layout::Layout`]) stay
//! offsets from one base and PC-relative references stay within one reservation. Writing a
//! link then needs no `mprotect` and no fresh page: the linker writes through the mapper's
//! writable view of the pack, whose pages are populated ahead of the pieces handed out. Freed
//! pieces are zeroed (the linker relies on zeroed memory) and reused; a pack with no links
//! left goes back to the slab unless it is the newest.

use std::collections::HashMap;

use crate::memory::slab::FreeList;

/// Bytes of each of a pack's three areas.
pub const AREA: u64 = 64 << 10;

/// The largest segment (content and zero fill) put into a pack; larger ones get pages.
pub const MAX_PIECE: u64 = AREA / 8;

/// The strictest segment alignment a pack serves.
pub const MAX_PIECE_ALIGN: u64 = 4096;

/// Bytes of each area populated at a time, ahead of the pieces handed out (the first batch
/// when the pack is mapped, the next when a piece comes within half a batch of the end).
pub const BATCH: u64 = 16 << 10;

/// The least alignment and size of a piece.
pub const GRAIN: u64 = 16;

/// Set when a debugger will want software breakpoints in this process's JIT'd code.
static CODE_PRIVATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps this process's JIT'd code out of packs from now on: a debugger cannot plant
/// breakpoints in code pages that are mapped shared (the kernel refuses its forced writes
/// there), as pack areas are. For `--in-process --wait-for-debugger`; a process already traced
/// when a pack would be mapped gets none either.
pub fn keep_code_private() {
    CODE_PRIVATE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`keep_code_private`] was called.
pub fn code_kept_private() -> bool {
    CODE_PRIVATE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where one packed link's segments lie: (address, length) per segment.
pub type Pieces = [(u64, u64); 3];

/// One pack.
#[derive(Debug)]
pub struct Pack {
    /// Address of the code area's first byte; the pack spans `3 * AREA` bytes.
    pub base: u64,
    /// The controller's writable view of `base` (an address: a pointer is not `Send`).
    pub working: u64,
    free: [FreeList; 3],
    users: usize,
    /// Bytes from each area's start populated so far.
    ready: [u64; 3],
}

impl Pack {
    /// A pack at `base`, all free, written through `working`.
    pub fn new(base: u64, working: u64) -> Self {
        let free = std::array::from_fn(|i| {
            let mut f = FreeList::new();
            f.insert(base + i as u64 * AREA, AREA);
            f
        });
        Pack {
            base,
            working,
            free,
            users: 0,
            ready: [BATCH; 3],
        }
    }

    fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < 3 * AREA
    }

    /// A piece of each area (`sizes[i]` bytes aligned to `aligns[i]`, at least one byte so
    /// that every link has a base of its own), or nothing. Pieces are whole multiples of
    /// their alignment, at least [`GRAIN`]: carving leaves no gaps too small to reuse (the
    /// free lists stay short).
    fn take(&mut self, sizes: [u64; 3], aligns: [u64; 3]) -> Option<Pieces> {
        let mut pieces = [(0, 0); 3];
        for i in 0..3 {
            let align = aligns[i].max(GRAIN);
            let len = sizes[i].max(1).next_multiple_of(align);
            match self.free[i].take(len, align) {
                Some(at) => pieces[i] = (at, len),
                None => {
                    for (j, &(at, len)) in pieces.iter().enumerate().take(i) {
                        self.free[j].insert(at, len);
                    }
                    return None;
                }
            }
        }
        self.users += 1;
        Some(pieces)
    }

    /// The ranges to populate so that each area stays half a batch ahead of `pieces`.
    fn ahead(&mut self, pieces: &Pieces) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for (i, &(at, len)) in pieces.iter().enumerate() {
            let start = self.base + i as u64 * AREA;
            let end = at + len - start;
            if end + BATCH / 2 > self.ready[i] && self.ready[i] < AREA {
                let to = (end + BATCH).next_multiple_of(BATCH).min(AREA);
                out.push((start + self.ready[i], to - self.ready[i]));
                self.ready[i] = to;
            }
        }
        out
    }

    /// Zeroes the pieces through the writable view and returns them.
    fn give_back(&mut self, pieces: &Pieces) {
        for (i, &(at, len)) in pieces.iter().enumerate() {
            // SAFETY: the piece lies in this pack, whose writable view maps all of its
            // `3 * AREA` bytes at `working`; its link is gone, nothing else uses the piece.
            unsafe {
                std::ptr::write_bytes(
                    (self.working + (at - self.base)) as *mut u8,
                    0,
                    len as usize,
                )
            };
            self.free[i].insert(at, len);
        }
        self.users -= 1;
    }
}

/// Every pack of a slab and the links placed in them.
#[derive(Default)]
pub struct Packs {
    packs: Vec<Pack>,
    /// Packed links by base (their code piece): their pieces.
    links: HashMap<u64, Pieces>,
    /// The mapper does not pack (asked once).
    pub unsupported: bool,
}

/// A packed link's memory: (base, size of the window from its code piece to the end of its
/// data piece, writable view of the base, segment offsets from the base).
pub type Window = (u64, u64, *mut u8, [u64; 3]);

impl Packs {
    /// Whether segments of these sizes and alignments go into a pack.
    pub fn fits(sizes: [u64; 3], aligns: [u64; 3]) -> bool {
        sizes.iter().all(|&s| s <= MAX_PIECE) && aligns.iter().all(|&a| a <= MAX_PIECE_ALIGN)
    }

    /// Places a link in an existing pack, the newest first; `populate(pack, addr, len)` is
    /// asked to populate the pack's pages ahead of the pieces handed out.
    pub fn place(
        &mut self,
        sizes: [u64; 3],
        aligns: [u64; 3],
        populate: &mut dyn FnMut(u64, u64, u64),
    ) -> Option<Window> {
        let (pack, pieces) = self
            .packs
            .iter_mut()
            .rev()
            .find_map(|p| p.take(sizes, aligns).map(|pieces| (p, pieces)))?;
        for (addr, len) in pack.ahead(&pieces) {
            populate(pack.base, addr, len);
        }
        let base = pieces[0].0;
        let window = (
            base,
            pieces[2].0 + pieces[2].1 - base,
            (pack.working + (base - pack.base)) as *mut u8,
            [0, pieces[1].0 - base, pieces[2].0 - base],
        );
        self.links.insert(base, pieces);
        Some(window)
    }

    /// Adds a freshly mapped pack.
    pub fn add(&mut self, pack: Pack) {
        self.packs.push(pack);
    }

    /// Frees the packed link at `base`: `None` if there is none, else the pack to give back
    /// to the slab if it became empty (never the newest).
    pub fn free(&mut self, base: u64) -> Option<Option<Pack>> {
        let pieces = self.links.remove(&base)?;
        let i = self.packs.iter().position(|p| p.contains(base))?;
        self.packs[i].give_back(&pieces);
        let idle = self.packs[i].users == 0 && i + 1 < self.packs.len();
        Some(idle.then(|| self.packs.remove(i)))
    }

    /// Takes every pack (the session is done).
    pub fn take_all(&mut self) -> Vec<Pack> {
        self.links.clear();
        std::mem::take(&mut self.packs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Packs {
        /// [`Packs::place`] where nothing needs populating.
        fn place_now(&mut self, sizes: [u64; 3], aligns: [u64; 3]) -> Option<Window> {
            self.place(sizes, aligns, &mut |_, _, _| {})
        }
    }

    /// A pack over a buffer standing for both views.
    fn pack_over(buf: &mut [u8]) -> Pack {
        Pack::new(0x4000_0000, buf.as_mut_ptr() as u64)
    }

    #[test]
    fn links_share_areas_and_freed_pieces_are_zeroed_and_reused() {
        let mut buf = vec![0u8; 3 * AREA as usize];
        let mut packs = Packs::default();
        packs.add(pack_over(&mut buf));
        let (a, a_size, a_work, a_off) = packs.place_now([40, 60, 24], [16, 8, 16]).unwrap();
        assert_eq!(a, 0x4000_0000);
        assert_eq!(a_off, [0, AREA, 2 * AREA]);
        assert_eq!(
            a_size,
            2 * AREA + 32,
            "up to the end of the data piece (whole grains)"
        );
        let (b, _, _, b_off) = packs.place_now([40, 60, 24], [16, 8, 16]).unwrap();
        assert_eq!(b, a + 48, "the next code piece, aligned");
        assert_eq!(b_off, [0, AREA + 64 - 48, 2 * AREA + 32 - 48]);
        assert_eq!(packs.packs[0].free[1].ranges().count(), 1, "no gaps left");
        // SAFETY: the window lies in `buf`.
        unsafe { a_work.add(a_off[1] as usize).write(0xaa) };
        assert_eq!(buf[AREA as usize], 0xaa);
        assert!(matches!(packs.free(a), Some(None)), "the only pack stays");
        assert_eq!(buf[AREA as usize], 0, "a freed piece is zeroed");
        let (c, _, _, c_off) = packs.place_now([30, 10, 8], [16, 8, 16]).unwrap();
        assert_eq!((c, c_off[1]), (a, AREA), "freed pieces are reused");
        assert!(packs.free(0x1234).is_none());
    }

    #[test]
    fn a_link_takes_all_three_pieces_or_none() {
        let mut buf = vec![0u8; 3 * AREA as usize];
        let mut packs = Packs::default();
        packs.add(pack_over(&mut buf));
        let mut n = 0;
        while packs.place_now([16, 16, MAX_PIECE], [16, 8, 16]).is_some() {
            n += 1;
        }
        assert_eq!(n, AREA / MAX_PIECE);
        // Code and read-only room is left, and stays whole for a link with less data.
        assert!(packs.place_now([16, 16, 0], [16, 8, 16]).is_none());
        let free: Vec<u64> = packs.packs[0].free.iter().map(FreeList::total).collect();
        assert_eq!(free, [AREA - n * 16, AREA - n * 16, 0], "nothing taken");
        assert!(!Packs::fits([MAX_PIECE + 1, 0, 0], [1, 1, 1]));
        assert!(!Packs::fits([1, 1, 1], [1, MAX_PIECE_ALIGN * 2, 1]));
    }

    #[test]
    fn an_empty_pack_goes_back_unless_it_is_the_newest() {
        let mut one = vec![0u8; 3 * AREA as usize];
        let mut two = vec![0u8; 3 * AREA as usize];
        let mut packs = Packs::default();
        packs.add(pack_over(&mut one));
        let (a, ..) = packs.place_now([16, 16, 16], [16, 8, 16]).unwrap();
        packs.add(Pack::new(0x5000_0000, two.as_mut_ptr() as u64));
        let (b, ..) = packs.place_now([16, 16, 16], [16, 8, 16]).unwrap();
        assert_eq!(b, 0x5000_0000, "the newest pack first");
        assert!(matches!(packs.free(b), Some(None)));
        let idle = packs.free(a).unwrap().expect("the older pack is idle");
        assert_eq!(idle.base, 0x4000_0000);
        assert_eq!(packs.take_all().len(), 1);
    }

    #[test]
    fn pages_are_populated_half_a_batch_ahead() {
        let mut buf = vec![0u8; 3 * AREA as usize];
        let mut packs = Packs::default();
        packs.add(pack_over(&mut buf));
        let mut asked = Vec::new();
        let mut n = 0;
        while asked.is_empty() {
            let mut note = |p: u64, a: u64, l: u64| asked.push((p, a, l));
            packs.place([1024, 16, 16], [16, 8, 16], &mut note).unwrap();
            n += 1;
        }
        let base = 0x4000_0000;
        assert_eq!(
            n,
            (BATCH / 2) / 1024 + 1,
            "once the code came within half a batch"
        );
        assert_eq!(asked, [(base, base + BATCH, BATCH)]);
        // Never past the area.
        for _ in 0..200 {
            packs.place([256, 16, 16], [16, 8, 16], &mut |_, a, l| {
                asked.push((0, a, l));
                assert!(a + l <= base + AREA);
            });
        }
        assert_eq!(asked.last().map(|x| x.1 + x.2), Some(base + AREA));
    }
}
