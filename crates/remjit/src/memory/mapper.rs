//! The `MemoryMapper` interface: how the slab reserves address space in the executing process,
//! gets controller-writable working memory for it, and finalizes or frees it.

use crate::error::Result;
use crate::memory::actions::AllocActionPair;

/// Memory protection of a segment, with LLVM's bit values (R = 1, W = 2, X = 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prot(pub u8);

impl Prot {
    /// Readable.
    pub const READ: Prot = Prot(1);
    /// Readable and writable.
    pub const READ_WRITE: Prot = Prot(3);
    /// Readable and executable.
    pub const READ_EXEC: Prot = Prot(5);

    /// The `PROT_*` flags for `mprotect`.
    pub fn to_mprotect(self) -> i32 {
        let mut p = 0;
        if self.0 & 1 != 0 {
            p |= libc::PROT_READ;
        }
        if self.0 & 2 != 0 {
            p |= libc::PROT_WRITE;
        }
        if self.0 & 4 != 0 {
            p |= libc::PROT_EXEC;
        }
        p
    }
}

/// One segment of an allocation, as the mapper sees it.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Offset of the segment from the allocation's base.
    pub offset: u64,
    /// Bytes of content written by the linker.
    pub content_size: u64,
    /// Bytes of zero fill after the content.
    pub zero_fill_size: u64,
    /// Final protection.
    pub prot: Prot,
}

/// Everything needed to finalize one allocation (the seed's `AllocInfo`).
#[derive(Debug, Clone)]
pub struct AllocInfo {
    /// Executor address of the allocation's first byte.
    pub mapping_base: u64,
    /// Its segments, page aligned.
    pub segments: Vec<SegmentInfo>,
    /// Actions to run after protection (finalize), and on free (dealloc, in reverse).
    pub actions: Vec<AllocActionPair>,
    /// Page ranges whose content is mapped from input files (copy-on-write) instead of
    /// written by the linker.
    pub file_maps: Vec<FileMap>,
    /// The mapper may return from [`MemoryMapper::initialize`] before the executing process
    /// has finished (see [`crate::SessionOptions::pipelined_initialize`]).
    pub pipelined: bool,
}

impl AllocInfo {
    /// Bytes from the base to the end of the last segment.
    pub fn extent(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.offset + s.content_size + s.zero_fill_size)
            .max()
            .unwrap_or(0)
    }
}

/// A page range of an allocation whose content comes straight from a file: a large section
/// without relocations, mapped privately so its pages are shared with the page cache until
/// written.
#[derive(Debug, Clone)]
pub struct FileMap {
    /// Offset from the allocation's base (page aligned).
    pub offset: u64,
    /// Length in bytes (page multiple).
    pub len: u64,
    /// The file.
    pub file: std::sync::Arc<std::fs::File>,
    /// Offset in the file (page aligned).
    pub file_offset: u64,
}

/// Maps memory in the executing process (the seed's `MemoryMapper`).
pub trait MemoryMapper: Send + Sync {
    /// The executing process's page size.
    fn page_size(&self) -> u64;

    /// Reserves `size` bytes of address space. `near` asks for a range within +-2 GiB of that
    /// address (so that a further reservation keeps the small code model); `low` asks for a range
    /// below 2 GiB (for code using absolute 32-bit addresses). Both are wishes, not guarantees.
    fn reserve(&self, size: u64, near: Option<u64>, low: bool) -> Result<u64>;

    /// Reserves `size` bytes at exactly `addr` (a fresh executor taking the addresses of the one
    /// before it); an error when anything lies there or the executor cannot place memory at
    /// a chosen address.
    fn reserve_at(&self, addr: u64, size: u64) -> Result<u64> {
        let _ = size;
        Err(crate::error::Error::Memory(format!(
            "cannot place JIT'd memory at {addr:#x}: this executor chooses its own addresses"
        )))
    }

    /// Reserves a slab of between `need` and `want` bytes; returns (address, size). With `low`,
    /// a slab below 2 GiB is worth a smaller size: a reservation that lands above is given back
    /// and `want` halved ([`remjit_executor::vm::smaller_wish`]), down to `need`, before one
    /// above is kept (the executor places each wish in the free gaps it finds there).
    fn reserve_slab(
        &self,
        want: u64,
        need: u64,
        near: Option<u64>,
        low: bool,
    ) -> Result<(u64, u64)> {
        let mut w = want.max(need);
        loop {
            let at = self.reserve(w, near, low)?;
            let smaller = remjit_executor::vm::smaller_wish(w, need, self.page_size());
            match smaller {
                Some(s) if low && at.saturating_add(w) > remjit_executor::vm::TWO_GIB => {
                    self.release(&[(at, w)])?;
                    w = s;
                }
                _ => return Ok((at, w)),
            }
        }
    }

    /// Makes `[addr, addr + len)` writable working memory and returns the controller's pointer
    /// to its first byte.
    fn prepare(&self, addr: u64, len: u64) -> Result<*mut u8>;

    /// Applies the segments' protections and runs the finalize actions; returns a handle.
    fn initialize(&self, info: &AllocInfo) -> Result<u64>;

    /// Runs the dealloc actions of finalized allocations and returns their pages to the OS.
    fn deinitialize(&self, allocations: &[u64]) -> Result<()>;

    /// Whether each allocation must be its own reservation (LLVM's copy-over-the-wire memory
    /// manager finalizes whole reservations only). The slab then reserves exactly what each
    /// allocation needs and releases it on free.
    fn reserves_per_allocation(&self) -> bool {
        false
    }

    /// Whether the working memory [`MemoryMapper::prepare`] returns stays the executing
    /// process's own memory once initialized (the same process, or shared memory): a store
    /// through it reaches JIT'd code without a message. The session patches call-stub slots
    /// that way when it can.
    fn working_memory_is_live(&self) -> bool {
        false
    }

    /// Whether [`AllocInfo::file_maps`] can be honoured (the executing process can map the
    /// controller's files). Mappers that cannot get every byte written instead.
    fn can_map_files(&self) -> bool {
        false
    }

    /// Gives back the pages of a range that was prepared but never initialized (a failed
    /// link), so that it reads as zeroes when handed out again. Working memory from the slab is
    /// always zero: the linker relies on it and writes no zero fill.
    fn discard(&self, addr: u64, len: u64) -> Result<()> {
        let _ = (addr, len);
        Ok(())
    }

    /// Maps a pack at `addr` (a prepared range of the slab, `3 * area` bytes): three areas
    /// with the final protections of code, read-only data and read-write data, where small
    /// links get pieces instead of pages of their own ([`crate::memory::pack`]). Returns the
    /// controller's writable view of the pack's first byte (for the code area a second
    /// mapping, never the executable one), or `None` when this mapper does not pack.
    fn map_pack(&self, addr: u64, area: u64) -> Result<Option<*mut u8>> {
        let _ = (addr, area);
        Ok(None)
    }

    /// Populates `[addr, addr + len)` of the pack at `pack` ahead of the links that will get
    /// pieces there ([`MemoryMapper::map_pack`] populates the first [`crate::memory::pack::BATCH`]
    /// bytes of each area). Best effort.
    fn populate_pack(&self, pack: u64, addr: u64, len: u64) {
        let _ = (pack, addr, len);
    }

    /// Undoes [`MemoryMapper::map_pack`] before the pack's range returns to the slab (which
    /// then [`MemoryMapper::discard`]s it).
    fn unmap_pack(&self, addr: u64, area: u64) -> Result<()> {
        let _ = (addr, area);
        Ok(())
    }

    /// Returns whole reservations.
    fn release(&self, reservations: &[(u64, u64)]) -> Result<()>;
}
