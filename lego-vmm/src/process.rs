//! The Linux state layer of one vNode process (LegoOS §4.3.3): everything the VMM must remember
//! between system calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::fdtable::FdTable;
use crate::fs::FileSystem;
use crate::mm::Mm;

/// Number of signals (1..=64).
pub const NSIG: usize = 64;

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Termination {
    /// `exit`/`exit_group` with this status.
    Exited(i32),
    /// Killed by a signal; `detail` says why (fault address and RIP for faults).
    Signaled { signal: i32, detail: Option<String> },
}

impl Termination {
    /// The status a shell would report: the exit code, or 128 + signal.
    pub fn shell_status(&self) -> i32 {
        match self {
            Termination::Exited(c) => c & 0xff,
            Termination::Signaled { signal, .. } => 128 + signal,
        }
    }
}

/// One `rt_sigaction` disposition, as the kernel stores it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// `SIG_DFL` / `SIG_IGN` handler values.
pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

/// Signal state of the process.
#[derive(Debug, Clone)]
pub struct Signals {
    pub actions: [SigAction; NSIG + 1],
    pub mask: u64,
    /// Raised but blocked signals, delivered when unblocked.
    pub pending: u64,
    /// `sigaltstack`: (ss_sp, ss_flags, ss_size).
    pub altstack: (u64, i32, u64),
}

impl Default for Signals {
    fn default() -> Self {
        Signals { actions: [SigAction::default(); NSIG + 1], mask: 0, pending: 0, altstack: (0, libc::SS_DISABLE, 0) }
    }
}

/// Whether the default action of `sig` is to ignore it.
pub fn default_ignores(sig: i32) -> bool {
    matches!(sig, libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH | libc::SIGCONT)
}

/// User and group ids.
#[derive(Debug, Clone, Copy)]
pub struct Creds {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
}

/// Per-call counters for `--stats` and the report of unimplemented calls.
#[derive(Debug, Default, Clone)]
pub struct SyscallStats {
    pub calls: u64,
    pub by_nr: BTreeMap<u64, u64>,
    /// Calls answered with ENOSYS because lego does not implement them.
    pub unimplemented: BTreeMap<u64, u64>,
}

/// A vNode process.
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
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
    pub clear_child_tid: u64,
    pub robust_list: (u64, u64),
    pub signals: Signals,
    /// `PR_SET_NAME` name.
    pub comm: [u8; 16],
    pub stats: SyscallStats,
    pub started: Instant,
    /// Set when the process has ended.
    pub exit: Option<Termination>,
}

impl Creds {
    /// The credentials of the VMM process, which a vNode process starts with.
    pub fn of_host() -> Creds {
        // SAFETY: these calls only read the caller's credentials.
        unsafe {
            Creds {
                uid: libc::getuid(),
                euid: libc::geteuid(),
                suid: libc::geteuid(),
                gid: libc::getgid(),
                egid: libc::getegid(),
                sgid: libc::getegid(),
            }
        }
    }
}

impl Process {
    /// A fresh process (pid 1 of its vNode) over `mm` and `fs`, with the host's credentials,
    /// groups and resource limits, no descriptors, `/` as cwd and umask 022. `execfn` names it
    /// (`PR_GET_NAME`).
    pub fn new(mm: Mm, fs: Arc<dyn FileSystem>, hostname: String, execfn: &[u8]) -> Process {
        let rlimits = std::array::from_fn(|r| host_rlimit(r as libc::__rlimit_resource_t));
        Process {
            pid: 1,
            ppid: 0,
            mm,
            fds: FdTable::new(rlimits[libc::RLIMIT_NOFILE as usize].0.min(1 << 20) as usize),
            fs,
            cwd: b"/".to_vec(),
            umask: 0o022,
            creds: Creds::of_host(),
            groups: host_groups(),
            hostname,
            rlimits,
            clear_child_tid: 0,
            robust_list: (0, 0),
            signals: Signals::default(),
            comm: comm_of(execfn),
            stats: SyscallStats::default(),
            started: Instant::now(),
            exit: None,
        }
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

fn comm_of(execfn: &[u8]) -> [u8; 16] {
    let base = execfn.rsplit(|&b| b == b'/').next().unwrap_or(execfn);
    let mut comm = [0u8; 16];
    let n = base.len().min(15);
    comm[..n].copy_from_slice(&base[..n]);
    comm
}

