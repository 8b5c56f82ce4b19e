//! Three mem-servers on loopback, talking to each other and to a pComponent-like client over TCP.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;

use lego_proto::codec::{decode, encode};
use lego_proto::frame::{Header, Op, Status, HEADER_LEN};
use lego_proto::handshake::{ComponentKind, Hello, PROTOCOL_VERSION};
use lego_proto::mm::{Effect, MemCall, MemOutcome, ProcessSpec, Reply, Request};
use lego_proto::transport::{RegisteredBuf, Slot, TcpTransport, Transport};
use lego_proto::vma::{Prot, VmaKind};
use lego_proto::ProtoError;
use lego_testkit::{assert_closed, malformed_frames, refused, CONNECT_TIMEOUT};
use mem_server::{Config, Handle, MemServer};

const CLUSTER: u64 = 7;
const VS: u64 = 16 << 20;
const TOP: u64 = 64 * VS;
const MMAP_TOP: u64 = 60 * VS;
const PROC: u64 = 0x1_0000_0005;

fn start(n: usize, capacity_bytes: u64) -> Vec<Handle> {
    (0..n)
        .map(|_| {
            let config = Config::new("127.0.0.1:0", capacity_bytes, CLUSTER);
            MemServer::bind(config).unwrap().spawn().unwrap()
        })
        .collect()
}

fn connect(h: &Handle) -> TcpTransport {
    TcpTransport::connect(&h.addr().to_string(), Hello::new(ComponentKind::Processor, CLUSTER), CONNECT_TIMEOUT).unwrap()
}

fn spec(servers: &[Handle]) -> ProcessSpec {
    ProcessSpec {
        servers: servers.iter().map(|h| h.addr().to_string()).collect(),
        home: 0,
        vregion_size: VS,
        user_min: 0x10000,
        space_top: TOP,
        mmap_top: MMAP_TOP,
        stack: (TOP - VS / 2, TOP),
        replicas: 1,
        backup_storage: None,
    }
}

fn call(t: &mut TcpTransport, proc: u64, req: &Request) -> Reply {
    decode(&t.call(proc, &encode(req)).unwrap()).unwrap()
}

/// A pComponent's view: the home connection, one connection per server and the vRegion owners
/// it learnt from the home's answers.
struct Client {
    /// The process it is.
    proc: u64,
    home: TcpTransport,
    conns: HashMap<String, TcpTransport>,
    owners: HashMap<u64, String>,
    buf: RegisteredBuf,
}

impl Client {
    fn new(servers: &[Handle]) -> Client {
        let conns = servers.iter().map(|h| (h.addr().to_string(), connect(h))).collect();
        Client { proc: PROC, home: connect(&servers[0]), conns, owners: HashMap::new(), buf: RegisteredBuf::new(2) }
    }

    fn learn(&mut self, reply: Reply) -> MemOutcome {
        let Reply::Mem(Ok(outcome)) = reply else { panic!("{reply:?}") };
        for o in &outcome.owners {
            self.owners.insert(o.index, o.owner.clone());
        }
        outcome
    }

    fn mem(&mut self, c: MemCall) -> MemOutcome {
        let reply = call(&mut self.home, self.proc, &Request::Mem(c));
        self.learn(reply)
    }

    fn owner(&self, addr: u64) -> String {
        self.owners[&(addr / VS)].clone()
    }

    fn write(&mut self, addr: u64, byte: u8) {
        self.buf.page_mut(0).fill(byte);
        let owner = self.owner(addr);
        self.conns.get_mut(&owner).unwrap().write_page(self.proc, addr, &self.buf, Slot(0)).unwrap();
    }

    fn read_at(&mut self, server: &str, addr: u64) -> Result<u8, ProtoError> {
        self.conns.get_mut(server).unwrap().read_page(self.proc, addr, &mut self.buf, Slot(1))?;
        let p = self.buf.page(1);
        assert!(p.iter().all(|&b| b == p[0]), "a page is written whole");
        Ok(p[0])
    }

    /// Reads through the owner, and checks every other server refuses the page.
    fn read(&mut self, addr: u64) -> u8 {
        let owner = self.owner(addr);
        let others: Vec<String> = self.conns.keys().filter(|s| **s != owner).cloned().collect();
        for s in others {
            match self.read_at(&s, addr) {
                Err(ProtoError::Remote { status: Status::NotOwner, .. }) => {}
                other => panic!("{s} answered {other:?} for {addr:#x} owned by {owner}"),
            }
        }
        self.read_at(&owner, addr).unwrap()
    }
}

fn mmap(len: u64) -> MemCall {
    MemCall::Mmap { addr: 0, len, prot: Prot::RW, flags: 0x22, kind: VmaKind::Anon }
}

#[test]
fn a_process_spreads_over_three_servers() {
    let servers = start(3, 64 << 20);
    let mut c = Client::new(&servers);
    let created = call(&mut c.home, PROC, &Request::CreateProcess(spec(&servers)));
    let created = c.learn(created);
    assert_eq!(created.owners.len(), 1);
    assert!(matches!(created.effects[..], [Effect::Map(ref v)] if v.kind == VmaKind::Stack));
    // Three vRegions' worth, just below mmap_top: each new vRegion goes to a server with fewer.
    let a = c.mem(mmap(3 * VS)).value;
    assert_eq!(a, MMAP_TOP - 3 * VS);
    let used: BTreeSet<String> = [57, 58, 59, 63].iter().map(|i| c.owners[i].clone()).collect();
    assert_eq!(used.len(), 3, "{:?}", c.owners);
    // Pages go to their owners and come back; the others say NotOwner.
    for (i, addr) in [a, a + VS, a + 2 * VS + 4096, TOP - 4096].into_iter().enumerate() {
        c.write(addr, i as u8 + 1);
        assert_eq!(c.read(addr), i as u8 + 1);
    }
    assert_eq!(c.read(a + 8192), 0, "mapped, never written");
    // The piggybacked eviction: flush one page and fetch another in one exchange.
    let owner = c.owner(a);
    c.buf.page_mut(0).fill(0xab);
    c.conns.get_mut(&owner).unwrap().write_read_page(PROC, a + 4096, a, &mut c.buf, Slot(0), Slot(1)).unwrap();
    assert_eq!(c.buf.page(1)[0], 1);
    assert_eq!(c.read(a + 4096), 0xab);
    // Outside any region of an owned vRegion: a bad request, not zeroes.
    c.mem(MemCall::Munmap { addr: a, len: 4096 });
    match c.read_at(&owner, a) {
        Err(ProtoError::Remote { status: Status::BadRequest, .. }) => {}
        other => panic!("{other:?}"),
    }
    // mremap across owners moves the pages through the home.
    let moved = c.mem(MemCall::Mremap { old: a + 2 * VS, old_len: 8192, new_len: 8192, flags: 3, new_addr: 20 * VS });
    assert_eq!(moved.value, 20 * VS);
    assert_eq!(c.read(20 * VS + 4096), 3);
    // Stat counts the homed process and the frames.
    let Reply::Stat(s) = call(&mut c.home, 0, &Request::Stat) else { panic!() };
    assert_eq!(s.homed, 1);
    assert!(s.requests > 0 && s.capacity_pages == (64 << 20) / 4096);
    // Exit releases everything everywhere.
    assert_eq!(call(&mut c.home, PROC, &Request::ExitProcess), Reply::Done);
    for h in &servers {
        let Reply::Stat(s) = call(&mut connect(h), 0, &Request::Stat) else { panic!() };
        assert_eq!((s.used_pages, s.vregions, s.homed), (0, 0, 0), "{}", h.addr());
    }
    match c.home.call(PROC, &encode(&Request::Mem(mmap(4096)))) {
        Err(ProtoError::Remote { status: Status::UnknownProcess, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fork_copies_the_pages_at_their_owners() {
    let servers = start(2, 64 << 20);
    let mut parent = Client::new(&servers);
    let created = call(&mut parent.home, PROC, &Request::CreateProcess(spec(&servers)));
    parent.learn(created);
    // Two vRegions: the second goes to the other server.
    let a = parent.mem(mmap(2 * VS)).value;
    assert_ne!(parent.owner(a), parent.owner(a + VS));
    parent.write(a, 1);
    parent.write(a + VS, 2);
    let mut child = Client::new(&servers);
    child.proc = PROC + 1;
    let forked = call(&mut child.home, child.proc, &Request::ForkProcess { parent: PROC });
    let forked = child.learn(forked);
    assert!(forked.effects.iter().any(|e| matches!(e, Effect::Map(v) if v.start <= a && a < v.end)), "{forked:?}");
    assert!(forked.effects.iter().any(|e| matches!(e, Effect::Map(v) if v.kind == VmaKind::Stack)), "{forked:?}");
    assert_eq!(child.owners, parent.owners, "the copy stays on the same owners");
    assert_eq!((child.read(a), child.read(a + VS), child.read(a + 4096)), (1, 2, 0));
    // From now on each writes its own pages.
    parent.write(a, 9);
    child.write(a + VS, 8);
    assert_eq!((parent.read(a), parent.read(a + VS)), (9, 2));
    assert_eq!((child.read(a), child.read(a + VS)), (1, 8));
    // The copy's memory calls are its own too.
    child.mem(MemCall::Munmap { addr: a, len: 4096 });
    assert_eq!(parent.read(a), 9);
    match child.home.call(PROC + 2, &encode(&Request::ForkProcess { parent: 77 })) {
        Err(ProtoError::Remote { status: Status::UnknownProcess, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(call(&mut parent.home, PROC, &Request::ExitProcess), Reply::Done);
    assert_eq!(child.read(a + VS), 8, "the parent's exit leaves the copy");
    assert_eq!(call(&mut child.home, child.proc, &Request::ExitProcess), Reply::Done);
    for h in &servers {
        let Reply::Stat(s) = call(&mut connect(h), 0, &Request::Stat) else { panic!() };
        assert_eq!((s.used_pages, s.vregions, s.homed), (0, 0, 0), "{}", h.addr());
    }
}

/// The manager reclaims a silent process through its home, which releases the processes forked
/// from it there too (the manager may never have heard of a short-lived child), including a
/// grandchild whose own parent exited first; an unrelated process stays, and a process whose
/// lease is fresh is not reclaimed.
#[test]
fn reclaiming_a_process_releases_what_it_forked_there() {
    let servers = start(2, 64 << 20);
    let mut root = Client::new(&servers);
    let created = call(&mut root.home, PROC, &Request::CreateProcess(spec(&servers)));
    root.learn(created);
    let a = root.mem(mmap(2 * VS)).value;
    root.write(a, 1);
    root.write(a + VS, 2);
    let fork = |proc: u64, parent: u64| {
        let mut c = Client::new(&servers);
        c.proc = proc;
        let forked = call(&mut c.home, proc, &Request::ForkProcess { parent });
        c.learn(forked);
        c
    };
    let mut child = fork(PROC + 1, PROC);
    // Forked after the root's last renewal: its lease is younger, but it goes with the root.
    std::thread::sleep(std::time::Duration::from_millis(30));
    let mut grandchild = fork(PROC + 2, PROC + 1);
    assert_eq!(call(&mut child.home, child.proc, &Request::ExitProcess), Reply::Done);
    let mut other = Client::new(&servers);
    other.proc = PROC + 3;
    let created = call(&mut other.home, other.proc, &Request::CreateProcess(spec(&servers)));
    other.learn(created);
    let b = other.mem(mmap(4096)).value;
    other.write(b, 3);
    let mut manager = connect(&servers[0]);
    let fresh = call(&mut manager, PROC, &Request::Reclaim { silent_ms: 60_000 });
    assert!(matches!(fresh, Reply::Alive { .. }), "{fresh:?}");
    assert_eq!(call(&mut manager, PROC, &Request::Reclaim { silent_ms: 20 }), Reply::Done);
    let Reply::Stat(s) = call(&mut connect(&servers[0]), 0, &Request::Stat) else { panic!() };
    assert_eq!(s.homed, 1, "only the unrelated process is left");
    match grandchild.home.call(grandchild.proc, &encode(&Request::Mem(mmap(4096)))) {
        Err(ProtoError::Remote { status: Status::UnknownProcess, .. }) => {}
        other => panic!("the grandchild was not reclaimed: {other:?}"),
    }
    assert_eq!(other.read(b), 3);
    assert_eq!(call(&mut other.home, other.proc, &Request::ExitProcess), Reply::Done);
    for h in &servers {
        let Reply::Stat(s) = call(&mut connect(h), 0, &Request::Stat) else { panic!() };
        assert_eq!((s.used_pages, s.vregions, s.homed), (0, 0, 0), "{}", h.addr());
    }
}

#[test]
fn full_server_answers_no_space() {
    let servers = start(1, 2 * 4096);
    let mut c = Client::new(&servers);
    let created = call(&mut c.home, PROC, &Request::CreateProcess(spec(&servers)));
    c.learn(created);
    c.write(TOP - 4096, 1);
    c.write(TOP - 8192, 2);
    c.buf.page_mut(0).fill(3);
    let owner = c.owner(TOP - 4096);
    match c.conns.get_mut(&owner).unwrap().write_page(PROC, TOP - 3 * 4096, &c.buf, Slot(0)) {
        Err(ProtoError::Remote { status: Status::NoSpace, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(c.read(TOP - 3 * 4096), 0, "reading an unwritten page needs no frame");
    assert_eq!(c.read(TOP - 4096), 1);
}

/// A raw connection past the handshake.
fn raw(h: &Handle) -> TcpStream {
    lego_testkit::raw(&h.addr().to_string(), CLUSTER)
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let servers = start(1, 1 << 20);
    let mut good = connect(&servers[0]);
    let mut short_page = Header::request(Op::Flush, 1, 1, 0, 0);
    short_page.len = 0;
    for bytes in malformed_frames().into_iter().chain([short_page.encode().to_vec()]) {
        let mut s = raw(&servers[0]);
        s.write_all(&bytes).unwrap();
        assert_closed(s);
        assert!(matches!(call(&mut good, 0, &Request::Stat), Reply::Stat(_)), "the other connection still works");
    }
    // A well-formed frame whose control body is not a request gets an answer, not a hang-up.
    let body = vec![0xffu8; 16];
    let reply: Reply = decode(&good.call(0, &body).unwrap()).unwrap();
    assert!(matches!(reply, Reply::Failed(ref m) if m.contains("bad control message")), "{reply:?}");
    // Page requests for a process nobody knows.
    let mut buf = RegisteredBuf::new(1);
    match good.read_page(99, 0x1000, &mut buf, Slot(0)) {
        Err(ProtoError::Remote { status: Status::NotOwner, .. }) => {}
        other => panic!("{other:?}"),
    }
    match good.read_page(99, 0x1001, &mut buf, Slot(0)) {
        Err(ProtoError::Remote { status: Status::BadRequest, .. }) => {}
        other => panic!("{other:?}"),
    }
    // Pipelined requests on one raw connection get one reply each, in order.
    let mut s = raw(&servers[0]);
    let mut frames = Vec::new();
    for seq in 1..=3 {
        frames.extend_from_slice(&Header::request(Op::Fetch, seq, 99, 0x1000, 0).encode());
    }
    s.write_all(&frames).unwrap();
    for seq in 1..=3 {
        let mut b = [0u8; HEADER_LEN];
        s.read_exact(&mut b).unwrap();
        let h = Header::decode(&b).unwrap();
        assert_eq!((h.seq, h.status, h.len), (seq, Status::NotOwner, 0));
    }
}

#[test]
fn handshakes_from_other_clusters_versions_and_kinds_are_refused() {
    let servers = start(1, 1 << 20);
    let addr = servers[0].addr().to_string();
    let m = refused(&addr, Hello::new(ComponentKind::Processor, 8));
    assert!(m.contains("0x7") && m.contains("0x8") && m.contains("mem-server") && m.contains("pComponent"), "{m}");
    let m = refused(&addr, Hello { version: PROTOCOL_VERSION + 1, ..Hello::new(ComponentKind::Memory, CLUSTER) });
    assert!(m.contains(&format!("v{PROTOCOL_VERSION}")) && m.contains(&format!("v{}", PROTOCOL_VERSION + 1)), "{m}");
    let m = refused(&addr, Hello::new(ComponentKind::Storage, CLUSTER));
    assert!(m.contains("storage-server"), "{m}");
    // The server is still fine.
    assert!(matches!(call(&mut connect(&servers[0]), 0, &Request::Stat), Reply::Stat(_)));
}

#[test]
fn a_stopped_server_accepts_nothing() {
    let mut servers = start(1, 1 << 20);
    let h = servers.pop().unwrap();
    let addr = h.addr();
    let mut t = connect(&h);
    h.shutdown();
    assert!(TcpStream::connect(addr).is_err(), "still listening");
    assert!(t.call(0, &encode(&Request::Stat)).is_err(), "connection not closed");
}

#[test]
fn bind_errors_name_the_problem() {
    let c = |listen: &str, capacity_bytes| Config::new(listen, capacity_bytes, 1);
    let e = MemServer::bind(c("127.0.0.1:0", 100)).err().unwrap();
    assert!(e.to_string().contains("capacity of 100 bytes"), "{e}");
    let e = MemServer::bind(c("no-such-host.invalid:1", 1 << 20)).err().unwrap();
    assert!(e.to_string().contains("no-such-host.invalid:1"), "{e}");
}
