//! The guest's 4-level page tables, kept by the VMM at 4 KB granularity.
//!
//! A user page is mapped to a *frame* of the ExCache (LegoOS tags its lines by virtual page the
//! same way): a resident line's leaf entry is present and holds the frame's guest-physical
//! address. A page that belongs to a region but is not resident has a non-present entry with the
//! software bit [`MAPPED`] and the region's rights, so a guest #PF on it is told apart from a
//! wild access with one look at the entry ([`Pte`]). When present bit is clear, the CPU and KVM
//! ignore every other bit, so the entry is free to carry this. A page of a `PROT_NONE` region
//! has no [`USER`] bit: resident or not, any access from user mode faults, and the fault is
//! told apart as a denied one by that bit.
//!
//! KVM's shadow MMU sets the accessed (A) bit of a present entry when it builds a shadow entry
//! for it, and the dirty (D) bit on the first write through it, with no exit to the VMM. The
//! ExCache reads them for replacement and dirty tracking, and so must change present entries
//! atomically ([`PageTables::entry`] gives the word). A VMM-side change that takes something
//! away (a right, A, D, the whole mapping) is seen by the guest only after a host-side
//! invalidation of the *frame* (see [`crate::memory::frame_pool::FramePool::invalidate`]); adding rights or
//! making an entry present needs nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::layout::{PAGE_SIZE, SYS_BASE};
use crate::sysmem::SysMem;

/// Present.
pub const PRESENT: u64 = 1;
/// Writable.
pub const WRITABLE: u64 = 1 << 1;
/// User-accessible: every page of a region but a `PROT_NONE` one.
pub const USER: u64 = 1 << 2;
/// Accessed: set by KVM when it builds a shadow entry for the page.
pub const ACCESSED: u64 = 1 << 5;
/// Dirty: set by KVM on the first write through the entry.
pub const DIRTY: u64 = 1 << 6;
/// Software bit (ignored by the CPU): the page belongs to a user region. A non-present entry
/// with it is a page that is not resident; without it, an address nothing is mapped at.
pub const MAPPED: u64 = 1 << 9;
/// Software bit: a present entry that maps a page of memory shared between processes
/// ([`crate::memory::shared`]), not a frame of the ExCache.
pub const SHARED: u64 = 1 << 10;
/// Software bit (ignored by the CPU and KVM: bits 52 to 58 of a leaf entry are free): the
/// entry's D bit was preset on a read, as a prediction ([`Pte::installed`]), not set by a write.
pub const PREDICTED: u64 = 1 << 52;
/// Software bits 53-54: the line's *write credit*, 0 to [`MAX_CREDIT`], kept across
/// residencies. A line with credit left is installed dirty even on a read miss: a line written
/// in its recent residencies is likely written again, and a preset D saves the write-protect
/// fault KVM takes to set it (~15 us here, `ptprobe`). A write seen renews the credit: D set by
/// KVM, or, for a predicted D, contents that changed (the ExCache keeps a digest of what such
/// a line came in with, and a write-back that finds them unchanged is skipped). A residency
/// that saw no write uses one up.
pub const CREDIT: u64 = MAX_CREDIT << CREDIT_SHIFT;
const CREDIT_SHIFT: u32 = 53;
/// The credit a write seen gives.
pub const MAX_CREDIT: u64 = 3;
/// No execute.
pub const NO_EXEC: u64 = 1 << 63;
/// The frame address bits.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

pub use lego_proto::vma::Prot;

/// A decoded leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pte(pub u64);

impl Pte {
    /// The entry of a page of a region with rights `prot`, not resident.
    pub fn absent(prot: Prot) -> Pte {
        Pte(MAPPED).with_rights(prot)
    }
    /// Whether the page belongs to a user region (resident or not).
    pub fn mapped(self) -> bool {
        self.0 & MAPPED != 0
    }
    /// The entry of a page of shared memory at guest-physical `gpa`, with rights `prot`:
    /// present from the start, A and D preset (nothing reads them).
    pub fn shared(gpa: u64, prot: Prot) -> Pte {
        Pte(MAPPED | SHARED | PRESENT | ACCESSED | DIRTY | (gpa & ADDR_MASK)).with_rights(prot)
    }
    /// Whether the entry maps shared memory rather than a line of the ExCache.
    pub fn is_shared(self) -> bool {
        self.0 & (PRESENT | SHARED) == PRESENT | SHARED
    }
    /// Whether the entry is a resident line of the ExCache (present, not shared).
    pub fn line(self) -> bool {
        self.0 & (PRESENT | SHARED) == PRESENT
    }
    /// Whether the line is resident.
    pub fn present(self) -> bool {
        self.0 & PRESENT != 0
    }
    /// Guest-physical address of the frame (meaningful when present).
    pub fn frame(self) -> u64 {
        self.0 & ADDR_MASK
    }
    /// Whether user mode may access the page at all (not `PROT_NONE`).
    pub fn user(self) -> bool {
        self.0 & USER != 0
    }
    /// Whether the guest may write the page.
    pub fn writable(self) -> bool {
        self.0 & WRITABLE != 0
    }
    /// Whether the guest may execute the page.
    pub fn executable(self) -> bool {
        self.0 & NO_EXEC == 0
    }
    /// Set by KVM since the bit was last cleared.
    pub fn accessed(self) -> bool {
        self.0 & ACCESSED != 0
    }
    /// Written since the bit was last cleared.
    pub fn dirty(self) -> bool {
        self.0 & DIRTY != 0
    }
    /// The same page made resident in `frame`: accessed if `accessed`, dirty if `dirty` (the
    /// write credit kept).
    pub fn resident(self, frame: u64, accessed: bool, dirty: bool) -> Pte {
        let kept = self.0 & (USER | WRITABLE | NO_EXEC | CREDIT);
        let mut e = MAPPED | PRESENT | kept | (frame & ADDR_MASK);
        if accessed {
            e |= ACCESSED;
        }
        if dirty {
            e |= DIRTY;
        }
        Pte(e)
    }
    /// Changes the entry in `word` by `f`, atomically against KVM's setting of A and D (a
    /// compare-exchange loop on the word), and returns the entry as it was.
    pub fn update(word: &AtomicU64, f: impl Fn(Pte) -> Pte) -> Pte {
        Pte(word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(f(Pte(v)).0)).unwrap_or_else(|v| v))
    }
    /// The line's write credit (see [`CREDIT`]).
    pub fn credit(self) -> u64 {
        (self.0 & CREDIT) >> CREDIT_SHIFT
    }
    /// Whether a line installed in this (absent) entry starts dirty: after a write miss
    /// (`written`), or when a write is predicted, because the caller expects one (`likely`: a
    /// writing stream) or the line has write credit left. Never for a read-only page.
    pub fn starts_dirty(self, written: bool, likely: bool) -> bool {
        written || (self.writable() && (likely || self.credit() > 0))
    }
    /// The same page made resident in `frame` by a miss (a write if `written`) or a prefetch
    /// (`likely`: of a writing stream), dirty as [`Pte::starts_dirty`] says; a D that no write
    /// set is marked [`PREDICTED`].
    pub fn installed(self, frame: u64, accessed: bool, written: bool, likely: bool) -> Pte {
        let e = self.resident(frame, accessed, self.starts_dirty(written, likely));
        if e.dirty() && !written {
            Pte(e.0 | PREDICTED)
        } else {
            e
        }
    }
    /// Whether the entry's D bit is a prediction ([`PREDICTED`]).
    pub fn predicted(self) -> bool {
        self.0 & PREDICTED != 0
    }
    /// The same entry with D cleared, as for a write-back, and its write credit brought up to
    /// date: a D KVM set renews it, a predicted D uses one up (until the write-back finds the
    /// line written, see [`Pte::renewed`]); from here on D is KVM's again.
    pub fn cleaned(self) -> Pte {
        let credit = if self.predicted() {
            self.credit().saturating_sub(1)
        } else if self.dirty() {
            MAX_CREDIT
        } else {
            self.credit()
        };
        Pte((self.0 & !(DIRTY | PREDICTED | CREDIT)) | credit << CREDIT_SHIFT)
    }
    /// The same entry with full write credit (a write was seen).
    pub fn renewed(self) -> Pte {
        Pte(self.0 | CREDIT)
    }
    /// The same page, no longer resident (rights and write credit kept, brought up to date as
    /// [`Pte::cleaned`] says; never a shared entry).
    pub fn evicted(self) -> Pte {
        Pte(self.cleaned().0 & (MAPPED | USER | WRITABLE | NO_EXEC | CREDIT))
    }
    /// The same entry with the rights of `prot` (frame, A and D kept).
    pub fn with_rights(self, prot: Prot) -> Pte {
        let mut e = self.0 & !(USER | WRITABLE | NO_EXEC);
        if prot.readable() {
            e |= USER;
        }
        if prot.writable() {
            e |= WRITABLE;
        }
        if !prot.executable() {
            e |= NO_EXEC;
        }
        Pte(e)
    }
}

/// The page-table tree rooted at one PML4 page in [`SysMem`], with the pool its table pages come
/// from.
pub struct PageTables {
    root: u64,
    next: u64,
    end: u64,
}

/// Page tables need more pages than the pool has: the region list is bigger than `--mem` allows.
#[derive(Debug, thiserror::Error)]
#[error("page-table pool exhausted")]
pub struct PoolExhausted;

impl PageTables {
    /// Creates an empty tree and maps the VMM-private slot: supervisor-only and non-executable,
    /// but for the stub page, which is read-only, executable and user-reachable (see
    /// [`crate::layout`]).
    pub fn new(sys: &SysMem) -> Result<PageTables, PoolExhausted> {
        let (next, end) = sys.pt_pool();
        let mut pt = PageTables { root: 0, next, end };
        pt.root = pt.alloc_page()?;
        let size = sys.size();
        let mut va = SYS_BASE;
        while va < SYS_BASE + size {
            let table = pt.leaf_table(sys, va, true)?.ok_or(PoolExhausted)?;
            let chunk_end = ((va | 0x1f_ffff) + 1).min(SYS_BASE + size);
            while va < chunk_end {
                let base = va | PRESENT | ACCESSED | DIRTY;
                let e = match crate::layout::user_sys_page(va) {
                    Some(true) => base | USER,
                    Some(false) => base | USER | NO_EXEC,
                    None => base | WRITABLE | NO_EXEC,
                };
                sys.write_u64(table + 8 * ((va >> 12) & 511), e);
                va += PAGE_SIZE;
            }
        }
        Ok(pt)
    }

    /// Guest-physical address of the PML4 (CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    fn alloc_page(&mut self) -> Result<u64, PoolExhausted> {
        if self.next + PAGE_SIZE > self.end {
            return Err(PoolExhausted);
        }
        let page = self.next;
        self.next += PAGE_SIZE;
        Ok(page)
    }

    /// Calls `f` with the leaf entry word of every page of `[start, end)` that has a leaf table;
    /// with `create`, tables are made for all of it first.
    pub fn for_each<'s>(
        &mut self,
        sys: &'s SysMem,
        start: u64,
        end: u64,
        create: bool,
        mut f: impl FnMut(u64, &'s AtomicU64),
    ) -> Result<(), PoolExhausted> {
        let mut va = start;
        while va < end {
            let chunk_end = ((va | 0x1f_ffff) + 1).min(end);
            match self.leaf_table(sys, va, create)? {
                Some(table) => {
                    while va < chunk_end {
                        f(va, sys.word(table + 8 * ((va >> 12) & 511)));
                        va += PAGE_SIZE;
                    }
                }
                None => va = chunk_end,
            }
        }
        Ok(())
    }

    /// The leaf entry word of `va`, if its leaf table exists.
    pub fn entry<'s>(&self, sys: &'s SysMem, va: u64) -> Option<&'s AtomicU64> {
        if va >= SYS_BASE {
            return None;
        }
        let mut table = self.root;
        for level in (1..4).rev() {
            let e = sys.read_u64(table + 8 * ((va >> (12 + 9 * level)) & 511));
            if e & PRESENT == 0 {
                return None;
            }
            table = e & ADDR_MASK;
        }
        Some(sys.word(table + 8 * ((va >> 12) & 511)))
    }

    /// The decoded leaf entry of `va` (0 where there is no table).
    pub fn pte(&self, sys: &SysMem, va: u64) -> Pte {
        Pte(self.entry(sys, va).map_or(0, |w| w.load(Ordering::Acquire)))
    }

    /// The leaf (level-1) table covering `va`, created on the way if `create`.
    fn leaf_table(&mut self, sys: &SysMem, va: u64, create: bool) -> Result<Option<u64>, PoolExhausted> {
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
            let page = self.alloc_page()?;
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

    fn set(pt: &mut PageTables, sys: &SysMem, start: u64, end: u64, prot: Prot) {
        pt.for_each(sys, start, end, true, |_, w| w.store(Pte::absent(prot).0, Ordering::Release)).unwrap();
    }

    #[test]
    fn absent_resident_evicted_roundtrip() {
        let sys = SysMem::new(64 << 20).unwrap();
        let mut pt = PageTables::new(&sys).unwrap();
        set(&mut pt, &sys, 0x40_0000, 0x40_3000, Prot::RW);
        let e = pt.pte(&sys, 0x40_1000);
        assert!(e.mapped() && !e.present() && e.writable() && !e.executable());
        assert!(!pt.pte(&sys, 0x40_3000).mapped());
        let r = e.resident(0x7000, true, false);
        assert!(r.present() && r.accessed() && !r.dirty() && r.writable());
        assert_eq!(r.frame(), 0x7000);
        assert_eq!(r.evicted(), e);
        let ro = r.with_rights(Prot(Prot::READ.0 | Prot::EXEC.0));
        assert!(!ro.writable() && ro.executable() && ro.present() && ro.frame() == 0x7000);
        // PROT_NONE: mapped, resident or not, and out of user mode's reach.
        let none = r.with_rights(Prot::NONE);
        assert!(none.present() && none.mapped() && !none.user() && !none.writable() && !none.executable());
        assert!(!Pte::absent(Prot::NONE).user() && Pte::absent(Prot::NONE).mapped());
        assert!(Pte::absent(Prot::NONE).resident(0x7000, true, false).0 & USER == 0);
        assert!(r.user() && e.user());
        // The private slot is mapped, but not for user mode, except the read-only stub page.
        assert!(!pt.pte(&sys, SYS_BASE).mapped());
        assert!(pt.entry(&sys, SYS_BASE).is_none());
    }

    #[test]
    fn write_credit_predicts_dirty_lines() {
        let frame = 0x7000;
        // A read miss of a line never written installs it clean; a write KVM marked gives it
        // full credit when it leaves.
        let e = Pte::absent(Prot::RW);
        let r = e.installed(frame, true, false, false);
        assert!(r.present() && !r.dirty() && !r.predicted());
        assert_eq!(r.evicted(), e, "no write, no credit");
        let mut e = Pte(r.0 | DIRTY).evicted();
        assert!(!e.present() && e.credit() == MAX_CREDIT);
        // Each residency with a predicted D spends one credit; then a read installs clean.
        for left in (0..MAX_CREDIT).rev() {
            let r = e.installed(frame, true, false, false);
            assert!(r.dirty() && r.predicted() && r.frame() == frame);
            e = r.evicted();
            assert_eq!(e.credit(), left);
        }
        let r = e.installed(frame, true, false, false);
        assert!(!r.dirty() && !r.predicted());
        // A write miss's D is the write's, not a prediction.
        let w = e.installed(frame, true, true, false);
        assert!(w.dirty() && !w.predicted());
        // A write-back mid-residency updates the credit and hands D back to KVM.
        let c = w.cleaned();
        assert!(c.present() && !c.dirty() && c.credit() == MAX_CREDIT);
        let p = c.evicted().installed(frame, true, false, false).cleaned();
        assert!(p.present() && !p.dirty() && !p.predicted() && p.credit() == MAX_CREDIT - 1);
        assert_eq!(p.evicted().credit(), MAX_CREDIT - 1, "nothing written since the write-back");
        assert_eq!(Pte(p.0 | DIRTY).evicted().credit(), MAX_CREDIT, "a write since it");
        assert_eq!(p.evicted().renewed().credit(), MAX_CREDIT, "a write the contents show");
        // Never on a read-only page; always for a writing stream.
        assert!(!c.with_rights(Prot::READ).evicted().installed(frame, true, false, true).dirty());
        assert!(Pte::absent(Prot::RW).installed(frame, true, false, true).predicted());
        assert_eq!(c.with_rights(Prot::RW).frame(), frame);
    }

    #[test]
    fn ranges_crossing_table_boundaries() {
        let sys = SysMem::new(1 << 30).unwrap();
        let mut pt = PageTables::new(&sys).unwrap();
        let (s, e) = (0x1ff000, 0x4000_3000);
        set(&mut pt, &sys, s, e, Prot::READ);
        for va in [s, 0x200000, 0x3fff_f000, e - 0x1000] {
            assert!(pt.pte(&sys, va).mapped(), "{va:#x}");
        }
        assert!(!pt.pte(&sys, e).mapped());
        assert!(!pt.pte(&sys, s - 0x1000).mapped());
        let mut n = 0;
        pt.for_each(&sys, 0, 1 << 31, false, |_, w| n += u64::from(Pte(w.load(Ordering::Relaxed)).mapped())).unwrap();
        assert_eq!(n, (e - s) / PAGE_SIZE);
    }
}
