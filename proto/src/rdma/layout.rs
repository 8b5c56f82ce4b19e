//! Where requests and replies lie in the registered regions.
//!
//! The server registers, for each client, a ring of request slots: a request slot is the frame
//! header at offset 0 and the page it carries (a flush's) at [`REQUEST_PAYLOAD`]. The client
//! registers its staging region: the same request slots (the source of its RDMA WRITEs), then one
//! reply slot per ring slot (a reply frame, header and at most one page), then one run slot for
//! the reply of a `FetchRun` (header and up to [`MAX_RUN_PAGES`] pages). Every reply slot ends with
//! an 8-byte stamp that the server writes after the frame: the client polls it, so a reply needs
//! no receive work request and no completion on the client.

use crate::frame::{HEADER_LEN, MAX_RUN_PAGES, PAGE_SIZE};

use super::ring::{check_slots, RingError};

/// Offset of the page in a request slot (a cache line past the header).
pub const REQUEST_PAYLOAD: usize = 64;
/// Bytes of one request slot.
pub const REQUEST_SLOT: usize = REQUEST_PAYLOAD + PAGE_SIZE;
/// Bytes of the stamp that ends a reply slot.
pub const STAMP_LEN: usize = 8;
/// Bytes of a reply slot: a frame of one page, then the stamp.
pub const REPLY_SLOT: usize = round_up(HEADER_LEN + PAGE_SIZE + STAMP_LEN, 64);
/// Bytes of the run slot: a frame of [`MAX_RUN_PAGES`] pages, then the stamp.
pub const RUN_SLOT: usize = round_up(HEADER_LEN + MAX_RUN_PAGES as usize * PAGE_SIZE + STAMP_LEN, 64);

const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// The regions of one client's connection, for a ring of `slots` slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLayout {
    slots: u32,
}

/// Where the reply to a request goes in the client's region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyPlace {
    /// Offset of the reply frame (header, then payload).
    pub frame: usize,
    /// Longest reply frame that fits.
    pub capacity: usize,
    /// Offset of the stamp.
    pub stamp: usize,
}

impl SlotLayout {
    /// The layout of a ring of `slots` slots.
    pub fn new(slots: u32) -> Result<SlotLayout, RingError> {
        Ok(SlotLayout { slots: check_slots(slots)? })
    }

    /// Slots in the ring.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Bytes the server registers for this client: the request ring.
    pub fn server_len(&self) -> usize {
        self.slots as usize * REQUEST_SLOT
    }

    /// Bytes the client registers: staging request slots, reply slots and the run slot.
    pub fn client_len(&self) -> usize {
        self.slots as usize * (REQUEST_SLOT + REPLY_SLOT) + RUN_SLOT
    }

    /// Offset of request slot `slot` (in the server's ring and in the client's staging slots).
    pub fn request(&self, slot: u32) -> usize {
        assert!(slot < self.slots, "request slot {slot} of {}", self.slots);
        slot as usize * REQUEST_SLOT
    }

    /// Where the reply to the request in ring slot `slot` goes: its own reply slot, or the run
    /// slot for a `FetchRun` (of which a client has at most one in flight).
    pub fn reply(&self, slot: u32, run: bool) -> ReplyPlace {
        assert!(slot < self.slots, "reply slot {slot} of {}", self.slots);
        let replies = self.slots as usize * REQUEST_SLOT;
        let (frame, len) = if run {
            (replies + self.slots as usize * REPLY_SLOT, RUN_SLOT)
        } else {
            (replies + slot as usize * REPLY_SLOT, REPLY_SLOT)
        };
        ReplyPlace { frame, capacity: len - STAMP_LEN, stamp: frame + len - STAMP_LEN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_do_not_overlap_and_fit_the_region() {
        for slots in [1u32, 2, 64] {
            let l = SlotLayout::new(slots).unwrap();
            let mut spans: Vec<(usize, usize)> = (0..slots).map(|s| (l.request(s), REQUEST_SLOT)).collect();
            for s in 0..slots {
                let r = l.reply(s, false);
                assert!(r.capacity >= HEADER_LEN + PAGE_SIZE);
                assert_eq!(r.stamp, r.frame + r.capacity);
                spans.push((r.frame, r.capacity + STAMP_LEN));
            }
            let run = l.reply(0, true);
            assert!(run.capacity >= HEADER_LEN + MAX_RUN_PAGES as usize * PAGE_SIZE);
            assert_eq!(run, l.reply(slots - 1, true));
            spans.push((run.frame, run.capacity + STAMP_LEN));
            spans.sort();
            for w in spans.windows(2) {
                assert!(w[0].0 + w[0].1 <= w[1].0, "{w:?} overlap");
            }
            let (last, len) = *spans.last().unwrap();
            assert_eq!(last + len, l.client_len());
            assert_eq!(l.request(slots - 1) + REQUEST_SLOT, l.server_len());
            assert_eq!(run.stamp % 8, 0, "the stamp is aligned for an atomic read");
        }
    }

    #[test]
    #[should_panic(expected = "request slot 4 of 4")]
    fn a_slot_beyond_the_ring_is_a_bug() {
        SlotLayout::new(4).unwrap().request(4);
    }
}
