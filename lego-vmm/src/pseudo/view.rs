//! What `/proc` shows of one process: a snapshot taken under its lock.

use std::sync::Arc;
use std::time::Instant;

use crate::fdtable::OpenFile;
use crate::identity::{Creds, ExecImage};
use lego_proto::vma::Vma;

/// A snapshot of a process for its `/proc/PID` files.
#[derive(Clone)]
pub struct ProcView {
    pub pid: i32,
    /// The thread it shows (`/proc/PID/task/TID`); the process's own id otherwise.
    pub tid: i32,
    pub comm: Vec<u8>,
    pub image: ExecImage,
    pub cwd: Vec<u8>,
    pub creds: Creds,
    pub umask: u32,
    /// Resource limits (soft, hard), by `RLIMIT_*` number.
    pub rlimits: [(u64, u64); 16],
    /// Thread ids.
    pub threads: Vec<i32>,
    /// Stopped by a stop signal (job control).
    pub stopped: bool,
    /// Each thread's nice value (`setpriority`), by thread id.
    pub nice: Vec<(i32, i32)>,
    pub maps: Vec<Vma>,
    /// The ranges of `maps` that are shared memory (`MAP_SHARED`).
    pub shared: Vec<(u64, u64)>,
    /// ExCache misses: (lines filled locally, lines fetched from a mem-server).
    pub faults: (u64, u64),
    /// Bytes of ExCache lines resident for it.
    pub resident: u64,
    /// Its user memory size (the vNode's memory).
    pub mem_size: u64,
    /// Open descriptors.
    pub fds: Vec<(u64, Arc<OpenFile>)>,
    pub started: Instant,
    /// Signals pending for the process and its threads, blocked by the first thread, ignored
    /// and caught (`SigPnd`/`SigBlk`/`SigIgn`/`SigCgt` of `status`).
    pub sig_pending: u64,
    pub sig_blocked: u64,
    pub sig_ignored: u64,
    pub sig_caught: u64,
    /// Reads its ExCache's statistics later, without its lock (for process reports).
    pub probe: crate::memory::excache::StatsProbe,
    /// The id the mem-servers know its memory by, its home mem-server, and every mem-server
    /// its memory may be on (for its reports and the lease it holds with its home).
    pub memory: (u64, String, Vec<String>),
}

impl ProcView {
    /// When it started, in milliseconds since the Unix epoch.
    pub fn started_unix_ms(&self) -> u64 {
        let t = super::clock::wall_time(self.started);
        (t.sec as u64) * 1000 + (t.nsec as u64) / 1_000_000
    }

    /// Bytes of address space in regions (`VmSize`).
    pub fn vsz(&self) -> u64 {
        self.maps.iter().map(|v| v.end - v.start).sum()
    }
}
