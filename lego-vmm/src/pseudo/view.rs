//! What `/proc` shows of one process: a snapshot taken under its lock.

use std::sync::Arc;
use std::time::Instant;

use crate::fdtable::OpenFile;
use crate::process::{Creds, ExecImage, Process};
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
    /// Thread ids.
    pub threads: Vec<i32>,
    pub maps: Vec<Vma>,
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
    /// The snapshot of process `pid` of `p`'s vNode: `p`'s own, or one through its process
    /// table.
    pub fn find(p: &Process, pid: i32) -> Option<ProcView> {
        if pid == p.pid {
            Some(ProcView::of(p))
        } else {
            p.procs.view(pid)
        }
    }

    /// The snapshot of `p`.
    pub fn of(p: &Process) -> ProcView {
        let end = p.comm.iter().position(|&c| c == 0).unwrap_or(p.comm.len());
        let mut ignored = 0u64;
        let mut caught = 0u64;
        for (sig, a) in p.signals.actions.iter().enumerate().skip(1) {
            let bit = 1u64 << (sig - 1);
            match a.handler {
                crate::signal::SIG_DFL => {}
                crate::signal::SIG_IGN => ignored |= bit,
                _ => caught |= bit,
            }
        }
        let cache = p.mm.cache_stats();
        let first = p.threads.get(&p.pid).or_else(|| p.threads.values().next());
        ProcView {
            pid: p.pid,
            tid: p.pid,
            comm: p.comm[..end].to_vec(),
            image: p.image.clone(),
            cwd: p.cwd.clone(),
            creds: p.creds,
            umask: p.umask,
            threads: p.threads.keys().copied().collect(),
            maps: p.mm.vmas().iter().cloned().collect(),
            faults: (cache.plocal_fills, cache.misses),
            resident: cache.resident * crate::layout::PAGE_SIZE,
            mem_size: p.mm.size(),
            fds: p.fds.open_files().collect(),
            started: p.started,
            sig_pending: p.signals.pending.bits() | first.map_or(0, |t| t.pending.bits()),
            sig_blocked: first.map_or(0, |t| t.sigmask),
            sig_ignored: ignored,
            sig_caught: caught,
            probe: p.mm.cache().probe(),
            memory: (p.mm.proc_id(), p.mm.home().to_string(), p.mm.servers().to_vec()),
        }
    }

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
