//! Signal system calls: sending (`kill`, `tkill`, `tgkill`), dispositions and masks
//! (`rt_sigaction`, `rt_sigprocmask`, `rt_sigpending`, `sigaltstack`) and waiting for a signal
//! (`rt_sigsuspend`, `pause`, `rt_sigtimedwait`). Delivery and the restoring of a signal frame
//! are [`crate::signal`]'s, run by the run loop (`rt_sigreturn` asks it to).

use std::time::{Duration, Instant};

use super::{Args, Control, Cpu};
use crate::delivery;
use crate::errno::{Errno, SysResult};
use crate::process::{Locked, Process};
use crate::proctable::KillTarget;
use crate::signal::{self, SigAction, SigInfo, NSIG, SI_TKILL, SI_USER, UNBLOCKABLE};

/// `rt_sigreturn`: the run loop restores the frame, as it needs the vCPU for the FPU state.
pub fn rt_sigreturn(_: &mut Locked<'_>, _: &mut Cpu<'_>, _: Args) -> SysResult<Control> {
    Ok(Control::SignalReturn)
}

/// `None` for signal 0 (only the checks are made), `EINVAL` out of range.
fn check_sig(sig: u64) -> SysResult<Option<i32>> {
    match sig {
        0 => Ok(None),
        1..=64 => Ok(Some(sig as i32)),
        _ => Err(Errno::EINVAL),
    }
}

/// `kill(pid, sig)` to processes of the vNode run (see
/// [`crate::proctable::ProcTable::kill_targets`]). Other processes are signalled without the
/// caller's lock held, so two processes signalling each other cannot wait on each other.
pub fn kill(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let pid = a[0] as i32;
    let sig = check_sig(a[1])?;
    if pid == i32::MIN {
        return Err(Errno::ESRCH);
    }
    let targets = p.procs.kill_targets(p.pid, pid)?;
    let Some(sig) = sig else { return Ok(0) };
    let info = SigInfo::sent(sig, SI_USER, p.pid, p.creds.uid);
    send(p, cpu.tid, targets, info);
    Ok(0)
}

/// Posts `info` to `targets`: to the caller's own process (thread `tid` posting) under its
/// lock, to the others without it.
pub(super) fn send(p: &mut Locked<'_>, tid: i32, targets: Vec<KillTarget>, info: SigInfo) {
    let me = p.pid;
    let to_self = targets.iter().any(|(pid, _)| *pid == me);
    let others: Vec<_> = targets.into_iter().filter(|(pid, _)| *pid != me).filter_map(|(_, t)| t).collect();
    if !others.is_empty() {
        p.unlocked(|| others.iter().for_each(|t| t.signal(info)));
    }
    if to_self {
        delivery::post_process(p, info, Some(tid));
    }
}

/// A signal the kernel raises for a terminal (`SIGINT`, `SIGQUIT`, `SIGWINCH`; `SI_KERNEL`) to
/// every process of group `pgid`, as [`kill`] sends it, by thread `tid` of the caller.
pub(in crate::syscall) fn terminal_signal(p: &mut Locked<'_>, tid: i32, pgid: i32, sig: i32) {
    let targets = p.procs.group_targets(pgid);
    send(p, tid, targets, SigInfo::kernel(sig));
}

/// `tkill`: a signal for one thread of the process.
pub fn tkill(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let tid = a[0] as i32;
    let sig = check_sig(a[1])?;
    if tid <= 0 {
        return Err(Errno::EINVAL);
    }
    if !p.threads.contains_key(&tid) {
        return Err(Errno::ESRCH);
    }
    match sig {
        Some(sig) => {
            let info = SigInfo::sent(sig, SI_TKILL, p.pid, p.creds.uid);
            delivery::post_thread(p, tid, info, Some(cpu.tid)).map(|()| 0)
        }
        None => Ok(0),
    }
}

pub fn tgkill(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if (a[0] as i32) <= 0 {
        return Err(Errno::EINVAL);
    }
    if a[0] as i32 != p.pid {
        return Err(Errno::ESRCH);
    }
    tkill(p, cpu, [a[1], a[2], 0, 0, 0, 0])
}

pub fn rt_sigaction(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [sig, act, oact, size, ..] = a;
    if size != 8 || !(1..=NSIG as u64).contains(&sig) {
        return Err(Errno::EINVAL);
    }
    let sig = sig as usize;
    let old = p.signals.actions[sig];
    if act != 0 {
        if sig as i32 == libc::SIGKILL || sig as i32 == libc::SIGSTOP {
            return Err(Errno::EINVAL);
        }
        let new = SigAction {
            handler: p.mm.read_u64(act)?,
            flags: p.mm.read_u64(act + 8)?,
            restorer: p.mm.read_u64(act + 16)?,
            mask: p.mm.read_u64(act + 24)? & !UNBLOCKABLE,
        };
        if oact != 0 && !p.mm.user_accessible(oact, 32, true) {
            return Err(Errno::EFAULT);
        }
        p.signals.actions[sig] = new;
        if sig as i32 == libc::SIGCHLD {
            p.procs.set_nocldwait(p.pid, signal::reaps_children(&new));
        }
    }
    if oact != 0 {
        let words = [old.handler, old.flags, old.restorer, old.mask];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        p.mm.write_user(oact, &bytes)?;
    }
    Ok(0)
}

/// `rt_sigprocmask`: the calling thread's mask. Signals it unblocks are delivered on the way
/// back to the guest.
pub fn rt_sigprocmask(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [how, set, oset, size, ..] = a;
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let old = p.thread(cpu.tid).sigmask;
    if set != 0 {
        let s = p.mm.read_u64(set)? & !UNBLOCKABLE;
        p.thread(cpu.tid).sigmask = match how as i32 {
            libc::SIG_BLOCK => old | s,
            libc::SIG_UNBLOCK => old & !s,
            libc::SIG_SETMASK => s,
            _ => return Err(Errno::EINVAL),
        };
    }
    if oset != 0 {
        p.mm.write_u64(oset, old)?;
    }
    Ok(0)
}

/// `rt_sigpending`: the signals pending for the caller that it blocks.
pub fn rt_sigpending(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if a[1] != 8 {
        return Err(Errno::EINVAL);
    }
    let t = p.thread(cpu.tid);
    let (own, mask) = (t.pending.bits(), t.sigmask);
    let pending = (own | p.signals.pending.bits()) & mask;
    p.mm.write_u64(a[0], pending).map(|()| 0)
}

pub fn sigaltstack(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    delivery::sigaltstack(p, cpu.tid, cpu.regs.rsp, a[0], a[1])
}

/// Waits, with `mask` as the caller's signal mask, until a signal is delivered: `EINTR` (after
/// its handler, which runs with that mask; the old one comes back through the frame).
fn suspend(p: &mut Locked<'_>, tid: i32, mask: u64) -> SysResult<u64> {
    delivery::wait_with_mask(p, tid, mask)?;
    let group = p.group.clone();
    p.unlocked(|| group.sleep_until(tid, None))?;
    Err(Errno::EINTR)
}

/// `rt_sigtimedwait(set, info, timeout, size)`: takes a signal of `set` (normally blocked)
/// without running its handler, waiting for one up to `timeout` (`EAGAIN` then). The set is
/// unblocked while the thread waits, so that a signal of it wakes the thread; another signal
/// the thread does not block ends the wait with `EINTR`, and its handler runs.
pub fn rt_sigtimedwait(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [set, info, timeout, size, ..] = a;
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let set = p.mm.read_u64(set)? & !UNBLOCKABLE;
    let deadline = if timeout == 0 {
        None
    } else {
        let ts = super::time::read_timespec(p, timeout)?;
        Some(Instant::now() + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    };
    let tid = cpu.tid;
    let old = p.thread(tid).sigmask;
    p.thread(tid).sigmask = old & !set;
    let group = p.group.clone();
    let taken = loop {
        if let Some(got) = delivery::take(p, tid, set) {
            break Ok(got);
        }
        if delivery::deliverable(p, tid) != 0 {
            break Err(Errno::EINTR);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break Err(Errno::EAGAIN);
        }
        // A signal of the set ends the sleep early (EINTR); the loop then takes it.
        if let Err(e) = p.unlocked(|| group.sleep_until(tid, deadline)) {
            if group.ending() {
                break Err(e);
            }
            group.clear_interrupt(tid);
        }
    };
    p.thread(tid).sigmask = old;
    let got = taken?;
    if info != 0 {
        p.mm.write_user(info, &got.bytes())?;
    }
    Ok(got.signo as u64)
}

/// `rt_sigsuspend(mask, size)`.
pub fn rt_sigsuspend(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if a[1] != 8 {
        return Err(Errno::EINVAL);
    }
    let mask = p.mm.read_u64(a[0])?;
    suspend(p, cpu.tid, mask)
}

/// `pause`: [`rt_sigsuspend`] with the mask as it is.
pub fn pause(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    let mask = p.thread(cpu.tid).sigmask;
    suspend(p, cpu.tid, mask)
}

/// Reads the `siginfo_t` a `rt_sigqueueinfo` call passes, for signal `sig`: a caller may pass
/// any `si_code` to itself, but only negative ones other than `SI_TKILL` to other processes.
fn queued_info(p: &Process, sig: i32, addr: u64, to_self: bool) -> SysResult<SigInfo> {
    let mut raw = [0u8; signal::SIGINFO_SIZE];
    p.mm.read_user(addr, &mut raw)?;
    let word = |at: usize| i32::from_le_bytes(raw[at..at + 4].try_into().unwrap_or_default());
    let code = word(8);
    if !to_self && (code >= 0 || code == SI_TKILL) {
        return Err(Errno::EPERM);
    }
    let value = u64::from_le_bytes(raw[24..32].try_into().unwrap_or_default());
    Ok(SigInfo { value, ..SigInfo::sent(sig, code, word(16), word(20) as u32) })
}

/// Posts queued signal `info` to process `pid` of the run, or to its thread `to_thread`
/// ([`delivery::post_queued`]): in the caller's own (with the calling thread `tid` as the
/// poster), or in another one (without the caller's lock held, as in [`kill`]).
fn queue(p: &mut Locked<'_>, tid: i32, (pid, to_thread): (i32, Option<i32>), info: Option<SigInfo>) -> SysResult<u64> {
    if pid == p.pid {
        return delivery::post_queued(p, to_thread, info, Some(tid)).map(|()| 0);
    }
    let targets = p.procs.kill_targets(p.pid, pid)?;
    let Some((_, Some(target))) = targets.into_iter().next() else { return Err(Errno::ESRCH) };
    p.unlocked(|| target.post_queued(to_thread, info)).map(|()| 0)
}

/// `rt_sigqueueinfo(pid, sig, info)`: a signal with its `siginfo` (`sigqueue`) to process `pid`.
pub fn rt_sigqueueinfo(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let pid = a[0] as i32;
    let sig = check_sig(a[1])?;
    if pid <= 0 {
        return Err(Errno::ESRCH);
    }
    let info = queued_info(p, sig.unwrap_or(0), a[2], pid == p.pid)?;
    queue(p, cpu.tid, (pid, None), sig.map(|sig| SigInfo { signo: sig, ..info }))
}

/// `rt_tgsigqueueinfo(tgid, tid, sig, info)`: the same, to one thread.
pub fn rt_tgsigqueueinfo(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (tgid, tid) = (a[0] as i32, a[1] as i32);
    let sig = check_sig(a[2])?;
    if tgid <= 0 || tid <= 0 {
        return Err(Errno::EINVAL);
    }
    let info = queued_info(p, sig.unwrap_or(0), a[3], tgid == p.pid)?;
    queue(p, cpu.tid, (tgid, Some(tid)), sig.map(|sig| SigInfo { signo: sig, ..info }))
}
