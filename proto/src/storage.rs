//! Control messages of the storage path (LegoOS §4.5), carried in [`crate::frame::Op::Control`]
//! frames as bincode.
//!
//! Storage is stateless, like NFSv2: every [`StorageRequest`] names the vNode, the full path and,
//! for I/O, the absolute offset and length, so a storage server keeps no per-client state and a
//! restarted server answers the next request as if nothing happened. Paths are absolute and
//! already normalised by the sender (no `.`, `..` or empty components); [`check_path`] is the one
//! rule both sides apply.

use serde::{Deserialize, Serialize};

/// Longest path, in bytes (Linux `PATH_MAX` minus its NUL).
pub const MAX_PATH: usize = 4095;
/// Longest name of one path component, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Longest vNode name, in bytes.
pub const MAX_VNODE: usize = 64;
/// Most bytes one read or write request moves; larger I/O is split by the sender.
pub const MAX_IO: usize = 512 * 1024;
/// Most entries one readdir reply carries.
pub const MAX_DIRENTS: usize = 1024;

/// Linux errno values the storage path answers with.
pub mod errno {
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// Operation not permitted (a hard link to a directory).
    pub const EPERM: i32 = 1;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Permission denied.
    pub const EACCES: i32 = 13;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// Not a directory.
    pub const ENOTDIR: i32 = 20;
    /// Is a directory.
    pub const EISDIR: i32 = 21;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// File too large.
    pub const EFBIG: i32 = 27;
    /// No space left on device.
    pub const ENOSPC: i32 = 28;
    /// File name too long.
    pub const ENAMETOOLONG: i32 = 36;
    /// Directory not empty.
    pub const ENOTEMPTY: i32 = 39;
    /// Too many levels of symbolic links.
    pub const ELOOP: i32 = 40;
    /// No such device: the storage server has not been told about the vNode (see
    /// [`super::StorageOp::Mount`]); its files are refused.
    pub const ENOVNODE: i32 = 19;
}

/// One request: which vNode's mount, and what to do there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRequest {
    /// The vNode whose mount the path lies in (see [`check_vnode`]).
    pub vnode: String,
    /// The operation.
    pub op: StorageOp,
}

/// A storage operation. Every path is absolute within the vNode's mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageOp {
    /// Attributes of `path` itself (a symlink's own, as `lstat` gives them).
    Stat { path: Vec<u8> },
    /// Up to `len` bytes of the file at `offset` (fewer at the end of the file).
    Read { path: Vec<u8>, offset: u64, len: u32 },
    /// Writes `data` at `offset`, extending the file as needed.
    Write {
        path: Vec<u8>,
        offset: u64,
        #[serde(with = "bytes")]
        data: Vec<u8>,
    },
    /// Creates a regular file (its parent must be a directory), owned as [`Owner::in_dir`]
    /// says. With `exclusive`, an existing file is `EEXIST`; otherwise an existing file is kept
    /// (its owner too), and emptied if `truncate`.
    Create { path: Vec<u8>, mode: u32, exclusive: bool, truncate: bool, owner: Owner },
    /// Sets the file's length.
    Truncate { path: Vec<u8>, len: u64 },
    /// Removes a file.
    Unlink { path: Vec<u8> },
    /// Renames a file or directory, replacing a file (or an empty directory) at `to` as
    /// rename(2) does.
    Rename { from: Vec<u8>, to: Vec<u8> },
    /// Creates a directory, owned as [`Owner::in_dir`] says (and set-group-ID under a
    /// set-group-ID directory, [`new_dir_mode`]).
    Mkdir { path: Vec<u8>, mode: u32, owner: Owner },
    /// Removes an empty directory.
    Rmdir { path: Vec<u8> },
    /// Up to `max` entries of a directory, starting after `cookie` (0 for the start), in a stable
    /// order. `.` and `..` are not included.
    Readdir { path: Vec<u8>, cookie: u64, max: u32 },
    /// Returns once the file's data and attributes are durable on disk.
    Fsync { path: Vec<u8> },
    /// `sync`/`syncfs`: returns once every file of the vNode and every change before the
    /// request are durable on disk.
    SyncFs,
    /// `statfs`: the space of the vNode's mount ([`StorageReply::FsStat`]).
    StatFs,
    /// `chmod`/`utimensat`/`chown`: sets the permission bits (`0o7777` at most), the
    /// modification and access times (nanoseconds since the epoch) and the owner ids where
    /// given, and the change time to now; answers the attributes afterwards. Owners are stored,
    /// not enforced.
    SetAttr { path: Vec<u8>, mode: Option<u32>, mtime_ns: Option<i64>, atime_ns: Option<i64>, uid: Option<u32>, gid: Option<u32> },
    /// Resolves `path` (absolute, not normalised: `.`, `..` and symlinks are resolved here, `..`
    /// staying at `/`) inside the mount, following a final symlink if `follow` (or if the path
    /// ends with `/`); answers the path it names, without symlinks ([`StorageReply::Data`]),
    /// whose final component need not exist. `ELOOP` after 40 symlinks.
    Resolve { path: Vec<u8>, follow: bool },
    /// Creates a symbolic link at `path` whose text is `target` (stored as given), owned as
    /// [`Owner::in_dir`] says.
    Symlink { path: Vec<u8>, target: Vec<u8>, owner: Owner },
    /// The text of the symbolic link at `path` ([`StorageReply::Data`]); `EINVAL` for anything
    /// else.
    Readlink { path: Vec<u8> },
    /// Tells the storage server about the vNode (the GSM when the vNode is created or placed;
    /// `lego run` or `lego image push` for a vNode they name a storage server for): its mount
    /// is made if new, and its quota set or kept. Answered with [`StorageReply::Done`];
    /// requests for a vNode never mounted are refused with [`errno::ENOVNODE`].
    Mount { quota: QuotaChange },
    /// A hard link: `to` becomes another name of the file or symlink at `from` (`EPERM` for a
    /// directory); answers the attributes afterwards.
    Link { from: Vec<u8>, to: Vec<u8> },
    /// `mknod(path, S_IFIFO | mode)`, or the name `bind(2)` gives an `AF_UNIX` socket: a FIFO
    /// or socket node (`kind`; any other kind is `EINVAL`) whose parent must be a directory,
    /// owned as [`Owner::in_dir`] says; answers its attributes.
    Mknod { path: Vec<u8>, kind: FileKind, mode: u32, owner: Owner },
}

/// Who creates a file, directory, FIFO or symlink: the creating thread's file-system user and
/// group ids (`fsuid`, `fsgid`), which every create request carries, so that the new object is
/// owned from the start (no window in which another client sees it owned by someone else).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The set-group-ID permission bit.
pub const S_ISGID: u32 = 0o2000;

impl Owner {
    /// `root:root`, for what no process creates (`lego image push`, tools).
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };

    /// The owner Linux gives (`inode_init_owner`) a new object that `self` creates in a
    /// directory of mode `dir_mode` and group `dir_gid`: the creator's user id, and the
    /// directory's group when the directory is set-group-ID, the creator's group otherwise.
    pub fn in_dir(self, dir_mode: u32, dir_gid: u32) -> Owner {
        let gid = if dir_mode & S_ISGID != 0 { dir_gid } else { self.gid };
        Owner { uid: self.uid, gid }
    }
}

/// The permission bits of a new directory asked for with `mode` in a directory of mode
/// `dir_mode`: a set-group-ID directory's subdirectories are set-group-ID too, as on Linux.
pub fn new_dir_mode(mode: u32, dir_mode: u32) -> u32 {
    (mode & 0o7777) | (dir_mode & S_ISGID)
}

/// What a [`StorageOp::Mount`] does to the vNode's quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaChange {
    /// Keeps it (none for a new mount): a mount by a client that does not know the quota.
    Keep,
    /// Sets it: most bytes of file data (sizes of its files and symlinks), `None` for no limit
    /// but the disk's. A quota below the vNode's use only stops it from growing.
    Set(Option<u64>),
}

impl StorageOp {
    /// The one path the operation names (`None` for a rename or link, which name two, and for the
    /// calls about the whole mount).
    pub fn path(&self) -> Option<&[u8]> {
        match self {
            StorageOp::Stat { path }
            | StorageOp::Read { path, .. }
            | StorageOp::Write { path, .. }
            | StorageOp::Create { path, .. }
            | StorageOp::Truncate { path, .. }
            | StorageOp::Unlink { path }
            | StorageOp::Mkdir { path, .. }
            | StorageOp::Rmdir { path }
            | StorageOp::Readdir { path, .. }
            | StorageOp::Fsync { path }
            | StorageOp::SetAttr { path, .. }
            | StorageOp::Symlink { path, .. }
            | StorageOp::Mknod { path, .. }
            | StorageOp::Readlink { path }
            | StorageOp::Resolve { path, .. } => Some(path),
            StorageOp::Rename { .. } | StorageOp::Link { .. } | StorageOp::SyncFs | StorageOp::StatFs | StorageOp::Mount { .. } => None,
        }
    }
}

/// The space of a vNode's mount, as `statfs` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsStat {
    /// Bytes the mount may hold: its quota, or else the storage disk's size.
    pub capacity_bytes: u64,
    /// Bytes still free for it: what its quota leaves (at most the disk's free bytes), or else
    /// the storage disk's free bytes.
    pub free_bytes: u64,
    /// Bytes of the vNode's files (their sizes).
    pub used_bytes: u64,
    /// Files and directories of the vNode.
    pub files: u64,
    /// The vNode's quota, if it has one (bytes of file data).
    pub quota_bytes: Option<u64>,
}

/// What kind of object a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (its size is its target's length).
    Symlink,
    /// A FIFO (named pipe): only a name and attributes here; its pipe lives in the VMM of the
    /// processes that open it.
    Fifo,
    /// A socket's name (an `AF_UNIX` path a process bound): only a name and attributes here;
    /// the socket lives in the VMM of the process that bound it.
    Socket,
}

/// Attributes of a file or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAttr {
    /// File or directory.
    pub kind: FileKind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Bytes (files), or a nominal size (directories).
    pub size: u64,
    /// A number unique within the vNode's mount for the object's lifetime.
    pub ino: u64,
    /// Last modification, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Last access as set at creation or by `utimensat` (storage mounts behave as `noatime`:
    /// reads do not change it), nanoseconds since the epoch.
    pub atime_ns: i64,
    /// Last attribute change, nanoseconds since the epoch.
    pub ctime_ns: i64,
    /// Names of the object (hard links; 2 for a directory).
    pub nlink: u32,
    /// Owner user id (stored, not enforced).
    pub uid: u32,
    /// Owner group id (stored, not enforced).
    pub gid: u32,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The name within the directory.
    pub name: Vec<u8>,
    /// What it is.
    pub kind: FileKind,
    /// Its inode number.
    pub ino: u64,
    /// Pass as `cookie` to continue after this entry.
    pub cookie: u64,
}

/// The answer to a [`StorageRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageReply {
    /// `Stat`, `Create`, `Mkdir`, `Truncate`, `Write`, `SetAttr`: the object's attributes
    /// afterwards.
    Attr(FileAttr),
    /// `Read`: the bytes read (empty at or past the end).
    Data(#[serde(with = "bytes")] Vec<u8>),
    /// `Readdir`: entries, and whether more follow.
    Entries { entries: Vec<DirEntry>, more: bool },
    /// `Unlink`, `Rename`, `Rmdir`, `Fsync`: done.
    Done,
    /// The operation failed with this errno (see [`errno`]).
    Error(i32),
    /// `StatFs`: the mount's space.
    FsStat(FsStat),
}

/// File data as one byte string: the same bincode encoding as a sequence of `u8` (a length,
/// then the bytes), but copied at once instead of byte by byte.
mod bytes {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(super::MAX_IO));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// Sends `req` straight to a storage server over `conn` and decodes the answer.
pub fn call(conn: &mut dyn crate::transport::Transport, req: &StorageRequest) -> Result<StorageReply, crate::ProtoError> {
    conn.call(0, &crate::codec::encode(req)).and_then(|body| crate::codec::decode(&body))
}

/// Why a storage server was not told about a vNode ([`mount`]).
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// It could not be reached, or did not speak the protocol.
    #[error("storage server {addr}: {source}")]
    Unreachable {
        /// The storage server.
        addr: String,
        /// Why.
        #[source]
        source: crate::ProtoError,
    },
    /// It answered with an error.
    #[error("storage server {addr} refused to mount vNode {vnode}: errno {errno}")]
    Refused {
        /// The storage server.
        addr: String,
        /// The vNode.
        vnode: String,
        /// Its answer.
        errno: i32,
    },
}

/// Tells the storage server at `addr` about `vnode` and its quota ([`StorageOp::Mount`]),
/// introducing this side as `me`.
pub fn mount(addr: &str, me: crate::handshake::Hello, vnode: &str, quota: QuotaChange, timeout: std::time::Duration) -> Result<(), MountError> {
    let unreachable = |source| MountError::Unreachable { addr: addr.to_string(), source };
    let mut conn = crate::transport::TcpTransport::connect(addr, me, timeout).map_err(unreachable)?;
    match call(&mut conn, &StorageRequest { vnode: vnode.to_string(), op: StorageOp::Mount { quota } }).map_err(unreachable)? {
        StorageReply::Done => Ok(()),
        StorageReply::Error(errno) => Err(MountError::Refused { addr: addr.to_string(), vnode: vnode.to_string(), errno }),
        other => Err(unreachable(crate::ProtoError::Malformed(format!("unexpected answer to a mount: {other:?}")))),
    }
}

/// The current time in nanoseconds since the epoch, as [`FileAttr`] times are kept.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A hash of a vNode name that is the same in every build and run (FNV-1a), for choices that
/// must come out the same wherever they are made, such as which mem-server caches its files.
pub fn vnode_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Checks a vNode name: 1 to [`MAX_VNODE`] bytes of `[A-Za-z0-9._-]`, not `.` or `..`, so it is
/// safe as a directory name on the server.
pub fn check_vnode(name: &str) -> Result<(), i32> {
    let ok_char = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-';
    if name.is_empty() || name.len() > MAX_VNODE || name == "." || name == ".." || !name.bytes().all(ok_char) {
        return Err(errno::EINVAL);
    }
    Ok(())
}

/// Checks a path as the storage path requires it, giving the errno Linux would: too long or a
/// component over [`MAX_NAME`] is `ENAMETOOLONG`; a NUL byte, a relative path, or an empty, `.`
/// or `..` component (the sender normalises paths, so these are attempts to escape) is `EINVAL`.
/// `/` itself is valid.
pub fn check_path(path: &[u8]) -> Result<(), i32> {
    if path.len() > MAX_PATH {
        return Err(errno::ENAMETOOLONG);
    }
    if path.first() != Some(&b'/') || path.contains(&0) {
        return Err(errno::EINVAL);
    }
    if path == b"/" {
        return Ok(());
    }
    for c in path[1..].split(|&b| b == b'/') {
        if c.len() > MAX_NAME {
            return Err(errno::ENAMETOOLONG);
        }
        if c.is_empty() || c == b"." || c == b".." {
            return Err(errno::EINVAL);
        }
    }
    Ok(())
}

/// Turns any absolute or relative path into the normalised form [`check_path`] accepts,
/// resolving `.` and `..` lexically with `/..` staying at `/` (as in a chroot), relative to
/// `cwd` (itself normalised). Length limits are left to [`check_path`].
pub fn normalize(cwd: &[u8], path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    let start: &[&[u8]] = if path.first() == Some(&b'/') { &[] } else { &[cwd, b"/"] };
    for piece in start.iter().copied().chain(std::iter::once(path)) {
        for c in piece.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use proptest::prelude::*;

    #[test]
    fn paths_get_the_errno_linux_gives() {
        assert_eq!(check_path(b"/"), Ok(()));
        assert_eq!(check_path(b"/a/b.txt"), Ok(()));
        assert_eq!(check_path(b"a/b"), Err(errno::EINVAL));
        assert_eq!(check_path(b"/a/../b"), Err(errno::EINVAL));
        assert_eq!(check_path(b"/a/./b"), Err(errno::EINVAL));
        assert_eq!(check_path(b"/a//b"), Err(errno::EINVAL));
        assert_eq!(check_path(b"/a\0b"), Err(errno::EINVAL));
        assert_eq!(check_path(&[b"/".as_slice(), &[b'x'; 256]].concat()), Err(errno::ENAMETOOLONG));
        assert_eq!(check_path(&[b"/".as_slice(), &[b'x'; 255]].concat()), Ok(()));
        let long: Vec<u8> = (0..2048).flat_map(|_| *b"/x").collect();
        assert_eq!(long.len(), 4096);
        assert_eq!(check_path(&long), Err(errno::ENAMETOOLONG));
    }

    #[test]
    fn vnode_names_are_safe_directory_names() {
        assert_eq!(check_vnode("demo-1.a_b"), Ok(()));
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert_eq!(check_vnode(bad), Err(errno::EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn normalize_stays_inside_the_mount() {
        assert_eq!(normalize(b"/", b"../../etc/passwd"), b"/etc/passwd");
        assert_eq!(normalize(b"/home/u", b"./x/../y//z/"), b"/home/u/y/z");
        assert_eq!(normalize(b"/home/u", b"/.."), b"/");
        assert_eq!(normalize(b"/", b""), b"/");
    }

    proptest! {
        /// Whatever comes in, the normalised path passes the check unless it is too long, and
        /// normalising is idempotent.
        #[test]
        fn normalized_paths_are_valid(path in proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'.'), Just(b'a')], 0..64)) {
            let n = normalize(b"/", &path);
            prop_assert_eq!(check_path(&n), Ok(()));
            prop_assert_eq!(normalize(b"/", &n), n);
        }

        /// Garbage never panics the decoder.
        #[test]
        fn garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<StorageRequest>(&bytes);
            let _ = decode::<StorageReply>(&bytes);
        }
    }

    /// File data keeps the encoding of a plain `Vec<u8>`, so peers of either build agree.
    #[test]
    fn data_is_encoded_as_a_byte_sequence() {
        #[derive(Serialize)]
        enum Plain {
            _Attr(FileAttr),
            Data(Vec<u8>),
        }
        let data: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        assert_eq!(encode(&StorageReply::Data(data.clone())), encode(&Plain::Data(data.clone())));
        assert_eq!(decode::<StorageReply>(&encode(&Plain::Data(data.clone()))).unwrap(), StorageReply::Data(data));
    }

    #[test]
    fn round_trip() {
        let r = StorageRequest { vnode: "demo".into(), op: StorageOp::Write { path: b"/f".to_vec(), offset: 7, data: vec![1, 2, 3] } };
        assert_eq!(decode::<StorageRequest>(&encode(&r)).unwrap(), r);
        let owner = Owner { uid: 1000, gid: 100 };
        let c = StorageRequest { vnode: "demo".into(), op: StorageOp::Mknod { path: b"/p".to_vec(), kind: FileKind::Socket, mode: 0o600, owner } };
        assert_eq!(decode::<StorageRequest>(&encode(&c)).unwrap(), c);
    }

    /// A new object is its creator's, but under a set-group-ID directory it takes the
    /// directory's group, and a new subdirectory the set-group-ID bit, as on Linux.
    #[test]
    fn new_objects_are_owned_as_linux_owns_them() {
        let me = Owner { uid: 1000, gid: 1000 };
        assert_eq!(me.in_dir(0o755, 50), me);
        assert_eq!(me.in_dir(0o2775, 50), Owner { uid: 1000, gid: 50 });
        assert_eq!(Owner::ROOT.in_dir(0o2700, 7), Owner { uid: 0, gid: 7 });
        assert_eq!(new_dir_mode(0o755, 0o755), 0o755);
        assert_eq!(new_dir_mode(0o700, 0o2775), 0o2700);
        assert_eq!(new_dir_mode(0o1777, 0o4755), 0o1777, "only the set-group-ID bit is inherited");
    }
}
