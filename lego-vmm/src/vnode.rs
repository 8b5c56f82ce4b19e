//! A vNode process running as a KVM guest: creation and the vCPU run loop.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, SyncReg, VcpuFd, VmFd};

use crate::cpu::{self, GuestEvent};
use crate::elf::{self, ElfInfo};
use crate::errno::Errno;
use crate::error::VmmError;
use crate::excache::{kick_signal, CacheStats, MemoryConfig};
use crate::fault::{self, Frame};
use crate::fdtable::{Backing, FdTable, OpenFile};
use crate::fs::{hostdir::HostDir, remote::RemoteFs, FileSystem};
use crate::layout::{PAGE_SIZE, SYS_BASE, USER_MIN};
use crate::mm::Mm;
use crate::paging::Prot;
use crate::process::{Creds, Process, SyscallStats, Termination};
use crate::stack::{self, AuxInfo};
use crate::syscall::{self, Cpu};
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
    /// Print every system call to stderr, strace-style.
    pub trace_syscalls: bool,
    /// Where the memory lives and how much of it may be resident.
    pub memory: MemoryConfig,
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
    pub elapsed: std::time::Duration,
}

/// A vNode process ready to run.
pub struct Vnode {
    // Field order matters for drop: the vCPU and VM go before the memory they map.
    vcpu: VcpuFd,
    _vm: VmFd,
    process: Process,
    trace: bool,
}

/// A guest image: a validated ELF, or raw code (for benchmarks and tests).
pub(crate) enum Image<'a> {
    Elf { info: ElfInfo, bytes: &'a [u8] },
    Code { code: &'a [u8], load_at: u64, iopl3: bool },
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
            Files::Remote { .. } => read_whole(fs.as_ref(), program.path.as_os_str().as_bytes()).map_err(program_error)?,
        };
        let info = elf::parse(&bytes, config.mem_size).map_err(|source| VmmError::BadElf { path: shown.clone(), source })?;
        // The state layer applies the guest's umask; the host's must not apply a second time.
        // SAFETY: umask only changes this process's file-creation mask.
        unsafe { libc::umask(0) };
        let execfn = program.argv.first().cloned().unwrap_or_else(|| shown.clone().into_bytes());
        Vnode::create(config, fs, Image::Elf { info, bytes: &bytes }, program, &execfn)
    }

    pub(crate) fn create(
        config: &VnodeConfig,
        fs: Arc<dyn FileSystem>,
        image: Image<'_>,
        program: &Program,
        execfn: &[u8],
    ) -> Result<Vnode, VmmError> {
        let kvm = open_kvm()?;
        let mut mm = Mm::new(config.mem_size, &config.memory)?;
        let (entry, rflags) = match &image {
            Image::Elf { info, bytes } => {
                elf::load(info, bytes, &mut mm).map_err(|source| VmmError::BadElf {
                    path: program.path.display().to_string(),
                    source,
                })?;
                (info.entry, 0x202)
            }
            Image::Code { code, load_at, iopl3 } => {
                let end = load_at + (code.len() as u64).div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
                let rx = Prot(Prot::READ.0 | Prot::EXEC.0);
                let bad = |e: Errno| VmmError::Config(format!("code at {load_at:#x}: {e}"));
                if *load_at < USER_MIN {
                    return Err(bad(Errno::EINVAL));
                }
                mm.map_region(*load_at, end, rx, VmaKind::Image).map_err(bad)?;
                mm.user().write(*load_at, code).map_err(bad)?;
                mm.set_brk_start(end).map_err(bad)?;
                (*load_at, if *iopl3 { 0x3202 } else { 0x202 })
            }
        };

        let vm = kvm.create_vm().map_err(VmmError::kvm("CREATE_VM"))?;
        let slots = [
            (0, 0, mm.user().size(), mm.user().host_addr()),
            (1, SYS_BASE, mm.sys().size(), mm.sys().host_addr()),
        ];
        for (slot, gpa, size, host) in slots {
            let region = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: size,
                userspace_addr: host,
            };
            // SAFETY: `host..host+size` is a mapping owned by `mm`, which outlives the VM: the
            // process (holding `mm`) is dropped after the VM fd (field order of `Vnode`).
            unsafe { vm.set_user_memory_region(region) }.map_err(VmmError::kvm("SET_USER_MEMORY_REGION"))?;
        }

        let creds = Creds::of_host();
        let mut random = [0u8; 16];
        // SAFETY: `random` is a valid 16-byte buffer.
        let got = unsafe { libc::getrandom(random.as_mut_ptr().cast(), 16, 0) };
        if got != 16 {
            return Err(VmmError::Config("getrandom failed for AT_RANDOM".into()));
        }
        let aux = AuxInfo { uid: creds.uid, euid: creds.euid, gid: creds.gid, egid: creds.egid, hwcap: cpu::hwcap(), random };
        let rsp = match &image {
            Image::Elf { info, .. } => stack::build(&mm, info, &program.argv, &program.envp, execfn, &aux)
                .map_err(|e| VmmError::Config(format!("arguments and environment do not fit on the stack: {e}")))?,
            Image::Code { .. } => mm.stack_top() - 64,
        };

        let mut process = Process::new(mm, fs, config.name.clone(), execfn);
        install_stdio(&mut process.fds);

        let mut vcpu = vm.create_vcpu(0).map_err(VmmError::kvm("CREATE_VCPU"))?;
        cpu::setup_vcpu(&kvm, &vcpu, process.mm.cr3(), entry, rsp)?;
        if rflags != 0x202 {
            let mut regs = vcpu.get_regs().map_err(VmmError::kvm("GET_REGS"))?;
            regs.rflags = rflags;
            vcpu.set_regs(&regs).map_err(VmmError::kvm("SET_REGS"))?;
        }
        vcpu.set_sync_valid_reg(SyncReg::Register);
        vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
        Ok(Vnode { vcpu, _vm: vm, process, trace: config.trace_syscalls })
    }

    /// The process state (for tests and reports).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Runs the program until it ends.
    pub fn run(mut self) -> Result<RunReport, VmmError> {
        let started = Instant::now();
        // A memory failure interrupts KVM_RUN with this signal; its handler does nothing.
        extern "C" fn kicked(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
        vmm_sys_util::signal::register_signal_handler(kick_signal(), kicked)
            .map_err(|e| VmmError::Config(format!("installing the vCPU kick handler: {e}")))?;
        self.process.mm.cache().set_vcpu_thread();
        let termination = self.run_loop()?;
        let elapsed = started.elapsed();
        Ok(RunReport {
            termination,
            stats: std::mem::take(&mut self.process.stats),
            cache: self.process.mm.cache_stats(),
            elapsed,
        })
    }



    fn run_loop(&mut self) -> Result<Termination, VmmError> {
        let mut stderr = std::io::stderr();
        loop {
            let event = self.next_event()?;
            let sync = self.vcpu.sync_regs_mut();
            match event {
                GuestEvent::Syscall => {
                    let mut cpu = Cpu { regs: &mut sync.regs, sregs: &mut sync.sregs };
                    let trace = self.trace.then_some(&mut stderr as &mut dyn Write);
                    syscall::handle(&mut self.process, &mut cpu, trace);
                    check_memory(&self.process)?;
                    if let Some(t) = self.process.exit.take() {
                        return Ok(t);
                    }
                    cpu::emulate_sysret(&mut sync.regs, &mut sync.sregs);
                    self.vcpu.set_sync_dirty_reg(SyncReg::Register);
                    self.vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
                }
                GuestEvent::Exception(vector) => {
                    check_memory(&self.process)?;
                    let (kernel_rsp, cr2) = (sync.regs.rsp, sync.sregs.cr2);
                    return self.exception(vector, kernel_rsp, cr2);
                }
                GuestEvent::UserPortIo(port) => {
                    let rip = sync.regs.rip;
                    return Ok(Termination::Signaled {
                        signal: libc::SIGSEGV,
                        detail: Some(format!("general protection fault (out to port {port:#x}), rip {rip:#x}")),
                    });
                }
                GuestEvent::Unexpected(what) => return Err(VmmError::GuestCrashed(what)),
            }
        }
    }

    /// Runs the vCPU to its next exit.
    pub(crate) fn next_event(&mut self) -> Result<GuestEvent, VmmError> {
        loop {
            match self.vcpu.run() {
                Ok(exit) => {
                    let (event, port) = (cpu::decode_exit(&exit), cpu::exit_port(&exit));
                    let rip = self.vcpu.sync_regs_mut().regs.rip;
                    return Ok(cpu::check_origin(event, port, rip));
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => check_memory(&self.process)?,
                Err(source) => return Err(VmmError::Kvm { op: "RUN", source }),
            }
        }
    }

    pub(crate) fn process_mut(&mut self) -> &mut Process {
        &mut self.process
    }

    pub(crate) fn vcpu_mut(&mut self) -> &mut VcpuFd {
        &mut self.vcpu
    }

    /// Turns exception `vector` into the signal that ends the program.
    fn exception(&mut self, vector: u8, kernel_rsp: u64, cr2: u64) -> Result<Termination, VmmError> {
        let sys = self.process.mm.sys();
        let has_err = crate::sysmem::has_error_code(vector);
        let base = kernel_rsp + if has_err { 8 } else { 0 };
        let frame = Frame {
            error_code: if has_err { sys.read_u64(kernel_rsp) } else { 0 },
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
        let fault = fault::classify(vector, &frame, cr2)
            .ok_or_else(|| VmmError::GuestCrashed(format!("exception {vector} at rip {:#x}", frame.rip)))?;
        let handler = self.process.signals.actions[fault.signal as usize].handler;
        let mut detail = fault.detail;
        if handler > 1 {
            detail.push_str(&format!(
                " (the program's handler at {handler:#x} was not run: lego does not run signal handlers yet)"
            ));
        }
        Ok(Termination::Signaled { signal: fault.signal, detail: Some(detail) })
    }
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

/// All of the file at vNode path `path`, read through `fs` (the program of a vNode whose files
/// are remote).
fn read_whole(fs: &dyn FileSystem, path: &[u8]) -> std::io::Result<Vec<u8>> {
    let errno = |e: Errno| std::io::Error::from_raw_os_error(e.0);
    let file = fs.open(path, libc::O_RDONLY, 0).map_err(errno)?;
    let size = file.stat().map_err(errno)?.size;
    let mut bytes = vec![0u8; usize::try_from(size).map_err(|_| errno(Errno::EFBIG))?];
    let n = file.read_at(&mut bytes, 0).map_err(errno)?;
    bytes.truncate(n);
    Ok(bytes)
}

/// The default vNode root: the current directory.
pub fn default_root() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| Path::new("/").to_path_buf())
}
