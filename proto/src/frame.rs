//! Frames: a fixed 40-byte little-endian header, then a payload whose length the header states.
//! On the page path the payload is exactly one 4 KB page (or nothing; a prefetch reply carries up to
//! [`MAX_RUN_PAGES`] pages), so a frame is read straight into page buffers with no allocation;
//! control messages carry a bounded, serialised body.

use crate::error::ProtoError;
pub use crate::status::Status;

/// Bytes in a page, the unit of the page path.
pub const PAGE_SIZE: usize = 4096;
/// Encoded size of a [`Header`].
pub const HEADER_LEN: usize = 40;
/// Largest control payload a peer may send; anything larger closes the connection.
pub const MAX_CONTROL_LEN: usize = 1 << 20;
/// Most pages one [`Op::FetchRun`] asks for.
pub const MAX_RUN_PAGES: u64 = 64;
/// Payload bytes of an [`Op::RdmaConnect`] frame: the encoded
/// [`crate::rdma::params::ConnectParams`].
pub const RDMA_PARAMS_LEN: usize = 64;

const MAGIC: u16 = 0x474c; // "LG"

/// What a frame asks for (requests) or answers (replies carry the request's op).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Read one page: `addr`. Reply payload: the page.
    Fetch = 1,
    /// Write one page: `addr`, payload the page. Reply: no payload.
    Flush = 2,
    /// Write the payload to `addr2`, then read `addr` (the piggybacked eviction of §5.3).
    FlushFetch = 3,
    /// A serialised control message (memory management, statistics).
    Control = 4,
    /// Read up to `addr2` contiguous pages from `addr` (1 to [`MAX_RUN_PAGES`]), stopping before
    /// the first page the server may not serve. Reply payload: the `addr2` pages read, the count
    /// echoed in the reply's `addr2` (a prefetch window, one round trip).
    FetchRun = 5,
    /// Over the TCP connection that passed the handshake: the client's RDMA connection
    /// parameters (payload [`RDMA_PARAMS_LEN`] bytes). Reply payload: the
    /// server's, once its queue pair is ready; [`Status::NoRdma`] from a server without an RDMA
    /// page path.
    RdmaConnect = 6,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Fetch,
            2 => Op::Flush,
            3 => Op::FlushFetch,
            4 => Op::Control,
            5 => Op::FetchRun,
            6 => Op::RdmaConnect,
            _ => return None,
        })
    }

    /// Whether a request of this kind carries a page.
    pub fn request_has_page(self) -> bool {
        matches!(self, Op::Flush | Op::FlushFetch)
    }

    /// Whether a successful reply of this kind carries a page.
    pub fn reply_has_page(self) -> bool {
        matches!(self, Op::Fetch | Op::FlushFetch)
    }

    /// Pages a successful reply of this kind carries; `addr2` is the reply's.
    fn reply_pages(self, addr2: u64) -> u64 {
        match self {
            Op::FetchRun => addr2,
            Op::RdmaConnect => 0,
            _ => u64::from(self.reply_has_page()),
        }
    }
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Request kind.
    pub op: Op,
    /// Reply status (always [`Status::Ok`] in requests).
    pub status: Status,
    /// Chosen by the requester and echoed in the reply.
    pub seq: u32,
    /// Payload bytes that follow.
    pub len: u32,
    /// Global process id the request is about (0 for server-wide requests).
    pub proc: u64,
    /// Page address (fetch address for [`Op::FlushFetch`]).
    pub addr: u64,
    /// Flush address of [`Op::FlushFetch`]; page count of [`Op::FetchRun`]; 0 otherwise.
    pub addr2: u64,
}

impl Header {
    /// A request header; `len` is filled in from the op (pages) or by the caller (control).
    pub fn request(op: Op, seq: u32, proc: u64, addr: u64, addr2: u64) -> Header {
        let len = if op.request_has_page() { PAGE_SIZE as u32 } else { 0 };
        Header { op, status: Status::Ok, seq, len, proc, addr, addr2 }
    }

    /// The reply to this request with `status`; a successful page reply carries a page.
    pub fn reply(&self, status: Status) -> Header {
        let len = if status == Status::Ok && self.op.reply_has_page() { PAGE_SIZE as u32 } else { 0 };
        Header { status, len, addr2: 0, ..*self }
    }

    /// The successful reply to an [`Op::FetchRun`] request that carries `pages` pages.
    pub fn run_reply(&self, pages: u64) -> Header {
        Header { status: Status::Ok, len: (pages as usize * PAGE_SIZE) as u32, addr2: pages, ..*self }
    }

    /// Wire form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        b[2] = self.op as u8;
        b[4..8].copy_from_slice(&(self.status as u32).to_le_bytes());
        b[8..12].copy_from_slice(&self.seq.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..24].copy_from_slice(&self.proc.to_le_bytes());
        b[24..32].copy_from_slice(&self.addr.to_le_bytes());
        b[32..40].copy_from_slice(&self.addr2.to_le_bytes());
        b
    }

    /// Parses and validates a header: bad magic, unknown op or status, and payload lengths that
    /// do not fit the op are errors (the connection is then closed).
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, ProtoError> {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let magic = u16::from_le_bytes([b[0], b[1]]);
        if magic != MAGIC {
            return Err(ProtoError::Malformed(format!("bad frame magic {magic:#06x}")));
        }
        if b[3] != 0 {
            return Err(ProtoError::Malformed(format!("reserved header byte is {:#x}", b[3])));
        }
        let op = Op::from_u8(b[2]).ok_or_else(|| ProtoError::Malformed(format!("unknown op {}", b[2])))?;
        let status = Status::from_u32(u32_at(4))
            .ok_or_else(|| ProtoError::Malformed(format!("unknown status {}", u32_at(4))))?;
        let h = Header { op, status, seq: u32_at(8), len: u32_at(12), proc: u64_at(16), addr: u64_at(24), addr2: u64_at(32) };
        let len = h.len as usize;
        let ok = match op {
            Op::Control => len <= MAX_CONTROL_LEN,
            Op::RdmaConnect => len == 0 || len == RDMA_PARAMS_LEN,
            Op::FetchRun => len.is_multiple_of(PAGE_SIZE) && len as u64 <= MAX_RUN_PAGES * PAGE_SIZE as u64,
            _ => len == 0 || len == PAGE_SIZE,
        };
        if !ok {
            return Err(ProtoError::Oversized { op: format!("{op:?}"), len });
        }
        Ok(h)
    }

    /// Checks that a request's payload length is the one its op needs.
    pub fn check_request(&self) -> Result<(), ProtoError> {
        let want = match self.op {
            Op::RdmaConnect => RDMA_PARAMS_LEN,
            op if op.request_has_page() => PAGE_SIZE,
            _ => 0,
        };
        if self.op != Op::Control && self.len as usize != want {
            return Err(ProtoError::Malformed(format!("{:?} request with a {}-byte payload", self.op, self.len)));
        }
        Ok(())
    }

    /// Checks that a reply's payload length fits its op and status.
    pub fn check_reply(&self) -> Result<(), ProtoError> {
        let pages = if self.status == Status::Ok { self.op.reply_pages(self.addr2) } else { 0 };
        let want = match self.op {
            Op::RdmaConnect if self.status == Status::Ok => RDMA_PARAMS_LEN as u64,
            _ => pages.saturating_mul(PAGE_SIZE as u64),
        };
        if self.op != Op::Control && u64::from(self.len) != want {
            return Err(ProtoError::Malformed(format!("{:?} reply with a {}-byte payload", self.op, self.len)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let h = Header::request(Op::FlushFetch, 9, 0x1_0000_0002, 0x7000, 0x9000);
        assert_eq!(h.len as usize, PAGE_SIZE);
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        h.check_request().unwrap();
        let r = h.reply(Status::NotOwner);
        assert_eq!((r.len, r.seq), (0, 9));
        r.check_reply().unwrap();
    }

    #[test]
    fn fetch_run_replies_carry_the_pages_they_count() {
        let h = Header::request(Op::FetchRun, 3, 1, 0x7000, 16);
        assert_eq!(h.len, 0);
        h.check_request().unwrap();
        let r = h.run_reply(5);
        assert_eq!(Header::decode(&r.encode()).unwrap(), r);
        r.check_reply().unwrap();
        assert!(Header { addr2: 4, ..r }.check_reply().is_err(), "count and length disagree");
        assert!(Header::decode(&h.run_reply(MAX_RUN_PAGES + 1).encode()).is_err(), "too many pages");
        h.reply(Status::BadRequest).check_reply().unwrap();
    }

    proptest! {
        /// Any 40 bytes either decode to a header that re-encodes to the same bytes, or are
        /// refused; never a panic, never a payload length the op cannot have.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), HEADER_LEN)) {
            let b: [u8; HEADER_LEN] = bytes.try_into().unwrap();
            if let Ok(h) = Header::decode(&b) {
                prop_assert_eq!(h.encode(), b);
                prop_assert!(h.len as usize <= MAX_CONTROL_LEN);
            }
        }

        /// Mutating one byte of a valid header is either still valid or refused.
        #[test]
        fn mutated_headers(i in 0..HEADER_LEN, v in any::<u8>(), op in 1u8..=5) {
            let mut b = Header::request(Op::from_u8(op).unwrap(), 1, 2, 4096, 0).encode();
            b[i] = v;
            if let Ok(h) = Header::decode(&b) {
                prop_assert_eq!(h.encode(), b);
            }
        }
    }
}
