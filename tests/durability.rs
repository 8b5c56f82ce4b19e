//! Crash consistency of `lego storage-server` as a separate process: every change a client was
//! answered for survives SIGKILL of the server at any moment, and after the restart the index
//! and the data files agree (no lost bytes, no garbage). The SIGKILL moments come from a fixed
//! seed, so a failure replays.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::storage::{self, errno, Owner, StorageOp, StorageReply, StorageRequest, MAX_IO};
use lego_proto::transport::TcpTransport;

use lego_testkit as common;
use common::TimedOutput;
use common::{image, kvm, Server};

const VNODE: &str = "crash";

/// splitmix64: the test's only source of randomness, from a fixed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn call(t: &mut TcpTransport, op: StorageOp) -> Result<StorageReply, lego_proto::ProtoError> {
    storage::call(t, &StorageRequest { vnode: VNODE.into(), op })
}

/// A connection to the storage server at `addr`, with the vNode mounted (a no-op once it is).
fn connect(addr: &str) -> TcpTransport {
    let mut t = TcpTransport::connect(addr, Hello::new(ComponentKind::Processor, 0), Duration::from_secs(10)).unwrap();
    assert_eq!(call(&mut t, StorageOp::Mount { quota: storage::QuotaChange::Keep }).unwrap(), StorageReply::Done);
    t
}

/// The whole file at `path` as the server holds it (`None` if it does not exist).
fn read_all(t: &mut TcpTransport, path: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let op = StorageOp::Read { path: path.into(), offset: out.len() as u64, len: MAX_IO as u32 };
        match call(t, op).unwrap() {
            StorageReply::Data(d) if d.is_empty() => return Some(out),
            StorageReply::Data(d) => out.extend_from_slice(&d),
            StorageReply::Error(e) if e == errno::ENOENT => return None,
            other => panic!("reading {path}: {other:?}"),
        }
    }
}

/// The names in directory `dir`, with their kinds.
fn names(t: &mut TcpTransport, dir: &str) -> Vec<String> {
    match call(t, StorageOp::Readdir { path: dir.into(), cookie: 0, max: 1000 }).unwrap() {
        StorageReply::Entries { entries, more: false } => {
            let mut n: Vec<String> = entries.into_iter().map(|e| String::from_utf8(e.name).unwrap()).collect();
            n.sort();
            n
        }
        other => panic!("listing {dir}: {other:?}"),
    }
}

/// A path's contents before and after a change (`None`: no such file).
type Change = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// What the client knows: the files it was answered for, and the one change that was in flight
/// when the server died (its paths before and after), which may or may not have happened.
#[derive(Default)]
struct Model {
    files: BTreeMap<String, Vec<u8>>,
    in_flight: Vec<Change>,
}

const DIRS: [&str; 3] = ["", "/a", "/a/b"];

/// Changes files at random until the server stops answering, recording each answered change.
fn churn(addr: &str, model: &Mutex<Model>, rng: &mut Rng) {
    let mut t = connect(addr);
    loop {
        let mut paths: Vec<String>;
        let op: StorageOp;
        let pick = |rng: &mut Rng| format!("{}/f{}", DIRS[rng.below(3) as usize], rng.below(12));
        let mut m = model.lock().unwrap();
        let existing: Vec<String> = m.files.keys().cloned().collect();
        let any = |rng: &mut Rng| existing.get(rng.below(existing.len().max(1) as u64) as usize).cloned();
        let mut after: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        match (rng.below(10), any(rng)) {
            (0..=1, _) | (_, None) => {
                let p = pick(rng);
                if m.files.contains_key(&p) {
                    continue;
                }
                after.insert(p.clone(), Some(Vec::new()));
                paths = vec![p.clone()];
                op = StorageOp::Create { path: p.into_bytes(), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT };
            }
            (2..=5, Some(p)) => {
                let old = &m.files[&p];
                let offset = rng.below(old.len() as u64 + 4096);
                let data: Vec<u8> = (0..1 + rng.below(70_000)).map(|_| rng.next() as u8).collect();
                let mut new = old.clone();
                let end = offset as usize + data.len();
                new.resize(new.len().max(end), 0);
                new[offset as usize..end].copy_from_slice(&data);
                after.insert(p.clone(), Some(new));
                paths = vec![p.clone()];
                op = StorageOp::Write { path: p.into_bytes(), offset, data };
            }
            (6, Some(p)) => {
                let to = pick(rng);
                after.insert(p.clone(), None);
                after.insert(to.clone(), Some(m.files[&p].clone()));
                if p == to {
                    continue;
                }
                paths = vec![p.clone(), to.clone()];
                op = StorageOp::Rename { from: p.into_bytes(), to: to.into_bytes() };
            }
            (7, Some(p)) => {
                after.insert(p.clone(), None);
                paths = vec![p.clone()];
                op = StorageOp::Unlink { path: p.into_bytes() };
            }
            (8, Some(p)) => {
                let mut new = m.files[&p].clone();
                new.resize(rng.below(new.len() as u64 + 5000) as usize, 0);
                after.insert(p.clone(), Some(new.clone()));
                paths = vec![p.clone()];
                op = StorageOp::Truncate { path: p.into_bytes(), len: new.len() as u64 };
            }
            (_, Some(p)) => {
                after.insert(p.clone(), Some(m.files[&p].clone()));
                paths = vec![p.clone()];
                op = StorageOp::Fsync { path: p.into_bytes() };
            }
        }
        paths.dedup();
        m.in_flight = paths.iter().map(|p| (p.clone(), m.files.get(p).cloned(), after[p].clone())).collect();
        drop(m);
        let reply = call(&mut t, op);
        let mut m = model.lock().unwrap();
        match reply {
            Ok(StorageReply::Error(e)) => panic!("{paths:?}: errno {e}"),
            Ok(_) => {
                for (p, v) in after {
                    match v {
                        Some(v) => m.files.insert(p, v),
                        None => m.files.remove(&p),
                    };
                }
                m.in_flight.clear();
            }
            Err(_) => return,
        }
    }
}

/// Whether `got` is what a change cut short by a crash may leave between `before` and `after`:
/// either length, and each byte from one of them (or a zero of a hole).
fn partial(got: &[u8], before: &[u8], after: &[u8]) -> bool {
    (got.len() == before.len() || got.len() == after.len())
        && got.iter().enumerate().all(|(i, &b)| before.get(i) == Some(&b) || after.get(i) == Some(&b) || b == 0)
}

/// Checks the restarted server against the model; settles the in-flight change as it turned out.
fn verify(addr: &str, dir: &Path, model: &mut Model, round: usize) {
    let mut t = connect(addr);
    for (p, before, after) in std::mem::take(&mut model.in_flight) {
        let got = read_all(&mut t, &p);
        let ok = match (&got, &before, &after) {
            (None, None, _) | (None, _, None) => true,
            (Some(g), Some(b), Some(a)) => partial(g, b, a),
            (Some(g), None, Some(a)) | (Some(g), Some(a), None) => g == a || g.is_empty(),
            _ => false,
        };
        assert!(ok, "round {round}: {p} after a change in flight is neither before nor after it");
        match got {
            Some(g) => model.files.insert(p, g),
            None => model.files.remove(&p),
        };
    }
    for (p, want) in &model.files {
        let got = read_all(&mut t, p);
        assert!(got.as_ref() == Some(want), "round {round}: {p} lost an acknowledged change ({:?} bytes, want {})", got.map(|g| g.len()), want.len());
    }
    let mut listed = 0;
    for d in DIRS {
        let want: Vec<String> = model
            .files
            .keys()
            .filter_map(|p| p.strip_prefix(&format!("{d}/")).filter(|n| !n.contains('/')).map(str::to_string))
            .collect();
        let mut got = names(&mut t, if d.is_empty() { "/" } else { d });
        got.retain(|n| n != "a" && n != "b");
        assert_eq!(got, want, "round {round}: names in {d:?}");
        listed += got.len();
    }
    // The index and the data files agree: one host file per file, none left over.
    let data = std::fs::read_dir(dir.join("vnodes").join(VNODE).join("data")).unwrap().count();
    assert_eq!(data, listed, "round {round}: host data files vs files in the index");
}

#[test]
fn acknowledged_changes_survive_sigkill_at_20_moments() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x1e90_5eed);
    let model = Arc::new(Mutex::new(Model::default()));
    let mut server = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    {
        let mut t = connect(&server.addr);
        for d in &DIRS[1..] {
            assert!(matches!(call(&mut t, StorageOp::Mkdir { path: d.as_bytes().to_vec(), mode: 0o755, owner: Owner::ROOT }), Ok(StorageReply::Attr(_))));
        }
    }
    let mut changes = 0;
    for round in 0..20 {
        let (addr, m) = (server.addr.clone(), model.clone());
        let mut crng = Rng(rng.next());
        let churner = std::thread::spawn(move || churn(&addr, &m, &mut crng));
        std::thread::sleep(Duration::from_millis(20 + rng.below(150)));
        server.kill();
        churner.join().unwrap();
        server = Server::storage(dir.path(), "127.0.0.1:0", &[]);
        let mut m = model.lock().unwrap();
        changes += m.files.len();
        verify(&server.addr, dir.path(), &mut m, round);
    }
    assert!(changes > 20, "the rounds changed almost nothing ({changes} files seen)");
}

/// The steps of issue 18: a file written by a program that then ran `sync` is there after the
/// storage server is SIGKILLed and restarted, and so is one that was only closed (its
/// write-back was acknowledged at close). Before the kill, `stat -f` reports the mount's space
/// with the vNode's files as its used blocks.
#[test]
fn a_synced_and_a_closed_file_survive_sigkill_of_the_storage_server() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    let mem = Server::mem("1G", Some(&storage.addr));
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    std::fs::copy(image("busybox"), img.path().join("bin/busybox")).unwrap();
    common::push_image(&storage.addr, VNODE, img.path());
    let out = Command::new(env!("CARGO_BIN_EXE_lego"))
        .args(["run", "--mem", "256M", "--vnode", VNODE, "--mem-server", &mem.addr, "--storage-server", &storage.addr])
        .args(["/bin/busybox", "sh", "-c", "echo durable > /keep.txt; sync && echo closed > /closed.txt"])
        .timed_output();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // statfs of the mount: NFS's type, 4 KB blocks, and the vNode's files (busybox, two small
    // files) as its used blocks.
    let out = Command::new(env!("CARGO_BIN_EXE_lego"))
        .args(["run", "--mem", "256M", "--vnode", VNODE, "--mem-server", &mem.addr, "--storage-server", &storage.addr])
        .args(["/bin/busybox", "stat", "-f", "-c", "%t %S %b %f %a", "/keep.txt"])
        .timed_output();
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<u64> = text.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect();
    assert!(text.starts_with("6969 4096 ") && f.len() == 4, "stat -f: {text:?} {}", String::from_utf8_lossy(&out.stderr));
    let used = (f[1] - f[2]) * 4096;
    let busybox = std::fs::metadata(image("busybox")).unwrap().len();
    assert!(used >= busybox && used < busybox + 3 * 4096 + 4096, "used {used} bytes for a busybox of {busybox}");
    assert_eq!(f[2], f[3], "free and available blocks");
    storage.kill();
    let storage = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    let mut t = connect(&storage.addr);
    assert_eq!(read_all(&mut t, "/keep.txt").as_deref(), Some(b"durable\n".as_slice()));
    assert_eq!(read_all(&mut t, "/closed.txt").as_deref(), Some(b"closed\n".as_slice()));
}

/// Modes, owner ids, modification and access times, symlinks and hard links a client was answered for
/// survive SIGKILL of the server: they are journalled before the reply and replayed at the
/// restart (a symlink's text is in its data file before that).
#[test]
fn attribute_changes_links_and_symlinks_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    let mut t = connect(&server.addr);
    let create = StorageOp::Create { path: b"/f".to_vec(), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT };
    assert!(matches!(call(&mut t, create), Ok(StorageReply::Attr(_))));
    assert!(matches!(call(&mut t, StorageOp::Mkdir { path: b"/d".to_vec(), mode: 0o755, owner: Owner::ROOT }), Ok(StorageReply::Attr(_))));
    for (path, target) in [("/d/s", "../f"), ("/abs", "/d/s")] {
        let op = StorageOp::Symlink { path: path.into(), target: target.into(), owner: Owner::ROOT };
        assert!(matches!(call(&mut t, op), Ok(StorageReply::Attr(_))));
    }
    let sets = [("/f", Some(0o4711), Some(1_500_000_000_123_456_789)), ("/d", None, Some(-5)), ("/f", Some(0o600), None)];
    for (path, mode, mtime_ns) in sets {
        // The access time a second before the modification time, where one is set.
        let atime_ns = mtime_ns.map(|m| m - 1_000_000_000);
        match call(&mut t, StorageOp::SetAttr { path: path.into(), mode, mtime_ns, atime_ns, uid: None, gid: None }).unwrap() {
            StorageReply::Attr(a) => {
                assert!(mode.is_none_or(|m| a.mode == m) && mtime_ns.is_none_or(|m| a.mtime_ns == m), "{a:?}");
                assert!(atime_ns.is_none_or(|m| a.atime_ns == m), "{a:?}")
            }
            other => panic!("{other:?}"),
        }
    }
    let missing = StorageOp::SetAttr { path: b"/nope".to_vec(), mode: Some(0o600), mtime_ns: None, atime_ns: None, uid: None, gid: None };
    assert_eq!(call(&mut t, missing).unwrap(), StorageReply::Error(errno::ENOENT));
    let create = StorageOp::Create { path: b"/g".to_vec(), mode: 0o600, exclusive: true, truncate: false, owner: Owner::ROOT };
    assert!(matches!(call(&mut t, create), Ok(StorageReply::Attr(_))));
    let write = StorageOp::Write { path: b"/g".to_vec(), offset: 0, data: b"linked".to_vec() };
    assert!(matches!(call(&mut t, write), Ok(StorageReply::Attr(_))));
    for to in ["/h", "/gone"] {
        assert!(matches!(call(&mut t, StorageOp::Link { from: b"/g".to_vec(), to: to.into() }), Ok(StorageReply::Attr(a)) if a.nlink >= 2));
    }
    let chown = StorageOp::SetAttr { path: b"/h".to_vec(), mode: None, mtime_ns: None, atime_ns: None, uid: Some(1234), gid: Some(5678) };
    assert!(matches!(call(&mut t, chown), Ok(StorageReply::Attr(a)) if (a.uid, a.gid, a.nlink) == (1234, 5678, 3)));
    assert_eq!(call(&mut t, StorageOp::Unlink { path: b"/gone".to_vec() }).unwrap(), StorageReply::Done);
    drop(t);
    server.kill();
    let server = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    let mut t = connect(&server.addr);
    let attr = |t: &mut TcpTransport, path: &str| match call(t, StorageOp::Stat { path: path.into() }).unwrap() {
        StorageReply::Attr(a) => (a.mode, a.mtime_ns, a.atime_ns),
        other => panic!("{other:?}"),
    };
    assert_eq!(attr(&mut t, "/f"), (0o600, 1_500_000_000_123_456_789, 1_499_999_999_123_456_789));
    assert_eq!(attr(&mut t, "/d"), (0o755, -5, -1_000_000_005));
    assert_eq!(call(&mut t, StorageOp::Readlink { path: b"/d/s".to_vec() }).unwrap(), StorageReply::Data(b"../f".to_vec()));
    let resolve = StorageOp::Resolve { path: b"/abs".to_vec(), follow: true };
    assert_eq!(call(&mut t, resolve).unwrap(), StorageReply::Data(b"/f".to_vec()));
    // The two names left of the linked file, its owners and its bytes.
    assert_eq!(call(&mut t, StorageOp::Stat { path: b"/gone".to_vec() }).unwrap(), StorageReply::Error(errno::ENOENT));
    for path in ["/h", "/g"] {
        match call(&mut t, StorageOp::Stat { path: path.into() }).unwrap() {
            StorageReply::Attr(a) => assert_eq!((a.nlink, a.uid, a.gid, a.mode, a.size), (2, 1234, 5678, 0o600, 6), "{path}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(read_all(&mut t, "/h").as_deref(), Some(b"linked".as_slice()));
}
