//! A storage server on loopback, driven through `TcpTransport::call` with encoded requests: every
//! operation's happy path and the errno Linux would give, readdir paging, isolation between
//! vNodes, hostile paths and names, malformed frames, and a restart on the same directory.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;

use lego_proto::codec::{decode, encode};
use lego_proto::frame::{Header, Op, Status, HEADER_LEN};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::storage::errno::*;
use lego_proto::storage::{
    DirEntry, FileAttr, FileKind, Owner, QuotaChange, StorageOp, StorageReply, StorageRequest, MAX_DIRENTS, MAX_IO, MAX_NAME, MAX_PATH,
};
use lego_proto::transport::{TcpTransport, Transport};
use lego_testkit::{assert_closed, malformed_frames, refused, CONNECT_TIMEOUT};
use storage_server::{Config, Handle, StorageServer};

const CLUSTER: u64 = 3;

fn start(dir: &std::path::Path) -> Handle {
    let config = Config { listen: "127.0.0.1:0".into(), dir: dir.to_path_buf(), cluster: CLUSTER };
    StorageServer::bind(config).unwrap().spawn().unwrap()
}

/// A client speaking for one vNode.
struct Client {
    t: TcpTransport,
    vnode: String,
}

impl Client {
    /// A client for `vnode`, which it first mounts (as the GSM does when the vNode is created).
    fn new(h: &Handle, vnode: &str) -> Client {
        let mut c = Client::connect(h, vnode);
        c.done(StorageOp::Mount { quota: QuotaChange::Keep });
        c
    }

    /// A client for `vnode`, as the server knows it (or not).
    fn connect(h: &Handle, vnode: &str) -> Client {
        let t = TcpTransport::connect(&h.addr().to_string(), Hello::new(ComponentKind::Processor, CLUSTER), CONNECT_TIMEOUT)
            .unwrap();
        Client { t, vnode: vnode.into() }
    }

    fn call(&mut self, op: StorageOp) -> StorageReply {
        let req = StorageRequest { vnode: self.vnode.clone(), op };
        decode(&self.t.call(0, &encode(&req)).unwrap()).unwrap()
    }

    fn err(&mut self, op: StorageOp) -> i32 {
        let desc = format!("{op:?}");
        match self.call(op) {
            StorageReply::Error(e) => e,
            other => panic!("{}: expected an error, got {other:?}", &desc[..desc.len().min(200)]),
        }
    }

    fn attr(&mut self, op: StorageOp) -> FileAttr {
        match self.call(op) {
            StorageReply::Attr(a) => a,
            other => panic!("expected attributes, got {other:?}"),
        }
    }

    fn done(&mut self, op: StorageOp) {
        let desc = format!("{op:?}");
        assert_eq!(self.call(op), StorageReply::Done, "{desc}");
    }

    fn stat(&mut self, path: &str) -> Result<FileAttr, i32> {
        match self.call(StorageOp::Stat { path: path.into() }) {
            StorageReply::Attr(a) => Ok(a),
            StorageReply::Error(e) => Err(e),
            other => panic!("{other:?}"),
        }
    }

    fn create(&mut self, path: &str) -> FileAttr {
        self.attr(StorageOp::Create { path: path.into(), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT })
    }

    fn mkdir(&mut self, path: &str) -> FileAttr {
        self.attr(StorageOp::Mkdir { path: path.into(), mode: 0o755, owner: Owner::ROOT })
    }

    fn write(&mut self, path: &str, offset: u64, data: &[u8]) -> FileAttr {
        self.attr(StorageOp::Write { path: path.into(), offset, data: data.to_vec() })
    }

    fn read(&mut self, path: &str, offset: u64, len: u32) -> Result<Vec<u8>, i32> {
        match self.call(StorageOp::Read { path: path.into(), offset, len }) {
            StorageReply::Data(d) => Ok(d),
            StorageReply::Error(e) => Err(e),
            other => panic!("{other:?}"),
        }
    }

    fn readdir_page(&mut self, path: &str, cookie: u64, max: u32) -> (Vec<DirEntry>, bool) {
        match self.call(StorageOp::Readdir { path: path.into(), cookie, max }) {
            StorageReply::Entries { entries, more } => (entries, more),
            other => panic!("{other:?}"),
        }
    }

    /// Every name in `path`, paging `max` at a time.
    fn ls(&mut self, path: &str, max: u32) -> Vec<String> {
        let (mut names, mut cookie) = (Vec::new(), 0);
        loop {
            let (entries, more) = self.readdir_page(path, cookie, max);
            assert!(entries.len() <= max as usize);
            names.extend(entries.iter().map(|e| String::from_utf8(e.name.clone()).unwrap()));
            if !more {
                return names;
            }
            cookie = entries.last().expect("more without entries").cookie;
        }
    }
}

#[test]
fn files_read_write_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::new(&h, "demo");
    let root = c.stat("/").unwrap();
    assert_eq!(root.kind, FileKind::Dir);

    let a = c.create("/f");
    assert_eq!((a.kind, a.mode, a.size), (FileKind::File, 0o644, 0));
    assert_eq!(c.write("/f", 0, b"hello world").size, 11);
    assert_eq!(c.read("/f", 0, 100).unwrap(), b"hello world", "short read at EOF");
    assert_eq!(c.read("/f", 6, 3).unwrap(), b"wor");
    assert_eq!(c.read("/f", 11, 10).unwrap(), b"", "empty at EOF");
    assert_eq!(c.read("/f", 1000, 10).unwrap(), b"", "empty past EOF");

    // A write past the end leaves a hole of zeros.
    assert_eq!(c.write("/f", 20, b"xyz").size, 23);
    let mut want = b"hello world".to_vec();
    want.resize(20, 0);
    want.extend_from_slice(b"xyz");
    assert_eq!(c.read("/f", 0, 100).unwrap(), want);

    // Truncate down and back up: the cut bytes come back as zeros.
    assert_eq!(c.attr(StorageOp::Truncate { path: b"/f".to_vec(), len: 5 }).size, 5);
    assert_eq!(c.read("/f", 0, 100).unwrap(), b"hello");
    assert_eq!(c.attr(StorageOp::Truncate { path: b"/f".to_vec(), len: 8 }).size, 8);
    assert_eq!(c.read("/f", 0, 100).unwrap(), b"hello\0\0\0");
    assert_eq!(c.stat("/f").unwrap().size, 8);

    // Create: exclusive, keep, truncate.
    assert_eq!(c.err(StorageOp::Create { path: b"/f".to_vec(), mode: 0o600, exclusive: true, truncate: false, owner: Owner::ROOT }), EEXIST);
    let kept = c.attr(StorageOp::Create { path: b"/f".to_vec(), mode: 0o600, exclusive: false, truncate: false, owner: Owner::ROOT });
    assert_eq!((kept.size, kept.ino, kept.mode), (8, a.ino, 0o644));
    let emptied = c.attr(StorageOp::Create { path: b"/f".to_vec(), mode: 0o600, exclusive: false, truncate: true, owner: Owner::ROOT });
    assert_eq!((emptied.size, emptied.ino), (0, a.ino));
    assert_eq!(c.read("/f", 0, 100).unwrap(), b"");

    // A large write and read, at the limit.
    let big: Vec<u8> = (0..MAX_IO).map(|i| (i * 7 % 251) as u8).collect();
    c.create("/big");
    assert_eq!(c.write("/big", 0, &[]).size, 0, "an empty write changes nothing");
    assert_eq!(c.write("/big", 3, &big).size, MAX_IO as u64 + 3);
    assert_eq!(c.read("/big", 3, MAX_IO as u32).unwrap(), big);

    // Errors.
    assert_eq!(c.read("/nope", 0, 1), Err(ENOENT));
    assert_eq!(c.err(StorageOp::Write { path: b"/nope".to_vec(), offset: 0, data: vec![1] }), ENOENT);
    assert_eq!(c.err(StorageOp::Truncate { path: b"/nope".to_vec(), len: 0 }), ENOENT);
    assert_eq!(c.read("/f", 0, MAX_IO as u32 + 1), Err(EINVAL));
    assert_eq!(c.err(StorageOp::Write { path: b"/f".to_vec(), offset: 0, data: vec![0; MAX_IO + 1] }), EINVAL);
    assert_eq!(c.read("/f", u64::MAX, 1), Err(EINVAL));
    assert_eq!(c.err(StorageOp::Write { path: b"/f".to_vec(), offset: u64::MAX, data: vec![1] }), EINVAL);
    assert_eq!(c.err(StorageOp::Write { path: b"/f".to_vec(), offset: i64::MAX as u64, data: vec![1] }), EFBIG);
    assert_eq!(c.err(StorageOp::Truncate { path: b"/f".to_vec(), len: u64::MAX }), EINVAL);
    c.mkdir("/d");
    assert_eq!(c.read("/d", 0, 1), Err(EISDIR));
    assert_eq!(c.err(StorageOp::Write { path: b"/d".to_vec(), offset: 0, data: vec![1] }), EISDIR);
    assert_eq!(c.err(StorageOp::Truncate { path: b"/d".to_vec(), len: 0 }), EISDIR);
    assert_eq!(c.err(StorageOp::Create { path: b"/d".to_vec(), mode: 0o644, exclusive: false, truncate: true, owner: Owner::ROOT }), EISDIR);
    assert_eq!(c.err(StorageOp::Create { path: b"/d".to_vec(), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT }), EEXIST);
    assert_eq!(c.err(StorageOp::Create { path: b"/".to_vec(), mode: 0o644, exclusive: false, truncate: false, owner: Owner::ROOT }), EISDIR);
    // The parent must exist and be a directory.
    assert_eq!(c.err(StorageOp::Create { path: b"/no/x".to_vec(), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT }), ENOENT);
    assert_eq!(c.err(StorageOp::Create { path: b"/f/x".to_vec(), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT }), ENOTDIR);
    assert_eq!(c.stat("/f/x"), Err(ENOTDIR));
    assert_eq!(c.stat("/f/x/y"), Err(ENOTDIR));
    assert_eq!(c.stat("/no/x/y"), Err(ENOENT));

    // Unlink.
    assert_eq!(c.err(StorageOp::Unlink { path: b"/d".to_vec() }), EISDIR);
    assert_eq!(c.err(StorageOp::Unlink { path: b"/".to_vec() }), EISDIR);
    assert_eq!(c.err(StorageOp::Unlink { path: b"/nope".to_vec() }), ENOENT);
    c.done(StorageOp::Unlink { path: b"/f".to_vec() });
    assert_eq!(c.stat("/f"), Err(ENOENT));
    assert_eq!(c.read("/f", 0, 1), Err(ENOENT));
    // A new file at the same path is a new, empty file.
    let again = c.create("/f");
    assert_ne!(again.ino, a.ino);
    assert_eq!(c.read("/f", 0, 100).unwrap(), b"");

    // Fsync of files and directories.
    c.done(StorageOp::Fsync { path: b"/big".to_vec() });
    c.done(StorageOp::Fsync { path: b"/d".to_vec() });
    assert_eq!(c.err(StorageOp::Fsync { path: b"/nope".to_vec() }), ENOENT);
}

#[test]
fn directories_and_rename() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::new(&h, "demo");

    let d = c.mkdir("/a");
    assert_eq!((d.kind, d.mode), (FileKind::Dir, 0o755));
    assert_eq!(c.err(StorageOp::Mkdir { path: b"/a".to_vec(), mode: 0o755, owner: Owner::ROOT }), EEXIST);
    assert_eq!(c.err(StorageOp::Mkdir { path: b"/".to_vec(), mode: 0o755, owner: Owner::ROOT }), EEXIST);
    assert_eq!(c.err(StorageOp::Mkdir { path: b"/x/y".to_vec(), mode: 0o755, owner: Owner::ROOT }), ENOENT);
    c.mkdir("/a/b");
    c.create("/a/b/f");
    c.write("/a/b/f", 0, b"deep");
    c.create("/file");
    assert_eq!(c.err(StorageOp::Mkdir { path: b"/file".to_vec(), mode: 0o755, owner: Owner::ROOT }), EEXIST);
    assert_eq!(c.err(StorageOp::Mkdir { path: b"/file/x".to_vec(), mode: 0o755, owner: Owner::ROOT }), ENOTDIR);

    // Rmdir.
    assert_eq!(c.err(StorageOp::Rmdir { path: b"/a".to_vec() }), ENOTEMPTY);
    assert_eq!(c.err(StorageOp::Rmdir { path: b"/file".to_vec() }), ENOTDIR);
    assert_eq!(c.err(StorageOp::Rmdir { path: b"/nope".to_vec() }), ENOENT);
    let e = c.err(StorageOp::Rmdir { path: b"/".to_vec() });
    assert!(e == 16 || e == EINVAL, "{e}");
    c.mkdir("/empty");
    c.done(StorageOp::Rmdir { path: b"/empty".to_vec() });
    assert_eq!(c.stat("/empty"), Err(ENOENT));

    // Readdir.
    assert_eq!(c.ls("/", 100), ["a", "file"]);
    assert_eq!(c.ls("/a", 100), ["b"]);
    assert_eq!(c.call(StorageOp::Readdir { path: b"/file".to_vec(), cookie: 0, max: 10 }), StorageReply::Error(ENOTDIR));
    assert_eq!(c.call(StorageOp::Readdir { path: b"/nope".to_vec(), cookie: 0, max: 10 }), StorageReply::Error(ENOENT));
    let (entries, more) = c.readdir_page("/a", 0, 10);
    assert!(!more);
    assert_eq!(entries[0].kind, FileKind::Dir);
    assert_eq!(entries[0].ino, c.stat("/a/b").unwrap().ino);

    // Rename of a file, keeping its inode and bytes.
    let f = c.stat("/a/b/f").unwrap();
    c.done(StorageOp::Rename { from: b"/a/b/f".to_vec(), to: b"/g".to_vec() });
    assert_eq!(c.stat("/a/b/f"), Err(ENOENT));
    assert_eq!(c.stat("/g").unwrap().ino, f.ino);
    assert_eq!(c.read("/g", 0, 10).unwrap(), b"deep");
    // Same path: nothing happens.
    c.done(StorageOp::Rename { from: b"/g".to_vec(), to: b"/g".to_vec() });
    assert_eq!(c.err(StorageOp::Rename { from: b"/nope".to_vec(), to: b"/nope".to_vec() }), ENOENT);
    // File over file replaces it.
    c.write("/file", 0, b"old");
    c.done(StorageOp::Rename { from: b"/g".to_vec(), to: b"/file".to_vec() });
    assert_eq!(c.read("/file", 0, 10).unwrap(), b"deep");
    assert_eq!(c.stat("/g"), Err(ENOENT));
    // File over directory, directory over file.
    assert_eq!(c.err(StorageOp::Rename { from: b"/file".to_vec(), to: b"/a".to_vec() }), EISDIR);
    assert_eq!(c.err(StorageOp::Rename { from: b"/a".to_vec(), to: b"/file".to_vec() }), ENOTDIR);
    // Directory over a non-empty / an empty directory.
    c.mkdir("/c");
    c.create("/c/keep");
    assert_eq!(c.err(StorageOp::Rename { from: b"/a".to_vec(), to: b"/c".to_vec() }), ENOTEMPTY);
    c.done(StorageOp::Unlink { path: b"/c/keep".to_vec() });
    // A directory into its own subtree; onto its own ancestor.
    assert_eq!(c.err(StorageOp::Rename { from: b"/a".to_vec(), to: b"/a/b/z".to_vec() }), EINVAL);
    assert_eq!(c.err(StorageOp::Rename { from: b"/a/b".to_vec(), to: b"/a".to_vec() }), ENOTEMPTY);
    assert_eq!(c.err(StorageOp::Rename { from: b"/nope".to_vec(), to: b"/x".to_vec() }), ENOENT);
    assert_eq!(c.err(StorageOp::Rename { from: b"/file".to_vec(), to: b"/nope/x".to_vec() }), ENOENT);
    assert_eq!(c.err(StorageOp::Rename { from: b"/file".to_vec(), to: b"/file/x".to_vec() }), ENOTDIR);
    // Rename of a directory moves its subtree.
    c.create("/a/b/f2");
    c.write("/a/b/f2", 0, b"moved along");
    c.mkdir("/a/b/sub");
    c.done(StorageOp::Rename { from: b"/a".to_vec(), to: b"/c".to_vec() });
    assert_eq!(c.stat("/a"), Err(ENOENT));
    assert_eq!(c.stat("/a/b/f2"), Err(ENOENT));
    assert_eq!(c.read("/c/b/f2", 0, 100).unwrap(), b"moved along");
    assert_eq!(c.stat("/c/b/sub").unwrap().kind, FileKind::Dir);
    assert_eq!(c.ls("/c/b", 100), ["f2", "sub"]);
    assert_eq!(c.ls("/", 100), ["file", "c"]);
    // And the moved tree behaves normally: rmdir, unlink, new files.
    c.done(StorageOp::Rmdir { path: b"/c/b/sub".to_vec() });
    c.done(StorageOp::Unlink { path: b"/c/b/f2".to_vec() });
    c.done(StorageOp::Rmdir { path: b"/c/b".to_vec() });
    assert_eq!(c.ls("/c", 100), Vec::<String>::new());
    c.create("/c/new");
    assert_eq!(c.ls("/c", 100), ["new"]);
    // `/` cannot be renamed.
    assert_eq!(c.err(StorageOp::Rename { from: b"/".to_vec(), to: b"/x".to_vec() }), 16);
}

#[test]
fn readdir_pages_with_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::new(&h, "pages");
    c.mkdir("/d");
    let names: Vec<String> = (0..50).map(|i| format!("file-{i:02}")).collect();
    for n in &names {
        c.create(&format!("/d/{n}"));
    }
    assert_eq!(c.ls("/d", 7), names);
    // Pages are at most `max` long and say whether more follow.
    let (first, more) = c.readdir_page("/d", 0, 7);
    assert_eq!((first.len(), more), (7, true));
    // Removing an entry already returned does not disturb the continuation.
    c.done(StorageOp::Unlink { path: format!("/d/{}", names[0]).into_bytes() });
    let (second, _) = c.readdir_page("/d", first.last().unwrap().cookie, 7);
    let got: Vec<&[u8]> = second.iter().map(|e| e.name.as_slice()).collect();
    let want: Vec<&[u8]> = names[7..14].iter().map(|n| n.as_bytes()).collect();
    assert_eq!(got, want);
    // The last page.
    let (last, more) = c.readdir_page("/d", second.last().unwrap().cookie, 1000);
    assert_eq!((last.len(), more), (36, false));
    // max 0 makes no sense.
    assert_eq!(c.err(StorageOp::Readdir { path: b"/d".to_vec(), cookie: 0, max: 0 }), EINVAL);
}

#[test]
fn readdir_caps_at_max_dirents() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::new(&h, "many");
    let n = MAX_DIRENTS + 5;
    for i in 0..n {
        c.create(&format!("/{i}"));
    }
    let (entries, more) = c.readdir_page("/", 0, u32::MAX);
    assert_eq!((entries.len(), more), (MAX_DIRENTS, true));
    assert_eq!(c.ls("/", u32::MAX).len(), n);
}

#[test]
fn vnodes_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut a = Client::new(&h, "a");
    let mut b = Client::new(&h, "b");
    let secret = a.create("/secret");
    a.write("/secret", 0, b"for a only");
    a.mkdir("/private");
    b.create("/mine");
    assert_eq!(b.stat("/secret"), Err(ENOENT));
    assert_eq!(b.read("/secret", 0, 100), Err(ENOENT));
    assert_eq!(b.err(StorageOp::Write { path: b"/secret".to_vec(), offset: 0, data: b"x".to_vec() }), ENOENT);
    assert_eq!(b.err(StorageOp::Unlink { path: b"/secret".to_vec() }), ENOENT);
    assert_eq!(b.err(StorageOp::Rename { from: b"/secret".to_vec(), to: b"/stolen".to_vec() }), ENOENT);
    assert_eq!(b.ls("/", 100), ["mine"]);
    assert_eq!(a.ls("/", 100), ["secret", "private"]);
    // The same inode number in another vNode is another file.
    let theirs = b.create("/secret");
    assert_eq!(b.read("/secret", 0, 100).unwrap(), b"");
    b.write("/secret", 0, b"b's");
    assert_eq!(a.read("/secret", 0, 100).unwrap(), b"for a only");
    assert_eq!(a.stat("/secret").unwrap().ino, secret.ino);
    let _ = theirs;
    // Hand-made requests trying to reach the other vNode, or the host, through the path or the
    // vNode name.
    for path in ["/../a/secret", "/../../vnodes/a/data/2", "../a/secret", "/./secret", "//secret", "/secret/"] {
        assert_eq!(b.read(path, 0, 100), Err(EINVAL), "{path}");
        assert_eq!(b.stat(path), Err(EINVAL), "{path}");
    }
    for vnode in ["", ".", "..", "a/../a", "../a", "a/", "a b", "a\0", &"v".repeat(65)] {
        let mut evil = Client::connect(&h, vnode);
        assert_eq!(evil.err(StorageOp::Mount { quota: QuotaChange::Keep }), EINVAL, "{vnode:?}");
        assert_eq!(evil.stat("/secret"), Err(EINVAL), "{vnode:?}");
        assert_eq!(evil.call(StorageOp::Readdir { path: b"/".to_vec(), cookie: 0, max: 10 }), StorageReply::Error(EINVAL));
    }
}

#[test]
fn bad_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::new(&h, "demo");
    let long_name = format!("/{}", "n".repeat(MAX_NAME + 1));
    let ok_name = format!("/{}", "n".repeat(MAX_NAME));
    let long_path: String = "/x".repeat(MAX_PATH / 2 + 1);
    assert!(long_path.len() > MAX_PATH);
    assert_eq!(c.stat(&long_name), Err(ENAMETOOLONG));
    assert_eq!(c.err(StorageOp::Create { path: long_name.clone().into(), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT }), ENAMETOOLONG);
    assert_eq!(c.err(StorageOp::Mkdir { path: long_path.clone().into(), mode: 0o755, owner: Owner::ROOT }), ENAMETOOLONG);
    assert_eq!(c.err(StorageOp::Rename { from: b"/x".to_vec(), to: long_name.clone().into() }), ENAMETOOLONG);
    c.create(&ok_name);
    assert_eq!(c.stat(&ok_name).unwrap().size, 0);
    for bad in [&b"/a/../b"[..], b"/a\0b", b"relative", b"", b"/a//b", b"/.", b"/a/.."] {
        let path = bad.to_vec();
        assert_eq!(c.err(StorageOp::Stat { path: path.clone() }), EINVAL, "{bad:?}");
        assert_eq!(c.err(StorageOp::Create { path: path.clone(), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT }), EINVAL);
        assert_eq!(c.err(StorageOp::Unlink { path: path.clone() }), EINVAL);
        assert_eq!(c.err(StorageOp::Rename { from: ok_name.clone().into(), to: path.clone() }), EINVAL);
        assert_eq!(c.err(StorageOp::Rename { from: path.clone(), to: b"/y".to_vec() }), EINVAL);
    }
    // Nothing was created by the refused requests.
    let names = c.ls("/", 100);
    assert_eq!(names, [ok_name[1..].to_string()]);
}

/// A raw connection past the handshake.
fn raw(h: &Handle) -> TcpStream {
    lego_testkit::raw(&h.addr().to_string(), CLUSTER)
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut good = Client::new(&h, "demo");
    good.create("/f");
    for bytes in malformed_frames() {
        let mut s = raw(&h);
        s.write_all(&bytes).unwrap();
        assert_closed(s);
        assert!(good.stat("/f").is_ok(), "the other connection still works");
    }
    // A well-formed frame whose body is not a request gets an error reply, not a hang-up.
    for body in [vec![0xffu8; 16], vec![], encode(&StorageReply::Done)] {
        let reply: StorageReply = decode(&good.t.call(0, &body).unwrap()).unwrap();
        assert_eq!(reply, StorageReply::Error(EINVAL));
    }
    // A request whose inner lengths lie (a path claiming 2^40 bytes) is refused without harm.
    let mut lying = encode(&StorageRequest { vnode: "demo".into(), op: StorageOp::Stat { path: b"/f".to_vec() } });
    let n = lying.len();
    lying[n - 10..n - 2].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let reply: StorageReply = decode(&good.t.call(0, &lying).unwrap()).unwrap();
    assert_eq!(reply, StorageReply::Error(EINVAL));
    // Page requests make no sense to a storage server.
    let mut s = raw(&h);
    s.write_all(&Header::request(Op::Fetch, 5, 1, 0x1000, 0).encode()).unwrap();
    let mut b = [0u8; HEADER_LEN];
    s.read_exact(&mut b).unwrap();
    let r = Header::decode(&b).unwrap();
    assert_eq!((r.seq, r.status, r.len), (5, Status::BadRequest, 0));
    assert_eq!(good.read("/f", 0, 10).unwrap(), b"");
}

#[test]
fn handshakes_from_other_clusters_and_kinds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let addr = h.addr().to_string();
    for me in [Hello::new(ComponentKind::Processor, CLUSTER + 1), Hello::new(ComponentKind::Storage, CLUSTER)] {
        let m = refused(&addr, me);
        assert!(m.contains("storage-server"), "{m}");
    }
    // pComponents, mem-servers (which forward their vNodes' file requests), the global manager
    // (which mounts vNodes) and clients are welcome.
    Client::new(&h, "demo");
    for kind in [ComponentKind::Processor, ComponentKind::Memory, ComponentKind::Global, ComponentKind::Client] {
        let t = TcpTransport::connect(&addr, Hello::new(kind, CLUSTER), CONNECT_TIMEOUT).unwrap();
        Client { t, vnode: "demo".into() }.stat("/").unwrap();
    }
}

#[test]
fn restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::new(&h, "demo");
    c.mkdir("/d");
    c.create("/d/f");
    c.write("/d/f", 0, b"persistent");
    c.create("/gone");
    c.write("/gone", 0, b"bye");
    c.done(StorageOp::Fsync { path: b"/gone".to_vec() });
    c.done(StorageOp::Unlink { path: b"/gone".to_vec() });
    let before = c.stat("/d/f").unwrap();
    drop(c);
    h.shutdown();

    let h = start(dir.path());
    // Known after the restart without being told again.
    let mut c = Client::connect(&h, "demo");
    assert_eq!(c.stat("/d/f").unwrap(), before);
    assert_eq!(c.read("/d/f", 0, 100).unwrap(), b"persistent");
    assert_eq!(c.stat("/gone"), Err(ENOENT));
    assert_eq!(c.ls("/", 10), ["d"]);
    // New inode numbers do not collide with the old ones.
    let n = c.create("/new");
    assert!(n.ino > before.ino);
    // Exactly the two live files have host files.
    let data = dir.path().join("vnodes/demo/data");
    assert_eq!(std::fs::read_dir(data).unwrap().count(), 2);
}

/// A vNode nobody told the server about is refused, whatever the request; once mounted it works.
#[test]
fn unknown_vnodes_are_refused_until_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::connect(&h, "typo");
    assert_eq!(c.stat("/"), Err(ENOVNODE));
    assert_eq!(c.err(StorageOp::Create { path: b"/f".to_vec(), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT }), ENOVNODE);
    assert_eq!(c.err(StorageOp::Mkdir { path: b"/d".to_vec(), mode: 0o755, owner: Owner::ROOT }), ENOVNODE);
    assert_eq!(c.err(StorageOp::StatFs), ENOVNODE);
    assert_eq!(c.err(StorageOp::SyncFs), ENOVNODE);
    assert_eq!(c.err(StorageOp::Resolve { path: b"/x".to_vec(), follow: true }), ENOVNODE);
    assert!(!dir.path().join("vnodes/typo").exists(), "no mount is made for it");
    c.done(StorageOp::Mount { quota: QuotaChange::Keep });
    c.done(StorageOp::Mount { quota: QuotaChange::Keep });
    assert_eq!(c.stat("/").unwrap().kind, FileKind::Dir);
}

fn fs_stat(c: &mut Client) -> lego_proto::storage::FsStat {
    match c.call(StorageOp::StatFs) {
        StorageReply::FsStat(s) => s,
        other => panic!("{other:?}"),
    }
}

/// Writes, truncates and symlinks that would take a vNode past its quota get `ENOSPC` and change
/// nothing; the bytes before are intact; another vNode is not affected; freeing space lets the
/// vNode grow again; statfs reports the quota; the quota survives a restart.
#[test]
fn quotas_stop_a_vnode_at_its_limit_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::connect(&h, "small");
    c.done(StorageOp::Mount { quota: QuotaChange::Set(Some(10_000)) });
    let mut other = Client::new(&h, "big");
    c.create("/a");
    c.write("/a", 0, &[1u8; 6000]);
    c.create("/b");
    c.write("/b", 0, &[2u8; 4000]);
    assert_eq!(c.err(StorageOp::Write { path: b"/b".to_vec(), offset: 4000, data: vec![3] }), ENOSPC);
    assert_eq!(c.err(StorageOp::Write { path: b"/a".to_vec(), offset: 5000, data: vec![4; 1001] }), ENOSPC, "all or nothing");
    c.write("/a", 0, &[5u8; 6000]); // overwriting within the file needs no space
    assert_eq!(c.err(StorageOp::Truncate { path: b"/b".to_vec(), len: 4001 }), ENOSPC);
    assert_eq!(c.err(StorageOp::Symlink { path: b"/l".to_vec(), target: b"/a".to_vec(), owner: Owner::ROOT }), ENOSPC);
    assert_eq!(c.read("/a", 0, 7000).unwrap(), vec![5u8; 6000]);
    assert_eq!(c.read("/b", 0, 7000).unwrap(), vec![2u8; 4000]);
    assert_eq!(c.stat("/b").unwrap().size, 4000);
    let s = fs_stat(&mut c);
    assert_eq!((s.capacity_bytes, s.used_bytes, s.free_bytes, s.quota_bytes), (10_000, 10_000, 0, Some(10_000)));
    // The other vNode has no quota.
    other.create("/x");
    other.write("/x", 0, &[9u8; 20_000]);
    assert_eq!(fs_stat(&mut other).quota_bytes, None);
    // Space freed by an unlink and a truncate is free again.
    c.done(StorageOp::Unlink { path: b"/b".to_vec() });
    c.attr(StorageOp::Truncate { path: b"/a".to_vec(), len: 1000 });
    assert_eq!(fs_stat(&mut c).used_bytes, 1000);
    c.create("/c");
    c.write("/c", 0, &[6u8; 9000]);
    assert_eq!(c.err(StorageOp::Write { path: b"/c".to_vec(), offset: 9000, data: vec![7] }), ENOSPC);
    drop((c, other));
    h.shutdown();

    let h = start(dir.path());
    let mut c = Client::connect(&h, "small");
    assert_eq!(c.err(StorageOp::Write { path: b"/c".to_vec(), offset: 9000, data: vec![7] }), ENOSPC, "the quota is kept");
    assert_eq!(fs_stat(&mut c).used_bytes, 10_000);
    // A larger quota (a mount again) lets it grow.
    c.done(StorageOp::Mount { quota: QuotaChange::Set(Some(20_000)) });
    c.write("/c", 9000, &[7]);
    c.done(StorageOp::Mount { quota: QuotaChange::Keep });
    assert_eq!(fs_stat(&mut c).quota_bytes, Some(20_000), "a mount that does not know the quota keeps it");
    c.done(StorageOp::Mount { quota: QuotaChange::Set(None) });
    assert_eq!(fs_stat(&mut c).quota_bytes, None);
}

/// A storage directory of the builds before mounts (files of a vNode in the index, no mount
/// record) keeps serving that vNode, without a quota.
#[test]
fn vnodes_of_an_older_index_stay_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::new(&h, "old");
    c.create("/f");
    c.write("/f", 0, b"kept");
    drop(c);
    h.shutdown();
    {
        let db = redb::Database::create(dir.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut mounts = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("mounts")).unwrap();
            assert!(mounts.remove("old").unwrap().is_some());
        }
        txn.commit().unwrap();
    }
    let h = start(dir.path());
    let mut c = Client::connect(&h, "old");
    assert_eq!(c.read("/f", 0, 10).unwrap(), b"kept");
    assert_eq!(fs_stat(&mut c).quota_bytes, None);
}

/// A mount recorded in the index whose root entry never reached the disk (a power loss between
/// the two) gets its root again at start, and keeps its quota.
#[test]
fn a_mount_without_its_root_gets_one_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::connect(&h, "rootless");
    c.done(StorageOp::Mount { quota: QuotaChange::Set(Some(4096)) });
    drop(c);
    h.shutdown();
    {
        let db = redb::Database::create(dir.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut entries = txn.open_table(redb::TableDefinition::<(&str, &[u8]), &[u8]>::new("entries")).unwrap();
            assert!(entries.remove(("rootless", b"/".as_slice())).unwrap().is_some());
            let mut ids = txn.open_table(redb::TableDefinition::<&str, u64>::new("next_id")).unwrap();
            ids.remove("rootless").unwrap();
        }
        txn.commit().unwrap();
    }
    let h = start(dir.path());
    let mut c = Client::connect(&h, "rootless");
    assert_eq!(c.stat("/").unwrap().kind, FileKind::Dir);
    assert_eq!(fs_stat(&mut c).quota_bytes, Some(4096));
    c.create("/f");
    assert_eq!(c.err(StorageOp::Write { path: b"/f".to_vec(), offset: 0, data: vec![1; 4097] }), ENOSPC);
}

fn link(c: &mut Client, from: &str, to: &str) -> Result<FileAttr, i32> {
    match c.call(StorageOp::Link { from: from.into(), to: to.into() }) {
        StorageReply::Attr(a) => Ok(a),
        StorageReply::Error(e) => Err(e),
        other => panic!("{other:?}"),
    }
}

fn chown(c: &mut Client, path: &str, uid: Option<u32>, gid: Option<u32>) -> FileAttr {
    c.attr(StorageOp::SetAttr { path: path.into(), mode: None, mtime_ns: None, atime_ns: None, uid, gid })
}

/// Hard links: several names of one inode with one set of attributes and one `st_nlink`; data
/// written through one name is read through the other; unlinking a name keeps the data for the
/// others; a rename over a linked name drops only that name; the size counts once against the
/// quota; links and owner ids survive a restart, and the host file goes with the last name.
#[test]
fn hard_links_and_owners() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::connect(&h, "links");
    c.done(StorageOp::Mount { quota: QuotaChange::Set(Some(10_000)) });
    c.mkdir("/d");
    c.create("/a");
    c.write("/a", 0, &[7u8; 6000]);
    let l = link(&mut c, "/a", "/d/b").unwrap();
    assert_eq!(l.nlink, 2);
    assert_eq!(c.stat("/a").unwrap().ino, c.stat("/d/b").unwrap().ino);
    assert_eq!(link(&mut c, "/a", "/d/b"), Err(EEXIST));
    assert_eq!(link(&mut c, "/d", "/e"), Err(EPERM));
    assert_eq!(link(&mut c, "/missing", "/e"), Err(ENOENT));
    assert_eq!(link(&mut c, "/a", "/nodir/e"), Err(ENOENT));
    // Counted once: 6000 of 10000 used, so another 6000 bytes do not fit but 4000 do.
    assert_eq!(fs_stat(&mut c).used_bytes, 6000);
    c.create("/big");
    assert_eq!(c.err(StorageOp::Write { path: b"/big".to_vec(), offset: 0, data: vec![1; 4001] }), ENOSPC);
    c.write("/d/b", 6000, b"tail");
    assert_eq!(c.stat("/a").unwrap().size, 6004, "one inode, one size");
    assert_eq!(fs_stat(&mut c).used_bytes, 6004);
    // Owners are the inode's: set through one name, seen through the other.
    let o = chown(&mut c, "/d/b", Some(1234), None);
    assert_eq!((o.uid, o.gid), (1234, 0));
    let o = chown(&mut c, "/a", None, Some(5678));
    assert_eq!((o.uid, o.gid, o.nlink), (1234, 5678, 2));
    assert_eq!(c.stat("/d/b").unwrap().gid, 5678);

    // A third name; renaming one name over another of the same inode does nothing (rename(2)).
    link(&mut c, "/a", "/c").unwrap();
    assert_eq!(c.stat("/a").unwrap().nlink, 3);
    c.done(StorageOp::Rename { from: b"/c".to_vec(), to: b"/a".to_vec() });
    assert_eq!((c.stat("/a").unwrap().nlink, c.stat("/c").unwrap().nlink), (3, 3));
    c.done(StorageOp::Unlink { path: b"/c".to_vec() });
    assert_eq!((c.stat("/a").unwrap().nlink, c.stat("/c")), (2, Err(ENOENT)));
    // A rename of another file over a linked name: that name goes, the inode stays.
    c.create("/other");
    c.write("/other", 0, b"x");
    c.done(StorageOp::Rename { from: b"/other".to_vec(), to: b"/a".to_vec() });
    let b = c.stat("/d/b").unwrap();
    assert_eq!((b.nlink, b.size), (1, 6004));
    assert_eq!(fs_stat(&mut c).used_bytes, 6005);
    link(&mut c, "/d/b", "/again").unwrap();
    let before = c.stat("/again").unwrap();
    drop(c);
    h.shutdown();

    let h = start(dir.path());
    let mut c = Client::connect(&h, "links");
    assert_eq!(c.stat("/again").unwrap(), before);
    assert_eq!((before.nlink, before.uid, before.gid), (2, 1234, 5678));
    assert_eq!(fs_stat(&mut c).used_bytes, 6005);
    c.done(StorageOp::Unlink { path: b"/d/b".to_vec() });
    let a = c.stat("/again").unwrap();
    assert_eq!((a.nlink, a.size), (1, 6004));
    let data = c.read("/again", 0, 7000).unwrap();
    assert_eq!(data.len(), 6004);
    assert!(data[..6000].iter().all(|&b| b == 7) && &data[6000..] == b"tail");
    c.done(StorageOp::Unlink { path: b"/again".to_vec() });
    assert_eq!(fs_stat(&mut c).used_bytes, 1);
    c.done(StorageOp::SyncFs);
    drop(c);
    h.shutdown();
    // The checkpoint at start removes the host file of the last name's inode: /a and /big left.
    let h = start(dir.path());
    let data = dir.path().join("vnodes/links/data");
    assert_eq!(std::fs::read_dir(data).unwrap().count(), 2);
    h.shutdown();
}

/// FIFOs and sockets: a node with attributes and no data (reads, writes and truncation of it
/// are refused, its pipe or socket lives in the VMM); `O_CREAT` without `O_EXCL` opens it
/// untouched; readdir names its kind; it can be renamed, hard-linked and removed, leaves no host
/// file, and survives a restart. No other kind is made by `Mknod`.
#[test]
fn fifos_and_sockets_are_nodes_without_data() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::new(&h, "fifos");
    c.mkdir("/d");
    let f = c.attr(StorageOp::Mknod { path: b"/d/p".to_vec(), kind: FileKind::Fifo, mode: 0o640, owner: Owner::ROOT });
    assert_eq!((f.kind, f.mode, f.size, f.nlink), (FileKind::Fifo, 0o640, 0, 1));
    assert_eq!(c.err(StorageOp::Mknod { path: b"/d/p".to_vec(), kind: FileKind::Fifo, mode: 0o600, owner: Owner::ROOT }), EEXIST);
    assert_eq!(c.err(StorageOp::Mknod { path: b"/none/p".to_vec(), kind: FileKind::Fifo, mode: 0o600, owner: Owner::ROOT }), ENOENT);
    assert_eq!(c.err(StorageOp::Mknod { path: b"/d/f".to_vec(), kind: FileKind::File, mode: 0o600, owner: Owner::ROOT }), EINVAL);
    let sock = c.attr(StorageOp::Mknod { path: b"/sock".to_vec(), kind: FileKind::Socket, mode: 0o755, owner: Owner::ROOT });
    assert_eq!((sock.kind, sock.mode, sock.size), (FileKind::Socket, 0o755, 0));
    assert_eq!(c.read("/sock", 0, 10), Err(EINVAL));
    assert_eq!(c.read("/d/p", 0, 10), Err(EINVAL));
    assert_eq!(c.err(StorageOp::Write { path: b"/d/p".to_vec(), offset: 0, data: b"x".to_vec() }), EINVAL);
    assert_eq!(c.err(StorageOp::Truncate { path: b"/d/p".to_vec(), len: 0 }), EINVAL);
    let opened = c.attr(StorageOp::Create { path: b"/d/p".to_vec(), mode: 0o644, exclusive: false, truncate: true, owner: Owner::ROOT });
    assert_eq!(opened, f);
    assert_eq!(c.err(StorageOp::Create { path: b"/d/p".to_vec(), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT }), EEXIST);
    let (entries, _) = c.readdir_page("/d", 0, 10);
    assert_eq!(entries.iter().map(|e| (e.name.clone(), e.kind)).collect::<Vec<_>>(), vec![(b"p".to_vec(), FileKind::Fifo)]);
    c.done(StorageOp::Rename { from: b"/d/p".to_vec(), to: b"/q".to_vec() });
    assert_eq!(link(&mut c, "/q", "/r").map(|a| (a.kind, a.nlink)), Ok((FileKind::Fifo, 2)));
    assert_eq!(fs_stat(&mut c).used_bytes, 0);
    let before = c.stat("/q").unwrap();
    c.done(StorageOp::SyncFs);
    drop(c);
    h.shutdown();

    let h = start(dir.path());
    let mut c = Client::connect(&h, "fifos");
    assert_eq!(c.stat("/q").unwrap(), before);
    assert_eq!(c.stat("/sock").map(|a| a.kind), Ok(FileKind::Socket));
    c.done(StorageOp::Unlink { path: b"/sock".to_vec() });
    c.done(StorageOp::Unlink { path: b"/q".to_vec() });
    c.done(StorageOp::Unlink { path: b"/r".to_vec() });
    assert_eq!(c.stat("/r"), Err(ENOENT));
    let data = dir.path().join("vnodes/fifos/data");
    assert_eq!(std::fs::read_dir(data).map_or(0, |d| d.count()), 0, "a FIFO or socket has no host file");
    drop(c);
    h.shutdown();
}

/// A directory's `st_nlink` is 2 plus its subdirectories, as on Linux, through mkdir, rmdir,
/// renames into and out of it, and a restart.
#[test]
fn directory_link_counts_follow_their_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::new(&h, "nlink");
    let nlink = |c: &mut Client, p: &str| c.stat(p).unwrap().nlink;
    assert_eq!(nlink(&mut c, "/"), 2);
    c.mkdir("/a");
    c.mkdir("/a/b");
    c.mkdir("/a/c");
    c.create("/a/f");
    c.mkdir("/a/b/d");
    assert_eq!((nlink(&mut c, "/"), nlink(&mut c, "/a"), nlink(&mut c, "/a/b"), nlink(&mut c, "/a/c")), (3, 4, 3, 2));
    assert_eq!(c.mkdir("/x").nlink, 2);
    c.done(StorageOp::Rename { from: b"/a/b".to_vec(), to: b"/x/b".to_vec() });
    assert_eq!((nlink(&mut c, "/a"), nlink(&mut c, "/x"), nlink(&mut c, "/x/b")), (3, 3, 3));
    c.done(StorageOp::Rmdir { path: b"/a/c".to_vec() });
    assert_eq!(nlink(&mut c, "/a"), 2);
    // A rename of a directory over an empty one replaces it: the parent counts one.
    c.mkdir("/a/e");
    c.done(StorageOp::Rename { from: b"/x/b".to_vec(), to: b"/a/e".to_vec() });
    assert_eq!((nlink(&mut c, "/a"), nlink(&mut c, "/x"), nlink(&mut c, "/a/e")), (3, 2, 3));
    c.done(StorageOp::SyncFs);
    drop(c);
    h.shutdown();

    let h = start(dir.path());
    let mut c = Client::connect(&h, "nlink");
    assert_eq!((nlink(&mut c, "/"), nlink(&mut c, "/a"), nlink(&mut c, "/x"), nlink(&mut c, "/a/e")), (4, 3, 2, 3));
    drop(c);
    h.shutdown();
}

/// Access times: set at creation, kept apart from the modification time by `SetAttr`, not moved
/// by reads or writes (the mount behaves as `noatime`), and kept across a restart.
#[test]
fn access_times_are_set_not_moved_by_reads() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let mut c = Client::new(&h, "atime");
    let created = c.create("/f");
    assert_eq!(created.atime_ns, created.mtime_ns);
    let set = |c: &mut Client, atime_ns, mtime_ns| {
        c.attr(StorageOp::SetAttr { path: b"/f".to_vec(), mode: None, mtime_ns, atime_ns, uid: None, gid: None })
    };
    let a = set(&mut c, Some(1_000_000_007), None);
    assert_eq!((a.atime_ns, a.mtime_ns), (1_000_000_007, created.mtime_ns));
    let a = set(&mut c, None, Some(5));
    assert_eq!((a.atime_ns, a.mtime_ns), (1_000_000_007, 5));
    c.write("/f", 0, b"data");
    c.read("/f", 0, 4).unwrap();
    let st = c.stat("/f").unwrap();
    assert_eq!(st.atime_ns, 1_000_000_007, "reads and writes leave the access time");
    assert!(st.mtime_ns > 5, "a write moves the modification time");
    c.done(StorageOp::SyncFs);
    drop(c);
    h.shutdown();
    let h = start(dir.path());
    let mut c = Client::connect(&h, "atime");
    assert_eq!(c.stat("/f").unwrap().atime_ns, 1_000_000_007);
    drop(c);
    h.shutdown();
}
