//! The secondary copy of replicated vRegions (LegoOS §4.7): a bounded log in memory of the
//! pages written to them, which a background thread appends to a backup file per process on
//! the storage server.
//!
//! A page written here goes into a *slot* of the log and is queued; the flusher takes queued
//! slots oldest first, appends them as records (`address: u64 LE`, then the page) to the
//! process's backup file, and then frees the slots of the pages not written again meanwhile:
//! their index entries point into the file from then on. A page written again while still in
//! the log is overwritten in its slot, so a hot page costs one slot, not one per write; to let
//! rewrites gather, the flusher starts once a quarter of the log is unflushed (and drains it
//! to an eighth) or once a page has waited [`FLUSH_AGE`]. The
//! index (process, page) -> slot or file offset is kept in memory, so a read (a promoted
//! secondary, the copy of a rebuild) is a slot copy or one storage read of a record written
//! earlier and never changed since: the files are only appended to.
//!
//! When every slot holds a page not yet flushed, a write waits for the flusher to free one for
//! [`ROOM_WAIT`] at most while storage answers (a burst of write-backs larger than the log),
//! and is refused with [`BackupError::LogFull`] after that, or at once while the flusher's last
//! attempt failed (the storage server slow or unreachable): the pComponent then stops counting
//! on this copy (LegoOS "skip[s] replicating"), rather than wait on storage while it holds the
//! page path.
//!
//! Backup files live on the storage server of the process's vNode (the one its pComponent
//! names in the process's spec; this server's own when it names none), in that server's mount
//! of the vNode [`BACKUP_VNODE`], under a directory named after this server; the files an
//! earlier run of the server left there are removed when this run first writes there, since
//! the index that made sense of them died with it. A file is removed once no page of it is
//! referred to and its process is released.

use lego_proto::sync::LockExt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lego_proto::frame::PAGE_SIZE;
use lego_proto::storage::{FileKind, Owner as FileOwner, QuotaChange, StorageOp, StorageReply, StorageRequest, MAX_DIRENTS, MAX_IO};

use crate::buffer_cache::Backing;
use crate::store::{Page, PageBatch};

/// Bytes of one record of a backup file: the page's address, then the page.
pub const RECORD: u64 = 8 + PAGE_SIZE as u64;

/// The vNode whose mount on the storage server holds the backup files of every mem-server.
pub const BACKUP_VNODE: &str = "lego-backup";

/// Slots the flusher takes at once: one append of at most this many records per file.
const BATCH: usize = (MAX_IO as u64 / RECORD) as usize;

/// Longest a write waits for a free slot while the storage server answers.
pub const ROOM_WAIT: Duration = Duration::from_millis(100);

/// Longest a page waits in the log before the flusher takes it.
pub const FLUSH_AGE: Duration = Duration::from_secs(1);

/// Longest pause between two attempts of a failing storage server.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a backup-log operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// Every slot holds a page not yet in the backup file.
    #[error("the backup log is full (its storage server is slower than the write-backs, or unreachable)")]
    LogFull,
    /// A page in the backup file could not be read back.
    #[error("reading the backup file {path}: {why}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
}

/// What the log has done, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupFigures {
    /// Slots of the log (its capacity, in pages).
    pub slots: u64,
    /// Slots holding a page not yet in a backup file.
    pub unflushed: u64,
    /// Pages appended to backup files (a record of [`RECORD`] bytes each).
    pub flushed: u64,
    /// Writes refused because the log was full.
    pub refused: u64,
    /// Appends to storage that failed (retried).
    pub storage_errors: u64,
}

/// Where a page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    /// In slot n of the log.
    Log(u32),
    /// In the record at `offset` of backup file `file`, written for page `recorded` (a page
    /// moved by `mremap` since keeps its record).
    File { file: u32, offset: u64, recorded: u64 },
}

struct Slot {
    /// (process, page) it holds, or `None` when free.
    key: Option<(u64, u64)>,
    /// Changed at every write to the slot: the flusher frees it only if it wrote this version.
    generation: u64,
    /// In the flusher's queue.
    queued: bool,
    page: Box<Page>,
}

struct BackupFile {
    /// The storage server holding it.
    storage: String,
    path: Vec<u8>,
    /// Bytes appended or reserved for an append under way.
    len: u64,
    /// Index entries pointing into it.
    refs: u64,
    /// Its process still appends to it.
    open: bool,
    /// Created on the storage server.
    created: bool,
}

struct State {
    index: HashMap<(u64, u64), Loc>,
    slots: Vec<Slot>,
    capacity: usize,
    free: Vec<u32>,
    /// Slots to flush, with when each was queued, oldest first.
    queue: VecDeque<(u32, Instant)>,
    /// The flusher is draining the log down to its low watermark.
    draining: bool,
    files: HashMap<u32, BackupFile>,
    /// Process -> the file it appends to.
    appending: HashMap<u64, u32>,
    /// Process -> the storage server of its backup files.
    storage_of: HashMap<u64, String>,
    next_file: u32,
    /// Directory of this server's files.
    dir: Vec<u8>,
    /// Files to remove from storage: (storage server, path).
    doomed: Vec<(String, Vec<u8>)>,
    figures: BackupFigures,
    /// The flusher's last attempt failed.
    failing: bool,
    stop: bool,
}

/// One page taken by the flusher: its slot, key and version, when it was queued, and a copy
/// of it.
struct Taken {
    slot: u32,
    key: (u64, u64),
    generation: u64,
    queued_at: Instant,
    page: Box<Page>,
}

impl State {
    fn new(capacity: usize, dir: Vec<u8>) -> State {
        State {
            index: HashMap::new(),
            slots: Vec::new(),
            capacity,
            free: Vec::new(),
            queue: VecDeque::new(),
            draining: false,
            files: HashMap::new(),
            appending: HashMap::new(),
            storage_of: HashMap::new(),
            next_file: 0,
            dir,
            doomed: Vec::new(),
            figures: BackupFigures { slots: capacity as u64, ..BackupFigures::default() },
            failing: false,
            stop: false,
        }
    }

    /// A free slot, made if the log has not reached its capacity.
    fn alloc(&mut self) -> Option<u32> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        if self.slots.len() >= self.capacity {
            return None;
        }
        self.slots.push(Slot { key: None, generation: 0, queued: false, page: Box::new([0; PAGE_SIZE]) });
        Some(self.slots.len() as u32 - 1)
    }

    /// Puts `page` in slot `s` for `key` and queues it.
    fn fill(&mut self, s: u32, key: (u64, u64), page: &Page) {
        let slot = &mut self.slots[s as usize];
        slot.key = Some(key);
        slot.generation += 1;
        slot.page.copy_from_slice(page);
        if !slot.queued {
            slot.queued = true;
            self.queue.push_back((s, Instant::now()));
        }
    }

    /// Stores `page` at `key`.
    fn write(&mut self, key: (u64, u64), page: &Page) -> Result<(), BackupError> {
        match self.index.get(&key).copied() {
            Some(Loc::Log(s)) => self.fill(s, key, page),
            old => {
                let Some(s) = self.alloc() else {
                    return Err(BackupError::LogFull);
                };
                if let Some(Loc::File { file, .. }) = old {
                    self.unref(file);
                }
                self.fill(s, key, page);
                self.index.insert(key, Loc::Log(s));
            }
        }
        Ok(())
    }

    /// Forgets `key`; returns where it was.
    fn remove(&mut self, key: (u64, u64)) -> Option<Loc> {
        let loc = self.index.remove(&key)?;
        match loc {
            Loc::Log(s) => {
                let slot = &mut self.slots[s as usize];
                slot.key = None;
                slot.generation += 1;
                self.free.push(s);
            }
            Loc::File { file, .. } => self.unref(file),
        }
        Some(loc)
    }

    /// One index entry less points into `file`: a closed file nothing points into goes.
    fn unref(&mut self, file: u32) {
        let Some(f) = self.files.get_mut(&file) else { return };
        f.refs = f.refs.saturating_sub(1);
        self.doom_if_unused(file);
    }

    /// A closed file nothing points into is removed, even if no append to it is known to have
    /// succeeded: one may be under way (removing a file that is not there is harmless).
    fn doom_if_unused(&mut self, file: u32) {
        if self.files.get(&file).is_some_and(|f| f.refs == 0 && !f.open) {
            if let Some(f) = self.files.remove(&file) {
                self.doomed.push((f.storage, f.path));
            }
        }
    }

    /// Keys of `proc` in `[start, end)`, in address order.
    fn keys_in(&self, proc: u64, start: u64, end: u64) -> Vec<u64> {
        let span = end.saturating_sub(start) / PAGE_SIZE as u64;
        let mut keys: Vec<u64> = if span <= self.index.len() as u64 {
            (0..span).map(|i| start + i * PAGE_SIZE as u64).filter(|a| self.index.contains_key(&(proc, *a))).collect()
        } else {
            self.index.keys().filter(|(p, a)| *p == proc && (start..end).contains(a)).map(|(_, a)| *a).collect()
        };
        keys.sort_unstable();
        keys
    }

    /// Re-keys `[from, from+len)` of `proc` to `[to, to+len)`, dropping what was there. A
    /// page in the log is queued again: its record must carry the new address.
    fn rekey(&mut self, proc: u64, from: u64, to: u64, len: u64) {
        let moved: Vec<(u64, Loc)> =
            self.keys_in(proc, from, from.saturating_add(len)).into_iter().filter_map(|a| self.index.remove(&(proc, a)).map(|l| (a, l))).collect();
        for a in self.keys_in(proc, to, to.saturating_add(len)) {
            self.remove((proc, a));
        }
        for (a, loc) in moved {
            let key = (proc, a - from + to);
            if let Loc::Log(s) = loc {
                let slot = &mut self.slots[s as usize];
                slot.key = Some(key);
                slot.generation += 1;
                if !slot.queued {
                    slot.queued = true;
                    self.queue.push_back((s, Instant::now()));
                }
            }
            self.index.insert(key, loc);
        }
    }

    /// Gives `child` every page of `parent` (a fork): pages in files are shared (the files only
    /// grow), pages in the log are copied to new slots. All or none.
    fn copy_process(&mut self, parent: u64, child: u64) -> Result<(), BackupError> {
        if let Some(storage) = self.storage_of.get(&parent).cloned() {
            self.storage_of.insert(child, storage);
        }
        let entries: Vec<(u64, Loc)> = self.index.iter().filter(|((p, _), _)| *p == parent).map(|((_, a), l)| (*a, *l)).collect();
        for (a, loc) in entries {
            let key = (child, a);
            self.remove(key);
            match loc {
                Loc::Log(s) => {
                    let Some(new) = self.alloc() else {
                        self.release(child);
                        self.figures.refused += 1;
                        return Err(BackupError::LogFull);
                    };
                    let page = *self.slots[s as usize].page;
                    self.fill(new, key, &page);
                    self.index.insert(key, Loc::Log(new));
                }
                Loc::File { file, .. } => {
                    if let Some(f) = self.files.get_mut(&file) {
                        f.refs += 1;
                    }
                    self.index.insert(key, loc);
                }
            }
        }
        Ok(())
    }

    /// Forgets every page of `proc`, and closes its file.
    fn release(&mut self, proc: u64) {
        self.storage_of.remove(&proc);
        let keys: Vec<(u64, u64)> = self.index.keys().filter(|(p, _)| *p == proc).copied().collect();
        for key in keys {
            self.remove(key);
        }
        if let Some(file) = self.appending.remove(&proc) {
            if let Some(f) = self.files.get_mut(&file) {
                f.open = false;
            }
            self.doom_if_unused(file);
        }
    }

    /// The file `proc` appends to, made (in this table) if it has none.
    fn file_of(&mut self, proc: u64) -> u32 {
        if let Some(&f) = self.appending.get(&proc) {
            return f;
        }
        let id = self.next_file;
        self.next_file = self.next_file.wrapping_add(1);
        let path = [self.dir.as_slice(), format!("/{proc:x}.{id}").as_bytes()].concat();
        let storage = self.storage_of.get(&proc).cloned().unwrap_or_default();
        self.files.insert(id, BackupFile { storage, path, len: 0, refs: 0, open: true, created: false });
        self.appending.insert(proc, id);
        id
    }

    /// Up to [`BATCH`] queued pages, oldest first, grouped by the file each is appended to,
    /// with the offset reserved for the group's first record.
    fn take_batch(&mut self) -> Vec<(u32, u64, Vec<Taken>)> {
        let mut groups: Vec<(u32, u64, Vec<Taken>)> = Vec::new();
        let mut n = 0;
        while n < BATCH {
            let Some((s, queued_at)) = self.queue.pop_front() else { break };
            let slot = &mut self.slots[s as usize];
            slot.queued = false;
            let Some(key) = slot.key else { continue };
            let taken = Taken { slot: s, key, generation: slot.generation, queued_at, page: slot.page.clone() };
            let file = self.file_of(key.0);
            match groups.iter_mut().find(|g| g.0 == file) {
                Some(g) => g.2.push(taken),
                None => groups.push((file, 0, vec![taken])),
            }
            n += 1;
        }
        for (file, offset, records) in &mut groups {
            if let Some(f) = self.files.get_mut(file) {
                *offset = f.len;
                f.len += RECORD * records.len() as u64;
            }
        }
        groups
    }

    /// The group's records are in `file` from `offset` on: the pages not written again since
    /// point there now, and their slots are free.
    fn appended(&mut self, file: u32, offset: u64, records: Vec<Taken>) {
        if let Some(f) = self.files.get_mut(&file) {
            f.created = true;
        }
        self.figures.flushed += records.len() as u64;
        for (i, t) in records.into_iter().enumerate() {
            let slot = &self.slots[t.slot as usize];
            let current = slot.key == Some(t.key) && slot.generation == t.generation && self.index.get(&t.key) == Some(&Loc::Log(t.slot));
            if !current {
                continue;
            }
            self.index.insert(t.key, Loc::File { file, offset: offset + i as u64 * RECORD, recorded: t.key.1 });
            if let Some(f) = self.files.get_mut(&file) {
                f.refs += 1;
            }
            let slot = &mut self.slots[t.slot as usize];
            slot.key = None;
            slot.generation += 1;
            self.free.push(t.slot);
        }
        self.doom_if_unused(file);
    }

    /// The append of `records` failed: those still current go back to the head of the queue.
    fn not_appended(&mut self, records: Vec<Taken>) {
        for t in records.into_iter().rev() {
            let slot = &mut self.slots[t.slot as usize];
            if slot.key.is_some() && !slot.queued {
                slot.queued = true;
                self.queue.push_front((t.slot, t.queued_at));
            }
        }
    }

    fn unflushed(&self) -> u64 {
        (self.slots.len() - self.free.len()) as u64
    }

    /// Whether the flusher should take a batch now, or else how long it may wait: once a
    /// quarter of the log is unflushed it drains it to an eighth; a page queued for
    /// [`FLUSH_AGE`] goes out in any case.
    fn due(&mut self) -> Result<(), Duration> {
        let Some(&(_, oldest)) = self.queue.front() else {
            self.draining = false;
            return Err(Duration::MAX);
        };
        let unflushed = self.unflushed() as usize;
        if unflushed * 4 >= self.capacity {
            self.draining = true;
        } else if unflushed * 8 <= self.capacity {
            self.draining = false;
        }
        let age = oldest.elapsed();
        if self.draining || age >= FLUSH_AGE {
            Ok(())
        } else {
            Err(FLUSH_AGE - age)
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Raised when there is work for the flusher, or when it should stop.
    work: Condvar,
    /// Raised when the flusher freed slots, or failed.
    room: Condvar,
}

/// The backup log of one mem-server, with its flusher thread.
pub struct BackupLog {
    shared: Arc<Shared>,
    /// This server's own storage server, for processes whose spec names none.
    default: Option<String>,
    connect: Arc<Connect>,
    /// The connections reads of backup files take, by storage server (the flusher has its
    /// own).
    readers: Mutex<HashMap<String, Box<dyn Backing + Send>>>,
    flusher: Option<JoinHandle<()>>,
}

/// Opens a connection to the storage server at an address.
pub type Connect = dyn Fn(&str) -> Box<dyn Backing + Send> + Send + Sync;

impl BackupLog {
    /// A log of `slots` pages whose files go to storage servers reached through `connect`, in
    /// directory `/<name>` of their mount of [`BACKUP_VNODE`]: the process's vNode's, or
    /// `default`.
    pub fn start(slots: usize, name: &str, default: Option<String>, connect: Box<Connect>) -> BackupLog {
        let dir = format!("/{name}").into_bytes();
        let shared = Arc::new(Shared { state: Mutex::new(State::new(slots.max(1), dir.clone())), work: Condvar::new(), room: Condvar::new() });
        let for_thread = shared.clone();
        let connect: Arc<Connect> = Arc::from(connect);
        let for_flusher = connect.clone();
        let flusher = std::thread::Builder::new()
            .name("backup-flusher".into())
            .spawn(move || flush_loop(&for_thread, &*for_flusher, &dir))
            .map_err(|e| tracing::error!("the backup log's flusher did not start: {e}"))
            .ok();
        BackupLog { shared, default, connect, readers: Mutex::new(HashMap::new()), flusher }
    }

    /// Keeps the backup files of `proc` on `storage` (its vNode's storage server), or on this
    /// server's own if `None`: a process keeps the first it was given. False if there is none:
    /// its pages cannot be logged.
    pub fn assign(&self, proc: u64, storage: Option<String>) -> bool {
        let mut s = self.state();
        if s.storage_of.contains_key(&proc) {
            return true;
        }
        match storage.or_else(|| self.default.clone()) {
            Some(st) => {
                s.storage_of.insert(proc, st);
                true
            }
            None => false,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock_unpoisoned()
    }

    /// Stores `page` at `addr` of `proc`.
    pub fn write(&self, proc: u64, addr: u64, page: &Page) -> Result<(), BackupError> {
        let mut s = self.state();
        let until = Instant::now() + ROOM_WAIT;
        while let Err(e) = s.write((proc, addr), page) {
            let now = Instant::now();
            if s.failing || now >= until {
                s.figures.refused += 1;
                return Err(e);
            }
            self.shared.work.notify_one();
            s = self.shared.room.wait_timeout(s, until - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        // The flusher waits for the first page (to time its age) or for the high watermark.
        let wake = s.queue.len() == 1 || s.unflushed() as usize * 4 >= s.capacity;
        drop(s);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// Whether `n` more pages fit in the log now.
    pub fn can_take(&self, n: u64) -> bool {
        let s = self.state();
        (s.capacity as u64).saturating_sub(s.unflushed()) >= n
    }

    /// The page at `addr` of `proc`, or `None` if none was stored (it reads as zeroes).
    pub fn read(&self, proc: u64, addr: u64) -> Result<Option<Box<Page>>, BackupError> {
        let (storage, path, offset, recorded) = {
            let s = self.state();
            match s.index.get(&(proc, addr)) {
                None => return Ok(None),
                Some(Loc::Log(slot)) => return Ok(Some(s.slots[*slot as usize].page.clone())),
                Some(Loc::File { file, offset, recorded }) => match s.files.get(file) {
                    Some(f) => (f.storage.clone(), f.path.clone(), *offset, *recorded),
                    None => return Err(BackupError::Read { path: format!("#{file}"), why: "no such backup file".into() }),
                },
            }
        };
        // The record was written before the entry pointed at it and never changes: read it
        // without holding the log.
        let failed = |why: String| BackupError::Read { path: String::from_utf8_lossy(&path).into_owned(), why };
        let op = StorageOp::Read { path: path.clone(), offset, len: RECORD as u32 };
        let mut readers = self.readers.lock_unpoisoned();
        let reader = readers.entry(storage.clone()).or_insert_with(|| (self.connect)(&storage));
        let data = match reader.call(&StorageRequest { vnode: BACKUP_VNODE.into(), op }) {
            Ok(StorageReply::Data(d)) => d,
            Ok(other) => return Err(failed(format!("answered {other:?}"))),
            Err(e) => return Err(failed(e.to_string())),
        };
        if data.len() as u64 != RECORD || data[..8] != recorded.to_le_bytes() {
            return Err(failed(format!("the record at {offset} is not page {recorded:#x}")));
        }
        let mut page = Box::new([0u8; PAGE_SIZE]);
        page.copy_from_slice(&data[8..]);
        Ok(Some(page))
    }

    /// Copies of up to `max` stored pages of `proc` in `[start, end)`, lowest first, and
    /// whether more remain.
    pub fn copy_out(&self, proc: u64, start: u64, end: u64, max: usize) -> Result<PageBatch, BackupError> {
        let keys = self.state().keys_in(proc, start, end);
        let more = keys.len() > max;
        let mut out = Vec::with_capacity(keys.len().min(max));
        for a in keys.into_iter().take(max) {
            if let Some(p) = self.read(proc, a)? {
                out.push((a, p.to_vec()));
            }
        }
        Ok((out, more))
    }

    /// Like [`BackupLog::copy_out`], and forgets the pages handed out.
    pub fn take(&self, proc: u64, start: u64, end: u64, max: usize) -> Result<PageBatch, BackupError> {
        let (pages, more) = self.copy_out(proc, start, end, max)?;
        let mut s = self.state();
        for (a, _) in &pages {
            s.remove((proc, *a));
        }
        Ok((pages, more))
    }

    /// Forgets the pages of `proc` in `[start, end)`.
    pub fn free_range(&self, proc: u64, start: u64, end: u64) {
        let mut s = self.state();
        for a in s.keys_in(proc, start, end) {
            s.remove((proc, a));
        }
        drop(s);
        self.shared.work.notify_one();
    }

    /// Moves the pages of `proc` at `[from, from+len)` to `[to, to+len)`.
    pub fn rekey(&self, proc: u64, from: u64, to: u64, len: u64) {
        self.state().rekey(proc, from, to, len);
        self.shared.work.notify_one();
    }

    /// Gives `child` a copy of every page of `parent`: all or none.
    pub fn copy_process(&self, parent: u64, child: u64) -> Result<(), BackupError> {
        self.state().copy_process(parent, child)?;
        self.shared.work.notify_one();
        Ok(())
    }

    /// Forgets `proc`; its backup file goes once no other process's page points into it.
    pub fn release(&self, proc: u64) {
        self.state().release(proc);
        self.shared.work.notify_one();
    }

    /// What the log has done so far.
    pub fn figures(&self) -> BackupFigures {
        let s = self.state();
        BackupFigures { unflushed: s.unflushed(), ..s.figures }
    }

    /// Slots in use (pages in memory).
    pub fn used_slots(&self) -> u64 {
        self.state().unflushed()
    }
}

impl Drop for BackupLog {
    fn drop(&mut self) {
        self.state().stop = true;
        self.shared.work.notify_all();
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
    }
}

/// One storage request of the flusher; an error answer is an error.
fn call(link: &mut dyn Backing, op: StorageOp) -> Result<StorageReply, String> {
    match link.call(&StorageRequest { vnode: BACKUP_VNODE.into(), op }) {
        Ok(StorageReply::Error(e)) => Err(format!("errno {e}")),
        Ok(r) => Ok(r),
        Err(e) => Err(e.to_string()),
    }
}

/// Mounts the backup vNode, makes this server's directory and empties it of what an earlier
/// run left.
fn prepare(link: &mut dyn Backing, dir: &[u8]) -> Result<(), String> {
    call(link, StorageOp::Mount { quota: QuotaChange::Keep })?;
    match link.call(&StorageRequest { vnode: BACKUP_VNODE.into(), op: StorageOp::Mkdir { path: dir.to_vec(), mode: 0o700, owner: FileOwner::ROOT } }) {
        Ok(StorageReply::Error(e)) if e != libc::EEXIST => return Err(format!("errno {e}")),
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    loop {
        let StorageReply::Entries { entries, .. } = call(link, StorageOp::Readdir { path: dir.to_vec(), cookie: 0, max: MAX_DIRENTS as u32 })? else {
            return Err("readdir answered something else".into());
        };
        let files: Vec<_> = entries.into_iter().filter(|e| e.kind == FileKind::File).collect();
        if files.is_empty() {
            return Ok(());
        }
        for e in files {
            call(link, StorageOp::Unlink { path: [dir, b"/", &e.name].concat() })?;
        }
    }
}

/// Appends `records` at `offset` of `path` (created first if `create`).
fn append(link: &mut dyn Backing, path: &[u8], create: bool, offset: u64, records: &[Taken]) -> Result<(), String> {
    if create {
        call(link, StorageOp::Create { path: path.to_vec(), mode: 0o600, exclusive: false, truncate: true, owner: FileOwner::ROOT })?;
    }
    let mut data = Vec::with_capacity(records.len() * RECORD as usize);
    for t in records {
        data.extend_from_slice(&t.key.1.to_le_bytes());
        data.extend_from_slice(&t.page[..]);
    }
    call(link, StorageOp::Write { path: path.to_vec(), offset, data }).map(drop)
}

/// The flusher: appends queued pages to their files until the log is dropped, each storage
/// server through a connection of its own, prepared ([`prepare`]) before its first append.
fn flush_loop(shared: &Shared, connect: &Connect, dir: &[u8]) {
    let mut links: HashMap<String, Box<dyn Backing + Send>> = HashMap::new();
    let mut prepared: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        let (doomed, groups) = {
            let mut s = shared.state.lock_unpoisoned();
            while !s.stop && s.doomed.is_empty() {
                match s.due() {
                    Ok(()) => break,
                    Err(Duration::MAX) => s = shared.work.wait(s).unwrap_or_else(|e| e.into_inner()),
                    Err(d) => s = shared.work.wait_timeout(s, d).unwrap_or_else(|e| e.into_inner()).0,
                }
            }
            if s.stop {
                return;
            }
            let groups: Vec<_> = s
                .take_batch()
                .into_iter()
                .map(|(file, offset, records)| {
                    let f = s.files.get(&file);
                    let (storage, path) = f.map(|f| (f.storage.clone(), f.path.clone())).unwrap_or_default();
                    (file, storage, path, f.is_some_and(|f| !f.created), offset, records)
                })
                .collect();
            (std::mem::take(&mut s.doomed), groups)
        };
        for (storage, path) in doomed {
            let link = links.entry(storage.clone()).or_insert_with(|| connect(&storage));
            match link.call(&StorageRequest { vnode: BACKUP_VNODE.into(), op: StorageOp::Unlink { path: path.clone() } }) {
                Ok(StorageReply::Error(libc::ENOENT)) | Ok(StorageReply::Done) => {}
                Ok(other) => tracing::warn!(path = %String::from_utf8_lossy(&path), "removing a backup file: {other:?}"),
                Err(e) => tracing::warn!(path = %String::from_utf8_lossy(&path), "removing a backup file: {e}"),
            }
        }
        let mut failed = None;
        for (file, storage, path, create, offset, records) in groups {
            let link = links.entry(storage.clone()).or_insert_with(|| connect(&storage));
            let mut done = Ok(());
            if !prepared.contains(&storage) {
                done = prepare(&mut **link, dir).map_err(|e| format!("preparing {} on {storage}: {e}", String::from_utf8_lossy(dir)));
                if done.is_ok() {
                    prepared.insert(storage.clone());
                }
            }
            let done = done.and_then(|()| append(&mut **link, &path, create, offset, &records).map_err(|e| format!("appending to {} on {storage}: {e}", String::from_utf8_lossy(&path))));
            let mut s = shared.state.lock_unpoisoned();
            match done {
                Ok(()) => {
                    s.failing = false;
                    s.appended(file, offset, records);
                }
                Err(e) => {
                    s.failing = true;
                    s.not_appended(records);
                    failed = Some(e);
                }
            }
            shared.room.notify_all();
        }
        match failed {
            Some(e) => {
                tracing::warn!(retry_in_ms = backoff.as_millis() as u64, "backup log: {e}");
                let mut s = shared.state.lock_unpoisoned();
                s.figures.storage_errors += 1;
                let (s, _) = shared.work.wait_timeout(s, backoff).unwrap_or_else(|e| e.into_inner());
                if s.stop {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            None => backoff = Duration::from_millis(50),
        }
    }
}

/// A backup log on storage kept in memory, for the tests of its users.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::buffer_cache::StorageUnreachable;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Storage in memory: files by path, which can be made to fail.
    #[derive(Clone, Default)]
    pub(crate) struct Fake {
        pub(crate) files: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>,
        pub(crate) down: Arc<AtomicBool>,
        /// The addresses connections were opened to.
        pub(crate) connected: Arc<Mutex<Vec<String>>>,
    }

    impl Backing for Fake {
        fn call(&mut self, req: &StorageRequest) -> Result<StorageReply, StorageUnreachable> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StorageUnreachable::NotConfigured);
            }
            let mut files = self.files.lock_unpoisoned();
            Ok(match &req.op {
                StorageOp::Create { path, .. } => {
                    files.insert(path.clone(), Vec::new());
                    StorageReply::Done
                }
                StorageOp::Write { path, offset, data } => {
                    let f = files.get_mut(path).expect("created first");
                    let end = *offset as usize + data.len();
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                    f[*offset as usize..end].copy_from_slice(data);
                    StorageReply::Done
                }
                StorageOp::Read { path, offset, len } => {
                    let f = files.get(path).map(Vec::as_slice).unwrap_or_default();
                    let from = (*offset as usize).min(f.len());
                    StorageReply::Data(f[from..(from + *len as usize).min(f.len())].to_vec())
                }
                StorageOp::Unlink { path } => {
                    files.remove(path);
                    StorageReply::Done
                }
                StorageOp::Readdir { .. } => StorageReply::Entries { entries: Vec::new(), more: false },
                _ => StorageReply::Done,
            })
        }

        fn generation(&self) -> u64 {
            0
        }
    }

    /// A log of `slots` pages on a [`Fake`] storage (its default, "fake", and every other
    /// address it is asked for), and the storage.
    pub(crate) fn log(slots: usize) -> (BackupLog, Fake) {
        let fake = Fake::default();
        let for_log = fake.clone();
        let connect = move |addr: &str| -> Box<dyn Backing + Send> {
            for_log.connected.lock_unpoisoned().push(addr.to_string());
            Box::new(for_log.clone())
        };
        (BackupLog::start(slots, "t", Some("fake".into()), Box::new(connect)), fake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    const P: u64 = PAGE_SIZE as u64;

    fn page(b: u8) -> Page {
        [b; PAGE_SIZE]
    }

    use super::testing::log;

    /// Waits until every page is in a file.
    fn drained(l: &BackupLog) {
        for _ in 0..500 {
            if l.figures().unflushed == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the log did not drain: {:?}", l.figures());
    }

    #[test]
    fn each_process_logs_to_its_vnodes_storage_server_or_the_default() {
        let (l, fake) = log(4);
        assert!(l.assign(1, Some("vnode-storage".into())) && l.assign(2, None));
        assert!(l.assign(1, None), "a process keeps the storage server it was given");
        l.write(1, 0, &page(1)).unwrap();
        l.write(2, 0, &page(2)).unwrap();
        drained(&l);
        assert_eq!((l.read(1, 0).unwrap().unwrap()[0], l.read(2, 0).unwrap().unwrap()[0]), (1, 2));
        let mut asked = fake.connected.lock_unpoisoned().clone();
        asked.sort();
        asked.dedup();
        assert_eq!(asked, vec!["fake".to_string(), "vnode-storage".to_string()]);
        let bare = BackupLog::start(4, "u", None, Box::new(|_: &str| -> Box<dyn Backing + Send> { Box::new(super::testing::Fake::default()) }));
        assert!(!bare.assign(1, None), "no storage server at all: nothing to log to");
        assert!(bare.assign(1, Some("s".into())));
    }

    #[test]
    fn pages_go_to_the_file_and_read_back_from_it() {
        let (l, fake) = log(4);
        l.assign(1, None);
        for i in 0..10u8 {
            l.write(1, u64::from(i) * P, &page(i)).or_else(|_| {
                drained(&l);
                l.write(1, u64::from(i) * P, &page(i))
            }).unwrap();
        }
        drained(&l);
        for i in 0..10u8 {
            assert_eq!(l.read(1, u64::from(i) * P).unwrap().unwrap()[0], i);
        }
        assert!(l.read(1, 10 * P).unwrap().is_none(), "never written");
        let f = l.figures();
        assert_eq!((f.flushed, f.unflushed, f.slots), (10, 0, 4));
        let files = fake.files.lock_unpoisoned();
        let file = files.get(&b"/t/1.0"[..]).expect("the process's backup file");
        assert_eq!(file.len() as u64, 10 * RECORD, "append only, one record per write");
        assert_eq!(file[..8], 0u64.to_le_bytes(), "each record starts with its page's address");
    }

    #[test]
    fn a_full_log_refuses_writes_until_storage_catches_up() {
        let (l, fake) = log(2);
        l.assign(1, None);
        fake.down.store(true, Ordering::SeqCst);
        l.write(1, 0, &page(1)).unwrap();
        l.write(1, P, &page(2)).unwrap();
        l.write(1, 0, &page(3)).unwrap();
        assert_eq!(l.write(1, 2 * P, &page(4)), Err(BackupError::LogFull), "a third page has no slot");
        assert_eq!(l.figures().refused, 1);
        assert_eq!(l.read(1, 0).unwrap().unwrap()[0], 3, "rewritten in its slot");
        std::thread::sleep(Duration::from_millis(100));
        assert!(l.figures().storage_errors > 0);
        fake.down.store(false, Ordering::SeqCst);
        drained(&l);
        l.write(1, 2 * P, &page(4)).unwrap();
        assert_eq!(l.read(1, 0).unwrap().unwrap()[0], 3);
        assert_eq!(l.read(1, P).unwrap().unwrap()[0], 2);
    }

    #[test]
    fn moves_forks_takes_and_releases() {
        let (l, fake) = log(8);
        l.assign(1, None);
        l.assign(3, None);
        l.write(1, 0, &page(1)).unwrap();
        l.write(1, P, &page(2)).unwrap();
        drained(&l);
        l.write(1, 2 * P, &page(3)).unwrap();
        l.rekey(1, 0, 16 * P, 3 * P);
        assert!(l.read(1, 0).unwrap().is_none());
        assert_eq!(l.read(1, 17 * P).unwrap().unwrap()[0], 2, "moved while in the file");
        assert_eq!(l.read(1, 18 * P).unwrap().unwrap()[0], 3, "moved while in the log");
        l.copy_process(1, 2).unwrap();
        l.write(1, 16 * P, &page(9)).unwrap();
        assert_eq!(l.read(2, 16 * P).unwrap().unwrap()[0], 1, "the child keeps the fork's page");
        let (pages, more) = l.take(2, 16 * P, 19 * P, 2).unwrap();
        assert_eq!((pages.iter().map(|(a, p)| (*a, p[0])).collect::<Vec<_>>(), more), (vec![(16 * P, 1), (17 * P, 2)], true));
        assert!(l.read(2, 16 * P).unwrap().is_none(), "taken pages are forgotten");
        drained(&l);
        l.release(1);
        assert_eq!(l.read(2, 18 * P).unwrap().unwrap()[0], 3, "the parent's file stays while the child points into it");
        l.release(2);
        l.write(3, 0, &page(7)).unwrap();
        drained(&l);
        let names: Vec<Vec<u8>> = fake.files.lock_unpoisoned().keys().cloned().collect();
        assert!(names.len() == 1 && names[0].starts_with(b"/t/3."), "the released processes' files are removed: {names:?}");
    }
}
