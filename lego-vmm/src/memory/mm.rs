//! The memory manager of one process, on the pComponent side of LegoOS's two-level memory
//! management (§4.4.1): memory system calls go to the process's *home* mem-server, which decides
//! everything (addresses, vRegions, owners); this side caches the resulting regions for the guest
//! page tables and for checking user pointers, and applies each answer's effects to the page
//! tables and to the [`ExCache`]. Every change that takes a right away from a page is paired with
//! the invalidation KVM needs (see [`crate::memory::paging`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lego_proto::codec::{decode, encode};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{Effect, MemCall, MemOutcome, ProcessSpec, Reply, Request};
use lego_proto::transport::{TcpTransport, Transport};
use lego_proto::ProtoError;
use lego_proto::vma::{VmaKind, VmaList};

use crate::errno::{Errno, SysResult};
use crate::error::VmmError;
use crate::memory::excache::owners::{CopyLost, Owners};
use crate::memory::excache::{CacheStats, ExCache, Held, MemError, MemoryConfig};
use crate::layout::*;
use crate::memory::paging::Prot;
use crate::memory::shared::{SharedFile, SharedMaps, View, Window};
use crate::sysmem::SysMem;

/// `mmap(2)` flags the memory manager looks at.
pub mod flags {
    pub const MAP_SHARED: u32 = 0x01;
    pub const MAP_PRIVATE: u32 = 0x02;
    pub const MAP_TYPE: u32 = 0x0f;
    pub const MAP_FIXED: u32 = 0x10;
    pub const MAP_ANONYMOUS: u32 = 0x20;
    pub const MAP_32BIT: u32 = 0x40;
    pub const MAP_FIXED_NOREPLACE: u32 = 0x10_0000;
    pub const MREMAP_MAYMOVE: u32 = 1;
    pub const MREMAP_FIXED: u32 = 2;
    pub const MREMAP_DONTUNMAP: u32 = 4;
}
use flags::*;

/// A process address space.
pub struct Mm {
    cache: ExCache,
    home: Home,
    sys: Arc<SysMem>,
    /// Bytes of user address space.
    size: u64,
    vmas: VmaList,
    /// The shared mappings, and the run's window they are in.
    shared: SharedMaps,
    window: Arc<Window>,
    stack_top: u64,
    /// Where the memory lives, for a fork's copy.
    config: MemoryConfig,
}

/// Why a call to the home mem-server, or the application of its answer, failed: any of these
/// is a failure of the process's memory.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// The request or its answer did not travel.
    #[error("home mem-server: {0}")]
    Link(#[source] ProtoError),
    /// The answer could not be decoded.
    #[error("home mem-server {peer}: {source}")]
    Decode {
        /// The home's address.
        peer: String,
        #[source]
        source: ProtoError,
    },
    /// The home refused to create the process (or its fork).
    #[error("the home refused to {what} the process: {reply}")]
    Refused {
        /// What was asked: "create" or "fork".
        what: &'static str,
        /// The answer, as debug text.
        reply: String,
    },
    /// The home answered something else than the request calls for.
    #[error("home mem-server answered {request} with {reply}")]
    Unexpected {
        /// The request.
        request: &'static str,
        /// The answer, as debug text.
        reply: String,
    },
    /// An effect names a range outside the user part of the address space.
    #[error("the home sent an impossible range {start:#x}..{end:#x}")]
    BadRange {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
    },
    /// A region could not be mapped in the ExCache.
    #[error("mapping {start:#x}..{end:#x}: {source}")]
    Map {
        /// Start of the region.
        start: u64,
        /// End of the region.
        end: u64,
        #[source]
        source: MemError,
    },
    /// The ExCache could not apply an effect.
    #[error(transparent)]
    Cache(#[from] MemError),
}

/// The control connection to the process's home mem-server.
struct Home {
    link: TcpTransport,
    proc: u64,
}

impl Home {
    /// Sends a request; a failure of the home is a failure of the process's memory.
    fn call(&mut self, req: &Request) -> Result<Reply, HomeError> {
        let body = self.link.call(self.proc, &encode(req)).map_err(HomeError::Link)?;
        decode(&body).map_err(|source| HomeError::Decode { peer: self.link.peer().to_string(), source })
    }

    /// Tells the home of the copies the ExCache lost (failed-over mem-servers), so that it
    /// never asks them again: done before any other request, with the ExCache held. With
    /// `rebuild`, the home gives each vRegion a new secondary, which the ExCache writes to from
    /// then on.
    fn report(&mut self, cache: &mut Held<'_>, rebuild: bool) -> Result<(), HomeError> {
        let lost = cache.take_unreported();
        if lost.is_empty() {
            return Ok(());
        }
        let begun = Instant::now();
        let mut rebuilt = 0;
        for (index, server) in lost {
            // Shown as rebuilding (lego ps) until the answer is applied: a new secondary, or
            // none found.
            cache.rebuilding(index, rebuild);
            match self.call(&Request::ReplicaLost { index, server, rebuild })? {
                Reply::Mem(Ok(outcome)) => {
                    for o in outcome.owners {
                        rebuilt += u64::from(rebuild && o.index == index && o.secondary.is_some());
                        cache.set_owner(o.index, &o.owner, o.secondary.as_deref())?;
                    }
                    cache.rebuilding(index, false);
                }
                other => return Err(HomeError::Unexpected { request: "ReplicaLost", reply: format!("{other:?}") }),
            }
        }
        if rebuilt > 0 {
            cache.rebuilt(rebuilt, begun.elapsed());
        }
        Ok(())
    }
}

/// Picks the home of a new process: the mem-server with the most free memory (the global
/// process manager takes this over once it exists).
fn choose_home(config: &MemoryConfig, hello: Hello) -> Result<(usize, TcpTransport), VmmError> {
    let mut best: Option<(u64, usize, TcpTransport)> = None;
    let mut errors = Vec::new();
    for (i, addr) in config.servers.iter().enumerate() {
        let stat = TcpTransport::connect(addr, hello, config.timeout).and_then(|mut t| {
            let body = t.call(0, &encode(&Request::Stat))?;
            Ok((decode::<Reply>(&body)?, t))
        });
        match stat {
            Ok((Reply::Stat(s), t)) => {
                let free = s.capacity_pages.saturating_sub(s.used_pages);
                if best.as_ref().is_none_or(|(f, ..)| free > *f) {
                    best = Some((free, i, t));
                }
            }
            Ok((other, _)) => errors.push(format!("{addr}: unexpected answer {other:?}")),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    match best {
        Some((_, i, t)) if errors.is_empty() => Ok((i, t)),
        _ => Err(VmmError::MemoryServer(errors.join("; "))),
    }
}

impl Mm {
    /// Reserves `size` bytes of guest address space, starts the ExCache on it and makes a home
    /// mem-server create the process (with its main stack at the top).
    pub fn new(size: u64, config: &MemoryConfig) -> Result<Mm, VmmError> {
        if !(MIN_USER_MEM..=MAX_USER_MEM).contains(&size) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(VmmError::Config(format!(
                "memory size {size} must be a multiple of 4 KiB between {} MiB and {} GiB",
                MIN_USER_MEM >> 20,
                MAX_USER_MEM >> 30
            )));
        }
        if !config.vregion_size.is_power_of_two() || config.vregion_size < (1 << 21) {
            return Err(VmmError::Config(format!(
                "vRegion size {} must be a power of two of at least 2 MiB",
                config.vregion_size
            )));
        }
        if config.servers.is_empty() {
            return Err(VmmError::Config("no mem-server to keep the memory on".into()));
        }
        let hello = Hello::new(ComponentKind::Processor, config.cluster);
        let (home_index, link) = choose_home(config, hello)?;
        let window = Window::new().map_err(|e| VmmError::Memory { size: crate::memory::shared::WINDOW_SIZE, reason: format!("reserving the shared-memory window: {e}") })?;
        let mut mm = Mm::unmapped(size, config, link, window)?;
        let spec = ProcessSpec {
            servers: config.servers.clone(),
            home: home_index,
            vregion_size: config.vregion_size,
            user_min: USER_MIN,
            space_top: mm.stack_top,
            mmap_top: mm.stack_top - STACK_MAX - STACK_GAP,
            stack: (mm.stack_top - STACK_MAX, mm.stack_top),
            replicas: config.replicas,
            backup_storage: config.backup_storage.clone(),
        };
        mm.start(&Request::CreateProcess(spec), "create")?;
        Ok(mm)
    }

    /// The memory side of a process with a fresh process id whose home is at the other end of
    /// `link`, in the run of shared-memory `window`: nothing mapped, nothing asked of the home
    /// yet.
    fn unmapped(size: u64, config: &MemoryConfig, link: TcpTransport, window: Arc<Window>) -> Result<Mm, VmmError> {
        let proc = loop {
            let mut b = [0u8; 8];
            // SAFETY: `b` is a valid 8-byte buffer.
            if unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) } == 8 && u64::from_le_bytes(b) != 0 {
                break u64::from_le_bytes(b);
            }
        };
        let owners = Owners::over(config.transport.clone(), config.servers.clone(), config.vregion_size, config.cluster, config.timeout);
        let sys = Arc::new(SysMem::new(size)?);
        crate::vdso::install(&sys);
        let cache = ExCache::start(config.excache, owners, proc, sys.clone(), window.clone())?;
        Ok(Mm {
            cache,
            home: Home { link, proc },
            sys,
            size,
            vmas: VmaList::default(),
            shared: SharedMaps::default(),
            window,
            stack_top: size,
            config: config.clone(),
        })
    }

    /// Sends `req` (which creates the process at the home) and applies the answer.
    fn start(&mut self, req: &Request, what: &'static str) -> Result<(), VmmError> {
        let created = match self.home.call(req) {
            Ok(Reply::Mem(Ok(outcome))) => {
                let Mm { cache, vmas, shared, stack_top, .. } = self;
                apply(vmas, shared, &mut cache.hold(), *stack_top, outcome)
            }
            Ok(other) => Err(HomeError::Refused { what, reply: format!("{other:?}") }),
            Err(e) => Err(e),
        };
        created.map(|_| ()).map_err(|e| VmmError::MemoryServer(e.to_string()))
    }

    /// A copy of this address space for a child process (fork), with a home session of its own
    /// at the same home. The dirty lines are written back first; then the home has the owners
    /// copy the pages among themselves, so no page data passes through here. The parent keeps
    /// its lines (now clean); the child faults its own in. Shared mappings are shared with the
    /// child.
    pub fn fork(&mut self) -> Result<Mm, VmmError> {
        let hello = Hello::new(ComponentKind::Processor, self.config.cluster);
        let link = TcpTransport::connect(self.home.link.peer(), hello, self.config.timeout)
            .map_err(|e| VmmError::MemoryServer(format!("home mem-server {}: {e}", self.home.link.peer())))?;
        let mut child = Mm::unmapped(self.size, &self.config, link, self.window.clone())?;
        // Held from the write-back until the copy is made: no line of the parent goes back
        // to its owner in between.
        let mut cache = self.cache.hold();
        cache.clean(USER_MIN, self.stack_top).map_err(|e| VmmError::MemoryServer(e.to_string()))?;
        let remote = cache.remote_pages();
        self.home.report(&mut cache, true).map_err(|e| VmmError::MemoryServer(e.to_string()))?;
        child.start(&Request::ForkProcess { parent: self.home.proc }, "fork")?;
        drop(cache);
        let mut held = child.cache.hold();
        held.set_remote_pages(remote);
        for (start, end, gpa) in self.shared.pieces() {
            for v in child.vmas.clipped(start, end) {
                held.map_shared(v.start, v.end, gpa + (v.start - start), v.prot).map_err(|e| VmmError::MemoryServer(e.to_string()))?;
            }
        }
        drop(held);
        child.shared = self.shared.clone();
        Ok(child)
    }

    /// Empties the address space for a new program (`execve`): every region goes, and a fresh
    /// main stack is mapped.
    pub fn reset(&mut self) -> SysResult<()> {
        self.munmap(USER_MIN, self.stack_top - USER_MIN)?;
        self.map_region(self.stack_top - STACK_MAX, self.stack_top, Prot::RW, VmaKind::Stack)
    }

    /// Bytes of user address space.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// The run's shared-memory window (for its memslot).
    pub fn window(&self) -> &Window {
        &self.window
    }
    /// The VMM-private slot.
    pub fn sys(&self) -> &SysMem {
        &self.sys
    }
    /// Page-table root (CR3).
    pub fn cr3(&self) -> u64 {
        self.cache.cr3()
    }
    /// Top of the main stack.
    pub fn stack_top(&self) -> u64 {
        self.stack_top
    }
    /// The VMM-private memory, shared (for the vDSO clock, which writes its data page).
    pub fn sys_shared(&self) -> &Arc<SysMem> {
        &self.sys
    }
    /// The cached region list.
    pub fn vmas(&self) -> &VmaList {
        &self.vmas
    }
    /// Bytes of user address space in regions.
    pub fn mapped_bytes(&self) -> u64 {
        self.vmas.iter().map(|v| v.end - v.start).sum()
    }
    /// The process id the mem-servers know this process by.
    pub fn proc_id(&self) -> u64 {
        self.home.proc
    }

    /// Address of the process's home mem-server.
    pub fn home(&self) -> &str {
        self.home.link.peer()
    }

    /// Every mem-server the process's memory may be on, its home among them.
    pub fn servers(&self) -> &[String] {
        &self.config.servers
    }

    /// The ExCache.
    pub fn cache(&self) -> &ExCache {
        &self.cache
    }
    /// ExCache statistics.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }
    /// Why the process's memory failed, if it did: the run loop ends the program then.
    pub fn failure(&self) -> Option<String> {
        self.cache.failure()
    }

    /// With replication, what is raised each time the process loses a copy of a vRegion, for
    /// whoever calls [`Mm::repair`] then.
    pub fn copy_lost(&self) -> Option<Arc<CopyLost>> {
        (self.config.replicas > 1).then(|| self.cache.copy_lost())
    }

    /// Reports the copies lost since the last request to the home, which gives each vRegion
    /// left with one copy a new secondary and copies the survivor's pages to it (with the
    /// ExCache held, so no write-back races the copy); from then on every write-back reaches
    /// both again. Memory calls do the same before their request; this does it when the
    /// process makes none. A home that fails fails the process's memory (see [`Mm::failure`]).
    pub fn repair(&mut self) {
        if self.cache.failure().is_some() {
            return;
        }
        let mut cache = self.cache.hold();
        let reported = self.home.report(&mut cache, true);
        drop(cache);
        if let Err(e) = reported {
            self.cache.fail(e.to_string());
        }
    }

    /// Sends a memory system call to the home and applies the answer. A home that fails ends the
    /// process (see [`Mm::failure`]); the call itself then returns `EIO`.
    ///
    /// The ExCache is held still from before the request until its effects are applied (see
    /// [`ExCache::hold`]): with several threads, the handler may be evicting lines for one
    /// while another's call changes the owners' mappings.
    fn call(&mut self, call: MemCall) -> SysResult<u64> {
        let mut cache = self.cache.hold();
        if let MemCall::Mremap { old, old_len, flags, .. } = call {
            // When the region may move, its dirty lines are written back first so that the
            // owners, which move the pages, hold the only copy.
            if flags & (MREMAP_MAYMOVE | MREMAP_FIXED) != 0 && old % PAGE_SIZE == 0 {
                if let Some(v) = self.vmas.find(old) {
                    let end = old.saturating_add(page_ceil(old_len).unwrap_or(u64::MAX)).min(v.end);
                    if let Err(e) = cache.write_back(old, end) {
                        drop(cache);
                        return Err(self.fatal(e));
                    }
                }
            }
        }
        let reply = self.home.report(&mut cache, true).and_then(|()| self.home.call(&Request::Mem(call)));
        let outcome = match reply {
            Ok(Reply::Mem(Ok(o))) => Ok(o),
            Ok(Reply::Mem(Err(errno))) => return Err(Errno(errno)),
            Ok(other) => Err(HomeError::Unexpected { request: "a memory call", reply: format!("{other:?}") }),
            Err(e) => Err(e),
        };
        let applied = outcome.and_then(|o| apply(&mut self.vmas, &mut self.shared, &mut cache, self.stack_top, o));
        drop(cache);
        applied.map_err(|e| self.fatal(e))
    }

    /// Fails the process's memory with `why`: the calling program gets `EIO`, and the run ends.
    fn fatal(&self, why: impl std::fmt::Display) -> Errno {
        self.cache.fail(why.to_string());
        Errno::EIO
    }

    /// Sets where the brk heap starts (just after the executable image).
    pub fn set_brk_start(&mut self, addr: u64) -> SysResult<()> {
        self.call(MemCall::SetBrkStart { addr }).map(|_| ())
    }

    /// Maps `[start, end)` (page aligned) with zeroed memory, replacing what was there.
    pub fn map_region(&mut self, start: u64, end: u64, prot: Prot, kind: VmaKind) -> SysResult<()> {
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
        self.call(MemCall::Mmap { addr: start, len: end.saturating_sub(start), prot, flags, kind }).map(|_| ())
    }

    /// `mmap(2)`: zero-filled memory (file contents are the caller's to copy in).
    pub fn mmap(&mut self, addr: u64, len: u64, prot: Prot, flags: u32, kind: VmaKind) -> SysResult<u64> {
        self.call(MemCall::Mmap { addr, len, prot, flags, kind })
    }

    /// `mmap(2)` of `MAP_SHARED | MAP_ANONYMOUS` memory: a new shared object, which the
    /// process's children share too (see [`crate::memory::shared`]).
    pub fn mmap_shared(&mut self, addr: u64, len: u64, prot: Prot, flags: u32) -> SysResult<u64> {
        let obj = SharedFile::new(&self.window).map_err(|e| {
            tracing::info!("a shared object for mmap(MAP_SHARED | MAP_ANONYMOUS): {e}");
            Errno::ENOMEM
        })?;
        self.mmap_object(addr, len, prot, flags, VmaKind::Anon, &obj, 0)
    }

    /// `mmap(2)` of `len` bytes of shared object `obj` from offset `off` (page aligned):
    /// every process mapping `obj` sees the same pages. `ENOMEM` when the run's shared-memory
    /// window has no room for them.
    #[allow(clippy::too_many_arguments)]
    pub fn mmap_object(&mut self, addr: u64, len: u64, prot: Prot, flags: u32, kind: VmaKind, obj: &Arc<SharedFile>, off: u64) -> SysResult<u64> {
        let pages = page_ceil(len).filter(|&l| l > 0).ok_or(Errno::EINVAL)?;
        let view = View::new(&self.window, obj, off, pages).map_err(|e| {
            tracing::info!("mmap(MAP_SHARED) of {len} bytes: {e}");
            Errno::ENOMEM
        })?;
        let start = self.mmap(addr, len, prot, flags, kind)?;
        let mut cache = self.cache.hold();
        if let Err(e) = cache.map_shared(start, start + pages, view.gpa(), prot) {
            drop(cache);
            return Err(self.fatal(e));
        }
        drop(cache);
        self.shared.insert(start, start + pages, view, 0);
        Ok(start)
    }

    /// The view of shared memory whose mapping starts at `addr` with its first page: the view
    /// and the length of the mapping.
    pub fn view_at(&self, addr: u64) -> Option<(Arc<View>, u64)> {
        self.shared.piece(addr).filter(|&(start, _, _, off)| start == addr && off == 0).map(|(start, end, view, _)| (view, end - start))
    }

    /// The ranges of shared memory, in address order.
    pub fn shared_ranges(&self) -> Vec<(u64, u64)> {
        self.shared.pieces().map(|(s, e, _)| (s, e)).collect()
    }

    /// Whether any page of `[addr, addr + len)` is shared memory.
    pub fn has_shared(&self, addr: u64, len: u64) -> bool {
        self.shared.overlaps(addr, addr.saturating_add(len))
    }

    /// `munmap(2)`.
    pub fn munmap(&mut self, addr: u64, len: u64) -> SysResult<()> {
        self.call(MemCall::Munmap { addr, len }).map(|_| ())
    }

    /// `mprotect(2)`.
    pub fn mprotect(&mut self, addr: u64, len: u64, prot: Prot) -> SysResult<()> {
        self.call(MemCall::Mprotect { addr, len, prot }).map(|_| ())
    }

    /// `madvise(MADV_DONTNEED)`: anonymous private pages read back as zeroes.
    pub fn madvise_dontneed(&mut self, addr: u64, len: u64) -> SysResult<()> {
        self.call(MemCall::MadviseDontneed { addr, len }).map(|_| ())
    }

    /// `mremap(2)` (see [`Mm::call`] for the lines of a region that may move). A shared
    /// mapping keeps its pages where it goes; pages it grows by are not shared (Linux gives
    /// `SIGBUS` there, past the end of the object).
    pub fn mremap(&mut self, old: u64, old_len: u64, new_len: u64, flags: u32, new_addr: u64) -> SysResult<u64> {
        let call = MemCall::Mremap { old, old_len, new_len, flags, new_addr };
        if !self.has_shared(old, old_len.max(1)) {
            return self.call(call);
        }
        // One shared mapping, all of whose pages are shared.
        let (start, end, view, off) = self.shared.piece(old).ok_or(Errno::EFAULT)?;
        let keep = page_ceil(old_len.min(new_len)).ok_or(Errno::EINVAL)?;
        if flags & MREMAP_DONTUNMAP != 0 || old.saturating_add(page_ceil(old_len).ok_or(Errno::EINVAL)?) > end {
            return Err(if flags & MREMAP_DONTUNMAP != 0 { Errno::EINVAL } else { Errno::EFAULT });
        }
        let moved = self.call(call)?;
        let prot = self.vmas.find(moved).map(|v| v.prot).ok_or(Errno::EFAULT)?;
        let off = off + (old - start);
        let mut cache = self.cache.hold();
        if let Err(e) = cache.map_shared(moved, moved + keep, view.gpa() + off, prot) {
            drop(cache);
            return Err(self.fatal(e));
        }
        drop(cache);
        self.shared.insert(moved, moved + keep, view, off);
        Ok(moved)
    }

    /// `brk(2)`: returns the new break (the old one if the request cannot be met).
    pub fn brk(&mut self, want: u64) -> u64 {
        self.call(MemCall::Brk { want }).unwrap_or(0)
    }

    /// Whether user code may access `[addr, addr+len)` (`write`: for writing).
    pub fn user_accessible(&self, addr: u64, len: u64, write: bool) -> bool {
        let Some(end) = addr.checked_add(len) else { return false };
        len == 0 || self.vmas.covered(addr, end, |v| if write { v.prot.writable() } else { v.prot.readable() })
    }

    /// `copy_from_user`: reads guest memory the program could read, else `EFAULT`.
    pub fn read_user(&self, addr: u64, buf: &mut [u8]) -> SysResult<()> {
        if !self.user_accessible(addr, buf.len() as u64, false) {
            return Err(Errno::EFAULT);
        }
        self.cache.access(addr, buf.len() as u64, false, |src, at| buf[at..at + src.len()].copy_from_slice(src))
    }

    /// `copy_to_user`: writes guest memory the program could write, else `EFAULT`.
    pub fn write_user(&self, addr: u64, buf: &[u8]) -> SysResult<()> {
        if !self.user_accessible(addr, buf.len() as u64, true) {
            return Err(Errno::EFAULT);
        }
        self.load(addr, buf)
    }

    /// Copies `buf` into mapped memory whatever its rights (program images, file contents of
    /// a new mapping); `EFAULT` where nothing is mapped.
    pub fn load(&self, addr: u64, buf: &[u8]) -> SysResult<()> {
        self.cache.access(addr, buf.len() as u64, true, |dst, at| dst.copy_from_slice(&buf[at..at + dst.len()]))
    }

    /// Reads a NUL-terminated string of at most `max` bytes (without the NUL):
    /// `ENAMETOOLONG` if longer, `EFAULT` if unreadable.
    pub fn read_cstr(&self, addr: u64, max: usize) -> SysResult<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = addr;
        loop {
            let chunk = (PAGE_SIZE - at % PAGE_SIZE) as usize;
            let mut buf = vec![0u8; chunk];
            self.read_user(at, &mut buf)?;
            if let Some(n) = buf.iter().position(|&b| b == 0) {
                out.extend_from_slice(&buf[..n]);
                return if out.len() > max { Err(Errno::ENAMETOOLONG) } else { Ok(out) };
            }
            out.extend_from_slice(&buf);
            if out.len() > max {
                return Err(Errno::ENAMETOOLONG);
            }
            at = at.checked_add(chunk as u64).ok_or(Errno::EFAULT)?;
        }
    }

    /// The key of the futex word at `addr` when it is in shared memory: the same in every
    /// process that maps it (see [`crate::memory::shared::View::key`]).
    pub fn shared_futex_key(&self, addr: u64) -> Option<u64> {
        self.shared.find(addr).map(|(_, key)| key)
    }

    /// Runs `f` on the futex word at `addr` (which must not block): `EINVAL` if unaligned,
    /// `EFAULT` unless the program could read it (and write it, with `write`).
    pub fn with_futex_word<R>(&self, addr: u64, write: bool, f: impl FnOnce(&std::sync::atomic::AtomicU32) -> R) -> SysResult<R> {
        if !addr.is_multiple_of(4) {
            return Err(Errno::EINVAL);
        }
        if !self.user_accessible(addr, 4, write) {
            return Err(Errno::EFAULT);
        }
        self.cache.with_word(addr, write, f)
    }

    /// Reads a little-endian u32.
    pub fn read_u32(&self, addr: u64) -> SysResult<u32> {
        let mut b = [0u8; 4];
        self.read_user(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a little-endian u64.
    pub fn read_u64(&self, addr: u64) -> SysResult<u64> {
        let mut b = [0u8; 8];
        self.read_user(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u64.
    pub fn write_u64(&self, addr: u64, v: u64) -> SysResult<()> {
        self.write_user(addr, &v.to_le_bytes())
    }
}

impl Drop for Mm {
    /// Releases the process's memory at its home, which releases it at every owner and
    /// secondary it can reach. After a memory failure (status 125) the lines are not reported
    /// (nothing computed since can be trusted), but the release is still asked for, so that the
    /// surviving servers do not keep the pages of a process that is gone; a home that is the
    /// server that failed cannot answer, and the global manager reclaims what it can.
    fn drop(&mut self) {
        match self.cache.failure() {
            None => {
                let reported = self.home.report(&mut self.cache.hold(), false);
                if let Err(e) = reported.and_then(|()| self.home.call(&Request::ExitProcess)) {
                    tracing::warn!("releasing the process's memory: {e}");
                }
            }
            Some(why) => {
                if let Err(e) = self.home.call(&Request::ExitProcess) {
                    tracing::debug!(%why, "releasing the memory of a process whose memory failed: {e}");
                }
            }
        }
    }
}

/// Applies the home's effects, in order, to the region cache, the shared mappings and the
/// ExCache (its page tables and lines), held still by the caller since before the request.
fn apply(vmas: &mut VmaList, shared: &mut SharedMaps, cache: &mut Held<'_>, stack_top: u64, outcome: MemOutcome) -> Result<u64, HomeError> {
    // The home may only describe the user part of this address space.
    let check_effect = |start: u64, end: u64| {
        if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) || start >= end || start < USER_MIN || end > stack_top {
            return Err(HomeError::BadRange { start, end });
        }
        Ok(())
    };
    for o in &outcome.owners {
        cache.set_owner(o.index, &o.owner, o.secondary.as_deref())?;
    }
    for effect in outcome.effects {
        match effect {
            Effect::Map(vma) => {
                check_effect(vma.start, vma.end)?;
                vmas.remove(vma.start, vma.end);
                if shared.overlaps(vma.start, vma.end) {
                    cache.unshare(vma.start, vma.end)?;
                    shared.remove(vma.start, vma.end);
                }
                cache.map(vma.start, vma.end, vma.prot).map_err(|source| HomeError::Map { start: vma.start, end: vma.end, source })?;
                vmas.insert(vma);
            }
            Effect::Unmap { start, end } => {
                check_effect(start, end)?;
                vmas.remove(start, end);
                cache.unmap(start, end)?;
                shared.remove(start, end);
            }
            Effect::Protect { start, end, prot } => {
                check_effect(start, end)?;
                vmas.protect(start, end, prot);
                cache.protect(start, end, prot)?;
            }
            Effect::Discard { start, end } => {
                check_effect(start, end)?;
                cache.discard(start, end)?;
            }
            Effect::Move { from, to, len } => {
                check_effect(from, from.saturating_add(len))?;
                check_effect(to, to.saturating_add(len))?;
                cache.relocate(from, to, len);
            }
        }
    }
    Ok(outcome.value)
}

/// How long the VMM waits for a mem-server by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
