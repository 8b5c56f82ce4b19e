//! The guest's 4-level page tables, kept by the VMM at 4 KB granularity.
//!
//! User pages are identity mapped (virtual == physical), so a leaf entry only carries the
//! permission bits of the region it belongs to. Accessed and dirty bits are preset, so the guest
//! never writes to its own tables.
//!
//! KVM here shadows the guest tables and write-protects them against *guest* writes only, so a
//! VMM-side write that takes a permission away must be paired with a host-side invalidation of the
//! same range (see [`crate::user_mem::UserMemory::revoke`]); adding permissions needs nothing.

use crate::layout::{PAGE_SIZE, SYS_BASE};
use crate::sysmem::SysMem;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const NO_EXEC: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

pub use lego_proto::vma::Prot;

/// The page-table tree rooted at one PML4 page in [`SysMem`].
pub struct PageTables {
    root: u64,
}

/// Page tables need more pages than the pool has: the region list is bigger than `--mem` allows.
#[derive(Debug, thiserror::Error)]
#[error("page-table pool exhausted")]
pub struct PoolExhausted;

impl PageTables {
    /// Creates an empty tree and maps the VMM-private slot: supervisor-only and non-executable,
    /// but for the stub page, which is read-only, executable and user-reachable (see
    /// [`crate::layout`]).
    pub fn new(sys: &mut SysMem) -> Result<PageTables, PoolExhausted> {
        let root = sys.alloc_page().ok_or(PoolExhausted)?;
        let mut pt = PageTables { root };
        let size = sys.size();
        pt.set_range(sys, SYS_BASE, SYS_BASE + size, |va| {
            let base = va | PRESENT | ACCESSED | DIRTY;
            if va == crate::layout::STUB_PAGE {
                base | USER
            } else {
                base | WRITABLE | NO_EXEC
            }
        })?;
        Ok(pt)
    }

    /// Guest-physical address of the PML4 (CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Maps `[start, end)` for user mode with `prot` (`PROT_NONE` unmaps).
    pub fn map_user(&mut self, sys: &mut SysMem, start: u64, end: u64, prot: Prot) -> Result<(), PoolExhausted> {
        if !prot.readable() {
            self.unmap(sys, start, end);
            return Ok(());
        }
        let mut flags = PRESENT | USER | ACCESSED | DIRTY;
        if prot.writable() {
            flags |= WRITABLE;
        }
        if !prot.executable() {
            flags |= NO_EXEC;
        }
        self.set_range(sys, start, end, |va| va | flags)
    }

    /// Clears the leaf entries of `[start, end)`. Tables are kept (they are cheap and reused).
    pub fn unmap(&mut self, sys: &mut SysMem, start: u64, end: u64) {
        let mut va = start;
        while va < end {
            match self.leaf_table(sys, va, false) {
                Ok(Some(table)) => {
                    let chunk_end = ((va | 0x1f_ffff) + 1).min(end);
                    while va < chunk_end {
                        sys.write_u64(table + 8 * ((va >> 12) & 511), 0);
                        va += PAGE_SIZE;
                    }
                }
                _ => va = (va | 0x1f_ffff) + 1,
            }
        }
    }

    /// The leaf entry's (physical address, prot) for `va`, if mapped for user mode.
    pub fn translate(&self, sys: &SysMem, va: u64) -> Option<(u64, Prot)> {
        let mut table = self.root;
        for level in (1..4).rev() {
            let e = sys.read_u64(table + 8 * ((va >> (12 + 9 * level)) & 511));
            if e & PRESENT == 0 {
                return None;
            }
            table = e & ADDR_MASK;
        }
        let e = sys.read_u64(table + 8 * ((va >> 12) & 511));
        if e & PRESENT == 0 || e & USER == 0 {
            return None;
        }
        let mut p = Prot::READ;
        if e & WRITABLE != 0 {
            p = p.union(Prot::WRITE);
        }
        if e & NO_EXEC == 0 {
            p = p.union(Prot::EXEC);
        }
        Some((e & ADDR_MASK, p))
    }

    fn set_range(
        &mut self,
        sys: &mut SysMem,
        start: u64,
        end: u64,
        entry: impl Fn(u64) -> u64,
    ) -> Result<(), PoolExhausted> {
        let mut va = start;
        while va < end {
            let table = self.leaf_table(sys, va, true)?.ok_or(PoolExhausted)?;
            let chunk_end = ((va | 0x1f_ffff) + 1).min(end);
            while va < chunk_end {
                sys.write_u64(table + 8 * ((va >> 12) & 511), entry(va));
                va += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// The leaf (level-1) table covering `va`, created on the way if `create`.
    fn leaf_table(&mut self, sys: &mut SysMem, va: u64, create: bool) -> Result<Option<u64>, PoolExhausted> {
        let mut table = self.root;
        for level in (1..4).rev() {
            let slot = table + 8 * ((va >> (12 + 9 * level)) & 511);
            let e = sys.read_u64(slot);
            if e & PRESENT != 0 {
                table = e & ADDR_MASK;
                continue;
            }
            if !create {
                return Ok(None);
            }
            let page = sys.alloc_page().ok_or(PoolExhausted)?;
            // Intermediate levels allow everything; the leaf decides.
            sys.write_u64(slot, page | PRESENT | WRITABLE | USER | ACCESSED);
            table = page;
        }
        Ok(Some(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_protect_unmap_roundtrip() {
        let mut sys = SysMem::new(64 << 20).unwrap();
        let mut pt = PageTables::new(&mut sys).unwrap();
        pt.map_user(&mut sys, 0x40_0000, 0x40_3000, Prot::RW).unwrap();
        assert_eq!(pt.translate(&sys, 0x40_1000), Some((0x40_1000, Prot::RW)));
        assert_eq!(pt.translate(&sys, 0x40_3000), None);
        pt.map_user(&mut sys, 0x40_1000, 0x40_2000, Prot(Prot::READ.0 | Prot::EXEC.0)).unwrap();
        assert_eq!(pt.translate(&sys, 0x40_1000).unwrap().1, Prot(5));
        pt.unmap(&mut sys, 0x40_0000, 0x40_2000);
        assert_eq!(pt.translate(&sys, 0x40_0000), None);
        assert!(pt.translate(&sys, 0x40_2000).is_some());
        // The private slot is mapped, but not for user mode, except the read-only stub page.
        assert_eq!(pt.translate(&sys, SYS_BASE), None);
        assert_eq!(pt.translate(&sys, crate::layout::STUB_PAGE).map(|e| e.1), Some(Prot(5)));
    }

    #[test]
    fn ranges_crossing_table_boundaries() {
        let mut sys = SysMem::new(1 << 30).unwrap();
        let mut pt = PageTables::new(&mut sys).unwrap();
        let (s, e) = (0x1ff000, 0x4000_3000);
        pt.map_user(&mut sys, s, e, Prot::READ).unwrap();
        for va in [s, 0x200000, 0x3fff_f000, e - 0x1000] {
            assert!(pt.translate(&sys, va).is_some(), "{va:#x}");
        }
        assert!(pt.translate(&sys, e).is_none());
        assert!(pt.translate(&sys, s - 0x1000).is_none());
    }
}
