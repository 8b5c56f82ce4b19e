//! The ExCache's frames and who holds them (LegoOS §4.3.2, §5.3): `lines` guest-physical 4 KB
//! frames split into sets of contiguous frames, virtually indexed (page number modulo the
//! number of sets; one set: fully associative). Each set has a free list and a CLOCK hand that
//! sweeps its frames in order, so the frames one sweep passes form at most two runs: one
//! invalidation each, however many lines the sweep evicts or re-arms.
//!
//! Pure bookkeeping: which frame holds which page, and where the hand is. Reading the accessed
//! bits and moving data is the cache's business ([`super`]).

use lego_proto::frame::MAX_RUN_PAGES;

use crate::layout::PAGE_SIZE;

const FREE: u64 = u64::MAX;

struct Set {
    first: u32,
    len: u32,
    /// Next frame the hand looks at, relative to `first`.
    hand: u32,
    free: Vec<u32>,
}

/// Where a prefetched line stands. It is installed with A preset, which lets one KVM shadow
/// fault fill its aligned neighbours, so A tells nothing until a sweep re-arms it; from then on
/// A set again says the program used it. A stream whose next miss comes past the line says so
/// too, at any time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefetch {
    /// Not prefetched, or judged already.
    No,
    /// Installed, A preset: not yet re-armed by a sweep.
    Fresh,
    /// A re-armed once: set again means used, clear at eviction means unused.
    Armed,
}

/// Why a line is taken into a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// A miss; a write miss installs the line dirty.
    Miss {
        /// The access was a write.
        write: bool,
    },
    /// Prefetch; a writing stream installs the line dirty.
    Prefetch {
        /// The stream writes.
        write: bool,
    },
}

/// Frames, sets and hands.
pub struct Frames {
    /// The page each frame holds (`FREE`: none).
    pages: Vec<u64>,
    /// Installed by prefetch, and not judged yet (see [`Prefetch`]).
    prefetched: Vec<Prefetch>,
    /// Installed dirty (a write miss, or a writing stream): its D bit is no first write.
    born_dirty: Vec<bool>,
    /// Digest of the contents a line installed dirty on a prediction came in with (see
    /// [`crate::memory::paging::CREDIT`]): a write-back finds it unwritten when they match.
    digests: Vec<u128>,
    sets: Vec<Set>,
    resident: usize,
}

/// Frames a sweep passed: `[first, first + len)` of frame numbers, as at most two runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Swept {
    /// Set the sweep ran in.
    pub set: usize,
    /// Position of the hand (relative to the set) where the sweep started.
    pub from: u32,
    /// Frames passed (at most the set's size).
    pub len: u32,
}

impl Frames {
    /// `lines` frames in sets of `ways` (0: one set of all of them). Where `lines` is not a
    /// multiple of `ways`, the remainder is spread one frame per set.
    pub fn new(lines: usize, ways: usize) -> Frames {
        let lines = lines.max(1);
        let ways = if ways == 0 { lines } else { ways.clamp(1, lines) };
        let nsets = (lines / ways).max(1);
        let sets = (0..nsets)
            .map(|i| {
                let first = (lines * i / nsets) as u32;
                let len = (lines * (i + 1) / nsets) as u32 - first;
                Set { first, len, hand: 0, free: (first..first + len).rev().collect() }
            })
            .collect();
        Frames { pages: vec![FREE; lines], prefetched: vec![Prefetch::No; lines], born_dirty: vec![false; lines], digests: vec![0; lines], sets, resident: 0 }
    }

    /// Number of frames.
    pub fn capacity(&self) -> usize {
        self.pages.len()
    }

    /// Frames holding a line.
    pub fn resident(&self) -> usize {
        self.resident
    }

    /// The set `page` is placed in.
    pub fn set_of(&self, page: u64) -> usize {
        ((page / PAGE_SIZE) % self.sets.len() as u64) as usize
    }

    /// Frames of set `set`.
    pub fn set_len(&self, set: usize) -> usize {
        self.sets[set].len as usize
    }

    /// Free frames in `page`'s set.
    pub fn free_in_set_of(&self, page: u64) -> usize {
        self.sets[self.set_of(page)].free.len()
    }

    /// Takes a free frame of `page`'s set for it; `None` when the set is full.
    pub fn take(&mut self, page: u64, install: Install) -> Option<u32> {
        let set = self.set_of(page);
        let f = self.sets[set].free.pop()?;
        self.pages[f as usize] = page;
        let (prefetch, dirty) = match install {
            Install::Miss { write } => (Prefetch::No, write),
            Install::Prefetch { write } => (Prefetch::Fresh, write),
        };
        self.prefetched[f as usize] = prefetch;
        self.born_dirty[f as usize] = dirty;
        self.resident += 1;
        Some(f)
    }

    /// Gives frame `f` back to its set's free list; returns the page it held.
    pub fn release(&mut self, f: u32) -> Option<u64> {
        let page = std::mem::replace(&mut self.pages[f as usize], FREE);
        if page == FREE {
            return None;
        }
        self.resident -= 1;
        let set = self.set_holding(f);
        self.sets[set].free.push(f);
        Some(page)
    }

    /// The page frame `f` holds.
    pub fn page(&self, f: u32) -> Option<u64> {
        Some(self.pages[f as usize]).filter(|&p| p != FREE)
    }

    /// Whether the line of frame `f` was installed dirty; clears it (the line is clean from
    /// its next write-back on).
    pub fn take_born_dirty(&mut self, f: u32) -> bool {
        std::mem::take(&mut self.born_dirty[f as usize])
    }

    /// Records `digest` as the contents the line of frame `f` came in with.
    pub fn set_digest(&mut self, f: u32, digest: u128) {
        self.digests[f as usize] = digest;
    }

    /// The digest [`Frames::set_digest`] recorded for frame `f`.
    pub fn digest(&self, f: u32) -> u128 {
        self.digests[f as usize]
    }

    /// Where the prefetched line of frame `f` stands.
    pub fn prefetch(&self, f: u32) -> Prefetch {
        self.prefetched[f as usize]
    }

    /// Sets where the prefetched line of frame `f` stands.
    pub fn set_prefetch(&mut self, f: u32, p: Prefetch) {
        self.prefetched[f as usize] = p;
    }

    /// Every (frame, page) pair whose page lies in `[start, end)`.
    pub fn in_range(&self, start: u64, end: u64) -> Vec<(u32, u64)> {
        (0..self.pages.len() as u32).filter_map(|f| self.page(f).filter(|p| (start..end).contains(p)).map(|p| (f, p))).collect()
    }

    /// Number of sets.
    pub fn sets(&self) -> usize {
        self.sets.len()
    }

    /// Lines one sweep of `set` evicts: a thirty-second of the set, at most `MAX_RUN_PAGES`.
    pub fn batch(&self, set: usize) -> usize {
        (self.sets[set].len as usize / 32).clamp(1, MAX_RUN_PAGES as usize)
    }

    /// The `n` frames of `set` the hand meets after the next `skip` (fewer if the set is
    /// smaller), in the order it meets them; the hand does not move.
    pub fn ahead(&self, set: usize, skip: usize, n: usize) -> impl Iterator<Item = u32> + use<> {
        let s = &self.sets[set];
        let (first, len, hand) = (s.first, s.len, s.hand);
        let n = n.min((len as usize).saturating_sub(skip)) as u32;
        (0..n).map(move |i| first + (hand + skip as u32 + i) % len)
    }

    /// Moves the hand of `set` one frame on and returns the frame it was on.
    pub fn advance(&mut self, set: usize) -> u32 {
        let s = &mut self.sets[set];
        let f = s.first + s.hand;
        s.hand = (s.hand + 1) % s.len;
        f
    }

    /// Where the hand of `set` is (for [`Swept::from`]).
    pub fn hand(&self, set: usize) -> u32 {
        self.sets[set].hand
    }

    /// The runs of frame numbers a sweep passed, as (first frame, frames).
    pub fn runs(&self, swept: Swept) -> Vec<(u32, u32)> {
        let s = &self.sets[swept.set];
        if swept.len == 0 {
            return Vec::new();
        }
        if swept.len >= s.len {
            return vec![(s.first, s.len)];
        }
        let tail = s.len - swept.from;
        if swept.len <= tail {
            vec![(s.first + swept.from, swept.len)]
        } else {
            vec![(s.first + swept.from, tail), (s.first, swept.len - tail)]
        }
    }

    fn set_holding(&self, f: u32) -> usize {
        self.sets.partition_point(|s| s.first + s.len <= f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_split_frames_contiguously() {
        let fr = Frames::new(100, 32);
        assert_eq!(fr.sets.len(), 3);
        assert_eq!(fr.sets.iter().map(|s| s.len).sum::<u32>(), 100);
        for (i, s) in fr.sets.iter().enumerate() {
            for f in s.first..s.first + s.len {
                assert_eq!(fr.set_holding(f), i);
            }
        }
        assert_eq!(Frames::new(64, 0).sets.len(), 1);
    }

    #[test]
    fn take_release_and_bound() {
        let mut fr = Frames::new(16, 0);
        let fs: Vec<u32> = (0..16).map(|i| fr.take(i * PAGE_SIZE, Install::Miss { write: false }).unwrap()).collect();
        assert_eq!(fr.resident(), 16);
        assert!(fr.take(99 * PAGE_SIZE, Install::Miss { write: false }).is_none(), "the bound holds");
        assert_eq!(fr.release(fs[3]), Some(3 * PAGE_SIZE));
        assert_eq!(fr.release(fs[3]), None);
        assert_eq!(fr.take(99 * PAGE_SIZE, Install::Prefetch { write: true }), Some(fs[3]));
        assert!(fr.take_born_dirty(fs[3]) && !fr.take_born_dirty(fs[3]));
        assert_eq!(fr.prefetch(fs[3]), Prefetch::Fresh);
        fr.set_prefetch(fs[3], Prefetch::Armed);
        assert_eq!(fr.prefetch(fs[3]), Prefetch::Armed);
        fr.release(fs[3]);
        assert_eq!(fr.take(98 * PAGE_SIZE, Install::Miss { write: false }), Some(fs[3]));
        assert_eq!(fr.prefetch(fs[3]), Prefetch::No);
        assert_eq!(fr.in_range(0, 2 * PAGE_SIZE).len(), 2);
    }

    #[test]
    fn a_sweep_is_at_most_two_runs() {
        let mut fr = Frames::new(10, 0);
        for _ in 0..7 {
            fr.advance(0);
        }
        let swept = Swept { set: 0, from: fr.hand(0), len: 5 };
        assert_eq!(fr.runs(swept), vec![(7, 3), (0, 2)]);
        assert_eq!(fr.runs(Swept { len: 3, ..swept }), vec![(7, 3)]);
        assert_eq!(fr.runs(Swept { len: 20, ..swept }), vec![(0, 10)]);
        assert_eq!(fr.runs(Swept { len: 0, ..swept }), vec![]);
    }
}
