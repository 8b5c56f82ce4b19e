//! Clocks and sleeping: the host's clocks, read on the guest's behalf, and the CPU-time clocks of
//! a process and its threads ([`Clock`]).

use std::time::{Duration, Instant};

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::process::{Locked, Process};
use crate::timers::Clock;

fn host_clock(clock: u64) -> SysResult<libc::clockid_t> {
    // Negative ids name per-process CPU clocks of other processes; not supported.
    match clock as i32 {
        c @ (0..=9 | 11) => Ok(c),
        _ => Err(Errno::EINVAL),
    }
}

/// The reading of `clock` in process `p` (for [`Clock::Wall`]: zero). A thread that ended
/// keeps its clock at zero, so a timer on it never fires.
pub fn reading(clock: Clock, p: &Process) -> Duration {
    match clock {
        Clock::Wall => Duration::ZERO,
        Clock::User => p.cpu_time().user,
        Clock::Cpu => {
            let t = p.cpu_time();
            t.user + t.system
        }
        Clock::Thread(tid) => p.threads.get(&tid).and_then(|t| t.host).map(|h| h.clock()).unwrap_or_default(),
    }
}

/// The clock `id` names for thread `tid` of `p` ([`Clock::from_id`]).
pub fn clock_of(id: i32, p: &Process, tid: i32) -> Option<Clock> {
    Clock::from_id(id, (p.pid, tid), |t| p.threads.contains_key(&t))
}

pub(super) fn now(clock: libc::clockid_t) -> SysResult<libc::timespec> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(Errno::last());
    }
    Ok(ts)
}

fn write_timespec(p: &Process, addr: u64, ts: &libc::timespec) -> SysResult<()> {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&ts.tv_sec.to_le_bytes());
    b[8..].copy_from_slice(&ts.tv_nsec.to_le_bytes());
    p.mm.write_user(addr, &b)
}

pub(super) fn read_timespec(p: &Process, addr: u64) -> SysResult<libc::timespec> {
    let (sec, nsec) = (p.mm.read_u64(addr)? as i64, p.mm.read_u64(addr + 8)? as i64);
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(Errno::EINVAL);
    }
    Ok(libc::timespec { tv_sec: sec, tv_nsec: nsec })
}

/// `clock_gettime(clock, ts)`. The CPU-time clocks are the guest's own: its threads' vCPU
/// host threads (for the process, with those that ended), not the VMM process's, which also
/// runs the other processes of the vNode and the memory path.
pub fn clock_gettime(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let ts = match clock_of(a[0] as i32, p, cpu.tid) {
        Some(Clock::Cpu) => timespec(process_clock(p)),
        Some(c @ (Clock::User | Clock::Thread(_))) => timespec(reading(c, p)),
        _ => now(host_clock(a[0])?)?,
    };
    write_timespec(p, a[1], &ts).map(|()| 0)
}

/// The process's CPU time at nanosecond precision: its live threads' and those that ended.
fn process_clock(p: &Process) -> Duration {
    let ended = p.usage.user + p.usage.system;
    p.threads.values().filter_map(|t| t.host).fold(ended, |sum, h| sum + h.clock())
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: libc::c_long::from(d.subsec_nanos()) }
}

pub fn clock_getres(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    // A dynamic CPU clock has the resolution of the CPU-time clocks.
    let clock = match clock_of(a[0] as i32, p, cpu.tid) {
        Some(Clock::User | Clock::Cpu | Clock::Thread(_)) => libc::CLOCK_PROCESS_CPUTIME_ID,
        _ => host_clock(a[0])?,
    };
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_getres(clock, &mut ts) } != 0 {
        return Err(Errno::last());
    }
    if a[1] != 0 {
        write_timespec(p, a[1], &ts)?;
    }
    Ok(0)
}

pub fn gettimeofday(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let ts = now(libc::CLOCK_REALTIME)?;
    if a[0] != 0 {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&ts.tv_sec.to_le_bytes());
        b[8..].copy_from_slice(&(ts.tv_nsec / 1000).to_le_bytes());
        p.mm.write_user(a[0], &b)?;
    }
    if a[1] != 0 {
        p.mm.write_user(a[1], &[0u8; 8])?;
    }
    Ok(0)
}

pub fn time(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let t = now(libc::CLOCK_REALTIME)?.tv_sec as u64;
    if a[0] != 0 {
        p.mm.write_u64(a[0], t)?;
    }
    Ok(t)
}

/// Sleeps until `clock` reads `req` (`TIMER_ABSTIME` in `flags`) or for `req`, without the
/// process lock; `EINTR` when the process ends or a signal comes for thread `tid` meanwhile.
/// Thread `tid` sleeps for `req` on `clock` (until it, with `TIMER_ABSTIME` in `flags`). A
/// relative sleep that a signal interrupts writes what is left at `rem` (if not null), and
/// keeps its deadline for the restart of the call if no handler runs ([`ThreadState::sleep_until`]).
///
/// [`ThreadState::sleep_until`]: crate::process::ThreadState::sleep_until
fn sleep(p: &mut Locked<'_>, tid: i32, clock: libc::clockid_t, flags: i32, req: &libc::timespec, rem: u64) -> SysResult<u64> {
    let mut d = Duration::new(req.tv_sec as u64, req.tv_nsec as u32);
    let relative = flags & libc::TIMER_ABSTIME == 0;
    if !relative {
        let now = now(clock)?;
        d = d.saturating_sub(Duration::new(now.tv_sec as u64, now.tv_nsec as u32));
    }
    let resumed = p.thread(tid).sleep_until.take();
    let deadline = resumed.filter(|_| relative).unwrap_or_else(|| Instant::now() + d);
    let group = p.group.clone();
    let slept = p.unlocked(|| group.sleep_until(tid, Some(deadline)));
    if slept == Err(Errno::EINTR) && relative {
        p.thread(tid).sleep_until = Some(deadline);
        if rem != 0 {
            write_timespec(p, rem, &timespec(deadline.saturating_duration_since(Instant::now())))?;
        }
    }
    slept.map(|()| 0)
}

pub fn nanosleep(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let req = read_timespec(p, a[0])?;
    sleep(p, cpu.tid, libc::CLOCK_MONOTONIC, 0, &req, a[1])
}

pub fn clock_nanosleep(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let clock = host_clock(a[0])?;
    if matches!(clock, libc::CLOCK_PROCESS_CPUTIME_ID | libc::CLOCK_THREAD_CPUTIME_ID) {
        return Err(Errno::EINVAL);
    }
    let req = read_timespec(p, a[2])?;
    sleep(p, cpu.tid, clock, (a[1] as i32) & libc::TIMER_ABSTIME, &req, a[3])
}
