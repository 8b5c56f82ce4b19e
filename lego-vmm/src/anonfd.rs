//! Descriptors the VMM answers itself from the state of the vNode (Linux's anonymous inodes):
//! a signalfd reads the caller's pending signals, a pidfd tells of a process's end.

use lego_proto::sync::LockExt;
use std::sync::{Arc, Mutex};

use crate::fs::Stat;
use crate::identity::Creds;

/// Tells whether a process of the run has ended (the process table).
pub trait Exits: Send + Sync {
    /// Whether process `pid` has ended (a zombie, or reaped already).
    fn ended(&self, pid: i32) -> bool;
}

/// What an anonymous descriptor is.
pub enum AnonFile {
    /// A signalfd and the signals it takes.
    Signal(Mutex<u64>),
    /// A pidfd for process `pid` of the run.
    Pid { pid: i32, procs: Arc<dyn Exits> },
    /// A POSIX message queue (`mq_open`).
    Mqueue(Arc<crate::mqueue::Mq>),
}

/// Size of `struct signalfd_siginfo`.
pub const SIGNALFD_SIZE: usize = 128;

impl AnonFile {
    /// The name `/proc/PID/fd` shows (`anon_inode:[signalfd]`).
    pub fn name(&self) -> &'static [u8] {
        match self {
            AnonFile::Signal(_) => b"anon_inode:[signalfd]",
            AnonFile::Pid { .. } => b"anon_inode:[pidfd]",
            AnonFile::Mqueue(_) => b"/dev/mqueue",
        }
    }

    /// The signals a signalfd takes (0 for the others).
    pub fn signal_mask(&self) -> u64 {
        match self {
            AnonFile::Signal(m) => *m.lock_unpoisoned(),
            AnonFile::Pid { .. } | AnonFile::Mqueue(_) => 0,
        }
    }

    /// Whether a read (signalfd) or a receive (message queue) would not wait, or the process
    /// ended (pidfd), for a thread with signals `pending` (its own and its process's).
    pub fn readable(&self, pending: u64) -> bool {
        match self {
            AnonFile::Signal(_) => pending & self.signal_mask() != 0,
            AnonFile::Pid { pid, procs } => procs.ended(*pid),
            AnonFile::Mqueue(q) => !q.is_empty(),
        }
    }

    /// Whether a send would not wait (a message queue with room).
    pub fn writable(&self) -> bool {
        matches!(self, AnonFile::Mqueue(q) if q.has_room())
    }

    /// `fstat` of the descriptor: the anonymous inode, owned by the caller (`creds`).
    pub fn stat(&self, creds: &Creds) -> Stat {
        Stat {
            dev: 0xd,
            ino: 1,
            mode: 0o600,
            nlink: 1,
            uid: creds.euid,
            gid: creds.egid,
            blksize: 4096,
            ..Stat::default()
        }
    }
}

/// The `struct signalfd_siginfo` of a signal.
pub fn signalfd_siginfo(info: &crate::signal::SigInfo) -> [u8; SIGNALFD_SIZE] {
    let mut b = [0u8; SIGNALFD_SIZE];
    b[0..4].copy_from_slice(&(info.signo as u32).to_le_bytes());
    b[8..12].copy_from_slice(&info.code.to_le_bytes());
    match info.sender {
        Some((pid, uid)) if info.timer_id().is_some() => {
            // ssi_tid is the timer id, ssi_overrun its overrun count.
            b[24..28].copy_from_slice(&(pid as u32).to_le_bytes());
            b[32..36].copy_from_slice(&uid.to_le_bytes());
        }
        Some((pid, uid)) => {
            b[12..16].copy_from_slice(&(pid as u32).to_le_bytes());
            b[16..20].copy_from_slice(&uid.to_le_bytes());
        }
        None => b[72..80].copy_from_slice(&info.addr.to_le_bytes()),
    }
    b[40..44].copy_from_slice(&info.status.to_le_bytes());
    // ssi_int and ssi_ptr both carry si_value.
    b[44..48].copy_from_slice(&(info.value as u32).to_le_bytes());
    b[48..56].copy_from_slice(&info.value.to_le_bytes());
    b
}
