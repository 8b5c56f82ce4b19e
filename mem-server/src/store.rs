//! The page store of a mem-server: a hash table from (process, page address) to a frame.
//!
//! Frames live in an arena grown lazily in chunks up to the capacity, so a server configured for
//! many gigabytes only takes host memory as pages are written. A frame is allocated the first time
//! a page is flushed (physical allocation on write, LegoOS §4.4.2); reading a page that was never
//! written gives zeroes without allocating anything. The fetch and flush paths never allocate:
//! the table is reserved for every frame the arena holds whenever the arena grows.

use std::collections::HashMap;

use lego_proto::frame::PAGE_SIZE;

/// One 4 KB frame.
pub type Page = [u8; PAGE_SIZE];

/// Frames per arena chunk (2 MiB).
const CHUNK_FRAMES: usize = 512;

/// Pages handed out, with their addresses, lowest first, and whether more remain.
pub type PageBatch = (Vec<(u64, Vec<u8>)>, bool);

/// A page of zeroes, what a page never written reads as.
pub const ZERO_PAGE: Page = [0; PAGE_SIZE];

/// Whether `addr` is the first byte of a page.
pub fn page_aligned(addr: u64) -> bool {
    addr & (PAGE_SIZE as u64 - 1) == 0
}

/// The store is full: no frame is left for a new page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no free frame left (capacity reached)")]
pub struct NoSpace;

/// Pages of all processes this server stores.
pub struct PageStore {
    capacity: usize,
    chunks: Vec<Box<[Page]>>,
    /// Frames allocated in `chunks` and not in use.
    free: Vec<u32>,
    map: HashMap<(u64, u64), u32>,
}

impl PageStore {
    /// A store of at most `capacity_pages` frames (at most `u32::MAX`; more is clamped).
    pub fn new(capacity_pages: u64) -> PageStore {
        let capacity = capacity_pages.min(u64::from(u32::MAX)) as usize;
        PageStore { capacity, chunks: Vec::new(), free: Vec::new(), map: HashMap::new() }
    }

    /// Frames the store may hold.
    pub fn capacity_pages(&self) -> u64 {
        self.capacity as u64
    }

    /// Frames holding a page.
    pub fn used_pages(&self) -> u64 {
        self.map.len() as u64
    }

    /// Frames the arena has allocated from the host so far.
    pub fn arena_pages(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }

    /// Whether `n` more pages fit.
    pub fn can_hold(&self, n: u64) -> bool {
        self.used_pages().saturating_add(n) <= self.capacity_pages()
    }

    fn frame(&self, f: u32) -> &Page {
        let f = f as usize;
        &self.chunks[f / CHUNK_FRAMES][f % CHUNK_FRAMES]
    }

    fn frame_mut(&mut self, f: u32) -> &mut Page {
        let f = f as usize;
        &mut self.chunks[f / CHUNK_FRAMES][f % CHUNK_FRAMES]
    }

    /// Takes a free frame, growing the arena by one chunk if needed.
    fn alloc(&mut self) -> Result<u32, NoSpace> {
        if let Some(f) = self.free.pop() {
            return Ok(f);
        }
        let have = self.chunks.len() * CHUNK_FRAMES;
        let n = CHUNK_FRAMES.min(self.capacity.saturating_sub(have));
        if n == 0 {
            return Err(NoSpace);
        }
        self.chunks.push(vec![ZERO_PAGE; n].into_boxed_slice());
        // Reserve for every frame the arena now holds, so inserts never allocate.
        self.map.reserve((have + n).saturating_sub(self.map.len()));
        self.free.reserve(n);
        // Lowest index on top of the stack.
        self.free.extend((have as u32..(have + n) as u32).rev());
        self.free.pop().ok_or(NoSpace)
    }

    /// The stored page at `addr`, or `None` if it was never written (it reads as zeroes).
    pub fn read(&self, proc: u64, addr: u64) -> Option<&Page> {
        self.map.get(&(proc, addr)).map(|&f| self.frame(f))
    }

    /// Stores `data` (one page) at `addr`, allocating a frame if the page had none.
    pub fn write(&mut self, proc: u64, addr: u64, data: &Page) -> Result<(), NoSpace> {
        let f = match self.map.get(&(proc, addr)) {
            Some(&f) => f,
            None => {
                let f = self.alloc()?;
                self.map.insert((proc, addr), f);
                f
            }
        };
        self.frame_mut(f).copy_from_slice(data);
        Ok(())
    }

    /// Keys of the stored pages of `proc` in `[start, end)`, in address order. Walks whichever
    /// is smaller, the range page by page or the whole table.
    fn keys_in(&self, proc: u64, start: u64, end: u64) -> Vec<u64> {
        let span = end.saturating_sub(start) / PAGE_SIZE as u64;
        if span <= self.map.len() as u64 {
            (0..span).map(|i| start + i * PAGE_SIZE as u64).filter(|a| self.map.contains_key(&(proc, *a))).collect()
        } else {
            let mut keys: Vec<u64> =
                self.map.keys().filter(|(p, a)| *p == proc && (start..end).contains(a)).map(|(_, a)| *a).collect();
            keys.sort_unstable();
            keys
        }
    }

    /// Frees the pages of `proc` in `[start, end)`; returns how many there were.
    pub fn free_range(&mut self, proc: u64, start: u64, end: u64) -> u64 {
        let keys = self.keys_in(proc, start, end);
        for a in &keys {
            if let Some(f) = self.map.remove(&(proc, *a)) {
                self.free.push(f);
            }
        }
        keys.len() as u64
    }

    /// Moves the pages of `proc` at `[from, from+len)` to `[to, to+len)`; pages that were at the
    /// destination are freed first. The frames themselves stay where they are.
    pub fn rekey(&mut self, proc: u64, from: u64, to: u64, len: u64) {
        let moved: Vec<(u64, u32)> = self
            .keys_in(proc, from, from.saturating_add(len))
            .into_iter()
            .filter_map(|a| self.map.remove(&(proc, a)).map(|f| (a, f)))
            .collect();
        self.free_range(proc, to, to.saturating_add(len));
        for (a, f) in moved {
            self.map.insert((proc, a - from + to), f);
        }
    }

    /// Removes up to `max` stored pages of `proc` in `[start, end)`, lowest first, returning
    /// their addresses and contents and whether more remain.
    pub fn take(&mut self, proc: u64, start: u64, end: u64, max: usize) -> PageBatch {
        let keys = self.keys_in(proc, start, end);
        let more = keys.len() > max;
        let mut out = Vec::with_capacity(keys.len().min(max));
        for a in keys.into_iter().take(max) {
            if let Some(f) = self.map.remove(&(proc, a)) {
                out.push((a, self.frame(f).to_vec()));
                self.free.push(f);
            }
        }
        (out, more)
    }

    /// Copies of the stored pages of `proc` in `[start, end)`, at most `max`, lowest first, and
    /// whether more remain; the pages stay stored.
    pub fn copy_out(&self, proc: u64, start: u64, end: u64, max: usize) -> PageBatch {
        let keys = self.keys_in(proc, start, end);
        let more = keys.len() > max;
        let out = keys.into_iter().take(max).filter_map(|a| self.map.get(&(proc, a)).map(|&f| (a, self.frame(f).to_vec()))).collect();
        (out, more)
    }

    /// Copies every stored page of `parent` to `child` (a fork): all or none. Pages `child`
    /// already had are replaced.
    pub fn copy_process(&mut self, parent: u64, child: u64) -> Result<u64, NoSpace> {
        let keys: Vec<(u64, u32)> = self.map.iter().filter(|((p, _), _)| *p == parent).map(|((_, a), f)| (*a, *f)).collect();
        let new = keys.iter().filter(|(a, _)| !self.map.contains_key(&(child, *a))).count() as u64;
        if !self.can_hold(new) {
            return Err(NoSpace);
        }
        for (addr, from) in &keys {
            let to = match self.map.get(&(child, *addr)) {
                Some(&f) => f,
                None => {
                    let f = self.alloc()?;
                    self.map.insert((child, *addr), f);
                    f
                }
            };
            let page = *self.frame(*from);
            self.frame_mut(to).copy_from_slice(&page);
        }
        Ok(keys.len() as u64)
    }

    /// Frees every page of `proc`; returns how many there were.
    pub fn release(&mut self, proc: u64) -> u64 {
        let before = self.map.len();
        let free = &mut self.free;
        self.map.retain(|(p, _), f| {
            if *p == proc {
                free.push(*f);
                false
            } else {
                true
            }
        });
        (before - self.map.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE as u64;

    fn page(b: u8) -> Page {
        [b; PAGE_SIZE]
    }

    #[test]
    fn a_copied_process_has_its_own_frames() {
        let mut s = PageStore::new(5);
        s.write(1, 0x1000, &page(1)).unwrap();
        s.write(1, 0x2000, &page(2)).unwrap();
        assert_eq!(s.copy_process(1, 2), Ok(2));
        s.write(1, 0x1000, &page(9)).unwrap();
        assert_eq!(s.read(2, 0x1000).unwrap()[0], 1, "the parent's later write is not the child's");
        assert_eq!(s.read(2, 0x2000).unwrap()[0], 2);
        assert_eq!(s.copy_process(1, 3), Err(NoSpace), "only one frame left for two pages");
        assert!(s.read(3, 0x1000).is_none(), "all or none");
    }

    #[test]
    fn frames_are_allocated_on_first_write_only() {
        let mut s = PageStore::new(1 << 20);
        assert!(s.read(1, 0x1000).is_none());
        assert_eq!((s.used_pages(), s.arena_pages()), (0, 0), "reading allocates nothing");
        s.write(1, 0x1000, &page(7)).unwrap();
        assert_eq!((s.used_pages(), s.arena_pages()), (1, CHUNK_FRAMES as u64));
        s.write(1, 0x1000, &page(8)).unwrap();
        assert_eq!(s.used_pages(), 1, "rewriting reuses the frame");
        assert_eq!(s.read(1, 0x1000).unwrap()[0], 8);
        assert!(s.read(2, 0x1000).is_none(), "processes are separate");
    }

    #[test]
    fn capacity_is_enforced_and_freed_frames_reused() {
        let mut s = PageStore::new(3);
        for i in 0..3 {
            s.write(1, i * P, &page(i as u8)).unwrap();
        }
        assert_eq!(s.write(1, 3 * P, &page(9)), Err(NoSpace));
        assert_eq!(s.arena_pages(), 3, "the last chunk is cut at capacity");
        s.write(1, 2 * P, &page(5)).unwrap();
        assert_eq!(s.free_range(1, P, 2 * P), 1);
        s.write(1, 3 * P, &page(9)).unwrap();
        assert_eq!(s.read(1, 3 * P).unwrap()[0], 9);
        assert_eq!(s.read(1, 0).unwrap()[0], 0);
        assert!(s.read(1, P).is_none());
    }

    #[test]
    fn free_rekey_take_release() {
        let mut s = PageStore::new(1000);
        for i in 0..10u64 {
            s.write(1, 0x10_0000 + i * P, &page(i as u8 + 1)).unwrap();
            s.write(2, 0x10_0000 + i * P, &page(100)).unwrap();
        }
        s.write(1, 0x20_0000, &page(0xee)).unwrap();
        // Re-key 4 pages onto a range that held one page: that page is freed.
        s.rekey(1, 0x10_0000, 0x20_0000, 4 * P);
        assert_eq!(s.read(1, 0x20_0000 + 3 * P).unwrap()[0], 4);
        assert_eq!(s.read(1, 0x20_0000).unwrap()[0], 1);
        assert!(s.read(1, 0x10_0000).is_none());
        assert_eq!(s.used_pages(), 20);
        let (pages, more) = s.take(1, 0x10_0000, 0x20_0000, 4);
        assert!(more);
        assert_eq!(
            pages.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            (4..8).map(|i| 0x10_0000 + i * P).collect::<Vec<_>>()
        );
        assert_eq!(pages[0].1[0], 5);
        let (pages, more) = s.take(1, 0x10_0000, 0x20_0000, 4);
        assert_eq!((pages.len(), more), (2, false));
        // A huge range walks the table instead of the range.
        assert_eq!(s.free_range(1, 0, u64::MAX - P), 4);
        assert_eq!(s.release(2), 10);
        assert_eq!(s.used_pages(), 0);
    }
}
