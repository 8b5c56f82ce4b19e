//! The storage buffer cache (LegoOS §4.5): file pages cached in a mem-server's memory in front of
//! a stateless storage server.
//!
//! pComponents send their file requests ([`StorageRequest`]) to the mem-server that caches the
//! file. A read is answered from cached 4 KB pages where it can and fills the missing ones with one
//! storage read; a write lands in the cache (reading the page first if the write covers it only
//! partly) and is written back on fsync, on close-after-write ([`BufferCache::write_back`]), and
//! when its page is evicted; the cache holds at most `capacity` pages, evicted least recently used
//! first. Namespace operations go straight to storage, after writing back (rename) or dropping
//! (unlink, truncate) the pages they affect. A file's size is the larger of what storage says and
//! what cached writes made it, so stat sees writes that are not written back yet.
//!
//! If a write-back fails, the data it carried is gone. As Linux's errseq does, the error is
//! reported once, to the next fsync or close-after-write of the file (normally those of the
//! program whose writes were lost), and nothing else fails because of it: the cache forgets what
//! it held of the file, so later requests see what storage holds (its data is intact when a
//! storage server merely restarted). An unlink forgets the error with the file; a rename moves it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use lego_proto::storage::{errno, now_ns, FileAttr, FileKind, StorageOp, StorageReply, StorageRequest, MAX_IO};
use lego_proto::ProtoError;
use lru::LruCache;

use crate::space::Space;

/// Bytes per cached page.
pub const PAGE: u64 = 4096;
/// The smallest cache: two requests of the largest size (and their read-ahead).
pub const MIN_CAPACITY: u64 = 2 * MAX_IO as u64;
/// Most pages one storage read brings in on a sequential miss.
const READAHEAD: u64 = 32;

/// Why the storage server could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageUnreachable {
    /// This mem-server was started without one.
    #[error("this mem-server has no storage server (--storage-server)")]
    NotConfigured,
    /// Connecting or the request failed.
    #[error(transparent)]
    Link(#[from] ProtoError),
}

/// Where the cache sends what it cannot answer: the storage server.
pub trait Backing {
    /// Sends one request. `Err` means storage could not be reached (the cache answers `EIO`).
    fn call(&mut self, req: &StorageRequest) -> Result<StorageReply, StorageUnreachable>;
    /// Which connection to storage answered the last call: it changes when the connection is
    /// replaced (the storage server may have restarted and lost what was not fsync'd).
    fn generation(&self) -> u64;
}

/// A file, as the cache names it.
pub type FileKey = (String, Vec<u8>);

struct Page {
    data: Box<[u8; PAGE as usize]>,
    dirty: bool,
}

struct FileState {
    /// Indices of the file's cached pages.
    pages: BTreeSet<u64>,
    /// Attributes as storage gave them when the file was first used, with the size cached
    /// writes gave it (never less than storage's). Every change to the file passes through
    /// this cache, which owns the file, so they stay true.
    attr: FileAttr,
    /// The storage connection generation of the first write-back since the last fsync.
    unsynced: Option<u64>,
    /// The file's size on storage: what storage said when the file was first used, extended by
    /// every write-back (this cache owns the file, so nothing else changes it).
    stored: u64,
}

/// Figures of the cache, for statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheFigures {
    /// Pages answered from the cache.
    pub hits: u64,
    /// Pages read from storage.
    pub misses: u64,
    /// Dirty pages written to storage.
    pub write_backs: u64,
    /// Pages evicted.
    pub evictions: u64,
    /// Pages cached after the last request.
    pub pages: u64,
    /// Most pages the cache holds.
    pub capacity: u64,
}

/// The cache's figures, counted as they happen; they can be read while the cache is busy (its
/// lock is held across storage requests), for metrics.
#[derive(Debug, Default)]
pub struct CacheCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    write_backs: AtomicU64,
    evictions: AtomicU64,
    pages: AtomicU64,
    capacity: u64,
}

impl CacheCounters {
    /// The figures so far.
    pub fn figures(&self) -> CacheFigures {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        CacheFigures {
            hits: get(&self.hits),
            misses: get(&self.misses),
            write_backs: get(&self.write_backs),
            evictions: get(&self.evictions),
            pages: get(&self.pages),
            capacity: self.capacity,
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The buffer cache of one mem-server.
pub struct BufferCache {
    pages: LruCache<(FileKey, u64), Page>,
    files: HashMap<FileKey, FileState>,
    /// Write-back errors not reported yet (an errno by file); they outlive the file's state.
    errors: HashMap<FileKey, i32>,
    /// Files whose write-back failed during the request in progress, to forget at its end.
    lost: Vec<FileKey>,
    /// Most pages of all the caches sharing `total`.
    capacity: usize,
    /// Pages held by every cache sharing this budget (this one included).
    total: Arc<AtomicUsize>,
    counters: Arc<CacheCounters>,
    /// The vNodes' space, for their quotas (shared by the caches of one mem-server).
    space: Arc<Space>,
}

/// Pages a cache may always keep, whatever the others sharing its budget hold: those of the
/// largest request and its read-ahead, which must stay while the request copies them out.
const FLOOR: usize = (MIN_CAPACITY / PAGE) as usize;

impl BufferCache {
    /// A cache of at most `capacity_bytes`, and at least [`MIN_CAPACITY`] so that the pages of
    /// the largest request fit at once.
    pub fn new(capacity_bytes: u64) -> BufferCache {
        BufferCache::sharing(capacity_bytes, Arc::new(AtomicUsize::new(0)), Arc::default())
    }

    /// One of several caches that hold at most `capacity_bytes` together, counting their pages
    /// in `total`: when the total is over, the cache that inserts evicts its own least recently
    /// used pages, down to [`MIN_CAPACITY`] (so the caches together may exceed `capacity_bytes`
    /// by at most that much each). They charge the vNodes' writes to `space` (see
    /// [`crate::space`]).
    pub fn sharing(capacity_bytes: u64, total: Arc<AtomicUsize>, space: Arc<Space>) -> BufferCache {
        let capacity = capacity_bytes.max(MIN_CAPACITY) / PAGE;
        BufferCache {
            pages: LruCache::unbounded(),
            files: HashMap::new(),
            errors: HashMap::new(),
            lost: Vec::new(),
            capacity: capacity as usize,
            total,
            counters: Arc::new(CacheCounters { capacity, ..CacheCounters::default() }),
            space,
        }
    }

    /// The cache's figures so far.
    pub fn figures(&self) -> CacheFigures {
        self.counters.figures()
    }

    /// The cache's counters, to read its figures without holding the cache.
    pub fn counters(&self) -> Arc<CacheCounters> {
        self.counters.clone()
    }

    /// Pages cached now.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Serves one file request.
    pub fn serve(&mut self, req: StorageRequest, storage: &mut dyn Backing) -> StorageReply {
        let key = |path: &[u8]| (req.vnode.clone(), path.to_vec());
        let result = match &req.op {
            // A file with several names is served by storage alone: the cache keeps files by
            // name, and two names must not hold two copies.
            StorageOp::Read { path, offset, len } => match self.linked(&key(path), storage) {
                Ok(true) => forward(&req, storage),
                Ok(false) => self.read(&key(path), *offset, *len, storage),
                Err(e) => Err(e),
            },
            StorageOp::Write { path, offset, data } => match self.linked(&key(path), storage) {
                Ok(true) => forward(&req, storage).inspect(|_| self.space.stale(&req.vnode)),
                Ok(false) => self.write(&key(path), *offset, data, storage),
                Err(e) => Err(e),
            },
            StorageOp::Stat { path } => self.stat(&key(path), storage),
            StorageOp::Fsync { path } => self.fsync(&key(path), storage),
            StorageOp::SyncFs => self.syncfs(&req, storage),
            // A new mode or time must not be overtaken by an older write-back (which sets the
            // modification time), nor hidden by the attributes cached here: dirty pages go
            // first, then the cached state.
            // A new hard link makes the file one the cache does not keep (see `linked`).
            StorageOp::Create { path, truncate: true, .. }
            | StorageOp::Truncate { path, .. }
            | StorageOp::SetAttr { path, .. }
            | StorageOp::Link { from: path, .. } => {
                let k = key(path);
                // A failed write-back is kept for the file's next fsync or close.
                let _ = self.write_back_file(&k, storage);
                self.forget(&k);
                self.space.stale(&req.vnode);
                forward(&req, storage)
            }
            StorageOp::Unlink { path } => forward(&req, storage).inspect(|_| {
                let k = key(path);
                self.forget(&k);
                self.errors.remove(&k);
                self.space.stale(&req.vnode);
            }),
            StorageOp::Rename { from, to } => self.rename(&req, from, to, storage),
            StorageOp::Symlink { .. } | StorageOp::Mknod { .. } => {
                self.space.stale(&req.vnode);
                forward(&req, storage)
            }
            // Cached writes not written back yet count as used, as they do against the quota.
            StorageOp::StatFs => forward(&req, storage).map(|r| match r {
                StorageReply::FsStat(mut s) => {
                    let pending = self.space.pending(&req.vnode);
                    s.used_bytes += pending;
                    s.free_bytes = s.free_bytes.saturating_sub(pending);
                    StorageReply::FsStat(s)
                }
                other => other,
            }),
            StorageOp::Create { .. }
            | StorageOp::Mkdir { .. }
            | StorageOp::Rmdir { .. }
            | StorageOp::Readdir { .. }
            // Names only: nothing the cache holds changes.
            | StorageOp::Resolve { .. }
            | StorageOp::Readlink { .. }
            | StorageOp::Mount { .. } => forward(&req, storage),
        };
        self.forget_lost();
        result.unwrap_or_else(StorageReply::Error)
    }

    /// Writes the dirty pages of one file back to storage, without fsync (close after write).
    /// Answers the error of this or an earlier lost write-back of the file, once.
    pub fn write_back(&mut self, vnode: &str, path: &[u8], storage: &mut dyn Backing) -> Result<(), i32> {
        let key = (vnode.to_string(), path.to_vec());
        let written = self.write_back_file(&key, storage);
        self.forget_lost();
        self.errors.remove(&key).map_or(written, Err)
    }

    /// Drops what the cache holds of files whose write-back failed (at the end of a request,
    /// when no step of it needs their state any more): storage's copy is then the only one, and
    /// the next request on such a file reads it afresh, from a restarted storage server too.
    fn forget_lost(&mut self) {
        for k in std::mem::take(&mut self.lost) {
            if !self.files.contains_key(&k) {
                continue;
            }
            tracing::warn!(vnode = %k.0, path = %String::from_utf8_lossy(&k.1), "a write-back failed: dropped the cached file, its error goes to the next fsync or close");
            self.forget(&k);
        }
        self.counters.pages.store(self.pages.len() as u64, Ordering::Relaxed);
    }

    fn read(&mut self, key: &FileKey, offset: u64, len: u32, storage: &mut dyn Backing) -> Result<StorageReply, i32> {
        if len as usize > MAX_IO {
            return Err(errno::EINVAL);
        }
        let size = self.size(key, storage)?;
        let end = offset.saturating_add(u64::from(len)).min(size);
        if offset >= end {
            return Ok(StorageReply::Data(Vec::new()));
        }
        self.fill(key, offset / PAGE, (end - 1) / PAGE, storage)?;
        self.copy_out(key, offset, end)
    }

    /// A read answered from the cache alone, without storage (`None` if that cannot be: the
    /// file is not known here or a page is missing), so that a hit need not wait for anything.
    pub fn cached_read(&mut self, vnode: &str, path: &[u8], offset: u64, len: u32) -> Option<StorageReply> {
        if len as usize > MAX_IO {
            return None;
        }
        let key = (vnode.to_string(), path.to_vec());
        let size = self.files.get(&key)?.attr.size;
        let end = offset.saturating_add(u64::from(len)).min(size);
        if offset >= end {
            return Some(StorageReply::Data(Vec::new()));
        }
        let (first, last) = (offset / PAGE, (end - 1) / PAGE);
        if !(first..=last).all(|i| self.pages.contains(&(key.clone(), i))) {
            return None;
        }
        add(&self.counters.hits, last - first + 1);
        self.copy_out(&key, offset, end).ok()
    }

    /// Bytes `offset..end` of a file whose pages there are all cached.
    fn copy_out(&mut self, key: &FileKey, offset: u64, end: u64) -> Result<StorageReply, i32> {
        let (first, last) = (offset / PAGE, (end - 1) / PAGE);
        let mut out = Vec::with_capacity((end - offset) as usize);
        for idx in first..=last {
            let page = self.pages.get(&(key.clone(), idx)).ok_or(errno::EIO)?;
            let from = if idx == first { (offset % PAGE) as usize } else { 0 };
            let to = if idx == last { ((end - 1) % PAGE + 1) as usize } else { PAGE as usize };
            out.extend_from_slice(&page.data[from..to]);
        }
        Ok(StorageReply::Data(out))
    }

    fn write(&mut self, key: &FileKey, offset: u64, data: &[u8], storage: &mut dyn Backing) -> Result<StorageReply, i32> {
        if data.len() > MAX_IO {
            return Err(errno::EINVAL);
        }
        let end = offset.checked_add(data.len() as u64).filter(|&e| e <= i64::MAX as u64).ok_or(errno::EFBIG)?;
        let size = self.size(key, storage)?;
        let growth = end.saturating_sub(size);
        if growth > 0 && !data.is_empty() {
            self.charge(&key.0, growth, storage)?;
        }
        // The new size first: a page of this write evicted before the write ends is clipped to it.
        let attr = {
            let f = self.files.get_mut(key).ok_or(errno::EIO)?;
            f.attr.size = f.attr.size.max(end);
            f.attr.mtime_ns = now_ns();
            f.attr.ctime_ns = f.attr.mtime_ns;
            f.attr
        };
        if !data.is_empty() {
            let (first, last) = (offset / PAGE, (end - 1) / PAGE);
            // Pages the write covers only partly must hold the file's bytes around it.
            for idx in [first, last] {
                let whole = offset <= idx * PAGE && end >= (idx + 1) * PAGE;
                if !whole && idx * PAGE < size {
                    self.fill(key, idx, idx, storage)?;
                }
            }
            for idx in first..=last {
                let from = offset.max(idx * PAGE);
                let to = end.min((idx + 1) * PAGE);
                let src = &data[(from - offset) as usize..(to - offset) as usize];
                let k = (key.clone(), idx);
                if !self.pages.contains(&k) {
                    // A page the write covers whole, or one past storage's end of file.
                    self.insert(k.clone(), Page { data: Box::new([0; PAGE as usize]), dirty: true }, storage);
                }
                let page = self.pages.get_mut(&k).ok_or(errno::EIO)?;
                page.data[(from % PAGE) as usize..][..src.len()].copy_from_slice(src);
                page.dirty = true;
            }
        }
        Ok(StorageReply::Attr(attr))
    }

    /// Charges `growth` bytes of a write to the vNode's quota (`ENOSPC` if they do not fit),
    /// asking storage for its quota and use first if the cache does not know them.
    fn charge(&mut self, vnode: &str, growth: u64, storage: &mut dyn Backing) -> Result<(), i32> {
        if self.space.needs_refresh(vnode) {
            match forward(&StorageRequest { vnode: vnode.to_string(), op: StorageOp::StatFs }, storage)? {
                StorageReply::FsStat(s) => self.space.refresh(vnode, s.quota_bytes, s.used_bytes),
                _ => return Err(errno::EIO),
            }
        }
        self.space.charge(vnode, growth)
    }

    fn stat(&mut self, key: &FileKey, storage: &mut dyn Backing) -> Result<StorageReply, i32> {
        match self.files.get(key) {
            Some(f) => Ok(StorageReply::Attr(f.attr)),
            None => Ok(StorageReply::Attr(self.storage_attr(key, storage)?)),
        }
    }

    /// Writes the file back and has storage sync it. Answers the error of this or an earlier
    /// lost write-back of the file, once, as fsync(2) reports a write-back error.
    fn fsync(&mut self, key: &FileKey, storage: &mut dyn Backing) -> Result<StorageReply, i32> {
        let fsync = StorageRequest { vnode: key.0.clone(), op: StorageOp::Fsync { path: key.1.clone() } };
        let synced = self.write_back_file(key, storage).and_then(|()| forward(&fsync, storage));
        // Write-backs sent on an earlier connection than the one that answered the fsync may
        // have died with a storage server that restarted in between: the fsync cannot vouch
        // for them. Either way this fsync is the one that reports on them.
        let since = self.files.get_mut(key).and_then(|f| f.unsynced.take());
        if synced.is_ok() && since.is_some_and(|g| g != storage.generation()) {
            self.errors.entry(key.clone()).or_insert(errno::EIO);
        }
        self.errors.remove(key).map_or(synced, Err)
    }

    /// `sync`/`syncfs` of a vNode: writes back every file of it, then has storage sync them
    /// all. Answers the first error, as syncfs(2) does; errors of earlier lost write-backs stay
    /// for each file's own fsync or close.
    fn syncfs(&mut self, req: &StorageRequest, storage: &mut dyn Backing) -> Result<StorageReply, i32> {
        let keys: Vec<FileKey> = self.files.keys().filter(|k| k.0 == req.vnode).cloned().collect();
        let mut failed = None;
        for k in &keys {
            if let Err(e) = self.write_back_file(k, storage) {
                failed.get_or_insert(e);
            }
        }
        let synced = forward(req, storage)?;
        for k in &keys {
            // As in fsync: a write-back on an older storage connection cannot be vouched for.
            let since = self.files.get_mut(k).and_then(|f| f.unsynced.take());
            if since.is_some_and(|g| g != storage.generation()) {
                failed.get_or_insert(errno::EIO);
            }
        }
        failed.map_or(Ok(synced), Err)
    }

    fn rename(&mut self, req: &StorageRequest, from: &[u8], to: &[u8], storage: &mut dyn Backing) -> Result<StorageReply, i32> {
        self.release(&req.vnode, from, to, storage);
        // A rename over a file frees its space.
        self.space.stale(&req.vnode);
        let reply = forward(req, storage)?;
        for (k, e) in renamed_errors(self.take_errors(&req.vnode, from, to), from, to) {
            self.errors.insert(k, e);
        }
        Ok(reply)
    }

    /// Before a rename: everything cached at or under either name is written back and dropped,
    /// so that storage holds the only copy, under whichever name the rename leaves it. A failed
    /// write-back is kept for the file's next fsync or close.
    pub fn release(&mut self, vnode: &str, from: &[u8], to: &[u8], storage: &mut dyn Backing) {
        let affected: Vec<FileKey> =
            self.files.keys().filter(|(v, p)| v == vnode && (under(p, from) || under(p, to))).cloned().collect();
        for k in &affected {
            let _ = self.write_back_file(k, storage);
        }
        for k in &affected {
            self.forget(k);
        }
        self.forget_lost();
    }

    /// After a rename: the errors not reported yet of files at or under either name, taken out
    /// (see [`renamed_errors`] for where they go).
    pub fn take_errors(&mut self, vnode: &str, from: &[u8], to: &[u8]) -> Vec<(FileKey, i32)> {
        let affected: Vec<FileKey> =
            self.errors.keys().filter(|(v, p)| v == vnode && (under(p, from) || under(p, to))).cloned().collect();
        affected.into_iter().filter_map(|k| self.errors.remove(&k).map(|e| (k, e))).collect()
    }

    /// Keeps an unreported write-back error for file `key` (moved here by a rename).
    pub fn keep_error(&mut self, key: FileKey, e: i32) {
        self.errors.insert(key, e);
    }

    /// Whether the cache holds any file of `vnode`.
    pub fn holds(&self, vnode: &str) -> bool {
        self.files.keys().any(|(v, _)| v == vnode)
    }

    fn size(&mut self, key: &FileKey, storage: &mut dyn Backing) -> Result<u64, i32> {
        if let Some(f) = self.files.get(key) {
            return Ok(f.attr.size);
        }
        let attr = self.storage_attr(key, storage)?;
        self.remember(key, attr)
    }

    /// Whether file `key` has more than one name (hard links), which the cache does not keep.
    /// A file not cached yet is looked up, and remembered if it has one name. The cache never
    /// holds a linked file: a link is made through it, and drops the file first.
    fn linked(&mut self, key: &FileKey, storage: &mut dyn Backing) -> Result<bool, i32> {
        if self.files.contains_key(key) {
            return Ok(false);
        }
        let attr = self.storage_attr(key, storage)?;
        if attr.kind == FileKind::File && attr.nlink > 1 {
            return Ok(true);
        }
        self.remember(key, attr).map(drop)?;
        Ok(false)
    }

    /// Starts caching file `key`, whose attributes storage gave; answers its size.
    fn remember(&mut self, key: &FileKey, attr: FileAttr) -> Result<u64, i32> {
        if attr.kind == FileKind::Dir {
            return Err(errno::EISDIR);
        }
        if attr.kind == FileKind::Symlink {
            return Err(errno::ELOOP);
        }
        // A FIFO's data is a pipe in the VMMs that open it, never file pages.
        if attr.kind == FileKind::Fifo {
            return Err(errno::EINVAL);
        }
        self.files.insert(key.clone(), FileState { pages: BTreeSet::new(), attr, unsynced: None, stored: attr.size });
        Ok(attr.size)
    }

    fn storage_attr(&mut self, key: &FileKey, storage: &mut dyn Backing) -> Result<FileAttr, i32> {
        match forward(&StorageRequest { vnode: key.0.clone(), op: StorageOp::Stat { path: key.1.clone() } }, storage)? {
            StorageReply::Attr(a) => Ok(a),
            _ => Err(errno::EIO),
        }
    }

    /// Makes pages `first..=last` of the file resident, reading the missing run from storage
    /// with one request (pages past storage's end of file are zeroes).
    fn fill(&mut self, key: &FileKey, first: u64, last: u64, storage: &mut dyn Backing) -> Result<(), i32> {
        // Present pages are marked used first, so that making room for the missing ones (at
        // most MAX_IO of them, within a cache of at least twice that) never evicts them.
        let missing: Vec<u64> = (first..=last).filter(|&i| self.pages.get(&(key.clone(), i)).is_none()).collect();
        let (Some(&lo), Some(&hi)) = (missing.first(), missing.last()) else {
            add(&self.counters.hits, last - first + 1);
            return Ok(());
        };
        add(&self.counters.hits, (last - first + 1) - missing.len() as u64);
        // Read-ahead: a miss right after a cached page (or at the start of the file) is taken as
        // sequential, and the next pages of the file come in the same request.
        let mut missing = missing;
        let mut hi = hi;
        let sequential = lo == 0 || self.pages.contains(&(key.clone(), lo - 1));
        let end_page = self.files.get(key).map_or(0, |f| f.attr.size.div_ceil(PAGE));
        while sequential && hi + 1 < end_page && hi + 1 - lo < READAHEAD && !self.pages.contains(&(key.clone(), hi + 1)) {
            hi += 1;
            missing.push(hi);
        }
        let len = ((hi - lo + 1) * PAGE) as u32;
        let req = StorageRequest { vnode: key.0.clone(), op: StorageOp::Read { path: key.1.clone(), offset: lo * PAGE, len } };
        let data = match forward(&req, storage)? {
            StorageReply::Data(d) => d,
            _ => return Err(errno::EIO),
        };
        for idx in missing {
            let mut page = Page { data: Box::new([0; PAGE as usize]), dirty: false };
            let at = ((idx - lo) * PAGE) as usize;
            if at < data.len() {
                let n = (data.len() - at).min(PAGE as usize);
                page.data[..n].copy_from_slice(&data[at..at + n]);
            }
            self.insert((key.clone(), idx), page, storage);
            add(&self.counters.misses, 1);
        }
        Ok(())
    }

    /// Caches a page, evicting the least recently used ones beyond capacity. A dirty victim is
    /// written back; if that fails its file is marked lost.
    fn insert(&mut self, k: (FileKey, u64), page: Page, storage: &mut dyn Backing) {
        // Callers learn the file's size (creating its state) before they cache any of its pages.
        if let Some(f) = self.files.get_mut(&k.0) {
            f.pages.insert(k.1);
        }
        if self.pages.put(k, page).is_none() {
            self.total.fetch_add(1, Ordering::Relaxed);
        }
        while self.pages.len() > FLOOR && self.total.load(Ordering::Relaxed) > self.capacity {
            let Some(((file, idx), victim)) = self.pages.pop_lru() else { break };
            self.total.fetch_sub(1, Ordering::Relaxed);
            add(&self.counters.evictions, 1);
            let size = self.files.get(&file).map_or(0, |f| f.attr.size);
            if victim.dirty {
                // A failure marks the file lost; the eviction goes on.
                let _ = self.put(&file, idx, &victim.data[..], size, storage);
            }
            if let Some(f) = self.files.get_mut(&file) {
                f.pages.remove(&idx);
            }
        }
    }

    /// Writes consecutive pages starting at page `idx` (clipped to the file's size) to storage
    /// in one request. If that fails, the data is lost: the file is marked lost and the error
    /// kept for its next fsync or close.
    fn put(&mut self, file: &FileKey, idx: u64, data: &[u8], size: u64, storage: &mut dyn Backing) -> Result<(), i32> {
        let start = idx * PAGE;
        let n = size.saturating_sub(start).min(data.len() as u64) as usize;
        let req = StorageRequest { vnode: file.0.clone(), op: StorageOp::Write { path: file.1.clone(), offset: start, data: data[..n].to_vec() } };
        let result = forward(&req, storage);
        match (result, self.files.get_mut(file)) {
            (Ok(_), Some(f)) => {
                f.unsynced.get_or_insert(storage.generation());
                let grown = (start + n as u64).saturating_sub(f.stored);
                f.stored += grown;
                self.space.written(&file.0, grown);
            }
            (Ok(_), None) => {}
            (Err(e), _) => {
                self.errors.insert(file.clone(), e);
                self.lost.push(file.clone());
                return Err(e);
            }
        }
        add(&self.counters.write_backs, data.len() as u64 / PAGE);
        Ok(())
    }

    /// Writes back every dirty page of the file, in order, runs of consecutive dirty pages (up to
    /// `MAX_IO`) in one request each, and extends the file on storage to the cached size if writes
    /// made it longer than its pages reach.
    fn write_back_file(&mut self, key: &FileKey, storage: &mut dyn Backing) -> Result<(), i32> {
        let Some(file) = self.files.get(key) else { return Ok(()) };
        let size = file.attr.size;
        let dirty: Vec<u64> = file
            .pages
            .iter()
            .copied()
            .filter(|&i| self.pages.peek(&(key.clone(), i)).is_some_and(|p| p.dirty))
            .collect();
        let mut at = 0;
        while at < dirty.len() {
            let first = dirty[at];
            let mut run = 1;
            while at + run < dirty.len() && dirty[at + run] == first + run as u64 && run < MAX_IO / PAGE as usize {
                run += 1;
            }
            let mut data = Vec::with_capacity(run * PAGE as usize);
            for idx in first..first + run as u64 {
                data.extend_from_slice(&self.pages.peek(&(key.clone(), idx)).ok_or(errno::EIO)?.data[..]);
            }
            self.put(key, first, &data, size, storage)?;
            for idx in first..first + run as u64 {
                if let Some(p) = self.pages.peek_mut(&(key.clone(), idx)) {
                    p.dirty = false;
                }
            }
            at += run;
        }
        // Writes that left zeroes at the end (extending the file past its last written byte)
        // set the size on storage explicitly.
        if self.files.get(key).is_some_and(|f| f.stored < size) {
            let req = StorageRequest { vnode: key.0.clone(), op: StorageOp::Truncate { path: key.1.clone(), len: size } };
            forward(&req, storage)?;
            if let Some(f) = self.files.get_mut(key) {
                self.space.written(&key.0, size - f.stored);
                f.stored = size;
            }
        }
        Ok(())
    }

    /// Drops everything cached of a file, dirty or not.
    fn forget(&mut self, key: &FileKey) {
        if let Some(f) = self.files.remove(key) {
            self.space.dropped(&key.0, f.attr.size.saturating_sub(f.stored));
            for idx in f.pages {
                if self.pages.pop(&(key.clone(), idx)).is_some() {
                    self.total.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Whether `path` is `root` or lies under it.
fn under(path: &[u8], root: &[u8]) -> bool {
    path == root || (path.starts_with(root) && path.get(root.len()) == Some(&b'/'))
}

/// Where the unreported errors a rename of `from` to `to` took out go: dropped with the files
/// the rename replaced, moved with the renamed ones.
pub fn renamed_errors(errors: Vec<(FileKey, i32)>, from: &[u8], to: &[u8]) -> Vec<(FileKey, i32)> {
    errors
        .into_iter()
        .filter(|((_, path), _)| under(path, from))
        .map(|((vnode, path), e)| ((vnode, [to, &path[from.len()..]].concat()), e))
        .collect()
}

/// Sends a request to storage; an unreachable storage server is `EIO`, an error reply its errno.
pub fn forward(req: &StorageRequest, storage: &mut dyn Backing) -> Result<StorageReply, i32> {
    match storage.call(req) {
        Ok(StorageReply::Error(e)) => Err(e),
        Ok(r) => Ok(r),
        Err(e) => {
            tracing::warn!(vnode = %req.vnode, "storage unreachable: {e}");
            Err(errno::EIO)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lego_proto::storage::{FileKind, FsStat, Owner};
    use proptest::prelude::*;

    /// A storage server in memory: files only (enough for the cache), counting what it is asked.
    #[derive(Default)]
    struct Disk {
        files: HashMap<Vec<u8>, Vec<u8>>,
        reads: u64,
        writes: u64,
        fsyncs: u64,
        down: bool,
        generation: u64,
        quota: Option<u64>,
    }

    impl Backing for Disk {
        fn generation(&self) -> u64 {
            self.generation
        }

        fn call(&mut self, req: &StorageRequest) -> Result<StorageReply, StorageUnreachable> {
            if self.down {
                return Err(ProtoError::Closed { peer: "the test's storage".into() }.into());
            }
            let attr = |f: &Vec<u8>| FileAttr {
                kind: FileKind::File,
                mode: 0o644,
                size: f.len() as u64,
                ino: 1,
                mtime_ns: 0,
                atime_ns: 0,
                ctime_ns: 0,
                nlink: 1,
                uid: 0,
                gid: 0,
            };
            let missing = StorageReply::Error(errno::ENOENT);
            Ok(match &req.op {
                StorageOp::Stat { path } => self.files.get(path).map_or(missing, |f| StorageReply::Attr(attr(f))),
                StorageOp::Read { path, offset, len } => {
                    self.reads += 1;
                    let Some(f) = self.files.get(path) else { return Ok(missing) };
                    let from = (*offset as usize).min(f.len());
                    let to = (from + *len as usize).min(f.len());
                    StorageReply::Data(f[from..to].to_vec())
                }
                StorageOp::Write { path, offset, data } => {
                    self.writes += 1;
                    let Some(f) = self.files.get_mut(path) else { return Ok(missing) };
                    let end = *offset as usize + data.len();
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                    f[*offset as usize..end].copy_from_slice(data);
                    StorageReply::Attr(attr(f))
                }
                StorageOp::Create { path, truncate, .. } => {
                    let f = self.files.entry(path.clone()).or_default();
                    if *truncate {
                        f.clear();
                    }
                    StorageReply::Attr(attr(f))
                }
                StorageOp::Truncate { path, len } => {
                    let Some(f) = self.files.get_mut(path) else { return Ok(missing) };
                    f.resize(*len as usize, 0);
                    StorageReply::Attr(attr(f))
                }
                StorageOp::Unlink { path } => self.files.remove(path).map_or(missing, |_| StorageReply::Done),
                StorageOp::Rename { from, to } => match self.files.remove(from) {
                    Some(f) => {
                        self.files.insert(to.clone(), f);
                        StorageReply::Done
                    }
                    None => missing,
                },
                StorageOp::Fsync { .. } | StorageOp::SyncFs => {
                    self.fsyncs += 1;
                    StorageReply::Done
                }
                StorageOp::SetAttr { path, .. } => self.files.get(path).map_or(missing, |f| StorageReply::Attr(attr(f))),
                StorageOp::StatFs => {
                    let used = self.files.values().map(|f| f.len() as u64).sum();
                    let capacity_bytes = self.quota.unwrap_or(u64::MAX);
                    let free_bytes = capacity_bytes - used;
                    StorageReply::FsStat(FsStat { capacity_bytes, free_bytes, used_bytes: used, files: 0, quota_bytes: self.quota })
                }
                StorageOp::Mkdir { .. }
                | StorageOp::Rmdir { .. }
                | StorageOp::Readdir { .. }
                | StorageOp::Resolve { .. }
                | StorageOp::Symlink { .. }
                | StorageOp::Mknod { .. }
                | StorageOp::Readlink { .. }
                | StorageOp::Link { .. }
                | StorageOp::Mount { .. } => StorageReply::Error(errno::EINVAL),
            })
        }
    }

    fn req(op: StorageOp) -> StorageRequest {
        StorageRequest { vnode: "v".into(), op }
    }

    fn p(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn read(c: &mut BufferCache, d: &mut Disk, path: &str, offset: u64, len: u32) -> Vec<u8> {
        match c.serve(req(StorageOp::Read { path: p(path), offset, len }), d) {
            StorageReply::Data(v) => v,
            other => panic!("read {path}: {other:?}"),
        }
    }

    fn write(c: &mut BufferCache, d: &mut Disk, path: &str, offset: u64, data: &[u8]) -> StorageReply {
        c.serve(req(StorageOp::Write { path: p(path), offset, data: data.to_vec() }), d)
    }

    fn size(c: &mut BufferCache, d: &mut Disk, path: &str) -> u64 {
        match c.serve(req(StorageOp::Stat { path: p(path) }), d) {
            StorageReply::Attr(a) => a.size,
            other => panic!("stat {path}: {other:?}"),
        }
    }

    #[test]
    fn reads_fill_once_then_hit() {
        let mut d = Disk::default();
        d.files.insert(p("/f"), (0..10_000u32).map(|i| i as u8).collect());
        let mut c = BufferCache::new(MIN_CAPACITY);
        assert_eq!(read(&mut c, &mut d, "/f", 100, 9000), d.files[&p("/f")][100..9100]);
        assert_eq!(d.reads, 1, "one storage read for the whole run of missing pages");
        assert_eq!(read(&mut c, &mut d, "/f", 4096, 100), d.files[&p("/f")][4096..4196]);
        assert_eq!(d.reads, 1, "the second read is a hit");
        assert_eq!(read(&mut c, &mut d, "/f", 9990, 100).len(), 10, "short at the end of the file");
        assert!(read(&mut c, &mut d, "/f", 20_000, 100).is_empty());
        assert_eq!(c.figures().misses, 3);
    }

    #[test]
    fn caches_sharing_a_budget_hold_it_together_and_one_file_may_fill_it() {
        let mut d = Disk::default();
        let big: Vec<u8> = (0..4 * MIN_CAPACITY as usize).map(|i| (i / 4096) as u8).collect();
        d.files.insert(p("/big"), big.clone());
        d.files.insert(p("/small"), vec![9; MIN_CAPACITY as usize]);
        let total = Arc::new(AtomicUsize::new(0));
        let cap = 3 * MIN_CAPACITY;
        let (mut a, mut b) = (BufferCache::sharing(cap, total.clone(), Arc::default()), BufferCache::sharing(cap, total.clone(), Arc::default()));
        for off in (0..MIN_CAPACITY).step_by(MAX_IO) {
            read(&mut b, &mut d, "/small", off, MAX_IO as u32);
        }
        for off in (0..big.len() as u64).step_by(MAX_IO) {
            assert_eq!(read(&mut a, &mut d, "/big", off, MAX_IO as u32), big[off as usize..][..MAX_IO]);
        }
        let pages = |c: &BufferCache| c.len() as u64;
        assert_eq!(pages(&b), MIN_CAPACITY / PAGE, "the other cache keeps its floor");
        assert_eq!(pages(&a) + pages(&b), cap / PAGE, "together they hold the shared capacity");
        assert_eq!(total.load(Ordering::Relaxed) as u64, cap / PAGE);
        assert!(pages(&a) > cap / PAGE / 2, "one file uses more than an equal share");
    }

    #[test]
    fn writes_stay_cached_until_fsync_and_stat_sees_them() {
        let mut d = Disk::default();
        d.files.insert(p("/f"), b"hello world".to_vec());
        let mut c = BufferCache::new(MIN_CAPACITY);
        assert!(matches!(write(&mut c, &mut d, "/f", 6, b"there, friend"), StorageReply::Attr(a) if a.size == 19));
        assert_eq!(d.files[&p("/f")], b"hello world", "nothing written back yet");
        assert_eq!(size(&mut c, &mut d, "/f"), 19);
        assert_eq!(read(&mut c, &mut d, "/f", 0, 100), b"hello there, friend");
        assert_eq!(c.serve(req(StorageOp::Fsync { path: p("/f") }), &mut d), StorageReply::Done);
        assert_eq!(d.files[&p("/f")], b"hello there, friend");
        assert_eq!(d.fsyncs, 1);
        let writes = d.writes;
        assert_eq!(c.serve(req(StorageOp::Fsync { path: p("/f") }), &mut d), StorageReply::Done);
        assert_eq!(d.writes, writes, "clean pages are not written again");
    }

    /// An attribute change reaches storage after the file's dirty pages, so that no later
    /// write-back overtakes the time it sets, and the cached attributes are dropped.
    #[test]
    fn set_attr_writes_back_first_and_forgets_the_cached_attributes() {
        let mut d = Disk::default();
        d.files.insert(p("/f"), b"hello".to_vec());
        let mut c = BufferCache::new(MIN_CAPACITY);
        write(&mut c, &mut d, "/f", 5, b" world");
        assert_eq!(d.files[&p("/f")], b"hello");
        let set = StorageOp::SetAttr { path: p("/f"), mode: Some(0o600), mtime_ns: Some(7), atime_ns: None, uid: None, gid: None };
        assert!(matches!(c.serve(req(set), &mut d), StorageReply::Attr(_)));
        assert_eq!(d.files[&p("/f")], b"hello world", "written back before the change");
        assert!(c.is_empty(), "nothing of the file stays cached");
        let writes = d.writes;
        assert_eq!(c.serve(req(StorageOp::Fsync { path: p("/f") }), &mut d), StorageReply::Done);
        assert_eq!(d.writes, writes, "no stale write-back follows");
    }

    #[test]
    fn close_after_write_writes_back_without_fsync() {
        let mut d = Disk::default();
        d.files.insert(p("/f"), Vec::new());
        let mut c = BufferCache::new(MIN_CAPACITY);
        write(&mut c, &mut d, "/f", 5000, b"x");
        c.write_back("v", b"/f", &mut d).unwrap();
        assert_eq!(d.files[&p("/f")].len(), 5001);
        assert_eq!(d.files[&p("/f")][5000], b'x');
        assert_eq!(d.fsyncs, 0);
    }

    fn fsync(c: &mut BufferCache, d: &mut Disk, path: &str) -> StorageReply {
        c.serve(req(StorageOp::Fsync { path: p(path) }), d)
    }

    #[test]
    fn a_failed_write_back_is_reported_once_to_the_fsync_that_owned_it_and_the_file_works_again() {
        let mut d = Disk::default();
        d.files.insert(p("/f"), b"old".to_vec());
        let mut c = BufferCache::new(MIN_CAPACITY);
        write(&mut c, &mut d, "/f", 0, b"new data");
        d.down = true;
        assert_eq!(fsync(&mut c, &mut d, "/f"), StorageReply::Error(errno::EIO));
        d.down = false;
        assert_eq!(c.write_back("v", b"/f", &mut d), Ok(()), "the close after it has nothing to report");
        assert_eq!(fsync(&mut c, &mut d, "/f"), StorageReply::Done, "reported once");
        // What was lost is forgotten: the cache serves what storage holds, and writes again.
        assert!(c.is_empty());
        assert_eq!(size(&mut c, &mut d, "/f"), 3);
        assert_eq!(read(&mut c, &mut d, "/f", 0, 100), b"old");
        write(&mut c, &mut d, "/f", 3, b"er");
        assert_eq!(fsync(&mut c, &mut d, "/f"), StorageReply::Done);
        assert_eq!(d.files[&p("/f")], b"older");
        assert_eq!(c.serve(req(StorageOp::Unlink { path: p("/f") }), &mut d), StorageReply::Done);
    }

    #[test]
    fn a_write_back_lost_on_eviction_or_close_goes_to_the_next_fsync_or_close_once() {
        let mut d = Disk::default();
        d.files.insert(p("/f"), Vec::new());
        d.files.insert(p("/g"), Vec::new());
        let mut c = BufferCache::new(MIN_CAPACITY);
        write(&mut c, &mut d, "/f", 0, &[1; 4096]);
        d.down = true;
        assert_eq!(c.write_back("v", b"/f", &mut d), Err(errno::EIO), "the close that owned the write");
        assert_eq!(c.write_back("v", b"/f", &mut d), Ok(()), "reported once; the lost pages are forgotten");
        d.down = false;
        // Evicting a dirty page while storage is down: its writer learns it at fsync.
        write(&mut c, &mut d, "/f", 0, b"x");
        assert_eq!(c.write_back("v", b"/f", &mut d), Ok(()));
        write(&mut c, &mut d, "/g", 0, &[2; 4096]);
        d.down = true;
        let big = vec![3u8; MAX_IO];
        for i in 0..(MIN_CAPACITY as usize / MAX_IO) {
            assert!(matches!(write(&mut c, &mut d, "/f", (i * MAX_IO) as u64, &big), StorageReply::Attr(_)));
        }
        d.down = false;
        assert_eq!(size(&mut c, &mut d, "/g"), 0, "storage's size, not the lost write's");
        assert_eq!(fsync(&mut c, &mut d, "/g"), StorageReply::Error(errno::EIO));
        assert_eq!(fsync(&mut c, &mut d, "/g"), StorageReply::Done);
    }

    #[test]
    fn an_unreported_error_moves_with_a_rename_and_goes_with_an_unlink() {
        let mut d = Disk::default();
        for f in ["/a", "/b"] {
            d.files.insert(p(f), Vec::new());
        }
        let mut c = BufferCache::new(MIN_CAPACITY);
        for f in ["/a", "/b"] {
            write(&mut c, &mut d, f, 0, b"x");
            d.down = true;
            // A truncate writes back first; the namespace operation still fails, storage is down.
            assert_eq!(c.serve(req(StorageOp::Truncate { path: p(f), len: 1 }), &mut d), StorageReply::Error(errno::EIO));
            d.down = false;
        }
        // Renamed over /b, /a takes its error along and /b's goes.
        assert_eq!(c.serve(req(StorageOp::Rename { from: p("/a"), to: p("/b") }), &mut d), StorageReply::Done);
        assert_eq!(fsync(&mut c, &mut d, "/b"), StorageReply::Error(errno::EIO));
        assert_eq!(fsync(&mut c, &mut d, "/b"), StorageReply::Done);
        d.files.insert(p("/a"), Vec::new());
        assert_eq!(fsync(&mut c, &mut d, "/a"), StorageReply::Done, "a new file of the old name starts clean");
        write(&mut c, &mut d, "/b", 0, b"x");
        d.down = true;
        assert_eq!(c.serve(req(StorageOp::Truncate { path: p("/b"), len: 0 }), &mut d), StorageReply::Error(errno::EIO));
        d.down = false;
        assert_eq!(c.serve(req(StorageOp::Unlink { path: p("/b") }), &mut d), StorageReply::Done);
        d.files.insert(p("/b"), Vec::new());
        assert_eq!(fsync(&mut c, &mut d, "/b"), StorageReply::Done, "an unlink takes the error with the file");
    }

    #[test]
    fn an_fsync_on_a_new_storage_connection_cannot_vouch_for_older_write_backs() {
        let mut d = Disk::default();
        d.files.insert(p("/f"), Vec::new());
        let mut c = BufferCache::new(MIN_CAPACITY);
        write(&mut c, &mut d, "/f", 0, b"data");
        c.write_back("v", b"/f", &mut d).unwrap();
        d.generation += 1; // the storage server restarted; what it had not synced may be gone
        assert_eq!(c.serve(req(StorageOp::Fsync { path: p("/f") }), &mut d), StorageReply::Error(errno::EIO));
        write(&mut c, &mut d, "/f", 0, b"again");
        assert_eq!(c.serve(req(StorageOp::Fsync { path: p("/f") }), &mut d), StorageReply::Done, "a fresh write-back and fsync");
    }

    /// A write that would take the vNode past its quota is refused when it is made, before
    /// anything is cached; what was written before reaches storage intact; freed space is
    /// found again.
    #[test]
    fn writes_past_the_quota_fail_at_once() {
        let mut c = BufferCache::new(MIN_CAPACITY);
        let mut d = Disk { quota: Some(3 * PAGE), ..Disk::default() };
        d.files.insert(p("/old"), vec![1; PAGE as usize]);
        create(&mut c, &mut d, "/f");
        assert!(matches!(write(&mut c, &mut d, "/f", 0, &[2; PAGE as usize]), StorageReply::Attr(_)));
        assert_eq!(write(&mut c, &mut d, "/f", PAGE, &[3; PAGE as usize + 1]), StorageReply::Error(errno::ENOSPC));
        assert!(matches!(write(&mut c, &mut d, "/f", PAGE, &[3; PAGE as usize]), StorageReply::Attr(_)), "exactly full");
        assert_eq!(write(&mut c, &mut d, "/f", 2 * PAGE, &[4]), StorageReply::Error(errno::ENOSPC));
        assert!(matches!(write(&mut c, &mut d, "/f", 10, &[5; 10]), StorageReply::Attr(_)), "overwrites need no room");
        assert_eq!(size(&mut c, &mut d, "/f"), 2 * PAGE);
        assert_eq!(fsync(&mut c, &mut d, "/f"), StorageReply::Done);
        let mut want = vec![2u8; PAGE as usize];
        want[10..20].fill(5);
        want.extend_from_slice(&[3; PAGE as usize]);
        assert_eq!(d.files[&p("/f")], want);
        assert_eq!(c.serve(req(StorageOp::Unlink { path: p("/old") }), &mut d), StorageReply::Done);
        assert!(matches!(write(&mut c, &mut d, "/f", 2 * PAGE, &[4; PAGE as usize]), StorageReply::Attr(_)), "room again");
    }

    fn create(c: &mut BufferCache, d: &mut Disk, path: &str) {
        let r = c.serve(req(StorageOp::Create { path: p(path), mode: 0o644, exclusive: true, truncate: false, owner: Owner::ROOT }), d);
        assert!(matches!(r, StorageReply::Attr(_)), "{r:?}");
    }

    #[test]
    fn rename_writes_back_and_unlink_discards() {
        let mut d = Disk::default();
        d.files.insert(p("/a"), Vec::new());
        d.files.insert(p("/b"), Vec::new());
        let mut c = BufferCache::new(MIN_CAPACITY);
        write(&mut c, &mut d, "/a", 0, b"moved");
        write(&mut c, &mut d, "/b", 0, b"gone");
        assert_eq!(c.serve(req(StorageOp::Rename { from: p("/a"), to: p("/c") }), &mut d), StorageReply::Done);
        assert_eq!(d.files[&p("/c")], b"moved");
        let writes = d.writes;
        assert_eq!(c.serve(req(StorageOp::Unlink { path: p("/b") }), &mut d), StorageReply::Done);
        assert_eq!(d.writes, writes, "an unlinked file's dirty pages are dropped, not written");
        assert!(c.is_empty() || c.len() <= 1);
    }

    proptest! {
        /// Against a byte vector: any sequence of writes, reads, truncates, fsyncs and closes
        /// through a cache much smaller than the file reads back what was written, and after an
        /// fsync storage holds exactly the model.
        #[test]
        fn model(ops in proptest::collection::vec((0u8..5, 0u64..3_000_000, 1usize..300_000), 1..40)) {
            let mut d = Disk::default();
            d.files.insert(p("/f"), Vec::new());
            let mut c = BufferCache::new(MIN_CAPACITY);
            let mut model: Vec<u8> = Vec::new();
            for (i, (op, off, len)) in ops.into_iter().enumerate() {
                match op {
                    0 | 1 => {
                        let data: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
                        let r = write(&mut c, &mut d, "/f", off, &data);
                        prop_assert!(matches!(r, StorageReply::Attr(_)), "{r:?}");
                        let end = off as usize + len;
                        if model.len() < end { model.resize(end, 0); }
                        model[off as usize..end].copy_from_slice(&data);
                    }
                    2 => {
                        let got = read(&mut c, &mut d, "/f", off, len as u32);
                        let from = (off as usize).min(model.len());
                        let to = (from + len).min(model.len());
                        prop_assert_eq!(got, model[from..to].to_vec());
                    }
                    3 => {
                        let r = c.serve(req(StorageOp::Truncate { path: p("/f"), len: off }), &mut d);
                        prop_assert!(matches!(r, StorageReply::Attr(_)), "{r:?}");
                        model.resize(off as usize, 0);
                    }
                    _ => { c.write_back("v", b"/f", &mut d).unwrap(); }
                }
                prop_assert_eq!(size(&mut c, &mut d, "/f"), model.len() as u64);
                prop_assert!(c.len() <= (MIN_CAPACITY / PAGE) as usize);
            }
            prop_assert_eq!(c.serve(req(StorageOp::Fsync { path: p("/f") }), &mut d), StorageReply::Done);
            prop_assert!(d.files[&p("/f")] == model, "storage differs from the model after fsync");
        }
    }
}
