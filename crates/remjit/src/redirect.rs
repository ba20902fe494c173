//! Call stubs the session owns: one per exported function name, so that a redefinition
//! re-points every module linked against the name.
//!
//! A module's references to a function an earlier module defines bind to the name's stub,
//! `jmp *slot(%rip)`, whose slot holds the visible definition's address. The session patches
//! the slot (a write to the executor's memory) when a module redefines the name or when the
//! redefining module is removed. `&f` taken by any later module is the stub's address, the
//! same for all of them.
//!
//! Stubs come in blocks of two pages from the session's slab: a code page of 8-byte stubs
//! (read/execute) and the page after it, their slots (read/write), stub `i` jumping through
//! slot `i`. A block's code never changes once finalized; only slots are written.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;
use crate::executor::Executor;
use crate::memory::{AllocInfo, Prot, SegmentInfo, SlabAllocator};

/// Bytes per stub: `jmp *disp32(%rip)` (6) and two `int3`.
const STUB_SIZE: u64 = 8;

/// The session's call stubs.
#[derive(Default)]
pub(crate) struct CallStubs {
    /// Stub address by name. A name keeps its stub for the session's life (pointer equality
    /// across redefinitions).
    by_name: HashMap<Vec<u8>, u64>,
    /// The next stub to hand out and the end of its block's code page (both 0 before the
    /// first block).
    next: u64,
    end: u64,
    /// The page size, known once the first block exists.
    page: u64,
    /// Each block's base, with the controller's live view of it when the mapper has one
    /// ([`crate::memory::MemoryMapper::working_memory_is_live`]).
    blocks: BTreeMap<u64, Option<u64>>,
}

impl CallStubs {
    /// The stub of `name`, if it has one.
    pub(crate) fn get(&self, name: &[u8]) -> Option<u64> {
        self.by_name.get(name).copied()
    }

    /// The slot a stub jumps through.
    pub(crate) fn slot(&self, stub: u64) -> u64 {
        stub + self.page
    }

    /// The stub of `name`, made (in a fresh block if need be) when it has none.
    pub(crate) fn stub_for(&mut self, name: &[u8], slab: &SlabAllocator) -> Result<u64> {
        if let Some(s) = self.get(name) {
            return Ok(s);
        }
        if self.next == self.end {
            let (base, page, view) = new_block(slab)?;
            (self.next, self.end, self.page) = (base, base + page, page);
            self.blocks.insert(base, view);
        }
        let stub = self.next;
        self.next += STUB_SIZE;
        self.by_name.insert(name.to_vec(), stub);
        Ok(stub)
    }
}

/// Where a session's call stubs lie, to make them again at the same addresses in a fresh
/// session (see [`CallStubs::restore`]).
#[derive(Debug, Clone, Default)]
pub struct StubLayout {
    by_name: Vec<(Vec<u8>, u64)>,
    next: u64,
    end: u64,
    blocks: Vec<u64>,
}

impl CallStubs {
    /// Where the stubs are.
    pub(crate) fn layout(&self) -> StubLayout {
        StubLayout {
            by_name: self.by_name.iter().map(|(n, &a)| (n.clone(), a)).collect(),
            next: self.next,
            end: self.end,
            blocks: self.blocks.keys().copied().collect(),
        }
    }

    /// Makes the blocks of `layout` again (in a session that has none yet), each at its old
    /// address when the slab has it free, else where the slab puts it; every name keeps its
    /// stub's place in its block, with slots empty until definitions arrive. Returns how many
    /// blocks moved.
    pub(crate) fn restore(&mut self, layout: &StubLayout, slab: &SlabAllocator) -> Result<usize> {
        let mut moved = BTreeMap::new();
        for &old in &layout.blocks {
            slab.place_next_at(Some(old))?;
            let made = new_block(slab);
            slab.place_next_at(None)?;
            let (base, page, view) = made?;
            self.page = page;
            self.blocks.insert(base, view);
            moved.insert(old, base);
        }
        let page = self.page;
        let at = |old: u64| -> u64 {
            match moved.range(..=old).next_back() {
                Some((&o, &n)) if old - o <= page => n + (old - o),
                _ => old,
            }
        };
        for (name, addr) in &layout.by_name {
            self.by_name.insert(name.clone(), at(*addr));
        }
        // `next` may equal its block's end: translate through the block's start.
        let block = layout.end.saturating_sub(page);
        (self.next, self.end) = (
            at(block) + layout.next.saturating_sub(block),
            at(block) + page,
        );
        if layout.blocks.is_empty() {
            (self.next, self.end) = (0, 0);
        }
        Ok(moved.iter().filter(|(o, n)| o != n).count())
    }
}

/// Allocates and finalizes a block: a page of stubs, then a page of zeroed slots. Returns
/// its base, the page size and the controller's live view of it, if any.
fn new_block(slab: &SlabAllocator) -> Result<(u64, u64, Option<u64>)> {
    let page = slab.mapper().page_size();
    let alloc = slab.allocate(2 * page)?;
    let disp = u32::try_from(page - 6).unwrap_or(0).to_le_bytes();
    let stub = [0xff, 0x25, disp[0], disp[1], disp[2], disp[3], 0xcc, 0xcc];
    for i in 0..page / STUB_SIZE {
        // SAFETY: `working` is the controller's writable view of the allocation's 2 pages;
        // the stubs fill the first page exactly.
        unsafe {
            let at = alloc.working.add((i * STUB_SIZE) as usize);
            std::ptr::copy_nonoverlapping(stub.as_ptr(), at, stub.len());
        }
    }
    let info = AllocInfo {
        mapping_base: alloc.base,
        segments: vec![
            SegmentInfo {
                offset: 0,
                content_size: page,
                zero_fill_size: 0,
                prot: Prot::READ_EXEC,
            },
            SegmentInfo {
                offset: page,
                content_size: 0,
                zero_fill_size: page,
                prot: Prot::READ_WRITE,
            },
        ],
        actions: Vec::new(),
        file_maps: Vec::new(),
        pipelined: false,
    };
    let base = alloc.base;
    let live = slab.mapper().working_memory_is_live();
    let view = live.then_some(alloc.working as u64);
    slab.finalize(alloc, &info)?;
    Ok((base, page, view))
}

impl CallStubs {
    /// Writes slot values (slot -> address): stores through the live view of their block
    /// where there is one, else one executor write per run of adjacent slots.
    pub(crate) fn write_slots(
        &self,
        executor: &dyn Executor,
        writes: &BTreeMap<u64, u64>,
    ) -> Result<()> {
        let mut remote: Vec<(u64, u64)> = Vec::new();
        for (&slot, &addr) in writes {
            match self.view_of(slot) {
                // SAFETY: `view` is the controller's mapping of the slot, an aligned word of
                // a block that stays mapped for the session's life; an aligned 8-byte store is
                // atomic, so code running meanwhile sees the old or the new target.
                Some(view) => unsafe {
                    (*(view as *const AtomicU64)).store(addr, Ordering::Release)
                },
                None => remote.push((slot, addr)),
            }
        }
        let mut i = 0;
        while i < remote.len() {
            let start = remote[i].0;
            let mut bytes = Vec::new();
            while i < remote.len() && remote[i].0 == start + bytes.len() as u64 {
                bytes.extend_from_slice(&remote[i].1.to_le_bytes());
                i += 1;
            }
            executor.write_memory(start, &bytes)?;
        }
        Ok(())
    }

    /// The controller's address of `slot`, when its block has a live view.
    fn view_of(&self, slot: u64) -> Option<u64> {
        let (&base, &view) = self.blocks.range(..=slot).next_back()?;
        let offset = slot.checked_sub(base)?;
        (offset < 2 * self.page).then_some(view?.checked_add(offset)?)
    }
}
