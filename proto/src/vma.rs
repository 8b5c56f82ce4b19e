//! Regions of a process address space (Linux's vmas): the types that cross the wire, and the
//! region list both the owner of a vRegion (its vma tree) and the pComponent (its cache of the
//! regions it needs for page tables) keep.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Protection of a page, as `mmap(2)` `PROT_*` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Prot(pub u32);

impl Prot {
    /// No access.
    pub const NONE: Prot = Prot(0);
    /// `PROT_READ`.
    pub const READ: Prot = Prot(libc::PROT_READ as u32);
    /// `PROT_WRITE`.
    pub const WRITE: Prot = Prot(libc::PROT_WRITE as u32);
    /// `PROT_EXEC`.
    pub const EXEC: Prot = Prot(libc::PROT_EXEC as u32);
    /// `PROT_READ | PROT_WRITE`.
    pub const RW: Prot = Prot((libc::PROT_READ | libc::PROT_WRITE) as u32);

    /// Whether user code may read (on x86 any access right implies read).
    pub fn readable(self) -> bool {
        self.0 & 7 != 0
    }
    /// Whether user code may write.
    pub fn writable(self) -> bool {
        self.0 & Self::WRITE.0 != 0
    }
    /// Whether user code may execute.
    pub fn executable(self) -> bool {
        self.0 & Self::EXEC.0 != 0
    }
    /// Both sets of rights.
    pub fn union(self, other: Prot) -> Prot {
        Prot(self.0 | other.0)
    }
    /// True when `self` allows something `new` does not.
    pub fn loses_rights_to(self, new: Prot) -> bool {
        (self.readable() && !new.readable())
            || (self.writable() && !new.writable())
            || (self.executable() && !new.executable())
    }
}

/// What a region holds (for `/proc`-style listings and traces; semantics are the same).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmaKind {
    /// A PT_LOAD segment of the executable.
    Image,
    /// The brk heap.
    Heap,
    /// The main thread's stack.
    Stack,
    /// Anonymous mmap.
    Anon,
    /// Private copy of a file (the vNode path).
    File(Vec<u8>),
}

/// One region `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    /// First byte (page aligned).
    pub start: u64,
    /// One past the last byte (page aligned).
    pub end: u64,
    /// Access rights.
    pub prot: Prot,
    /// What it holds.
    pub kind: VmaKind,
}

/// Non-overlapping regions keyed by start address.
#[derive(Default, Debug, Clone)]
pub struct VmaList {
    map: BTreeMap<u64, Vma>,
}

impl VmaList {
    /// The region containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.map.range(..=addr).next_back().map(|(_, v)| v).filter(|v| addr < v.end)
    }

    /// The parts of regions inside `[start, end)`, clipped to it.
    pub fn clipped(&self, start: u64, end: u64) -> Vec<Vma> {
        self.overlapping(start, end)
            .map(|v| Vma { start: v.start.max(start), end: v.end.min(end), ..v.clone() })
            .collect()
    }

    /// All regions in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.map.values()
    }

    /// Whether nothing overlaps `[start, end)`.
    pub fn is_free(&self, start: u64, end: u64) -> bool {
        !self.overlapping(start, end).any(|_| true)
    }

    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Vma> {
        let first = self.map.range(..start).next_back().filter(|(_, v)| v.end > start).map(|(_, v)| v);
        first.into_iter().chain(self.map.range(start..end).map(|(_, v)| v))
    }

    /// Whether every byte of `[start, end)` is in some region satisfying `ok`.
    pub fn covered(&self, start: u64, end: u64, ok: impl Fn(&Vma) -> bool) -> bool {
        let mut at = start;
        for v in self.overlapping(start, end) {
            if v.start > at || !ok(v) {
                return false;
            }
            at = v.end;
            if at >= end {
                return true;
            }
        }
        at >= end
    }

    /// Inserts a region over free space (callers remove what was there first), merging it with
    /// neighbours of the same protection and kind, as Linux merges vmas.
    pub fn insert(&mut self, mut vma: Vma) {
        debug_assert!(vma.start < vma.end && self.is_free(vma.start, vma.end));
        let same = |a: &Vma, b: &Vma| a.prot == b.prot && a.kind == b.kind;
        if let Some(prev) = self.map.range(..vma.start).next_back().map(|(_, v)| v.clone()) {
            if prev.end == vma.start && same(&prev, &vma) {
                self.map.remove(&prev.start);
                vma.start = prev.start;
            }
        }
        if let Some(next) = self.map.get(&vma.end).cloned() {
            if same(&next, &vma) {
                self.map.remove(&next.start);
                vma.end = next.end;
            }
        }
        self.map.insert(vma.start, vma);
    }

    /// Removes `[start, end)`, splitting regions at the edges; returns the pieces removed.
    pub fn remove(&mut self, start: u64, end: u64) -> Vec<Vma> {
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self.map.range(start..end).map(|(k, _)| *k).collect();
        keys.into_iter().filter_map(|k| self.map.remove(&k)).collect()
    }

    /// Splits the region containing `addr` (if any) so that a region starts at `addr`.
    fn split_at(&mut self, addr: u64) {
        let Some(v) = self.find(addr).cloned() else { return };
        if v.start == addr {
            return;
        }
        let mut hi = v.clone();
        hi.start = addr;
        self.map.get_mut(&v.start).expect("region just found").end = addr;
        self.map.insert(addr, hi);
    }

    /// Changes the protection of `[start, end)`, which must be fully covered; returns the old
    /// pieces (for deciding what to invalidate), or `None` (and changes nothing) on a hole.
    pub fn protect(&mut self, start: u64, end: u64, prot: Prot) -> Option<Vec<Vma>> {
        if !self.covered(start, end, |_| true) {
            return None;
        }
        self.split_at(start);
        self.split_at(end);
        let mut old = Vec::new();
        for (_, v) in self.map.range_mut(start..end) {
            old.push(v.clone());
            v.prot = prot;
        }
        Some(old)
    }

    /// Highest free gap of `len` bytes inside `[low, high)`, top-down like Linux's mmap.
    pub fn find_free_top_down(&self, len: u64, low: u64, high: u64) -> Option<u64> {
        let mut top = high;
        for v in self.map.range(..high).rev().map(|(_, v)| v) {
            if v.end <= top && top - v.end >= len && top - len >= low {
                return Some(top - len);
            }
            top = top.min(v.start);
            if top < low.saturating_add(len) {
                return None;
            }
        }
        (top >= low && top - low >= len).then(|| top - len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vma(s: u64, e: u64) -> Vma {
        Vma { start: s, end: e, prot: Prot::RW, kind: VmaKind::Anon }
    }

    #[test]
    fn split_protect_remove() {
        let mut l = VmaList::default();
        l.insert(vma(0x1000, 0x5000));
        let old = l.protect(0x2000, 0x3000, Prot::READ).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(l.iter().count(), 3);
        assert_eq!(l.find(0x2fff).unwrap().prot, Prot::READ);
        assert!(l.protect(0x4000, 0x6000, Prot::READ).is_none());
        let gone = l.remove(0x1800, 0x4800);
        assert_eq!(gone.iter().map(|v| v.end - v.start).sum::<u64>(), 0x3000);
        assert!(l.find(0x1000).is_some() && l.find(0x1800).is_none() && l.find(0x4800).is_some());
        assert!(l.covered(0x1000, 0x1800, |_| true) && !l.covered(0x1000, 0x1801, |_| true));
    }

    #[test]
    fn top_down_allocation() {
        let mut l = VmaList::default();
        l.insert(vma(0x8000, 0x9000));
        assert_eq!(l.find_free_top_down(0x1000, 0x1000, 0xa000), Some(0x9000));
        assert_eq!(l.find_free_top_down(0x2000, 0x1000, 0xa000), Some(0x6000));
        assert_eq!(l.find_free_top_down(0x8000, 0x1000, 0xa000), None);
    }

    #[test]
    fn adjacent_compatible_regions_merge() {
        let mut l = VmaList::default();
        l.insert(vma(0x1000, 0x2000));
        l.insert(vma(0x3000, 0x4000));
        l.insert(vma(0x2000, 0x3000));
        assert_eq!(l.iter().count(), 1);
        assert_eq!(l.find(0x1000).unwrap().end, 0x4000);
        l.insert(Vma { start: 0x4000, end: 0x5000, prot: Prot::READ, kind: VmaKind::Anon });
        assert_eq!(l.iter().count(), 2);
    }

    proptest! {
        // Any sequence of inserts/removes/protects keeps the list sorted and non-overlapping,
        // and find() agrees with a page-by-page model.
        #[test]
        fn model(ops in proptest::collection::vec((0u8..3, 0u64..64, 1u64..16), 1..60)) {
            let mut l = VmaList::default();
            let mut model = [None::<u32>; 80];
            for (op, s, n) in ops {
                let (s, e) = (s, (s + n).min(80));
                match op {
                    0 => { l.remove(s * 4096, e * 4096);
                           l.insert(vma(s * 4096, e * 4096));
                           for p in s..e { model[p as usize] = Some(3); } }
                    1 => { l.remove(s * 4096, e * 4096);
                           for p in s..e { model[p as usize] = None; } }
                    _ => { let full = (s..e).all(|p| model[p as usize].is_some());
                           prop_assert_eq!(l.protect(s * 4096, e * 4096, Prot::READ).is_some(), full);
                           if full { for p in s..e { model[p as usize] = Some(1); } } }
                }
            }
            let mut last_end = 0;
            for v in l.iter() { prop_assert!(v.start >= last_end && v.start < v.end); last_end = v.end; }
            for p in 0..80u64 {
                prop_assert_eq!(l.find(p * 4096 + 7).map(|v| v.prot.0), model[p as usize]);
            }
        }
    }
}
