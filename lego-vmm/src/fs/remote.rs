//! A vNode's files on remote storage (LegoOS §4.5): every file system call becomes one stateless
//! request (vNode, full path, offset) to the mem-server whose buffer cache holds the file, which
//! answers from its cache or asks the storage server.
//!
//! The state layer keeps descriptors and offsets; a [`RemoteFile`] is only a resolved path.
//! Every path is first resolved by the storage server (one `Resolve` request before each call
//! on a path): `.`, `..` and symbolic links, with `..` stopping at the vNode's root as in a
//! chroot, so no path (and no symlink's text) can name anything outside the vNode's mount, and
//! every name of a file is the same key in the buffer cache (a file with hard links, several
//! names, is served by storage alone). Storage keeps modes, modification times and owner ids
//! (stored, not enforced between the vNode's processes); a create request carries its creator,
//! and the storage server gives the new object its owner in the entry that creates it.
//!
//! A file unlinked while this VMM has it open stays reachable through its descriptors, as NFS
//! keeps it ("silly rename"): it is renamed to a hidden name under [`UNLINKED_DIR`] and removed
//! when its last descriptor closes; a rename of an open file (or of a directory above it) moves
//! its descriptors along ([`OpenNames`]). Only descriptors of this VMM are known: another
//! pComponent's open file is gone when it is unlinked here.
//!
//! Failure: once the connection to the caching mem-server fails, the data it held but had not
//! written back is gone, so every later file call of the process answers `EIO` rather than
//! reading around the loss.

use lego_proto::sync::LockExt;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use lego_proto::codec::{decode, encode};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{Reply, Request};
use lego_proto::storage::{self, FileAttr, FileKind, StorageOp, StorageReply, StorageRequest, MAX_DIRENTS, MAX_IO};
use lego_proto::transport::{TcpTransport, Transport};
use lego_proto::ProtoError;

use super::{DirEntry, File, FileSystem, NodeId, Owner, SetAttr, Stat, TimeSet, Timespec};
use crate::errno::{Errno, SysResult};

/// `f_type` of remote storage: that of NFS, the network file system it behaves like.
const NFS_SUPER_MAGIC: u64 = libc::NFS_SUPER_MAGIC as u64;

/// The connection to the mem-server caching the vNode's files.
struct Link {
    vnode: String,
    conn: Mutex<Option<TcpTransport>>,
    server: String,
}

impl Link {
    /// Sends one request; a broken connection is `EIO` now and for every later call.
    fn call(&self, request: &Request) -> SysResult<StorageReply> {
        let mut guard = self.conn.lock_unpoisoned();
        let conn = guard.as_mut().ok_or(Errno::EIO)?;
        match conn.call(0, &encode(request)).and_then(|body| decode::<Reply>(&body)) {
            Ok(Reply::File(StorageReply::Error(e))) => Err(Errno(e)),
            Ok(Reply::File(r)) => Ok(r),
            Ok(other) => {
                tracing::error!(server = %self.server, "unexpected answer to a file request: {other:?}");
                Err(Errno::EIO)
            }
            Err(e) => {
                tracing::error!(server = %self.server, "buffer-cache mem-server lost; file calls now fail with EIO: {e}");
                *guard = None;
                Err(Errno::EIO)
            }
        }
    }

    fn op(&self, op: StorageOp) -> SysResult<StorageReply> {
        self.call(&Request::File(StorageRequest { vnode: self.vnode.clone(), op }))
    }

    fn attr(&self, path: &[u8]) -> SysResult<FileAttr> {
        match self.op(StorageOp::Stat { path: path.to_vec() })? {
            StorageReply::Attr(a) => Ok(a),
            _ => Err(Errno::EIO),
        }
    }
}

impl Link {
    /// `chmod`, `utimensat` and `chown` of `path`: the storage server keeps the mode, the
    /// modification and access times (reads do not move the access time: the mount behaves as
    /// `noatime`) and the owner ids.
    fn set_attr(&self, path: &[u8], attr: SetAttr) -> SysResult<()> {
        let (mut mode, mut mtime_ns, mut atime_ns, mut uid, mut gid) = (None, None, None, None, None);
        let ns = |t: TimeSet| match t {
            TimeSet::Omit => None,
            TimeSet::Now => Some(storage::now_ns()),
            TimeSet::At(t) => Some(t.sec.saturating_mul(1_000_000_000).saturating_add(t.nsec)),
        };
        match attr {
            SetAttr::Mode(m) => mode = Some(m & 0o7777),
            SetAttr::Times { atime, mtime } => (atime_ns, mtime_ns) = (ns(atime), ns(mtime)),
            SetAttr::Owner { uid: u, gid: g } => (uid, gid) = (u, g),
        }
        self.op(StorageOp::SetAttr { path: path.to_vec(), mode, mtime_ns, atime_ns, uid, gid }).map(drop)
    }
}

/// One vNode's files, through the mem-server at `server`.
pub struct RemoteFs {
    link: Arc<Link>,
    /// The storage server holding them.
    storage: String,
    /// Where this VMM's open files are, for unlinks and renames of open files.
    names: Mutex<OpenNames>,
    /// Held shared by an open across its requests and its registration in `names`, and
    /// exclusively by an unlink or a rename across theirs: no open slips between an unlink's
    /// look-up of the open files and its request.
    gate: RwLock<()>,
}

/// The directory, at the root of the vNode's mount, that holds files unlinked while open
/// until their last descriptor closes. Listings of `/` leave it out.
pub const UNLINKED_DIR: &[u8] = b"/.lego-unlinked";

/// The open files of the mount in this VMM, by path (NFS clients keep the same).
struct OpenNames {
    /// Path -> the name its open descriptions share; entries whose files all closed are
    /// pruned as the table grows.
    by_path: HashMap<Vec<u8>, Weak<Name>>,
    /// Size of `by_path` after the last pruning.
    pruned_at: usize,
    /// What makes this VMM's hidden names unlike any other's.
    tag: u64,
    /// Hidden names handed out so far.
    hidden: u64,
    /// `UNLINKED_DIR` is known to exist.
    dir_made: bool,
    /// The names hidden so far.
    hidden_names: Arc<HiddenNames>,
}

/// The hidden names of this VMM's files unlinked while open: by inode, the links of a file that
/// `stat` leaves out, as the program removed them.
#[derive(Default)]
struct HiddenNames(Mutex<Vec<(u64, Weak<Name>)>>);

impl HiddenNames {
    /// How many of file `ino`'s links are hidden names of files still open.
    fn links(&self, ino: u64) -> u64 {
        let mut names = self.0.lock_unpoisoned();
        names.retain(|(_, n)| n.strong_count() > 0);
        names.iter().filter(|(i, _)| *i == ino).count() as u64
    }

    fn add(&self, ino: u64, name: &Arc<Name>) {
        self.0.lock_unpoisoned().push((ino, Arc::downgrade(name)));
    }

    fn remove(&self, name: &Arc<Name>) {
        self.0.lock_unpoisoned().retain(|(_, n)| !std::ptr::eq(n.as_ptr(), Arc::as_ptr(name)));
    }
}

/// Where the open descriptions of one file reach it now.
struct Name {
    link: Arc<Link>,
    /// The file's inode on the mount.
    ino: u64,
    /// This VMM's hidden names, which `stat` of the file leaves out of its links.
    hidden: Arc<HiddenNames>,
    /// Held shared by every request on the file, exclusively to move it: no request goes to
    /// the path it had before a move.
    path: RwLock<Vec<u8>>,
    dir: bool,
    /// It was unlinked while open: `path` is its hidden name, removed with the last
    /// description.
    unlinked: AtomicBool,
}

impl Name {
    /// The path, held still while the guard lives.
    fn path(&self) -> RwLockReadGuard<'_, Vec<u8>> {
        self.path.read().unwrap_or_else(|e| e.into_inner())
    }

    fn path_mut(&self) -> RwLockWriteGuard<'_, Vec<u8>> {
        self.path.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        if self.unlinked.load(Ordering::Acquire) {
            let path = self.path().clone();
            if let Err(e) = self.link.op(StorageOp::Unlink { path: path.clone() }) {
                tracing::warn!(path = %String::from_utf8_lossy(&path), "removing a file unlinked while open: {e:?}");
            }
        }
    }
}

impl OpenNames {
    fn new() -> OpenNames {
        OpenNames {
            by_path: HashMap::new(),
            pruned_at: 0,
            tag: RandomState::new().hash_one(std::process::id()),
            hidden: 0,
            dir_made: false,
            hidden_names: Arc::default(),
        }
    }

    /// The name open descriptions of `path` (inode `ino`) share, made if none is open.
    fn name(&mut self, link: &Arc<Link>, path: Vec<u8>, ino: u64, dir: bool) -> Arc<Name> {
        if let Some(n) = self.by_path.get(&path).and_then(Weak::upgrade) {
            return n;
        }
        if self.by_path.len() >= 64 && self.by_path.len() >= 2 * self.pruned_at {
            self.by_path.retain(|_, n| n.strong_count() > 0);
            self.pruned_at = self.by_path.len();
        }
        let n = Arc::new(Name {
            link: link.clone(),
            ino,
            hidden: self.hidden_names.clone(),
            path: RwLock::new(path.clone()),
            dir,
            unlinked: AtomicBool::new(false),
        });
        self.by_path.insert(path, Arc::downgrade(&n));
        n
    }

    /// The open file (not directory) at `path`, if any.
    fn open_file(&self, path: &[u8]) -> Option<Arc<Name>> {
        self.by_path.get(path).and_then(Weak::upgrade).filter(|n| !n.dir)
    }

    /// Moves the open file `name`, at `path`, to a new hidden name, so that `path` can go and
    /// its descriptions keep the file.
    fn hide(&mut self, link: &Link, name: &Arc<Name>, path: &[u8]) -> SysResult<Vec<u8>> {
        if !self.dir_made {
            let mkdir = StorageOp::Mkdir { path: UNLINKED_DIR.to_vec(), mode: 0o700, owner: Owner::ROOT };
            match link.op(mkdir) {
                Ok(_) | Err(Errno::EEXIST) => self.dir_made = true,
                Err(e) => return Err(e),
            }
        }
        self.hidden += 1;
        let hidden = format!("{}/{:016x}.{}", String::from_utf8_lossy(UNLINKED_DIR), self.tag, self.hidden).into_bytes();
        let mut at = name.path_mut();
        link.op(StorageOp::Rename { from: path.to_vec(), to: hidden.clone() })?;
        *at = hidden.clone();
        name.unlinked.store(true, Ordering::Release);
        self.hidden_names.add(name.ino, name);
        self.by_path.remove(path);
        Ok(hidden)
    }

    /// Puts back a file [`OpenNames::hide`] moved to `hidden` from `path`, after the request
    /// it made way for failed.
    fn unhide(&mut self, link: &Link, name: &Arc<Name>, hidden: Vec<u8>, path: Vec<u8>) {
        let mut at = name.path_mut();
        if let Err(e) = link.op(StorageOp::Rename { from: hidden, to: path.clone() }) {
            tracing::warn!(path = %String::from_utf8_lossy(&path), "putting back an open file: {e:?}");
            return;
        }
        name.unlinked.store(false, Ordering::Release);
        self.hidden_names.remove(name);
        *at = path.clone();
        drop(at);
        self.by_path.insert(path, Arc::downgrade(name));
    }

    /// After `from` was renamed to `to`: the open files at `from` and below it are at `to`.
    fn moved(&mut self, from: &[u8], to: &[u8]) {
        let below = |p: &[u8]| p == from || (p.starts_with(from) && p.get(from.len()) == Some(&b'/'));
        let keys: Vec<Vec<u8>> = self.by_path.keys().filter(|p| below(p)).cloned().collect();
        for old in keys {
            let Some(n) = self.by_path.remove(&old).and_then(|w| w.upgrade()) else { continue };
            let new = [to, &old[from.len()..]].concat();
            *n.path_mut() = new.clone();
            self.by_path.insert(new, Arc::downgrade(&n));
        }
    }
}

/// Why [`RemoteFs::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The vNode name is not one storage takes.
    #[error("vNode name {0:?} must be 1-64 bytes of [A-Za-z0-9._-]")]
    BadName(String),
    /// The buffer-cache mem-server could not be reached or answered badly.
    #[error("buffer-cache mem-server {server}: {source}")]
    Cache {
        /// Its address.
        server: String,
        #[source]
        source: ProtoError,
    },
    /// The mem-server caches the files of another storage server.
    #[error(
        "mem-server {server} caches files of storage server {cached}, not {storage} (start it with \
         `lego mem-server --storage-server {storage}`)"
    )]
    OtherStorage {
        /// The mem-server's address.
        server: String,
        /// The storage server it caches, or "(none)".
        cached: String,
        /// The storage server asked for.
        storage: String,
    },
    /// The mem-server answered a statistics request with something else.
    #[error("mem-server {server} answered {reply} to a statistics request")]
    Unexpected {
        /// Its address.
        server: String,
        /// The answer, as debug text.
        reply: String,
    },
    /// The storage server has no such vNode.
    #[error(
        "storage server {storage} does not know vNode {vnode}: create it with `lego vnode create {vnode}` \
         (or name the storage server with `lego run --storage-server`, which mounts it)"
    )]
    UnknownVnode {
        /// The storage server's address.
        storage: String,
        /// The vNode.
        vnode: String,
    },
    /// The vNode's root could not be looked at.
    #[error("storage server {storage}, through mem-server {server}: the vNode's root answered {errno:?}")]
    Root {
        /// The storage server's address.
        storage: String,
        /// The mem-server's address.
        server: String,
        /// What it answered.
        errno: Errno,
    },
}

impl RemoteFs {
    /// Connects to the mem-server at `server` for the files of vNode `vnode`, checking that its
    /// buffer cache is in front of the storage server at `storage`.
    pub fn connect(server: &str, storage: &str, vnode: &str, cluster: u64, timeout: Duration) -> Result<RemoteFs, ConnectError> {
        storage::check_vnode(vnode).map_err(|_| ConnectError::BadName(vnode.to_string()))?;
        let failed = |source| ConnectError::Cache { server: server.to_string(), source };
        let mut conn = TcpTransport::connect(server, Hello::new(ComponentKind::Processor, cluster), timeout).map_err(failed)?;
        let stat = conn.call(0, &encode(&Request::Stat)).and_then(|body| decode::<Reply>(&body)).map_err(failed)?;
        match stat {
            Reply::Stat(s) if s.storage.as_deref() == Some(storage) => {}
            Reply::Stat(s) => {
                return Err(ConnectError::OtherStorage {
                    server: server.to_string(),
                    cached: s.storage.unwrap_or_else(|| "(none)".into()),
                    storage: storage.to_string(),
                })
            }
            other => return Err(ConnectError::Unexpected { server: server.to_string(), reply: format!("{other:?}") }),
        }
        let link = Link { vnode: vnode.to_string(), conn: Mutex::new(Some(conn)), server: server.to_string() };
        // One request through to storage now, so an unreachable storage server is a clear
        // start-up error rather than EIO from the program's first file call.
        match link.attr(b"/") {
            Ok(_) => {}
            Err(Errno(storage::errno::ENOVNODE)) => {
                return Err(ConnectError::UnknownVnode { storage: storage.to_string(), vnode: vnode.to_string() })
            }
            Err(errno) => return Err(ConnectError::Root { storage: storage.to_string(), server: server.to_string(), errno }),
        }
        Ok(RemoteFs { link: Arc::new(link), storage: storage.to_string(), names: Mutex::new(OpenNames::new()), gate: RwLock::new(()) })
    }
}

/// The mem-server among `servers` whose buffer cache holds the files of `vnode`: one per vNode,
/// so that a rename never moves a file between caches. The global storage manager takes this
/// choice over once it exists.
pub fn cache_server<'a>(servers: &'a [String], vnode: &str) -> Option<&'a str> {
    servers.get((storage::vnode_hash(vnode) % servers.len().max(1) as u64) as usize).map(String::as_str)
}

impl RemoteFs {
    /// The path, without `.`, `..` or symlinks, that vNode path `path` names on the storage
    /// server (following a final symlink if `follow`), or the errno Linux gives for it: one
    /// `Resolve` request, so that every name of a file is the same key in the buffer cache.
    fn walk(&self, path: &[u8], follow: bool) -> SysResult<Vec<u8>> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        if path.len() > storage::MAX_PATH {
            return Err(Errno::ENAMETOOLONG);
        }
        let path = if path.first() == Some(&b'/') { path.to_vec() } else { [b"/", path].concat() };
        match self.link.op(StorageOp::Resolve { path, follow })? {
            StorageReply::Data(p) => Ok(p),
            _ => Err(Errno::EIO),
        }
    }
}

impl FileSystem for RemoteFs {
    fn open(&self, path: &[u8], flags: i32, mode: u32, creator: Owner) -> SysResult<Box<dyn File>> {
        let creating = flags & libc::O_CREAT != 0;
        // O_CREAT | O_EXCL never follows a final symlink (an existing one is EEXIST).
        let follow = flags & libc::O_NOFOLLOW == 0 && !(creating && flags & libc::O_EXCL != 0);
        let _gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
        let path = self.walk(path, follow)?;
        let access = flags & libc::O_ACCMODE;
        let attr = if flags & libc::O_CREAT != 0 {
            let op = StorageOp::Create {
                path: path.clone(),
                mode: mode & 0o7777,
                exclusive: flags & libc::O_EXCL != 0,
                truncate: flags & libc::O_TRUNC != 0 && access != libc::O_RDONLY,
                owner: creator,
            };
            // O_CREAT on an existing directory is EISDIR from storage, as from Linux.
            let StorageReply::Attr(a) = self.link.op(op)? else { return Err(Errno::EIO) };
            a
        } else {
            let a = self.link.attr(&path)?;
            if a.kind == FileKind::File && flags & libc::O_TRUNC != 0 && access != libc::O_RDONLY {
                self.link.op(StorageOp::Truncate { path: path.clone(), len: 0 })?;
            }
            a
        };
        if flags & libc::O_DIRECTORY != 0 && attr.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if attr.kind == FileKind::Dir && access != libc::O_RDONLY {
            return Err(Errno::EISDIR);
        }
        if attr.kind == FileKind::Symlink && flags & libc::O_PATH == 0 {
            return Err(Errno::ELOOP);
        }
        if attr.kind == FileKind::Socket && flags & libc::O_PATH == 0 {
            return Err(Errno::ENXIO);
        }
        let name = self.names.lock_unpoisoned().name(&self.link, path, attr.ino, attr.kind == FileKind::Dir);
        Ok(Box::new(RemoteFile { name, kind: attr.kind, ino: attr.ino, wrote: AtomicBool::new(false) }))
    }

    /// A file unlinked here while open has a hidden name, which its link count leaves out.
    fn stat(&self, path: &[u8], follow: bool) -> SysResult<Stat> {
        let mut st = to_stat(&self.link.attr(&self.walk(path, follow)?)?);
        let hidden = self.names.lock_unpoisoned().hidden_names.links(st.ino);
        st.nlink = st.nlink.saturating_sub(hidden);
        Ok(st)
    }

    fn readlink(&self, path: &[u8]) -> SysResult<Vec<u8>> {
        match self.link.op(StorageOp::Readlink { path: self.walk(path, false)? })? {
            StorageReply::Data(t) => Ok(t),
            _ => Err(Errno::EIO),
        }
    }

    fn access(&self, path: &[u8], mode: i32) -> SysResult<()> {
        if mode & !(libc::F_OK | libc::R_OK | libc::W_OK | libc::X_OK) != 0 {
            return Err(Errno::EINVAL);
        }
        // The vNode's processes own all of its files.
        self.link.attr(&self.walk(path, true)?).map(drop)
    }

    fn mkdir(&self, path: &[u8], mode: u32, creator: Owner) -> SysResult<()> {
        self.link.op(StorageOp::Mkdir { path: self.walk(path, false)?, mode: mode & 0o7777, owner: creator }).map(drop)
    }

    /// A FIFO or socket node on the storage server; a FIFO's pipe is the VMM's
    /// ([`crate::fifo`]), found by the node's inode on this mount, and so is a socket.
    fn mknod(&self, path: &[u8], mode: u32, creator: Owner) -> SysResult<()> {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            _ => return Err(Errno::EINVAL),
        };
        self.link.op(StorageOp::Mknod { path: self.walk(path, false)?, kind, mode: mode & 0o7777, owner: creator }).map(drop)
    }

    fn rmdir(&self, path: &[u8]) -> SysResult<()> {
        self.link.op(StorageOp::Rmdir { path: self.walk(path, false)? }).map(drop)
    }

    /// A file open in this VMM is moved to a hidden name instead, and removed when its last
    /// descriptor closes.
    fn unlink(&self, path: &[u8]) -> SysResult<()> {
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let path = self.walk(path, false)?;
        let mut names = self.names.lock_unpoisoned();
        match names.open_file(&path) {
            Some(open) => names.hide(&self.link, &open, &path).map(drop),
            None => self.link.op(StorageOp::Unlink { path }).map(drop),
        }
    }

    /// Open files at `from` (or below it) move along; a file open at `to`, which the rename
    /// replaces, is hidden first, as an unlink would hide it, and put back if the rename fails.
    fn rename(&self, from: &[u8], to: &[u8]) -> SysResult<()> {
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let (from, to) = (self.walk(from, false)?, self.walk(to, false)?);
        let mut names = self.names.lock_unpoisoned();
        // A rename between two names of one file changes nothing (rename(2)): nothing to hide.
        let same_file = || matches!((self.link.attr(&from), self.link.attr(&to)), (Ok(a), Ok(b)) if a.ino == b.ino);
        let replaced = names.open_file(&to).filter(|_| !same_file());
        let hidden = match &replaced {
            Some(open) => Some(names.hide(&self.link, open, &to)?),
            None => None,
        };
        if let Err(e) = self.link.op(StorageOp::Rename { from: from.clone(), to: to.clone() }) {
            if let (Some(open), Some(hidden)) = (replaced, hidden) {
                names.unhide(&self.link, &open, hidden, to);
            }
            return Err(e);
        }
        names.moved(&from, &to);
        Ok(())
    }

    /// The target is stored as given; following it resolves it on the storage server, inside
    /// the vNode's mount.
    fn symlink(&self, target: &[u8], path: &[u8], creator: Owner) -> SysResult<()> {
        let path = self.walk(path, false)?;
        self.link.op(StorageOp::Symlink { path, target: target.to_vec(), owner: creator }).map(drop)
    }

    /// A hard link, made by the storage server (`EPERM` for a directory).
    fn link(&self, from: &[u8], to: &[u8], follow: bool) -> SysResult<()> {
        let from = self.walk(from, follow)?;
        self.link.op(StorageOp::Link { from, to: self.walk(to, false)? }).map(drop)
    }

    /// A symlink's own mode cannot change (`EOPNOTSUPP`, as on Linux).
    fn set_attr(&self, path: &[u8], follow: bool, attr: SetAttr) -> SysResult<()> {
        let path = self.walk(path, follow)?;
        if !follow && matches!(attr, SetAttr::Mode(_)) && self.link.attr(&path)?.kind == FileKind::Symlink {
            return Err(Errno::EOPNOTSUPP);
        }
        self.link.set_attr(&path, attr)
    }

    fn sync_all(&self) -> SysResult<()> {
        self.link.op(StorageOp::SyncFs).map(drop)
    }

    fn source(&self) -> Vec<u8> {
        format!("{}:/{}", self.storage, self.link.vnode).into_bytes()
    }

    /// The mount's size is what the vNode's files take plus what is free for them (what its
    /// quota leaves, or the storage disk's free space), so that used blocks are the vNode's own
    /// and a vNode with a quota sees the quota as the size.
    fn stat_fs(&self) -> SysResult<super::FsStat> {
        let StorageReply::FsStat(s) = self.link.op(StorageOp::StatFs)? else { return Err(Errno::EIO) };
        const BLOCK: u64 = 4096;
        let free = s.free_bytes / BLOCK;
        Ok(super::FsStat {
            fs_type: NFS_SUPER_MAGIC,
            block_size: BLOCK,
            blocks: s.used_bytes.div_ceil(BLOCK) + free,
            free,
            available: free,
            files: s.files + free,
            free_files: free,
            name_max: storage::MAX_NAME as u64,
            flags: libc::ST_NOATIME,
        })
    }
}

/// An open remote file: where it is, nothing else.
pub struct RemoteFile {
    /// Shared by the open descriptions of the file in this VMM.
    name: Arc<Name>,
    kind: FileKind,
    /// Its inode on the mount (what names a FIFO's pipe).
    ino: u64,
    /// Written through this descriptor: closing it writes the dirty pages back.
    wrote: AtomicBool,
}

impl File for RemoteFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> SysResult<usize> {
        if self.kind == FileKind::Dir {
            return Err(Errno::EISDIR);
        }
        let path = self.name.path();
        let mut done = 0;
        while done < buf.len() {
            let len = (buf.len() - done).min(MAX_IO) as u32;
            let op = StorageOp::Read { path: path.clone(), offset: offset + done as u64, len };
            let StorageReply::Data(data) = self.name.link.op(op)? else { return Err(Errno::EIO) };
            if data.len() > len as usize {
                return Err(Errno::EIO);
            }
            buf[done..done + data.len()].copy_from_slice(&data);
            done += data.len();
            if data.len() < len as usize {
                break;
            }
        }
        Ok(done)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> SysResult<usize> {
        if self.kind == FileKind::Dir {
            return Err(Errno::EISDIR);
        }
        self.wrote.store(true, Ordering::Relaxed);
        let path = self.name.path();
        for (i, chunk) in buf.chunks(MAX_IO).enumerate() {
            let at = offset.checked_add((i * MAX_IO) as u64).ok_or(Errno::EFBIG)?;
            self.name.link.op(StorageOp::Write { path: path.clone(), offset: at, data: chunk.to_vec() })?;
        }
        Ok(buf.len())
    }

    fn stat(&self) -> SysResult<Stat> {
        let mut st = to_stat(&self.name.link.attr(&self.name.path())?);
        // Hidden names are not links the program made.
        st.nlink = st.nlink.saturating_sub(self.name.hidden.links(st.ino));
        Ok(st)
    }

    fn set_len(&self, len: u64) -> SysResult<()> {
        if self.kind == FileKind::Dir {
            return Err(Errno::EISDIR);
        }
        self.name.link.op(StorageOp::Truncate { path: self.name.path().clone(), len }).map(drop)
    }

    fn sync(&self, _data_only: bool) -> SysResult<()> {
        self.name.link.op(StorageOp::Fsync { path: self.name.path().clone() }).map(drop)
    }

    fn set_attr(&self, attr: SetAttr) -> SysResult<()> {
        self.name.link.set_attr(&self.name.path(), attr)
    }

    fn fifo(&self) -> Option<NodeId> {
        (self.kind == FileKind::Fifo).then_some(NodeId { dev: REMOTE_DEV, ino: self.ino })
    }

    fn unlinked(&self) -> bool {
        self.name.unlinked.load(Ordering::Acquire)
    }

    fn reopen(&self, flags: i32) -> SysResult<Box<dyn File>> {
        let again = RemoteFile { name: self.name.clone(), kind: self.kind, ino: self.ino, wrote: AtomicBool::new(false) };
        if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
            again.set_len(0)?;
        }
        Ok(Box::new(again))
    }

    fn read_dir(&self, pos: u64, max: usize) -> SysResult<Vec<DirEntry>> {
        if self.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        // Positions 0 and 1 are `.` and `..`; from 2 on, position p continues after the
        // storage cookie p - 2.
        let mut out = Vec::new();
        for (at, name) in [(0u64, &b"."[..]), (1, &b".."[..])] {
            if pos <= at && out.len() < max {
                out.push(DirEntry { ino: 1, next: at + 1, kind: libc::DT_DIR, name: name.to_vec() });
            }
        }
        let want = max.saturating_sub(out.len()).min(MAX_DIRENTS);
        if want == 0 {
            return Ok(out);
        }
        let cookie = pos.saturating_sub(2);
        let path = self.name.path();
        let op = StorageOp::Readdir { path: path.clone(), cookie, max: want as u32 };
        let StorageReply::Entries { entries, .. } = self.name.link.op(op)? else { return Err(Errno::EIO) };
        let root = path.as_slice() == b"/";
        out.extend(entries.into_iter().filter(|e| !(root && UNLINKED_DIR[1..] == *e.name)).map(|e| DirEntry {
            ino: e.ino,
            next: e.cookie.saturating_add(2),
            kind: match e.kind {
                FileKind::Dir => libc::DT_DIR,
                FileKind::File => libc::DT_REG,
                FileKind::Symlink => libc::DT_LNK,
                FileKind::Fifo => libc::DT_FIFO,
                FileKind::Socket => libc::DT_SOCK,
            },
            name: e.name,
        }));
        Ok(out)
    }
}

impl Drop for RemoteFile {
    fn drop(&mut self) {
        // A file unlinked while open is removed with its last description: nothing to write.
        if self.wrote.load(Ordering::Relaxed) && !self.name.unlinked.load(Ordering::Acquire) {
            let path = self.name.path().clone();
            let req = Request::FileClosed { vnode: self.name.link.vnode.clone(), path: path.clone() };
            if let Err(e) = self.name.link.call(&req) {
                tracing::warn!(path = %String::from_utf8_lossy(&path), "writing back at close: {e:?}");
            }
        }
    }
}

/// The `st_dev` of every file of the mount ("LEGO"): a run has one vNode mount.
const REMOTE_DEV: u64 = 0x4c45_474f;

fn to_stat(a: &FileAttr) -> Stat {
    let ts = |ns: i64| Timespec { sec: ns.div_euclid(1_000_000_000), nsec: ns.rem_euclid(1_000_000_000) };
    let kind = match a.kind {
        FileKind::File => libc::S_IFREG,
        FileKind::Dir => libc::S_IFDIR,
        FileKind::Symlink => libc::S_IFLNK,
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::Socket => libc::S_IFSOCK,
    };
    Stat {
        dev: REMOTE_DEV,
        ino: a.ino,
        mode: kind | (a.mode & 0o7777),
        nlink: u64::from(a.nlink),
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        blksize: 4096,
        // In 512-byte units, for 4 KB blocks, as a local file system reports them.
        blocks: a.size.div_ceil(4096) * 8,
        atime: ts(a.atime_ns),
        mtime: ts(a.mtime_ns),
        ctime: ts(a.ctime_ns),
        ..Stat::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who the tests create as, unless they say.
    const ROOT: Owner = Owner::ROOT;

    /// A storage server on a temporary directory and a mem-server caching it, in-process.
    fn cluster() -> (tempfile::TempDir, storage_server::Handle, mem_server::Handle) {
        let dir = tempfile::tempdir().unwrap();
        let config = storage_server::Config { listen: "127.0.0.1:0".into(), dir: dir.path().to_path_buf(), cluster: 0 };
        let storage = storage_server::StorageServer::bind(config).unwrap().spawn().unwrap();
        let mem = mem_server::MemServer::bind(mem_server::Config {
            storage: Some(storage.addr().to_string()),
            ..mem_server::Config::new("127.0.0.1:0", 1 << 30, 0)
        })
        .unwrap()
        .spawn()
        .unwrap();
        (dir, storage, mem)
    }

    /// The files of `vnode`, mounted first (as the GSM does when it is created).
    fn connect(mem: &mem_server::Handle, storage: &storage_server::Handle, vnode: &str) -> RemoteFs {
        let me = Hello::new(ComponentKind::Client, 0);
        storage::mount(&storage.addr().to_string(), me, vnode, storage::QuotaChange::Keep, Duration::from_secs(5)).unwrap();
        RemoteFs::connect(&mem.addr().to_string(), &storage.addr().to_string(), vnode, 0, Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn a_vnode_the_storage_server_does_not_know_is_a_clear_error() {
        let (_dir, storage, mem) = cluster();
        let e = RemoteFs::connect(&mem.addr().to_string(), &storage.addr().to_string(), "nobody", 0, Duration::from_secs(5)).err().unwrap().to_string();
        assert!(e.contains("does not know vNode nobody") && e.contains("lego vnode create nobody"), "{e}");
    }

    #[test]
    fn files_round_trip_through_the_cache_with_linux_errnos() {
        let (_dir, storage, mem) = cluster();
        let fs = connect(&mem, &storage, "t");
        fs.mkdir(b"/d", 0o755, ROOT).unwrap();
        assert_eq!(fs.mkdir(b"/d", 0o755, ROOT).unwrap_err(), Errno(libc::EEXIST));
        let f = fs.open(b"/d/../d/./f", libc::O_CREAT | libc::O_RDWR, 0o600, ROOT).unwrap();
        let data: Vec<u8> = (0..3 * MAX_IO + 77).map(|i| (i % 251) as u8).collect();
        assert_eq!(f.write_at(&data, 10).unwrap(), data.len());
        let mut back = vec![0xffu8; data.len() + 100];
        assert_eq!(f.read_at(&mut back, 0).unwrap(), data.len() + 10);
        assert_eq!(&back[..10], &[0; 10], "the hole before the write reads as zeroes");
        assert_eq!(&back[10..data.len() + 10], &data[..]);
        let st = fs.stat(b"/d/f", true).unwrap();
        assert_eq!((st.mode, st.size), (libc::S_IFREG | 0o600, data.len() as u64 + 10));
        f.sync(false).unwrap();
        assert_eq!(fs.open(b"/d/f", libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600, ROOT).err(), Some(Errno(libc::EEXIST)));
        assert_eq!(fs.open(b"/d", libc::O_RDWR, 0, ROOT).err(), Some(Errno(libc::EISDIR)));
        assert_eq!(fs.open(b"/d/f", libc::O_RDONLY | libc::O_DIRECTORY, 0, ROOT).err(), Some(Errno(libc::ENOTDIR)));
        assert_eq!(fs.stat(b"/../../etc/passwd", true).err(), Some(Errno(libc::ENOENT)), "`..` stops at the vNode's root");
        let long = [b"/".as_slice(), &[b'x'; 256]].concat();
        assert_eq!(fs.stat(&long, true).err(), Some(Errno(libc::ENAMETOOLONG)));
        let dir = fs.open(b"/d", libc::O_RDONLY | libc::O_DIRECTORY, 0, ROOT).unwrap();
        let names: Vec<Vec<u8>> = dir.read_dir(0, 100).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec![b".".to_vec(), b"..".to_vec(), b"f".to_vec()]);
        fs.rename(b"/d/f", b"/g").unwrap();
        assert_eq!(fs.stat(b"/g", true).unwrap().size, data.len() as u64 + 10);
        assert_eq!(fs.rmdir(b"/d"), Ok(()));
    }

    /// The names in directory `path`, `.` and `..` left out.
    fn listing(fs: &RemoteFs, path: &[u8]) -> Vec<Vec<u8>> {
        let dir = fs.open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0, ROOT).unwrap();
        dir.read_dir(2, 100).unwrap().into_iter().map(|e| e.name).collect()
    }

    fn contents(f: &dyn File) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        let n = f.read_at(&mut buf, 0).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn a_file_unlinked_while_open_lives_until_its_last_close() {
        let (_dir, storage, mem) = cluster();
        let fs = connect(&mem, &storage, "t");
        let f = fs.open(b"/f", libc::O_CREAT | libc::O_RDWR, 0o600, ROOT).unwrap();
        let again = fs.open(b"/f", libc::O_RDONLY, 0, ROOT).unwrap();
        f.write_at(b"kept", 0).unwrap();
        fs.unlink(b"/f").unwrap();
        assert_eq!(fs.stat(b"/f", true).err(), Some(Errno(libc::ENOENT)), "the name is gone");
        assert_eq!(fs.unlink(b"/f"), Err(Errno(libc::ENOENT)));
        f.write_at(b"!", 4).unwrap();
        assert_eq!(contents(&*again), b"kept!", "every description still reaches the file");
        assert_eq!(f.stat().unwrap().nlink, 0);
        assert!(f.unlinked() && !fs.open(b"/g", libc::O_CREAT | libc::O_RDWR, 0o600, ROOT).unwrap().unlinked());
        assert_eq!(contents(&*f.reopen(libc::O_RDONLY).unwrap()), b"kept!", "/proc/PID/fd/N opens it anew");
        assert_eq!(listing(&fs, b"/"), vec![b"g".to_vec()], "the hidden directory is not listed");
        assert_eq!(listing(&fs, UNLINKED_DIR).len(), 1);
        let new = fs.open(b"/f", libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600, ROOT).unwrap();
        assert_eq!(contents(&*new), b"", "a new file may take the name");
        drop(f);
        assert_eq!(listing(&fs, UNLINKED_DIR).len(), 1, "one description is left");
        drop(again);
        assert!(listing(&fs, UNLINKED_DIR).is_empty(), "the last close removes it");
    }

    /// A file unlinked while open keeps its other names, and their link count is Linux's: the
    /// hidden name is not counted.
    #[test]
    fn a_hidden_name_is_no_link_of_the_file() {
        let (_dir, storage, mem) = cluster();
        let fs = connect(&mem, &storage, "t");
        let f = fs.open(b"/a", libc::O_CREAT | libc::O_RDWR, 0o600, ROOT).unwrap();
        fs.link(b"/a", b"/b", false).unwrap();
        assert_eq!(fs.stat(b"/b", true).unwrap().nlink, 2);
        fs.unlink(b"/a").unwrap();
        assert_eq!((fs.stat(b"/b", true).unwrap().nlink, f.stat().unwrap().nlink), (1, 1));
        let g = fs.open(b"/b", libc::O_RDWR, 0, ROOT).unwrap();
        fs.unlink(b"/b").unwrap();
        assert_eq!((f.stat().unwrap().nlink, g.stat().unwrap().nlink), (0, 0), "no name is left");
        drop(g);
        assert_eq!(f.stat().unwrap().nlink, 0);
        drop(f);
        assert!(listing(&fs, UNLINKED_DIR).is_empty());
    }

    #[test]
    fn open_files_follow_renames() {
        let (_dir, storage, mem) = cluster();
        let fs = connect(&mem, &storage, "t");
        fs.mkdir(b"/d", 0o755, ROOT).unwrap();
        let inner = fs.open(b"/d/f", libc::O_CREAT | libc::O_RDWR, 0o600, ROOT).unwrap();
        let moved = fs.open(b"/a", libc::O_CREAT | libc::O_RDWR, 0o600, ROOT).unwrap();
        fs.rename(b"/a", b"/b").unwrap();
        moved.write_at(b"at b", 0).unwrap();
        fs.rename(b"/d", b"/e").unwrap();
        inner.write_at(b"in e", 0).unwrap();
        let read = |path: &[u8]| contents(&*fs.open(path, libc::O_RDONLY, 0, ROOT).unwrap());
        assert_eq!((read(b"/b"), read(b"/e/f")), (b"at b".to_vec(), b"in e".to_vec()));
        // A rename over an open file leaves its descriptions the old file.
        let old = fs.open(b"/b", libc::O_RDONLY, 0, ROOT).unwrap();
        fs.rename(b"/e/f", b"/b").unwrap();
        assert_eq!((contents(&*old), read(b"/b")), (b"at b".to_vec(), b"in e".to_vec()));
        assert_eq!(contents(&*inner), b"in e", "the moved file is reached at its new name");
        // A rename between two names of one open file changes nothing.
        fs.link(b"/b", b"/b2", false).unwrap();
        fs.rename(b"/b2", b"/b").unwrap();
        assert_eq!((read(b"/b"), read(b"/b2"), inner.unlinked()), (b"in e".to_vec(), b"in e".to_vec(), false));
        fs.unlink(b"/b2").unwrap();
        // A rename that fails puts the open file it made way for back.
        assert_eq!(fs.rename(b"/nothing", b"/b"), Err(Errno(libc::ENOENT)));
        assert_eq!((read(b"/b"), inner.unlinked()), (b"in e".to_vec(), false));
        drop((old, moved));
        assert!(listing(&fs, UNLINKED_DIR).is_empty());
    }

    #[test]
    fn another_vnode_sees_nothing() {
        let (_dir, storage, mem) = cluster();
        let a = connect(&mem, &storage, "a");
        a.open(b"/secret", libc::O_CREAT | libc::O_WRONLY, 0o600, ROOT).unwrap().write_at(b"key", 0).unwrap();
        let b = connect(&mem, &storage, "b");
        assert_eq!(b.stat(b"/secret", true).err(), Some(Errno(libc::ENOENT)));
        assert_eq!(b.stat(b"/../a/secret", true).err(), Some(Errno(libc::ENOENT)));
    }

    #[test]
    fn a_lost_cache_server_is_eio_from_then_on() {
        let (_dir, storage, mem) = cluster();
        let fs = connect(&mem, &storage, "t");
        let f = fs.open(b"/f", libc::O_CREAT | libc::O_RDWR, 0o644, ROOT).unwrap();
        f.write_at(b"not yet written back", 0).unwrap();
        mem.shutdown();
        // The unsynced bytes died with the mem-server: every later call says so.
        assert_eq!(f.read_at(&mut [0u8; 8], 0).err(), Some(Errno::EIO));
        assert_eq!(f.sync(false).err(), Some(Errno::EIO));
        assert_eq!(fs.stat(b"/f", true).err(), Some(Errno::EIO));
    }

    #[test]
    fn a_cache_server_in_front_of_another_storage_server_is_refused() {
        let (_dir, storage, mem) = cluster();
        let e = RemoteFs::connect(&mem.addr().to_string(), "127.0.0.1:1", "t", 0, Duration::from_secs(5)).err().unwrap().to_string();
        assert!(e.contains(&storage.addr().to_string()) && e.contains("127.0.0.1:1"), "{e}");
    }

    #[test]
    fn modes_times_owners_and_hard_links_are_kept() {
        let (_dir, storage, mem) = cluster();
        let fs = connect(&mem, &storage, "attrs");
        let f = fs.open(b"/f", libc::O_CREAT | libc::O_RDWR, 0o644, ROOT).unwrap();
        f.write_at(b"dirty", 0).unwrap();
        let at = Timespec { sec: 1_234_567_890, nsec: 5 };
        fs.set_attr(b"/f", true, SetAttr::Times { atime: TimeSet::Omit, mtime: TimeSet::At(at) }).unwrap();
        f.set_attr(SetAttr::Mode(0o4600)).unwrap();
        drop(f);
        let st = fs.stat(b"/f", true).unwrap();
        assert_eq!((st.mode, st.mtime, st.size), (libc::S_IFREG | 0o4600, at, 5), "the close's write-back kept the time");
        // The access time apart, untouched by reads: the mount says noatime.
        let seen = Timespec { sec: 1_000_000_000, nsec: 7 };
        fs.set_attr(b"/f", true, SetAttr::Times { atime: TimeSet::At(seen), mtime: TimeSet::Omit }).unwrap();
        fs.open(b"/f", libc::O_RDONLY, 0, ROOT).unwrap().read_at(&mut [0u8; 5], 0).unwrap();
        let st = fs.stat(b"/f", true).unwrap();
        assert_eq!((st.atime, st.mtime), (seen, at));
        assert_eq!(fs.stat_fs().unwrap().flags & libc::ST_NOATIME, libc::ST_NOATIME);
        let owner = SetAttr::Owner { uid: Some(1), gid: None };
        fs.set_attr(b"/f", true, owner).unwrap();
        fs.set_attr(b"/f", true, SetAttr::Owner { uid: None, gid: Some(2) }).unwrap();
        assert_eq!(fs.set_attr(b"/missing", true, owner), Err(Errno::ENOENT));
        assert_eq!(fs.set_attr(b"/missing", true, SetAttr::Mode(0o600)), Err(Errno::ENOENT));
        // A written, cached file gets a second name: both read and write the same bytes.
        let f = fs.open(b"/f", libc::O_RDWR, 0, ROOT).unwrap();
        f.write_at(b"DIRTY", 0).unwrap();
        fs.link(b"/f", b"/h", false).unwrap();
        let h = fs.open(b"/h", libc::O_RDWR, 0, ROOT).unwrap();
        let mut buf = [0u8; 5];
        h.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"DIRTY");
        h.write_at(b"x", 0).unwrap();
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"xIRTY");
        let (sf, sh) = (fs.stat(b"/f", true).unwrap(), fs.stat(b"/h", true).unwrap());
        assert_eq!((sf.ino, sf.nlink, sf.uid, sf.gid), (sh.ino, 2, 1, 2));
        // Closed first: a name unlinked while open would stay as a hidden link until closed.
        drop(f);
        fs.unlink(b"/f").unwrap();
        assert_eq!(fs.stat(b"/h", true).unwrap().nlink, 1);
        fs.mkdir(b"/d", 0o755, ROOT).unwrap();
        assert_eq!(fs.link(b"/d", b"/e", false), Err(Errno::EPERM));
        assert_eq!(fs.link(b"/missing", b"/e", false), Err(Errno::ENOENT));
        assert_eq!(fs.link(b"/h", b"/d", false), Err(Errno::EEXIST));
    }

    /// Every create carries its creator: each kind of object is its creator's from the start,
    /// under a set-group-ID directory with the directory's group (a subdirectory with the bit
    /// too), and a file that existed keeps its owner when opened with `O_CREAT`.
    #[test]
    fn new_objects_belong_to_their_creator() {
        let (_dir, storage, mem) = cluster();
        let fs = connect(&mem, &storage, "owners");
        let me = Owner { uid: 1000, gid: 1001 };
        let owner = |path: &[u8]| {
            let st = fs.stat(path, false).unwrap();
            (st.uid, st.gid, st.mode & 0o7777)
        };
        fs.open(b"/f", libc::O_CREAT | libc::O_WRONLY, 0o4755, me).unwrap();
        fs.mkdir(b"/s", 0o755, ROOT).unwrap();
        fs.set_attr(b"/s", true, SetAttr::Owner { uid: None, gid: Some(50) }).unwrap();
        fs.set_attr(b"/s", true, SetAttr::Mode(0o2775)).unwrap();
        fs.mkdir(b"/s/d", 0o700, me).unwrap();
        fs.mknod(b"/s/p", libc::S_IFIFO | 0o640, me).unwrap();
        fs.symlink(b"d", b"/s/l", me).unwrap();
        assert_eq!(owner(b"/f"), (1000, 1001, 0o4755));
        assert_eq!(owner(b"/s/d"), (1000, 50, 0o2700));
        assert_eq!(owner(b"/s/p"), (1000, 50, 0o640));
        assert_eq!(owner(b"/s/l"), (1000, 50, 0o777));
        fs.open(b"/f", libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC, 0o600, Owner { uid: 2, gid: 2 }).unwrap();
        assert_eq!(owner(b"/f"), (1000, 1001, 0o4755), "an existing file keeps its owner");
    }

    /// Symlinks resolve on the storage server, inside the mount: an absolute target is the
    /// mount's, `..` stops at its root, and every name of a file reads the same cached bytes.
    #[test]
    fn symlinks_resolve_inside_the_mount() {
        let (_dir, storage, mem) = cluster();
        let fs = connect(&mem, &storage, "links");
        fs.mkdir(b"/etc", 0o755, ROOT).unwrap();
        let f = fs.open(b"/etc/passwd", libc::O_CREAT | libc::O_RDWR, 0o644, ROOT).unwrap();
        f.write_at(b"inside", 0).unwrap();
        fs.symlink(b"/etc/passwd", b"/abs", ROOT).unwrap();
        fs.symlink(b"../../../etc", b"/etc/up", ROOT).unwrap();
        fs.symlink(b"loop", b"/loop", ROOT).unwrap();
        fs.symlink(b"nowhere", b"/dangling", ROOT).unwrap();
        assert_eq!(fs.symlink(b"x", b"/abs", ROOT), Err(Errno::EEXIST));
        assert_eq!(fs.symlink(b"", b"/s", ROOT), Err(Errno::ENOENT));
        assert_eq!(fs.symlink(b"x", b"/missing/s", ROOT), Err(Errno::ENOENT));
        assert_eq!(fs.readlink(b"/abs").unwrap(), b"/etc/passwd");
        assert_eq!(fs.readlink(b"/etc/passwd"), Err(Errno::EINVAL));
        // Written through one name (still cached), read through another.
        let mut buf = [0u8; 16];
        let n = fs.open(b"/etc/up/up/passwd", libc::O_RDONLY, 0, ROOT).unwrap().read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"inside");
        assert_eq!(fs.stat(b"/abs", true).unwrap().size, 6);
        let l = fs.stat(b"/abs", false).unwrap();
        assert_eq!((l.mode & libc::S_IFMT, l.size), (libc::S_IFLNK, 11));
        assert_eq!(fs.stat(b"/loop", true), Err(Errno::ELOOP));
        assert_eq!(fs.open(b"/abs", libc::O_RDONLY | libc::O_NOFOLLOW, 0, ROOT).err(), Some(Errno::ELOOP));
        assert_eq!(fs.open(b"/abs/x", libc::O_RDONLY, 0, ROOT).err(), Some(Errno::ENOTDIR));
        // O_CREAT through a dangling symlink creates its target; with O_EXCL it is EEXIST.
        assert_eq!(fs.open(b"/dangling", libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o600, ROOT).err(), Some(Errno::EEXIST));
        fs.open(b"/dangling", libc::O_CREAT | libc::O_WRONLY, 0o600, ROOT).unwrap();
        assert_eq!(fs.stat(b"/nowhere", false).unwrap().mode, libc::S_IFREG | 0o600);
        assert_eq!(fs.set_attr(b"/abs", false, SetAttr::Mode(0o600)), Err(Errno::EOPNOTSUPP));
        fs.set_attr(b"/abs", true, SetAttr::Mode(0o600)).unwrap();
        assert_eq!(fs.stat(b"/etc/passwd", true).unwrap().mode & 0o7777, 0o600);
        // Unlink and rename act on the link itself.
        fs.rename(b"/abs", b"/abs2").unwrap();
        assert_eq!(fs.readlink(b"/abs2").unwrap(), b"/etc/passwd");
        fs.unlink(b"/abs2").unwrap();
        assert!(fs.stat(b"/etc/passwd", true).is_ok());
        let names: Vec<_> = fs.open(b"/", libc::O_RDONLY, 0, ROOT).unwrap().read_dir(0, 100).unwrap();
        let kind = |n: &[u8]| names.iter().find(|e| e.name == n).map(|e| e.kind);
        assert_eq!((kind(b"loop"), kind(b"etc")), (Some(libc::DT_LNK), Some(libc::DT_DIR)));
    }

    #[test]
    fn cache_server_is_stable_per_vnode() {
        let servers: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
        assert_eq!(cache_server(&servers, "demo"), cache_server(&servers, "demo"));
        assert_eq!(cache_server(&[], "demo"), None);
        let spread: std::collections::HashSet<_> = (0..32).map(|i| cache_server(&servers, &format!("v{i}"))).collect();
        assert_eq!(spread.len(), 3, "vNodes spread over every server");
    }
}
