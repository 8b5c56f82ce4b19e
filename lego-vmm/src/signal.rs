//! Signal types of a vNode process, with the semantics of Linux x86-64: dispositions, what is
//! pending and for whom, `siginfo`, alternate stacks. Posting and delivery, which act on a
//! [`Process`](crate::process::Process), are [`crate::delivery`]'s.

use crate::errno::{Errno, SysResult};

/// `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;

/// Number of signals (1..=64).
pub const NSIG: usize = 64;

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

/// Signal state of the process (each thread's mask, alternate stack and own pending signals
/// are in its [`ThreadState`](crate::process::ThreadState); delivery is below).
#[derive(Debug, Clone)]
pub struct Signals {
    pub actions: [SigAction; NSIG + 1],
    /// Signals sent to the process, not yet taken by a thread.
    pub pending: Pending,
}

impl Default for Signals {
    fn default() -> Self {
        Signals { actions: [SigAction::default(); NSIG + 1], pending: Pending::default() }
    }
}

/// Whether the default action of `sig` is to ignore it.
pub fn default_ignores(sig: i32) -> bool {
    matches!(sig, libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH | libc::SIGCONT)
}

/// `si_code` of a signal sent by `kill`.
pub const SI_USER: i32 = 0;
/// `si_code` of a signal sent by the kernel itself.
pub const SI_KERNEL: i32 = 0x80;
/// `si_code` of a signal sent by `tkill` or `tgkill`.
pub const SI_TKILL: i32 = -6;

pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;
pub const SA_RESTORER: u64 = 0x0400_0000;

/// Signals that can be neither caught nor blocked.
pub const UNBLOCKABLE: u64 = bit(libc::SIGKILL) | bit(libc::SIGSTOP);
/// `ss_flags` bit that disarms the alternate stack while a handler runs on it (accepted and
/// remembered, not acted on).
const SS_AUTODISARM: i32 = 1 << 31;

/// The mask bit of signal `sig` (1..=64).
pub const fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// The signals this host process has ignored (`SigIgn` of its `/proc/self/status`, the
/// kernel's view, including the ones the C library reserves), as [`bit`]s: what a program it
/// `execve`d would start with ignored. `SIGPIPE` is left out: the Rust runtime ignores it in
/// every Rust program, whatever the parent gave, and a child it spawns gets it back at the
/// default. None when the file cannot be read.
pub fn host_ignored() -> Option<u64> {
    status_mask("/proc/self/status", "SigIgn:").map(|set| set & !bit(libc::SIGPIPE) & !UNBLOCKABLE)
}

/// The signals the calling host thread blocks (`SigBlk` of its `/proc/thread-self/status`), as
/// [`bit`]s: what a program it `execve`d would start with blocked. None when the file cannot
/// be read.
pub fn host_blocked() -> Option<u64> {
    status_mask("/proc/thread-self/status", "SigBlk:").map(|set| set & !UNBLOCKABLE)
}

/// The hexadecimal signal set of line `key` of the status file `path`.
fn status_mask(path: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix(key))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// What a handler learns about its signal (`siginfo_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: i32,
    pub code: i32,
    /// Who sent it: (pid, uid). `None` for a fault, which has an address instead.
    pub sender: Option<(i32, u32)>,
    /// The faulting address (`si_addr`).
    pub addr: u64,
    /// `si_status` of a `SIGCHLD`: the exit code or the signal that ended the child.
    pub status: i32,
    /// `si_value` of a queued signal (`sigqueue`, a POSIX timer's `sigev_value`).
    pub value: u64,
}

impl SigInfo {
    /// A signal sent by a process (`kill`: [`SI_USER`], `tgkill`: [`SI_TKILL`]).
    pub fn sent(signo: i32, code: i32, pid: i32, uid: u32) -> SigInfo {
        SigInfo { signo, code, sender: Some((pid, uid)), addr: 0, status: 0, value: 0 }
    }

    /// What the parent of child `pid` (of user `uid`) that ended with wait status
    /// `wait_status` (as `wait4` encodes it) gets, as signal `signo` (its exit signal, normally
    /// `SIGCHLD`): `CLD_EXITED` with the exit code, or `CLD_KILLED` with the signal; for the
    /// wait status of a stopped or continued child, `CLD_STOPPED` with the stop signal or
    /// `CLD_CONTINUED`. `waitid` reports a child so too.
    pub fn child(signo: i32, pid: i32, uid: u32, wait_status: i32) -> SigInfo {
        let (code, status) = match wait_status & 0x7f {
            _ if wait_status == CONTINUED_STATUS => (libc::CLD_CONTINUED, libc::SIGCONT),
            0x7f => (libc::CLD_STOPPED, (wait_status >> 8) & 0xff),
            0 => (libc::CLD_EXITED, (wait_status >> 8) & 0xff),
            sig => (libc::CLD_KILLED, sig),
        };
        SigInfo { status, ..SigInfo::sent(signo, code, pid, uid) }
    }

    /// A signal the kernel raises (`SI_KERNEL`): a terminal's `^C`, `^\`, window change or
    /// hang-up.
    pub fn kernel(signo: i32) -> SigInfo {
        SigInfo { signo, code: SI_KERNEL, sender: None, addr: 0, status: 0, value: 0 }
    }

    /// A fault at `addr`.
    pub fn fault(signo: i32, code: i32, addr: u64) -> SigInfo {
        SigInfo { signo, code, sender: None, addr, status: 0, value: 0 }
    }

    /// The 128-byte `siginfo_t`: signo, errno, code, then the union at 16.
    pub fn bytes(&self) -> [u8; SIGINFO_SIZE] {
        let mut b = [0u8; SIGINFO_SIZE];
        b[0..4].copy_from_slice(&self.signo.to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        match self.sender {
            Some((pid, uid)) => {
                b[16..20].copy_from_slice(&pid.to_le_bytes());
                b[20..24].copy_from_slice(&uid.to_le_bytes());
                b[24..28].copy_from_slice(&self.status.to_le_bytes());
            }
            None => b[16..24].copy_from_slice(&self.addr.to_le_bytes()),
        }
        if self.value != 0 {
            b[24..32].copy_from_slice(&self.value.to_le_bytes());
        }
        b
    }

    /// The signal of POSIX timer `id` (`SI_TIMER`): `si_timerid`, `si_overrun` and `si_value`
    /// share the layout of a sender's pid, uid and value.
    pub fn timer(signo: i32, id: i32, overrun: u32, value: u64) -> SigInfo {
        SigInfo { value, ..SigInfo::sent(signo, SI_TIMER, id, overrun) }
    }

    /// The POSIX timer whose signal this is, if it is one.
    pub fn timer_id(&self) -> Option<i32> {
        (self.code == SI_TIMER).then(|| self.sender.map_or(0, |(id, _)| id))
    }
}

/// `si_code` of a signal sent by `sigqueue`.
pub const SI_QUEUE: i32 = -1;
/// `si_code` of a POSIX timer's signal.
pub const SI_TIMER: i32 = -2;
/// `si_code` of a POSIX message queue's notification.
pub const SI_MESGQ: i32 = -3;
/// The first real-time signal (`SIGRTMIN` of the kernel; C libraries keep a few for themselves).
pub const SIGRTMIN: i32 = 32;
/// Most signals queued for one thread or process, as a default `RLIMIT_SIGPENDING` would allow.
const MAX_QUEUED: usize = 4096;

/// Signals waiting for delivery, each with its `siginfo`. A standard signal is pending at most
/// once; each instance of a real-time signal is queued, and they are taken in the order they
/// came.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    bits: u64,
    info: Vec<SigInfo>,
}

impl Pending {
    /// The set of pending signals.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    pub(crate) fn add(&mut self, info: SigInfo) {
        let queues = info.signo >= SIGRTMIN && self.info.len() < MAX_QUEUED;
        if self.bits & bit(info.signo) == 0 || queues {
            self.bits |= bit(info.signo);
            self.info.push(info);
        }
    }

    pub(crate) fn take(&mut self, sig: i32) -> Option<SigInfo> {
        if self.bits & bit(sig) == 0 {
            return None;
        }
        let at = self.info.iter().position(|i| i.signo == sig)?;
        let info = self.info.remove(at);
        if !self.info.iter().any(|i| i.signo == sig) {
            self.bits &= !bit(sig);
        }
        Some(info)
    }

    /// Drops the queued signal of POSIX timer `id` (the timer was set again or deleted: Linux
    /// does not deliver a signal of an earlier arming).
    pub fn drop_timer(&mut self, id: i32) {
        if let Some(at) = self.info.iter().position(|i| i.timer_id() == Some(id)) {
            let sig = self.info.remove(at).signo;
            if !self.info.iter().any(|i| i.signo == sig) {
                self.bits &= !bit(sig);
            }
        }
    }

    /// The queued signal of POSIX timer `id`, if one waits.
    pub fn timer_mut(&mut self, id: i32) -> Option<&mut SigInfo> {
        self.info.iter_mut().find(|i| i.timer_id() == Some(id))
    }
}

/// A thread's alternate signal stack (`sigaltstack`); disabled when its size is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AltStack {
    pub sp: u64,
    pub size: u64,
    /// [`SS_AUTODISARM`] if asked for.
    pub flags: i32,
}

impl AltStack {
    pub(crate) fn enabled(&self) -> bool {
        self.size != 0
    }

    /// Whether stack pointer `sp` is on this stack (Linux's `on_sig_stack`).
    pub(crate) fn contains(&self, sp: u64) -> bool {
        self.enabled() && sp > self.sp && sp - self.sp <= self.size
    }

    /// `ss_flags` as `sigaltstack` and `uc_stack` report them for a thread at `sp`.
    fn flags_at(&self, sp: u64) -> i32 {
        if !self.enabled() {
            libc::SS_DISABLE
        } else if self.contains(sp) {
            libc::SS_ONSTACK | self.flags
        } else {
            self.flags
        }
    }

    /// The 24-byte `stack_t` for a thread at `sp`.
    pub(crate) fn bytes(&self, sp: u64) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&self.sp.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags_at(sp).to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// A new stack from a `stack_t` (`sigaltstack`, `rt_sigreturn`), for a thread at `sp`.
    pub(crate) fn set(&mut self, stack_t: &[u8; 24], sp: u64) -> SysResult<()> {
        let word = |at: usize| u64::from_le_bytes(stack_t[at..at + 8].try_into().unwrap_or_default());
        let flags = i32::from_le_bytes(stack_t[8..12].try_into().unwrap_or_default());
        if self.contains(sp) {
            return Err(Errno::EPERM);
        }
        let new = match flags & !SS_AUTODISARM {
            libc::SS_DISABLE => AltStack::default(),
            0 | libc::SS_ONSTACK if word(16) < libc::MINSIGSTKSZ as u64 => return Err(Errno::ENOMEM),
            0 | libc::SS_ONSTACK => AltStack { sp: word(0), size: word(16), flags: flags & SS_AUTODISARM },
            _ => return Err(Errno::EINVAL),
        };
        *self = new;
        Ok(())
    }
}

/// `sa_flags` bit: the children of a process whose `SIGCHLD` has it are reaped when they end.
pub const SA_NOCLDWAIT: u64 = 2;
/// `sa_flags` bit of a `SIGCHLD` action: no signal when a child stops or continues.
pub const SA_NOCLDSTOP: u64 = 1;

/// The signals whose default action stops the process (job control).
pub fn stops(sig: i32) -> bool {
    matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

/// The wait status of a process stopped by `sig` (`WIFSTOPPED`).
pub fn stopped_status(sig: i32) -> i32 {
    sig << 8 | 0x7f
}

/// The wait status of a stopped process that continued (`WIFCONTINUED`).
pub const CONTINUED_STATUS: i32 = 0xffff;

/// Whether a process whose `SIGCHLD` disposition is `action` leaves no zombies: `SIG_IGN` or
/// [`SA_NOCLDWAIT`] (its children are reaped when they end).
pub fn reaps_children(action: &SigAction) -> bool {
    action.handler == SIG_IGN || action.flags & SA_NOCLDWAIT != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_childs_sigchld_says_how_it_ended() {
        let word = |b: &[u8; SIGINFO_SIZE], at: usize| i32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let exited = SigInfo::child(libc::SIGCHLD, 42, 1000, crate::proctable::wait_status(Some(7), None)).bytes();
        let (signo, code, pid, uid, status) = (word(&exited, 0), word(&exited, 8), word(&exited, 16), word(&exited, 20), word(&exited, 24));
        assert_eq!((signo, code, pid, uid, status), (libc::SIGCHLD, libc::CLD_EXITED, 42, 1000, 7));
        let killed = SigInfo::child(libc::SIGCHLD, 43, 0, crate::proctable::wait_status(None, Some(libc::SIGKILL))).bytes();
        assert_eq!((word(&killed, 8), word(&killed, 16), word(&killed, 24)), (libc::CLD_KILLED, 43, libc::SIGKILL));
    }

    #[test]
    fn siginfo_carries_sender_or_address() {
        let b = SigInfo::sent(10, SI_TKILL, 7, 1000).bytes();
        assert_eq!(i32::from_le_bytes(b[0..4].try_into().unwrap()), 10);
        assert_eq!(i32::from_le_bytes(b[8..12].try_into().unwrap()), SI_TKILL);
        assert_eq!(i32::from_le_bytes(b[16..20].try_into().unwrap()), 7);
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 1000);
        let b = SigInfo::fault(11, 1, 0xdead_0000).bytes();
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 0xdead_0000);
    }

    #[test]
    fn a_standard_signal_is_pending_once() {
        let mut q = Pending::default();
        q.add(SigInfo::sent(10, SI_USER, 1, 0));
        q.add(SigInfo::sent(10, SI_USER, 2, 0));
        assert_eq!(q.bits(), bit(10));
        assert_eq!(q.take(10).map(|i| i.sender), Some(Some((1, 0))));
        assert_eq!(q.take(10), None);
        assert_eq!(q.bits(), 0);
    }

    #[test]
    fn the_alternate_stack_cannot_change_under_its_user() {
        let mut a = AltStack::default();
        let stack = |sp: u64, flags: i32, size: u64| {
            let mut b = [0u8; 24];
            b[0..8].copy_from_slice(&sp.to_le_bytes());
            b[8..12].copy_from_slice(&flags.to_le_bytes());
            b[16..24].copy_from_slice(&size.to_le_bytes());
            b
        };
        assert_eq!(a.set(&stack(0x10000, 0, 100), 0), Err(Errno::ENOMEM));
        assert_eq!(a.set(&stack(0x10000, 7, 0x4000), 0), Err(Errno::EINVAL));
        assert_eq!(a.set(&stack(0x10000, 0, 0x4000), 0), Ok(()));
        assert_eq!(a.flags_at(0x12000), libc::SS_ONSTACK);
        assert_eq!(a.flags_at(0x20000), 0);
        assert_eq!(a.set(&stack(0, libc::SS_DISABLE, 0), 0x12000), Err(Errno::EPERM));
        assert_eq!(a.set(&stack(0, libc::SS_DISABLE, 0), 0x20000), Ok(()));
        assert_eq!(a.flags_at(0x12000), libc::SS_DISABLE);
    }
}
