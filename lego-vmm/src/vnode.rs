//! A vNode process running as a KVM guest: creation and the vCPU run loop.

use lego_proto::sync::{CondvarExt, LockExt};
use std::io::Write;
use std::ops::ControlFlow::{self, Break, Continue};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd, VmFd};

use crate::delivery;
use crate::cpu::{self, GuestEvent};
use crate::elf::{self, ElfInfo};
use crate::errno::{Errno, SysResult};
use crate::error::VmmError;
use crate::memory::excache::{Access, CacheStats, Fault, MemoryConfig, Pager};
use crate::memory::shared::{SHARED_GPA, WINDOW_SIZE};
use crate::fault::{self, Frame};
use crate::fdtable::{Backing, FdTable, OpenFile};
use crate::fs::{hostdir::HostDir, remote::RemoteFs, FileSystem};
use crate::kick::{self, Kicker};
use crate::kvm_stats::KvmStats;
use crate::sysmem::PAGE_FAULT;
use crate::layout::{MAX_VCPUS, PAGE_SIZE, SYS_BASE, USER_MIN};
use crate::memory::excache::owners::CopyLost;
use crate::memory::mm::Mm;
use crate::memory::paging::Prot;
use crate::identity::Creds;
use crate::process::{Locked, Process, SyscallStats, Termination, MAIN_TID};
use crate::signal::SigInfo;
use crate::stack::{self, AuxInfo};
use crate::proctable::{ProcTable, Signalable};
use crate::syscall::{self, Call, Control, Cpu, Forked, NewThread};
use crate::threads::ThreadGroup;
use crate::timers::{Clock, TimerOwner};
use lego_proto::vma::VmaKind;

/// Where a vNode's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Files {
    /// A host directory the program cannot leave (quick local use); the program is a host path.
    HostDir(PathBuf),
    /// The vNode's own mount on a storage server, through the buffer cache of the mem-server at
    /// `cache`; the program is a path in that mount.
    Remote {
        /// The mem-server caching the vNode's files.
        cache: String,
        /// The storage server behind it.
        storage: String,
    },
}

/// How to build a vNode.
#[derive(Debug, Clone)]
pub struct VnodeConfig {
    /// The vNode's name (its `uname` node name).
    pub name: String,
    /// Bytes of user memory (the guest's address space).
    pub mem_size: u64,
    /// Where the vNode's files are.
    pub files: Files,
    /// The directory the first process starts in, a path in the vNode's files (it starts in
    /// `/` if that is not a directory there).
    pub cwd: Vec<u8>,
    /// Print every system call to stderr, strace-style.
    pub trace_syscalls: bool,
    /// Signals the first process starts with ignored ([`crate::signal::bit`] of each), as
    /// `execve` keeps an ignored signal ignored: those its `lego run` had ignored (see
    /// [`crate::signal::host_ignored`]).
    pub ignored_signals: u64,
    /// Signals the first process starts with blocked, as `execve` keeps the mask: those its
    /// `lego run` had blocked (see [`crate::signal::host_blocked`]).
    pub blocked_signals: u64,
    /// Where the memory lives and how much of it may be resident.
    pub memory: MemoryConfig,
    /// Its network: virtual IP and the cluster's endpoint directory.
    pub net: crate::net::NetConfig,
}

/// The program a vNode runs.
#[derive(Debug, Clone)]
pub struct Program {
    /// Host path of the executable.
    pub path: PathBuf,
    pub argv: Vec<Vec<u8>>,
    pub envp: Vec<Vec<u8>>,
}

/// How a run ended, with what it did.
#[derive(Debug)]
pub struct RunReport {
    pub termination: Termination,
    pub stats: SyscallStats,
    /// What the ExCache did.
    pub cache: CacheStats,
    /// KVM's own counters of the VM and its vCPUs: exits, and the faults KVM fixed itself.
    pub kvm: KvmStats,
    pub elapsed: std::time::Duration,
}

/// A vNode process ready to run.
pub struct Vnode {
    // Field order matters for drop: the vCPU goes before the VM and memory in the group.
    vcpu: VcpuFd,
    group: Arc<Group>,
}

/// What the host threads running a process's vCPUs share: one host thread per guest thread,
/// each running its own vCPU of the one VM (LegoOS §4.3.1: a process's threads stay on its
/// pComponent, one core each while there are free cores; the host scheduler places them).
struct Group {
    // Field order matters for drop: vCPUs, then the VM, then the process and its memory.
    /// vCPUs of threads that ended, for the next threads (KVM frees vCPUs only with their VM).
    idle: Mutex<Vec<(u32, VcpuFd)>>,
    vm: VmFd,
    kvm: Kvm,
    process: Mutex<Process>,
    kicker: Arc<Kicker>,
    /// Serves the vCPUs' page faults (ExCache misses) without the process lock.
    pager: Pager,
    /// Page-table root, for new vCPUs.
    cr3: u64,
    /// vCPUs created so far.
    vcpus: AtomicU32,
    /// How the process ended: the first thread to end it decides.
    outcome: Mutex<Option<Result<Termination, VmmError>>>,
    /// Host threads of guest threads other than the first, until they are joined.
    joins: Mutex<Vec<JoinHandle<()>>>,
    /// Host threads running guest threads other than the first, signalled when one ends.
    live: (Mutex<usize>, Condvar),
    trace: bool,
    /// The process's id, and the table of the run's processes.
    pid: i32,
    procs: Arc<ProcTable>,
}

/// A guest image: a validated ELF, or raw code (for benchmarks and tests).
pub(crate) enum Image<'a> {
    Elf { info: ElfInfo, bytes: &'a [u8], interp: Option<Box<crate::loader::Interp>> },
    Code { code: &'a [u8], load_at: u64, iopl3: bool },
}

/// The vNode path of the program (`/proc/PID/exe`, absolute as on Linux): for a host
/// directory, the host path with its symlinks resolved, taken relative to the root when it lies
/// inside.
fn vnode_exe(files: &Files, program: &Path) -> Vec<u8> {
    let Files::HostDir(root) = files else {
        let p = program.as_os_str().as_bytes();
        return if p.starts_with(b"/") { p.to_vec() } else { [&b"/"[..], p].concat() };
    };
    let host = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    inside_root(root, &host).unwrap_or_else(|| host.as_os_str().as_bytes().to_vec())
}

/// The vNode path of `host` (a host path, its symlinks resolved) when it lies inside the host
/// directory `root` of the vNode's files.
fn inside_root(root: &Path, host: &Path) -> Option<Vec<u8>> {
    let inside = host.strip_prefix(root.canonicalize().ok()?).ok()?;
    Some([&b"/"[..], inside.as_os_str().as_bytes()].concat())
}

/// Opens `/dev/kvm`, saying clearly why not.
pub fn open_kvm() -> Result<Kvm, VmmError> {
    Kvm::new().map_err(|e| VmmError::KvmUnavailable(format!("/dev/kvm: {e}")))
}

impl Vnode {
    /// Validates and loads `program` into a new vNode.
    pub fn new(config: &VnodeConfig, program: &Program) -> Result<Vnode, VmmError> {
        let shown = program.path.display().to_string();
        let fs: Arc<dyn FileSystem> = match &config.files {
            Files::HostDir(root) => {
                Arc::new(HostDir::new(root).map_err(|e| VmmError::Config(format!("vNode root {}: {e}", root.display())))?)
            }
            Files::Remote { cache, storage } => Arc::new(
                RemoteFs::connect(cache, storage, &config.name, config.memory.cluster, config.memory.timeout)
                    .map_err(VmmError::Storage)?,
            ),
        };
        let program_error = |source| VmmError::Program { path: shown.clone(), source };
        let bytes = match &config.files {
            Files::HostDir(_) => std::fs::read(&program.path).map_err(program_error)?,
            Files::Remote { .. } => crate::fs::read_all(fs.as_ref(), program.path.as_os_str().as_bytes())
                .map_err(|e| program_error(std::io::Error::from_raw_os_error(e.0)))?,
        };
        let bad_elf = |source| VmmError::BadElf { path: shown.clone(), source };
        let info = elf::parse(&bytes, config.mem_size).map_err(bad_elf)?;
        let interp = crate::loader::interpreter(&info, fs.as_ref(), config.mem_size).map_err(bad_elf)?.map(Box::new);
        // The state layer applies the guest's umask; the host's must not apply a second time.
        // SAFETY: umask only changes this process's file-creation mask.
        unsafe { libc::umask(0) };
        let execfn = program.argv.first().cloned().unwrap_or_else(|| shown.clone().into_bytes());
        Vnode::create(config, fs, Image::Elf { info, bytes: &bytes, interp }, program, &execfn)
    }

    pub(crate) fn create(
        config: &VnodeConfig,
        fs: Arc<dyn FileSystem>,
        image: Image<'_>,
        program: &Program,
        execfn: &[u8],
    ) -> Result<Vnode, VmmError> {
        let mut mm = Mm::new(config.mem_size, &config.memory)?;
        let (entry, rflags, interp_base) = match &image {
            Image::Elf { info, bytes, interp } => {
                let start = crate::loader::load(info, bytes, interp.as_deref(), &mut mm).map_err(|source| VmmError::BadElf {
                    path: program.path.display().to_string(),
                    source,
                })?;
                (start.entry, 0x202, start.interp_base)
            }
            Image::Code { code, load_at, iopl3 } => {
                let end = load_at + (code.len() as u64).div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
                let rx = Prot(Prot::READ.0 | Prot::EXEC.0);
                let bad = |e: Errno| VmmError::Config(format!("code at {load_at:#x}: {e}"));
                if *load_at < USER_MIN {
                    return Err(bad(Errno::EINVAL));
                }
                mm.map_region(*load_at, end, rx, VmaKind::Image).map_err(bad)?;
                mm.load(*load_at, code).map_err(bad)?;
                mm.set_brk_start(end).map_err(bad)?;
                (*load_at, if *iopl3 { 0x3202 } else { 0x202 }, 0)
            }
        };

        let aux = AuxInfo::new(&Creds::of_host()).ok_or_else(|| VmmError::Config("getrandom failed for AT_RANDOM".into()))?;
        let rsp = match &image {
            Image::Elf { info, .. } => stack::build(&mm, info, interp_base, &program.argv, &program.envp, execfn, &aux)
                .map_err(|e| VmmError::Config(format!("arguments and environment do not fit on the stack: {e}")))?,
            Image::Code { .. } => mm.stack_top() - 64,
        };

        let mut process = Process::new(mm, fs, config.name.clone(), execfn)
            .map_err(|e| VmmError::Config(format!("the process's thread group: {e}")))?;
        install_stdio(&mut process.fds);
        if process.fs.stat(&config.cwd, true).is_ok_and(|st| st.mode & libc::S_IFMT == libc::S_IFDIR) {
            process.cwd = config.cwd.clone();
        }
        for sig in 1..=crate::signal::NSIG as i32 {
            if config.ignored_signals & crate::signal::bit(sig) & !crate::signal::UNBLOCKABLE != 0 {
                process.signals.actions[sig as usize].handler = crate::signal::SIG_IGN;
            }
        }
        process.thread(MAIN_TID).sigmask = config.blocked_signals & !crate::signal::UNBLOCKABLE;
        process.net = crate::net::Net::new(&config.name, config.net.clone());
        // `/proc/PID/exe` names the file with its symlinks resolved, as after an `execve`: on
        // a host directory `vnode_exe` resolved them there, on a storage server they are
        // resolved in the vNode's files.
        let mut exe = vnode_exe(&config.files, &program.path);
        if let Files::Remote { .. } = config.files {
            exe = syscall::canonical(&process, &exe).unwrap_or(exe);
        }
        process.image = crate::identity::ExecImage {
            exe,
            argv: program.argv.clone(),
            envp: program.envp.clone(),
        };
        let (vcpu, group) = Group::new(process, entry, rsp, config.trace_syscalls)?;
        if rflags != 0x202 {
            let mut regs = vcpu.get_regs().map_err(VmmError::kvm("GET_REGS"))?;
            regs.rflags = rflags;
            vcpu.set_regs(&regs).map_err(VmmError::kvm("SET_REGS"))?;
        }
        Ok(Vnode { vcpu, group: Arc::new(group) })
    }

    /// The process state (for tests and reports).
    pub fn process(&self) -> MutexGuard<'_, Process> {
        self.group.process.lock_unpoisoned()
    }

    /// Runs the program until it ends: its first thread on the calling thread, every other
    /// one on a host thread of its own.
    pub fn run(self) -> Result<RunReport, VmmError> {
        let started = Instant::now();
        kick::install_handler()?;
        let Vnode { mut vcpu, group } = self;
        let procs = group.procs.clone();
        procs.set_target(MAIN_TID, Arc::downgrade(&group) as Weak<dyn Signalable>);
        let outcome = group.run_process(&mut vcpu);
        let elapsed = started.elapsed();
        if let Ok(t) = &outcome {
            procs.exited(MAIN_TID, t.wait_status());
        }
        // The run is the first process's: whatever it leaves running ends with it.
        procs.end_all();
        let termination = outcome?;
        let kvm = group.kvm_stats(&vcpu);
        let mut p = group.process.lock_unpoisoned();
        let stats = SyscallStats { peak_shared: p.mm.window().peak(), ..std::mem::take(&mut p.stats) };
        Ok(RunReport { termination, stats, cache: p.mm.cache_stats(), kvm, elapsed })
    }

    pub(crate) fn vcpu_mut(&mut self) -> &mut VcpuFd {
        &mut self.vcpu
    }
}

impl Group {
    /// KVM's counters of the VM and every vCPU it made: `first` and the idle ones (the
    /// threads that ran on the others have ended by now). Counters KVM cannot give are logged
    /// and left out.
    fn kvm_stats(&self, first: &VcpuFd) -> KvmStats {
        let mut stats = KvmStats::default();
        let idle = self.idle.lock_unpoisoned();
        let fds = [&self.vm as &dyn AsRawFd, first as &dyn AsRawFd].into_iter().chain(idle.iter().map(|(_, v)| v as &dyn AsRawFd));
        for fd in fds {
            if let Err(e) = stats.add_from(&fd.as_raw_fd()) {
                tracing::debug!("KVM statistics unavailable: {e}");
                break;
            }
        }
        stats
    }

    /// A VM over `process`'s memory, with vCPU 0 set up to start at `entry` with stack `rsp`.
    fn new(process: Process, entry: u64, rsp: u64, trace: bool) -> Result<(VcpuFd, Group), VmmError> {
        let kvm = open_kvm()?;
        let vm = kvm.create_vm().map_err(VmmError::kvm("CREATE_VM"))?;
        let mm = &process.mm;
        let slots = [
            (0, 0, mm.cache().pool().size(), mm.cache().pool().host_addr()),
            (1, SYS_BASE, mm.sys().size(), mm.sys().host_addr()),
            (2, SHARED_GPA, WINDOW_SIZE, mm.window().host_addr()),
        ];
        for (slot, gpa, size, host) in slots {
            let region = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: size,
                userspace_addr: host,
            };
            // SAFETY: `host..host+size` is a mapping owned by `mm` (the window: shared with the
            // run's other processes, and held by `mm`), which outlives the VM: the process
            // (holding `mm`) is dropped after the VM fd (field order of `Group`).
            unsafe { vm.set_user_memory_region(region) }.map_err(VmmError::kvm("SET_USER_MEMORY_REGION"))?;
        }
        let cr3 = mm.cr3();
        let mut vcpu = vm.create_vcpu(0).map_err(VmmError::kvm("CREATE_VCPU"))?;
        cpu::setup_vcpu(&kvm, &vcpu, 0, cr3, entry, rsp)?;
        vcpu.set_sync_valid_reg(SyncReg::Register);
        vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
        let group = Group {
            idle: Mutex::new(Vec::new()),
            vm,
            kvm,
            kicker: process.mm.cache().kicker(),
            pager: process.mm.cache().pager(),
            pid: process.pid,
            procs: process.procs.clone(),
            process: Mutex::new(process),
            cr3,
            vcpus: AtomicU32::new(1),
            outcome: Mutex::new(None),
            joins: Mutex::new(Vec::new()),
            live: (Mutex::new(0), Condvar::new()),
            trace,
        };
        Ok((vcpu, group))
    }

    /// Runs the process, its first thread on `vcpu` (vCPU 0) on the calling thread, until every
    /// thread has ended; returns how the process ended.
    fn run_process(self: &Arc<Self>, vcpu: &mut VcpuFd) -> Result<Termination, VmmError> {
        let copy_lost = self.process.lock_unpoisoned().mm.copy_lost();
        std::thread::scope(|s| {
            // Closed when the threads are done, or on the way out of a panic, which would
            // otherwise wait here for the repairer forever.
            let _closing = copy_lost.as_deref().map(CopyLost::closing);
            if let Some(lost) = &copy_lost {
                let repairer = std::thread::Builder::new().name(format!("repair-{}", self.pid));
                if let Err(e) = repairer.spawn_scoped(s, || self.repair_copies(lost)) {
                    tracing::warn!(pid = self.pid, "no repairer thread ({e}): lost copies are rebuilt at memory calls only");
                }
            }
            self.run_thread(vcpu, 0, self.pid);
            self.wait_for_threads();
        });
        {
            // Its shared file mappings are written back; its record locks go with it, its
            // descriptions' locks go when they close; its semaphore adjustments are made.
            let mut p = self.process.lock_unpoisoned();
            syscall::unmapping_all(&mut p);
            p.locks.release_owner(crate::locks::Owner::Process(self.pid));
            syscall::sysvsem::exit(&p);
            // A session leader's end hangs up its pty: the foreground group gets SIGHUP.
            let leader = p.procs.sid(self.pid) == Ok(self.pid);
            let hung_up = if leader { p.ptys.leader_ended(self.pid) } else { None };
            let targets = hung_up.map(|g| p.procs.group_targets(g)).unwrap_or_default();
            drop(p);
            let others = targets.into_iter().filter(|(pid, _)| *pid != self.pid).collect();
            crate::proctable::signal_in_background(others, &[libc::SIGHUP]);
        }
        let outcome = self.outcome.lock_unpoisoned().take();
        outcome.unwrap_or_else(|| Err(VmmError::GuestCrashed("every thread ended but nothing ended the process: a VMM bug".into())))
    }

    /// Rebuilds the copies of the process's memory lost to a mem-server's failure, each time
    /// one is lost, until the process ends: a program that makes no more memory calls (which
    /// rebuild too) does not keep a single copy to its end. The process is locked meanwhile, as
    /// for a memory call.
    fn repair_copies(&self, lost: &CopyLost) {
        while lost.wait() {
            self.process.lock_unpoisoned().mm.repair();
        }
    }

    /// Starts a child process a fork made, in a VM of its own run by a host thread of its own.
    /// When it ends, its memory is released and its status goes to the process table, where its
    /// parent waits for it.
    fn start_process(forked: Forked, trace: bool) -> Result<(), VmmError> {
        let Forked { process, thread, .. } = forked;
        let (pid, procs) = (thread.tid, process.procs.clone());
        let (mut vcpu, group) = Group::new(process, thread.regs.rip, thread.regs.rsp, trace)?;
        vcpu.set_regs(&thread.regs).map_err(VmmError::kvm("SET_REGS"))?;
        let mut sregs = vcpu.get_sregs().map_err(VmmError::kvm("GET_SREGS"))?;
        (sregs.fs.base, sregs.gs.base) = (thread.fs_base, thread.gs_base);
        vcpu.set_sregs(&sregs).map_err(VmmError::kvm("SET_SREGS"))?;
        let group = Arc::new(group);
        procs.set_target(pid, Arc::downgrade(&group) as Weak<dyn Signalable>);
        let table = procs.clone();
        // The name is how a pComponent daemon counts guest threads (`pcomp.rs`).
        let host = std::thread::Builder::new().name(format!("vcpu-{pid}")).spawn(move || {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group.run_process(&mut vcpu)));
            let termination = match run {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::error!(pid, "process {pid} failed: {e}");
                    Termination::Signaled { signal: libc::SIGKILL, detail: Some(e.to_string()) }
                }
                Err(_) => {
                    tracing::error!(pid, "the host thread of process {pid} panicked");
                    Termination::Signaled { signal: libc::SIGKILL, detail: None }
                }
            };
            if let Termination::Signaled { signal, detail: Some(detail) } = &termination {
                tracing::info!(pid, signal, "process {pid} killed: {detail}");
            }
            // Its descriptors close and its memory goes before its parent hears of its end.
            let (uid, usage) = {
                let p = group.process.lock_unpoisoned();
                (p.creds.uid, p.usage + p.children_usage)
            };
            table.set_usage(pid, usage);
            drop(vcpu);
            drop(group);
            let status = termination.wait_status();
            let mut record = || table.exited(pid, status);
            match table.to_notify(pid) {
                Some((parent, signo)) => parent.child_ended(SigInfo::child(signo, pid, uid, status), &mut record),
                None => record(),
            }
        });
        match host {
            Ok(h) => {
                procs.add_host(h);
                Ok(())
            }
            Err(e) => Err(VmmError::Config(format!("starting the host thread of process {pid}: {e}"))),
        }
    }

    /// Runs guest thread `tid` on `vcpu` (vCPU `index`) until the thread or the process ends.
    fn run_thread(self: &Arc<Self>, vcpu: &mut VcpuFd, index: u32, tid: i32) {
        self.kicker.register(tid, vcpu);
        self.host_thread(tid);
        if let Some(outcome) = self.run_loop(vcpu, index, tid) {
            self.end(outcome);
        }
        // A thread that called `exit` was counted then (before a join could see it end).
        let mut p = self.process.lock_unpoisoned();
        if let Some(h) = p.threads.get_mut(&tid).and_then(|t| t.host.take()) {
            p.usage += h.spent();
        }
        drop(p);
        self.kicker.unregister(tid);
    }

    /// The calling host thread now runs guest thread `tid`: it is recorded (for `getrusage`
    /// and `sched_setaffinity`), pinned as the thread's affinity says and given its nice value.
    fn host_thread(&self, tid: i32) {
        let host = crate::hostcpu::HostThread::current();
        let mut p = self.process.lock_unpoisoned();
        if let Some(t) = p.threads.get_mut(&tid) {
            t.host = Some(host);
            if let Some(mask) = t.affinity {
                if let Err(e) = crate::hostcpu::pin(host.tid, mask) {
                    tracing::warn!(tid, "pinning the host thread: {e}");
                }
            }
            if let Err(e) = crate::hostcpu::renice(host.tid, t.nice) {
                tracing::warn!(tid, "the nice value of the host thread: {e}");
            }
        }
    }

    /// Ends the process (the first outcome counts): every other thread is woken from its waits
    /// and kicked out of its vCPU, and none runs again.
    fn end(&self, outcome: Result<Termination, VmmError>) {
        self.outcome.lock_unpoisoned().get_or_insert(outcome);
        let threads = self.process.lock_unpoisoned().group.clone();
        threads.end();
        self.kicker.kick_all();
    }

    /// Waits until every thread but the first has ended, and joins their host threads.
    fn wait_for_threads(&self) {
        let (count, changed) = &self.live;
        let mut live = count.lock_unpoisoned();
        while *live > 0 {
            live = changed.wait_unpoisoned(live);
        }
        drop(live);
        for handle in std::mem::take(&mut *self.joins.lock_unpoisoned()) {
            // A panicking vCPU thread has already ended the process (see `spawn`).
            let _ = handle.join();
        }
    }

    /// Starts a host thread running `new` on a vCPU of its own: an idle one, or a new one.
    fn spawn(self: &Arc<Self>, new: &NewThread) -> Result<(), VmmError> {
        let idle = self.idle.lock_unpoisoned().pop();
        let reused = idle.is_some();
        let (index, mut vcpu) = match idle {
            Some(v) => v,
            None => {
                let index = self.vcpus.fetch_add(1, Ordering::Relaxed);
                if index >= MAX_VCPUS {
                    self.vcpus.fetch_sub(1, Ordering::Relaxed);
                    return Err(VmmError::Config(format!("more than {MAX_VCPUS} threads at once")));
                }
                let mut vcpu = self.vm.create_vcpu(u64::from(index)).map_err(VmmError::kvm("CREATE_VCPU"))?;
                cpu::setup_vcpu(&self.kvm, &vcpu, index, self.cr3, new.regs.rip, new.regs.rsp)?;
                vcpu.set_sync_valid_reg(SyncReg::Register);
                vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
                (index, vcpu)
            }
        };
        let prepared = (|| {
            if reused {
                // What the vCPU's last thread left in its sync area for the next KVM_RUN to
                // load (the return value of a call an execve interrupted, a signal frame) is
                // not the new thread's: KVM would load it over the registers set below, and
                // the new thread would run on in the old thread's context.
                for reg in [SyncReg::Register, SyncReg::SystemRegister, SyncReg::VcpuEvents] {
                    vcpu.clear_sync_dirty_reg(reg);
                }
                cpu::reset_vcpu(&self.kvm, &vcpu, index, self.cr3, new.regs.rip, new.regs.rsp)?;
            }
            vcpu.set_kvm_immediate_exit(0);
            vcpu.set_regs(&new.regs).map_err(VmmError::kvm("SET_REGS"))?;
            let mut sregs = vcpu.get_sregs().map_err(VmmError::kvm("GET_SREGS"))?;
            (sregs.fs.base, sregs.gs.base) = (new.fs_base, new.gs_base);
            vcpu.set_sregs(&sregs).map_err(VmmError::kvm("SET_SREGS"))
        })();
        if let Err(e) = prepared {
            self.idle.lock_unpoisoned().push((index, vcpu));
            return Err(e);
        }
        *self.live.0.lock_unpoisoned() += 1;
        let (group, tid) = (self.clone(), new.tid);
        // The name is how a pComponent daemon counts guest threads (`pcomp.rs`).
        let started = std::thread::Builder::new().name(format!("vcpu-{tid}")).spawn(move || {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group.run_thread(&mut vcpu, index, tid)));
            if run.is_err() {
                group.end(Err(VmmError::GuestCrashed(format!("the host thread of guest thread {tid} panicked"))));
            }
            group.idle.lock_unpoisoned().push((index, vcpu));
            let (count, changed) = &group.live;
            *count.lock_unpoisoned() -= 1;
            changed.notify_all();
        });
        if let Err(e) = started {
            *self.live.0.lock_unpoisoned() -= 1;
            return Err(VmmError::Config(format!("starting a vCPU thread: {e}")));
        }
        self.joins.lock_unpoisoned().extend(started.ok());
        Ok(())
    }

    /// The run loop of guest thread `tid`. Returns how the process ended if this thread ended
    /// it, `None` if only the thread ended (`exit`) or the process is ending anyway.
    ///
    /// The thread's [`ThreadGroup`] is the one of the image it runs: an `execve` in another
    /// thread ends it (and the thread with it) and gives the process a new one.
    fn run_loop(self: &Arc<Self>, vcpu: &mut VcpuFd, index: u32, tid: i32) -> Option<Result<Termination, VmmError>> {
        let mut threads = {
            let p = self.process.lock_unpoisoned();
            if !p.threads.contains_key(&tid) {
                // An execve ended the thread before it first ran.
                return None;
            }
            p.group.clone()
        };
        loop {
            if threads.ending() {
                return None;
            }
            if threads.stopped() {
                // Job control: no guest code runs until SIGCONT or SIGKILL.
                self.complete_stop(&threads, true);
                threads.wait_while_stopped();
                // The signals that came meanwhile are taken before the guest runs again.
                vcpu.set_kvm_immediate_exit(1);
                continue;
            }
            if let Some(status) = threads.take_job_report() {
                self.report_job_change(status);
            }
            let event = match next_event(vcpu, index, &self.process, &threads) {
                Ok(e) => e,
                Err(_) if threads.ending() => return None,
                Err(e) => return Some(Err(e)),
            };
            let flow = match event {
                GuestEvent::Syscall => self.on_syscall(vcpu, index, tid, &mut threads),
                GuestEvent::Exception(vector) => self.on_exception(vcpu, tid, &threads, vector),
                GuestEvent::Kicked => self.on_kick(vcpu, tid),
                GuestEvent::UserPortIo(port) => self.on_port_io(vcpu, tid, &threads, port),
                GuestEvent::Unexpected(what) => Break(Some(Err(VmmError::GuestCrashed(what)))),
            };
            if let Break(end) = flow {
                if end.is_none() {
                    // A thread that ends while the others park may be the last they wait for.
                    self.complete_stop(&threads, false);
                }
                return end;
            }
        }
    }

    /// The last thread of a stopping process out of the guest completes the stop, and the
    /// parent hears of it. `parking`: the calling thread is out, and waits; otherwise it has
    /// just ended. Counting under the process lock, against the thread list under the same
    /// lock, one of two threads parking and ending at once sees the other.
    fn complete_stop(&self, threads: &ThreadGroup, parking: bool) {
        let complete = {
            let p = self.process.lock_unpoisoned();
            let parked = if parking { threads.park() } else { threads.parked() };
            threads.stopped() && !p.threads.is_empty() && parked >= p.threads.len()
        };
        if complete {
            if let Some(status) = threads.take_job_report() {
                self.report_job_change(status);
            }
        }
    }

    /// The process stopped or continued (wait status `status`): its parent can wait for that
    /// (`WUNTRACED`, `WCONTINUED`) and gets a `SIGCHLD` (unless its action has `SA_NOCLDSTOP`).
    /// Run without the process lock, which the parent's may not be taken under.
    fn report_job_change(&self, status: i32) {
        let uid = self.process.lock_unpoisoned().creds.uid;
        // As for an exit, the SIGCHLD is pending before a wait can take the change.
        let mut record = || self.procs.job_changed(self.pid, status);
        match self.procs.parent_of(self.pid) {
            Some(parent) => parent.child_ended(SigInfo::child(libc::SIGCHLD, self.pid, uid, status), &mut record),
            None => record(),
        }
    }

    /// The thread made a system call: its handler runs under the process lock, and the
    /// control value it returns is settled in the process, then on the vCPU.
    fn on_syscall(self: &Arc<Self>, vcpu: &mut VcpuFd, index: u32, tid: i32, threads: &mut Arc<ThreadGroup>) -> Flow {
        let sync = vcpu.sync_regs_mut();
        let call = Call::of(&sync.regs);
        let mut p = Locked::lock(&self.process);
        if threads.ending() {
            // The call was made in an image that is gone, or the process is ending.
            return Break(None);
        }
        let control = syscall::handle(&mut p, &mut Cpu::new(&mut sync.regs, &mut sync.sregs, tid), &call);
        let next = settle(&mut p, control, tid, threads, self);
        match next {
            Resume::Leave(end) => {
                self.trace(&p, tid, &call, 0);
                Break(end)
            }
            Resume::Exec { entry, rsp } => {
                self.trace(&p, tid, &call, 0);
                *threads = p.group.clone();
                drop(p);
                // The new program starts from a fresh vCPU state, not a return.
                match cpu::reset_vcpu(&self.kvm, vcpu, index, self.cr3, entry, rsp) {
                    Ok(()) => Continue(()),
                    Err(e) => Break(Some(Err(e))),
                }
            }
            Resume::SignalReturn => {
                if let Err(end) = delivery::sigreturn(&mut p, vcpu, tid) {
                    return Break(Some(end.into()));
                }
                self.trace(&p, tid, &call, vcpu.sync_regs_mut().regs.rax);
                Continue(())
            }
            Resume::Return(ret) => {
                self.trace(&p, tid, &call, ret);
                let sync = vcpu.sync_regs_mut();
                sync.regs.rax = ret;
                cpu::emulate_sysret(&mut sync.regs, &mut sync.sregs);
                vcpu.set_sync_dirty_reg(SyncReg::Register);
                vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
                flow(delivery::deliver(&mut p, vcpu, tid, delivery::Entry::Syscall(call.nr)))
            }
        }
    }

    /// With `--trace-syscalls`, prints the strace-style line of `call`, which returned `ret`.
    fn trace(&self, p: &Process, tid: i32, call: &Call, ret: u64) {
        if self.trace {
            // A failing trace sink must not change what the program sees.
            let _ = writeln!(std::io::stderr(), "[{tid}] {}", call.trace(p, ret));
        }
    }

    /// The thread raised exception `vector`: an ExCache miss is served; anything else goes to
    /// the program as the signal Linux would send.
    fn on_exception(&self, vcpu: &mut VcpuFd, tid: i32, threads: &ThreadGroup, vector: u8) -> Flow {
        let mut denied = false;
        if vector == PAGE_FAULT {
            match self.page_fault(vcpu) {
                Ok(None) => return Continue(()),
                Ok(Some(d)) => denied = d,
                Err(e) => return Break(Some(Err(e))),
            }
        }
        let sync = vcpu.sync_regs_mut();
        let (kernel_rsp, cr2) = (sync.regs.rsp, sync.sregs.cr2);
        let mut p = self.process.lock_unpoisoned();
        if threads.ending() {
            // A fault of an image an execve in another thread replaced.
            return Break(None);
        }
        let fault = check_memory(&p).and_then(|()| exception(&p, vector, kernel_rsp, cr2, denied));
        let (fault, frame) = match fault {
            Ok(f) => f,
            Err(e) => return Break(Some(Err(e))),
        };
        flow(delivery::fault(&mut p, vcpu, tid, &fault, &frame, vector, cr2))
    }

    /// The thread was kicked out of the guest because a signal waits for it.
    fn on_kick(&self, vcpu: &mut VcpuFd, tid: i32) -> Flow {
        // Between user instructions only: a vCPU kicked inside a stub exits from it at once,
        // and takes its signals on the way back.
        if vcpu.sync_regs_mut().regs.rip < SYS_BASE {
            let mut p = self.process.lock_unpoisoned();
            return flow(delivery::deliver(&mut p, vcpu, tid, delivery::Entry::Other));
        }
        Continue(())
    }

    /// The thread did port I/O itself: a #GP, to the program's `SIGSEGV` handler if it has
    /// one, as on Linux.
    fn on_port_io(&self, vcpu: &mut VcpuFd, tid: i32, threads: &ThreadGroup, port: u16) -> Flow {
        let regs = &vcpu.sync_regs_mut().regs;
        let frame = Frame { error_code: 0, rip: regs.rip, cs: 0, rflags: regs.rflags, rsp: regs.rsp };
        let mut p = self.process.lock_unpoisoned();
        if threads.ending() {
            return Break(None);
        }
        flow(delivery::fault(&mut p, vcpu, tid, &fault::port_io(port, frame.rip), &frame, 13, 0))
    }

    /// Serves a page fault of the thread on `vcpu`, on this thread: an ExCache miss is
    /// made resident and the thread resumed at the faulting instruction (as `iretq` from the
    /// stub would), with `None`. (An `iretq` in the stub itself measured no faster here, and
    /// would be code user mode can jump to.)
    /// Anything else is for the signal path: `Some(denied)`, where `denied` says the page is
    /// mapped without the right the access needed. A fault not raised by the CPU from user
    /// mode (a jump into the stub) is left to the signal path as it is.
    fn page_fault(&self, vcpu: &mut VcpuFd) -> Result<Option<bool>, VmmError> {
        let sync = vcpu.sync_regs_mut();
        let (kernel_rsp, cr2) = (sync.regs.rsp, sync.sregs.cr2);
        // The CPU pushed error code, RIP, CS, RFLAGS, RSP and SS on this vCPU's own kernel stack
        // (`cpu::check_origin` made sure of it).
        let sys = self.pager.sys();
        let word = |i: u64| sys.read_u64(kernel_rsp + 8 * i);
        let (error, rip, cs, rflags, rsp) = (word(0), word(1), word(2), word(3), word(4));
        if cs & 3 != 3 {
            return Ok(Some(false));
        }
        let access = Access { write: error & 2 != 0, exec: error & 16 != 0, by_vmm: false };
        match self.pager.fault(cr2, access) {
            // Back to the faulting instruction, as `iretq` from the stub would return.
            Ok(Fault::Installed | Fault::Resident) => {
                sync.regs.rip = rip;
                sync.regs.rsp = rsp;
                sync.regs.rflags = rflags;
                sync.sregs.cs = cpu::user_cs();
                sync.sregs.ss = cpu::user_ds();
                vcpu.set_sync_dirty_reg(SyncReg::Register);
                vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
                Ok(None)
            }
            Ok(Fault::Unmapped) => Ok(Some(false)),
            Ok(Fault::Denied) => Ok(Some(true)),
            Err(e) => Err(VmmError::MemoryServer(e.to_string())),
        }
    }
}

/// What the run loop does after an event: run the thread on, or leave the loop (with how the
/// process ended if this thread ended it).
type Flow = ControlFlow<Option<Result<Termination, VmmError>>>;

/// Runs on after a signal step, or leaves the loop if the thread cannot go back to its program.
fn flow(step: Result<(), delivery::Ended>) -> Flow {
    match step {
        Ok(()) => Continue(()),
        Err(end) => Break(Some(end.into())),
    }
}

/// What settling a call's control value needs beyond the process: host threads and VMs. The
/// run loop's [`Group`] starts them for real.
trait Starter {
    /// Starts a vCPU running thread `new`.
    fn spawn(&self, new: &NewThread) -> Result<(), VmmError>;
    /// Starts the child process of a fork in a VM of its own.
    fn start_process(&self, forked: Forked) -> Result<(), VmmError>;
}

impl Starter for Arc<Group> {
    fn spawn(&self, new: &NewThread) -> Result<(), VmmError> {
        Group::spawn(self, new)
    }

    fn start_process(&self, forked: Forked) -> Result<(), VmmError> {
        Group::start_process(forked, self.trace)
    }
}

/// What is left for the vCPU once a call's control value is settled in the process.
#[derive(Debug)]
enum Resume {
    /// Back to the program with RAX `ret` (`sysret`), taking its signals on the way.
    Return(u64),
    /// Restore the signal frame on the stack (`rt_sigreturn`).
    SignalReturn,
    /// Start over at the new image's `entry` with stack `rsp`.
    Exec { entry: u64, rsp: u64 },
    /// Leave the run loop; with how the process ended if this thread ended it.
    Leave(Option<Result<Termination, VmmError>>),
}

/// Settles the control value of a call thread `tid` made in the process: threads and child
/// processes are started (through `start`), an ending thread leaves its state behind. A thread
/// or process that cannot be started fails the call with `EAGAIN`. `threads` is the group of
/// the image the call was made in.
fn settle(p: &mut Locked<'_>, control: Control, tid: i32, threads: &ThreadGroup, start: &impl Starter) -> Resume {
    let eagain = (-Errno::EAGAIN.0 as i64) as u64;
    match control {
        Control::Return(ret) => Resume::Return(ret),
        Control::SignalReturn => Resume::SignalReturn,
        Control::Exec { entry, rsp } => Resume::Exec { entry, rsp },
        Control::MemoryFailed(msg) => Resume::Leave(Some(Err(VmmError::MemoryServer(msg)))),
        Control::ExitGroup(t) => Resume::Leave(Some(Ok(t))),
        // The process ends with its last thread, with that thread's status (as Linux 6.x
        // reports it to the parent, also when the first thread exited earlier with another).
        Control::ExitThread(status) => {
            syscall::exit_thread(p, tid);
            Resume::Leave(p.threads.is_empty().then_some(Ok(Termination::Exited(status))))
        }
        Control::Clone(new) if threads.ending() => {
            // An execve in another thread is replacing the image the new thread was made for.
            p.threads.remove(&new.tid);
            Resume::Return(new.tid as u64)
        }
        Control::Clone(new) => match start.spawn(&new) {
            Ok(()) => Resume::Return(new.tid as u64),
            Err(e) => {
                tracing::warn!(tid = new.tid, "clone: {e}");
                p.threads.remove(&new.tid);
                Resume::Return(eagain)
            }
        },
        Control::Fork(forked) => {
            let (pid, vfork) = (forked.thread.tid, forked.vfork);
            match start.start_process(*forked) {
                Err(e) => {
                    tracing::warn!(pid, "fork: {e}");
                    p.procs.forget(pid);
                    Resume::Return(eagain)
                }
                Ok(()) => {
                    if vfork {
                        // A signal ends the wait, to be delivered (the child has a memory of
                        // its own, which the parent's handler cannot harm).
                        let procs = p.procs.clone();
                        p.unlocked(|| procs.wait_vfork(pid, || threads.ending() || threads.interrupted(tid)));
                    }
                    Resume::Return(pid as u64)
                }
            }
        }
    }
}

impl TimerOwner for Group {
    fn reading(&self, clock: Clock) -> std::time::Duration {
        syscall::time::reading(clock, &self.process.lock_unpoisoned())
    }

    fn expire(&self, key: u64, count: u64, current: &mut dyn FnMut() -> bool) {
        let mut p = self.process.lock_unpoisoned();
        if current() {
            syscall::timers::fire(&mut p, key, count);
        }
    }
}

impl Group {
    /// Runs `f` on the process under its lock. The lock is held only for the length of a
    /// system call, but the caller (reading `/proc`, or setting a thread's scheduling) holds
    /// its own: two processes reaching each other's would wait for ever, so this tries for a
    /// while and gives up (`None`).
    fn try_process<R>(&self, f: impl FnOnce(&mut Process) -> R) -> Option<R> {
        for _ in 0..200 {
            match self.process.try_lock() {
                Ok(mut p) => return Some(f(&mut p)),
                Err(std::sync::TryLockError::Poisoned(e)) => return Some(f(&mut e.into_inner())),
                Err(std::sync::TryLockError::WouldBlock) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        None
    }
}

impl Signalable for Group {
    /// The signal is posted, and the thread that takes it delivers it in its run loop. A
    /// `SIGKILL` ends the process at once, wherever its threads wait, as Linux ends a process
    /// on a fatal signal before any thread takes it.
    fn signal(&self, info: SigInfo) {
        let mut p = self.process.lock_unpoisoned();
        delivery::post_process(&mut p, info, None);
        drop(p);
        if info.signo == libc::SIGKILL {
            self.end(Ok(Termination::Signaled { signal: libc::SIGKILL, detail: None }));
        }
    }

    fn child_ended(&self, info: SigInfo, record: &mut dyn FnMut()) {
        let mut p = self.process.lock_unpoisoned();
        record();
        delivery::post_process(&mut p, info, None);
    }

    fn post_queued(&self, tid: Option<i32>, info: Option<SigInfo>) -> SysResult<()> {
        delivery::post_queued(&mut self.process.lock_unpoisoned(), tid, info, None)
    }

    fn with_process(&self, f: &mut dyn FnMut(&mut dyn std::any::Any)) -> bool {
        self.try_process(|p| f(p)).is_some()
    }

    fn view(&self) -> Option<crate::pseudo::view::ProcView> {
        self.try_process(|p| p.view())
    }
}

/// Runs `vcpu` to its next exit. After a kick it fails with the memory's failure, or because
/// the process is ending; otherwise the kick was for a signal ([`GuestEvent::Kicked`]).
fn next_event(vcpu: &mut VcpuFd, index: u32, process: &Mutex<Process>, threads: &ThreadGroup) -> Result<GuestEvent, VmmError> {
    loop {
        match vcpu.run() {
            Ok(exit) => {
                let (event, port) = (cpu::decode_exit(&exit), cpu::exit_port(&exit));
                if matches!(exit, VcpuExit::IoIn(..)) {
                    cancel_port_read(vcpu)?;
                }
                let sync = vcpu.sync_regs_mut();
                let at = cpu::ExitState {
                    rip: sync.regs.rip,
                    rsp: sync.regs.rsp,
                    rflags: sync.regs.rflags,
                    cs: sync.sregs.cs.selector,
                    vcpu: index,
                };
                return Ok(cpu::check_origin(event, port, &at));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                check_memory(&process.lock_unpoisoned())?;
                if threads.ending() {
                    return Err(VmmError::GuestCrashed("vCPU stopped: the process is ending".into()));
                }
                if vcpu.get_kvm_run().immediate_exit != 0 {
                    vcpu.set_kvm_immediate_exit(0);
                    return Ok(GuestEvent::Kicked);
                }
            }
            Err(source) => return Err(VmmError::Kvm { op: "RUN", source }),
        }
    }
}

/// After a user-mode `in` on a port the stubs leave open (they only `out`, but the TSS bitmap
/// cannot open a port for one direction): KVM completes a port read on the next KVM_RUN,
/// writing RAX and moving RIP past the instruction, even when the VMM has set the registers
/// for a signal handler meanwhile. So the read is completed here without entering the guest
/// (KVM_RUN with `immediate_exit`), and the registers of the faulting instruction are put back:
/// the #GP is then delivered at the `in`, as on Linux.
fn cancel_port_read(vcpu: &mut VcpuFd) -> Result<(), VmmError> {
    let saved = vcpu.sync_regs_mut().regs;
    let kicked = vcpu.get_kvm_run().immediate_exit;
    vcpu.set_kvm_immediate_exit(1);
    match vcpu.run() {
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
        Err(source) => return Err(VmmError::Kvm { op: "RUN (completing a port read)", source }),
        Ok(exit) => return Err(VmmError::GuestCrashed(format!("completing a port read: unexpected exit {exit:?}"))),
    }
    vcpu.set_kvm_immediate_exit(kicked);
    vcpu.sync_regs_mut().regs = saved;
    vcpu.set_sync_dirty_reg(SyncReg::Register);
    Ok(())
}

/// Reads the frame exception `vector` pushed on the kernel stack at `kernel_rsp`, and the
/// signal Linux would send for it. `denied`: a page fault on a page mapped without the right
/// the access needed (whether resident or not), which Linux reports as `SEGV_ACCERR`.
fn exception(p: &Process, vector: u8, kernel_rsp: u64, cr2: u64, denied: bool) -> Result<(fault::Fault, Frame), VmmError> {
    let sys = p.mm.sys();
    let has_err = crate::sysmem::has_error_code(vector);
    let base = kernel_rsp + if has_err { 8 } else { 0 };
    let frame = Frame {
        error_code: if has_err { sys.read_u64(kernel_rsp) | u64::from(denied) } else { 0 },
        rip: sys.read_u64(base),
        cs: sys.read_u64(base + 8),
        rflags: sys.read_u64(base + 16),
        rsp: sys.read_u64(base + 24),
    };
    if frame.cs & 3 != 3 {
        return Err(VmmError::GuestCrashed(format!(
            "exception {vector} in guest kernel mode at rip {:#x}: a VMM bug",
            frame.rip
        )));
    }
    // #UD may be an `int N` (see `fault::classify`): the instruction tells.
    let mut insn = Vec::new();
    if vector == 6 {
        let mut b = [0u8];
        while insn.len() < 15 && p.mm.read_user(frame.rip.wrapping_add(insn.len() as u64), &mut b).is_ok() {
            insn.push(b[0]);
        }
    }
    let fault = fault::classify(vector, &frame, cr2, &insn)
        .ok_or_else(|| VmmError::GuestCrashed(format!("exception {vector} at rip {:#x}", frame.rip)))?;
    Ok((fault, frame))
}

/// Ends the run if the process's memory failed (nothing computed since can be trusted).
fn check_memory(process: &Process) -> Result<(), VmmError> {
    match process.mm.failure() {
        Some(msg) => Err(VmmError::MemoryServer(msg)),
        None => Ok(()),
    }
}

fn install_stdio(fds: &mut FdTable) {
    for fd in 0..3 {
        // SAFETY: F_GETFL on any integer is harmless; it tells whether the host fd is open.
        let status = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if status < 0 {
            continue;
        }
        // SAFETY: duplicating an open descriptor; the duplicate is owned by the OwnedFd below.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            continue;
        }
        // SAFETY: `dup` is a fresh descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(dup) };
        let file = OpenFile::new(Backing::Host(owned), format!("host:{fd}").into_bytes(), status);
        // fd < 3 is within any descriptor limit.
        let _ = fds.install(fd as u64, file, false);
    }
}

/// The default vNode root: the current directory.
pub fn default_root() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| Path::new("/").to_path_buf())
}

/// Where the program of a vNode whose files are the host directory `root` starts: the
/// caller's current directory, as a path in the vNode, when it lies inside `root` (so `lego
/// run --root /` starts where a native run would), else `/`.
pub fn start_dir(root: &Path) -> Vec<u8> {
    let cwd = std::env::current_dir().and_then(|d| d.canonicalize()).ok();
    cwd.and_then(|d| inside_root(root, &d)).unwrap_or_else(|| b"/".to_vec())
}

#[cfg(test)]
mod tests {
    //! The run loop's part of a system call over made-up calls: each is handled against a real
    //! process (whose memory lives on an embedded mem-server), and its control value settled
    //! with a starter that records what it was asked to start, or fails.

    use super::*;
    use kvm_bindings::{kvm_regs, kvm_sregs};
    use std::cell::RefCell;

    /// `pthread_create`'s clone flags.
    const THREAD: u64 = 0x100 | 0x200 | 0x400 | 0x800 | 0x1_0000 | 0x4_0000;

    /// Records the threads and processes it is asked to start; `fail` makes every start fail.
    #[derive(Default)]
    struct Recorder {
        fail: bool,
        threads: RefCell<Vec<i32>>,
        processes: RefCell<Vec<i32>>,
    }

    impl Starter for Recorder {
        fn spawn(&self, new: &NewThread) -> Result<(), VmmError> {
            self.threads.borrow_mut().push(new.tid);
            if self.fail {
                return Err(VmmError::Config("no vCPU".into()));
            }
            Ok(())
        }

        fn start_process(&self, forked: Forked) -> Result<(), VmmError> {
            self.processes.borrow_mut().push(forked.thread.tid);
            if self.fail {
                return Err(VmmError::Config("no VM".into()));
            }
            Ok(())
        }
    }

    /// A process and the mem-server its memory lives on (dropped in this order).
    struct Fixture {
        process: Mutex<Process>,
        _server: mem_server::Handle,
        _root: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let root = tempfile::tempdir().expect("a temporary root");
        let fs = Arc::new(HostDir::new(root.path()).expect("a host directory root"));
        let crate::testing::TestMm { mm, server } = crate::testing::mm(64 << 20);
        let process = Process::new(mm, fs, "t".into(), b"t").expect("a process");
        Fixture { process: Mutex::new(process), _server: server, _root: root }
    }

    /// Thread `tid` makes call `nr` with `args`; what the run loop is left to do.
    fn call(f: &Fixture, start: &Recorder, tid: i32, nr: u64, args: [u64; 6]) -> Resume {
        let [rdi, rsi, rdx, r10, r8, r9] = args;
        let mut regs = kvm_regs { rax: nr, rdi, rsi, rdx, r10, r8, r9, ..Default::default() };
        let mut sregs = kvm_sregs::default();
        let call = Call::of(&regs);
        let mut p = Locked::lock(&f.process);
        let threads = p.group.clone();
        let control = syscall::handle(&mut p, &mut Cpu::new(&mut regs, &mut sregs, tid), &call);
        settle(&mut p, control, tid, &threads, start)
    }

    fn eagain() -> u64 {
        (-Errno::EAGAIN.0 as i64) as u64
    }

    #[test]
    fn a_plain_call_returns_its_value_and_starts_nothing() {
        let (f, start) = (fixture(), Recorder::default());
        let pid = f.process.lock_unpoisoned().pid;
        assert!(matches!(call(&f, &start, MAIN_TID, 39, [0; 6]), Resume::Return(r) if r == pid as u64));
        assert!(start.threads.borrow().is_empty() && start.processes.borrow().is_empty());
    }

    #[test]
    fn an_unknown_call_returns_enosys_and_is_counted() {
        let (f, start) = (fixture(), Recorder::default());
        let enosys = (-Errno::ENOSYS.0 as i64) as u64;
        assert!(matches!(call(&f, &start, MAIN_TID, 100_000, [0; 6]), Resume::Return(r) if r == enosys));
        assert_eq!(f.process.lock_unpoisoned().stats.unimplemented.get(&100_000), Some(&1));
    }

    #[test]
    fn exit_group_ends_the_process_with_its_status() {
        let (f, start) = (fixture(), Recorder::default());
        let got = call(&f, &start, MAIN_TID, 231, [0x107, 0, 0, 0, 0, 0]);
        assert!(matches!(got, Resume::Leave(Some(Ok(Termination::Exited(7))))), "{got:?}");
    }

    #[test]
    fn exit_ends_the_process_only_with_its_last_thread() {
        let (f, start) = (fixture(), Recorder::default());
        let Resume::Return(tid) = call(&f, &start, MAIN_TID, 56, [THREAD, 0x10_0000, 0, 0, 0, 0]) else {
            panic!("clone did not return")
        };
        let tid = tid as i32;
        assert_eq!(*start.threads.borrow(), [tid]);
        let got = call(&f, &start, MAIN_TID, 60, [3, 0, 0, 0, 0, 0]);
        assert!(matches!(got, Resume::Leave(None)), "the first thread leaves alone: {got:?}");
        assert!(!f.process.lock_unpoisoned().threads.contains_key(&MAIN_TID));
        let got = call(&f, &start, tid, 60, [4, 0, 0, 0, 0, 0]);
        assert!(matches!(got, Resume::Leave(Some(Ok(Termination::Exited(4))))), "the last one ends it: {got:?}");
    }

    #[test]
    fn a_thread_that_cannot_start_fails_clone_with_eagain() {
        let (f, start) = (fixture(), Recorder { fail: true, ..Recorder::default() });
        let got = call(&f, &start, MAIN_TID, 56, [THREAD, 0x10_0000, 0, 0, 0, 0]);
        assert!(matches!(got, Resume::Return(r) if r == eagain()), "{got:?}");
        let tried = start.threads.borrow()[0];
        assert!(!f.process.lock_unpoisoned().threads.contains_key(&tried), "its state is gone");
    }

    #[test]
    fn a_thread_cloned_in_an_ending_image_is_not_started() {
        let (f, start) = (fixture(), Recorder::default());
        f.process.lock_unpoisoned().group.end();
        let Resume::Return(tid) = call(&f, &start, MAIN_TID, 56, [THREAD, 0x10_0000, 0, 0, 0, 0]) else {
            panic!("clone did not return")
        };
        assert!(start.threads.borrow().is_empty());
        assert!(!f.process.lock_unpoisoned().threads.contains_key(&(tid as i32)));
    }

    #[test]
    fn a_fork_starts_the_child_and_returns_its_pid() {
        let (f, start) = (fixture(), Recorder::default());
        let Resume::Return(pid) = call(&f, &start, MAIN_TID, 57, [0; 6]) else { panic!("fork did not return") };
        assert_eq!(*start.processes.borrow(), [pid as i32]);
        let p = f.process.lock_unpoisoned();
        assert_eq!(p.procs.ppid(pid as i32), p.pid, "the child is in the process table");
    }

    #[test]
    fn a_fork_that_cannot_start_fails_with_eagain_and_is_forgotten() {
        let (f, start) = (fixture(), Recorder { fail: true, ..Recorder::default() });
        let got = call(&f, &start, MAIN_TID, 57, [0; 6]);
        assert!(matches!(got, Resume::Return(r) if r == eagain()), "{got:?}");
        let pid = start.processes.borrow()[0];
        assert_eq!(f.process.lock_unpoisoned().procs.ppid(pid), 0, "no such process");
    }

    #[test]
    fn rt_sigreturn_is_left_to_the_vcpu_and_counted_once() {
        let (f, start) = (fixture(), Recorder::default());
        assert!(matches!(call(&f, &start, MAIN_TID, 15, [0; 6]), Resume::SignalReturn));
        let p = f.process.lock_unpoisoned();
        assert_eq!((p.stats.calls, p.stats.by_nr.get(&15)), (1, Some(&1)));
    }

    #[test]
    fn an_execve_of_a_missing_program_returns_enoent() {
        let (f, start) = (fixture(), Recorder::default());
        let path = f.process.lock_unpoisoned().mm.mmap(0, 4096, Prot::RW, 0x22, VmaKind::Anon).expect("a page");
        f.process.lock_unpoisoned().mm.write_user(path, b"/nothing\0").expect("the path");
        let enoent = (-Errno::ENOENT.0 as i64) as u64;
        assert!(matches!(call(&f, &start, MAIN_TID, 59, [path, 0, 0, 0, 0, 0]), Resume::Return(r) if r == enoent));
    }
}
