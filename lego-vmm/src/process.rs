//! The Linux state layer of one vNode process (LegoOS §4.3.3): everything the VMM must remember
//! between system calls.

use lego_proto::sync::LockExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::fdtable::FdTable;
use crate::fs::FileSystem;
use crate::identity::{Creds, ExecImage};
use crate::memory::mm::Mm;
use crate::proctable::ProcTable;
use crate::pseudo::view::ProcView;
use crate::signal::{AltStack, Pending, Signals};
use crate::threads::ThreadGroup;

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Termination {
    /// `exit`/`exit_group` with this status.
    Exited(i32),
    /// Killed by a signal; `detail` says why (fault address and RIP for faults).
    Signaled { signal: i32, detail: Option<String> },
}

impl Termination {
    /// The status `wait4` reports for this end.
    pub fn wait_status(&self) -> i32 {
        match self {
            Termination::Exited(c) => crate::proctable::wait_status(Some(*c), None),
            Termination::Signaled { signal, .. } => crate::proctable::wait_status(None, Some(*signal)),
        }
    }

    /// The status a shell would report: the exit code, or 128 + signal.
    pub fn shell_status(&self) -> i32 {
        match self {
            Termination::Exited(c) => c & 0xff,
            Termination::Signaled { signal, .. } => 128 + signal,
        }
    }
}

/// Per-call counters for `--stats` and the report of unimplemented calls.
#[derive(Debug, Default, Clone)]
pub struct SyscallStats {
    pub calls: u64,
    pub by_nr: BTreeMap<u64, u64>,
    /// Calls answered with ENOSYS because lego does not implement them.
    pub unimplemented: BTreeMap<u64, u64>,
    /// Threads the process started (`clone`), besides its first.
    pub threads_created: u64,
    /// Most memory `mlock`ed at once (bytes).
    pub peak_locked: u64,
    /// Most memory shared between processes mapped at once in the run (bytes), filled in at
    /// its end.
    pub peak_shared: u64,
}

impl ThreadState {
    /// A new thread made by this one (`clone`, or `fork`'s first thread): the signal mask and
    /// the scheduling settings are inherited, nothing else.
    pub fn child(&self) -> ThreadState {
        ThreadState { sigmask: self.sigmask, affinity: self.affinity, sched: self.sched, nice: self.nice, ioprio: self.ioprio, ..ThreadState::default() }
    }
}

/// What belongs to one thread of the process, kept in the process so that other threads can
/// signal it.
#[derive(Debug, Clone, Default)]
pub struct ThreadState {
    /// `CLONE_CHILD_CLEARTID` / `set_tid_address`: zeroed and futex-woken when the thread ends.
    pub clear_child_tid: u64,
    /// `set_robust_list`: (head, length).
    pub robust_list: (u64, u64),
    /// Blocked signals.
    pub sigmask: u64,
    /// Signals sent to this thread (`tkill`, `tgkill`) and not yet delivered.
    pub pending: Pending,
    /// `sigaltstack`.
    pub altstack: AltStack,
    /// The mask `rt_sigsuspend` replaced, given back when its handler returns.
    pub saved_mask: Option<u64>,
    /// When an interrupted sleep (`nanosleep`, relative `clock_nanosleep`) is due: the call,
    /// restarted after a signal that ran no handler (a stop, an ignored signal), sleeps only
    /// what is left, as Linux's restart block has it.
    pub sleep_until: Option<std::time::Instant>,
    /// The host thread running it, once it runs.
    pub host: Option<crate::hostcpu::HostThread>,
    /// `sched_setaffinity`: the host cores it may run on (`None`: all of the vNode's).
    pub affinity: Option<u64>,
    /// `sched_setscheduler`: (policy, priority).
    pub sched: (i32, i32),
    /// `setpriority`: the nice value, -20 to 19 (applied to the host thread too).
    pub nice: i32,
    /// `ioprio_set`: the I/O class and level, as `ioprio_get` returns them.
    pub ioprio: u16,
    /// Its registered `struct rseq` (0: none), whose CPU id a pinned thread's pin sets.
    pub rseq: u64,
}

/// Id of the first thread of the first process, which is also its process id.
pub const MAIN_TID: i32 = crate::proctable::FIRST_PID;

/// A vNode process: the state all its threads share, behind one lock (see [`Locked`]).
pub struct Process {
    pub pid: i32,
    pub mm: Mm,
    pub fds: FdTable,
    pub fs: Arc<dyn FileSystem>,
    /// Current directory as a vNode path (absolute, no trailing slash except `/`).
    pub cwd: Vec<u8>,
    pub umask: u32,
    pub creds: Creds,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Node name `uname` reports (the vNode's name).
    pub hostname: String,
    /// `RLIMIT_*` (soft, hard) by resource number.
    pub rlimits: [(u64, u64); 16],
    /// The live threads by id.
    pub threads: BTreeMap<i32, ThreadState>,
    /// The processes of the run, which thread ids also come from.
    pub procs: Arc<ProcTable>,
    /// What the threads share outside the lock: futexes, and whether the process is ending.
    pub group: Arc<ThreadGroup>,
    pub signals: Signals,
    /// The vNode's network, shared by its processes ([`crate::net`]).
    pub net: Arc<crate::net::Net>,
    /// `PR_SET_NAME` name.
    pub comm: [u8; 16],
    pub stats: SyscallStats,
    /// `personality(2)`.
    pub personality: u32,
    /// The host cores the vNode may use (as the VMM found them when the run started).
    pub cores: u64,
    /// CPU time of its threads that ended, and of the children it reaped (`getrusage`).
    pub usage: crate::hostcpu::CpuTime,
    pub children_usage: crate::hostcpu::CpuTime,
    /// Its interval and POSIX timers.
    pub timers: crate::timers::Timers,
    /// The file locks of the run, one table for every process of it.
    pub locks: Arc<crate::locks::LockTable>,
    /// The pipes of the run's FIFOs, one table for every process of it.
    pub fifos: Arc<crate::fifo::Fifos>,
    /// The descriptions in flight in `SCM_RIGHTS` messages, one table for every process of the
    /// run.
    pub in_flight: Arc<crate::scm_rights::InFlight>,
    /// The pseudo-terminals of the run and its sessions' controlling terminals, one table for
    /// every process of it.
    pub ptys: Arc<crate::pty::Ptys>,
    /// `mlock` state and the writable shared file mappings.
    pub maps: crate::mapstate::MapState,
    /// The System V IPC objects of the run, one table of each kind for every process of it.
    pub ipc: Arc<crate::sysv::Ipc>,
    /// The POSIX message queues of the run, one table for every process of it.
    pub mqueues: Arc<crate::mqueue::MqTable>,
    pub started: Instant,
    /// The program it runs (for `/proc/PID`).
    pub image: ExecImage,
}

impl Process {
    /// The snapshot of process `pid` of the vNode for `/proc`: this one's own, or one through
    /// its process table.
    pub fn view_of(&self, pid: i32) -> Option<ProcView> {
        if pid == self.pid {
            Some(self.view())
        } else {
            self.procs.view(pid)
        }
    }

    /// The snapshot of this process for `/proc`.
    pub fn view(&self) -> ProcView {
        let end = self.comm.iter().position(|&c| c == 0).unwrap_or(self.comm.len());
        let mut ignored = 0u64;
        let mut caught = 0u64;
        for (sig, a) in self.signals.actions.iter().enumerate().skip(1) {
            let bit = 1u64 << (sig - 1);
            match a.handler {
                crate::signal::SIG_DFL => {}
                crate::signal::SIG_IGN => ignored |= bit,
                _ => caught |= bit,
            }
        }
        let cache = self.mm.cache_stats();
        let first = self.threads.get(&self.pid).or_else(|| self.threads.values().next());
        ProcView {
            pid: self.pid,
            tid: self.pid,
            comm: self.comm[..end].to_vec(),
            image: self.image.clone(),
            cwd: self.cwd.clone(),
            creds: self.creds,
            umask: self.umask,
            rlimits: self.rlimits,
            threads: self.threads.keys().copied().collect(),
            stopped: self.group.stopped(),
            nice: self.threads.iter().map(|(&tid, t)| (tid, t.nice)).collect(),
            maps: self.mm.vmas().iter().cloned().collect(),
            shared: self.mm.shared_ranges(),
            faults: (cache.plocal_fills, cache.misses),
            resident: cache.resident * crate::layout::PAGE_SIZE,
            mem_size: self.mm.size(),
            fds: self.fds.open_files().collect(),
            started: self.started,
            sig_pending: self.signals.pending.bits() | first.map_or(0, |t| t.pending.bits()),
            sig_blocked: first.map_or(0, |t| t.sigmask),
            sig_ignored: ignored,
            sig_caught: caught,
            probe: self.mm.cache().probe(),
            memory: (self.mm.proc_id(), self.mm.home().to_string(), self.mm.servers().to_vec()),
        }
    }

    /// The CPU time of the process so far: its live threads' and its ended threads'.
    pub fn cpu_time(&self) -> crate::hostcpu::CpuTime {
        self.threads.values().filter_map(|t| t.host).fold(self.usage, |sum, h| sum + h.spent())
    }

    /// A fresh process (pid 1 of its vNode) over `mm` and `fs`, with the host's credentials,
    /// groups and resource limits, no descriptors, `/` as cwd and umask 022. `execfn` names it
    /// (`PR_GET_NAME`). It has one thread, [`MAIN_TID`].
    pub fn new(mm: Mm, fs: Arc<dyn FileSystem>, hostname: String, execfn: &[u8]) -> std::io::Result<Process> {
        let group = Arc::new(ThreadGroup::new(Arc::default())?);
        let rlimits = std::array::from_fn(|r| host_rlimit(r as libc::__rlimit_resource_t));
        let net = crate::net::Net::new(&hostname, crate::net::NetConfig::standalone());
        let procs = Arc::new(ProcTable::new());
        procs.vdso_clock().attach(mm.sys_shared());
        Ok(Process {
            pid: MAIN_TID,
            mm,
            fds: FdTable::new(rlimits[libc::RLIMIT_NOFILE as usize].0.min(1 << 20) as usize),
            fs,
            cwd: b"/".to_vec(),
            umask: 0o022,
            creds: Creds::of_host(),
            groups: host_groups(),
            hostname,
            rlimits,
            // The first thread starts with the VMM's nice value, as across execve.
            threads: BTreeMap::from([(MAIN_TID, ThreadState { nice: crate::hostcpu::own_nice(), ..ThreadState::default() })]),
            procs,
            group,
            signals: Signals::default(),
            net,
            comm: comm_of(execfn),
            stats: SyscallStats::default(),
            personality: 0,
            cores: crate::hostcpu::cores(),
            usage: Default::default(),
            children_usage: Default::default(),
            timers: Default::default(),
            locks: Default::default(),
            fifos: Default::default(),
            in_flight: Default::default(),
            ptys: Default::default(),
            maps: Default::default(),
            ipc: Default::default(),
            mqueues: Default::default(),
            started: Instant::now(),
            image: ExecImage::default(),
        })
    }

    /// A child of this process made by thread `tid` (fork): pid `pid`, a copy of the address
    /// space (see [`Mm::fork`]), the same open file descriptions, dispositions and identity, one
    /// thread with the caller's signal mask and alternate stack, nothing pending.
    pub fn fork(&mut self, tid: i32, pid: i32) -> Result<Process, crate::error::VmmError> {
        let mm = self.mm.fork()?;
        self.procs.vdso_clock().attach(mm.sys_shared());
        let group = Arc::new(ThreadGroup::new(self.group.shared_futexes.clone()).map_err(|e| crate::error::VmmError::Config(format!("a thread group: {e}")))?);
        let caller = self.thread(tid);
        let thread = ThreadState { altstack: caller.altstack, ..caller.child() };
        let signals = Signals { actions: self.signals.actions, pending: Pending::default() };
        Ok(Process {
            pid,
            mm,
            fds: self.fds.clone(),
            fs: self.fs.clone(),
            cwd: self.cwd.clone(),
            umask: self.umask,
            creds: self.creds,
            groups: self.groups.clone(),
            hostname: self.hostname.clone(),
            rlimits: self.rlimits,
            threads: BTreeMap::from([(pid, thread)]),
            procs: self.procs.clone(),
            group,
            signals,
            net: self.net.clone(),
            comm: self.comm,
            stats: SyscallStats::default(),
            personality: self.personality,
            cores: self.cores,
            usage: Default::default(),
            children_usage: Default::default(),
            timers: Default::default(),
            locks: self.locks.clone(),
            fifos: self.fifos.clone(),
            in_flight: self.in_flight.clone(),
            ptys: self.ptys.clone(),
            maps: self.maps.forked(),
            ipc: self.ipc.clone(),
            mqueues: self.mqueues.clone(),
            started: Instant::now(),
            image: self.image.clone(),
        })
    }

    /// The state of thread `tid` (created empty if the thread is unknown, which the run loop
    /// never lets happen).
    pub fn thread(&mut self, tid: i32) -> &mut ThreadState {
        self.threads.entry(tid).or_default()
    }
}

/// The process lock as a system call holds it. A call that blocks releases it for the wait
/// ([`Locked::unlocked`]), so that the other threads go on.
pub struct Locked<'a> {
    mutex: &'a Mutex<Process>,
    guard: Option<MutexGuard<'a, Process>>,
}

impl<'a> Locked<'a> {
    /// Takes the lock.
    pub fn lock(mutex: &'a Mutex<Process>) -> Locked<'a> {
        Locked { mutex, guard: Some(mutex.lock_unpoisoned()) }
    }

    /// Runs `f` without the lock and takes it again. Anything read from the process before may
    /// have changed by then.
    pub fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.guard = None;
        let r = f();
        self.guard = Some(self.mutex.lock_unpoisoned());
        r
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = Process;
    fn deref(&self) -> &Process {
        self.guard.as_deref().expect("the lock is held outside `unlocked`")
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Process {
        self.guard.as_deref_mut().expect("the lock is held outside `unlocked`")
    }
}

fn host_groups() -> Vec<u32> {
    let mut groups = vec![0 as libc::gid_t; 256];
    // SAFETY: `groups` has room for 256 entries, the size passed.
    let n = unsafe { libc::getgroups(256, groups.as_mut_ptr()) };
    groups.truncate(n.max(0) as usize);
    groups
}

fn host_rlimit(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid rlimit to fill.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
        return (u64::MAX, u64::MAX);
    }
    (r.rlim_cur, r.rlim_max)
}

/// The `comm` name of a program run as `execfn`: its last path component, at most 15 bytes.
pub fn comm_of(execfn: &[u8]) -> [u8; 16] {
    let base = execfn.rsplit(|&b| b == b'/').next().unwrap_or(execfn);
    let mut comm = [0u8; 16];
    let n = base.len().min(15);
    comm[..n].copy_from_slice(&base[..n]);
    comm
}

