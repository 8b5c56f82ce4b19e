//! Concurrency of the storage path with real processes: 16 vNodes read and write their own files
//! through one `lego mem-server` in front of one `lego storage-server` at once, every byte
//! checked, while another vNode writes a large file and fsyncs it; requests of the 16 go on
//! while that fsync runs (measured); `O_EXCL` creates and renames are atomic against concurrent
//! clients. Then 4 processes of one vNode count in one remote file under record locks (that
//! test needs /dev/kvm).

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lego_proto::codec::{decode, encode};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{Reply, Request};
use lego_proto::storage::{Owner, StorageOp, StorageReply, StorageRequest, MAX_IO};
use lego_proto::transport::{TcpTransport, Transport};

use lego_testkit as common;
use common::TimedOutput;
use common::{image, kvm, Server};

/// A vNode's connection to a mem-server, sending file requests as its VMM does.
struct FileClient {
    t: TcpTransport,
    vnode: String,
}

impl FileClient {
    /// A client of vNode `vnode`, mounted through the mem-server (a no-op once it is).
    fn new(mem: &str, vnode: &str) -> FileClient {
        let t = TcpTransport::connect(mem, Hello::new(ComponentKind::Processor, 0), Duration::from_secs(60)).unwrap();
        let mut c = FileClient { t, vnode: vnode.into() };
        assert_eq!(c.file(StorageOp::Mount { quota: lego_proto::storage::QuotaChange::Keep }), StorageReply::Done);
        c
    }

    fn call(&mut self, req: &Request) -> StorageReply {
        match decode(&self.t.call(0, &encode(req)).unwrap()).unwrap() {
            Reply::File(StorageReply::Error(e)) => panic!("{}: {req:?} failed with errno {e}", self.vnode),
            Reply::File(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn file(&mut self, op: StorageOp) -> StorageReply {
        self.call(&Request::File(StorageRequest { vnode: self.vnode.clone(), op }))
    }
}

/// splitmix64 from a fixed seed.
fn next(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn sixteen_vnodes_at_once_while_another_fsyncs() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let storage = Server::start(&["storage-server", "--listen", "127.0.0.1:0", "--dir", dir.path().to_str().unwrap()]);
    let mem = Server::start(&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "1G", "--storage-server", &storage.addr]);
    let done = AtomicBool::new(false);
    // (start, end) of each fsync of the big file, and of each request of the 16.
    let fsyncs = Mutex::new(Vec::new());
    let requests = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut c = FileClient::new(&mem.addr, "slow");
            c.file(StorageOp::Create { path: b"/big".to_vec(), mode: 0o644, exclusive: false, truncate: true, owner: Owner::ROOT });
            let chunk = vec![0xa5u8; MAX_IO];
            for round in 0..2u64 {
                for i in 0..(48 << 20) / MAX_IO as u64 {
                    let data = chunk.iter().map(|b| b ^ round as u8).collect();
                    c.file(StorageOp::Write { path: b"/big".to_vec(), offset: i * MAX_IO as u64, data });
                }
                let t = Instant::now();
                assert_eq!(c.file(StorageOp::Fsync { path: b"/big".to_vec() }), StorageReply::Done);
                fsyncs.lock().unwrap().push((t, Instant::now()));
            }
            done.store(true, Ordering::Relaxed);
        });
        for n in 0..16u64 {
            let (done, requests, mem) = (&done, &requests, &mem.addr);
            s.spawn(move || {
                let mut c = FileClient::new(mem, &format!("v{n}"));
                let mut seed = n;
                let timed = |c: &mut FileClient, op: StorageOp| {
                    let t = Instant::now();
                    let r = c.file(op);
                    requests.lock().unwrap().push((t, Instant::now()));
                    r
                };
                let mut round = 0;
                while round < 2 || !done.load(Ordering::Relaxed) {
                    let path = format!("/f{}", round % 4).into_bytes();
                    timed(&mut c, StorageOp::Create { path: path.clone(), mode: 0o644, exclusive: false, truncate: true, owner: Owner::ROOT });
                    let len = 1 + next(&mut seed) % 100_000;
                    let want: Vec<u8> = (0..len).map(|_| next(&mut seed) as u8).collect();
                    let mut at = 0;
                    while at < want.len() {
                        let k = (1 + next(&mut seed) as usize % 70_000).min(want.len() - at);
                        timed(&mut c, StorageOp::Write { path: path.clone(), offset: at as u64, data: want[at..at + k].to_vec() });
                        at += k;
                    }
                    if round % 2 == 1 {
                        // Written back to storage now, then read from storage again.
                        c.call(&Request::FileClosed { vnode: c.vnode.clone(), path: path.clone() });
                    }
                    let mut got = Vec::new();
                    while got.len() < want.len() {
                        let op = StorageOp::Read { path: path.clone(), offset: got.len() as u64, len: MAX_IO as u32 };
                        match timed(&mut c, op) {
                            StorageReply::Data(d) if !d.is_empty() => got.extend_from_slice(&d),
                            other => panic!("v{n}: reading {} bytes: {other:?} at {}", want.len(), got.len()),
                        }
                    }
                    assert!(got == want, "v{n} round {round}: the bytes read differ from those written");
                    round += 1;
                }
            });
        }
    });
    let fsyncs = fsyncs.into_inner().unwrap();
    let requests = requests.into_inner().unwrap();
    let (longest_start, longest_end) = *fsyncs.iter().max_by_key(|(s, e)| *e - *s).unwrap();
    let during = requests.iter().filter(|(s, e)| *s >= longest_start && *e <= longest_end).count();
    let longest = longest_end - longest_start;
    eprintln!("longest fsync of 48 MiB: {longest:?}; requests of the 16 vNodes answered within it: {during} of {}", requests.len());
    assert!(during > 0, "no request of the 16 vNodes was answered during a {longest:?} fsync of another vNode's file");
}

/// 4 processes of one vNode increment a counter in one remote file under `F_SETLKW` write locks,
/// each logging its increments in slots after it (`lockcount`): no increment is lost, and the
/// file on the storage server holds them all after the program closed it.
#[test]
fn four_processes_of_one_vnode_share_a_remote_file_under_record_locks() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = Server::start(&["storage-server", "--listen", "127.0.0.1:0", "--dir", dir.path().to_str().unwrap()]);
    let mem = Server::start(&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "1G", "--storage-server", &storage.addr]);
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    std::fs::copy(image("lockcount"), img.path().join("bin/lockcount")).unwrap();
    let lego = || std::process::Command::new(env!("CARGO_BIN_EXE_lego"));
    common::push_image(&storage.addr, "locks", img.path());
    let out = lego()
        .args(["run", "--mem", "256M", "--vnode", "locks", "--mem-server", &mem.addr, "--storage-server", &storage.addr])
        .args(["/bin/lockcount", "/counter", "50"])
        .timed_output();
    assert_eq!(out.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "lockcount: 200 increments, all slots distinct\n");
    // Straight from the storage server: the counter, and 200 slots after it.
    let mut t = TcpTransport::connect(&storage.addr, Hello::new(ComponentKind::Processor, 0), Duration::from_secs(10)).unwrap();
    let req = StorageRequest { vnode: "locks".into(), op: StorageOp::Read { path: b"/counter".to_vec(), offset: 0, len: 4096 } };
    match lego_proto::storage::call(&mut t, &req).unwrap() {
        StorageReply::Data(d) => {
            assert_eq!(d.len(), 8 + 200 * 8);
            assert_eq!(u64::from_le_bytes(d[..8].try_into().unwrap()), 200);
        }
        other => panic!("{other:?}"),
    }
}

/// Through one mem-server: of 8 clients racing to create one name with `O_EXCL`, exactly one
/// wins; and a reader never sees a file that a writer keeps replacing by rename as missing or
/// mixed, only as one whole version or the next.
#[test]
fn exclusive_create_and_rename_are_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Server::start(&["storage-server", "--listen", "127.0.0.1:0", "--dir", dir.path().to_str().unwrap()]);
    let mem = Server::start(&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "1G", "--storage-server", &storage.addr]);
    let (mem, vnode) = (&mem.addr, "atomic");
    for round in 0..10 {
        let path = format!("/race{round}").into_bytes();
        let winners: usize = std::thread::scope(|s| {
            let racers: Vec<_> = (0..8)
                .map(|_| {
                    let path = path.clone();
                    s.spawn(move || {
                        let mut c = FileClient::new(mem, vnode);
                        let req = Request::File(StorageRequest {
                            vnode: vnode.into(),
                            op: StorageOp::Create { path, mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT },
                        });
                        match decode(&c.t.call(0, &encode(&req)).unwrap()).unwrap() {
                            Reply::File(StorageReply::Attr(_)) => 1,
                            Reply::File(StorageReply::Error(17)) => 0,
                            other => panic!("{other:?}"),
                        }
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).sum()
        });
        assert_eq!(winners, 1, "round {round}: O_EXCL creates that succeeded");
    }

    let version = |v: u8| vec![v; 20_000 + v as usize];
    let mut w = FileClient::new(mem, vnode);
    w.file(StorageOp::Create { path: b"/cur".to_vec(), mode: 0o644, exclusive: false, truncate: true, owner: Owner::ROOT });
    w.file(StorageOp::Write { path: b"/cur".to_vec(), offset: 0, data: version(0) });
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let stop = &stop;
        let reader = s.spawn(move || {
            let mut r = FileClient::new(mem, vnode);
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let op = StorageOp::Read { path: b"/cur".to_vec(), offset: 0, len: MAX_IO as u32 };
                let StorageReply::Data(d) = r.file(op) else { panic!("reading /cur") };
                let v = d[0];
                assert!(d == version(v), "a read of /cur mixed versions or was cut ({} bytes of version {v})", d.len());
                reads += 1;
            }
            reads
        });
        for v in 1..=60u8 {
            w.file(StorageOp::Create { path: b"/next".to_vec(), mode: 0o644, exclusive: false, truncate: true, owner: Owner::ROOT });
            w.file(StorageOp::Write { path: b"/next".to_vec(), offset: 0, data: version(v) });
            w.file(StorageOp::Rename { from: b"/next".to_vec(), to: b"/cur".to_vec() });
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
}
