//! The host side of a guest thread: the host thread that runs its vCPU, the cores it may use,
//! and the CPU time it has spent (what `getrusage`, `times` and `sched_setaffinity` act on).

use std::time::Duration;

use crate::errno::{Errno, SysResult};

/// CPU time, split as `getrusage` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl std::ops::Add for CpuTime {
    type Output = CpuTime;
    fn add(self, o: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user + o.user,
            system: self.system + o.system,
        }
    }
}

impl std::ops::AddAssign for CpuTime {
    fn add_assign(&mut self, o: CpuTime) {
        *self = *self + o;
    }
}

impl CpuTime {
    /// What was spent since `base`.
    pub fn since(self, base: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(base.user),
            system: self.system.saturating_sub(base.system),
        }
    }
}

/// The host thread running a guest thread's vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostThread {
    /// Its host thread id.
    pub tid: i32,
    /// Its CPU time when it started running the guest thread (a host thread may have done VMM
    /// work before: that is not the guest's).
    pub base: CpuTime,
}

impl HostThread {
    /// The calling host thread, from now on.
    pub fn current() -> HostThread {
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        HostThread {
            tid,
            base: own_time(),
        }
    }

    /// The CPU time the thread has spent on the guest thread so far.
    pub fn spent(&self) -> CpuTime {
        // SAFETY: gettid has no arguments and cannot fail.
        let me = unsafe { libc::gettid() };
        let now = if me == self.tid {
            own_time()
        } else {
            other_time(self.tid).unwrap_or(self.base)
        };
        now.since(self.base)
    }

    /// The CPU time the thread has spent on the guest thread so far, user and system together,
    /// at the host scheduler's nanosecond precision (what the CPU-time clocks report).
    pub fn clock(&self) -> Duration {
        // The kernel's clock of one thread's CPU time, as `pthread_getcpuclockid` names it:
        // `MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)`. Any thread of this process may read it.
        let id: libc::clockid_t = ((!self.tid) << 3) | 4 | 2;
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec.
        if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
            return Duration::ZERO;
        }
        let total = Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32);
        total.saturating_sub(self.base.user + self.base.system)
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// The calling host thread's CPU time (`RUSAGE_THREAD`, microsecond precision).
fn own_time() -> CpuTime {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return CpuTime::default();
    }
    CpuTime {
        user: timeval(ru.ru_utime),
        system: timeval(ru.ru_stime),
    }
}

/// Another host thread's CPU time, from `/proc/self/task/TID/stat` (clock-tick precision).
fn other_time(tid: i32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at the state, field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let (utime, stime): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let tick = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000 / hz));
    Some(CpuTime {
        user: tick(utime),
        system: tick(stime),
    })
}

/// The host cores the calling thread may use (when the run starts: the pComponent's cores given
/// to the vNode), as a mask of the first 64.
pub fn cores() -> u64 {
    // SAFETY: an all-zero cpu_set_t is valid; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return 1;
    }
    (0..64)
        .filter(|&c| {
            // SAFETY: `set` is initialised and c < CPU_SETSIZE.
            unsafe { libc::CPU_ISSET(c, &set) }
        })
        .fold(0u64, |m, c| m | 1 << c)
}

/// Pins host thread `tid` to the cores of `mask`.
pub fn pin(tid: i32, mask: u64) -> SysResult<()> {
    // SAFETY: an all-zero cpu_set_t is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in (0..64).filter(|c| mask & (1 << c) != 0) {
        // SAFETY: `set` is a valid cpu_set_t and c < CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The calling host thread's nice value.
pub fn own_nice() -> i32 {
    // SAFETY: getpriority only reads; -1 is also a valid answer, told apart by errno, and
    // PRIO_PROCESS 0 (the caller) cannot fail.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// Gives host thread `tid` the nice value `nice`.
pub fn renice(tid: i32, nice: i32) -> SysResult<()> {
    // SAFETY: setpriority only changes the scheduling of the thread named.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_sees_its_own_cpu_time_grow() {
        let me = HostThread::current();
        // Spin until 10 ms of CPU time show (on a loaded machine that takes longer than 10 ms
        // of wall time); a clock that never moves fails after 20 s.
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        let mut spent = me.spent();
        while spent.user + spent.system < Duration::from_millis(10) && std::time::Instant::now() < give_up {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            spent = me.spent();
        }
        assert!(
            spent.user + spent.system >= Duration::from_millis(10),
            "{spent:?} after 20 s of spinning"
        );
        // Read from another thread, through /proc, at clock-tick precision.
        let other = std::thread::spawn(move || me.spent()).join().unwrap();
        assert!(
            other.user + other.system + Duration::from_millis(20) >= spent.user + spent.system,
            "{other:?} against {spent:?}"
        );
        // The thread's clock, read from here and from another thread, agrees at ns precision.
        let mine = me.clock();
        let theirs = std::thread::spawn(move || me.clock()).join().unwrap();
        assert!(mine >= Duration::from_millis(9) && theirs >= mine, "{mine:?} then {theirs:?}");
        assert_ne!(cores(), 0);
    }
}
