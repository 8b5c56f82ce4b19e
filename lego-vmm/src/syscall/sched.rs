//! Scheduling: CPU affinity (`sched_setaffinity` pins the host thread that runs the vCPU,
//! within the cores the pComponent gives the vNode), policies and priorities, nice values
//! (`setpriority` renices the host thread), I/O priorities (recorded), `getcpu`, and
//! `personality`.

use std::sync::Arc;

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::hostcpu;
use crate::identity::{cap, Creds};
use crate::process::Process;
use crate::proctable::Signalable;

/// The thread a `sched_*`, `*priority` or `ioprio_*` call names.
pub(super) enum Target {
    /// A thread of the caller's process.
    Own(i32),
    /// The first thread of another process of the vNode (its pid), which runs in a VM of its
    /// own and is reached under its lock ([`Signalable::with_process`]).
    Other(Arc<dyn Signalable>, i32),
}

/// The thread `pid` names: 0 is the caller; then a thread of its process, or another process
/// of the vNode; `ESRCH` for anything else.
pub(super) fn target(p: &Process, cpu: &Cpu<'_>, pid: u64) -> SysResult<Target> {
    let pid = pid as i32;
    match pid {
        0 => Ok(Target::Own(cpu.tid)),
        t if t < 0 => Err(Errno::EINVAL),
        t if p.threads.contains_key(&t) => Ok(Target::Own(t)),
        t => p.procs.process(t).map(|q| Target::Other(q, t)).ok_or(Errno::ESRCH),
    }
}

/// Runs `f` on the target thread's process and id: `ESRCH` if another process's first thread
/// has ended, `EAGAIN` if its lock cannot be had now.
pub(super) fn on_thread<R>(p: &mut Process, t: &Target, mut f: impl FnMut(&mut Process, i32) -> SysResult<R>) -> SysResult<R> {
    match t {
        Target::Own(tid) => f(p, *tid),
        Target::Other(q, tid) => {
            let mut out = Err(Errno::ESRCH);
            let reached = q.with_process(&mut |q| {
                if let Some(q) = q.downcast_mut::<Process>().filter(|q| q.threads.contains_key(tid)) {
                    out = f(q, *tid);
                }
            });
            if !reached {
                return Err(Errno::EAGAIN);
            }
            out
        }
    }
}

/// Whether a process with credentials `caller` may change the scheduling of one with
/// `target`'s: its own user's, or any with `CAP_SYS_NICE` (Linux's `check_same_owner`).
fn may_change(caller: &Creds, target: &Creds) -> SysResult<()> {
    if caller.capable(cap::SYS_NICE) || caller.euid == target.euid || caller.euid == target.uid {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

/// Bytes of the CPU masks lego reports (the first 64 host CPUs).
const MASK_BYTES: u64 = 8;

/// `sched_setaffinity(pid, len, mask)`: the thread runs only on the cores of `mask` that the
/// vNode has (`EINVAL` if none is left); its host thread is pinned at once (or when it starts).
pub fn sched_setaffinity(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [pid, len, addr, ..] = a;
    let t = target(p, cpu, pid)?;
    let mut raw = [0u8; 8];
    let n = len.min(MASK_BYTES) as usize;
    p.mm.read_user(addr, &mut raw[..n])?;
    let mask = u64::from_le_bytes(raw) & p.cores;
    if mask == 0 {
        return Err(Errno::EINVAL);
    }
    let creds = p.creds;
    on_thread(p, &t, |q, tid| {
        may_change(&creds, &q.creds)?;
        let th = q.thread(tid);
        if let Some(host) = th.host {
            hostcpu::pin(host.tid, mask)?;
        }
        th.affinity = Some(mask);
        pinned_cpu_to_rseq(q, tid);
        Ok(0)
    })
}

/// A thread pinned to one core has its registered `struct rseq` say so (`cpu_id_start`,
/// `cpu_id`): that is where C libraries' `sched_getcpu` looks.
pub(super) fn pinned_cpu_to_rseq(p: &mut Process, tid: i32) {
    let t = p.thread(tid);
    let (mask, area) = (t.affinity.unwrap_or(0), t.rseq);
    if mask.count_ones() == 1 && area != 0 {
        let core = mask.trailing_zeros();
        let mut ids = [0u8; 8];
        ids[..4].copy_from_slice(&core.to_le_bytes());
        ids[4..].copy_from_slice(&core.to_le_bytes());
        // A bad area only misleads the program that registered it.
        let _ = p.mm.write_user(area, &ids);
    }
}

/// `sched_getaffinity(pid, len, mask)`: the thread's cores; returns the mask's size.
pub fn sched_getaffinity(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [pid, len, addr, ..] = a;
    let t = target(p, cpu, pid)?;
    if len < MASK_BYTES || len % 8 != 0 {
        return Err(Errno::EINVAL);
    }
    let mask = on_thread(p, &t, |q, tid| Ok(q.thread(tid).affinity.unwrap_or(q.cores)))?;
    p.mm.write_u64(addr, mask)?;
    Ok(MASK_BYTES)
}

const SCHED_OTHER: i32 = 0;
const SCHED_FIFO: i32 = 1;
const SCHED_RR: i32 = 2;
const SCHED_BATCH: i32 = 3;
const SCHED_IDLE: i32 = 5;
const SCHED_RESET_ON_FORK: i32 = 0x4000_0000;

/// `(min, max)` priority of `policy`.
fn priorities(policy: i32) -> SysResult<(i32, i32)> {
    match policy {
        SCHED_FIFO | SCHED_RR => Ok((1, 99)),
        SCHED_OTHER | SCHED_BATCH | SCHED_IDLE => Ok((0, 0)),
        _ => Err(Errno::EINVAL),
    }
}

pub fn sched_get_priority_max(_: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    priorities(a[0] as i32).map(|(_, max)| max as u64)
}

pub fn sched_get_priority_min(_: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    priorities(a[0] as i32).map(|(min, _)| min as u64)
}

/// Sets the target thread's policy (`None`: the one it has) and the priority at `param` in
/// the caller's memory. The normal policies (`SCHED_OTHER`, `SCHED_BATCH`, `SCHED_IDLE`) are
/// applied to its host thread; the real-time ones are allowed only to a privileged caller (as
/// on Linux) and recorded, but the host thread stays a normal one: a guest spinning at
/// real-time priority must not starve the pComponent's other vNodes.
fn set_policy(p: &mut Process, t: &Target, policy: Option<i32>, param: u64) -> SysResult<u64> {
    let mut raw = [0u8; 4];
    p.mm.read_user(param, &mut raw)?;
    let prio = i32::from_le_bytes(raw);
    let creds = p.creds;
    on_thread(p, t, |q, tid| {
        let policy = policy.unwrap_or(q.thread(tid).sched.0);
        let (min, max) = priorities(policy)?;
        if prio < min || prio > max {
            return Err(Errno::EINVAL);
        }
        if matches!(policy, SCHED_FIFO | SCHED_RR) && !creds.capable(cap::SYS_NICE) {
            return Err(Errno::EPERM);
        }
        may_change(&creds, &q.creds)?;
        if !matches!(policy, SCHED_FIFO | SCHED_RR) {
            if let Some(host) = q.thread(tid).host {
                let sp = libc::sched_param { sched_priority: 0 };
                // SAFETY: `sp` is a valid sched_param; the host thread id is one of the VMM's.
                if unsafe { libc::sched_setscheduler(host.tid, policy, &sp) } != 0 {
                    return Err(Errno::last());
                }
            }
        }
        q.thread(tid).sched = (policy, prio);
        Ok(0)
    })
}

/// `sched_setscheduler(pid, policy, param)`.
pub fn sched_setscheduler(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let t = target(p, cpu, a[0])?;
    if a[2] == 0 {
        return Err(Errno::EINVAL);
    }
    set_policy(p, &t, Some((a[1] as i32) & !SCHED_RESET_ON_FORK), a[2])
}

/// `sched_getscheduler(pid)`.
pub fn sched_getscheduler(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let t = target(p, cpu, a[0])?;
    on_thread(p, &t, |q, tid| Ok(q.thread(tid).sched.0 as u64))
}

/// `sched_setparam(pid, param)`: a new priority within the thread's policy.
pub fn sched_setparam(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let t = target(p, cpu, a[0])?;
    if a[1] == 0 {
        return Err(Errno::EINVAL);
    }
    set_policy(p, &t, None, a[1])
}

/// `sched_getparam(pid, param)`.
pub fn sched_getparam(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let t = target(p, cpu, a[0])?;
    if a[1] == 0 {
        return Err(Errno::EINVAL);
    }
    let prio = on_thread(p, &t, |q, tid| Ok(q.thread(tid).sched.1))?;
    p.mm.write_user(a[1], &prio.to_le_bytes()).map(|()| 0)
}

/// `sched_rr_get_interval(pid, ts)`: the host's time slice for the thread's host thread.
pub fn sched_rr_get_interval(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let t = target(p, cpu, a[0])?;
    let host = on_thread(p, &t, |q, tid| Ok(q.thread(tid).host.map_or(0, |h| h.tid)))?;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::sched_rr_get_interval(host, &mut ts) } != 0 {
        return Err(Errno::last());
    }
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&ts.tv_sec.to_le_bytes());
    b[8..].copy_from_slice(&ts.tv_nsec.to_le_bytes());
    p.mm.write_user(a[1], &b).map(|()| 0)
}

/// `getcpu(cpu, node, cache)`: the host core the calling vCPU's thread runs on; one NUMA node.
pub fn getcpu(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    // SAFETY: sched_getcpu has no arguments.
    let core = unsafe { libc::sched_getcpu() };
    if core < 0 {
        return Err(Errno::last());
    }
    if a[0] != 0 {
        p.mm.write_user(a[0], &(core as u32).to_le_bytes())?;
    }
    if a[1] != 0 {
        p.mm.write_user(a[1], &0u32.to_le_bytes())?;
    }
    Ok(0)
}

/// `personality(persona)`: `0xffffffff` asks; any other value is recorded and reported, as
/// Linux does (the execution domain changes nothing else here, nor there on x86-64).
pub fn personality(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let old = p.personality;
    if a[0] as u32 != u32::MAX {
        p.personality = a[0] as u32;
    }
    Ok(u64::from(old))
}

/// `which` of `getpriority`/`setpriority`.
const PRIO_PROCESS: u64 = 0;
const PRIO_PGRP: u64 = 1;
const PRIO_USER: u64 = 2;

/// The threads a `getpriority`/`setpriority` call reaches: `PRIO_PROCESS` names one thread
/// (0: the caller), as Linux's per-thread nice does, of the caller's process or (by its pid)
/// the first of another process of the vNode; `PRIO_PGRP` and `PRIO_USER` reach every thread
/// of the caller's process when they name its group or its real user (0: the caller's), and
/// no other process (`ESRCH`).
fn prio_targets(p: &Process, cpu: &Cpu<'_>, which: u64, who: u64) -> SysResult<Vec<Target>> {
    let who = who as u32 as i32;
    let all = || p.threads.keys().map(|&t| Target::Own(t)).collect();
    match which as u32 as u64 {
        PRIO_PROCESS => target(p, cpu, who as u32 as u64).map(|t| vec![t]),
        PRIO_PGRP if who == 0 || p.procs.pgid(p.pid) == Ok(who) => Ok(all()),
        PRIO_USER if who == 0 || who as u32 == p.creds.uid => Ok(all()),
        PRIO_PGRP | PRIO_USER => Err(Errno::ESRCH),
        _ => Err(Errno::EINVAL),
    }
}

/// `getpriority(which, who)`: the highest priority (lowest nice value) of the threads it
/// reaches, as the raw call returns it: `20 - nice`, from 1 to 40.
pub fn getpriority(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let mut nice = i32::MAX;
    for t in prio_targets(p, cpu, a[0], a[1])? {
        nice = nice.min(on_thread(p, &t, |q, tid| Ok(q.thread(tid).nice))?);
    }
    Ok((20 - if nice == i32::MAX { 0 } else { nice }) as u64)
}

/// `setpriority(which, who, nice)`: the nice value, clamped to -20..19, of every thread it
/// reaches, applied to their host threads at once (or when they start). Lowering it needs
/// privilege (`EACCES`), as on Linux.
pub fn setpriority(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let threads = prio_targets(p, cpu, a[0], a[1])?;
    let nice = (a[2] as i32).clamp(-20, 19);
    let creds = p.creds;
    for t in &threads {
        on_thread(p, t, |q, tid| {
            may_change(&creds, &q.creds)?;
            if !creds.capable(cap::SYS_NICE) && nice < q.thread(tid).nice {
                return Err(Errno::EACCES);
            }
            Ok(())
        })?;
    }
    for t in &threads {
        on_thread(p, t, |q, tid| {
            let state = q.thread(tid);
            if let Some(host) = state.host {
                hostcpu::renice(host.tid, nice)?;
            }
            state.nice = nice;
            Ok(())
        })?;
    }
    Ok(0)
}

/// `ioprio_set`/`ioprio_get` classes: none (the nice value decides), real time, best effort,
/// idle.
const IOPRIO_CLASS_NONE: u16 = 0;
const IOPRIO_CLASS_RT: u16 = 1;
const IOPRIO_CLASS_BE: u16 = 2;
const IOPRIO_CLASS_IDLE: u16 = 3;

/// The threads an `ioprio_*` call reaches: its `which` (`IOPRIO_WHO_PROCESS`, `_PGRP`,
/// `_USER`: 1 to 3) names what `getpriority`'s (0 to 2) does.
fn ioprio_targets(p: &Process, cpu: &Cpu<'_>, which: u64, who: u64) -> SysResult<Vec<Target>> {
    match which {
        1..=3 => prio_targets(p, cpu, which - 1, who),
        _ => Err(Errno::EINVAL),
    }
}

/// `ioprio_get(which, who)`: the I/O priority `ioprio_set` gave the thread (0, class none,
/// until then); of several threads the highest, as Linux's `ioprio_best` picks it (a class
/// none counts as best effort).
pub fn ioprio_get(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let rank = |v: u16| (if v >> 13 == IOPRIO_CLASS_NONE { IOPRIO_CLASS_BE } else { v >> 13 }, v & 7);
    let mut best = None;
    for t in ioprio_targets(p, cpu, a[0], a[1])? {
        let v = on_thread(p, &t, |q, tid| Ok(q.thread(tid).ioprio))?;
        best = best.into_iter().chain([v]).min_by_key(|&v| rank(v));
    }
    Ok(u64::from(best.unwrap_or(0)))
}

/// `ioprio_set(which, who, ioprio)`: recorded for `ioprio_get`, as the class and level a
/// program asked for. It orders nothing: the vNode's file I/O runs through the VMM and the
/// storage servers, not the host's block-layer queues. The real-time class needs privilege
/// (`EPERM`), as on Linux.
pub fn ioprio_set(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let threads = ioprio_targets(p, cpu, a[0], a[1])?;
    // The level is the low 3 bits of the data; the bits above it are hints, kept as given.
    let value = u16::try_from(a[2]).map_err(|_| Errno::EINVAL)?;
    let (class, level) = (value >> 13, value & 7);
    if class > IOPRIO_CLASS_IDLE || (class == IOPRIO_CLASS_NONE && level != 0) {
        return Err(Errno::EINVAL);
    }
    if class == IOPRIO_CLASS_RT && !p.creds.capable(cap::SYS_NICE) && !p.creds.capable(cap::SYS_ADMIN) {
        return Err(Errno::EPERM);
    }
    let creds = p.creds;
    for t in &threads {
        on_thread(p, t, |q, tid| {
            may_change(&creds, &q.creds)?;
            q.thread(tid).ioprio = value;
            Ok(())
        })?;
    }
    Ok(0)
}
