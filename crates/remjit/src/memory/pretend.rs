//! `PretendMapper`: memory for links that never run (`-noexec -slab-address=ADDR`), placed at
//! chosen executor addresses so that linked bytes are reproducible. The working memory is the
//! controller's own; finalizing applies nothing and runs no action (the addresses are not
//! mapped in any process).

use std::collections::BTreeMap;
use std::sync::Mutex;

use memmap2::MmapMut;

use crate::error::{Error, Result};
use crate::memory::mapper::{AllocInfo, MemoryMapper};

/// Reservations at pretend addresses, backed by the controller's anonymous memory.
pub struct PretendMapper {
    state: Mutex<State>,
}

struct State {
    /// Where the next reservation goes.
    next: u64,
    /// Start -> backing memory.
    reservations: BTreeMap<u64, MmapMut>,
    /// Finalized allocations: base -> extent, zeroed again when freed.
    live: BTreeMap<u64, u64>,
}

impl PretendMapper {
    /// Reservations start at `address`, which must be page aligned.
    pub fn new(address: u64) -> Result<Self> {
        if !address.is_multiple_of(rustix::param::page_size() as u64) {
            return Err(Error::Usage(format!(
                "-slab-address {address:#x} is not a multiple of the page size ({})",
                rustix::param::page_size()
            )));
        }
        Ok(PretendMapper {
            state: Mutex::new(State {
                next: address,
                reservations: BTreeMap::new(),
                live: BTreeMap::new(),
            }),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Memory("mapper state poisoned".into()))
    }

    /// The backing bytes of `[addr, addr + len)`.
    fn with_range<T>(&self, addr: u64, len: u64, f: impl FnOnce(&mut [u8]) -> T) -> Result<T> {
        let mut st = self.lock()?;
        let (&start, map) = st
            .reservations
            .range_mut(..=addr)
            .next_back()
            .ok_or_else(|| Error::Memory(format!("{addr:#x} is not reserved")))?;
        let off = (addr - start) as usize;
        let end = off
            .checked_add(len as usize)
            .filter(|&e| e <= map.len())
            .ok_or_else(|| Error::Memory(format!("{addr:#x}+{len:#x} overruns its reservation")))?;
        Ok(f(&mut map[off..end]))
    }
}

impl MemoryMapper for PretendMapper {
    fn page_size(&self) -> u64 {
        rustix::param::page_size() as u64
    }

    fn reserve(&self, size: u64, _near: Option<u64>, _low: bool) -> Result<u64> {
        let mut st = self.lock()?;
        let at = st.next;
        let next = at
            .checked_add(size)
            .ok_or_else(|| Error::Memory(format!("-slab-address {at:#x} + {size:#x} overflows")))?;
        let len = usize::try_from(size).map_err(|_| Error::Memory("slab too large".into()))?;
        let map = MmapMut::map_anon(len)
            .map_err(|e| Error::Memory(format!("cannot reserve {size} bytes: {e}")))?;
        st.reservations.insert(at, map);
        st.next = next;
        Ok(at)
    }

    fn prepare(&self, addr: u64, len: u64) -> Result<*mut u8> {
        self.with_range(addr, len, |m| m.as_mut_ptr())
    }

    fn initialize(&self, info: &AllocInfo) -> Result<u64> {
        let extent = info.extent();
        self.lock()?.live.insert(info.mapping_base, extent);
        Ok(info.mapping_base)
    }

    fn deinitialize(&self, allocations: &[u64]) -> Result<()> {
        for base in allocations {
            let extent = self.lock()?.live.remove(base);
            if let Some(len) = extent {
                self.discard(*base, len)?;
            }
        }
        Ok(())
    }

    fn discard(&self, addr: u64, len: u64) -> Result<()> {
        self.with_range(addr, len, |m| m.fill(0))
    }

    fn release(&self, reservations: &[(u64, u64)]) -> Result<()> {
        let mut st = self.lock()?;
        for (start, _) in reservations {
            st.reservations.remove(start);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_sit_at_the_chosen_address() {
        let m = PretendMapper::new(0xfff0_0000).unwrap();
        let a = m.reserve(0x10000, None, true).unwrap();
        assert_eq!(a, 0xfff0_0000);
        let p = m.prepare(a + 0x1000, 0x1000).unwrap();
        // SAFETY: a page of the reservation's backing memory.
        unsafe { *p = 7 };
        assert_eq!(m.with_range(a + 0x1000, 1, |b| b[0]).unwrap(), 7);
        m.discard(a + 0x1000, 0x1000).unwrap();
        assert_eq!(m.with_range(a + 0x1000, 1, |b| b[0]).unwrap(), 0);
        assert!(m.prepare(a + 0xf000, 0x2000).is_err());
        assert_eq!(m.reserve(0x1000, None, true).unwrap(), 0xfff1_0000);
        assert!(PretendMapper::new(0x123).is_err());
    }
}
