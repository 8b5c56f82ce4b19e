//! The client side of a connection to a server, behind the [`Transport`] trait.
//!
//! The trait is shaped for RDMA as well as TCP: page transfers go between the server and a
//! [`RegisteredBuf`] (memory an RDMA transport registers with the NIC once, at connect time), and
//! they are one-sided in form (`read_page`/`write_page` of a remote address), so an RDMA transport
//! can serve them with RDMA READ/WRITE into the server's registered frames. Control messages are
//! two-sided calls. [`TcpTransport`] implements it over a TCP stream with `TCP_NODELAY`: every
//! operation is one request frame and one reply frame, read straight into the caller's buffer.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::auth::{AuthError, Secret, NONCE_LEN, SECRET_ENV, VERDICT_LEN};
use crate::error::ProtoError;
use crate::frame::{Header, Op, Status, HEADER_LEN, MAX_RUN_PAGES, PAGE_SIZE};
use crate::handshake::{Hello, HELLO_LEN};

/// Page-aligned memory that page transfers read into and write from. An RDMA transport
/// registers it (one memory region for the whole buffer); over TCP it is plain memory.
pub struct RegisteredBuf {
    pages: Box<[Page]>,
}

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; PAGE_SIZE]);

impl RegisteredBuf {
    /// A zeroed buffer of `pages` pages.
    pub fn new(pages: usize) -> RegisteredBuf {
        RegisteredBuf { pages: vec![Page([0; PAGE_SIZE]); pages.max(1)].into_boxed_slice() }
    }
    /// Page `i`.
    pub fn page(&self, i: usize) -> &[u8; PAGE_SIZE] {
        &self.pages[i].0
    }
    /// Page `i`, writable.
    pub fn page_mut(&mut self, i: usize) -> &mut [u8; PAGE_SIZE] {
        &mut self.pages[i].0
    }
    /// Pages `first..first + n` as one contiguous byte slice (for a copy of several pages at
    /// once). Panics if the range is outside the buffer.
    pub fn run(&self, first: usize, n: usize) -> &[u8] {
        let pages = &self.pages[first..first + n];
        // SAFETY: `Page` is `repr(C)` over a byte array whose size is a multiple of its
        // alignment, so a slice of pages is `n * PAGE_SIZE` contiguous, initialised bytes that
        // live as long as the borrow of `self`.
        unsafe { std::slice::from_raw_parts(pages.as_ptr().cast::<u8>(), n * PAGE_SIZE) }
    }
    /// See [`RegisteredBuf::run`], writable.
    pub fn run_mut(&mut self, first: usize, n: usize) -> &mut [u8] {
        let pages = &mut self.pages[first..first + n];
        // SAFETY: as in `run`; the bytes are borrowed mutably through `pages`.
        unsafe { std::slice::from_raw_parts_mut(pages.as_mut_ptr().cast::<u8>(), n * PAGE_SIZE) }
    }
    /// Number of pages.
    pub fn len(&self) -> usize {
        self.pages.len()
    }
    /// Always false: a buffer has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// One page slot of a [`RegisteredBuf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(pub usize);

/// A connection to one server.
pub trait Transport: Send {
    /// The server's address, for messages.
    fn peer(&self) -> &str;
    /// One-sided read of page `addr` of process `proc` into `slot` of `buf`.
    fn read_page(&mut self, proc: u64, addr: u64, buf: &mut RegisteredBuf, slot: Slot) -> Result<(), ProtoError>;
    /// One-sided read of up to `n` contiguous pages from `addr` into the slots from `first` on
    /// (a prefetch window, one round trip; `n` at most [`MAX_RUN_PAGES`]). The server stops
    /// before the first page it may not serve (outside the vRegion or the mapped region);
    /// returns how many pages were read, at least 1.
    fn read_pages(&mut self, proc: u64, addr: u64, n: u64, buf: &mut RegisteredBuf, first: Slot) -> Result<u64, ProtoError>;
    /// One-sided write of `slot` of `buf` to page `addr` of process `proc`.
    fn write_page(&mut self, proc: u64, addr: u64, buf: &RegisteredBuf, slot: Slot) -> Result<(), ProtoError>;
    /// One-sided writes of several pages (`(addr, slot)` each) of process `proc`, pipelined: one
    /// round trip for all of them.
    fn write_pages(&mut self, proc: u64, pages: &[(u64, Slot)], buf: &RegisteredBuf) -> Result<(), ProtoError>;
    /// Writes `src` to page `write_addr`, then reads page `read_addr` into `dst`, in one exchange
    /// (the piggybacked flush of an eviction whose victim has the same owner as the miss).
    fn write_read_page(
        &mut self,
        proc: u64,
        write_addr: u64,
        read_addr: u64,
        buf: &mut RegisteredBuf,
        src: Slot,
        dst: Slot,
    ) -> Result<(), ProtoError>;
    /// A two-sided control call about process `proc` (0 for none): request and reply bodies.
    fn call(&mut self, proc: u64, request: &[u8]) -> Result<Vec<u8>, ProtoError>;
    /// The first half of [`Transport::write_pages`]: sends the writes and returns without
    /// waiting for their replies, which [`Transport::finish_writes`] collects. Writes of the
    /// same lines to several servers (a primary and its secondary) so travel at once. By
    /// default the whole exchange happens here.
    fn start_writes(&mut self, proc: u64, pages: &[(u64, Slot)], buf: &RegisteredBuf) -> Result<PendingWrites, ProtoError> {
        self.write_pages(proc, pages, buf)?;
        Ok(PendingWrites(Vec::new()))
    }
    /// Waits for the replies to writes sent with [`Transport::start_writes`].
    fn finish_writes(&mut self, pending: PendingWrites) -> Result<(), ProtoError> {
        let _ = pending;
        Ok(())
    }
}

/// Writes sent by [`Transport::start_writes`] whose replies are still to come.
#[must_use = "the replies must be collected with finish_writes"]
pub struct PendingWrites(Vec<Header>);

/// [`Transport`] over TCP.
pub struct TcpTransport {
    stream: TcpStream,
    peer: String,
    seq: u32,
    timeout: Duration,
    /// Outgoing frame (header + one page): built in place, sent with one write.
    out: Box<[u8; HEADER_LEN + PAGE_SIZE]>,
    /// How long to poll for a reply before blocking for it (see [`TcpTransport::set_poll`]).
    poll: Duration,
}

/// How long a page-path client polls for a reply by default: a server on a nearby host answers
/// a fetch well within it, and a thread blocked in `read` pays the kernel's wake-up latency on
/// top of the round trip (on the nested machines of `environment.md`, a 4 KB loopback round
/// trip takes ~44 us blocking and ~18 us polling).
pub const DEFAULT_POLL: Duration = Duration::from_micros(200);

impl TcpTransport {
    /// Connects to `addr`, introduces itself with `me` and waits for the server's verdict.
    /// Replies slower than `timeout` are errors, so a stopped server cannot hang the caller.
    pub fn connect(addr: &str, me: Hello, timeout: Duration) -> Result<TcpTransport, ProtoError> {
        let peer = addr.to_string();
        let io = |source| ProtoError::Io { peer: peer.clone(), source };
        let sock = addr
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| io(std::io::Error::new(ErrorKind::InvalidInput, "no address")))?;
        let stream = TcpStream::connect_timeout(&sock, timeout).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut t = TcpTransport {
            stream,
            peer,
            seq: 0,
            timeout,
            out: Box::new([0; HEADER_LEN + PAGE_SIZE]),
            poll: Duration::ZERO,
        };
        t.send(&me.encode())?;
        let mut b = [0u8; HELLO_LEN];
        t.recv(&mut b)?;
        let theirs = Hello::decode(&b)?;
        if theirs.refusal != 0 {
            return Err(me.mismatch(&theirs, theirs.refusal));
        }
        // The cluster secret, both ways.
        let secret = Secret::current();
        let mut server_nonce = [0u8; NONCE_LEN];
        t.recv(&mut server_nonce)?;
        let sent = secret.client_message(&server_nonce);
        t.send(&sent)?;
        let mut verdict = [0u8; VERDICT_LEN];
        t.recv(&mut verdict)?;
        match secret.check_verdict(&server_nonce, &sent, &verdict) {
            Ok(()) => Ok(t),
            Err(AuthError::Refused) => Err(ProtoError::Refused(format!(
                "the {} at {addr} refused this {}: wrong or missing cluster secret ({SECRET_ENV})",
                theirs.kind, me.kind
            ))),
            Err(AuthError::Impostor) => {
                Err(ProtoError::Refused(format!("the {} at {addr} does not know the cluster secret ({SECRET_ENV})", theirs.kind)))
            }
        }
    }

    /// Polls for up to `poll` for each reply before blocking for it (zero, the default after
    /// `connect`: block at once). For the page path, whose caller has nothing else to do
    /// meanwhile: a vCPU waiting for its missing line.
    pub fn set_poll(&mut self, poll: Duration) {
        self.poll = poll;
    }

    /// Waits for the first byte of a reply by polling (see [`poll_readable`]).
    fn poll_reply(&self) {
        poll_readable(&self.stream, self.poll);
    }

    /// Proof that this connection passed the handshake (a `TcpTransport` exists only once the
    /// peer's hello and secret proof were accepted): what the RDMA parameter exchange needs.
    pub fn authenticated(&self) -> crate::rdma::params::Authenticated {
        crate::rdma::params::Authenticated::new(self.peer.clone())
    }

    /// Sends this side's RDMA connection parameters over the authenticated connection and
    /// returns the server's (not yet validated: see [`crate::rdma::params::RtsPermit`]).
    pub fn rdma_connect(&mut self, mine: &crate::rdma::params::ConnectParams) -> Result<crate::rdma::params::ConnectParams, ProtoError> {
        let mut h = self.next(Op::RdmaConnect, 0, 0, 0);
        h.len = crate::frame::RDMA_PARAMS_LEN as u32;
        let mut frame = Vec::with_capacity(HEADER_LEN + crate::frame::RDMA_PARAMS_LEN);
        frame.extend_from_slice(&h.encode());
        frame.extend_from_slice(&mine.encode());
        self.send(&frame)?;
        let r = self.reply_header(&h)?;
        if r.status != Status::Ok {
            // `Status::NoRdma` from a server without an RDMA page path.
            return Err(ProtoError::Remote { peer: self.peer.clone(), status: r.status });
        }
        let mut body = [0u8; crate::frame::RDMA_PARAMS_LEN];
        self.recv(&mut body)?;
        crate::rdma::params::ConnectParams::decode(&body).map_err(|e| ProtoError::Malformed(format!("{}: {e}", self.peer)))
    }

    /// The socket, past the handshake: for tools and tests that speak raw frames.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

/// Polls `stream` for up to `poll` until a byte can be read (or an error or end of file is
/// pending), yielding the core between looks so that a server thread waiting for it can run.
/// A blocking read after it then finds its data at once, without paying the kernel's wake-up
/// latency. Returns at once for a zero `poll`. Works on any socket (a tokio stream too).
pub fn poll_readable(stream: &impl AsRawFd, poll: Duration) {
    if poll.is_zero() {
        return;
    }
    let fd = stream.as_raw_fd();
    let started = Instant::now();
    let mut b = 0u8;
    loop {
        // SAFETY: a one-byte peek into our own byte; the fd is the caller's socket.
        let n = unsafe { libc::recv(fd, (&mut b as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n >= 0 || std::io::Error::last_os_error().kind() != ErrorKind::WouldBlock || started.elapsed() >= poll {
            return;
        }
        std::thread::yield_now();
    }
}

/// Waits (up to the stream's read timeout) for the peer to close `stream`: `true` on end of
/// file or a reset, `false` if bytes arrived instead. For checking that a server dropped a
/// connection it should have dropped.
pub fn closed_by_peer(stream: &mut TcpStream) -> std::io::Result<bool> {
    let mut b = [0u8; 64];
    match stream.read(&mut b) {
        Ok(0) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(true),
        Err(e) => Err(e),
    }
}

impl TcpTransport {

    fn err(&self, e: std::io::Error) -> ProtoError {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                ProtoError::Timeout { peer: self.peer.clone(), secs: self.timeout.as_secs().max(1) }
            }
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
                ProtoError::Closed { peer: self.peer.clone() }
            }
            _ => ProtoError::Io { peer: self.peer.clone(), source: e },
        }
    }

    fn send(&mut self, b: &[u8]) -> Result<(), ProtoError> {
        self.stream.write_all(b).map_err(|e| self.err(e))
    }

    fn recv(&mut self, b: &mut [u8]) -> Result<(), ProtoError> {
        self.stream.read_exact(b).map_err(|e| self.err(e))
    }

    /// Sends a page request (the page, if any, from `page`) and reads the reply header.
    fn page_request(&mut self, h: Header, page: Option<&[u8; PAGE_SIZE]>) -> Result<Header, ProtoError> {
        self.out[..HEADER_LEN].copy_from_slice(&h.encode());
        let n = match page {
            Some(p) => {
                self.out[HEADER_LEN..].copy_from_slice(p);
                HEADER_LEN + PAGE_SIZE
            }
            None => HEADER_LEN,
        };
        let sent = self.stream.write_all(&self.out[..n]);
        sent.map_err(|e| self.err(e))?;
        self.reply_header(&h)
    }

    fn reply_header(&mut self, req: &Header) -> Result<Header, ProtoError> {
        let mut b = [0u8; HEADER_LEN];
        self.poll_reply();
        self.recv(&mut b)?;
        let r = Header::decode(&b)?;
        r.check_reply()?;
        if r.seq != req.seq || r.op != req.op {
            return Err(ProtoError::Malformed(format!(
                "{} answered {:?} #{} to {:?} #{}",
                self.peer, r.op, r.seq, req.op, req.seq
            )));
        }
        Ok(r)
    }

    fn next(&mut self, op: Op, proc: u64, addr: u64, addr2: u64) -> Header {
        self.seq = self.seq.wrapping_add(1);
        Header::request(op, self.seq, proc, addr, addr2)
    }

    fn finish_page(&mut self, r: Header, dst: Option<&mut [u8; PAGE_SIZE]>) -> Result<(), ProtoError> {
        if r.status != Status::Ok {
            return Err(ProtoError::Remote { peer: self.peer.clone(), status: r.status });
        }
        match dst {
            Some(d) => self.recv(d),
            None => Ok(()),
        }
    }
}

impl Transport for TcpTransport {
    fn peer(&self) -> &str {
        &self.peer
    }

    fn read_page(&mut self, proc: u64, addr: u64, buf: &mut RegisteredBuf, slot: Slot) -> Result<(), ProtoError> {
        let h = self.next(Op::Fetch, proc, addr, 0);
        let r = self.page_request(h, None)?;
        self.finish_page(r, Some(buf.page_mut(slot.0)))
    }

    fn read_pages(&mut self, proc: u64, addr: u64, n: u64, buf: &mut RegisteredBuf, first: Slot) -> Result<u64, ProtoError> {
        if n == 0 || n > MAX_RUN_PAGES || first.0 as u64 + n > buf.len() as u64 {
            return Err(ProtoError::Oversized { op: "FetchRun".into(), len: n as usize * PAGE_SIZE });
        }
        let h = self.next(Op::FetchRun, proc, addr, n);
        let r = self.page_request(h, None)?;
        if r.status != Status::Ok {
            return Err(ProtoError::Remote { peer: self.peer.clone(), status: r.status });
        }
        if r.addr2 == 0 || r.addr2 > n {
            return Err(ProtoError::Malformed(format!("{} answered {} pages to a fetch of {n}", self.peer, r.addr2)));
        }
        self.recv(buf.run_mut(first.0, r.addr2 as usize))?;
        Ok(r.addr2)
    }

    fn write_page(&mut self, proc: u64, addr: u64, buf: &RegisteredBuf, slot: Slot) -> Result<(), ProtoError> {
        let h = self.next(Op::Flush, proc, addr, 0);
        let r = self.page_request(h, Some(buf.page(slot.0)))?;
        self.finish_page(r, None)
    }

    fn write_pages(&mut self, proc: u64, pages: &[(u64, Slot)], buf: &RegisteredBuf) -> Result<(), ProtoError> {
        let pending = self.start_writes(proc, pages, buf)?;
        self.finish_writes(pending)
    }

    fn start_writes(&mut self, proc: u64, pages: &[(u64, Slot)], buf: &RegisteredBuf) -> Result<PendingWrites, ProtoError> {
        let mut frames = Vec::with_capacity(pages.len() * (HEADER_LEN + PAGE_SIZE));
        let mut sent = Vec::with_capacity(pages.len());
        for &(addr, slot) in pages {
            let h = self.next(Op::Flush, proc, addr, 0);
            frames.extend_from_slice(&h.encode());
            frames.extend_from_slice(buf.page(slot.0));
            sent.push(h);
        }
        self.send(&frames)?;
        Ok(PendingWrites(sent))
    }

    fn finish_writes(&mut self, pending: PendingWrites) -> Result<(), ProtoError> {
        for h in &pending.0 {
            let r = self.reply_header(h)?;
            self.finish_page(r, None)?;
        }
        Ok(())
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
        let h = self.next(Op::FlushFetch, proc, read_addr, write_addr);
        let r = self.page_request(h, Some(buf.page(src.0)))?;
        self.finish_page(r, Some(buf.page_mut(dst.0)))
    }

    fn call(&mut self, proc: u64, request: &[u8]) -> Result<Vec<u8>, ProtoError> {
        let mut h = self.next(Op::Control, proc, 0, 0);
        h.len = u32::try_from(request.len())
            .ok()
            .filter(|&l| l as usize <= crate::frame::MAX_CONTROL_LEN)
            .ok_or(ProtoError::Oversized { op: "Control".into(), len: request.len() })?;
        let mut frame = Vec::with_capacity(HEADER_LEN + request.len());
        frame.extend_from_slice(&h.encode());
        frame.extend_from_slice(request);
        self.send(&frame)?;
        let r = self.reply_header(&h)?;
        if r.status != Status::Ok {
            return Err(ProtoError::Remote { peer: self.peer.clone(), status: r.status });
        }
        let mut body = vec![0u8; r.len as usize];
        self.recv(&mut body)?;
        Ok(body)
    }
}
