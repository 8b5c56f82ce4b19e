//! The ExCache's bookkeeping, organised as LegoOS organises it (§4.3.2, §5.3): a fixed number of
//! line slots, virtually indexed sets of `ways` lines each (one more where the size is not a
//! multiple), a free list of slots, and per set a queue in replacement order (insertion order for
//! FIFO, recency for LRU).
//!
//! Pure data structure: it says which line to evict; moving pages is the handler's business.

use std::collections::HashMap;

/// Replacement policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Evict the line that was installed first.
    Fifo,
    /// Evict the line used least recently, as far as the VMM sees uses: installs and first
    /// writes (hits on resident lines never leave the guest, so they are not seen).
    Lru,
}

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Line {
    page: u64,
    dirty: bool,
    /// Installed by prefetch, and not known to be used yet.
    prefetched: bool,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy)]
struct Set {
    head: u32,
    tail: u32,
    used: u32,
    /// Lines this set may hold: `ways`, or one more where the line count is not a multiple.
    capacity: u32,
}

/// A resident line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resident {
    /// Guest address of the page.
    pub page: u64,
    /// Written since it was installed (its remote copy, if any, is stale).
    pub dirty: bool,
}

/// The line slots, sets and lookup index.
pub struct Sets {
    lines: Vec<Line>,
    free: Vec<u32>,
    sets: Vec<Set>,
    index: HashMap<u64, u32>,
    policy: Policy,
}

impl Sets {
    /// `lines` slots in `lines / ways` sets (at least one). Every line is used: when `lines` is
    /// not a multiple of `ways`, the remainder is spread one line per set, so a set holds
    /// `ways` or `ways + 1` lines (and fewer lines than ways make one set of all of them).
    pub fn new(lines: usize, ways: usize, policy: Policy) -> Sets {
        let lines = lines.max(1);
        let nsets = (lines / ways.clamp(1, lines)).max(1);
        let sets = (0..nsets)
            .map(|i| {
                let capacity = (lines * (i + 1) / nsets - lines * i / nsets) as u32;
                Set { head: NIL, tail: NIL, used: 0, capacity }
            })
            .collect();
        Sets {
            lines: vec![Line { page: 0, dirty: false, prefetched: false, prev: NIL, next: NIL }; lines],
            free: (0..lines as u32).rev().collect(),
            sets,
            index: HashMap::with_capacity(lines),
            policy,
        }
    }

    /// Total lines.
    pub fn capacity(&self) -> usize {
        self.lines.len()
    }

    /// Lines resident now.
    pub fn resident(&self) -> usize {
        self.index.len()
    }

    fn set_of(&self, page: u64) -> usize {
        ((page >> 12) % self.sets.len() as u64) as usize
    }

    /// The line holding `page`, if resident.
    pub fn get(&self, page: u64) -> Option<Resident> {
        self.index.get(&page).map(|&i| {
            let l = &self.lines[i as usize];
            Resident { page: l.page, dirty: l.dirty }
        })
    }

    /// The line `page` must replace before it can be installed: `None` if its set has room.
    pub fn victim_for(&self, page: u64) -> Option<Resident> {
        let set = &self.sets[self.set_of(page)];
        (set.used >= set.capacity).then(|| {
            let l = &self.lines[set.head as usize];
            Resident { page: l.page, dirty: l.dirty }
        })
    }

    /// Installs `page` (not resident, its set not full) from the free list.
    pub fn insert(&mut self, page: u64, dirty: bool) {
        self.insert_line(page, dirty, false);
    }

    /// Installs `page` like [`Sets::insert`], marked as prefetched until
    /// [`Sets::take_prefetched`].
    pub fn insert_prefetched(&mut self, page: u64, dirty: bool) {
        self.insert_line(page, dirty, true);
    }

    /// Whether `page` is resident and still marked prefetched; clears the mark.
    pub fn take_prefetched(&mut self, page: u64) -> bool {
        match self.index.get(&page) {
            Some(&slot) => std::mem::take(&mut self.lines[slot as usize].prefetched),
            None => false,
        }
    }

    fn insert_line(&mut self, page: u64, dirty: bool, prefetched: bool) {
        debug_assert!(!self.index.contains_key(&page) && self.victim_for(page).is_none());
        let slot = self.free.pop().expect("a set with room implies a free slot");
        self.lines[slot as usize] = Line { page, dirty, prefetched, prev: NIL, next: NIL };
        self.index.insert(page, slot);
        let s = self.set_of(page);
        self.link_tail(s, slot);
        self.sets[s].used += 1;
    }

    /// Removes `page` and returns its slot to the free list.
    pub fn remove(&mut self, page: u64) -> Option<Resident> {
        let slot = self.index.remove(&page)?;
        let s = self.set_of(page);
        self.unlink(s, slot);
        self.sets[s].used -= 1;
        self.free.push(slot);
        let l = &self.lines[slot as usize];
        Some(Resident { page: l.page, dirty: l.dirty })
    }

    /// Marks `page` dirty; under LRU a write is also a use.
    pub fn mark_dirty(&mut self, page: u64) {
        if let Some(&slot) = self.index.get(&page) {
            self.lines[slot as usize].dirty = true;
            self.touch(page);
        }
    }

    /// Records a use of `page`: under LRU it moves to the back of its set's queue.
    pub fn touch(&mut self, page: u64) {
        if self.policy != Policy::Lru {
            return;
        }
        if let Some(&slot) = self.index.get(&page) {
            let s = self.set_of(page);
            self.unlink(s, slot);
            self.link_tail(s, slot);
        }
    }

    /// Resident lines in `[start, end)`.
    pub fn in_range(&self, start: u64, end: u64) -> Vec<Resident> {
        let pages = (end.saturating_sub(start)) / 4096;
        if pages <= self.index.len() as u64 {
            (0..pages).filter_map(|i| self.get(start + i * 4096)).collect()
        } else {
            let mut v: Vec<Resident> =
                self.index.keys().filter(|&&p| p >= start && p < end).filter_map(|&p| self.get(p)).collect();
            v.sort_by_key(|r| r.page);
            v
        }
    }

    /// Lines in the order they would be replaced within the set of `page`.
    pub fn queue_of(&self, page: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut at = self.sets[self.set_of(page)].head;
        while at != NIL {
            out.push(self.lines[at as usize].page);
            at = self.lines[at as usize].next;
        }
        out
    }

    fn link_tail(&mut self, s: usize, slot: u32) {
        let tail = self.sets[s].tail;
        self.lines[slot as usize].prev = tail;
        self.lines[slot as usize].next = NIL;
        if tail == NIL {
            self.sets[s].head = slot;
        } else {
            self.lines[tail as usize].next = slot;
        }
        self.sets[s].tail = slot;
    }

    fn unlink(&mut self, s: usize, slot: u32) {
        let Line { prev, next, .. } = self.lines[slot as usize];
        if prev == NIL {
            self.sets[s].head = next;
        } else {
            self.lines[prev as usize].next = next;
        }
        if next == NIL {
            self.sets[s].tail = prev;
        } else {
            self.lines[next as usize].prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: u64 = 4096;

    #[test]
    fn fifo_evicts_oldest_of_the_set() {
        // 4 lines, 2 ways: 2 sets; pages 0,2,4.. go to set 0.
        let mut s = Sets::new(4, 2, Policy::Fifo);
        s.insert(0, false);
        s.insert(2 * P, true);
        assert_eq!(s.victim_for(P), None, "set 1 is empty");
        assert_eq!(s.victim_for(4 * P), Some(Resident { page: 0, dirty: false }));
        s.touch(0);
        assert_eq!(s.victim_for(4 * P).unwrap().page, 0, "FIFO ignores uses");
        s.remove(0);
        s.insert(4 * P, false);
        assert_eq!(s.queue_of(0), vec![2 * P, 4 * P]);
        assert_eq!(s.in_range(0, 8 * P).len(), 2);
    }

    #[test]
    fn the_prefetched_mark_is_taken_once() {
        let mut s = Sets::new(4, 2, Policy::Fifo);
        s.insert_prefetched(P, false);
        s.insert(0, false);
        assert!(!s.take_prefetched(0) && !s.take_prefetched(2 * P));
        assert!(s.take_prefetched(P));
        assert!(!s.take_prefetched(P), "cleared");
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut s = Sets::new(2, 2, Policy::Lru);
        s.insert(0, false);
        s.insert(P, false);
        s.touch(0);
        assert_eq!(s.victim_for(2 * P).unwrap().page, P);
        s.mark_dirty(P);
        assert_eq!(s.victim_for(2 * P), Some(Resident { page: 0, dirty: false }));
    }

    #[test]
    fn every_line_is_used_when_lines_are_not_a_multiple_of_ways() {
        // 10 lines, 4 ways: 2 sets of 5.
        let mut s = Sets::new(10, 4, Policy::Fifo);
        assert_eq!(s.capacity(), 10);
        for p in 0..10 {
            assert_eq!(s.victim_for(p * P), None, "page {p}");
            s.insert(p * P, false);
        }
        assert_eq!(s.resident(), 10);
        assert!(s.victim_for(10 * P).is_some() && s.victim_for(11 * P).is_some());
    }

    proptest! {
        /// Against a model: never more than `ways` lines per set or `capacity` in all, lookups
        /// agree, and FIFO evicts exactly the oldest line of the set.
        #[test]
        fn model(ops in proptest::collection::vec((0u8..3, 0u64..64), 1..300), lru in any::<bool>()) {
            let policy = if lru { Policy::Lru } else { Policy::Fifo };
            let mut s = Sets::new(16, 4, policy);
            let mut model: Vec<Vec<u64>> = vec![Vec::new(); 4];
            for (op, p) in ops {
                let page = p * P;
                let set = (p % 4) as usize;
                match op {
                    0 => if s.get(page).is_none() {
                        if let Some(v) = s.victim_for(page) {
                            prop_assert_eq!(v.page, model[set][0]);
                            s.remove(v.page);
                            model[set].remove(0);
                        }
                        s.insert(page, false);
                        model[set].push(page);
                    },
                    1 => { if s.remove(page).is_some() { model[set].retain(|&x| x != page); } }
                    _ => { s.touch(page);
                           if lru && model[set].contains(&page) { model[set].retain(|&x| x != page); model[set].push(page); } }
                }
                prop_assert_eq!(s.queue_of(page), model[set].clone());
                prop_assert!(s.resident() <= s.capacity());
            }
        }
    }
}
