//! The mem-server's buffer cache as independent shards, so that requests on different files run
//! at once: a file belongs to one shard (by a hash of its vNode and path), and each shard is a
//! [`BufferCache`] with its own storage connection under its own lock. A miss, a write-back or
//! an fsync holds only its shard's lock while storage answers, so it delays only the files of
//! that shard; requests on one file are served in order, so concurrent misses on one page fetch
//! it once (the second finds it cached).
//!
//! Calls that span files take every shard: a rename takes them all at once, in order (anything
//! cached under either name is written back and dropped, wherever it is cached; unreported
//! write-back errors move with the files to the shard of their new name), and `sync`/`syncfs`
//! of a vNode one after another (each shard that
//! holds files of the vNode writes them back and has storage sync them over its connection, so
//! that a restart of storage between the write-back and the sync is noticed as with fsync).

use lego_proto::sync::LockExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lego_proto::storage::{StorageOp, StorageReply, StorageRequest};

use crate::buffer_cache::{forward, renamed_errors, BufferCache, CacheCounters, CacheFigures, FileKey, MIN_CAPACITY};
use crate::space::Space;
use crate::storage_link::StorageLink;

/// Most shards.
const MAX_SHARDS: u64 = 16;

/// One shard: a cache and its connection to storage, and whether a request that may wait for
/// storage holds it.
struct Shard {
    state: Mutex<(BufferCache, StorageLink)>,
    slow: AtomicBool,
}

impl Shard {
    /// Locks the shard for a request that may call storage.
    fn lock_slow(&self) -> SlowGuard<'_> {
        let guard = self.state.lock_unpoisoned();
        self.slow.store(true, Ordering::Release);
        SlowGuard { guard, slow: &self.slow }
    }
}

/// A shard locked for a request that may call storage; clears the flag when let go.
struct SlowGuard<'a> {
    guard: MutexGuard<'a, (BufferCache, StorageLink)>,
    slow: &'a AtomicBool,
}

impl Drop for SlowGuard<'_> {
    fn drop(&mut self) {
        self.slow.store(false, Ordering::Release);
    }
}

impl std::ops::Deref for SlowGuard<'_> {
    type Target = (BufferCache, StorageLink);
    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl std::ops::DerefMut for SlowGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}

/// The buffer cache of one mem-server, in shards.
pub(crate) struct FileShards {
    shards: Vec<Shard>,
    counters: Vec<Arc<CacheCounters>>,
}

impl FileShards {
    /// A cache of `bytes` in front of the storage server at `storage`, in as many shards (up to
    /// [`MAX_SHARDS`]) as `bytes` holds [`MIN_CAPACITY`]s. The shards share the capacity: any
    /// one file may fill the whole cache (see [`BufferCache::sharing`]).
    pub(crate) fn new(bytes: u64, storage: Option<String>, cluster: u64) -> FileShards {
        let n = (bytes / MIN_CAPACITY).clamp(1, MAX_SHARDS);
        let total = Arc::new(AtomicUsize::new(0));
        let space = Arc::new(Space::default());
        let shards: Vec<Shard> = (0..n)
            .map(|_| Shard {
                state: Mutex::new((BufferCache::sharing(bytes, total.clone(), space.clone()), StorageLink::new(storage.clone(), cluster))),
                slow: AtomicBool::new(false),
            })
            .collect();
        let counters = shards.iter().map(|s| s.state.lock_unpoisoned().0.counters()).collect();
        FileShards { shards, counters }
    }

    /// The figures of every shard, added up (readable while shards are busy); the capacity is
    /// the one they share.
    pub(crate) fn figures(&self) -> CacheFigures {
        self.counters.iter().map(|c| c.figures()).fold(CacheFigures::default(), |a, f| CacheFigures {
            hits: a.hits + f.hits,
            misses: a.misses + f.misses,
            write_backs: a.write_backs + f.write_backs,
            evictions: a.evictions + f.evictions,
            pages: a.pages + f.pages,
            capacity: f.capacity,
        })
    }

    fn shard(&self, vnode: &str, path: &[u8]) -> &Shard {
        let h = path.iter().fold(lego_proto::storage::vnode_hash(vnode), |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    /// Serves one file request.
    pub(crate) fn serve(&self, req: StorageRequest) -> StorageReply {
        let path = match &req.op {
            StorageOp::Rename { from, to } => return self.rename(&req, from, to).unwrap_or_else(StorageReply::Error),
            StorageOp::SyncFs => return self.syncfs(req),
            // Served where the file is cached, which drops it first.
            StorageOp::Link { from, .. } => from,
            op => op.path().unwrap_or(b"/"),
        };
        let (cache, storage) = &mut *self.shard(&req.vnode, path).lock_slow();
        cache.serve(req, storage)
    }

    /// A read answered from cached pages alone, if its shard holds them all (see
    /// [`BufferCache::cached_read`]); `None` otherwise, for [`FileShards::serve`]. It waits for
    /// the shard only while other cached reads hold it (a copy of at most `MAX_IO` bytes), never
    /// behind a request that waits for storage: then it answers `None`.
    pub(crate) fn cached_read(&self, req: &StorageRequest) -> Option<StorageReply> {
        let StorageOp::Read { path, offset, len } = &req.op else { return None };
        let shard = self.shard(&req.vnode, path);
        let mut state = match shard.state.try_lock() {
            Ok(s) => s,
            Err(std::sync::TryLockError::WouldBlock) if !shard.slow.load(Ordering::Acquire) => shard.state.lock_unpoisoned(),
            Err(_) => return None,
        };
        // Taken after a slow request let go (it clears the flag before unlocking).
        state.0.cached_read(&req.vnode, path, *offset, *len)
    }

    /// Writes back one file after a close (see [`BufferCache::write_back`]).
    pub(crate) fn write_back(&self, vnode: &str, path: &[u8]) -> Result<(), i32> {
        let (cache, storage) = &mut *self.shard(vnode, path).lock_slow();
        cache.write_back(vnode, path, storage)
    }

    fn rename(&self, req: &StorageRequest, from: &[u8], to: &[u8]) -> Result<StorageReply, i32> {
        let mut all: Vec<_> = self.shards.iter().map(Shard::lock_slow).collect();
        for guard in all.iter_mut() {
            let (cache, storage) = &mut **guard;
            cache.release(&req.vnode, from, to, storage);
        }
        let reply = {
            let (_, storage) = &mut *all[0];
            forward(req, storage)?
        };
        let errors: Vec<(FileKey, i32)> = all.iter_mut().flat_map(|g| g.0.take_errors(&req.vnode, from, to)).collect();
        drop(all);
        for (key, e) in renamed_errors(errors, from, to) {
            self.shard(&key.0, &key.1).state.lock_unpoisoned().0.keep_error(key, e);
        }
        Ok(reply)
    }

    fn syncfs(&self, req: StorageRequest) -> StorageReply {
        let mut reply = None;
        for shard in &self.shards {
            let (cache, storage) = &mut *shard.lock_slow();
            if cache.holds(&req.vnode) {
                let r = cache.serve(req.clone(), storage);
                if reply.is_none() || matches!(r, StorageReply::Error(_)) {
                    reply = Some(r);
                }
            }
        }
        // No shard held a file of the vNode: storage still syncs what it has.
        reply.unwrap_or_else(|| {
            let (cache, storage) = &mut *self.shards[0].lock_slow();
            cache.serve(req, storage)
        })
    }
}
