//! The files of every vNode, as LegoOS §4.5 keeps them: full paths are names in a hash table.
//!
//! A request costs one hash lookup of its full path (plus its parent's for the calls that add or
//! remove a name); the directory tree is never walked component by component (only an error path
//! walks up to tell `ENOENT` from `ENOTDIR`, and renaming a directory moves the keys of its
//! subtree). Each directory's children are also kept, in creation order, for readdir (whose
//! cookie is a child's creation number, so paging is stable while the directory changes) and for
//! rmdir's emptiness check; they are rebuilt from the index at start.
//!
//! Every change is appended to the journal before the in-memory tables are updated, so a failed
//! append leaves them unchanged; checkpoints carry the journal into redb (see the crate
//! documentation for the durability rules).

use lego_proto::sync::{LockExt, RwLockExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use lego_proto::storage::{
    check_path, check_vnode, errno, new_dir_mode, now_ns, DirEntry, FileAttr, FileKind, FsStat, Owner, QuotaChange, StorageOp,
    StorageReply, StorageRequest, MAX_DIRENTS, MAX_IO,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::journal::{sync_dir, Journal, JournalError};
use crate::record::{Batch, Entry};

/// (vNode, full path) -> encoded [`Entry`].
const ENTRIES: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("entries");
/// vNode -> next id to hand out (inode numbers and readdir cookies).
const NEXT_ID: TableDefinition<&str, u64> = TableDefinition::new("next_id");
/// vNode -> its mount record (see [`MountRecord`]): the vNodes this server was told about.
const MOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("mounts");

/// What a storage server keeps of a vNode it was told about ([`StorageOp::Mount`]), in the
/// `mounts` table as the bincode of `(version, record)`; version 1 is this layout. A vNode whose
/// files are in the index but that has no record (its mount was made on first use by the builds
/// before mounts) counts as mounted without a quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct MountRecord {
    /// Most bytes of file data (sizes of its files and symlinks), if limited.
    quota: Option<u64>,
}

impl MountRecord {
    const VERSION: u16 = 1;

    fn encode(&self) -> Vec<u8> {
        lego_proto::codec::encode(&(MountRecord::VERSION, self))
    }

    fn decode(b: &[u8]) -> Option<MountRecord> {
        match lego_proto::codec::decode::<(u16, MountRecord)>(b).ok()? {
            (MountRecord::VERSION, r) => Some(r),
            _ => None,
        }
    }
}

/// Device or resource busy (renaming or removing `/`).
const EBUSY: i32 = 16;
/// Inode number of every vNode's `/`.
const ROOT_INO: u64 = 1;
/// Symlinks one path may pass through (Linux's `MAXSYMLINKS`).
const MAX_LINKS: u32 = 40;
/// Nominal size of a directory.
const DIR_SIZE: u64 = 4096;
/// Largest offset or length a file may have (`off_t` is signed).
const MAX_OFF: u64 = i64::MAX as u64;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A directory or file of the store could not be created, read or repaired.
    #[error("{path}: {source}")]
    Io {
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The index could not be opened or read.
    #[error("index: {0}")]
    Index(#[from] redb::Error),
    /// The journal could not be read or started.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The journal's changes could not be written to the index (logged).
    #[error("replaying the journal into the index failed")]
    Replay,
    /// The index holds an entry this build cannot read.
    #[error("index: corrupt entry for vNode {vnode:?}, path {path:?}")]
    Corrupt {
        /// The vNode.
        vnode: String,
        /// The path, lossily decoded.
        path: String,
    },
}

/// The in-memory tables of one vNode.
#[derive(Default)]
struct Vnode {
    /// Full path -> entry.
    entries: HashMap<Vec<u8>, Entry>,
    /// Directory path -> its children's names by creation number (absent: no children).
    children: HashMap<Vec<u8>, BTreeMap<u64, Vec<u8>>>,
    /// Inode of a file or symlink -> its names (hard links), kept by [`Vnode::apply`].
    names: HashMap<u64, BTreeSet<Vec<u8>>>,
    /// Directory path -> how many of its children are directories (absent: none), kept by
    /// [`Vnode::apply`]: a directory's `st_nlink` is 2 plus that, as on Linux.
    subdirs: HashMap<Vec<u8>, u32>,
    /// Next inode number / creation number.
    next_id: u64,
    /// Its quota, if any.
    quota: Option<u64>,
    /// Bytes of its files and symlinks (their sizes, once per inode), kept by [`Vnode::apply`].
    used: u64,
    /// Bytes that writes in progress may add (checked against the quota, not yet in `used`).
    reserved: u64,
}

impl Vnode {
    /// Reserves `growth` bytes for a change in progress: `ENOSPC` if they would take the vNode
    /// past its quota. The caller gives them back with [`Vnode::release`] once the change is
    /// applied or failed.
    fn reserve(&mut self, growth: u64) -> Result<(), i32> {
        if let Some(q) = self.quota {
            if self.used.saturating_add(self.reserved).saturating_add(growth) > q {
                return Err(errno::ENOSPC);
            }
        }
        self.reserved += growth;
        Ok(())
    }

    fn release(&mut self, growth: u64) {
        self.reserved = self.reserved.saturating_sub(growth);
    }

    /// Bytes an entry takes from the quota.
    fn charge(e: &Entry) -> u64 {
        if e.is_dir() {
            0
        } else {
            e.size
        }
    }

    fn has_children(&self, dir: &[u8]) -> bool {
        self.children.get(dir).is_some_and(|c| !c.is_empty())
    }

    /// The errno for a missing `path`: `ENOTDIR` if its nearest existing ancestor is a file
    /// (Linux reports the component that is not a directory), `ENOENT` otherwise.
    fn missing(&self, path: &[u8]) -> i32 {
        let mut p = path;
        while p != b"/" {
            p = parent(p);
            if let Some(e) = self.entries.get(p) {
                return if e.is_dir() { errno::ENOENT } else { errno::ENOTDIR };
            }
        }
        errno::ENOENT
    }

    fn get(&self, path: &[u8]) -> Result<Entry, i32> {
        self.entries.get(path).copied().ok_or_else(|| self.missing(path))
    }

    /// The entry of regular file `path` (`ELOOP` for a symlink, which the sender follows
    /// before any I/O; `EINVAL` for a FIFO or socket, whose data never reaches storage).
    fn file(&self, path: &[u8]) -> Result<Entry, i32> {
        let e = self.get(path)?;
        match e.kind {
            FileKind::File => Ok(e),
            FileKind::Dir => Err(errno::EISDIR),
            FileKind::Symlink => Err(errno::ELOOP),
            FileKind::Fifo | FileKind::Socket => Err(errno::EINVAL),
        }
    }

    /// The directory `path` would be created in: it must exist and be a directory.
    fn parent_dir(&self, path: &[u8]) -> Result<Entry, i32> {
        match self.entries.get(parent(path)) {
            Some(e) if e.is_dir() => Ok(*e),
            Some(_) => Err(errno::ENOTDIR),
            None => Err(self.missing(path)),
        }
    }

    fn alloc(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The attributes of entry `e`, with its inode's number of names.
    fn attr(&self, path: &[u8], e: &Entry) -> FileAttr {
        let nlink = if e.is_dir() {
            2 + self.subdirs.get(path).map_or(0, |&n| n as usize)
        } else {
            self.names.get(&e.ino).map_or(1, |n| n.len().max(1))
        };
        FileAttr {
            kind: e.kind,
            mode: e.mode,
            size: e.size,
            ino: e.ino,
            mtime_ns: e.mtime,
            atime_ns: e.atime,
            ctime_ns: e.ctime,
            nlink: u32::try_from(nlink).unwrap_or(u32::MAX),
            uid: e.uid,
            gid: e.gid,
        }
    }

    /// A batch that gives every name of `e`'s inode the attributes of `e` (each keeping its own
    /// creation number), or `path` alone if it is a directory.
    fn put_inode(&self, path: &[u8], e: Entry) -> Batch {
        let mut batch = Batch::default();
        match self.names.get(&e.ino).filter(|_| !e.is_dir()) {
            Some(names) => {
                for p in names {
                    let dseq = self.entries.get(p).map_or(e.dseq, |n| n.dseq);
                    batch.puts.push((p.clone(), Entry { dseq, ..e }));
                }
            }
            None => batch.puts.push((path.to_vec(), e)),
        }
        batch
    }

    /// Starts the batch that adds the name `path`: `EEXIST` if it is taken, its parent must be
    /// a directory. Answers a fresh id (the new name's creation number, and the inode number of
    /// a new object), the time, the parent's entry, and the batch, which already records the
    /// new id counter and the parent's change.
    fn new_name(&mut self, path: &[u8]) -> Result<(u64, i64, Entry, Batch), i32> {
        if self.entries.contains_key(path) {
            return Err(errno::EEXIST);
        }
        let dir = self.parent_dir(path)?;
        let id = self.alloc();
        let now = now_ns();
        let mut batch = Batch { next_id: Some(self.next_id), ..Batch::default() };
        batch.touch(parent(path), dir, now);
        Ok((id, now, dir, batch))
    }

    /// The entry and batch of a new object of `kind` at `path` (see [`Vnode::new_name`]) that
    /// `creator` makes: owned as [`Owner::in_dir`] says from its parent directory, and a new
    /// directory set-group-ID under a set-group-ID one, as on Linux. The owner is in the
    /// journalled entry itself: no client ever sees the object owned by anyone else.
    fn new_entry(&mut self, path: &[u8], kind: FileKind, mode: u32, size: u64, creator: Owner) -> Result<(Entry, Batch), i32> {
        let (id, now, dir, mut batch) = self.new_name(path)?;
        let Owner { uid, gid } = creator.in_dir(dir.mode, dir.gid);
        let mode = if kind == FileKind::Dir { new_dir_mode(mode, dir.mode) } else { mode & 0o7777 };
        let e = Entry { kind, mode, size, ino: id, mtime: now, ctime: now, dseq: id, uid, gid, atime: now };
        batch.puts.push((path.to_vec(), e));
        Ok((e, batch))
    }

    /// Whether `e` (at some path) is the last name of its inode.
    fn last_name(&self, e: &Entry) -> bool {
        self.names.get(&e.ino).is_none_or(|n| n.len() <= 1)
    }

    /// Counts name `path` of `e` in `names` and `used` (an inode's size once).
    fn add_name(&mut self, path: &[u8], e: &Entry) {
        if e.is_dir() {
            return;
        }
        let set = self.names.entry(e.ino).or_default();
        // Names of one inode carry one size: the new one replaces what the others hold (the
        // same, or the old size while a batch updates them one by one).
        let before = set.first().and_then(|p| self.entries.get(p)).map_or(0, Vnode::charge);
        set.insert(path.to_vec());
        self.used = self.used.saturating_sub(before) + Vnode::charge(e);
    }

    /// Takes name `path` of `e` out of `names`, and its inode's size out of `used` with its
    /// last name.
    fn remove_name(&mut self, path: &[u8], e: &Entry) {
        if let Some(set) = self.names.get_mut(&e.ino).filter(|_| !e.is_dir()) {
            set.remove(path);
            if set.is_empty() {
                self.names.remove(&e.ino);
                self.used = self.used.saturating_sub(Vnode::charge(e));
            }
        }
    }

    /// Every path strictly below directory `dir`, with its entry.
    fn subtree(&self, dir: &[u8]) -> Vec<(Vec<u8>, Entry)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_vec()];
        while let Some(d) = todo.pop() {
            for name in self.children.get(&d).into_iter().flat_map(|c| c.values()) {
                let p = join(&d, name);
                if let Some(e) = self.entries.get(&p) {
                    if e.is_dir() {
                        todo.push(p.clone());
                    }
                    out.push((p, *e));
                }
            }
        }
        out
    }

    fn apply(&mut self, batch: &Batch) {
        for p in &batch.dels {
            if let Some(e) = self.entries.remove(p) {
                self.remove_name(p, &e);
                self.unlink_child(p, &e);
                if e.is_dir() {
                    self.children.remove(p);
                    self.subdirs.remove(p);
                }
            }
        }
        for (p, e) in &batch.puts {
            if let Some(old) = self.entries.remove(p) {
                self.remove_name(p, &old);
                self.unlink_child(p, &old);
            }
            self.add_name(p, e);
            self.entries.insert(p.clone(), *e);
            if p != b"/" {
                let (dir, name) = split(p);
                self.children.entry(dir.to_vec()).or_default().insert(e.dseq, name.to_vec());
                if e.is_dir() {
                    *self.subdirs.entry(dir.to_vec()).or_default() += 1;
                }
            }
        }
        if let Some(n) = batch.next_id {
            self.next_id = n;
        }
    }

    fn unlink_child(&mut self, path: &[u8], e: &Entry) {
        if path == b"/" {
            return;
        }
        if let Some(c) = self.children.get_mut(parent(path)) {
            c.remove(&e.dseq);
        }
        if e.is_dir() {
            if let Some(n) = self.subdirs.get_mut(parent(path)) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// How a [`StorageOp::Create`] treats an existing file, and who creates a new one.
struct Create {
    exclusive: bool,
    truncate: bool,
    owner: Owner,
}

/// What a [`StorageOp::SetAttr`] changes (`None`: kept).
struct SetAttrs {
    mode: Option<u32>,
    mtime: Option<i64>,
    atime: Option<i64>,
    uid: Option<u32>,
    gid: Option<u32>,
}

/// Stripes of the per-inode locks (a write and a truncate of one file exclude each other; other
/// files go on).
const INODE_STRIPES: usize = 64;

/// The storage of every vNode in one host directory.
///
/// Requests run concurrently: each vNode's tables are behind a lock of their own, held only
/// for lookups and in-memory updates (and the journal append), never across file I/O; a write
/// or truncate also holds its inode's lock (striped) across the host file change, so that the
/// size it records matches the bytes.
pub struct Store {
    root: PathBuf,
    db: Database,
    vnodes: RwLock<HashMap<String, Arc<Mutex<Vnode>>>>,
    /// Held by a mount across its index commit, so that mounts apply in the order they commit
    /// while other requests go on.
    mounting: Mutex<()>,
    journal: Journal,
    inodes: [Mutex<()>; INODE_STRIPES],
    /// A checkpoint is due (the journal grew past its limit).
    due: AtomicBool,
}

/// Commits `batches` to the index in one durable transaction.
fn commit_index(db: &Database, batches: &[(String, Batch)]) -> Result<(), i32> {
    let mut txn = db.begin_write().map_err(eio)?;
    txn.set_durability(Durability::Immediate).map_err(eio)?;
    {
        let mut t = txn.open_table(ENTRIES).map_err(eio)?;
        let mut ids = txn.open_table(NEXT_ID).map_err(eio)?;
        for (vnode, batch) in batches {
            for p in &batch.dels {
                t.remove((vnode.as_str(), p.as_slice())).map_err(eio)?;
            }
            for (p, e) in &batch.puts {
                t.insert((vnode.as_str(), p.as_slice()), e.encode().as_slice()).map_err(eio)?;
            }
            if let Some(n) = batch.next_id {
                ids.insert(vnode.as_str(), n).map_err(eio)?;
            }
        }
    }
    txn.commit().map_err(eio)
}

impl Store {
    /// Opens the store in `root` (creating it if need be), recovering from a crash: the journal
    /// is replayed over the index, host files that no entry refers to are removed and files
    /// longer than their entry are cut to its size.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let vnodes_dir = root.join("vnodes");
        std::fs::create_dir_all(&vnodes_dir).map_err(io(&vnodes_dir))?;
        let index = root.join("index.redb");
        let db = Database::create(&index).map_err(redb::Error::from)?;
        sync_dir(root).map_err(io(root))?;
        {
            // Make sure both tables exist, so that reads below find them.
            let txn = db.begin_write().map_err(redb::Error::from)?;
            txn.open_table(ENTRIES).map_err(redb::Error::from)?;
            txn.open_table(NEXT_ID).map_err(redb::Error::from)?;
            txn.open_table(MOUNTS).map_err(redb::Error::from)?;
            txn.commit().map_err(redb::Error::from)?;
        }
        let (replay, last) = Journal::recover(root)?;
        if !replay.is_empty() {
            tracing::info!(changes = replay.len(), "replaying the journal");
            commit_index(&db, &replay).map_err(|_| StoreError::Replay)?;
        }
        let journal = Journal::start(root, last)?;
        let mut vnodes: HashMap<String, Vnode> = HashMap::new();
        let mut recorded = std::collections::HashSet::new();
        {
            let txn = db.begin_read().map_err(redb::Error::from)?;
            let entries = txn.open_table(ENTRIES).map_err(redb::Error::from)?;
            for item in entries.iter().map_err(redb::Error::from)? {
                let (k, v) = item.map_err(redb::Error::from)?;
                let (vnode, path) = k.value();
                let corrupt = || StoreError::Corrupt { vnode: vnode.to_string(), path: String::from_utf8_lossy(path).into() };
                let e = Entry::decode(v.value()).ok_or_else(corrupt)?;
                if check_vnode(vnode).is_err() || check_path(path).is_err() {
                    return Err(corrupt());
                }
                vnodes.entry(vnode.to_string()).or_default().entries.insert(path.to_vec(), e);
            }
            let ids = txn.open_table(NEXT_ID).map_err(redb::Error::from)?;
            for item in ids.iter().map_err(redb::Error::from)? {
                let (k, v) = item.map_err(redb::Error::from)?;
                vnodes.entry(k.value().to_string()).or_default().next_id = v.value();
            }
            let mounts = txn.open_table(MOUNTS).map_err(redb::Error::from)?;
            for item in mounts.iter().map_err(redb::Error::from)? {
                let (k, v) = item.map_err(redb::Error::from)?;
                let corrupt = || StoreError::Corrupt { vnode: k.value().to_string(), path: "(mount record)".into() };
                let record = MountRecord::decode(v.value()).ok_or_else(corrupt)?;
                if check_vnode(k.value()).is_err() {
                    return Err(corrupt());
                }
                vnodes.entry(k.value().to_string()).or_default().quota = record.quota;
                recorded.insert(k.value().to_string());
            }
        }
        // A mount whose root entry did not reach the journal before a power loss: its root is
        // made again below, once the journal runs.
        let mut rootless = Vec::new();
        for (name, v) in vnodes.iter_mut() {
            if !v.entries.contains_key(b"/".as_slice()) {
                if v.entries.is_empty() && recorded.contains(name) {
                    rootless.push(name.clone());
                    continue;
                }
                return Err(StoreError::Corrupt { vnode: name.clone(), path: "/".into() });
            }
            let Vnode { entries, children, names, subdirs, next_id, used, .. } = v;
            for (p, e) in entries.iter() {
                *next_id = (*next_id).max(e.ino.max(e.dseq) + 1);
                if !e.is_dir() {
                    let set = names.entry(e.ino).or_default();
                    if set.is_empty() {
                        *used += Vnode::charge(e);
                    }
                    set.insert(p.clone());
                }
                if p != b"/" {
                    let (dir, n) = split(p);
                    children.entry(dir.to_vec()).or_default().insert(e.dseq, n.to_vec());
                    if e.is_dir() {
                        *subdirs.entry(dir.to_vec()).or_default() += 1;
                    }
                }
            }
        }
        repair_data(root, &vnodes).map_err(|(path, source)| StoreError::Io { path, source })?;
        let vnodes = vnodes.into_iter().map(|(k, v)| (k, Arc::new(Mutex::new(v)))).collect();
        let store = Store {
            root: root.to_path_buf(),
            db,
            vnodes: RwLock::new(vnodes),
            mounting: Mutex::new(()),
            journal,
            inodes: std::array::from_fn(|_| Mutex::new(())),
            due: AtomicBool::new(false),
        };
        for name in rootless {
            let v = store.vnode(&name).map_err(|_| StoreError::Replay)?;
            store.make_root(&name, &mut v.lock_unpoisoned()).map_err(|_| StoreError::Replay)?;
        }
        Ok(store)
    }

    /// Serves one request; never panics on any input.
    pub fn handle(&self, req: StorageRequest) -> StorageReply {
        let reply = match self.op(&req.vnode, req.op) {
            Ok(r) => r,
            Err(e) => StorageReply::Error(e),
        };
        if self.due.swap(false, Ordering::Relaxed) {
            // The change itself is journalled; a failure here only delays the checkpoint.
            if let Err(e) = self.checkpoint() {
                tracing::warn!(errno = e, "checkpointing the journal failed");
            }
        }
        reply
    }

    /// Writes every journalled change to the index durably, empties the journal, then deletes
    /// the host files of removed entries.
    pub fn checkpoint(&self) -> Result<(), i32> {
        let mut freed = Vec::new();
        self.journal.checkpoint(|batches| {
            commit_index(&self.db, batches)?;
            freed = batches.iter().flat_map(|(v, b)| b.freed.iter().map(move |&ino| (v.clone(), ino))).collect();
            Ok(())
        })?;
        for (vnode, ino) in freed {
            let p = self.data_path(&vnode, ino);
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "removing a deleted file's data");
                }
            }
        }
        Ok(())
    }

    fn op(&self, vnode: &str, op: StorageOp) -> Result<StorageReply, i32> {
        check_vnode(vnode)?;
        if let StorageOp::Mount { quota } = op {
            return self.mount(vnode, quota);
        }
        if let StorageOp::Resolve { path, follow } = &op {
            if path.len() > lego_proto::storage::MAX_PATH {
                return Err(errno::ENAMETOOLONG);
            }
            if path.first() != Some(&b'/') || path.contains(&0) {
                return Err(errno::EINVAL);
            }
            let v = self.vnode(vnode)?;
            let v = v.lock_unpoisoned();
            return Ok(StorageReply::Data(self.resolve(vnode, &v, path, *follow)?));
        }
        match &op {
            StorageOp::Rename { from, to } | StorageOp::Link { from, to } => {
                check_path(from)?;
                check_path(to)?;
            }
            op => op.path().map_or(Ok(()), check_path)?,
        }
        let v = self.vnode(vnode)?;
        let v = &*v;
        match op {
            StorageOp::Stat { path } => {
                let v = v.lock_unpoisoned();
                Ok(StorageReply::Attr(v.attr(&path, &v.get(&path)?)))
            }
            StorageOp::Read { path, offset, len } => self.read(vnode, v, &path, offset, len),
            StorageOp::Write { path, offset, data } => self.write(vnode, v, &path, offset, &data),
            StorageOp::Create { path, mode, exclusive, truncate, owner } => {
                self.create(vnode, v, &path, mode, Create { exclusive, truncate, owner })
            }
            StorageOp::Truncate { path, len } => self.truncate(vnode, v, &path, len),
            StorageOp::Unlink { path } => self.unlink(vnode, v, &path),
            StorageOp::Rename { from, to } => self.rename(vnode, v, &from, &to),
            StorageOp::Mkdir { path, mode, owner } => self.make(vnode, v, &path, FileKind::Dir, mode, owner),
            StorageOp::Mknod { path, kind: kind @ (FileKind::Fifo | FileKind::Socket), mode, owner } => self.make(vnode, v, &path, kind, mode, owner),
            StorageOp::Mknod { .. } => Err(errno::EINVAL),
            StorageOp::Rmdir { path } => self.rmdir(vnode, v, &path),
            StorageOp::Readdir { path, cookie, max } => readdir(vnode, &v.lock_unpoisoned(), &path, cookie, max),
            StorageOp::Fsync { path } => self.fsync(vnode, v, &path),
            StorageOp::SyncFs => self.syncfs(vnode),
            StorageOp::StatFs => self.statfs(v),
            StorageOp::SetAttr { path, mode, mtime_ns, atime_ns, uid, gid } => {
                self.set_attr(vnode, v, &path, SetAttrs { mode, mtime: mtime_ns, atime: atime_ns, uid, gid })
            }
            StorageOp::Link { from, to } => self.link(vnode, v, &from, &to),
            StorageOp::Symlink { path, target, owner } => self.symlink(vnode, v, &path, &target, owner),
            StorageOp::Readlink { path } => {
                let e = v.lock_unpoisoned().get(&path)?;
                if e.kind != FileKind::Symlink {
                    return Err(errno::EINVAL);
                }
                Ok(StorageReply::Data(self.link_target(vnode, &e)?))
            }
            // Answered above.
            StorageOp::Resolve { .. } | StorageOp::Mount { .. } => Err(errno::EINVAL),
        }
    }

    /// The tables of `vnode`: `ENOVNODE` if the server was never told about it (a request
    /// naming a vNode nobody created, or a typo, gets no mount of its own).
    fn vnode(&self, vnode: &str) -> Result<Arc<Mutex<Vnode>>, i32> {
        match self.vnodes.read_unpoisoned().get(vnode) {
            Some(v) => Ok(v.clone()),
            None => {
                tracing::warn!(vnode, "refused a request for a vNode this storage server was not told about");
                Err(errno::ENOVNODE)
            }
        }
    }

    /// `Mount`: makes the vNode's mount if it is new (its directory and `/`), and records its
    /// quota durably in the index (not the journal, whose records keep their layout); a quota
    /// below what the vNode holds already only stops it from growing.
    ///
    /// The mounts are kept here rather than told again by the GSM after every restart of this
    /// server, so that a restarted server refuses nothing it knew and needs no manager to serve.
    fn mount(&self, vnode: &str, change: QuotaChange) -> Result<StorageReply, i32> {
        let _one_at_a_time = self.mounting.lock_unpoisoned();
        let known = self.vnodes.read_unpoisoned().get(vnode).cloned();
        let quota = match (change, &known) {
            (QuotaChange::Set(q), _) => q,
            (QuotaChange::Keep, Some(_)) => return Ok(StorageReply::Done),
            (QuotaChange::Keep, None) => None,
        };
        if known.as_ref().is_some_and(|v| v.lock_unpoisoned().quota == quota) {
            return Ok(StorageReply::Done);
        }
        if known.is_none() {
            // Its directories before its record (creating them twice is harmless).
            let dir = self.root.join("vnodes").join(vnode);
            std::fs::create_dir_all(dir.join("data")).map_err(eio)?;
            sync_dir(&dir).and_then(|()| sync_dir(&self.root.join("vnodes"))).map_err(eio)?;
        }
        let mut txn = self.db.begin_write().map_err(eio)?;
        txn.set_durability(Durability::Immediate).map_err(eio)?;
        txn.open_table(MOUNTS).map_err(eio)?.insert(vnode, MountRecord { quota }.encode().as_slice()).map_err(eio)?;
        txn.commit().map_err(eio)?;
        match known {
            Some(v) => v.lock_unpoisoned().quota = quota,
            None => {
                let mut v = Vnode { quota, ..Vnode::default() };
                self.make_root(vnode, &mut v)?;
                self.vnodes.write_unpoisoned().insert(vnode.to_string(), Arc::new(Mutex::new(v)));
                tracing::info!(vnode, ?quota, "new vNode");
            }
        }
        Ok(StorageReply::Done)
    }

    /// Journals and applies the `/` of a new mount.
    fn make_root(&self, vnode: &str, v: &mut Vnode) -> Result<(), i32> {
        let now = now_ns();
        let root =
            Entry { kind: FileKind::Dir, mode: 0o755, size: DIR_SIZE, ino: ROOT_INO, mtime: now, ctime: now, dseq: 0, uid: 0, gid: 0, atime: now };
        let batch = Batch { next_id: Some(ROOT_INO + 1), ..Batch::put(b"/", root) };
        self.commit(vnode, v, batch)
    }

    /// Journals `batch`, then applies it to `v` (whose lock the caller holds, so changes are
    /// journalled in the order they are applied).
    fn commit(&self, vnode: &str, v: &mut Vnode, batch: Batch) -> Result<(), i32> {
        if self.journal.append(vnode, &batch)? {
            self.due.store(true, Ordering::Relaxed);
        }
        v.apply(&batch);
        Ok(())
    }

    /// The lock of inode `ino` of `vnode` (striped).
    fn inode_lock(&self, vnode: &str, ino: u64) -> MutexGuard<'_, ()> {
        let h = lego_proto::storage::vnode_hash(vnode) ^ ino.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.inodes[(h % INODE_STRIPES as u64) as usize].lock_unpoisoned()
    }

    fn data_path(&self, vnode: &str, ino: u64) -> PathBuf {
        self.root.join("vnodes").join(vnode).join("data").join(ino.to_string())
    }

    /// Opens the host file of `ino` for writing, creating it if missing (after a crash, a file
    /// whose bytes never reached the disk reads as zeros).
    fn open_data(&self, vnode: &str, ino: u64, truncate: bool) -> Result<File, i32> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(self.data_path(vnode, ino))
            .map_err(io_errno)
    }

    fn read(&self, vnode: &str, v: &Mutex<Vnode>, path: &[u8], offset: u64, len: u32) -> Result<StorageReply, i32> {
        if offset > MAX_OFF || len as usize > MAX_IO {
            return Err(errno::EINVAL);
        }
        let e = v.lock_unpoisoned().file(path)?;
        if offset >= e.size {
            return Ok(StorageReply::Data(Vec::new()));
        }
        let n = u64::from(len).min(e.size - offset) as usize;
        let mut buf = vec![0u8; n];
        match File::open(self.data_path(vnode, e.ino)) {
            Ok(f) => {
                // The host file may be shorter than the entry (a sparse tail, or bytes lost in a
                // crash): what it lacks reads as zeros.
                let mut done = 0;
                while done < n {
                    match f.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => break,
                        Ok(k) => done += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(io_errno(e)),
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_errno(err)),
        }
        Ok(StorageReply::Data(buf))
    }

    fn write(&self, vnode: &str, v: &Mutex<Vnode>, path: &[u8], offset: u64, data: &[u8]) -> Result<StorageReply, i32> {
        if data.len() > MAX_IO || offset > MAX_OFF {
            return Err(errno::EINVAL);
        }
        let end = offset + data.len() as u64;
        if end > MAX_OFF {
            return Err(errno::EFBIG);
        }
        let (e, growth) = {
            let mut v = v.lock_unpoisoned();
            let e = v.file(path)?;
            if data.is_empty() {
                return Ok(StorageReply::Attr(v.attr(path, &e)));
            }
            // All or nothing: a write that would pass the quota writes no byte.
            let growth = end.saturating_sub(e.size);
            v.reserve(growth)?;
            (e, growth)
        };
        let _inode = self.inode_lock(vnode, e.ino);
        let wrote = self.open_data(vnode, e.ino, false).and_then(|f| f.write_all_at(data, offset).map_err(io_errno));
        let mut v = v.lock_unpoisoned();
        v.release(growth);
        wrote?;
        // The name may have gone or moved to another file while the bytes were written.
        let e = v.file(path).and_then(|now| if now.ino == e.ino { Ok(now) } else { Err(errno::ENOENT) })?;
        let now = now_ns();
        let e = Entry { size: e.size.max(end), mtime: now, ctime: now, ..e };
        let batch = v.put_inode(path, e);
        self.commit(vnode, &mut v, batch)?;
        Ok(StorageReply::Attr(v.attr(path, &e)))
    }

    fn create(&self, vnode: &str, vm: &Mutex<Vnode>, path: &[u8], mode: u32, how: Create) -> Result<StorageReply, i32> {
        let Create { exclusive, truncate, owner } = how;
        let mut v = vm.lock_unpoisoned();
        if let Some(&e) = v.entries.get(path) {
            return match (exclusive, e.kind) {
                (true, _) => Err(errno::EEXIST),
                (false, FileKind::Dir) => Err(errno::EISDIR),
                (false, FileKind::File) if truncate => {
                    drop(v);
                    self.truncate_to(vnode, vm, path, e.ino, 0)
                }
                // O_CREAT of an existing FIFO opens it, and O_TRUNC does nothing to it (the
                // client refuses to open a socket, `ENXIO`).
                (false, FileKind::File | FileKind::Fifo | FileKind::Socket) => Ok(StorageReply::Attr(v.attr(path, &e))),
                (false, FileKind::Symlink) => Err(errno::ELOOP),
            };
        }
        let (e, batch) = v.new_entry(path, FileKind::File, mode, 0, owner)?;
        // A host file left over from before a crash would show stale bytes: start empty.
        self.open_data(vnode, e.ino, true)?;
        self.commit(vnode, &mut v, batch)?;
        Ok(StorageReply::Attr(v.attr(path, &e)))
    }

    fn truncate(&self, vnode: &str, v: &Mutex<Vnode>, path: &[u8], len: u64) -> Result<StorageReply, i32> {
        if len > MAX_OFF {
            return Err(errno::EINVAL);
        }
        let ino = v.lock_unpoisoned().file(path)?.ino;
        self.truncate_to(vnode, v, path, ino, len)
    }

    /// Sets the length of file `path` (inode `ino` when it was looked up) to `len`.
    fn truncate_to(&self, vnode: &str, v: &Mutex<Vnode>, path: &[u8], ino: u64, len: u64) -> Result<StorageReply, i32> {
        let _inode = self.inode_lock(vnode, ino);
        let mut v = v.lock_unpoisoned();
        let e = v.file(path).and_then(|now| if now.ino == ino { Ok(now) } else { Err(errno::ENOENT) })?;
        // Cut to the entry's size first: bytes past it (from a write that lost a race with an
        // unlink, or from before a crash) must not show through an extending truncate.
        if let Some(q) = v.quota {
            if len > e.size && v.used.saturating_add(v.reserved).saturating_add(len - e.size) > q {
                return Err(errno::ENOSPC);
            }
        }
        let f = self.open_data(vnode, ino, false)?;
        f.set_len(e.size.min(len)).and_then(|()| f.set_len(len)).map_err(io_errno)?;
        let now = now_ns();
        let e = Entry { size: len, mtime: now, ctime: now, ..e };
        let batch = v.put_inode(path, e);
        self.commit(vnode, &mut v, batch)?;
        Ok(StorageReply::Attr(v.attr(path, &e)))
    }

    fn unlink(&self, vnode: &str, v: &Mutex<Vnode>, path: &[u8]) -> Result<StorageReply, i32> {
        if path == b"/" {
            return Err(errno::EISDIR);
        }
        let mut v = v.lock_unpoisoned();
        let e = v.get(path)?;
        if e.is_dir() {
            return Err(errno::EISDIR);
        }
        let dir = v.get(parent(path))?;
        let now = now_ns();
        let mut batch = Batch { dels: vec![path.to_vec()], ..Batch::default() };
        if v.last_name(&e) {
            batch.freed.push(e.ino);
        } else {
            // The other names stay, with one link fewer: a change of the inode.
            batch.puts = v.put_inode(path, Entry { ctime: now, ..e }).puts;
            batch.puts.retain(|(p, _)| p != path);
        }
        batch.touch(parent(path), dir, now);
        self.commit(vnode, &mut v, batch)?;
        Ok(StorageReply::Done)
    }

    /// A directory or a FIFO node at `path`: an entry only, with no data file.
    fn make(&self, vnode: &str, v: &Mutex<Vnode>, path: &[u8], kind: FileKind, mode: u32, owner: Owner) -> Result<StorageReply, i32> {
        let size = if kind == FileKind::Dir { DIR_SIZE } else { 0 };
        let mut v = v.lock_unpoisoned();
        let (e, batch) = v.new_entry(path, kind, mode, size, owner)?;
        self.commit(vnode, &mut v, batch)?;
        Ok(StorageReply::Attr(v.attr(path, &e)))
    }

    /// A hard link: `to` becomes another name of the inode at `from` (not a directory). The
    /// inode's data stays until its last name goes, and counts once against the quota.
    fn link(&self, vnode: &str, v: &Mutex<Vnode>, from: &[u8], to: &[u8]) -> Result<StorageReply, i32> {
        let mut v = v.lock_unpoisoned();
        let src = v.get(from)?;
        if src.is_dir() {
            return Err(errno::EPERM);
        }
        let (id, now, _, mut batch) = v.new_name(to)?;
        let e = Entry { ctime: now, ..src };
        batch.puts.extend(v.put_inode(from, e).puts);
        batch.puts.push((to.to_vec(), Entry { dseq: id, ..e }));
        self.commit(vnode, &mut v, batch)?;
        Ok(StorageReply::Attr(v.attr(to, &e)))
    }

    fn rmdir(&self, vnode: &str, v: &Mutex<Vnode>, path: &[u8]) -> Result<StorageReply, i32> {
        if path == b"/" {
            return Err(EBUSY);
        }
        let mut v = v.lock_unpoisoned();
        let e = v.get(path)?;
        if !e.is_dir() {
            return Err(errno::ENOTDIR);
        }
        if v.has_children(path) {
            return Err(errno::ENOTEMPTY);
        }
        let dir = v.get(parent(path))?;
        let mut batch = Batch { dels: vec![path.to_vec()], ..Batch::default() };
        batch.touch(parent(path), dir, now_ns());
        self.commit(vnode, &mut v, batch)?;
        Ok(StorageReply::Done)
    }

    /// Renames under the vNode's lock: a concurrent request sees the old name or the new one,
    /// never neither.
    fn rename(&self, vnode: &str, v: &Mutex<Vnode>, from: &[u8], to: &[u8]) -> Result<StorageReply, i32> {
        let mut v = v.lock_unpoisoned();
        if from == to {
            v.get(from)?;
            return Ok(StorageReply::Done);
        }
        if from == b"/" || to == b"/" {
            return Err(EBUSY);
        }
        let src = v.get(from)?;
        if src.is_dir() && to.len() > from.len() && to.starts_with(from) && to[from.len()] == b'/' {
            return Err(errno::EINVAL);
        }
        let to_dir = v.parent_dir(to)?;
        let from_dir = v.get(parent(from))?;
        let mut batch = Batch::default();
        if let Some(dst) = v.entries.get(to) {
            // Symlinks move and are replaced as files are.
            match (src.is_dir(), dst.is_dir()) {
                (false, true) => return Err(errno::EISDIR),
                (true, false) => return Err(errno::ENOTDIR),
                (true, true) if v.has_children(to) => return Err(errno::ENOTEMPTY),
                (true, true) => {}
                // Two names of one inode: rename(2) does nothing.
                (false, false) if dst.ino == src.ino => return Ok(StorageReply::Done),
                (false, false) if v.last_name(dst) => batch.freed.push(dst.ino),
                (false, false) => {
                    let e = Entry { ctime: now_ns(), ..*dst };
                    batch.puts.extend(v.put_inode(to, e).puts.into_iter().filter(|(p, _)| p != to));
                }
            }
            batch.dels.push(to.to_vec());
        }
        let moved = if src.is_dir() { v.subtree(from) } else { Vec::new() };
        let id = v.alloc();
        batch.next_id = Some(v.next_id);
        let now = now_ns();
        batch.dels.push(from.to_vec());
        batch.puts.push((to.to_vec(), Entry { dseq: id, ctime: now, ..src }));
        for (p, e) in moved {
            let mut np = to.to_vec();
            np.extend_from_slice(&p[from.len()..]);
            batch.dels.push(p);
            batch.puts.push((np, e));
        }
        batch.touch(parent(from), from_dir, now);
        if parent(from) != parent(to) {
            batch.touch(parent(to), to_dir, now);
        }
        self.commit(vnode, &mut v, batch)?;
        Ok(StorageReply::Done)
    }

    /// The text of symlink `e`, kept in its data file.
    fn link_target(&self, vnode: &str, e: &Entry) -> Result<Vec<u8>, i32> {
        let mut buf = vec![0u8; usize::try_from(e.size).map_err(|_| errno::EIO)?.min(lego_proto::storage::MAX_PATH)];
        let f = File::open(self.data_path(vnode, e.ino)).map_err(io_errno)?;
        f.read_exact_at(&mut buf, 0).map_err(io_errno)?;
        Ok(buf)
    }

    /// Resolves `path` (see [`StorageOp::Resolve`]) in `v`, whose lock the caller holds.
    fn resolve(&self, vnode: &str, v: &Vnode, path: &[u8], follow: bool) -> Result<Vec<u8>, i32> {
        let follow = follow || path.ends_with(b"/");
        let comps = |p: &[u8]| -> Vec<Vec<u8>> { p.split(|&c| c == b'/').filter(|c| !c.is_empty()).map(<[u8]>::to_vec).collect() };
        let mut todo: std::collections::VecDeque<Vec<u8>> = comps(path).into();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        let here = |out: &[Vec<u8>]| -> Vec<u8> {
            if out.is_empty() {
                return b"/".to_vec();
            }
            out.iter().flat_map(|c| std::iter::once(b'/').chain(c.iter().copied())).collect()
        };
        while let Some(c) = todo.pop_front() {
            match c.as_slice() {
                b"." => continue,
                b".." => {
                    out.pop();
                    continue;
                }
                _ => out.push(c),
            }
            let cur = here(&out);
            let last = todo.is_empty();
            match v.entries.get(&cur) {
                None if last => break,
                None => return Err(v.missing(&cur)),
                Some(e) if e.kind == FileKind::Symlink && (!last || follow) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(errno::ELOOP);
                    }
                    let target = self.link_target(vnode, e)?;
                    out.pop();
                    if target.first() == Some(&b'/') {
                        out.clear();
                    }
                    for t in comps(&target).into_iter().rev() {
                        todo.push_front(t);
                    }
                }
                Some(e) if !last && !e.is_dir() => return Err(errno::ENOTDIR),
                Some(_) => {}
            }
        }
        let resolved = here(&out);
        check_path(&resolved)?;
        Ok(resolved)
    }

    /// A symlink at `path`: its text goes to its data file before its entry is journalled.
    fn symlink(&self, vnode: &str, v: &Mutex<Vnode>, path: &[u8], target: &[u8], owner: Owner) -> Result<StorageReply, i32> {
        if target.is_empty() {
            return Err(errno::ENOENT);
        }
        if target.len() > lego_proto::storage::MAX_PATH {
            return Err(errno::ENAMETOOLONG);
        }
        if target.contains(&0) {
            return Err(errno::EINVAL);
        }
        let mut v = v.lock_unpoisoned();
        let size = target.len() as u64;
        // (An id taken for a symlink refused here is skipped, which is harmless.)
        let (e, batch) = v.new_entry(path, FileKind::Symlink, 0o777, size, owner)?;
        if v.quota.is_some_and(|q| v.used.saturating_add(v.reserved).saturating_add(size) > q) {
            return Err(errno::ENOSPC);
        }
        self.open_data(vnode, e.ino, true)?.write_all_at(target, 0).map_err(io_errno)?;
        self.commit(vnode, &mut v, batch)?;
        Ok(StorageReply::Attr(v.attr(path, &e)))
    }

    /// `chmod`/`utimensat`/`chown`: the inode with its new mode, modification time and owner
    /// ids, journalled as every index change is.
    fn set_attr(&self, vnode: &str, v: &Mutex<Vnode>, path: &[u8], set: SetAttrs) -> Result<StorageReply, i32> {
        let mut v = v.lock_unpoisoned();
        let e = v.get(path)?;
        let e = Entry {
            mode: set.mode.map_or(e.mode, |m| m & 0o7777),
            mtime: set.mtime.unwrap_or(e.mtime),
            atime: set.atime.unwrap_or(e.atime),
            ctime: now_ns(),
            uid: set.uid.unwrap_or(e.uid),
            gid: set.gid.unwrap_or(e.gid),
            ..e
        };
        let batch = v.put_inode(path, e);
        self.commit(vnode, &mut v, batch)?;
        Ok(StorageReply::Attr(v.attr(path, &e)))
    }

    /// Makes the file's bytes, its entry and every change before it survive power loss. Holds
    /// no lock while the disk works.
    fn fsync(&self, vnode: &str, v: &Mutex<Vnode>, path: &[u8]) -> Result<StorageReply, i32> {
        let e = v.lock_unpoisoned().get(path)?;
        if !e.is_dir() {
            self.open_data(vnode, e.ino, false)?.sync_all().map_err(io_errno)?;
            // The host file's own name, in case it was created since the last sync.
            sync_dir(&self.root.join("vnodes").join(vnode).join("data")).map_err(io_errno)?;
        }
        self.journal.sync()?;
        Ok(StorageReply::Done)
    }

    /// The space of the vNode's mount: its quota and what its files take, or, with no quota,
    /// the storage disk's.
    fn statfs(&self, v: &Mutex<Vnode>) -> Result<StorageReply, i32> {
        let (disk, used_disk) = crate::disk_usage(&self.root).ok_or(errno::EIO)?;
        let disk_free = disk.saturating_sub(used_disk);
        let v = v.lock_unpoisoned();
        let (capacity_bytes, free_bytes) = match v.quota {
            Some(q) => (q, q.saturating_sub(v.used).min(disk_free)),
            None => (disk, disk_free),
        };
        Ok(StorageReply::FsStat(FsStat {
            capacity_bytes,
            free_bytes,
            used_bytes: v.used,
            files: v.entries.len() as u64,
            quota_bytes: v.quota,
        }))
    }

    /// `sync`/`syncfs` of a vNode: every file's bytes and every change survive power loss.
    fn syncfs(&self, vnode: &str) -> Result<StorageReply, i32> {
        let data = File::open(self.root.join("vnodes").join(vnode).join("data")).map_err(io_errno)?;
        // SAFETY: syncfs(2) only reads the descriptor, which `data` keeps open for the call.
        if unsafe { libc::syncfs(data.as_raw_fd()) } != 0 {
            return Err(io_errno(std::io::Error::last_os_error()));
        }
        self.journal.sync()?;
        Ok(StorageReply::Done)
    }
}

fn readdir(vnode: &str, v: &Vnode, path: &[u8], cookie: u64, max: u32) -> Result<StorageReply, i32> {
    if max == 0 {
        return Err(errno::EINVAL);
    }
    let max = (max as usize).min(MAX_DIRENTS);
    if !v.get(path)?.is_dir() {
        return Err(errno::ENOTDIR);
    }
    let mut entries = Vec::new();
    let mut more = false;
    if let Some(kids) = v.children.get(path) {
        for (&seq, name) in kids.range((Bound::Excluded(cookie), Bound::Unbounded)) {
            if entries.len() == max {
                more = true;
                break;
            }
            match v.entries.get(&join(path, name)) {
                Some(e) => entries.push(DirEntry { name: name.clone(), kind: e.kind, ino: e.ino, cookie: seq }),
                None => {
                    tracing::error!(vnode, name = %String::from_utf8_lossy(name), "a child without an entry")
                }
            }
        }
    }
    Ok(StorageReply::Entries { entries, more })
}

/// Removes host files no entry refers to, and cuts files longer than their entry.
fn repair_data(root: &Path, vnodes: &HashMap<String, Vnode>) -> Result<(), (PathBuf, std::io::Error)> {
    let vnodes_dir = root.join("vnodes");
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |e| (p, e)
    };
    for d in std::fs::read_dir(&vnodes_dir).map_err(at(&vnodes_dir))? {
        let d = d.map_err(at(&vnodes_dir))?;
        let data_dir = d.path().join("data");
        let Ok(files) = std::fs::read_dir(&data_dir) else { continue };
        let sizes: HashMap<u64, u64> = d
            .file_name()
            .to_str()
            .and_then(|name| vnodes.get(name))
            .map(|v| v.entries.values().filter(|e| !e.is_dir()).map(|e| (e.ino, e.size)).collect())
            .unwrap_or_default();
        for f in files {
            let f = f.map_err(at(&data_dir))?;
            let path = f.path();
            let size = f.file_name().to_str().and_then(|n| n.parse::<u64>().ok()).and_then(|ino| sizes.get(&ino));
            match size {
                None => {
                    tracing::info!(path = %path.display(), "removing a file no entry refers to");
                    std::fs::remove_file(&path).map_err(at(&path))?;
                }
                Some(&size) => {
                    let len = f.metadata().map_err(at(&path))?.len();
                    if len > size {
                        let file = OpenOptions::new().write(true).open(&path).map_err(at(&path))?;
                        file.set_len(size).map_err(at(&path))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The directory part of a checked path (`/` for `/` itself).
fn parent(path: &[u8]) -> &[u8] {
    split(path).0
}

/// A checked path other than `/` as (parent directory, name).
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) | None => (b"/", &path[path.len().min(1)..]),
        Some(i) => (&path[..i], &path[i + 1..]),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if dir != b"/" {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// An index failure: logged, and `EIO` for the client.
fn eio(e: impl std::fmt::Display) -> i32 {
    tracing::error!(error = %e, "storage index");
    errno::EIO
}

/// A host I/O failure: the errno the client should see.
fn io_errno(e: std::io::Error) -> i32 {
    match e.raw_os_error() {
        Some(c) if c == errno::ENOSPC || c == errno::EFBIG => c,
        _ => {
            tracing::error!(error = %e, "storage I/O");
            errno::EIO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_and_join() {
        assert_eq!(split(b"/a"), (b"/".as_slice(), b"a".as_slice()));
        assert_eq!(split(b"/a/b/c"), (b"/a/b".as_slice(), b"c".as_slice()));
        assert_eq!(parent(b"/"), b"/");
        assert_eq!(join(b"/", b"x"), b"/x");
        assert_eq!(join(b"/a", b"x"), b"/a/x");
    }

    #[test]
    fn entries_round_trip() {
        let e = Entry { kind: FileKind::Dir, mode: 0o755, size: 9, ino: 3, mtime: -1, ctime: 7, dseq: 4, uid: 5, gid: 6, atime: 8 };
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        // Version 2 records (no access time) read as accessed when modified; version 1 records
        // (no owner ids either) as owned by 0:0 too.
        assert_eq!(Entry::decode(&e.encode()[..Entry::LEN_V2]), Some(Entry { atime: -1, ..e }));
        assert_eq!(Entry::decode(&e.encode()[..Entry::LEN_V1]), Some(Entry { uid: 0, gid: 0, atime: -1, ..e }));
        let fifo = Entry { kind: FileKind::Fifo, mode: 0o600, size: 0, ..e };
        assert_eq!(Entry::decode(&fifo.encode()), Some(fifo));
        assert_eq!(Entry::decode(&[0u8; Entry::LEN]), None);
        assert_eq!(Entry::decode(&[1u8; 3]), None);
    }

    /// `(uid, gid, mode)` of `path` in vNode `o`.
    fn owned(s: &Store, path: &str) -> (u32, u32, u32) {
        match s.handle(StorageRequest { vnode: "o".into(), op: StorageOp::Stat { path: path.into() } }) {
            StorageReply::Attr(a) => (a.uid, a.gid, a.mode),
            other => panic!("{path}: {other:?}"),
        }
    }

    /// Every kind of object gets its creator's owner in the entry that creates it (under a
    /// set-group-ID directory, the directory's group, and a subdirectory the bit), which the
    /// journal replays after a restart and the index keeps after a checkpoint; an existing file
    /// that is opened with `O_CREAT` keeps its owner.
    #[test]
    fn owners_are_set_at_creation_and_survive_replay_and_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let me = Owner { uid: 1000, gid: 1001 };
        let call = |s: &Store, op: StorageOp| {
            let r = s.handle(StorageRequest { vnode: "o".into(), op: op.clone() });
            assert!(!matches!(r, StorageReply::Error(_)), "{op:?}: {r:?}");
        };
        let create = |path: &str, owner| StorageOp::Create { path: path.into(), mode: 0o640, exclusive: false, truncate: false, owner };
        let want = [
            ("/f", (1000, 1001, 0o640)),
            ("/d", (1000, 1001, 0o750)),
            ("/s", (0, 50, 0o2775)),
            ("/s/f", (1000, 50, 0o640)),
            ("/s/d", (1000, 50, 0o2700)),
            ("/s/p", (1000, 50, 0o600)),
            ("/s/l", (1000, 50, 0o777)),
            ("/root", (0, 0, 0o640)),
        ];
        {
            let s = Store::open(dir.path()).unwrap();
            call(&s, StorageOp::Mount { quota: QuotaChange::Keep });
            call(&s, create("/f", me));
            call(&s, StorageOp::Mkdir { path: b"/d".to_vec(), mode: 0o750, owner: me });
            call(&s, StorageOp::Mkdir { path: b"/s".to_vec(), mode: 0o775, owner: Owner::ROOT });
            let sgid = StorageOp::SetAttr { path: b"/s".to_vec(), mode: Some(0o2775), mtime_ns: None, atime_ns: None, uid: None, gid: Some(50) };
            call(&s, sgid);
            call(&s, create("/s/f", me));
            call(&s, StorageOp::Mkdir { path: b"/s/d".to_vec(), mode: 0o700, owner: me });
            call(&s, StorageOp::Mknod { path: b"/s/p".to_vec(), kind: FileKind::Fifo, mode: 0o600, owner: me });
            call(&s, StorageOp::Symlink { path: b"/s/l".to_vec(), target: b"f".to_vec(), owner: me });
            call(&s, create("/root", Owner::ROOT));
            call(&s, create("/root", me));
            for (path, owner) in want {
                assert_eq!(owned(&s, path), owner, "{path} as created");
            }
        }
        {
            let s = Store::open(dir.path()).unwrap();
            for (path, owner) in want {
                assert_eq!(owned(&s, path), owner, "{path} replayed from the journal");
            }
            s.checkpoint().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        for (path, owner) in want {
            assert_eq!(owned(&s, path), owner, "{path} read from the index");
        }
    }
}
