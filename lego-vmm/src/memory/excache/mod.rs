//! The ExCache (LegoOS §4.3.2, §5.3): the only part of a process's memory resident in the
//! pComponent.
//!
//! The cache is exactly `--excache` bytes of guest-physical frames ([`FramePool`]). A resident
//! line is a guest page-table entry from the virtual page to its frame
//! ([`crate::memory::paging`]), so the resident bound holds by construction. The whole data path
//! lives in [`State::fault`], top to bottom:
//!
//! 1. **A miss is a guest #PF**, taken on the faulting vCPU's own thread (its exception stub
//!    exits to the VMM, see `vnode.rs`). The page's entry says whether it belongs to a region at
//!    all ([`Pte::mapped`]) and with which rights; a wild or forbidden access goes back to the
//!    run loop as a signal. The VMM's own accesses to guest buffers take the same path.
//! 2. **A frame** comes from the page's set; when the set is full, a CLOCK sweep
//!    ([`State::reclaim`]) evicts a batch: a line whose accessed bit KVM set since the last
//!    sweep gets a second chance (the bit is cleared), any other is unmapped. All the frames one
//!    sweep passed are invalidated together, one write-protect round trip per run of frames
//!    ([`FramePool::invalidate`]). Only then are the dirty victims copied out (a stale writable
//!    translation can no longer write them) and written back, pipelined per owner.
//! 3. **The line** comes from its owner if it was ever flushed there (a dirty victim of the same
//!    owner carries the fetch with its write-back), else it is zeroes (p-local, §4.4.2).
//! 4. **The entry** is made present, with D preset for a write miss, and for a read miss of a
//!    line written in its recent residencies (its write credit, [`crate::memory::paging::CREDIT`]:
//!    a digest of what it came in with lets a write-back find it unwritten and skip it). Later
//!    first writes set D in KVM without any exit; eviction reads D to know what to write back.
//! 5. **Prefetch**: a miss that continues a sequential stream ([`streams`]) installs the stream's
//!    next window too: one round trip for the lines that exist remotely, none at all for a
//!    window of p-local lines (first touches are zero-filled in runs). Prefetched lines are
//!    installed with A preset: then one KVM shadow fault fills up to 8 aligned neighbours
//!    (`ptprobe` P0a), instead of one fault per line.
//!
//! Race-free eviction: an entry is unmapped with one atomic exchange, which also reads the D bit
//! as KVM last set it. KVM sets D with a compare-exchange on the same word, so a write either
//! happened before (D is seen) or walks the tables after and finds the page absent (a #PF that
//! waits for the state lock). Translations KVM built before the exchange survive until the
//! frame is invalidated; the victim's contents are copied out only after that.

mod cleaner;
mod frames;
pub mod owners;
pub mod streams;

use lego_proto::sync::{CondvarExt, LockExt};
use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lego_proto::frame::MAX_RUN_PAGES;
use lego_proto::global::VRegionCopies;
use lego_proto::transport::{RegisteredBuf, Slot, Transport};
use lego_proto::vma::Prot;
use lego_proto::ProtoError;

use crate::errno::{Errno, SysResult};
use crate::error::VmmError;
use crate::kick::Kicker;
use crate::layout::{page_floor, PAGE_SIZE};
use crate::memory::paging::{PageTables, PoolExhausted, Pte, ACCESSED, DIRTY};
use crate::sysmem::SysMem;
use crate::memory::frame_pool::FramePool;
use crate::memory::shared::Window;
use frames::{Frames, Install, Prefetch, Swept};
use owners::{Owners, RemotePages};
use streams::Streams;

/// Replacement policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Evict lines in the order the hand meets them, used or not (LegoOS's FIFO).
    Fifo,
    /// CLOCK: a line the guest accessed since the hand last passed gets a second chance. The
    /// accessed bits are the ones KVM sets in the guest page tables, so every access counts,
    /// not only the ones that exit.
    Clock,
}

/// Size and organisation of an ExCache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExCacheConfig {
    /// Bytes of user memory that may be resident (a multiple of 4 KB).
    pub bytes: u64,
    /// Lines per set (0: one set of all lines, fully associative).
    pub ways: usize,
    /// Replacement policy.
    pub policy: Policy,
    /// Most lines prefetched after a miss that continues a sequential stream (0: no prefetch).
    /// The window is also bounded by a sixteenth of the lines, so prefetch cannot flood the
    /// cache.
    pub prefetch: u64,
    /// Run the background cleaner ([`cleaner`]), which writes dirty lines back before the
    /// CLOCK hand reaches them.
    pub cleaner: bool,
}

/// Default prefetch window, in lines.
pub const DEFAULT_PREFETCH: u64 = 32;

/// The smallest ExCache: an x86 instruction may need about six distinct pages resident at once.
pub const MIN_LINES: u64 = 16;

impl ExCacheConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), VmmError> {
        if !self.bytes.is_multiple_of(PAGE_SIZE) || self.bytes / PAGE_SIZE < MIN_LINES {
            return Err(VmmError::Config(format!(
                "ExCache size {} must be a multiple of 4 KiB and at least {} KiB",
                self.bytes,
                MIN_LINES * 4
            )));
        }
        if self.ways != 0 && self.ways < 8 {
            return Err(VmmError::Config(format!("ExCache ways {} must be 0 (one set) or at least 8", self.ways)));
        }
        if self.prefetch > MAX_RUN_PAGES {
            return Err(VmmError::Config(format!("prefetch window {} must be at most {MAX_RUN_PAGES} lines", self.prefetch)));
        }
        Ok(())
    }

    /// The largest prefetch window this cache uses: `prefetch`, at most a sixteenth of the
    /// lines of a set (0 when that is under 2 lines).
    pub fn prefetch_window(&self) -> u64 {
        let lines = self.bytes / PAGE_SIZE;
        let set = if self.ways == 0 { lines } else { (self.ways as u64).min(lines) };
        let w = self.prefetch.min(set / 16);
        if w < 2 {
            0
        } else {
            w
        }
    }
}

/// What the ExCache did, for `--stats`.
#[derive(Clone, Debug)]
pub struct CacheStats {
    /// Lines fetched from their owner on a miss (pages that exist remotely).
    pub misses: u64,
    /// Lines filled with zeroes locally on a miss (first touch of never-flushed memory).
    pub plocal_fills: u64,
    /// Lines evicted.
    pub evictions: u64,
    /// Dirty lines written back.
    pub dirty_flushes: u64,
    /// Write-backs that travelled with the fetch of the missing line.
    pub piggybacked: u64,
    /// Lines installed clean that the guest then wrote: first writes, taken by KVM through the
    /// D bit without an exit (counted when the line is evicted or cleaned).
    pub dirtied: u64,
    /// Lines installed dirty on a prediction, not a write: a read miss of a line with write
    /// credit ([`crate::memory::paging::CREDIT`]), or a line prefetched for a writing stream.
    /// Their first writes take no fault at all.
    pub predicted_dirty: u64,
    /// Lines installed dirty on a prediction and found unwritten when they were to be written
    /// back (their contents unchanged): not written back.
    pub predicted_unwritten: u64,
    /// Misses that waited for dirty victims to be written back before their line could come in.
    pub writeback_waits: u64,
    /// Dirty lines the background cleaner wrote back ahead of eviction.
    pub cleaned: u64,
    /// Lines given a second chance by CLOCK (accessed bit found set and cleared).
    pub second_chances: u64,
    /// Invalidations of frame runs (one per run, however many lines it covers).
    pub invalidations: u64,
    /// Time CLOCK sweeps took to evict their lines (sweep, invalidation, copy-out; not the
    /// write-back round trips), in nanoseconds.
    pub evict_ns: u64,
    /// Lines installed by prefetch (including zero-filled runs of first touches).
    pub prefetched: u64,
    /// Prefetched lines known to be used: their stream's next miss came past them while they
    /// were resident, or KVM set their accessed bit again after CLOCK first re-armed it (they
    /// are installed with it set).
    pub prefetch_used: u64,
    /// Prefetched lines evicted without either (judged under CLOCK only).
    pub prefetch_unused: u64,
    /// Page bytes received from and sent to mem-servers.
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
    /// VMM-side service time of misses fetched from an owner, in nanoseconds.
    pub miss_ns: Histogram<u64>,
    /// Lines resident at the end.
    pub resident: u64,
    /// Capacity in lines.
    pub lines: u64,
    /// Distinct mem-servers owning vRegions of the process.
    pub owners: u64,
    /// Lines written to secondaries as well (replication, LegoOS §4.7).
    pub replicated: u64,
    /// Mem-servers found failed while the process ran, whose vRegions their secondaries took
    /// over (fail-overs).
    pub failovers: u64,
    /// The longest fail-over: from the start of the request that found the server failed to
    /// the end of the same request served by the secondary, in nanoseconds.
    pub failover_ns: u64,
    /// Secondaries whose backup log was full (their storage server slower than the
    /// write-backs, or unreachable): replication to them stopped, as a failed one's does.
    pub suspended: u64,
    /// Write-backs a primary refused for a full backup log (a promoted secondary with no
    /// other copy), retried after a pause.
    pub log_full_waits: u64,
    /// vRegions the home gave a new copy after a failure (two copies again).
    pub rebuilt: u64,
    /// The longest rebuild, from the report of the lost copies to the home's answer, with the
    /// ExCache held (no miss served), in nanoseconds.
    pub rebuild_ns: u64,
}

impl Default for CacheStats {
    fn default() -> Self {
        CacheStats {
            misses: 0,
            plocal_fills: 0,
            evictions: 0,
            dirty_flushes: 0,
            piggybacked: 0,
            dirtied: 0,
            predicted_dirty: 0,
            predicted_unwritten: 0,
            writeback_waits: 0,
            cleaned: 0,
            second_chances: 0,
            invalidations: 0,
            evict_ns: 0,
            prefetched: 0,
            prefetch_used: 0,
            prefetch_unused: 0,
            bytes_in: 0,
            bytes_out: 0,
            miss_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
            resident: 0,
            lines: 0,
            owners: 0,
            replicated: 0,
            failovers: 0,
            failover_ns: 0,
            suspended: 0,
            log_full_waits: 0,
            rebuilt: 0,
            rebuild_ns: 0,
        }
    }
}

/// Why the memory path failed. Any of these ends the process (status 125): its memory can no
/// longer be trusted.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// An owner did not do what was asked.
    #[error("{what} page {page:#x} at mem-server {server}: {source}")]
    Owner {
        /// What was asked.
        what: &'static str,
        /// The page.
        page: u64,
        /// The owner's address.
        server: String,
        /// What went wrong.
        #[source]
        source: ProtoError,
    },
    /// A page that exists remotely lies in a vRegion without an owner.
    #[error("page {0:#x} exists remotely but its vRegion has no owner")]
    NoOwner(u64),
    /// A resident line's page-table entry is gone: the bookkeeping is wrong.
    #[error("line {0:#x} is resident but has no page-table entry: a VMM bug")]
    LostEntry(u64),
    /// Every line of a set was needed at once.
    #[error("no ExCache line of page {0:#x}'s set can be evicted")]
    NoVictim(u64),
    /// Frames could not be invalidated.
    #[error("invalidating ExCache frames: {0}")]
    Invalidate(std::io::Error),
    /// The page tables need more pages than the pool has.
    #[error("page tables: {0}")]
    PageTables(#[from] PoolExhausted),
    /// The home named an owner nobody knows.
    #[error(transparent)]
    UnknownOwner(#[from] owners::UnknownOwner),
    /// A mem-server failed and held the only copy of a vRegion.
    #[error(transparent)]
    NoCopyLeft(#[from] owners::NoCopyLeft),
}

impl From<owners::SetError> for MemError {
    fn from(e: owners::SetError) -> MemError {
        match e {
            owners::SetError::Unknown(e) => MemError::UnknownOwner(e),
            owners::SetError::NoCopyLeft(e) => MemError::NoCopyLeft(e),
        }
    }
}

/// Whether `e` says the server is gone (the connection failed or it fell silent), as opposed
/// to a refusal of the request.
fn server_lost(e: &ProtoError) -> bool {
    matches!(e, ProtoError::Io { .. } | ProtoError::Closed { .. } | ProtoError::Timeout { .. })
}

/// Whether `e` says the server's backup log is full ([`lego_proto::frame::Status::LogFull`]).
fn log_full(e: &ProtoError) -> bool {
    matches!(e, ProtoError::Remote { status: lego_proto::frame::Status::LogFull, .. })
}

/// How long write-backs refused by a primary for a full backup log are retried before the
/// memory counts as failed.
const LOG_FULL_PATIENCE: Duration = Duration::from_secs(10);
/// The pause between two of those retries.
const LOG_FULL_PAUSE: Duration = Duration::from_millis(20);

/// An access that missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// A write.
    pub write: bool,
    /// An instruction fetch.
    pub exec: bool,
    /// Made by the VMM on the program's behalf (ignores the page's rights; the caller checked
    /// them, or is loading an image).
    pub by_vmm: bool,
}

impl Access {
    /// A VMM access.
    pub fn vmm(write: bool) -> Access {
        Access { write, exec: false, by_vmm: true }
    }
}

/// What a miss came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The line was installed.
    Installed,
    /// The line was already resident (another vCPU installed it meanwhile).
    Resident,
    /// Nothing is mapped at the address: `SIGSEGV` (`SEGV_MAPERR`).
    Unmapped,
    /// The page is mapped without the right the access needs: `SIGSEGV` (`SEGV_ACCERR`).
    Denied,
}

/// The cache's state, under one lock: page tables, frames, where pages live, and the links to
/// their owners. A miss holds it from the look-up to the install; a memory call holds it
/// across its round trip to the home ([`ExCache::hold`]).
pub(crate) struct State {
    pt: PageTables,
    frames: Frames,
    policy: Policy,
    remote: RemotePages,
    pub(crate) owners: Owners,
    /// [`INSTALL`], then a prefetch window, then the write-back staging slots.
    buf: RegisteredBuf,
    stats: CacheStats,
    streams: Streams,
    proc: u64,
    /// Pages whose lines a vCPU is fetching with the lock let go ([`Shared::fault`]): each has
    /// a frame taken for it and a non-present entry. Nobody else installs, evicts or fetches
    /// them meanwhile; [`Shared::settled`] is notified when one arrives.
    fetching: HashSet<u64>,
    /// Resident pages the cleaner is writing back with the lock let go: sweeps pass them by.
    cleaning: HashSet<u64>,
    /// Since when a primary (a promoted secondary) has refused write-backs for a full backup
    /// log, while it does.
    log_full_since: Option<Instant>,
}

/// A miss whose fetch runs with the state lock let go: the page, the frame taken for it, and
/// the connection and buffer only this fetch uses.
struct Ticket {
    proc: u64,
    page: u64,
    frame: u64,
    owner: usize,
    write: bool,
    link: Box<dyn Transport>,
    buf: RegisteredBuf,
    started: Instant,
}

impl Ticket {
    /// The round trip: the line into the ticket's own buffer.
    fn fetch(&mut self) -> Result<(), ProtoError> {
        self.link.read_page(self.proc, self.page, &mut self.buf, Slot(0))
    }
}

/// The step a miss got to under the lock.
enum Step {
    /// Served (or found to need no service).
    Done(Fault),
    /// Another vCPU is fetching the line: wait for it to arrive.
    Wait,
    /// Fetch it with the lock let go, then [`State::arrived`].
    Fetch(Ticket),
}

const INSTALL: Slot = Slot(0);
const WINDOW: Slot = Slot(1);
const WRITE_BACK: Slot = Slot(WINDOW.0 + MAX_RUN_PAGES as usize);

/// A dirty line copied out for write-back (to its owners as they are when it is written).
#[derive(Clone, Copy)]
struct Staged {
    page: u64,
    slot: Slot,
}

/// Everything the vCPU threads and the memory manager share.
struct Shared {
    state: Mutex<State>,
    /// Notified when a line fetched, or cleaned, with the lock let go is done (see
    /// `State::fetching` and `State::cleaning`).
    settled: Condvar,
    /// Wakes the cleaner: a sweep moved a hand.
    work: Condvar,
    /// Tells the cleaner to end.
    stop: AtomicBool,
    pool: FramePool,
    /// The run's shared-memory window, which entries of shared mappings point into.
    window: Arc<Window>,
    sys: Arc<SysMem>,
    failure: Mutex<Option<String>>,
    failed: AtomicBool,
    /// The vCPU threads, kicked out of KVM_RUN when memory fails.
    kicker: Arc<Kicker>,
    /// The owners' table of copies, read without `state`'s lock.
    copies: Arc<owners::CopyTable>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock_unpoisoned()
    }

    /// The page at guest-physical `gpa`: a frame of the pool, or a page of the shared window.
    ///
    /// # Safety
    /// The caller holds the state lock, and a present entry maps `gpa` (so the frame is a
    /// resident line, or the shared page's view is alive) for as long as it uses the slice.
    #[allow(clippy::mut_from_ref)]
    unsafe fn page(&self, gpa: u64) -> &mut [u8] {
        if Window::contains(gpa) {
            // SAFETY: the caller's promise: the process maps the view, and only a change of
            // its page tables, under the state lock, lets it go.
            unsafe { self.window.page(gpa) }
        } else {
            // SAFETY: the caller's promise: a resident line stays so while the lock is held.
            unsafe { self.pool.frame(gpa) }
        }
    }

    /// Drops the translations of the shared pages at `gpas` (in runs of contiguous pages).
    fn zap(&self, gpas: Vec<u64>) -> Result<(), MemError> {
        for (first, last) in runs(gpas.into_iter().map(|g| g / PAGE_SIZE).collect(), 1) {
            self.window.zap(first * PAGE_SIZE, (last - first + 1) * PAGE_SIZE).map_err(MemError::Invalidate)?;
        }
        Ok(())
    }

    /// Records the first failure and kicks the vCPUs so their run loops see it.
    fn fail(&self, msg: String) {
        let mut f = self.failure.lock_unpoisoned();
        if f.is_none() {
            // The run loop reports it as the reason the process ended; this is for traces.
            tracing::info!("{msg}");
            *f = Some(msg);
        }
        self.failed.store(true, Ordering::Release);
        self.kicker.kick_all();
    }

    /// Serves a guest's miss, recording a failure (see [`Shared::serve`]).
    fn fault(&self, va: u64, access: Access) -> Result<Fault, MemError> {
        self.serve(self.state(), va, access, true).1
    }

    /// Serves a miss at `va`, recording a failure. A miss on a line that exists at its owner
    /// and finds a free frame fetches it into a [`Ticket`]; with `let_go` (a guest's miss), the
    /// state lock is let go for that round trip, so the misses of several vCPUs overlap. A
    /// miss that has to evict keeps the lock: its fetch rides on the write-back. The VMM's own
    /// accesses keep it throughout, as they may span several lines.
    fn serve<'a>(&'a self, mut st: MutexGuard<'a, State>, va: u64, access: Access, let_go: bool) -> (MutexGuard<'a, State>, Result<Fault, MemError>) {
        let begun = Instant::now();
        let mut failed_over = false;
        loop {
            let r = match st.fault(self, va, access) {
                Ok(Step::Done(f)) => Ok(f),
                Ok(Step::Wait) => {
                    st = self.wait(st);
                    continue;
                }
                // Every frame the sweep could take is held by fetches under way.
                Err(MemError::NoVictim(_)) if !st.fetching.is_empty() => {
                    st = self.wait(st);
                    continue;
                }
                Ok(Step::Fetch(mut t)) => {
                    let got = if let_go {
                        drop(st);
                        let got = t.fetch();
                        st = self.state();
                        got
                    } else {
                        t.fetch()
                    };
                    let r = st.arrived(self, t, got);
                    self.settled.notify_all();
                    r
                }
                Err(e) => Err(e),
            };
            let r = match r {
                Err(e) => match st.recover(&e) {
                    Ok(true) => {
                        failed_over = true;
                        continue;
                    }
                    Ok(false) => Err(e),
                    Err(lost) => Err(lost),
                },
                Ok(f) => Ok(f),
            };
            if let Err(e) = &r {
                self.fail(e.to_string());
            } else if failed_over {
                st.failed_over(begun);
            }
            return (st, r);
        }
    }

    /// Waits for a line fetched with the lock let go to arrive.
    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.settled.wait_unpoisoned(st)
    }

    /// The state, once no fetch is under way with the lock let go (for changes to the address
    /// space, which must not race one).
    fn quiet(&self) -> MutexGuard<'_, State> {
        let mut st = self.state();
        while !st.fetching.is_empty() || !st.cleaning.is_empty() {
            st = self.wait(st);
        }
        st
    }
}

/// A process's ExCache.
pub struct ExCache {
    shared: Arc<Shared>,
    cleaner: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ExCache {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            // Under the lock, so the cleaner is either waiting (and woken) or sees the flag.
            let _st = self.shared.state();
            self.shared.work.notify_all();
        }
        if let Some(t) = self.cleaner.take() {
            let _ = t.join();
        }
    }
}

/// The handle a vCPU thread serves its page faults with.
#[derive(Clone)]
pub struct Pager(Arc<Shared>);

impl Pager {
    /// Serves a guest page fault at `va` (see [`State::fault`]). An error is the failure that
    /// ends the process's memory (already recorded).
    pub fn fault(&self, va: u64, access: Access) -> Result<Fault, MemError> {
        self.0.fault(va, access)
    }

    /// The VMM-private memory (to read the exception frame).
    pub fn sys(&self) -> &SysMem {
        &self.0.sys
    }
}

impl ExCache {
    /// A cache of `config.bytes` of frames for process `proc`, with page tables in `sys` and
    /// the pages of vRegions found through `owners`.
    /// Shared mappings point into `window`.
    pub fn start(config: ExCacheConfig, owners: Owners, proc: u64, sys: Arc<SysMem>, window: Arc<Window>) -> Result<ExCache, VmmError> {
        config.validate()?;
        let pool = FramePool::new(config.bytes)?;
        let pt = PageTables::new(&sys).map_err(|e| VmmError::Memory { size: sys.size(), reason: e.to_string() })?;
        let frames = Frames::new((config.bytes / PAGE_SIZE) as usize, config.ways);
        let stats = CacheStats { lines: frames.capacity() as u64, ..CacheStats::default() };
        let copies = owners.copy_table();
        let state = State {
            pt,
            frames,
            policy: config.policy,
            remote: RemotePages::default(),
            owners,
            buf: RegisteredBuf::new(WRITE_BACK.0 + MAX_RUN_PAGES as usize),
            stats,
            streams: Streams::new(config.prefetch_window()),
            proc,
            fetching: HashSet::new(),
            cleaning: HashSet::new(),
            log_full_since: None,
        };
        let shared = Shared {
            state: Mutex::new(state),
            settled: Condvar::new(),
            work: Condvar::new(),
            stop: AtomicBool::new(false),
            pool,
            window,
            sys,
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            kicker: Arc::new(Kicker::default()),
            copies,
        };
        let shared = Arc::new(shared);
        let cleaner = if config.cleaner {
            Some(cleaner::spawn(shared.clone()).map_err(|e| VmmError::Memory { size: config.bytes, reason: format!("starting the ExCache cleaner: {e}") })?)
        } else {
            None
        };
        Ok(ExCache { shared, cleaner })
    }

    /// The frames (for the memslot).
    pub fn pool(&self) -> &FramePool {
        &self.shared.pool
    }

    /// Guest-physical address of the page-table root (CR3).
    pub fn cr3(&self) -> u64 {
        self.shared.state().pt.root()
    }

    /// The handle vCPU threads serve page faults with.
    pub fn pager(&self) -> Pager {
        Pager(self.shared.clone())
    }

    /// The registry of the process's vCPU threads, all kicked when memory fails (and when the
    /// process ends for any other reason).
    pub fn kicker(&self) -> Arc<Kicker> {
        self.shared.kicker.clone()
    }

    /// What is raised each time the process loses a copy of a vRegion (a fail-over).
    pub fn copy_lost(&self) -> Arc<owners::CopyLost> {
        self.shared.state().owners.copy_lost()
    }

    /// The failure that ended the process's memory, if any: no guest data may be trusted after
    /// one.
    pub fn failure(&self) -> Option<String> {
        if !self.shared.failed.load(Ordering::Acquire) {
            return None;
        }
        self.shared.failure.lock_unpoisoned().clone()
    }

    /// Records a failure found outside the cache (e.g. the home stopped answering).
    pub fn fail(&self, msg: String) {
        self.shared.fail(msg);
    }

    /// Holds the ExCache still: no miss is served and no line is evicted until the returned
    /// guard is dropped. The memory manager holds it across a memory call to the home and the
    /// application of its effects, so that no dirty line of a range the owners unmap (or map
    /// anew) is written back between the two.
    pub fn hold(&self) -> Held<'_> {
        Held { shared: &self.shared, st: self.shared.quiet() }
    }

    /// Copies between guest memory at `[addr, addr + len)` and the VMM: `f` gets each piece
    /// of guest memory (resident for the call, missed in like a guest access if it was not)
    /// and its offset in the whole. With `write`, the lines are marked dirty. The range must be
    /// mapped (rights are the caller's to check): `EFAULT` otherwise; `EIO` if memory failed.
    pub fn access(&self, addr: u64, len: u64, write: bool, mut f: impl FnMut(&mut [u8], usize)) -> SysResult<()> {
        let end = addr.checked_add(len).ok_or(Errno::EFAULT)?;
        let mut st = self.shared.state();
        let mut at = addr;
        while at < end {
            let page = page_floor(at);
            let n = (page + PAGE_SIZE).min(end) - at;
            let frame;
            (st, frame) = self.resident_frame(st, page, write);
            let frame = frame?;
            // SAFETY: the page is mapped (a resident line, or shared) and stays so while we hold
            // the state lock, which serialises every VMM access to frames.
            let bytes = unsafe { self.shared.page(frame) };
            let off = (at - page) as usize;
            f(&mut bytes[off..off + n as usize], (at - addr) as usize);
            at += n;
        }
        Ok(())
    }

    /// Runs `f` on the aligned 32-bit word at `addr` (a futex word), resident while `f` runs.
    /// `f` must not block. With `write`, the line is marked dirty.
    pub fn with_word<R>(&self, addr: u64, write: bool, f: impl FnOnce(&AtomicU32) -> R) -> SysResult<R> {
        if !addr.is_multiple_of(4) {
            return Err(Errno::EINVAL);
        }
        let page = page_floor(addr);
        let (_st, frame) = self.resident_frame(self.shared.state(), page, write);
        let frame = frame?;
        // SAFETY: as in `access`; the word is aligned and inside the frame, and the guest shares
        // it, which is why it is only accessed atomically.
        let word = unsafe { &*self.shared.page(frame)[(addr - page) as usize..].as_ptr().cast::<AtomicU32>() };
        Ok(f(word))
    }

    /// Makes `page` resident for a VMM access and returns its frame, with the state still held
    /// (the guard comes back either way: a miss may have waited for another vCPU's fetch).
    fn resident_frame<'a>(&'a self, st: MutexGuard<'a, State>, page: u64, write: bool) -> (MutexGuard<'a, State>, SysResult<u64>) {
        let (st, r) = self.shared.serve(st, page, Access::vmm(write), false);
        let frame = match r {
            Ok(Fault::Installed | Fault::Resident) => st.pt.entry(&self.shared.sys, page).ok_or(Errno::EFAULT).map(|word| {
                let bits = if write { ACCESSED | DIRTY } else { ACCESSED };
                Pte(word.fetch_or(bits, Ordering::AcqRel)).frame()
            }),
            Ok(Fault::Unmapped | Fault::Denied) => Err(Errno::EFAULT),
            Err(_) => Err(Errno::EIO),
        };
        (st, frame)
    }

    /// Address of the mem-server owning the vRegion of `page`.
    pub fn owner_name(&self, page: u64) -> Option<String> {
        let st = self.shared.state();
        st.owners.owner_of(page).map(|i| st.owners.name(i).to_string())
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> CacheStats {
        self.probe().stats()
    }

    /// A handle that reads the statistics from another thread while the process runs.
    pub fn probe(&self) -> StatsProbe {
        StatsProbe(self.shared.clone())
    }
}

/// Reads a running ExCache's statistics (for live reports such as `lego top`).
#[derive(Clone)]
pub struct StatsProbe(Arc<Shared>);

impl StatsProbe {
    /// A snapshot of the statistics.
    pub fn stats(&self) -> CacheStats {
        let st = self.0.state();
        CacheStats { resident: st.frames.resident() as u64, owners: st.owners.owners_in_use() as u64, ..st.stats.clone() }
    }

    /// Where each vRegion's copies are and their state. It does not wait for the ExCache, which
    /// a rebuild holds: read while one runs, it says so.
    pub fn vregions(&self) -> Vec<VRegionCopies> {
        self.0.copies.snapshot()
    }
}

/// The ExCache held still (see [`ExCache::hold`]): the memory manager applies the home's
/// answers through it.
pub struct Held<'a> {
    shared: &'a Shared,
    st: MutexGuard<'a, State>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // The owners the home named while the ExCache was held, published once.
        self.st.owners.publish_if_stale();
    }
}

impl Held<'_> {
    /// Records the owner of vRegion `index` and its secondary. A change of primary is a
    /// promotion the home made ([`owners::Owners::set`]): counted as a fail-over.
    pub fn set_owner(&mut self, index: u64, owner: &str, secondary: Option<&str>) -> Result<(), MemError> {
        if self.st.owners.set(index, owner, secondary)?.is_some() {
            self.st.stats.failovers += 1;
        }
        Ok(())
    }

    /// The copies lost (vRegion, failed mem-server) that the home has not been told of yet.
    pub fn take_unreported(&mut self) -> Vec<(u64, String)> {
        self.st.owners.take_unreported()
    }

    /// Marks vRegion `index` as being rebuilt by the home (`on`), or no longer.
    pub fn rebuilding(&mut self, index: u64, on: bool) {
        self.st.owners.rebuilding(index, on);
    }

    /// Counts `vregions` given a new copy by a rebuild that took `took`.
    pub fn rebuilt(&mut self, vregions: u64, took: Duration) {
        self.st.stats.rebuilt += vregions;
        self.st.stats.rebuild_ns = self.st.stats.rebuild_ns.max(took.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    /// Maps `[start, end)` with `prot`: its pages become mapped, not resident; a page already
    /// resident keeps its line with the new rights.
    pub fn map(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), MemError> {
        self.set_rights(start, end, prot, true)
    }

    /// Gives the pages of `[start, end)` the rights `prot`. A resident line that loses a right
    /// has its frame invalidated, so the guest sees the change at once.
    pub fn protect(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), MemError> {
        self.set_rights(start, end, prot, false)
    }

    fn set_rights(&mut self, start: u64, end: u64, prot: Prot, create: bool) -> Result<(), MemError> {
        let sys = &self.shared.sys;
        let (mut lost, mut lost_shared) = (Vec::new(), Vec::new());
        self.st.pt.for_each(sys, start, end, create, |_, w| {
            let old = Pte(w.load(Ordering::Acquire));
            if !old.present() {
                if create || old.mapped() {
                    w.store(Pte::absent(prot).0, Ordering::Release);
                }
                return;
            }
            let new = old.with_rights(prot);
            Pte::update(w, |e| e.with_rights(prot));
            if (old.user() && !new.user()) || (old.writable() && !new.writable()) || (old.executable() && !new.executable()) {
                if old.is_shared() {
                    lost_shared.push(old.frame());
                } else {
                    lost.push(old.frame() / PAGE_SIZE);
                }
            }
        })?;
        self.shared.zap(lost_shared)?;
        self.st.invalidate_frames(self.shared, lost)
    }

    /// Maps `[start, end)` onto the shared pages from guest-physical `gpa` with `prot` (see
    /// [`crate::memory::shared`]). Lines of the ExCache there go unwritten: the range was
    /// just mapped anew.
    pub fn map_shared(&mut self, start: u64, end: u64, gpa: u64, prot: Prot) -> Result<(), MemError> {
        self.st.drop_lines(self.shared, start, end, false)?;
        self.unshare(start, end)?;
        self.st.pt.for_each(&self.shared.sys, start, end, true, |va, w| w.store(Pte::shared(gpa + (va - start), prot).0, Ordering::Release))?;
        Ok(())
    }

    /// Unmaps the shared pages of `[start, end)` (nothing is mapped there afterwards) and
    /// drops their translations.
    pub fn unshare(&mut self, start: u64, end: u64) -> Result<(), MemError> {
        let mut gone = Vec::new();
        self.st.pt.for_each(&self.shared.sys, start, end, false, |_, w| {
            let e = Pte(w.load(Ordering::Acquire));
            if e.is_shared() {
                w.store(0, Ordering::Release);
                gone.push(e.frame());
            }
        })?;
        self.shared.zap(gone)
    }

    /// Unmaps `[start, end)`: its lines go without being written back (their pages are gone at
    /// the owners, or are about to be), and nothing is mapped there any more.
    pub fn unmap(&mut self, start: u64, end: u64) -> Result<(), MemError> {
        self.st.drop_lines(self.shared, start, end, false)?;
        self.unshare(start, end)?;
        self.st.pt.for_each(&self.shared.sys, start, end, false, |_, w| w.store(0, Ordering::Release))?;
        self.st.remote.clear(start, end);
        Ok(())
    }

    /// Drops every line of `[start, end)` without writing anything back and forgets that they
    /// exist remotely (`MADV_DONTNEED`: they read back as zeroes); the pages stay mapped.
    pub fn discard(&mut self, start: u64, end: u64) -> Result<(), MemError> {
        self.st.drop_lines(self.shared, start, end, false)?;
        self.st.remote.clear(start, end);
        Ok(())
    }

    /// Writes back the dirty lines of `[start, end)` and drops all its lines, so that the owners
    /// hold the only copy (before mremap moves the pages there).
    pub fn write_back(&mut self, start: u64, end: u64) -> Result<(), MemError> {
        self.st.drop_lines(self.shared, start, end, true)
    }

    /// Writes back the dirty lines of `[start, end)`, which stay resident and clean (before a
    /// fork copies the address space at the owners).
    pub fn clean(&mut self, start: u64, end: u64) -> Result<(), MemError> {
        self.st.clean(self.shared, start, end)
    }

    /// Which pages exist at their owners (for a fork, whose copy has the same).
    pub fn remote_pages(&self) -> RemotePages {
        self.st.remote.clone()
    }

    /// Takes `remote` as the record of which pages exist at their owners (a fork's copy, before
    /// it runs).
    pub fn set_remote_pages(&mut self, remote: RemotePages) {
        self.st.remote = remote;
    }

    /// The owners' pages of `[from, from+len)` moved to `[to, to+len)`.
    pub fn relocate(&mut self, from: u64, to: u64, len: u64) {
        self.st.remote.relocate(from, to, len);
    }
}

/// Invalidates the frames numbered in `frames` in runs, as [`State::invalidate_frames`] says,
/// and returns how many runs it took.
fn invalidate_runs(pool: &FramePool, frames: Vec<u64>) -> std::io::Result<u64> {
    let runs = runs(frames, 64);
    for &(first, last) in &runs {
        pool.invalidate(first * PAGE_SIZE, (last - first + 1) * PAGE_SIZE)?;
    }
    Ok(runs.len() as u64)
}

/// The page numbers of `pages` as runs (first, last), in order: a run takes the next page
/// while it is at most `gap` pages past the run's last (1: only contiguous pages).
fn runs(mut pages: Vec<u64>, gap: u64) -> Vec<(u64, u64)> {
    pages.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for p in pages {
        match out.last_mut() {
            Some((_, last)) if p <= *last + gap => *last = p.max(*last),
            _ => out.push((p, p)),
        }
    }
    out
}

impl State {
    /// The data path, top to bottom: a miss at `va` (see the module documentation). A line
    /// that exists at its owner and found a free frame comes back as a [`Step::Fetch`]: the
    /// caller fetches it (with the lock let go or not) and hands it to [`State::arrived`].
    fn fault(&mut self, mem: &Shared, va: u64, access: Access) -> Result<Step, MemError> {
        let page = page_floor(va);
        let Some(word) = self.pt.entry(&mem.sys, page) else { return Ok(Step::Done(Fault::Unmapped)) };
        let pte = Pte(word.load(Ordering::Acquire));
        if !pte.mapped() {
            return Ok(Step::Done(Fault::Unmapped));
        }
        if !access.by_vmm && (!pte.user() || (access.write && !pte.writable()) || (access.exec && !pte.executable())) {
            return Ok(Step::Done(Fault::Denied));
        }
        if pte.present() {
            return Ok(Step::Done(Fault::Resident));
        }
        if self.fetching.contains(&page) {
            return Ok(Step::Wait);
        }
        let started = Instant::now();
        let source = if self.remote.contains(page) {
            Some(self.owners.owner_of(page).ok_or(MemError::NoOwner(page))?)
        } else {
            None
        };
        let (frame, fetched) = self.frame_for(mem, page, page..page + PAGE_SIZE, source.map(|o| (o, page)), Install::Miss { write: pte.starts_dirty(access.write, false) })?;
        let data = match source {
            Some(owner) if !fetched => {
                let link = match self.owners.take_link(owner) {
                    Ok(link) => link,
                    Err(source) => {
                        self.frames.release((frame / PAGE_SIZE) as u32);
                        return Err(MemError::Owner { what: "fetching", page, server: self.owners.name(owner).to_string(), source });
                    }
                };
                self.fetching.insert(page);
                let (proc, write, buf) = (self.proc, access.write, RegisteredBuf::new(1));
                return Ok(Step::Fetch(Ticket { proc, page, frame, owner, write, link, buf, started }));
            }
            Some(_) => Some(INSTALL),
            None => None,
        };
        fill(mem, frame, data.map(|slot| self.buf.page(slot.0)));
        self.install(mem, page, frame, access.write, data.is_some().then_some(started))?;
        Ok(Step::Done(Fault::Installed))
    }

    /// The line of `t` arrived (or its fetch failed, `got`): installs it, as [`State::fault`]
    /// would have.
    fn arrived(&mut self, mem: &Shared, t: Ticket, got: Result<(), ProtoError>) -> Result<Fault, MemError> {
        self.fetching.remove(&t.page);
        let Ticket { page, frame, owner, write, link, buf, started, .. } = t;
        self.owners.put_link(owner, link);
        if let Err(source) = got {
            self.frames.release((frame / PAGE_SIZE) as u32);
            return Err(MemError::Owner { what: "fetching", page, server: self.owners.name(owner).to_string(), source });
        }
        fill(mem, frame, Some(buf.page(0)));
        self.install(mem, page, frame, write, Some(started))?;
        Ok(Fault::Installed)
    }

    /// Makes the line of `page`, filled into `frame`, resident (D preset for a write) and counts
    /// it: a fetched line (`fetched`: when its miss started) or a p-local one. Then prefetches.
    fn install(&mut self, mem: &Shared, page: u64, frame: u64, write: bool, fetched: Option<Instant>) -> Result<(), MemError> {
        let word = self.pt.entry(&mem.sys, page).ok_or(MemError::LostEntry(page))?;
        let new = Pte(word.load(Ordering::Acquire)).installed(frame, true, write, false);
        self.predicted(mem, frame, new);
        word.store(new.0, Ordering::Release);
        match fetched {
            Some(started) => {
                self.stats.misses += 1;
                self.stats.bytes_in += PAGE_SIZE;
                let ns = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                let _ = self.stats.miss_ns.record(ns.max(1));
            }
            None => self.stats.plocal_fills += 1,
        }
        self.prefetch(mem, page, write)
    }

    /// For a line filled into `frame` that is about to get entry `new`: if its D is a
    /// prediction, counts it and records the digest of what it came in with.
    fn predicted(&mut self, mem: &Shared, frame: u64, new: Pte) {
        if new.predicted() {
            self.stats.predicted_dirty += 1;
            self.frames.set_digest((frame / PAGE_SIZE) as u32, digest(mem, frame));
        }
    }

    /// Whether the line `page` of frame `f`, whose entry was `old` before its D bit was taken
    /// and the frame invalidated, was installed dirty on a prediction and is unwritten since:
    /// its contents match the digest of what it came in with, which its owner (or a zero fill)
    /// gives again, so it needs no write-back. A predicted line found written renews its write
    /// credit.
    fn unwritten(&mut self, mem: &Shared, f: u32, page: u64, old: Pte) -> Result<bool, MemError> {
        if !old.predicted() {
            return Ok(false);
        }
        if digest(mem, u64::from(f) * PAGE_SIZE) == self.frames.digest(f) {
            self.stats.predicted_unwritten += 1;
            return Ok(true);
        }
        let word = self.pt.entry(&mem.sys, page).ok_or(MemError::LostEntry(page))?;
        Pte::update(word, Pte::renewed);
        Ok(false)
    }

    /// Runs `f` on the page-path connection to `owner` (opened on first use) and the page
    /// buffer; a failure names what was asked of which owner for which page.
    fn with_link<R>(
        &mut self,
        owner: usize,
        what: &'static str,
        page: u64,
        f: impl FnOnce(&mut dyn Transport, &mut RegisteredBuf) -> Result<R, ProtoError>,
    ) -> Result<R, MemError> {
        let r = self.owners.take_link(owner).and_then(|mut link| {
            let r = f(&mut *link, &mut self.buf);
            self.owners.put_link(owner, link);
            r
        });
        r.map_err(|source| MemError::Owner { what, page, server: self.owners.name(owner).to_string(), source })
    }

    /// A free frame of `page`'s set for it (taken as `install` says), made by a CLOCK sweep if
    /// the set is full (never evicting a line of `keep`). With `fetch = Some((owner, page))`, a
    /// dirty victim of the same owner carries that fetch into [`INSTALL`] with its write-back;
    /// the second value says whether one did. Returns the frame's guest-physical address.
    fn frame_for(
        &mut self,
        mem: &Shared,
        page: u64,
        keep: Range<u64>,
        fetch: Option<(usize, u64)>,
        install: Install,
    ) -> Result<(u64, bool), MemError> {
        let mut fetched = false;
        if self.frames.free_in_set_of(page) == 0 {
            let staged = self.reclaim(mem, self.frames.set_of(page), keep)?;
            if !staged.is_empty() {
                self.stats.writeback_waits += 1;
            }
            fetched = self.write_staged(&staged, fetch)?;
        }
        let f = self.frames.take(page, install).ok_or(MemError::NoVictim(page))?;
        Ok((u64::from(f) * PAGE_SIZE, fetched))
    }

    /// One CLOCK sweep of `set`: evicts a batch of lines (never one of `keep`), giving lines the
    /// guest accessed since the last sweep a second chance. Every frame the hand passed is
    /// invalidated, one run at a time (that re-arms the cleared accessed bits, and makes the
    /// evicted entries' absence seen). The dirty victims are then copied into staging slots, to
    /// be written back by [`State::write_staged`] before the lock is let go.
    fn reclaim(&mut self, mem: &Shared, set: usize, keep: Range<u64>) -> Result<Vec<Staged>, MemError> {
        let started = Instant::now();
        let len = self.frames.set_len(set) as u32;
        let want = self.frames.batch(set);
        let from = self.frames.hand(set);
        let mut victims = Vec::with_capacity(want);
        let mut passed = 0;
        while victims.len() < want && passed < 2 * len {
            let f = self.frames.advance(set);
            passed += 1;
            let Some(page) = self.frames.page(f) else { continue };
            if keep.contains(&page) || self.fetching.contains(&page) || self.cleaning.contains(&page) {
                continue;
            }
            let word = self.pt.entry(&mem.sys, page).ok_or(MemError::LostEntry(page))?;
            if self.policy == Policy::Clock && word.fetch_and(!ACCESSED, Ordering::AcqRel) & ACCESSED != 0 {
                self.stats.second_chances += 1;
                match self.frames.prefetch(f) {
                    Prefetch::Fresh => self.frames.set_prefetch(f, Prefetch::Armed),
                    Prefetch::Armed => {
                        self.frames.set_prefetch(f, Prefetch::No);
                        self.stats.prefetch_used += 1;
                    }
                    Prefetch::No => {}
                }
                continue;
            }
            let old = Pte::update(word, Pte::evicted);
            victims.push((f, page, old));
        }
        for (first, n) in self.frames.runs(Swept { set, from, len: passed.min(len) }) {
            self.invalidate(mem, u64::from(first), u64::from(n))?;
        }
        let mut staged = Vec::new();
        for (f, page, old) in victims {
            if let Some(s) = self.retire(mem, f, page, old, staged.len())? {
                staged.push(s);
            }
        }
        self.stats.evict_ns += started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        mem.work.notify_one();
        Ok(staged)
    }

    /// Frees frame `f`, whose line `page` was unmapped with entry `old` and invalidated; if it
    /// was dirty, copies it into staging slot `n` first and returns what to write back.
    fn retire(&mut self, mem: &Shared, f: u32, page: u64, old: Pte, n: usize) -> Result<Option<Staged>, MemError> {
        if self.frames.prefetch(f) == Prefetch::Armed {
            if old.accessed() {
                self.stats.prefetch_used += 1;
            } else {
                self.stats.prefetch_unused += 1;
            }
        }
        let staged = if old.dirty() && !self.unwritten(mem, f, page, old)? { Some(self.stage(mem, f, page, n)?) } else { None };
        self.frames.release(f);
        self.stats.evictions += 1;
        Ok(staged)
    }

    /// Copies the dirty line `page` of frame `f` into write-back staging slot `n`. The caller
    /// has taken D (or the whole entry) away and invalidated the frame first: a guest write
    /// after that either cannot happen (the line is unmapped) or sets D again, so none is lost.
    fn stage(&mut self, mem: &Shared, f: u32, page: u64, n: usize) -> Result<Staged, MemError> {
        self.copy_out(mem, f, page, n, None)
    }

    /// [`State::stage`] into slot `n` of `buf` (`None`: the write-back slots of the state's own
    /// buffer).
    fn copy_out(&mut self, mem: &Shared, f: u32, page: u64, n: usize, buf: Option<&mut RegisteredBuf>) -> Result<Staged, MemError> {
        self.owners.owner_of(page).ok_or(MemError::NoOwner(page))?;
        let (slot, buf) = match buf {
            Some(b) => (Slot(n), b),
            None => (Slot(WRITE_BACK.0 + n), &mut self.buf),
        };
        // SAFETY: we hold the state lock, which serialises VMM access to frames; the guest's
        // concurrent access is covered above.
        buf.page_mut(slot.0).copy_from_slice(unsafe { mem.pool.frame(u64::from(f) * PAGE_SIZE) });
        self.dirtied(f);
        Ok(Staged { page, slot })
    }

    /// Counts a first write to the line in frame `f`, if it was installed clean.
    fn dirtied(&mut self, f: u32) {
        if !self.frames.take_born_dirty(f) {
            self.stats.dirtied += 1;
        }
    }

    /// Invalidates `n` frames from frame number `first`.
    fn invalidate(&mut self, mem: &Shared, first: u64, n: u64) -> Result<(), MemError> {
        mem.pool.invalidate(first * PAGE_SIZE, n * PAGE_SIZE).map_err(MemError::Invalidate)?;
        self.stats.invalidations += 1;
        Ok(())
    }

    /// Invalidates the frames numbered in `frames`, in runs (gaps of up to 64 frames are
    /// covered rather than split: invalidating a frame that needs none costs only a refill).
    fn invalidate_frames(&mut self, mem: &Shared, frames: Vec<u64>) -> Result<(), MemError> {
        self.stats.invalidations += invalidate_runs(&mem.pool, frames).map_err(MemError::Invalidate)?;
        Ok(())
    }

    /// Writes back `staged` lines: one pipelined exchange per owner, and with replication the
    /// same to each secondary, in parallel; a line counts as flushed once all have it. With
    /// `fetch = Some((owner, page))`, the last line of that owner carries the fetch of `page`
    /// into [`INSTALL`]; returns whether it did. An owner found failed is failed over
    /// ([`State::recover`]) and its lines go to the promoted secondary.
    fn write_staged(&mut self, staged: &[Staged], fetch: Option<(usize, u64)>) -> Result<bool, MemError> {
        let begun = Instant::now();
        let mut failed_over = false;
        let mut fetched = false;
        let mut left = staged.to_vec();
        while let Some(first) = left.first() {
            let owner = self.owners.owner_of(first.page).ok_or(MemError::NoOwner(first.page))?;
            let (group, rest): (Vec<Staged>, Vec<Staged>) = left.iter().partition(|s| self.owners.owner_of(s.page) == Some(owner));
            let pages: Vec<(u64, Slot)> = group.iter().map(|s| (s.page, s.slot)).collect();
            let piggyback = fetch.filter(|&(o, _)| o == owner).map(|(_, want)| want);
            if let Err(e) = self.write_replicated(owner, &pages, piggyback) {
                if self.recover(&e)? {
                    failed_over = true;
                    continue;
                }
                return Err(e);
            }
            self.log_full_since = None;
            if piggyback.is_some() {
                fetched = true;
                self.stats.piggybacked += 1;
            }
            for (page, _) in pages {
                self.remote.insert(page);
                self.stats.dirty_flushes += 1;
                self.stats.bytes_out += PAGE_SIZE;
            }
            left = rest;
        }
        if failed_over {
            self.failed_over(begun);
        }
        Ok(fetched)
    }

    /// Writes `pages` (slots of the state's buffer), all of vRegions `owner` is the primary of,
    /// to `owner` and to their secondaries at once: the secondaries' writes are sent first,
    /// then the owner's exchange runs, then the secondaries' replies are collected. A secondary
    /// that fails is failed over (the vRegion keeps one copy); the owner's failure is returned.
    fn write_replicated(&mut self, owner: usize, pages: &[(u64, Slot)], piggyback: Option<u64>) -> Result<(), MemError> {
        let proc = self.proc;
        let first = pages[0].0;
        let mut seconds: Vec<(usize, Vec<(u64, Slot)>)> = Vec::new();
        for &(page, slot) in pages {
            let Some(s) = self.owners.secondary_of(page) else { continue };
            match seconds.iter_mut().find(|(o, _)| *o == s) {
                Some((_, v)) => v.push((page, slot)),
                None => seconds.push((s, vec![(page, slot)])),
            }
        }
        let mut sent = Vec::with_capacity(seconds.len());
        let mut lost = Vec::new();
        for (s, v) in seconds {
            let started = self.owners.take_link(s).and_then(|mut link| match link.start_writes(proc, &v, &self.buf) {
                Ok(pending) => Ok((link, pending)),
                Err(e) => Err(e),
            });
            match started {
                Ok((link, pending)) => sent.push((s, link, pending, v.len() as u64)),
                Err(e) => lost.push((s, e)),
            }
        }
        let done = self.with_link(owner, "writing back", first, |link, buf| primary_write(link, buf, proc, pages, piggyback));
        for (s, mut link, pending, n) in sent {
            match link.finish_writes(pending) {
                Ok(()) => {
                    self.stats.replicated += n;
                    self.owners.put_link(s, link);
                }
                Err(e) => lost.push((s, e)),
            }
        }
        for (s, e) in lost {
            if log_full(&e) {
                self.suspend(s);
            } else {
                tracing::warn!(server = %self.owners.name(s), error = %e, "a secondary failed a write-back");
                self.fence(s)?;
            }
        }
        done
    }

    /// After `e`: if it says a mem-server is gone and the process is replicated, fails that
    /// server over ([`Owners::fail_over`]) and says the request may be retried; an error if a
    /// vRegion had no other copy. A full backup log stops replication to a secondary
    /// ([`State::suspend`]); at a primary (a promoted secondary) the request is retried after
    /// a pause, for [`LOG_FULL_PATIENCE`] at most, while its log drains to storage.
    fn recover(&mut self, e: &MemError) -> Result<bool, MemError> {
        let MemError::Owner { server, source, page, .. } = e else { return Ok(false) };
        if !self.owners.replicated() {
            return Ok(false);
        }
        let Some(i) = self.owners.index_of(server) else { return Ok(false) };
        if log_full(source) {
            if self.owners.owner_of(*page) != Some(i) {
                self.suspend(i);
                return Ok(true);
            }
            let since = *self.log_full_since.get_or_insert_with(Instant::now);
            if since.elapsed() > LOG_FULL_PATIENCE {
                return Ok(false);
            }
            self.stats.log_full_waits += 1;
            std::thread::sleep(LOG_FULL_PAUSE);
            return Ok(true);
        }
        if !server_lost(source) {
            return Ok(false);
        }
        self.fence(i)?;
        Ok(true)
    }

    /// Fails server `server` over ([`Owners::fail_over`]), counting it the first time.
    fn fence(&mut self, server: usize) -> Result<(), owners::NoCopyLeft> {
        let fresh = !self.owners.is_dead(server);
        self.owners.fail_over(server)?;
        if fresh {
            self.stats.failovers += 1;
        }
        Ok(())
    }

    /// A secondary's backup log is full: replication to it stops ([`Owners::suspend`]: the
    /// vRegions it is the secondary of keep one copy, and the home is told, which gives them a
    /// new copy elsewhere if it can), counted as a suspension (LegoOS skips replicating then; a
    /// primary failure before a new copy ends the process, naming both servers).
    fn suspend(&mut self, server: usize) {
        if !self.owners.suspend(server) {
            tracing::warn!(server = %self.owners.name(server), "a secondary's backup log is full (its storage server is slower than the write-backs, or unreachable): replication to it is suspended");
            self.stats.suspended += 1;
        }
    }

    /// A request that began at `begun` was served after a fail-over.
    fn failed_over(&mut self, begun: Instant) {
        let ns = begun.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        tracing::info!(ms = ns / 1_000_000, "served after a fail-over");
        self.stats.failover_ns = self.stats.failover_ns.max(ns);
    }

    /// The resident lines of `[start, end)`, as (frame number, page).
    fn lines_in(&mut self, mem: &Shared, start: u64, end: u64) -> Result<Vec<(u32, u64)>, MemError> {
        let pages = (end.saturating_sub(start)) / PAGE_SIZE;
        if pages > self.frames.capacity() as u64 {
            return Ok(self.frames.in_range(start, end));
        }
        let mut found = Vec::new();
        self.pt.for_each(&mem.sys, start, end, false, |va, w| {
            let e = Pte(w.load(Ordering::Acquire));
            if e.line() {
                found.push(((e.frame() / PAGE_SIZE) as u32, va));
            }
        })?;
        Ok(found)
    }

    /// Unmaps every line of `[start, end)` (entries stay mapped, not resident), invalidates
    /// their frames and frees them; with `write_back`, dirty lines go to their owners first.
    fn drop_lines(&mut self, mem: &Shared, start: u64, end: u64, write_back: bool) -> Result<(), MemError> {
        let lines = self.lines_in(mem, start, end)?;
        let mut gone = Vec::with_capacity(lines.len());
        for (f, page) in lines {
            let word = self.pt.entry(&mem.sys, page).ok_or(MemError::LostEntry(page))?;
            let old = Pte::update(word, Pte::evicted);
            gone.push((f, page, old));
        }
        self.invalidate_frames(mem, gone.iter().map(|g| u64::from(g.0)).collect())?;
        for batch in gone.chunks(MAX_RUN_PAGES as usize) {
            let mut staged = Vec::new();
            for &(f, page, old) in batch {
                let old = if write_back { old } else { Pte(old.0 & !DIRTY) };
                if let Some(s) = self.retire(mem, f, page, old, staged.len())? {
                    staged.push(s);
                }
            }
            self.write_staged(&staged, None)?;
        }
        Ok(())
    }

    /// Writes back the dirty lines of `[start, end)` and leaves them resident and clean. D is
    /// cleared first and the frames invalidated, then the lines are copied out: a write after
    /// the invalidation sets D again (the line stays dirty), and one before it is in the copy.
    fn clean(&mut self, mem: &Shared, start: u64, end: u64) -> Result<(), MemError> {
        let mut dirty = Vec::new();
        for (f, page) in self.lines_in(mem, start, end)? {
            let word = self.pt.entry(&mem.sys, page).ok_or(MemError::LostEntry(page))?;
            let old = Pte::update(word, Pte::cleaned);
            if old.dirty() {
                dirty.push((f, page, old));
            }
        }
        self.invalidate_frames(mem, dirty.iter().map(|d| u64::from(d.0)).collect())?;
        for batch in dirty.chunks(MAX_RUN_PAGES as usize) {
            let mut staged = Vec::new();
            for &(f, page, old) in batch {
                if self.unwritten(mem, f, page, old)? {
                    continue;
                }
                let s = self.stage(mem, f, page, staged.len())?;
                staged.push(s);
            }
            self.write_staged(&staged, None)?;
        }
        Ok(())
    }

    /// After the miss on `page` (a write if `write`): if it continues a sequential stream,
    /// installs the stream's next window of lines (see the module documentation). The window
    /// stops at the first page that is not mapped, at the end of the vRegion, or where the
    /// cache cannot take more without evicting the window itself; lines already resident are
    /// skipped.
    fn prefetch(&mut self, mem: &Shared, page: u64, write: bool) -> Result<(), MemError> {
        let Some(w) = self.streams.miss(page, write) else { return Ok(()) };
        // The program went past the previous window: its lines still resident were used.
        for at in (w.passed.0..w.passed.1).step_by(PAGE_SIZE as usize) {
            let e = self.pt.pte(&mem.sys, at);
            let f = (e.frame() / PAGE_SIZE) as u32;
            if e.line() && self.frames.prefetch(f) != Prefetch::No {
                self.frames.set_prefetch(f, Prefetch::No);
                self.stats.prefetch_used += 1;
            }
        }
        let mut end = (w.start + w.lines * PAGE_SIZE).min(self.owners.vregion_end(w.start));
        let mut any_remote = false;
        let mut at = w.start;
        while at < end {
            if !self.pt.pte(&mem.sys, at).mapped() {
                end = at;
                break;
            }
            any_remote |= self.remote.contains(at);
            at += PAGE_SIZE;
        }
        if any_remote {
            let Some(owner) = self.owners.owner_of(w.start) else {
                self.streams.cut(&w, w.start);
                return Ok(());
            };
            let proc = self.proc;
            let n = (end - w.start) / PAGE_SIZE;
            match self.with_link(owner, "prefetching from", w.start, |link, buf| link.read_pages(proc, w.start, n, buf, WINDOW)) {
                Ok(got) => {
                    self.stats.bytes_in += got * PAGE_SIZE;
                    end = w.start + got * PAGE_SIZE;
                }
                // The stream ran off the owner's mapped region: nothing to prefetch.
                Err(MemError::Owner { source: ProtoError::Remote { .. }, .. }) => end = w.start,
                Err(e) => return Err(e),
            }
        }
        let mut reached = w.start;
        while reached < end {
            let at = reached;
            let word = self.pt.entry(&mem.sys, at).ok_or(MemError::LostEntry(at))?;
            let pte = Pte(word.load(Ordering::Acquire));
            if !pte.present() && !self.fetching.contains(&at) {
                let frame = match self.frame_for(mem, at, page..end, None, Install::Prefetch { write: pte.starts_dirty(false, w.writes) }) {
                    Ok((frame, _)) => frame,
                    Err(MemError::NoVictim(_)) => break,
                    Err(e) => return Err(e),
                };
                // SAFETY: a frame just taken for this line; we hold the lock.
                let line = unsafe { mem.pool.frame(frame) };
                if self.remote.contains(at) {
                    line.copy_from_slice(self.buf.page(WINDOW.0 + ((at - w.start) / PAGE_SIZE) as usize));
                } else {
                    line.fill(0);
                }
                let new = pte.installed(frame, true, false, w.writes);
                self.predicted(mem, frame, new);
                word.store(new.0, Ordering::Release);
                self.stats.prefetched += 1;
            }
            reached += PAGE_SIZE;
        }
        if reached < w.start + w.lines * PAGE_SIZE {
            self.streams.cut(&w, reached);
        }
        Ok(())
    }
}

/// Writes `pages` (slots of `buf`) to the owner at the other end of `link`; with `piggyback`,
/// the last one carries the fetch of that page into [`INSTALL`].
fn primary_write(link: &mut dyn Transport, buf: &mut RegisteredBuf, proc: u64, pages: &[(u64, Slot)], piggyback: Option<u64>) -> Result<(), ProtoError> {
    match (piggyback, pages.split_last()) {
        (Some(want), Some(((last, slot), rest))) => {
            if !rest.is_empty() {
                link.write_pages(proc, rest, buf)?;
            }
            link.write_read_page(proc, *last, want, buf, *slot, INSTALL)
        }
        _ => link.write_pages(proc, pages, buf),
    }
}

/// Fills the line of `frame` with `data`, or with zeroes.
/// The digest of the line in `frame` (128-bit XXH3: a 4 KB line in a fraction of a
/// microsecond, and no practical chance that two contents share one).
fn digest(mem: &Shared, frame: u64) -> u128 {
    // SAFETY: the caller holds the state lock, which serialises VMM access to frames; the
    // guest may write the line meanwhile only where the caller's invalidation order covers it.
    xxhash_rust::xxh3::xxh3_128(unsafe { mem.pool.frame(frame) })
}

fn fill(mem: &Shared, frame: u64, data: Option<&[u8; PAGE_SIZE as usize]>) {
    // SAFETY: the frame was taken for this line: nothing maps it yet, and the caller holds the
    // state lock.
    let line = unsafe { mem.pool.frame(frame) };
    match data {
        Some(d) => line.copy_from_slice(d),
        None => line.fill(0),
    }
}

/// Connection settings for the mem-servers.
#[derive(Clone, Debug)]
pub struct MemoryConfig {
    /// Every mem-server (`host:port`); the process's home is chosen among them.
    pub servers: Vec<String>,
    /// Cluster id in the handshake.
    pub cluster: u64,
    /// Bytes per vRegion.
    pub vregion_size: u64,
    /// How long to wait for a mem-server before declaring it failed.
    pub timeout: Duration,
    /// Copies of each vRegion (1 or 2, see [`lego_proto::mm::ProcessSpec::replicas`]).
    pub replicas: u8,
    /// The vNode's storage server, where secondaries keep their backup files (see
    /// [`lego_proto::mm::ProcessSpec::backup_storage`]).
    pub backup_storage: Option<String>,
    /// The ExCache.
    pub excache: ExCacheConfig,
    /// Transport of the page path to the owners (`--transport`; control calls go over TCP).
    pub transport: lego_proto::rdma::select::Chosen,
}

/// Default vRegion size (LegoOS: 1 GB).
pub const DEFAULT_VREGION_SIZE: u64 = 1 << 30;

#[cfg(test)]
mod tests {
    //! The miss path against pages kept in memory: no KVM, no server. Accesses here are the
    //! VMM's (`ExCache::access`), which take the same `State::fault` as a guest #PF.

    use std::collections::HashMap;

    use lego_proto::transport::Transport;

    use super::*;
    use crate::memory::paging::MAX_CREDIT;

    /// An owner that keeps pages in a map, and counts what it was asked.
    #[derive(Clone, Default)]
    struct MemOwner {
        pages: Arc<Mutex<HashMap<u64, Vec<u8>>>>,
        reads: Arc<std::sync::atomic::AtomicU64>,
        writes: Arc<std::sync::atomic::AtomicU64>,
        /// How long a single-page read takes, in microseconds (a network round trip).
        delay_us: Arc<std::sync::atomic::AtomicU64>,
        /// Single-page reads under way now, and the most ever under way at once.
        reading: Arc<std::sync::atomic::AtomicU64>,
        most_reading: Arc<std::sync::atomic::AtomicU64>,
    }

    impl Transport for MemOwner {
        fn peer(&self) -> &str {
            "memory"
        }
        fn read_page(&mut self, _: u64, addr: u64, buf: &mut RegisteredBuf, slot: Slot) -> Result<(), ProtoError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let now = self.reading.fetch_add(1, Ordering::AcqRel) + 1;
            self.most_reading.fetch_max(now, Ordering::AcqRel);
            std::thread::sleep(Duration::from_micros(self.delay_us.load(Ordering::Relaxed)));
            self.reading.fetch_sub(1, Ordering::AcqRel);
            let pages = self.pages.lock().unwrap();
            let page = pages.get(&addr).ok_or_else(|| ProtoError::Malformed(format!("page {addr:#x} was never written")))?;
            buf.page_mut(slot.0).copy_from_slice(page);
            Ok(())
        }
        fn read_pages(&mut self, proc: u64, addr: u64, n: u64, buf: &mut RegisteredBuf, first: Slot) -> Result<u64, ProtoError> {
            for i in 0..n {
                let at = addr + i * PAGE_SIZE;
                if self.pages.lock().unwrap().contains_key(&at) {
                    self.read_page(proc, at, buf, Slot(first.0 + i as usize))?;
                }
            }
            Ok(n)
        }
        fn write_page(&mut self, _: u64, addr: u64, buf: &RegisteredBuf, slot: Slot) -> Result<(), ProtoError> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.pages.lock().unwrap().insert(addr, buf.page(slot.0).to_vec());
            Ok(())
        }
        fn write_pages(&mut self, proc: u64, pages: &[(u64, Slot)], buf: &RegisteredBuf) -> Result<(), ProtoError> {
            pages.iter().try_for_each(|&(addr, slot)| self.write_page(proc, addr, buf, slot))
        }
        fn write_read_page(&mut self, proc: u64, w: u64, r: u64, buf: &mut RegisteredBuf, src: Slot, dst: Slot) -> Result<(), ProtoError> {
            self.write_page(proc, w, buf, src)?;
            self.read_page(proc, r, buf, dst)
        }
        fn call(&mut self, _: u64, _: &[u8]) -> Result<Vec<u8>, ProtoError> {
            Err(ProtoError::Malformed("no control calls here".into()))
        }
    }

    const BASE: u64 = 0x40_0000;

    /// A cache of `lines` lines, `pages` pages mapped read-write from `BASE`, owned by `owner`.
    fn cache(lines: u64, pages: u64, owner: &MemOwner, policy: Policy, prefetch: u64) -> ExCache {
        cache_with(lines, pages, owner, policy, prefetch, true)
    }

    /// [`cache`], with or without the background cleaner.
    fn cache_with(lines: u64, pages: u64, owner: &MemOwner, policy: Policy, prefetch: u64, cleaner: bool) -> ExCache {
        let owner = owner.clone();
        let connect: owners::Connector = Arc::new(move |_: &str| Ok(Box::new(owner.clone()) as Box<dyn Transport>));
        let owners = Owners::new(vec!["memory".into()], 1 << 30, connect);
        let sys = Arc::new(SysMem::new(1 << 30).unwrap());
        let config = ExCacheConfig { bytes: lines * PAGE_SIZE, ways: 0, policy, prefetch, cleaner };
        let c = ExCache::start(config, owners, 1, sys, crate::memory::shared::Window::new().unwrap()).unwrap();
        let mut held = c.hold();
        held.set_owner(0, "memory", None).unwrap();
        held.map(BASE, BASE + pages * PAGE_SIZE, Prot::RW).unwrap();
        drop(held);
        c
    }

    fn write(c: &ExCache, page: u64, v: u64) {
        c.access(BASE + page * PAGE_SIZE + 8 * (page % 512), 8, true, |b, _| b.copy_from_slice(&v.to_le_bytes())).unwrap();
    }

    fn read(c: &ExCache, page: u64) -> u64 {
        let mut v = [0u8; 8];
        c.access(BASE + page * PAGE_SIZE + 8 * (page % 512), 8, false, |b, at| v[at..at + b.len()].copy_from_slice(b)).unwrap();
        u64::from_le_bytes(v)
    }

    #[test]
    fn every_write_comes_back_through_evictions() {
        for policy in [Policy::Clock, Policy::Fifo] {
            let owner = MemOwner::default();
            let c = cache(32, 256, &owner, policy, 0);
            for round in 1..=3u64 {
                for p in 0..256 {
                    write(&c, p, p * 1000 + round);
                }
            }
            for p in (0..256).rev() {
                assert_eq!(read(&c, p), p * 1000 + 3, "page {p} ({policy:?})");
            }
            let s = c.stats();
            assert!(s.resident <= 32 && s.lines == 32, "{s:?}");
            assert_eq!(s.plocal_fills, 256, "first touches are zero lines, no fetch: {s:?}");
            assert!(s.misses > 0 && s.dirty_flushes >= 224 && s.evictions >= 224, "{s:?}");
            assert!(owner.writes.load(Ordering::Relaxed) >= s.dirty_flushes);
        }
    }

    #[test]
    fn guest_misses_fetch_in_parallel_and_every_line_is_right() {
        let owner = MemOwner::default();
        let c = cache(32, 256, &owner, Policy::Clock, 0);
        for p in 0..256 {
            write(&c, p, p + 11);
        }
        owner.delay_us.store(300, Ordering::Relaxed);
        let pager = c.pager();
        let guest = Access { write: false, exec: false, by_vmm: false };
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let pager = pager.clone();
                // Overlapping orders: the threads often miss on the same line at once.
                s.spawn(move || {
                    for i in 0..256u64 {
                        let p = (i * 7 + t * 5) % 256;
                        let f = pager.fault(BASE + p * PAGE_SIZE, guest).unwrap();
                        assert!(matches!(f, Fault::Installed | Fault::Resident), "{f:?}");
                    }
                });
            }
        });
        assert!(owner.most_reading.load(Ordering::Relaxed) >= 2, "misses of different vCPUs never overlapped");
        owner.delay_us.store(0, Ordering::Relaxed);
        // Mixed with the VMM's own accesses and address-space changes, nothing is lost.
        std::thread::scope(|s| {
            let pager = pager.clone();
            s.spawn(move || {
                for p in 0..256u64 {
                    pager.fault(BASE + ((p * 3) % 256) * PAGE_SIZE, guest).unwrap();
                }
            });
            for p in 0..128 {
                write(&c, p, p + 12);
                c.hold().clean(BASE, BASE + 16 * PAGE_SIZE).unwrap();
            }
        });
        for p in 0..256 {
            assert_eq!(read(&c, p), p + if p < 128 { 12 } else { 11 }, "page {p}");
        }
        let s = c.stats();
        assert!(s.resident <= 32, "{s:?}");
        assert!(c.failure().is_none());
    }

    #[test]
    fn clean_lines_go_without_a_write_back() {
        let owner = MemOwner::default();
        // Without the cleaner, whose timing decides which lines a sweep passes by (those it is
        // writing back), so that every line misses once a round and the counts are exact.
        let c = cache_with(16, 64, &owner, Policy::Clock, 0, false);
        for p in 0..64 {
            write(&c, p, p + 7);
        }
        let flushed = c.stats().dirty_flushes;
        // Reading everything again and again evicts only lines fetched clean: nothing more to
        // write. (Every line was written, so its next MAX_CREDIT read misses install it dirty on
        // a prediction; each write-back finds it unwritten, and lets it go.)
        for _ in 0..MAX_CREDIT + 3 {
            for p in 0..64 {
                assert_eq!(read(&c, p), p + 7);
            }
        }
        let s = c.stats();
        // The lines still dirty from the writes went back once each, and never again.
        assert!(s.dirty_flushes <= flushed + 16, "{} flushes after {flushed}", s.dirty_flushes);
        let figures = format!("{} predicted, {} unwritten, {} misses, {} cleaned", s.predicted_dirty, s.predicted_unwritten, s.misses, s.cleaned);
        assert_eq!(s.predicted_dirty, 64 * MAX_CREDIT, "one credit used per residency: {figures}");
        assert_eq!(s.predicted_unwritten, s.predicted_dirty, "{figures}");
        assert!(s.misses >= 64 * (MAX_CREDIT + 3), "{} misses", s.misses);
    }

    #[test]
    fn predicted_lines_written_go_back_and_keep_their_credit() {
        let owner = MemOwner::default();
        let c = cache(16, 64, &owner, Policy::Clock, 0);
        // Each round reads every line (a miss: the cache holds a quarter of them) and then
        // writes it: from the second round on, its read miss installs it dirty on a
        // prediction, and its write takes no fault.
        for round in 0..8u64 {
            for p in 0..64 {
                assert_eq!(read(&c, p), if round == 0 { 0 } else { p * 100 + round }, "page {p}, round {round}");
                write(&c, p, p * 100 + round + 1);
            }
        }
        let s = c.stats();
        assert!(s.predicted_dirty >= 64 * 6, "{} predicted", s.predicted_dirty);
        assert_eq!(s.predicted_unwritten, 0, "every predicted line was written");
        for p in 0..64 {
            assert_eq!(read(&c, p), p * 100 + 8, "page {p}");
        }
        assert!(c.failure().is_none());
    }

    #[test]
    fn clean_writes_back_and_keeps_lines_resident() {
        let owner = MemOwner::default();
        let c = cache(64, 32, &owner, Policy::Clock, 0);
        for p in 0..32 {
            write(&c, p, p + 1);
        }
        assert_eq!(c.stats().dirty_flushes, 0);
        c.hold().clean(BASE, BASE + 32 * PAGE_SIZE).unwrap();
        let s = c.stats();
        assert_eq!((s.dirty_flushes, s.resident, s.evictions), (32, 32, 0), "{s:?}");
        assert_eq!(owner.pages.lock().unwrap().len(), 32);
        // Clean now: a second clean has nothing to send.
        c.hold().clean(BASE, BASE + 32 * PAGE_SIZE).unwrap();
        assert_eq!(c.stats().dirty_flushes, 32);
    }

    #[test]
    fn runs_join_pages_within_the_gap() {
        assert_eq!(runs(vec![9, 1, 2, 4, 70, 200], 1), vec![(1, 2), (4, 4), (9, 9), (70, 70), (200, 200)]);
        assert_eq!(runs(vec![9, 1, 2, 4, 70, 200], 64), vec![(1, 70), (200, 200)]);
        assert_eq!(runs(Vec::new(), 64), Vec::new());
    }

    #[test]
    fn unmapped_and_discarded_ranges() {
        let owner = MemOwner::default();
        let c = cache(16, 64, &owner, Policy::Clock, 0);
        for p in 0..64 {
            write(&c, p, 5);
        }
        // MADV_DONTNEED: zeroes again, nothing fetched.
        c.hold().discard(BASE, BASE + 64 * PAGE_SIZE).unwrap();
        let before = c.stats().misses;
        assert_eq!(read(&c, 3), 0);
        assert_eq!(c.stats().misses, before);
        // munmap: nothing there any more.
        c.hold().unmap(BASE, BASE + 64 * PAGE_SIZE).unwrap();
        assert_eq!(c.access(BASE, 8, false, |_, _| {}), Err(Errno::EFAULT));
        assert_eq!(c.stats().resident, 0);
    }

    #[test]
    fn a_sequential_stream_prefetches_and_a_failing_owner_fails_the_memory() {
        let owner = MemOwner::default();
        let c = cache(256, 1024, &owner, Policy::Clock, 32);
        for p in 0..1024 {
            write(&c, p, p);
        }
        let reads = owner.reads.load(Ordering::Relaxed);
        for p in 0..1024 {
            assert_eq!(read(&c, p), p);
        }
        let s = c.stats();
        assert!(s.prefetched > 500, "a front-to-back read should mostly be prefetched: {s:?}");
        assert!(owner.reads.load(Ordering::Relaxed) > reads);
        // An owner that lost a page: the access fails with EIO and the memory is failed.
        owner.pages.lock().unwrap().clear();
        let mut failed = false;
        for p in 0..1024 {
            if c.access(BASE + p * PAGE_SIZE, 8, false, |_, _| {}).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed && c.failure().is_some_and(|m| m.contains("never written")), "{:?}", c.failure());
    }
}
