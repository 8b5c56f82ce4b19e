//! Scheduling: CPU affinity (`sched_setaffinity` pins the host thread that runs the vCPU,
//! within the cores the pComponent gives the vNode), policies and priorities, `getcpu`, and
//! `personality`.

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::hostcpu;
use crate::process::Process;

/// The thread a `sched_*` call names: 0 is the caller; another id must be a thread of the
/// process (other processes of the vNode run in VMs of their own: `ESRCH`).
fn target(p: &Process, cpu: &Cpu<'_>, pid: u64) -> SysResult<i32> {
    let pid = pid as i32;
    match pid {
        0 => Ok(cpu.tid),
        t if t < 0 => Err(Errno::EINVAL),
        t if p.threads.contains_key(&t) => Ok(t),
        _ => Err(Errno::ESRCH),
    }
}

/// Bytes of the CPU masks lego reports (the first 64 host CPUs).
const MASK_BYTES: u64 = 8;

/// `sched_setaffinity(pid, len, mask)`: the thread runs only on the cores of `mask` that the
/// vNode has (`EINVAL` if none is left); its host thread is pinned at once (or when it starts).
pub fn sched_setaffinity(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [pid, len, addr, ..] = a;
    let tid = target(p, cpu, pid)?;
    let mut raw = [0u8; 8];
    let n = len.min(MASK_BYTES) as usize;
    p.mm.read_user(addr, &mut raw[..n])?;
    let mask = u64::from_le_bytes(raw) & p.cores;
    if mask == 0 {
        return Err(Errno::EINVAL);
    }
    let t = p.thread(tid);
    if let Some(host) = t.host {
        hostcpu::pin(host.tid, mask)?;
    }
    t.affinity = Some(mask);
    pinned_cpu_to_rseq(p, tid);
    Ok(0)
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
    let tid = target(p, cpu, pid)?;
    if len < MASK_BYTES || len % 8 != 0 {
        return Err(Errno::EINVAL);
    }
    let cores = p.cores;
    let mask = p.thread(tid).affinity.unwrap_or(cores);
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

/// Sets `tid`'s policy and priority. The normal policies (`SCHED_OTHER`, `SCHED_BATCH`,
/// `SCHED_IDLE`) are applied to its host thread; the real-time ones are allowed only to a
/// privileged caller (as on Linux) and recorded, but the host thread stays a normal one: a
/// guest spinning at real-time priority must not starve the pComponent's other vNodes.
fn set_policy(p: &mut Process, tid: i32, policy: i32, param: u64) -> SysResult<()> {
    let mut raw = [0u8; 4];
    p.mm.read_user(param, &mut raw)?;
    let prio = i32::from_le_bytes(raw);
    let (min, max) = priorities(policy)?;
    if prio < min || prio > max {
        return Err(Errno::EINVAL);
    }
    if matches!(policy, SCHED_FIFO | SCHED_RR) && p.creds.euid != 0 {
        return Err(Errno::EPERM);
    }
    if !matches!(policy, SCHED_FIFO | SCHED_RR) {
        if let Some(host) = p.thread(tid).host {
            let sp = libc::sched_param { sched_priority: 0 };
            // SAFETY: `sp` is a valid sched_param; the host thread id is one of this process.
            if unsafe { libc::sched_setscheduler(host.tid, policy, &sp) } != 0 {
                return Err(Errno::last());
            }
        }
    }
    p.thread(tid).sched = (policy, prio);
    Ok(())
}

/// `sched_setscheduler(pid, policy, param)`.
pub fn sched_setscheduler(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let tid = target(p, cpu, a[0])?;
    if a[2] == 0 {
        return Err(Errno::EINVAL);
    }
    set_policy(p, tid, (a[1] as i32) & !SCHED_RESET_ON_FORK, a[2]).map(|()| 0)
}

/// `sched_getscheduler(pid)`.
pub fn sched_getscheduler(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let tid = target(p, cpu, a[0])?;
    Ok(p.thread(tid).sched.0 as u64)
}

/// `sched_setparam(pid, param)`: a new priority within the thread's policy.
pub fn sched_setparam(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let tid = target(p, cpu, a[0])?;
    if a[1] == 0 {
        return Err(Errno::EINVAL);
    }
    let policy = p.thread(tid).sched.0;
    set_policy(p, tid, policy, a[1]).map(|()| 0)
}

/// `sched_getparam(pid, param)`.
pub fn sched_getparam(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let tid = target(p, cpu, a[0])?;
    if a[1] == 0 {
        return Err(Errno::EINVAL);
    }
    let prio = p.thread(tid).sched.1;
    p.mm.write_user(a[1], &prio.to_le_bytes()).map(|()| 0)
}

/// `sched_rr_get_interval(pid, ts)`: the host's time slice for the thread's host thread.
pub fn sched_rr_get_interval(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let tid = target(p, cpu, a[0])?;
    let host = p.thread(tid).host.map_or(0, |h| h.tid);
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
