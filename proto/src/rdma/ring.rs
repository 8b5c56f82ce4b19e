//! The request ring and its credits (LegoOS §5.2's RPC ring).
//!
//! Each client owns a ring of `slots` request slots in the server's registered memory. The client
//! writes request `seq` into slot `seq % slots` by RDMA WRITE with immediate; the immediate is the
//! low 32 bits of `seq`, so the server checks that requests arrive in order and in the slot it
//! expects. A client may have at most `slots` requests the server has not consumed: one credit per
//! slot. Every reply carries the server's count of consumed requests, which gives credits back. A
//! full ring refuses the post ([`RingError::Full`]): the caller waits for a reply first, so a
//! request is never dropped and an unconsumed slot is never overwritten.

/// A ring or credit rule was broken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    /// No credit left: all `slots` slots hold requests the server has not consumed yet.
    #[error("the request ring is full ({slots} requests in flight)")]
    Full {
        /// Slots in the ring.
        slots: u32,
    },
    /// The server claims to have consumed requests that were never posted.
    #[error("the server acknowledged {acked} requests, but only {posted} were posted")]
    Ahead {
        /// What the server claimed.
        acked: u64,
        /// What the client posted.
        posted: u64,
    },
    /// The server's consumed count went backwards.
    #[error("the server's consumed count went back from {from} to {to}")]
    Backwards {
        /// The count already known.
        from: u64,
        /// The smaller count.
        to: u64,
    },
    /// A request arrived with an immediate that is not the next sequence number.
    #[error("request {got:#x} arrived where {expected:#x} was due")]
    OutOfOrder {
        /// The immediate expected (low 32 bits of the next sequence number).
        expected: u32,
        /// The immediate received.
        got: u32,
    },
    /// A ring without slots, or with more than [`MAX_RING_SLOTS`], or not a power of two.
    #[error("a ring of {0} slots (a power of two from 1 to {MAX_RING_SLOTS} is needed)")]
    BadSize(u32),
}

/// Most slots a ring may have.
pub const MAX_RING_SLOTS: u32 = 1024;

/// Checks a ring size: a power of two from 1 to [`MAX_RING_SLOTS`] (so that slot indices and the
/// 32-bit immediates wrap together).
pub fn check_slots(slots: u32) -> Result<u32, RingError> {
    if slots.is_power_of_two() && slots <= MAX_RING_SLOTS {
        Ok(slots)
    } else {
        Err(RingError::BadSize(slots))
    }
}

/// A request the client may write: its sequence number, ring slot and immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Posted {
    /// Sequence number, from 0.
    pub seq: u64,
    /// Ring slot the request goes into.
    pub slot: u32,
    /// Immediate data of the RDMA WRITE.
    pub imm: u32,
}

/// The client's side: what it posted and how many credits it holds.
#[derive(Debug)]
pub struct Credits {
    slots: u32,
    posted: u64,
    consumed: u64,
}

impl Credits {
    /// Credits for a ring of `slots` slots, all free.
    pub fn new(slots: u32) -> Result<Credits, RingError> {
        Ok(Credits { slots: check_slots(slots)?, posted: 0, consumed: 0 })
    }

    /// Credits left: requests that may be posted before a reply comes back.
    pub fn available(&self) -> u32 {
        self.slots - self.in_flight()
    }

    /// Requests posted and not yet consumed by the server.
    pub fn in_flight(&self) -> u32 {
        (self.posted - self.consumed) as u32
    }

    /// Takes a credit for the next request, or refuses if none is left.
    pub fn post(&mut self) -> Result<Posted, RingError> {
        if self.available() == 0 {
            return Err(RingError::Full { slots: self.slots });
        }
        let seq = self.posted;
        self.posted += 1;
        Ok(Posted { seq, slot: (seq % u64::from(self.slots)) as u32, imm: seq as u32 })
    }

    /// Takes the server's count of consumed requests (from a reply); returns the credits it gave
    /// back. A count beyond what was posted, or below one already seen, is an error and changes
    /// nothing.
    pub fn release(&mut self, consumed: u64) -> Result<u32, RingError> {
        if consumed > self.posted {
            return Err(RingError::Ahead { acked: consumed, posted: self.posted });
        }
        if consumed < self.consumed {
            return Err(RingError::Backwards { from: self.consumed, to: consumed });
        }
        let freed = (consumed - self.consumed) as u32;
        self.consumed = consumed;
        Ok(freed)
    }
}

/// The server's side of one client's ring: the next request it expects.
#[derive(Debug)]
pub struct RingReader {
    slots: u32,
    consumed: u64,
}

impl RingReader {
    /// A reader for a ring of `slots` slots.
    pub fn new(slots: u32) -> Result<RingReader, RingError> {
        Ok(RingReader { slots: check_slots(slots)?, consumed: 0 })
    }

    /// A request arrived with immediate `imm`: returns its slot if it is the one due. Consuming
    /// it (after the reply is built) is [`RingReader::consume`].
    pub fn slot_of(&self, imm: u32) -> Result<u32, RingError> {
        let expected = self.consumed as u32;
        if imm != expected {
            return Err(RingError::OutOfOrder { expected, got: imm });
        }
        Ok((self.consumed % u64::from(self.slots)) as u32)
    }

    /// Marks the request due as consumed (its slot may be reused); returns the new count, which
    /// the reply carries back as credits.
    pub fn consume(&mut self) -> u64 {
        self.consumed += 1;
        self.consumed
    }

    /// Requests consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn sizes() {
        assert!(Credits::new(0).is_err());
        assert!(Credits::new(3).is_err());
        assert!(Credits::new(MAX_RING_SLOTS * 2).is_err());
        assert_eq!(Credits::new(4).unwrap().available(), 4);
    }

    #[test]
    fn full_ring_refuses_and_bad_acks_change_nothing() {
        let mut c = Credits::new(2).unwrap();
        assert_eq!(c.post().unwrap(), Posted { seq: 0, slot: 0, imm: 0 });
        assert_eq!(c.post().unwrap().slot, 1);
        assert_eq!(c.post(), Err(RingError::Full { slots: 2 }));
        assert_eq!(c.release(3), Err(RingError::Ahead { acked: 3, posted: 2 }));
        assert_eq!(c.release(1), Ok(1));
        assert_eq!(c.release(0), Err(RingError::Backwards { from: 1, to: 0 }));
        assert_eq!(c.available(), 1);
        assert_eq!(c.post().unwrap(), Posted { seq: 2, slot: 0, imm: 2 });
    }

    #[test]
    fn reader_refuses_out_of_order() {
        let mut r = RingReader::new(4).unwrap();
        assert_eq!(r.slot_of(1), Err(RingError::OutOfOrder { expected: 0, got: 1 }));
        assert_eq!(r.slot_of(0), Ok(0));
        assert_eq!(r.consume(), 1);
        assert_eq!(r.slot_of(1), Ok(1));
    }

    #[test]
    fn immediates_wrap_with_the_ring() {
        let mut c = Credits { slots: 8, posted: u64::from(u32::MAX), consumed: u64::from(u32::MAX) };
        let mut r = RingReader { slots: 8, consumed: u64::from(u32::MAX) };
        for _ in 0..3 {
            let p = c.post().unwrap();
            assert_eq!(r.slot_of(p.imm), Ok(p.slot));
            c.release(r.consume()).unwrap();
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// The client posts a request (if it has a credit).
        Post(u64),
        /// The server takes the next request that arrived.
        Serve,
        /// The oldest reply reaches the client.
        Reply,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![any::<u64>().prop_map(Step::Post), Just(Step::Serve), Just(Step::Reply)]
    }

    proptest! {
        /// The ring against a FIFO model: requests are served in order, each exactly once, a
        /// post never overwrites a slot the server has not consumed, and credits never exceed
        /// the slots nor go negative, however replies lag behind.
        #[test]
        fn ring_matches_a_fifo(slots_log in 0u32..4, steps in proptest::collection::vec(step(), 1..300)) {
            let slots = 1u32 << slots_log;
            let mut credits = Credits::new(slots).unwrap();
            let mut reader = RingReader::new(slots).unwrap();
            let mut memory: Vec<Option<u64>> = vec![None; slots as usize];
            let mut arrived: VecDeque<u32> = VecDeque::new();
            let mut replies: VecDeque<u64> = VecDeque::new();
            let mut model: VecDeque<u64> = VecDeque::new();
            for s in steps {
                match s {
                    Step::Post(v) => {
                        let outstanding = model.len() as u32 + replies.len() as u32;
                        match credits.post() {
                            Ok(p) => {
                                prop_assert!(memory[p.slot as usize].is_none(), "overwrote an unconsumed slot");
                                memory[p.slot as usize] = Some(v);
                                arrived.push_back(p.imm);
                                model.push_back(v);
                            }
                            Err(RingError::Full { .. }) => prop_assert_eq!(outstanding, slots),
                            Err(e) => prop_assert!(false, "{e}"),
                        }
                    }
                    Step::Serve => {
                        if let Some(imm) = arrived.pop_front() {
                            let slot = reader.slot_of(imm).unwrap();
                            let got = memory[slot as usize].take();
                            prop_assert_eq!(got, model.pop_front());
                            replies.push_back(reader.consume());
                        }
                    }
                    Step::Reply => {
                        if let Some(consumed) = replies.pop_front() {
                            credits.release(consumed).unwrap();
                        }
                    }
                }
                prop_assert_eq!(credits.in_flight() as usize, model.len() + replies.len());
                prop_assert!(credits.available() <= slots);
            }
        }
    }
}
