//! The server side of the RDMA page path: one polling thread for all clients (LegoOS §5.2), and
//! [`RdmaFrames`], the frame handler that sets a client's queue pair up when it asks over its
//! authenticated TCP connection.
//!
//! For each client the server registers a request ring (the only memory the client's rkey
//! opens) and a local staging region its replies are written from. The polling thread takes each
//! request in ring order (the immediate names it), hands it to the same [`FrameHandler`] the TCP
//! path uses, writes the reply frame into the client's reply slot and then the stamp after it,
//! both unsignaled but for one in every `slots` replies, which it reaps to keep the send queue
//! from filling.

use crate::sync::LockExt;
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::aio::{push_reply, FrameHandler};
use crate::frame::{Header, Op, Status, HEADER_LEN, PAGE_SIZE};

use super::layout::{SlotLayout, REQUEST_PAYLOAD, STAMP_LEN};
use super::params::{Authenticated, ConnectParams, ParamsError, RtsPermit, Side};
use super::ring::{check_slots, RingError, RingReader};
use super::verbs::{Device, Piece, QueuePair, Region, Remote};

/// A source of page-path handlers, one per client session.
pub type MakeHandler = Arc<dyn Fn() -> Box<dyn FrameHandler> + Send + Sync>;

enum Command {
    Add(Box<Session>),
    Remove(u64),
}

/// One client's queue pair, regions and ring state, owned by the polling thread.
struct Session {
    id: u64,
    peer: String,
    // Field order is drop order: the queue pair goes before the regions it uses.
    qp: QueuePair,
    ring: Region,
    staging: Region,
    layout: SlotLayout,
    reader: RingReader,
    remote: ConnectParams,
    handler: Box<dyn FrameHandler>,
    payload: Box<[u8; PAGE_SIZE]>,
    out: Vec<u8>,
}

/// The RDMA page path of a server: its device and its polling thread.
pub struct RdmaServer {
    device: Arc<Device>,
    commands: Mutex<mpsc::Sender<Command>>,
    next_id: std::sync::atomic::AtomicU64,
    poller: Mutex<Option<JoinHandle<()>>>,
}

impl RdmaServer {
    /// Starts the polling thread of a server on `device`.
    pub fn start(device: Arc<Device>, name: &str) -> io::Result<Arc<RdmaServer>> {
        let (tx, rx) = mpsc::channel();
        let poller = std::thread::Builder::new().name(format!("{name} rdma poll")).spawn(move || poll_loop(rx))?;
        Ok(Arc::new(RdmaServer {
            device,
            commands: Mutex::new(tx),
            next_id: Default::default(),
            poller: Mutex::new(Some(poller)),
        }))
    }

    /// The device served on.
    pub fn device(&self) -> &str {
        &self.device.name
    }

    fn send(&self, c: Command) {
        // The poller only stops when the server is dropped, after every `RdmaFrames`.
        let _ = self.commands.lock_unpoisoned().send(c);
    }

    /// Sets up a session for the authenticated peer that sent `theirs`; returns its id and this
    /// side's parameters.
    fn accept(&self, auth: &Authenticated, theirs: ConnectParams, handler: Box<dyn FrameHandler>) -> Result<(u64, ConnectParams), SessionError> {
        let slots = check_slots(theirs.slots)?;
        let permit = RtsPermit::grant(auth, theirs, Side::Client, slots)?;
        let verbs = |source: io::Error| SessionError::Verbs { peer: auth.peer().to_string(), device: self.device.name.clone(), source };
        let layout = permit.layout;
        let ring = Region::new(&self.device, layout.server_len(), true).map_err(verbs)?;
        let staging = Region::new(&self.device, layout.client_len(), false).map_err(verbs)?;
        // Two writes per reply; one reply in `slots` is signaled and reaped before the next.
        let mut qp = QueuePair::new(&self.device, 2 * slots + 2, slots).map_err(verbs)?;
        for i in 0..slots {
            qp.post_recv(u64::from(i)).map_err(verbs)?;
        }
        qp.connect(&permit).map_err(verbs)?;
        let mine = qp.params(&ring, slots);
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = Session {
            id,
            peer: auth.peer().to_string(),
            qp,
            ring,
            staging,
            layout,
            reader: RingReader::new(slots)?,
            remote: permit.remote,
            handler,
            payload: Box::new([0; PAGE_SIZE]),
            out: Vec::with_capacity(HEADER_LEN + PAGE_SIZE),
        };
        self.send(Command::Add(Box::new(session)));
        Ok((id, mine))
    }
}

impl Drop for RdmaServer {
    fn drop(&mut self) {
        // Closing the channel stops the poller.
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(self.commands.get_mut_unpoisoned(), tx));
        if let Some(t) = self.poller.get_mut_unpoisoned().take() {
            let _ = t.join();
        }
    }
}

/// Why an RDMA session was refused.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The peer's connection parameters cannot describe a working connection.
    #[error("connection parameters: {0}")]
    Params(#[from] ParamsError),
    /// The peer asked for a ring lego cannot make.
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    /// The device refused a verb.
    #[error("{peer}: RDMA device {device}: {source}")]
    Verbs { peer: String, device: String, source: io::Error },
}

/// The polling thread: spins over the sessions' receive queues while there are sessions, and
/// sleeps on the command channel while there are none.
fn poll_loop(rx: mpsc::Receiver<Command>) {
    let mut sessions: Vec<Box<Session>> = Vec::new();
    let apply = |c: Command, sessions: &mut Vec<Box<Session>>| match c {
        Command::Add(s) => sessions.push(s),
        Command::Remove(id) => sessions.retain(|s| s.id != id),
    };
    loop {
        if sessions.is_empty() {
            match rx.recv() {
                Ok(c) => apply(c, &mut sessions),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(c) => apply(c, &mut sessions),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        sessions.retain_mut(|s| match s.poll() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(peer = %s.peer, error = %e, "dropping the RDMA session");
                false
            }
        });
        std::hint::spin_loop();
    }
}

impl Session {
    /// Serves every request that arrived.
    fn poll(&mut self) -> io::Result<()> {
        // SAFETY: `ibv_wc` is plain integers: all zeros is a valid value.
        let mut wc: [ibverbs_sys::ibv_wc; 8] = unsafe { std::mem::zeroed() };
        let n = self.qp.poll_recv(&mut wc)?;
        for w in &wc[..n] {
            let imm = w.imm_data().ok_or_else(|| io::Error::other("a receive completion without immediate"))?;
            // Reposted before the reply goes out: a client that sees the reply may send again
            // at once, and must find a receive request (or it is held back by RNR retries).
            self.qp.post_recv(w.wr_id())?;
            self.serve(u32::from_be(imm))?;
        }
        Ok(())
    }

    /// Serves the request announced by immediate `imm`.
    fn serve(&mut self, imm: u32) -> io::Result<()> {
        let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let slot = self.reader.slot_of(imm).map_err(|e| bad(e.to_string()))?;
        let at = self.layout.request(slot);
        let mut hb = [0u8; HEADER_LEN];
        self.ring.read(at, &mut hb);
        let h = Header::decode(&hb).map_err(|e| bad(e.to_string()))?;
        h.check_request().map_err(|e| bad(e.to_string()))?;
        self.out.clear();
        match h.op {
            // Control calls and set-up go over TCP.
            Op::Control | Op::RdmaConnect => push_reply(&mut self.out, &h.reply(Status::BadRequest), &[]),
            _ => {
                let len = h.len as usize;
                self.ring.read(at + REQUEST_PAYLOAD, &mut self.payload[..len]);
                self.handler.handle(&h, &self.payload[..len], &mut self.out);
            }
        }
        // The slot is read: the client may reuse it once the stamp below tells it so.
        let consumed = self.reader.consume();
        let place = self.layout.reply(slot, h.op == Op::FetchRun);
        if self.out.len() > place.capacity {
            return Err(bad(format!("a {}-byte reply to {:?} does not fit its slot", self.out.len(), h.op)));
        }
        self.staging.write(place.frame, &self.out);
        self.staging.set_stamp(place.stamp, consumed);
        let (addr, rkey) = (self.remote.addr, self.remote.rkey);
        let frame = [Piece { off: place.frame, len: self.out.len() }];
        self.qp.write(consumed, &self.staging, &frame, Remote { addr: addr + place.frame as u64, rkey }, None, false)?;
        let slots = u64::from(self.layout.slots());
        let signaled = consumed.is_multiple_of(slots);
        let stamp = [Piece { off: place.stamp, len: STAMP_LEN }];
        self.qp.write(consumed, &self.staging, &stamp, Remote { addr: addr + place.stamp as u64, rkey }, None, signaled)?;
        if signaled {
            // SAFETY: as in `poll`.
            let mut wc: [ibverbs_sys::ibv_wc; 4] = unsafe { std::mem::zeroed() };
            while self.qp.poll_send(&mut wc)? == 0 {
                std::hint::spin_loop();
            }
        }
        Ok(())
    }
}

/// A frame handler that serves the TCP path with `inner` and answers [`Op::RdmaConnect`] by
/// setting up an RDMA session (with a handler from `make`) on `server`. It runs only inside the
/// frame loop of [`crate::aio::serve`], which starts after [`crate::aio::accept_handshake`]
/// accepted the peer: that is the authentication the session's queue pair waits for.
pub struct RdmaFrames<H> {
    inner: H,
    server: Option<Arc<RdmaServer>>,
    make: MakeHandler,
    peer: String,
    sessions: Vec<u64>,
}

impl<H: FrameHandler> RdmaFrames<H> {
    /// Wraps the handler `inner` of the connection from `peer`; without a `server`, `inner`
    /// answers everything (set-up requests included).
    pub fn new(inner: H, server: Option<Arc<RdmaServer>>, make: MakeHandler, peer: String) -> RdmaFrames<H> {
        RdmaFrames { inner, server, make, peer, sessions: Vec::new() }
    }
}

impl<H: FrameHandler> FrameHandler for RdmaFrames<H> {
    fn handle(&mut self, req: &Header, payload: &[u8], out: &mut Vec<u8>) {
        let server = match &self.server {
            Some(s) if req.op == Op::RdmaConnect => s,
            _ => return self.inner.handle(req, payload, out),
        };
        let auth = Authenticated::new(self.peer.clone());
        let accepted = ConnectParams::decode(payload)
            .map_err(SessionError::from)
            .and_then(|theirs| server.accept(&auth, theirs, (self.make)()));
        match accepted {
            Ok((id, mine)) => {
                self.sessions.push(id);
                let mut h = req.reply(Status::Ok);
                h.len = mine.encode().len() as u32;
                push_reply(out, &h, &mine.encode());
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "refusing an RDMA session");
                push_reply(out, &req.reply(Status::BadRequest), &[]);
            }
        }
    }

    fn idle(&mut self, socket: std::os::fd::BorrowedFd<'_>) {
        self.inner.idle(socket)
    }
}

impl<H> Drop for RdmaFrames<H> {
    /// The TCP connection closed: its sessions' queue pairs and regions go (their rkeys with
    /// them).
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            for &id in &self.sessions {
                server.send(Command::Remove(id));
            }
        }
    }
}
