//! [`RdmaTransport`]: the page path over an RC queue pair (LegoOS §5.2).
//!
//! A request is a frame (header, and the page of a flush) written from the client's staging slot
//! into its slot of the server's ring by one RDMA WRITE with immediate; the immediate tells the
//! server's polling thread which request arrived. The reply frame lands in the client's reply slot
//! by RDMA WRITE, followed by a stamp (the server's count of consumed requests) that the client
//! polls for: no receive request and no completion on the client's side, and the stamp gives the
//! credits back. Control calls go over the TCP connection that authenticated the peer.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::ProtoError;
use crate::frame::{Header, Op, Status, HEADER_LEN, MAX_RUN_PAGES, PAGE_SIZE};
use crate::handshake::Hello;
use crate::transport::{RegisteredBuf, Slot, TcpTransport, Transport};

use super::layout::{SlotLayout, REQUEST_PAYLOAD};
use super::params::{ConnectParams, RtsPermit, Side};
use super::ring::{Credits, Posted};
use super::verbs::{Device, Piece, QueuePair, Region, Remote};

/// Slots of a client's ring: requests one client may have in flight (`write_pages` pipelines
/// up to this many flushes).
pub const DEFAULT_SLOTS: u32 = 16;

/// A request whose reply has not been read yet.
struct InFlight {
    posted: Posted,
    request: Header,
}

/// [`Transport`] over RDMA (see the module documentation).
pub struct RdmaTransport {
    tcp: TcpTransport,
    peer: String,
    // Field order is drop order: the queue pair goes before the region it reads and writes.
    qp: QueuePair,
    region: Region,
    layout: SlotLayout,
    credits: Credits,
    remote: ConnectParams,
    seq: u32,
    timeout: Duration,
    in_flight: VecDeque<InFlight>,
    /// Set by a failure that leaves the ring in an unknown state (a timeout, a failed work
    /// request, a malformed reply): every later request fails at once.
    broken: bool,
}

impl RdmaTransport {
    /// Connects to `addr` over TCP (hello and secret proof), then exchanges the queue pair and
    /// region parameters over that authenticated connection and brings the queue pair to RTS.
    pub fn connect(addr: &str, me: Hello, timeout: Duration, device: &Arc<Device>, slots: u32) -> Result<RdmaTransport, ProtoError> {
        let mut tcp = TcpTransport::connect(addr, me, timeout)?;
        let auth = tcp.authenticated();
        let verbs = |e: io::Error| ProtoError::Io { peer: format!("{addr} (RDMA device {})", device.name), source: e };
        let invalid = |e: super::params::ParamsError| ProtoError::Malformed(e.to_string());
        let layout = SlotLayout::new(slots).map_err(|e| invalid(e.into()))?;
        let region = Region::new(device, layout.client_len(), true).map_err(verbs)?;
        // One send request per request, one signaled in every `slots` and reaped at once.
        let mut qp = QueuePair::new(device, slots + 1, 0).map_err(verbs)?;
        let theirs = tcp.rdma_connect(&qp.params(&region, slots))?;
        let permit = RtsPermit::grant(&auth, theirs, Side::Server, slots).map_err(invalid)?;
        qp.connect(&permit).map_err(verbs)?;
        tracing::debug!(peer = addr, device = %device.name, qpn = permit.remote.qpn, "RDMA page path connected");
        Ok(RdmaTransport {
            peer: addr.to_string(),
            tcp,
            qp,
            region,
            layout,
            credits: Credits::new(slots).map_err(|e| invalid(e.into()))?,
            remote: permit.remote,
            seq: 0,
            timeout,
            in_flight: VecDeque::new(),
            broken: false,
        })
    }

    fn verbs(&self, e: io::Error) -> ProtoError {
        ProtoError::Io { peer: self.peer.clone(), source: e }
    }

    /// Writes request `h` (with `page`) into the next ring slot; waits for the oldest reply
    /// first if the ring is full.
    fn post(&mut self, op: Op, proc: u64, addr: u64, addr2: u64, page: Option<&[u8; PAGE_SIZE]>) -> Result<(), ProtoError> {
        if self.broken {
            return Err(ProtoError::Closed { peer: self.peer.clone() });
        }
        if self.credits.available() == 0 {
            let oldest = self.in_flight.pop_front().expect("a full ring has requests in flight");
            self.reply(oldest)?;
        }
        self.seq = self.seq.wrapping_add(1);
        let h = Header::request(op, self.seq, proc, addr, addr2);
        let posted = self.credits.post().map_err(|e| ProtoError::Malformed(e.to_string()))?;
        let at = self.layout.request(posted.slot);
        self.region.write(at, &h.encode());
        let len = match page {
            Some(p) => {
                self.region.write(at + REQUEST_PAYLOAD, p);
                REQUEST_PAYLOAD + PAGE_SIZE
            }
            None => HEADER_LEN,
        };
        let place = self.layout.reply(posted.slot, op == Op::FetchRun);
        self.region.set_stamp(place.stamp, 0);
        let slots = self.layout.slots();
        let signaled = posted.seq % u64::from(slots) == u64::from(slots) - 1;
        let to = Remote { addr: self.remote.addr + at as u64, rkey: self.remote.rkey };
        let sent = self.qp.write(posted.seq, &self.region, &[Piece { off: at, len }], to, Some(posted.imm), signaled);
        let reaped = sent.map_err(|e| self.verbs(e)).and_then(|()| match signaled {
            // Reaping it frees the send queue of every unsignaled request before it.
            true => self.wait(|t| {
                let mut wc = [zeroed_wc(); 4];
                t.qp.poll_send(&mut wc).map(|n| n > 0)
            }),
            false => Ok(()),
        });
        if let Err(e) = reaped {
            self.broken = true;
            return Err(e);
        }
        self.in_flight.push_back(InFlight { posted, request: h });
        Ok(())
    }

    /// Spins until `done` says so, up to the timeout.
    fn wait(&self, mut done: impl FnMut(&Self) -> io::Result<bool>) -> Result<(), ProtoError> {
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            if done(self).map_err(|e| self.verbs(e))? {
                return Ok(());
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                if started.elapsed() >= self.timeout {
                    return Err(ProtoError::Timeout { peer: self.peer.clone(), secs: self.timeout.as_secs().max(1) });
                }
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
    }

    /// Waits for the reply to `req`; returns its header and the offset of its payload. Any
    /// failure but an error status from the server breaks the connection.
    fn reply(&mut self, req: InFlight) -> Result<(Header, usize), ProtoError> {
        let r = self.read_reply(req);
        if matches!(r, Err(ref e) if !matches!(e, ProtoError::Remote { .. })) {
            self.broken = true;
        }
        r
    }

    fn read_reply(&mut self, req: InFlight) -> Result<(Header, usize), ProtoError> {
        let place = self.layout.reply(req.posted.slot, req.request.op == Op::FetchRun);
        let want = req.posted.seq + 1;
        self.wait(|t| Ok(t.region.stamp(place.stamp) >= want))?;
        let consumed = self.region.stamp(place.stamp);
        self.credits.release(consumed).map_err(|e| ProtoError::Malformed(format!("{}: {e}", self.peer)))?;
        let mut hb = [0u8; HEADER_LEN];
        self.region.read(place.frame, &mut hb);
        let r = Header::decode(&hb)?;
        r.check_reply()?;
        if r.seq != req.request.seq || r.op != req.request.op {
            return Err(ProtoError::Malformed(format!(
                "{} answered {:?} #{} to {:?} #{}",
                self.peer, r.op, r.seq, req.request.op, req.request.seq
            )));
        }
        if r.status != Status::Ok {
            return Err(ProtoError::Remote { peer: self.peer.clone(), status: r.status });
        }
        Ok((r, place.frame + HEADER_LEN))
    }

    /// Posts one request and waits for its reply.
    fn exchange(&mut self, op: Op, proc: u64, addr: u64, addr2: u64, page: Option<&[u8; PAGE_SIZE]>) -> Result<(Header, usize), ProtoError> {
        self.post(op, proc, addr, addr2, page)?;
        let req = self.in_flight.pop_back().expect("just posted");
        self.reply(req)
    }
}

/// An empty work completion to poll into.
fn zeroed_wc() -> ibverbs_sys::ibv_wc {
    // SAFETY: `ibv_wc` is plain integers (and a bitflags integer): all zeros is a valid value.
    unsafe { std::mem::zeroed() }
}

impl Transport for RdmaTransport {
    fn peer(&self) -> &str {
        &self.peer
    }

    fn read_page(&mut self, proc: u64, addr: u64, buf: &mut RegisteredBuf, slot: Slot) -> Result<(), ProtoError> {
        let (_, at) = self.exchange(Op::Fetch, proc, addr, 0, None)?;
        self.region.read(at, buf.page_mut(slot.0));
        Ok(())
    }

    fn read_pages(&mut self, proc: u64, addr: u64, n: u64, buf: &mut RegisteredBuf, first: Slot) -> Result<u64, ProtoError> {
        if n == 0 || n > MAX_RUN_PAGES || first.0 as u64 + n > buf.len() as u64 {
            return Err(ProtoError::Oversized { op: "FetchRun".into(), len: n as usize * PAGE_SIZE });
        }
        let (r, at) = self.exchange(Op::FetchRun, proc, addr, n, None)?;
        if r.addr2 == 0 || r.addr2 > n {
            return Err(ProtoError::Malformed(format!("{} answered {} pages to a fetch of {n}", self.peer, r.addr2)));
        }
        self.region.read(at, buf.run_mut(first.0, r.addr2 as usize));
        Ok(r.addr2)
    }

    fn write_page(&mut self, proc: u64, addr: u64, buf: &RegisteredBuf, slot: Slot) -> Result<(), ProtoError> {
        self.exchange(Op::Flush, proc, addr, 0, Some(buf.page(slot.0))).map(|_| ())
    }

    fn write_pages(&mut self, proc: u64, pages: &[(u64, Slot)], buf: &RegisteredBuf) -> Result<(), ProtoError> {
        // Every reply is read, even after an error status, so that the ring stays in step.
        let mut first = Ok(());
        for &(addr, slot) in pages {
            if let Err(e) = self.post(Op::Flush, proc, addr, 0, Some(buf.page(slot.0))) {
                first = first.and(Err(e));
                break;
            }
        }
        while let Some(req) = self.in_flight.pop_front() {
            if let Err(e) = self.reply(req) {
                first = first.and(Err(e));
            }
        }
        first
    }

    fn write_read_page(
        &mut self,
        proc: u64,
        write_addr: u64,
        read_addr: u64,
        buf: &mut RegisteredBuf,
        src: Slot,
        dst: Slot,
    ) -> Result<(), ProtoError> {
        let (_, at) = self.exchange(Op::FlushFetch, proc, read_addr, write_addr, Some(buf.page(src.0)))?;
        self.region.read(at, buf.page_mut(dst.0));
        Ok(())
    }

    fn call(&mut self, proc: u64, request: &[u8]) -> Result<Vec<u8>, ProtoError> {
        self.tcp.call(proc, request)
    }
}
