//! Signal posting and delivery on a vNode process, with the semantics of Linux x86-64: which
//! thread takes a signal sent to the process, and delivery to handlers on a `struct
//! rt_sigframe`, undone by `rt_sigreturn` (the types are [`crate::signal`]'s).
//!
//! The data path, top to bottom:
//! 1. [`post_thread`] and [`post_process`] queue a signal with its `siginfo` and wake the thread
//!    that is to take it: out of a blocking wait ([`ThreadGroup::interrupt`](crate::threads::ThreadGroup::interrupt), the wait fails with
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
use crate::signal::*;

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
    prepare(p, info.signo);
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

/// Posts a signal queued with its `siginfo` (`rt_sigqueueinfo`, `rt_tgsigqueueinfo`): `info`
/// (`None` for signal 0, which only checks the target) to `p`, or to its thread `tid` (`ESRCH`
/// if it has none). `from` as in [`post_thread`].
pub fn post_queued(p: &mut Process, tid: Option<i32>, info: Option<SigInfo>, from: Option<i32>) -> SysResult<()> {
    match (tid, info) {
        (Some(tid), _) if !p.threads.contains_key(&tid) => Err(Errno::ESRCH),
        (Some(tid), Some(info)) => post_thread(p, tid, info, from),
        (None, Some(info)) => {
            post_process(p, info, from);
            Ok(())
        }
        (_, None) => Ok(()),
    }
}

/// Sends `info` to the process `p`: it waits in the process's pending set for the first thread
/// that does not block it, and one such thread is woken to take it, the sender itself if it
/// can (Linux's `complete_signal`). `from` as in [`post_thread`].
pub fn post_process(p: &mut Process, info: SigInfo, from: Option<i32>) {
    let sig = info.signo;
    let job_change = sig == libc::SIGCHLD && matches!(info.code, libc::CLD_STOPPED | libc::CLD_CONTINUED);
    if job_change && p.signals.actions[sig as usize].flags & SA_NOCLDSTOP != 0 {
        return;
    }
    prepare(p, sig);
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

/// What sending `sig` does at once, before it is pending (Linux's `prepare_signal`): a stop
/// signal discards a pending `SIGCONT`; `SIGCONT` discards pending stop signals and resumes a
/// stopped process, whatever its disposition.
fn prepare(p: &mut Process, sig: i32) {
    let discard = |p: &mut Process, which: &dyn Fn(i32) -> bool| {
        for s in (1..=64).filter(|&s| which(s)) {
            while p.signals.pending.take(s).is_some() {}
            for t in p.threads.values_mut() {
                while t.pending.take(s).is_some() {}
            }
        }
    };
    if stops(sig) {
        discard(p, &|s| s == libc::SIGCONT);
    } else if sig == libc::SIGCONT {
        discard(p, &stops);
        p.group.resume();
    }
}

/// A stop signal `sig` took effect on thread `tid` (its default action): the process stops.
/// Its other threads are woken out of their waits and kicked out of the guest, and each waits
/// in its run loop, as `tid` does once it has taken its other signals, until `SIGCONT` or
/// `SIGKILL`.
fn stop(p: &mut Process, tid: i32, sig: i32) {
    if p.group.stop(sig) {
        let others: Vec<i32> = p.threads.keys().copied().filter(|&t| t != tid).collect();
        for t in others {
            wake(p, t, None);
        }
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

/// The signals pending for thread `tid`: its own and its process's (what a signalfd of it would
/// read).
pub fn pending(p: &Process, tid: i32) -> u64 {
    p.threads.get(&tid).map_or(0, |t| t.pending.bits()) | p.signals.pending.bits()
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
    // A stopped process takes no signal until it continues (SIGKILL ends it anyway).
    while let Some(info) = if p.group.stopped() { None } else { next(p, tid) } {
        let sig = info.signo;
        let action = p.signals.actions[sig as usize];
        match action.handler {
            SIG_IGN if sig != libc::SIGKILL => continue,
            SIG_DFL if default_ignores(sig) => continue,
            SIG_DFL if stops(sig) => {
                if sig == libc::SIGSTOP || !p.procs.orphaned_group_of(p.pid) {
                    stop(p, tid, sig);
                }
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
    match restart {
        Some(nr) => back_to_syscall(&mut vcpu.sync_regs_mut().regs, nr),
        // A sleep that returns (EINTR: a handler ran) starts afresh when called again. A kick
        // (after a stop) leaves a restarted sleep's deadline alone.
        None if matches!(entry, Entry::Syscall(_)) => p.thread(tid).sleep_until = None,
        None => {}
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
    fn frame_layout_is_linuxs() {
        // sizeof(struct rt_sigframe) on x86-64, and glibc's REG_* indices.
        assert_eq!(FRAME_SIZE, 440);
        let r = kvm_regs { r8: 1, rdi: 2, rsp: 3, rip: 4, rflags: 5, ..Default::default() };
        let g = gregs(&r);
        assert_eq!((g[0], g[8], g[15], g[16], g[17]), (1, 2, 3, 4, 5));
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
