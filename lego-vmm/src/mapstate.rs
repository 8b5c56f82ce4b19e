//! What a process's mappings carry beyond the memory itself: `mlock` accounting, and the
//! writable shared file mappings (`MAP_SHARED` with `PROT_WRITE`) that are written back to
//! their files on `msync`, `munmap`, `execve` and exit.
//!
//! A shared mapping's memory is the run's object of the file ([`crate::memory::shared`]), which
//! every process mapping the file sees at once. Each mapping keeps a copy of the file's bytes as
//! last read or written back, and write-back sends only the pages that differ from it. The
//! object is not coherent with `write` calls to the file while some process maps it: they reach
//! mappings made after the last one goes.

use std::sync::Arc;

use crate::fdtable::OpenFile;
use crate::layout::PAGE_SIZE;

/// One writable shared file mapping.
#[derive(Clone)]
pub struct SharedMap {
    pub start: u64,
    pub len: u64,
    pub file: Arc<OpenFile>,
    /// File offset of `start`.
    pub offset: u64,
    /// The bytes the file holds for the mapping as of the last read or write-back (zeroes past
    /// its end).
    pub clean: Vec<u8>,
}

impl SharedMap {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// `mlock` state and shared mappings of a process.
#[derive(Default)]
pub struct MapState {
    /// Locked ranges `[start, end)`, sorted and disjoint.
    locked: Vec<(u64, u64)>,
    /// `mlockall` flags (`MCL_FUTURE` locks what is mapped later).
    pub lock_all: i32,
    pub shared: Vec<SharedMap>,
}

impl MapState {
    /// The state a fork's child starts with: no locks (they are not inherited), the shared
    /// mappings (the child has a copy of their memory).
    pub fn forked(&self) -> MapState {
        MapState {
            locked: Vec::new(),
            lock_all: 0,
            shared: self.shared.clone(),
        }
    }

    /// Bytes locked (`VmLck`).
    pub fn locked_bytes(&self) -> u64 {
        self.locked.iter().map(|(s, e)| e - s).sum()
    }

    /// Locks (`on`) or unlocks `[start, end)`.
    pub fn set_locked(&mut self, start: u64, end: u64, on: bool) {
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.locked.len() + 2);
        for &(s, e) in &self.locked {
            if e <= start || s >= end {
                out.push((s, e));
                continue;
            }
            if s < start {
                out.push((s, start));
            }
            if e > end {
                out.push((end, e));
            }
        }
        if on {
            out.push((start, end));
        }
        out.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
        for (s, e) in out {
            match merged.last_mut() {
                Some(m) if s <= m.1 => m.1 = m.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.locked = merged;
    }

    /// Forgets every lock (`munlockall`, `execve`).
    pub fn unlock_all(&mut self) {
        self.locked.clear();
        self.lock_all = 0;
    }

    /// `[start, end)` was unmapped: locks there go, and so do shared mappings' parts (already
    /// written back), the rest of a split mapping staying.
    pub fn unmapped(&mut self, start: u64, end: u64) {
        self.set_locked(start, end, false);
        let mut out = Vec::with_capacity(self.shared.len() + 1);
        for m in self.shared.drain(..) {
            if m.end() <= start || m.start >= end {
                out.push(m);
                continue;
            }
            if m.start < start {
                let n = start - m.start;
                out.push(SharedMap {
                    len: n,
                    clean: m.clean[..n as usize].to_vec(),
                    ..m.clone()
                });
            }
            if m.end() > end {
                let skip = end - m.start;
                out.push(SharedMap {
                    start: end,
                    len: m.end() - end,
                    offset: m.offset + skip,
                    clean: m.clean[skip as usize..].to_vec(),
                    file: m.file.clone(),
                });
            }
        }
        self.shared = out;
    }
}

/// The page-aligned pieces `(offset in the mapping, length)` where `now` differs from `clean`.
pub fn dirty_pages(clean: &[u8], now: &[u8]) -> Vec<(usize, usize)> {
    let page = PAGE_SIZE as usize;
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, (a, b)) in clean.chunks(page).zip(now.chunks(page)).enumerate() {
        if a != b {
            let (at, len) = (i * page, b.len());
            match out.last_mut() {
                Some(last) if last.0 + last.1 == at => last.1 += len,
                _ => out.push((at, len)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_merge_split_and_count() {
        let mut m = MapState::default();
        m.set_locked(0x1000, 0x3000, true);
        m.set_locked(0x3000, 0x5000, true);
        assert_eq!(m.locked_bytes(), 0x4000);
        m.set_locked(0x2000, 0x3000, false);
        assert_eq!(m.locked, vec![(0x1000, 0x2000), (0x3000, 0x5000)]);
        m.unmapped(0x4000, 0x9000);
        assert_eq!(m.locked_bytes(), 0x2000);
        m.unlock_all();
        assert_eq!(m.locked_bytes(), 0);
    }

    #[test]
    fn only_changed_pages_are_dirty() {
        let page = PAGE_SIZE as usize;
        let clean = vec![0u8; 3 * page + 10];
        let mut now = clean.clone();
        assert!(dirty_pages(&clean, &now).is_empty());
        now[5] = 1;
        now[page + 7] = 1;
        now[3 * page + 9] = 1;
        assert_eq!(
            dirty_pages(&clean, &now),
            vec![(0, 2 * page), (3 * page, 10)]
        );
    }
}
