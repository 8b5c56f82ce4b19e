//! End-to-end tests of `lego storage-server` as a separate process: what was fsync'd survives
//! SIGKILL and a restart on the same directory, byte for byte, and the restarted server serves
//! normally. These tests do not need /dev/kvm.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::storage::{self, errno, FileAttr, Owner, StorageOp, StorageReply, StorageRequest, MAX_IO};
use lego_proto::transport::TcpTransport;

use lego_testkit as common;
use common::TimedOutput;
use common::Server;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A client of `server`'s mount for `vnode`, mounted (a no-op once it is).
fn client(server: &Server, vnode: &str, cluster: u64) -> Client {
    let t = TcpTransport::connect(&server.addr, Hello::new(ComponentKind::Processor, cluster), TIMEOUT).unwrap();
    let mut c = Client { t, vnode: vnode.into() };
    assert_eq!(c.call(StorageOp::Mount { quota: storage::QuotaChange::Keep }), StorageReply::Done);
    c
}

struct Client {
    t: TcpTransport,
    vnode: String,
}

impl Client {
    fn call(&mut self, op: StorageOp) -> StorageReply {
        storage::call(&mut self.t, &StorageRequest { vnode: self.vnode.clone(), op }).unwrap()
    }

    fn attr(&mut self, op: StorageOp) -> FileAttr {
        match self.call(op) {
            StorageReply::Attr(a) => a,
            other => panic!("expected attributes, got {other:?}"),
        }
    }

    fn create(&mut self, path: &str) {
        self.attr(StorageOp::Create { path: path.into(), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT });
    }

    /// Writes `data` in MAX_IO pieces.
    fn write_all(&mut self, path: &str, data: &[u8]) {
        for (i, chunk) in data.chunks(MAX_IO).enumerate() {
            let offset = (i * MAX_IO) as u64;
            self.attr(StorageOp::Write { path: path.into(), offset, data: chunk.to_vec() });
        }
    }

    fn fsync(&mut self, path: &str) {
        assert_eq!(self.call(StorageOp::Fsync { path: path.into() }), StorageReply::Done);
    }

    /// The whole file, read in MAX_IO pieces.
    fn read_all(&mut self, path: &str) -> Result<Vec<u8>, i32> {
        let mut out = Vec::new();
        loop {
            match self.call(StorageOp::Read { path: path.into(), offset: out.len() as u64, len: MAX_IO as u32 }) {
                StorageReply::Data(d) if d.is_empty() => return Ok(out),
                StorageReply::Data(d) => out.extend_from_slice(&d),
                StorageReply::Error(e) => return Err(e),
                other => panic!("{other:?}"),
            }
        }
    }

    fn names(&mut self, path: &str) -> Vec<String> {
        match self.call(StorageOp::Readdir { path: path.into(), cookie: 0, max: 1000 }) {
            StorageReply::Entries { entries, .. } => {
                entries.into_iter().map(|e| String::from_utf8(e.name).unwrap()).collect()
            }
            other => panic!("{other:?}"),
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

#[test]
fn fsynced_data_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let durable = pattern(3 * MAX_IO + 1234, 7);
    let overwritten = pattern(5000, 99);
    let server = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    let mut c = client(&server, "demo", 0);
    assert_eq!(c.attr(StorageOp::Mkdir { path: b"/dir".to_vec(), mode: 0o755, owner: Owner::ROOT }).mode, 0o755);
    c.create("/dir/durable");
    c.write_all("/dir/durable", &durable);
    c.fsync("/dir/durable");
    c.create("/volatile");
    c.write_all("/volatile", &overwritten);
    // After the fsync, more changes nobody syncs.
    c.create("/dir/later");
    c.attr(StorageOp::Write { path: b"/dir/durable".to_vec(), offset: durable.len() as u64, data: vec![1; 100] });
    server.kill();

    let server = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    let mut c = client(&server, "demo", 0);
    let got = c.read_all("/dir/durable").unwrap();
    assert!(got.len() >= durable.len(), "{} bytes after restart", got.len());
    assert!(got[..durable.len()] == durable[..], "fsync'd bytes differ after SIGKILL and restart");
    // The unsynced file is either lost or intact with zeros for anything that did not make it;
    // whatever the index says, reading it works.
    match c.read_all("/volatile") {
        Ok(d) => assert!(d.len() <= overwritten.len()),
        Err(e) => assert_eq!(e, errno::ENOENT),
    }
    // Host files nothing refers to any more were removed at start.
    let files = c.names("/").len() - 1 + c.names("/dir").len();
    assert_eq!(std::fs::read_dir(dir.path().join("vnodes/demo/data")).unwrap().count(), files);
    // The restarted server serves normally.
    assert!(c.names("/dir").contains(&"durable".to_string()));
    c.create("/dir/after");
    let fresh = pattern(100_000, 3);
    c.write_all("/dir/after", &fresh);
    assert_eq!(c.read_all("/dir/after").unwrap(), fresh);
    c.fsync("/dir/after");
    assert_eq!(c.call(StorageOp::Rename { from: b"/dir/after".to_vec(), to: b"/moved".to_vec() }), StorageReply::Done);
    c.fsync("/moved");
    server.kill();

    // And once more: both fsync'd files (one renamed before its fsync) are there.
    let server = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    let mut c = client(&server, "demo", 0);
    assert!(c.read_all("/dir/durable").unwrap()[..durable.len()] == durable[..]);
    assert_eq!(c.read_all("/moved").unwrap(), fresh);
    assert_eq!(c.read_all("/dir/after"), Err(errno::ENOENT));
}

#[test]
fn cluster_id_and_bad_directories() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::storage(dir.path(), "127.0.0.1:0", &["--cluster-id", "42"]);
    let refused = TcpTransport::connect(&server.addr, Hello::new(ComponentKind::Processor, 0), TIMEOUT);
    assert!(matches!(refused, Err(lego_proto::ProtoError::Refused(_))));
    let mut c = client(&server, "demo", 42);
    assert_eq!(c.names("/"), Vec::<String>::new());
    drop(server);

    // A --dir that is a file is a clear error, not a panic.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lego"))
        .args(["storage-server", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&file)
        .timed_output();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lego storage-server") && err.contains("plain-file"), "{err}");
}

/// `SyncFs` makes unsynced changes of the whole vNode survive SIGKILL too (as every answered
/// change does), and `StatFs` counts the vNode's own files and bytes only.
#[test]
fn syncfs_and_statfs_cover_the_whole_vnode() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    let mut other = client(&server, "other", 0);
    other.create("/elsewhere");
    other.write_all("/elsewhere", &pattern(50_000, 1));
    let mut c = client(&server, "demo", 0);
    for (i, len) in [(0, 10_000usize), (1, 3 * MAX_IO)] {
        let path = format!("/f{i}");
        c.create(&path);
        c.write_all(&path, &pattern(len, i as u8));
    }
    assert_eq!(c.call(StorageOp::SyncFs), StorageReply::Done);
    match c.call(StorageOp::StatFs) {
        StorageReply::FsStat(s) => {
            assert_eq!(s.used_bytes, (10_000 + 3 * MAX_IO) as u64);
            assert_eq!(s.files, 3, "/ and two files");
            assert!(s.capacity_bytes >= s.free_bytes && s.free_bytes > 0, "{s:?}");
        }
        other => panic!("{other:?}"),
    }
    server.kill();
    let server = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    let mut c = client(&server, "demo", 0);
    assert_eq!(c.read_all("/f1").unwrap(), pattern(3 * MAX_IO, 1));
    assert_eq!(c.read_all("/f0").unwrap(), pattern(10_000, 0));
}
