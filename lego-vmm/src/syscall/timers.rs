//! Timer system calls: `alarm`, `setitimer`/`getitimer` (all three interval timers), the POSIX timers
//! (`timer_create`, `timer_settime`, `timer_gettime`, `timer_getoverrun`, `timer_delete`) over
//! [`crate::timers`], and timerfds, which are host timerfds (the guest's clocks are the host's).

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Weak;
use std::time::Duration;

use super::time::{clock_of, reading};
use super::{Args, Cpu};
use crate::delivery;
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::process::Process;
use crate::timers::{Clock, Notify, PosixTimer, Setting, TimerOwner};

const ITIMER_REAL: u64 = 0;
const ITIMER_VIRTUAL: u64 = 1;
const ITIMER_PROF: u64 = 2;
const TIMER_ABSTIME: u64 = 1;
const SIGEV_SIGNAL: i32 = 0;
const SIGEV_NONE: i32 = 1;
const SIGEV_THREAD_ID: i32 = 4;
const TFD_TIMER_ABSTIME: u64 = 1;
const TFD_TIMER_CANCEL_ON_SET: u64 = 2;

/// How the process's timers reach it: its entry in the process table.
fn me(p: &Process) -> SysResult<Weak<dyn TimerOwner>> {
    let targets = p.procs.kill_targets(p.pid, p.pid)?;
    targets
        .into_iter()
        .find_map(|(_, t)| t)
        .map(|t| std::sync::Arc::downgrade(&t) as Weak<dyn TimerOwner>)
        .ok_or(Errno::ESRCH)
}

/// Timer `key` of `p` expired `count` times: posts its signal ([`crate::timers::Timers::expiry`]).
pub fn fire(p: &mut Process, key: u64, count: u64) {
    let Process { timers, signals, threads, .. } = &mut *p;
    // The closure takes the borrows (so it is `FnOnce`) to hand out the signal it finds.
    let queued = move |id, tid: Option<i32>| {
        let (signals, threads) = (signals, threads);
        match tid {
            None => signals.pending.timer_mut(id),
            Some(tid) => threads.get_mut(&tid).and_then(|t| t.pending.timer_mut(id)),
        }
    };
    let Some((info, tid)) = timers.expiry(key, count, queued) else { return };
    match tid {
        None => delivery::post_process(p, info, None),
        Some(tid) => {
            // A thread that ended takes no more signals: Linux sends them to the process then.
            if delivery::post_thread(p, tid, info, None).is_err() {
                delivery::post_process(p, info, None);
            }
        }
    }
}

/// Timer `id` of `p` is set again or deleted: a signal of its earlier arming that still waits
/// is not delivered.
fn forget_signal(p: &mut Process, id: i32) {
    p.signals.pending.drop_timer(id);
    for t in p.threads.values_mut() {
        t.pending.drop_timer(id);
    }
}

/// Whether the signal of timer `id`, told as `notify`, is pending in `p`.
fn signal_queued(p: &mut Process, id: i32, notify: Notify) -> bool {
    match notify {
        Notify::None => false,
        Notify::Process { .. } => p.signals.pending.timer_mut(id).is_some(),
        Notify::Thread { tid, .. } => p
            .threads
            .get_mut(&tid)
            .is_some_and(|t| t.pending.timer_mut(id).is_some()),
    }
}

/// Reads a `(sec, sub)` pair at `addr` with `sub` in units of `unit` nanoseconds below `max`.
fn read_pair(p: &Process, addr: u64, unit: u32, max: i64) -> SysResult<Duration> {
    let (sec, sub) = (p.mm.read_u64(addr)? as i64, p.mm.read_u64(addr + 8)? as i64);
    if sec < 0 || !(0..max).contains(&sub) {
        return Err(Errno::EINVAL);
    }
    Ok(Duration::new(sec as u64, sub as u32 * unit))
}

fn pair(d: Duration, micros: bool) -> [u8; 16] {
    let mut b = [0u8; 16];
    let sub = if micros {
        u64::from(d.subsec_micros())
    } else {
        u64::from(d.subsec_nanos())
    };
    b[..8].copy_from_slice(&d.as_secs().to_le_bytes());
    b[8..].copy_from_slice(&sub.to_le_bytes());
    b
}

/// Writes `(value, interval)` as `struct itimerval` (`micros`) or `struct itimerspec`: the
/// interval comes first.
fn write_setting(
    p: &Process,
    addr: u64,
    (value, interval): Setting,
    micros: bool,
) -> SysResult<()> {
    let mut b = [0u8; 32];
    // A timeval rounds an armed timer's remaining time up, so that it never reads as disarmed.
    let value = if micros && !value.is_zero() {
        value.max(Duration::from_micros(1))
    } else {
        value
    };
    b[..16].copy_from_slice(&pair(interval, micros));
    b[16..].copy_from_slice(&pair(value, micros));
    p.mm.write_user(addr, &b)
}

/// The clock of interval timer `which`, and its reading now.
fn interval_clock(p: &Process, which: u64) -> SysResult<(Clock, Duration)> {
    let clock = match which {
        ITIMER_REAL => Clock::Wall,
        ITIMER_VIRTUAL => Clock::User,
        ITIMER_PROF => Clock::Cpu,
        _ => return Err(Errno::EINVAL),
    };
    Ok((clock, reading(clock, p)))
}

/// `setitimer(which, new, old)`.
pub fn setitimer(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [which, new, old, ..] = a;
    let clock = interval_clock(p, which)?;
    let (interval, value) = if new == 0 {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (
            read_pair(p, new, 1000, 1_000_000)?,
            read_pair(p, new + 16, 1000, 1_000_000)?,
        )
    };
    let target = me(p)?;
    let was = p.timers.set_interval(target, clock, value, interval)?;
    if old != 0 {
        write_setting(p, old, was, true)?;
    }
    Ok(0)
}

/// `getitimer(which, cur)`.
pub fn getitimer(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let clock = interval_clock(p, a[0])?;
    let now = p.timers.interval(clock);
    write_setting(p, a[1], now, true).map(|()| 0)
}

/// `alarm(seconds)`: returns the seconds that were left (rounded to the nearest, at least 1).
pub fn alarm(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let secs = u64::from(a[0] as u32);
    let target = me(p)?;
    let (left, _) = p
        .timers
        .set_real(target, Duration::from_secs(secs), Duration::ZERO)?;
    if left.is_zero() {
        return Ok(0);
    }
    Ok((left.as_secs() + u64::from(left.subsec_micros() >= 500_000)).max(1))
}

/// `timer_create(clock, sevp, timerid)`. The CPU-time clocks ([`Clock::from_id`]) count the
/// guest's own CPU time (its vCPU host threads'), read every [`crate::timers::CPU_TICK`].
pub fn timer_create(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [clock, sevp, idp, ..] = a;
    let clock = clock as i32;
    let counts = clock_of(clock, p, cpu.tid).ok_or(Errno::EINVAL)?;
    let notify = if sevp == 0 {
        None
    } else {
        let mut ev = [0u8; 20];
        p.mm.read_user(sevp, &mut ev)?;
        let word = |at: usize| i32::from_le_bytes(ev[at..at + 4].try_into().unwrap_or_default());
        let value = u64::from_le_bytes(ev[0..8].try_into().unwrap_or_default());
        let (signo, how, tid) = (word(8), word(12), word(16));
        let valid_sig = (1..=64).contains(&signo);
        Some(match how {
            SIGEV_NONE => Notify::None,
            SIGEV_SIGNAL if valid_sig => Notify::Process { signo, value },
            SIGEV_THREAD_ID if valid_sig && p.threads.contains_key(&tid) => {
                Notify::Thread { signo, value, tid }
            }
            _ => return Err(Errno::EINVAL),
        })
    };
    let id = p.timers.create(clock, counts, Notify::None)?;
    // Without a sigevent: SIGALRM with the timer's id as its value.
    let notify = notify.unwrap_or(Notify::Process {
        signo: libc::SIGALRM,
        value: id as u64,
    });
    p.timers.set_notify(id, notify);
    if let Err(e) = p.mm.write_user(idp, &id.to_le_bytes()) {
        let _ = p.timers.delete(id);
        return Err(e);
    }
    Ok(0)
}

/// `timer_settime(id, flags, new, old)`. With `TIMER_ABSTIME` the value is a time on the
/// timer's clock; one already past fires at once.
pub fn timer_settime(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [id, flags, new, old, ..] = a;
    let id = id as i32;
    let PosixTimer { clock, counts, .. } = *p.timers.posix(id)?;
    let interval = read_pair(p, new, 1, 1_000_000_000)?;
    let mut value = read_pair(p, new + 16, 1, 1_000_000_000)?;
    let reading = reading(counts, p);
    if flags & TIMER_ABSTIME != 0 && !value.is_zero() {
        let now = if counts == Clock::Wall {
            let host_clock = match clock {
                libc::CLOCK_REALTIME_ALARM => libc::CLOCK_REALTIME,
                libc::CLOCK_BOOTTIME_ALARM => libc::CLOCK_BOOTTIME,
                c => c,
            };
            let now = super::time::now(host_clock)?;
            Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
        } else {
            reading
        };
        value = value
            .checked_sub(now)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_nanos(1));
    }
    let target = me(p)?;
    let was = p.timers.set_posix(target, id, reading, value, interval)?;
    forget_signal(p, id);
    if old != 0 {
        write_setting(p, old, was, false)?;
    }
    Ok(0)
}

/// `timer_gettime(id, cur)`.
pub fn timer_gettime(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let counts = p.timers.posix(a[0] as i32)?.counts;
    let setting = p.timers.get_posix(a[0] as i32, reading(counts, p))?;
    write_setting(p, a[1], setting, false).map(|()| 0)
}

/// `timer_getoverrun(id)`.
pub fn timer_getoverrun(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let id = a[0] as i32;
    let t = *p.timers.posix(id)?;
    Ok(u64::from(t.overrun(signal_queued(p, id, t.notify))))
}

/// `timer_delete(id)`.
pub fn timer_delete(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    p.timers.delete(a[0] as i32)?;
    forget_signal(p, a[0] as i32);
    Ok(0)
}

/// `timerfd_create(clock, flags)`: a host timerfd on the same clock.
pub fn timerfd_create(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [clock, flags, ..] = a;
    let (cloexec, nonblock) = (libc::TFD_CLOEXEC as u64, libc::TFD_NONBLOCK as u64);
    if flags & !(cloexec | nonblock) != 0 {
        return Err(Errno::EINVAL);
    }
    if !matches!(
        clock as i32,
        libc::CLOCK_REALTIME
            | libc::CLOCK_MONOTONIC
            | libc::CLOCK_BOOTTIME
            | libc::CLOCK_REALTIME_ALARM
            | libc::CLOCK_BOOTTIME_ALARM
    ) {
        return Err(Errno::EINVAL);
    }
    // The host descriptor never blocks the VMM: a blocking read waits in `read` first.
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::timerfd_create(clock as i32, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let status = libc::O_RDWR | (flags & nonblock) as i32;
    let file = OpenFile::new(
        Backing::Host(owned),
        b"anon_inode:[timerfd]".to_vec(),
        status,
    );
    p.fds.alloc(file, 0, flags & cloexec != 0)
}

/// The host timerfd behind guest descriptor `fd` (`EBADF`, or `EINVAL` for another kind).
fn host_timerfd(p: &Process, fd: u64) -> SysResult<(std::sync::Arc<OpenFile>, i32)> {
    let file = p.fds.get(u64::from(fd as u32))?;
    let host = match &file.backing {
        Backing::Host(_) if file.path == b"anon_inode:[timerfd]" => file.host_fd(),
        _ => None,
    };
    let host = host.ok_or(Errno::EINVAL)?;
    Ok((file, host))
}

fn read_itimerspec(p: &Process, addr: u64) -> SysResult<libc::itimerspec> {
    let interval = read_pair(p, addr, 1, 1_000_000_000)?;
    let value = read_pair(p, addr + 16, 1, 1_000_000_000)?;
    let ts = |d: Duration| libc::timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    };
    Ok(libc::itimerspec {
        it_interval: ts(interval),
        it_value: ts(value),
    })
}

fn write_itimerspec(p: &Process, addr: u64, its: &libc::itimerspec) -> SysResult<()> {
    let d = |t: libc::timespec| {
        Duration::new(
            t.tv_sec.max(0) as u64,
            t.tv_nsec.clamp(0, 999_999_999) as u32,
        )
    };
    write_setting(p, addr, (d(its.it_value), d(its.it_interval)), false)
}

/// `timerfd_settime(fd, flags, new, old)`.
pub fn timerfd_settime(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fd, flags, new, old, ..] = a;
    if flags & !(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET) != 0 {
        return Err(Errno::EINVAL);
    }
    let (_file, host) = host_timerfd(p, fd)?;
    let its = read_itimerspec(p, new)?;
    // SAFETY: an all-zero itimerspec is valid.
    let mut was: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: `host` is an open timerfd; `its` and `was` are valid itimerspecs.
    if unsafe { libc::timerfd_settime(host, flags as i32, &its, &mut was) } != 0 {
        return Err(Errno::last());
    }
    if old != 0 {
        write_itimerspec(p, old, &was)?;
    }
    Ok(0)
}

/// `timerfd_gettime(fd, cur)`.
pub fn timerfd_gettime(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (_file, host) = host_timerfd(p, a[0])?;
    // SAFETY: an all-zero itimerspec is valid.
    let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: `host` is an open timerfd; `cur` is a valid itimerspec.
    if unsafe { libc::timerfd_gettime(host, &mut cur) } != 0 {
        return Err(Errno::last());
    }
    write_itimerspec(p, a[1], &cur).map(|()| 0)
}
