//! Signals of a vNode process, with the semantics of Linux x86-64: what is pending and for
//! whom, which thread takes a signal sent to the process, and delivery to handlers on a
//! `struct rt_sigframe`, undone by `rt_sigreturn`.
//!
//! The data path, top to bottom:
//! 1. [`post_thread`] and [`post_process`] queue a signal with its `siginfo` and wake the thread
//!    that is to take it: out of a blocking wait ([`ThreadGroup::interrupt`], the wait fails with
//!    `EINTR`) and out of the guest ([`crate::kick::Kicker::kick`]).
//! 2. The thread's run loop calls [`deliver`] each time it is about to go back to the guest
//!    after a system call or a kick. Every deliverable signal gets its disposition: ignored, the
//!    default action (which may end the process), or a handler: [`setup_frame`] saves the
//!    registers, the FPU state and the signal mask in a frame on the thread's stack (or its
//!    alternate stack) and points the vCPU at the handler. A blocking call the signal
//!    interrupted is restarted, or fails with `EINTR` ([`restartable`]).
//! 3. A guest exception becomes a signal forced on the faulting thread ([`fault`]).
//! 4. The handler returns into its `sa_restorer`, which calls `rt_sigreturn` ([`sigreturn`]):
//!    the registers, the FPU state, the mask and the alternate stack come back from the frame,
//!    which is checked; a bad one is a `SIGSEGV` for the program, never a VMM failure.

use kvm_bindings::{kvm_regs, kvm_xsave};
use kvm_ioctls::{SyncReg, VcpuFd};

use crate::cpu;
use crate::errno::{Errno, SysResult};
use crate::error::VmmError;
use crate::fault::{self, Fault};
use crate::layout::{USER_CS, USER_DS};
use crate::process::{Process, Termination};

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
    /// `SIGCHLD`): `CLD_EXITED` with the exit code, or `CLD_KILLED` with the signal. `waitid`
    /// reports a child so too.
    pub fn child(signo: i32, pid: i32, uid: u32, wait_status: i32) -> SigInfo {
        let (code, status) = match wait_status & 0x7f {
            0 => (libc::CLD_EXITED, (wait_status >> 8) & 0xff),
            sig => (libc::CLD_KILLED, sig),
        };
        SigInfo { status, ..SigInfo::sent(signo, code, pid, uid) }
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

    fn add(&mut self, info: SigInfo) {
        let queues = info.signo >= SIGRTMIN && self.info.len() < MAX_QUEUED;
        if self.bits & bit(info.signo) == 0 || queues {
            self.bits |= bit(info.signo);
            self.info.push(info);
        }
    }

    fn take(&mut self, sig: i32) -> Option<SigInfo> {
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
    fn enabled(&self) -> bool {
        self.size != 0
    }

    /// Whether stack pointer `sp` is on this stack (Linux's `on_sig_stack`).
    fn contains(&self, sp: u64) -> bool {
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
    fn bytes(&self, sp: u64) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&self.sp.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags_at(sp).to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// A new stack from a `stack_t` (`sigaltstack`, `rt_sigreturn`), for a thread at `sp`.
    fn set(&mut self, stack_t: &[u8; 24], sp: u64) -> SysResult<()> {
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

/// Why a thread cannot go back to its program.
#[derive(Debug)]
pub enum Ended {
    /// The process ends (a default action, or a signal it could not take).
    Process(Termination),
    /// The VMM failed to read or write the vCPU.
    Vmm(VmmError),
}

impl From<Ended> for Result<Termination, VmmError> {
    fn from(e: Ended) -> Self {
        match e {
            Ended::Process(t) => Ok(t),
            Ended::Vmm(e) => Err(e),
        }
    }
}

// -------------------------------------------------------------------------------------------
// Posting
// -------------------------------------------------------------------------------------------

/// `sa_flags` bit: the children of a process whose `SIGCHLD` has it are reaped when they end.
pub const SA_NOCLDWAIT: u64 = 2;

/// Whether a process whose `SIGCHLD` disposition is `action` leaves no zombies: `SIG_IGN` or
/// [`SA_NOCLDWAIT`] (its children are reaped when they end).
pub fn reaps_children(action: &SigAction) -> bool {
    action.handler == SIG_IGN || action.flags & SA_NOCLDWAIT != 0
}

/// Whether `sig`'s disposition throws it away.
fn ignored(p: &Process, sig: i32) -> bool {
    match p.signals.actions[sig as usize].handler {
        SIG_IGN => sig != libc::SIGKILL,
        SIG_DFL => default_ignores(sig),
        _ => false,
    }
}

/// Whether thread `tid` blocks `sig`.
fn blocks(p: &Process, tid: i32, sig: i32) -> bool {
    p.threads.get(&tid).is_none_or(|t| t.sigmask & bit(sig) != 0)
}

/// Sends `info` to thread `tid` of `p`. `from` is the posting thread of `p`, if any: it looks
/// for signals on its way back to the guest and needs no kick. An ignored signal the thread
/// does not block is thrown away, as Linux does.
pub fn post_thread(p: &mut Process, tid: i32, info: SigInfo, from: Option<i32>) -> SysResult<()> {
    if !p.threads.contains_key(&tid) {
        return Err(Errno::ESRCH);
    }
    let blocked = blocks(p, tid, info.signo);
    if ignored(p, info.signo) && !blocked {
        return Ok(());
    }
    p.thread(tid).pending.add(info);
    if !blocked {
        wake(p, tid, from);
    }
    Ok(())
}

/// Sends `info` to the process `p`: it waits in the process's pending set for the first thread
/// that does not block it, and one such thread is woken to take it, the sender itself if it
/// can (Linux's `complete_signal`). `from` as in [`post_thread`].
pub fn post_process(p: &mut Process, info: SigInfo, from: Option<i32>) {
    let sig = info.signo;
    let taker = from
        .filter(|&t| !blocks(p, t, sig))
        .or_else(|| p.threads.iter().find(|(_, t)| t.sigmask & bit(sig) == 0).map(|(&tid, _)| tid));
    if ignored(p, sig) && taker.is_some() {
        return;
    }
    p.signals.pending.add(info);
    if let Some(tid) = taker {
        wake(p, tid, from);
    }
}

/// Thread `tid` ended: a process signal it was woken to take goes to another thread that can.
pub fn thread_gone(p: &Process, tid: i32) {
    p.group.forget(tid);
    let pending = p.signals.pending.bits();
    if let Some((&taker, _)) = p.threads.iter().find(|(_, t)| pending & !t.sigmask != 0) {
        wake(p, taker, None);
    }
}

fn wake(p: &Process, tid: i32, from: Option<i32>) {
    p.group.interrupt(tid);
    if from != Some(tid) {
        p.mm.cache().kicker().kick(tid);
    }
}

/// The signals thread `tid` could take now: its own and the process's, less those it blocks.
pub fn deliverable(p: &Process, tid: i32) -> u64 {
    p.threads.get(&tid).map_or(0, |t| (t.pending.bits() | p.signals.pending.bits()) & !t.sigmask)
}

/// Thread `tid` waits with `mask` as its signal mask (`rt_sigsuspend`, `ppoll`). The mask it
/// had comes back through the frame of the handler that interrupts the wait, or, if none
/// does, when the call returns ([`deliver`]). `EINTR` if a signal can be taken at once.
pub fn wait_with_mask(p: &mut Process, tid: i32, mask: u64) -> SysResult<()> {
    let t = p.thread(tid);
    let old = t.saved_mask.unwrap_or(t.sigmask);
    (t.saved_mask, t.sigmask) = (Some(old), mask & !UNBLOCKABLE);
    if deliverable(p, tid) != 0 {
        return Err(Errno::EINTR);
    }
    Ok(())
}

/// Takes the next signal for thread `tid` to deliver: its own before the process's, lowest
/// number first.
fn next(p: &mut Process, tid: i32) -> Option<SigInfo> {
    let mask = p.threads.get(&tid)?.sigmask;
    take(p, tid, !mask)
}

/// Takes the lowest signal of `set` pending for thread `tid` (its own first). `rt_sigtimedwait`
/// takes its signal so, without running its handler.
pub fn take(p: &mut Process, tid: i32, set: u64) -> Option<SigInfo> {
    let t = p.threads.get(&tid)?;
    let ready = (t.pending.bits() | p.signals.pending.bits()) & set;
    if ready == 0 {
        return None;
    }
    let sig = ready.trailing_zeros() as i32 + 1;
    let own = p.thread(tid).pending.take(sig);
    own.or_else(|| p.signals.pending.take(sig))
}

// -------------------------------------------------------------------------------------------
// Delivery
// -------------------------------------------------------------------------------------------

/// Whether system call `nr` (with arguments in `regs`), interrupted by a signal whose handler
/// has `SA_RESTART`, is restarted rather than failing with `EINTR` (Linux's `-ERESTARTSYS`
/// calls). Sleeps, polls, timed futex waits and `rt_sigsuspend` always fail with `EINTR`.
pub fn restartable(nr: u64, regs: &kvm_regs) -> bool {
    const FUTEX: u64 = 202;
    match nr {
        // read, write, readv, writev, wait4, waitid, fcntl (F_SETLKW), flock
        0 | 1 | 19 | 20 | 61 | 72 | 73 | 247 => true,
        // A futex wait with no timeout.
        FUTEX => regs.r10 == 0,
        _ => false,
    }
}

/// How a thread came to look for signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Back from system call `nr`, with `sysret` already emulated: RAX is its result, RIP just
    /// past the `syscall` instruction.
    Syscall(u64),
    /// Kicked out of the guest, or back from `rt_sigreturn`.
    Other,
}

/// Delivers every signal thread `tid` can take now, before it goes back to the guest on
/// `vcpu`: ignored ones are dropped, a default action that ends the process ends it, and each
/// handler gets a frame (stacked, as on Linux, when several are due). A system call that a
/// signal interrupted (it failed with `EINTR` while the thread was interrupted) is restarted
/// if no handler runs, or if the first handler has `SA_RESTART` and the call is
/// [`restartable`]; otherwise it fails with `EINTR`.
pub fn deliver(p: &mut Process, vcpu: &mut VcpuFd, tid: i32, entry: Entry) -> Result<(), Ended> {
    let interrupted = p.group.interrupted(tid);
    if !interrupted && deliverable(p, tid) == 0 && p.thread(tid).saved_mask.is_none() {
        return Ok(());
    }
    let eintr = (-(Errno::EINTR.0 as i64)) as u64;
    let mut restart = match entry {
        Entry::Syscall(nr) if interrupted && vcpu.sync_regs_mut().regs.rax == eintr => Some(nr),
        _ => None,
    };
    while let Some(info) = next(p, tid) {
        let sig = info.signo;
        let action = p.signals.actions[sig as usize];
        match action.handler {
            SIG_IGN if sig != libc::SIGKILL => continue,
            SIG_DFL if default_ignores(sig) => continue,
            SIG_DFL if matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) => {
                tracing::warn!(sig, "stop signal ignored: a vNode has no job control");
                continue;
            }
            SIG_DFL | SIG_IGN => return Err(Ended::Process(Termination::Signaled { signal: sig, detail: None })),
            _ => {}
        }
        if let Some(nr) = restart.take() {
            let regs = &mut vcpu.sync_regs_mut().regs;
            if action.flags & SA_RESTART != 0 && restartable(nr, regs) {
                back_to_syscall(regs, nr);
            }
        }
        setup_frame(p, vcpu, tid, &info, &action, Trap::default())?;
    }
    if let Some(nr) = restart {
        back_to_syscall(&mut vcpu.sync_regs_mut().regs, nr);
    }
    // A wait with a mask of its own that no handler ended gets the old mask back.
    let t = p.thread(tid);
    if let Some(mask) = t.saved_mask.take() {
        t.sigmask = mask;
    }
    p.group.clear_interrupt(tid);
    vcpu.set_sync_dirty_reg(SyncReg::Register);
    Ok(())
}

/// Makes the thread execute system call `nr` again: RIP back on the 2-byte `syscall`.
fn back_to_syscall(regs: &mut kvm_regs, nr: u64) {
    regs.rax = nr;
    regs.rip = regs.rip.wrapping_sub(2);
}

/// The exception behind a signal, for `uc_mcontext` (zero for a signal that is not a fault).
#[derive(Debug, Clone, Copy, Default)]
struct Trap {
    vector: u64,
    error_code: u64,
    cr2: u64,
}

/// Thread `tid` raised exception `vector` in user mode (frame `frame`, CR2 `cr2`), which
/// Linux turns into `fault`: the registers become the user state at the fault, and the signal
/// is forced on the thread: its handler runs, or, if it has none, blocks the signal or ignores
/// it, the process ends.
pub fn fault(p: &mut Process, vcpu: &mut VcpuFd, tid: i32, f: &Fault, frame: &fault::Frame, vector: u8, cr2: u64) -> Result<(), Ended> {
    let sync = vcpu.sync_regs_mut();
    (sync.regs.rip, sync.regs.rsp, sync.regs.rflags) = (frame.rip, frame.rsp, frame.rflags);
    let trap = Trap { vector: u64::from(vector), error_code: frame.error_code, cr2: if vector == 14 { cr2 } else { 0 } };
    force(p, vcpu, tid, &SigInfo::fault(f.signal, f.code, f.addr), f.detail.clone(), trap)
}

/// Delivers a synchronous signal to thread `tid`: to its handler, unless it has none or the
/// thread blocks it, in which case the process ends with `detail`.
fn force(p: &mut Process, vcpu: &mut VcpuFd, tid: i32, info: &SigInfo, detail: String, trap: Trap) -> Result<(), Ended> {
    let action = p.signals.actions[info.signo as usize];
    if action.handler == SIG_DFL || action.handler == SIG_IGN || blocks(p, tid, info.signo) {
        return Err(Ended::Process(Termination::Signaled { signal: info.signo, detail: Some(detail) }));
    }
    setup_frame(p, vcpu, tid, info, &action, trap)
}

// The frame, as Linux x86-64 lays it out (arch/x86/include/asm/sigframe.h, uapi ucontext.h and
// sigcontext.h): the return address (`sa_restorer`), the `ucontext`, the `siginfo`; the FPU
// state below it all, 64-byte aligned, pointed at by `uc_mcontext.fpstate`.

/// `struct rt_sigframe`: pretcode (8) + ucontext (304) + siginfo (128).
const FRAME_SIZE: u64 = 8 + UC_SIZE as u64 + SIGINFO_SIZE as u64;
/// `struct ucontext`: flags, link, `stack_t` (24), `sigcontext` (256), sigset (8).
const UC_SIZE: usize = 304;
/// `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;
/// Offsets in the `ucontext`.
const UC_STACK: usize = 16;
const UC_MCONTEXT: usize = 40;
const UC_SIGMASK: usize = 296;
/// Offset of the `siginfo` in the frame.
const FRAME_INFO: u64 = 8 + UC_SIZE as u64;
/// Bytes below RSP a leaf function may use without moving it (System V ABI).
const RED_ZONE: u64 = 128;
/// `uc_flags`: the FPU area is XSAVE-format; the context has SS (and sigreturn restores it).
const UC_FLAGS: u64 = 1 | 2 | 4;
/// `sw_reserved` of the FXSAVE area: `FP_XSTATE_MAGIC1`, and `FP_XSTATE_MAGIC2` after the area.
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
const SW_RESERVED: usize = 464;
/// RFLAGS bits `rt_sigreturn` takes from the frame (Linux's `FIX_EFLAGS`).
const FIX_EFLAGS: u64 = 0x0001 | 0x0004 | 0x0010 | 0x0040 | 0x0080 | 0x0100 | 0x0400 | 0x0800 | 0x4_0000 | 0x1_0000;
/// RFLAGS bits cleared for a handler: TF, DF, RF.
const HANDLER_CLEARS: u64 = 0x0100 | 0x0400 | 0x1_0000;

/// `uc_mcontext.gregs` in order (glibc's `REG_R8` .. `REG_RIP`, `REG_EFL`).
fn gregs(r: &kvm_regs) -> [u64; 18] {
    [
        r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx, r.rax, r.rcx, r.rsp,
        r.rip, r.rflags,
    ]
}

/// Bytes of the XSAVE area (standard format) for the features the host enabled, which bound
/// the guest's: CPUID leaf 0xD, sub-leaf 0, EBX.
fn fpstate_size() -> usize {
    let ebx = std::arch::x86_64::__cpuid_count(0xd, 0).ebx as usize;
    ebx.clamp(512 + 64, std::mem::size_of::<kvm_xsave>())
}

/// The FPU as after `execve`: default control words, no state in use.
fn clean_fpu() -> kvm_xsave {
    let mut x = kvm_xsave::default();
    x.region[0] = 0x37f; // FCW
    x.region[6] = 0x1f80; // MXCSR
    x
}

fn set_fpu(vcpu: &VcpuFd, x: &kvm_xsave) -> Result<(), kvm_ioctls::Error> {
    // SAFETY: `x` is a whole `kvm_xsave` (4096 bytes); the VMM never asks KVM for dynamic
    // (AMX) xstate permission, so KVM reads no more than that.
    unsafe { vcpu.set_xsave(x) }
}

fn xsave_bytes(x: &kvm_xsave) -> Vec<u8> {
    x.region.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn put(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or_default())
}

/// The process ends with `SIGSEGV` because of `why` (Linux's `force_sigsegv` when a frame
/// cannot be written).
fn segv(why: String) -> Ended {
    Ended::Process(Termination::Signaled { signal: libc::SIGSEGV, detail: Some(why) })
}

/// Builds the frame of `info`'s handler (`action`) for thread `tid` and points the vCPU at the
/// handler; blocks the handler's mask and, unless `SA_NODEFER`, the signal.
fn setup_frame(p: &mut Process, vcpu: &mut VcpuFd, tid: i32, info: &SigInfo, action: &SigAction, trap: Trap) -> Result<(), Ended> {
    let sig = info.signo;
    let name = fault::signal_name(sig);
    if action.flags & SA_RESTORER == 0 {
        return Err(segv(format!("the handler of {name} has no SA_RESTORER to return through")));
    }
    let regs = vcpu.sync_regs_mut().regs;
    let thread = p.thread(tid);
    let (alt, mask) = (thread.altstack, thread.saved_mask.take().unwrap_or(thread.sigmask));

    // Where the frame goes: below the red zone, or at the top of the alternate stack.
    let on_alt = alt.contains(regs.rsp);
    let switch = action.flags & SA_ONSTACK != 0 && alt.enabled() && !on_alt;
    let mut sp = if switch { alt.sp.wrapping_add(alt.size) } else { regs.rsp.wrapping_sub(RED_ZONE) };
    let fsize = fpstate_size();
    sp = sp.wrapping_sub(fsize as u64 + 4) & !63;
    let fpstate = sp;
    sp = (sp.wrapping_sub(FRAME_SIZE) & !15).wrapping_sub(8);
    if (switch || on_alt) && sp <= alt.sp {
        return Err(segv(format!("the frame of {name} does not fit on the alternate stack at {:#x}", alt.sp)));
    }

    let xsave = vcpu.get_xsave().map_err(|e| Ended::Vmm(VmmError::Kvm { op: "GET_XSAVE", source: e }))?;
    let mut fp = xsave_bytes(&xsave);
    fp.truncate(fsize);
    fp[SW_RESERVED..SW_RESERVED + 4].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
    fp[SW_RESERVED + 4..SW_RESERVED + 8].copy_from_slice(&(fsize as u32 + 4).to_le_bytes());
    let xfeatures = get(&fp, 512); // XSTATE_BV of the header
    put(&mut fp, SW_RESERVED + 8, xfeatures);
    fp[SW_RESERVED + 16..SW_RESERVED + 20].copy_from_slice(&(fsize as u32).to_le_bytes());
    fp.extend_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());

    let mut frame = vec![0u8; FRAME_SIZE as usize];
    put(&mut frame, 0, action.restorer);
    let uc = 8;
    put(&mut frame, uc, UC_FLAGS);
    frame[uc + UC_STACK..uc + UC_STACK + 24].copy_from_slice(&alt.bytes(regs.rsp));
    let mc = uc + UC_MCONTEXT;
    for (i, v) in gregs(&regs).into_iter().enumerate() {
        put(&mut frame, mc + 8 * i, v);
    }
    // cs, gs, fs, ss as four 16-bit words.
    let csgsfs = u64::from(USER_CS) | (u64::from(USER_DS) << 48);
    let rest = [csgsfs, trap.error_code, trap.vector, mask, trap.cr2, fpstate];
    for (i, v) in rest.into_iter().enumerate() {
        put(&mut frame, mc + 8 * (18 + i), v);
    }
    put(&mut frame, uc + UC_SIGMASK, mask);
    frame[FRAME_INFO as usize..].copy_from_slice(&info.bytes());

    let written = p.mm.write_user(fpstate, &fp).and_then(|()| p.mm.write_user(sp, &frame));
    if written.is_err() {
        return Err(segv(format!("no room for the frame of {name} at {sp:#x} (stack pointer {:#x})", regs.rsp)));
    }
    // As on Linux, the handler starts with a clean FPU; its frame has the interrupted state.
    set_fpu(vcpu, &clean_fpu()).map_err(|e| Ended::Vmm(VmmError::Kvm { op: "SET_XSAVE", source: e }))?;

    let sync = vcpu.sync_regs_mut();
    let r = &mut sync.regs;
    (r.rsp, r.rip, r.rdi, r.rsi, r.rdx, r.rax) = (sp, action.handler, sig as u64, sp + FRAME_INFO, sp + uc as u64, 0);
    r.rflags &= !HANDLER_CLEARS;
    (sync.sregs.cs, sync.sregs.ss) = (cpu::user_cs(), cpu::user_ds());
    vcpu.set_sync_dirty_reg(SyncReg::Register);
    vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);

    let defer = if action.flags & SA_NODEFER != 0 { 0 } else { bit(sig) };
    p.thread(tid).sigmask = (mask | action.mask | defer) & !UNBLOCKABLE;
    if action.flags & SA_RESETHAND != 0 {
        p.signals.actions[sig as usize] = SigAction::default();
    }
    Ok(())
}

/// `rt_sigreturn` by thread `tid`: its handler returned into `sa_restorer`, which popped the
/// return address, so RSP points at the `ucontext`. Registers, FPU state, mask and alternate
/// stack come back from it; a frame that cannot be read or restored is a `SIGSEGV` forced on
/// the thread. Then the signals the old mask lets through are delivered.
pub fn sigreturn(p: &mut Process, vcpu: &mut VcpuFd, tid: i32) -> Result<(), Ended> {
    let uc = vcpu.sync_regs_mut().regs.rsp;
    if let Err(why) = restore(p, vcpu, tid, uc) {
        let detail = format!("bad signal frame at {uc:#x} in rt_sigreturn: {why}");
        return force(p, vcpu, tid, &SigInfo::fault(libc::SIGSEGV, SI_KERNEL, 0), detail, Trap::default());
    }
    deliver(p, vcpu, tid, Entry::Other)
}

/// Why a signal frame cannot be restored.
#[derive(Debug, thiserror::Error)]
enum BadFrame {
    #[error("the frame cannot be read")]
    Unreadable,
    #[error("non-canonical rip {0:#x}")]
    Rip(u64),
    #[error("FPU state at {0:#x} is not 64-byte aligned")]
    FpuAlignment(u64),
    #[error("FPU state at {0:#x} cannot be read")]
    FpuUnreadable(u64),
    #[error("FPU state at {at:#x} refused: {source}")]
    FpuRefused { at: u64, source: kvm_ioctls::Error },
}

/// Restores what the `ucontext` at `uc` saved; nothing changes unless all of it is valid.
fn restore(p: &mut Process, vcpu: &mut VcpuFd, tid: i32, uc: u64) -> Result<(), BadFrame> {
    let mut b = [0u8; UC_SIZE];
    p.mm.read_user(uc, &mut b).map_err(|_| BadFrame::Unreadable)?;
    let g = |i: usize| get(&b, UC_MCONTEXT + 8 * i);
    let rip = g(16);
    if rip >= 1 << 47 {
        return Err(BadFrame::Rip(rip));
    }
    let fpstate = g(23);
    let xsave = if fpstate == 0 {
        clean_fpu()
    } else {
        if fpstate % 64 != 0 {
            return Err(BadFrame::FpuAlignment(fpstate));
        }
        let mut fp = vec![0u8; fpstate_size()];
        p.mm.read_user(fpstate, &mut fp).map_err(|_| BadFrame::FpuUnreadable(fpstate))?;
        let mut x = kvm_xsave::default();
        for (w, c) in x.region.iter_mut().zip(fp.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        // sw_reserved is the kernel's note to itself, not state.
        x.region[SW_RESERVED / 4..512 / 4].fill(0);
        x
    };
    set_fpu(vcpu, &xsave).map_err(|source| BadFrame::FpuRefused { at: fpstate, source })?;

    let sync = vcpu.sync_regs_mut();
    let r = &mut sync.regs;
    let user_flags = r.r11;
    [r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx, r.rax, r.rcx, r.rsp, r.rip] =
        std::array::from_fn(g);
    r.rflags = (user_flags & !FIX_EFLAGS) | (g(17) & FIX_EFLAGS) | 2;
    (sync.sregs.cs, sync.sregs.ss) = (cpu::user_cs(), cpu::user_ds());
    let sp = r.rsp;
    vcpu.set_sync_dirty_reg(SyncReg::Register);
    vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);

    let t = p.thread(tid);
    t.sigmask = get(&b, UC_SIGMASK) & !UNBLOCKABLE;
    let stack_t: [u8; 24] = b[UC_STACK..UC_STACK + 24].try_into().unwrap_or_default();
    // As on Linux, a stack the frame cannot set (EPERM, ENOMEM) is left as it is.
    let _ = t.altstack.set(&stack_t, sp);
    Ok(())
}

// -------------------------------------------------------------------------------------------
// System calls that read or change signal state without waiting
// -------------------------------------------------------------------------------------------

/// `sigaltstack(ss, old_ss)` for thread `tid` at stack pointer `sp`.
pub fn sigaltstack(p: &mut Process, tid: i32, sp: u64, ss: u64, old: u64) -> SysResult<u64> {
    let cur = p.thread(tid).altstack;
    if ss != 0 {
        let mut b = [0u8; 24];
        p.mm.read_user(ss, &mut b)?;
        if old != 0 && !p.mm.user_accessible(old, 24, true) {
            return Err(Errno::EFAULT);
        }
        p.thread(tid).altstack.set(&b, sp)?;
    }
    if old != 0 {
        p.mm.write_user(old, &cur.bytes(sp))?;
    }
    Ok(0)
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
    fn frame_layout_is_linuxs() {
        // sizeof(struct rt_sigframe) on x86-64, and glibc's REG_* indices.
        assert_eq!(FRAME_SIZE, 440);
        let r = kvm_regs { r8: 1, rdi: 2, rsp: 3, rip: 4, rflags: 5, ..Default::default() };
        let g = gregs(&r);
        assert_eq!((g[0], g[8], g[15], g[16], g[17]), (1, 2, 3, 4, 5));
    }

    #[test]
    fn siginfo_carries_sender_or_address() {
        let b = SigInfo::sent(10, SI_TKILL, 7, 1000).bytes();
        assert_eq!(i32::from_le_bytes(b[0..4].try_into().unwrap()), 10);
        assert_eq!(i32::from_le_bytes(b[8..12].try_into().unwrap()), SI_TKILL);
        assert_eq!(i32::from_le_bytes(b[16..20].try_into().unwrap()), 7);
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 1000);
        let b = SigInfo::fault(11, 1, 0xdead_0000).bytes();
        assert_eq!(get(&b, 16), 0xdead_0000);
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

    #[test]
    fn only_slow_calls_restart() {
        let regs = kvm_regs::default();
        assert!(restartable(0, &regs));
        assert!(restartable(202, &regs));
        assert!(!restartable(202, &kvm_regs { r10: 0x1000, ..Default::default() }));
        assert!(!restartable(35, &regs));
        assert!(!restartable(7, &regs));
    }
}
