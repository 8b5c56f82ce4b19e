//! The ExCache (LegoOS §4.3.2, §5.3): the only part of a process's memory resident in the
//! pComponent.
//!
//! The user-memory memslot is registered with userfaultfd; at most `lines` 4 KB pages of it are
//! present at any time. A dedicated handler thread ([`handler`]) serves every fault on it, from
//! the vCPU and from the VMM's own copies to and from guest buffers alike: it makes room in the
//! page's set, writing the victim back to its owner if it is dirty, then fetches the line from its
//! owner (or zero-fills a line that never left the pComponent) and installs it.
//!
//! Dirty state comes from userfaultfd write-protection: a line installed for a read is
//! write-protected, so its first write (by the guest through KVM, or by the VMM) arrives as a
//! write-protect fault that marks it dirty; a line installed for a write starts dirty. Eviction is
//! race-free because a clean line is write-protected, and a dirty one is write-protected before
//! its contents are copied out: a write after the check waits in the kernel until the handler
//! has flushed and unmapped the line, then faults it back in with the flushed data.
//!
//! A miss that continues a sequential stream of misses ([`streams`]) also prefetches the
//! stream's next lines: one round trip to the owner for the whole window, one `UFFDIO_COPY` per
//! contiguous run of lines not yet resident, each line placed in its set like any other.

mod handler;
pub mod owners;
pub mod sets;
pub mod streams;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hdrhistogram::Histogram;
use lego_proto::frame::MAX_RUN_PAGES;
use lego_proto::transport::{RegisteredBuf, Slot, Transport};
use lego_proto::ProtoError;
use vmm_sys_util::eventfd::EventFd;

use crate::error::VmmError;
use crate::kick::Kicker;
use crate::layout::PAGE_SIZE;
use crate::uffd::Uffd;
use owners::{Owners, RemotePages};
pub use sets::Policy;
use sets::Sets;
use streams::Streams;

/// Size and organisation of an ExCache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExCacheConfig {
    /// Bytes of user memory that may be resident (a multiple of 4 KB).
    pub bytes: u64,
    /// Lines per set.
    pub ways: usize,
    /// Replacement policy.
    pub policy: Policy,
    /// Most lines prefetched after a miss that continues a sequential stream (0: no prefetch).
    /// The window is also bounded by a sixteenth of the lines, so prefetch cannot flood the
    /// cache.
    pub prefetch: u64,
}

/// Default prefetch window, in lines.
pub const DEFAULT_PREFETCH: u64 = 32;

/// The smallest ExCache: an x86 instruction may need about six distinct pages resident at once.
pub const MIN_LINES: u64 = 16;

impl ExCacheConfig {
    /// Checks the configuration against a memory of `mem_size` bytes.
    pub fn validate(&self) -> Result<(), VmmError> {
        if !self.bytes.is_multiple_of(PAGE_SIZE) || self.bytes / PAGE_SIZE < MIN_LINES {
            return Err(VmmError::Config(format!(
                "ExCache size {} must be a multiple of 4 KiB and at least {} KiB",
                self.bytes,
                MIN_LINES * 4
            )));
        }
        if self.ways < 8 {
            return Err(VmmError::Config(format!("ExCache ways {} must be at least 8", self.ways)));
        }
        if self.prefetch > MAX_RUN_PAGES {
            return Err(VmmError::Config(format!("prefetch window {} must be at most {MAX_RUN_PAGES} lines", self.prefetch)));
        }
        Ok(())
    }

    /// The largest prefetch window this cache uses: `prefetch`, at most a sixteenth of the
    /// lines (0 when that is under 2 lines).
    pub fn prefetch_window(&self) -> u64 {
        let w = self.prefetch.min(self.bytes / PAGE_SIZE / 16);
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
    /// Lines fetched from their owner (misses on pages that exist remotely).
    pub misses: u64,
    /// Lines filled with zeroes locally (first touch of never-flushed memory).
    pub plocal_fills: u64,
    /// Lines evicted.
    pub evictions: u64,
    /// Dirty lines written back.
    pub dirty_flushes: u64,
    /// Write-backs that travelled with the fetch of the missing line.
    pub piggybacked: u64,
    /// First writes to clean lines (write-protect faults).
    pub dirtied: u64,
    /// Lines installed by prefetch.
    pub prefetched: u64,
    /// Prefetched lines known to be used: the program faulted on them (a first write, or an
    /// access while they were being installed), or its stream's next miss came after them while
    /// they were resident (it went past them).
    pub prefetch_used: u64,
    /// Prefetched lines evicted before either.
    pub prefetch_unused: u64,
    /// Page bytes received from and sent to mem-servers.
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
    /// Handler-side service time of remote misses, in nanoseconds.
    pub miss_ns: Histogram<u64>,
    /// Lines resident at the end.
    pub resident: u64,
    /// Capacity in lines.
    pub lines: u64,
    /// Distinct mem-servers owning vRegions of the process.
    pub owners: u64,
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
            prefetched: 0,
            prefetch_used: 0,
            prefetch_unused: 0,
            bytes_in: 0,
            bytes_out: 0,
            miss_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
            resident: 0,
            lines: 0,
            owners: 0,
        }
    }
}

/// The state the handler thread and the memory manager share, under one lock. Nobody holding
/// the lock touches guest memory: that could fault and wait for the handler, which waits for the
/// lock.
pub(crate) struct State {
    sets: Sets,
    remote: RemotePages,
    pub(crate) owners: Owners,
    /// Slot 0: the line being installed; slot 1: the victim being written back; slot 2: zeroes;
    /// from slot 3 on: a prefetch window, then its dirty victims.
    buf: RegisteredBuf,
    stats: CacheStats,
    streams: Streams,
    proc: u64,
}

const INSTALL: Slot = Slot(0);
const VICTIM: Slot = Slot(1);
const ZERO: Slot = Slot(2);
const WINDOW: Slot = Slot(3);
/// From here on: the dirty victims of a prefetch window.
const WRITE_BACK: Slot = Slot(WINDOW.0 + MAX_RUN_PAGES as usize);

/// Everything the handler thread needs.
struct Shared {
    state: Mutex<State>,
    uffd: Uffd,
    /// Host address of guest address 0, and the slot size.
    host: u64,
    size: u64,
    failure: Mutex<Option<String>>,
    failed: AtomicBool,
    /// The vCPU threads, kicked out of KVM_RUN when memory fails.
    kicker: Arc<Kicker>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the first failure and kicks the vCPUs so their run loops see it.
    fn fail(&self, msg: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            // The run loop reports it as the reason the process ended; this is for traces.
            tracing::info!("{msg}");
            *f = Some(msg);
        }
        self.failed.store(true, Ordering::Release);
        self.kicker.kick_all();
    }

    /// Drops a page from the host mapping: KVM's MMU notifier removes the guest's translation.
    fn zap(&self, page: u64, len: u64) -> Result<(), String> {
        // SAFETY: the range lies inside the user memslot mapping (callers pass guest addresses
        // below `size`); MADV_DONTNEED on private anonymous memory only drops its contents.
        let r = unsafe { libc::madvise((self.host + page) as *mut libc::c_void, len as usize, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(format!("madvise(DONTNEED) of guest page {page:#x}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// A process's ExCache and its fault-handler thread.
pub struct ExCache {
    shared: Arc<Shared>,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl ExCache {
    /// Registers the memslot `[host, host+size)` and starts serving its faults for process
    /// `proc`, with the pages of vRegions found through `owners`.
    pub fn start(host: u64, size: u64, config: ExCacheConfig, owners: Owners, proc: u64) -> Result<ExCache, VmmError> {
        config.validate()?;
        let err = |what: &str, e: std::io::Error| VmmError::Memory { size, reason: format!("{what}: {e}") };
        let uffd = Uffd::new().map_err(|e| err("userfaultfd", e))?;
        uffd.register(host, size).map_err(|e| err("registering guest memory with userfaultfd", e))?;
        // Lines are 4 KB: a transparent huge page would put 512 of them in at once.
        // SAFETY: the range is the caller's mapping; the advice changes no contents.
        unsafe { libc::madvise(host as *mut libc::c_void, size as usize, libc::MADV_NOHUGEPAGE) };
        let sets = Sets::new((config.bytes / PAGE_SIZE) as usize, config.ways, config.policy);
        let stats = CacheStats { lines: sets.capacity() as u64, ..CacheStats::default() };
        let streams = Streams::new(config.prefetch_window());
        let buf = RegisteredBuf::new(WRITE_BACK.0 + MAX_RUN_PAGES as usize);
        let state = State { sets, remote: RemotePages::default(), owners, buf, stats, streams, proc };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            uffd,
            host,
            size,
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            kicker: Arc::new(Kicker::default()),
        });
        let stop = EventFd::new(libc::EFD_CLOEXEC).map_err(|e| err("eventfd", e))?;
        let stop_fd = stop.as_raw_fd();
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("excache".into())
            .spawn(move || handler::run(&s, stop_fd))
            .map_err(|e| err("starting the ExCache thread", e))?;
        Ok(ExCache { shared, stop, thread: Some(thread) })
    }

    /// The registry of the process's vCPU threads, all kicked when memory fails (and when the
    /// process ends for any other reason).
    pub fn kicker(&self) -> Arc<Kicker> {
        self.shared.kicker.clone()
    }

    /// The failure that ended the process's memory, if any: after one, faults are resolved with
    /// zeroes only so that nothing hangs, and no guest data may be trusted.
    pub fn failure(&self) -> Option<String> {
        if !self.shared.failed.load(Ordering::Acquire) {
            return None;
        }
        self.shared.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a failure found outside the handler (e.g. the home stopped answering).
    pub fn fail(&self, msg: String) {
        self.shared.fail(msg);
    }

    /// Holds the ExCache still: no fault is served and no line is evicted until the returned
    /// guard is dropped. The memory manager holds it across a memory call to the home and the
    /// application of its effects, so that no dirty line of a range the owners unmap (or map
    /// anew) is written back between the two: the owner would refuse the write, or take it
    /// into the new mapping. Nothing holding it may touch guest memory (see [`State`]).
    pub fn hold(&self) -> Held<'_> {
        Held { shared: &self.shared, st: self.shared.state() }
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

/// The ExCache held still (see [`ExCache::hold`]).
pub struct Held<'a> {
    shared: &'a Shared,
    st: MutexGuard<'a, State>,
}

impl Held<'_> {
    /// Records the owner of vRegion `index`.
    pub fn set_owner(&mut self, index: u64, owner: &str) -> Result<(), String> {
        self.st.owners.set(index, owner)
    }

    /// Drops every line of `[start, end)` without writing anything back (its pages are gone at the
    /// owners, or are about to be: munmap, MADV_DONTNEED) and forgets that they exist remotely.
    pub fn discard(&mut self, start: u64, end: u64) -> Result<(), String> {
        let end = end.min(self.shared.size);
        if start >= end {
            return Ok(());
        }
        for line in self.st.sets.in_range(start, end) {
            self.st.sets.remove(line.page);
        }
        self.st.remote.clear(start, end);
        self.shared.zap(start, end - start)
    }

    /// Writes back the dirty lines of `[start, end)` and drops all its lines, so that the owners
    /// hold the only copy (before mremap moves the pages there, or a fork copies the address
    /// space). The dirty lines go to each owner as pipelined flushes of up to
    /// [`MAX_RUN_PAGES`] pages ([`State::write_back_staged`]), not one round trip each.
    pub fn write_back(&mut self, start: u64, end: u64) -> Result<(), String> {
        let end = end.min(self.shared.size);
        let mut staged = Vec::new();
        for line in self.st.sets.in_range(start, end) {
            self.st.evict_staged(self.shared, line, &mut staged)?;
            if staged.len() == MAX_RUN_PAGES as usize {
                self.st.write_back_staged(&std::mem::take(&mut staged))?;
            }
        }
        self.st.write_back_staged(&staged)
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

/// Reads a running ExCache's statistics (for live reports such as `lego top`).
#[derive(Clone)]
pub struct StatsProbe(Arc<Shared>);

impl StatsProbe {
    /// A snapshot of the statistics.
    pub fn stats(&self) -> CacheStats {
        let st = self.0.state();
        CacheStats { resident: st.sets.resident() as u64, owners: st.owners.owners_in_use() as u64, ..st.stats.clone() }
    }
}

impl Drop for ExCache {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl State {
    /// The page path, top to bottom: a missing line `page` (written if `write`) is made
    /// resident. Room is made in its set first; the victim goes back to its owner if dirty, in
    /// the same exchange as the fetch when both have the same owner. The line then comes from its
    /// owner if it exists there, else it is zeroes (p-local), and is installed write-protected
    /// unless the access was a write.
    ///
    /// Several threads (vCPUs, or the VMM copying to a guest buffer) may miss on the same page
    /// at once: each fault is queued, the first one installs the line and the others find it
    /// resident here, so the line is fetched and counted once; the handler's wake then releases
    /// every thread waiting on the page. (A write that finds the line installed for a read
    /// faults again, as a first write.) The sets and the mapping change together under the
    /// state lock, so `UFFDIO_COPY` never meets a present page (`EEXIST`); if it did, the
    /// bookkeeping would be wrong and the copy error ends the process's memory.
    ///
    /// Returns whether the line was installed (it was not resident).
    fn serve_miss(&mut self, mem: &Shared, page: u64, write: bool) -> Result<bool, String> {
        if self.sets.get(page).is_some() {
            // A prefetched line faulted on while it was being installed was used.
            self.note_use(page);
            return Ok(false);
        }
        let source = if self.remote.contains(page) {
            Some(self.owners.owner_of(page).ok_or_else(|| format!("page {page:#x} exists remotely but its vRegion has no owner"))?)
        } else {
            None
        };
        let mut fetched = false;
        if let Some(victim) = self.sets.victim_for(page) {
            fetched = self.evict(mem, victim, source.map(|owner| (owner, page)))?;
        }
        let src = match source {
            _ if fetched => INSTALL,
            Some(owner) => {
                let proc = self.proc;
                let link = self.owners.link(owner).map_err(|e| e.to_string())?;
                link.read_page(proc, page, &mut self.buf, INSTALL)
                    .map_err(|e| format!("fetching page {page:#x}: {e}"))?;
                self.stats.misses += 1;
                self.stats.bytes_in += PAGE_SIZE;
                INSTALL
            }
            None => {
                self.stats.plocal_fills += 1;
                ZERO
            }
        };
        // SAFETY: the source is a page of our registered buffer.
        unsafe { mem.uffd.copy(mem.host + page, self.buf.page(src.0).as_ptr(), PAGE_SIZE, !write) }
            .map_err(|e| format!("installing page {page:#x}: {e}"))?;
        self.sets.insert(page, write);
        Ok(true)
    }

    /// Counts a prefetched line as used the first time the program is seen using it.
    fn note_use(&mut self, page: u64) -> bool {
        let used = self.sets.take_prefetched(page);
        self.stats.prefetch_used += u64::from(used);
        used
    }

    /// After the miss on `page` (a write if `write`) was served: if it continues a sequential
    /// stream, installs the stream's next window of lines.
    ///
    /// The window is fetched from its owner in one round trip ([`Transport::read_pages`]),
    /// which also bounds it: the owner stops at the end of the mapped region. The window is cut
    /// at the end of the memslot and of the vRegion (one owner). Lines already resident are
    /// skipped; every other line is placed in its set like a missing line, evicting (and writing
    /// back) a victim first, so the resident bound holds. The dirty victims of a window are
    /// written back together, one pipelined exchange per owner, before the state is let go. The window stops before a line whose
    /// victim would be the missed line or a line of the window. Lines that were never flushed
    /// are zero lines, as on a miss. Each contiguous run of new lines is installed with one
    /// `UFFDIO_COPY`: write-protected (clean), or writable and dirty when the stream writes,
    /// which is what a write miss installs (so eviction stays race-free: a dirty line is
    /// write-protected before it is copied out).
    fn prefetch(&mut self, mem: &Shared, page: u64, write: bool) -> Result<(), String> {
        let Some(w) = self.streams.miss(page, write) else { return Ok(()) };
        // The program went past the previous window: its lines still resident were used.
        for p in (w.passed.0..w.passed.1).step_by(PAGE_SIZE as usize) {
            self.note_use(p);
        }
        let end = (w.start + w.lines * PAGE_SIZE).min(mem.size).min(self.owners.vregion_end(w.start));
        let Some(owner) = self.owners.owner_of(w.start).filter(|_| end > w.start) else {
            self.streams.cut(&w, w.start);
            return Ok(());
        };
        let proc = self.proc;
        let link = self.owners.link(owner).map_err(|e| e.to_string())?;
        let got = match link.read_pages(proc, w.start, (end - w.start) / PAGE_SIZE, &mut self.buf, WINDOW) {
            Ok(n) => n,
            // The stream ran off its mapped region: nothing to prefetch.
            Err(ProtoError::Remote { .. }) => {
                self.streams.cut(&w, w.start);
                return Ok(());
            }
            Err(e) => return Err(format!("prefetching {} pages from {:#x}: {e}", (end - w.start) / PAGE_SIZE, w.start)),
        };
        self.stats.bytes_in += got * PAGE_SIZE;
        let end = w.start + got * PAGE_SIZE;
        let mut reached = w.start;
        let mut run = 0u64; // lines of the current run, ending at `reached`
        let mut staged = Vec::new();
        for i in 0..got {
            let at = w.start + i * PAGE_SIZE;
            if self.sets.get(at).is_some() {
                self.install_run(mem, w.start, reached - run * PAGE_SIZE, run, w.writes)?;
                run = 0;
                reached = at + PAGE_SIZE;
                continue;
            }
            if let Some(victim) = self.sets.victim_for(at) {
                if (page..end).contains(&victim.page) {
                    break;
                }
                self.evict_staged(mem, victim, &mut staged)?;
            }
            if !self.remote.contains(at) {
                self.buf.page_mut(WINDOW.0 + i as usize).fill(0);
            }
            self.sets.insert_prefetched(at, w.writes);
            self.stats.prefetched += 1;
            run += 1;
            reached = at + PAGE_SIZE;
        }
        self.install_run(mem, w.start, reached - run * PAGE_SIZE, run, w.writes)?;
        self.write_back_staged(&staged)?;
        if reached < w.start + w.lines * PAGE_SIZE {
            self.streams.cut(&w, reached);
        }
        Ok(())
    }

    /// Installs `lines` prefetched lines from `first` on, from their slots of the window that
    /// starts at `start`, with one copy, and wakes any thread that faulted on them meanwhile.
    fn install_run(&self, mem: &Shared, start: u64, first: u64, lines: u64, dirty: bool) -> Result<(), String> {
        if lines == 0 {
            return Ok(());
        }
        let slot = WINDOW.0 + ((first - start) / PAGE_SIZE) as usize;
        let len = lines * PAGE_SIZE;
        let src = self.buf.run(slot, lines as usize);
        // SAFETY: `src` is `len` bytes of our registered buffer.
        unsafe { mem.uffd.copy(mem.host + first, src.as_ptr(), len, !dirty) }
            .map_err(|e| format!("installing {lines} prefetched pages from {first:#x}: {e}"))?;
        mem.uffd.wake(mem.host + first, len).map_err(|e| format!("waking threads at {first:#x}: {e}"))
    }

    /// Evicts `victim`, writing it back first if dirty. With `fetch = Some((owner, page))` and
    /// the victim owned by `owner` too, the write-back carries the fetch of `page` into
    /// [`INSTALL`]; returns whether it did.
    fn evict(&mut self, mem: &Shared, victim: sets::Resident, fetch: Option<(usize, u64)>) -> Result<bool, String> {
        let mut fetched = false;
        if victim.dirty {
            let owner = self.copy_out(mem, victim.page, VICTIM)?;
            let proc = self.proc;
            let link = self.owners.link(owner).map_err(|e| e.to_string())?;
            match fetch {
                Some((o, page)) if o == owner => {
                    link.write_read_page(proc, victim.page, page, &mut self.buf, VICTIM, INSTALL)
                        .map_err(|e| format!("writing back page {:#x} and fetching {page:#x}: {e}", victim.page))?;
                    self.stats.piggybacked += 1;
                    self.stats.misses += 1;
                    self.stats.bytes_in += PAGE_SIZE;
                    fetched = true;
                }
                _ => link
                    .write_page(proc, victim.page, &self.buf, VICTIM)
                    .map_err(|e| format!("writing back page {:#x}: {e}", victim.page))?,
            }
            self.flushed(victim.page);
        }
        self.drop_line(mem, victim.page)?;
        Ok(fetched)
    }

    /// Unmaps the line `page` and forgets it (a prefetched line never used counts as such).
    fn drop_line(&mut self, mem: &Shared, page: u64) -> Result<(), String> {
        if self.sets.take_prefetched(page) {
            self.stats.prefetch_unused += 1;
        }
        mem.zap(page, PAGE_SIZE)?;
        self.sets.remove(page);
        self.stats.evictions += 1;
        Ok(())
    }

    /// Write-protects the dirty line `page` and copies it into `slot`; returns its owner. From
    /// here on a write to the line waits in the kernel until the line is gone.
    fn copy_out(&mut self, mem: &Shared, page: u64, slot: Slot) -> Result<usize, String> {
        let at = mem.host + page;
        mem.uffd.write_protect(at, PAGE_SIZE, true).map_err(|e| format!("write-protecting {page:#x}: {e}"))?;
        // SAFETY: `at` is a resident page of the memslot (the line is in the cache), readable
        // while write-protected; the destination is our own buffer page.
        unsafe { std::ptr::copy_nonoverlapping(at as *const u8, self.buf.page_mut(slot.0).as_mut_ptr(), PAGE_SIZE as usize) };
        self.owners.owner_of(page).ok_or_else(|| format!("dirty page {page:#x} lies in a vRegion without an owner"))
    }

    /// Records that the dirty line `page` was written back.
    fn flushed(&mut self, page: u64) {
        self.remote.insert(page);
        self.stats.dirty_flushes += 1;
        self.stats.bytes_out += PAGE_SIZE;
    }

    /// Evicts `victim` with its write-back deferred: a dirty line is copied out into the next of
    /// the (at most [`MAX_RUN_PAGES`]) write-back slots and unmapped, to be written back
    /// together with the others `staged` by [`State::write_back_staged`] before the state is
    /// let go (a prefetch window's victims, or the lines of [`Held::write_back`]).
    fn evict_staged(&mut self, mem: &Shared, victim: sets::Resident, staged: &mut Vec<(usize, u64, Slot)>) -> Result<(), String> {
        if victim.dirty {
            let slot = Slot(WRITE_BACK.0 + staged.len());
            let owner = self.copy_out(mem, victim.page, slot)?;
            staged.push((owner, victim.page, slot));
        }
        self.drop_line(mem, victim.page)
    }

    /// Writes back the dirty lines `evict_staged` staged: one pipelined exchange per owner.
    fn write_back_staged(&mut self, staged: &[(usize, u64, Slot)]) -> Result<(), String> {
        let mut owners: Vec<usize> = staged.iter().map(|s| s.0).collect();
        owners.sort_unstable();
        owners.dedup();
        let proc = self.proc;
        for owner in owners {
            let pages: Vec<(u64, Slot)> = staged.iter().filter(|s| s.0 == owner).map(|s| (s.1, s.2)).collect();
            let link = self.owners.link(owner).map_err(|e| e.to_string())?;
            link.write_pages(proc, &pages, &self.buf)
                .map_err(|e| format!("writing back {} pages evicted for a prefetch: {e}", pages.len()))?;
            for (page, _) in pages {
                self.flushed(page);
            }
        }
        Ok(())
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
    /// The ExCache.
    pub excache: ExCacheConfig,
}

/// Default vRegion size (LegoOS: 1 GB).
pub const DEFAULT_VREGION_SIZE: u64 = 1 << 30;
