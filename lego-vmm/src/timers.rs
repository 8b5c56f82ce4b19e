//! Timers of a vNode process: `alarm`/`setitimer` (`ITIMER_REAL`, and `ITIMER_VIRTUAL` and
//! `ITIMER_PROF` on the process's CPU time) and POSIX timers (`timer_create` with
//! `SIGEV_SIGNAL`, `SIGEV_THREAD_ID` or `SIGEV_NONE`). (A timerfd is a host timerfd: the host's
//! clocks are the guest's.)
//!
//! Every armed timer of a process is an entry in its [`TimerService`]: one host thread, started
//! when a timer is armed and gone when none is, sleeps until the earliest expiry and fires it.
//! A timer on CPU time has no moment to sleep until: while one is armed, the thread reads the
//! process's CPU time every [`CPU_TICK`] (Linux counts it at the scheduler tick too) and fires
//! the timer once that time is reached.
//! A signal timer then posts its signal to the process under the process lock (through the
//! [`TimerOwner`] the process is reached by); a timer whose previous signal still waits is not
//! queued again but counts an overrun, as Linux's preallocated timer signal does.

use lego_proto::sync::{CondvarExt, LockExt};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::errno::{Errno, SysResult};
use crate::signal::{SigInfo, SI_KERNEL};

/// The process timers belong to, as their service thread reaches it.
pub trait TimerOwner: Send + Sync {
    /// The reading of `clock` in the process now ([`Clock::Wall`]: zero). A thread that ended
    /// keeps its clock at zero, so a timer on it never fires.
    fn reading(&self, clock: Clock) -> Duration;

    /// Timer `key` of the process expired `count` times: under the process lock, which a call
    /// that sets the timer holds, posts what [`Timers::expiry`] says, unless `current()` (asked
    /// under that lock) says the expiry is void.
    fn expire(&self, key: u64, count: u64, current: &mut dyn FnMut() -> bool);
}

/// What an armed timer does when it expires.
#[derive(Clone)]
enum Action {
    /// Fires timer `key` of the process ([`TimerOwner::expire`]).
    Process {
        target: Weak<dyn TimerOwner>,
        key: u64,
    },
    /// Nothing (a timer being disarmed).
    Nothing,
}

/// What a timer counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Wall-clock time.
    Wall,
    /// The process's user CPU time (`ITIMER_VIRTUAL`).
    User,
    /// The process's user and system CPU time (`ITIMER_PROF`, `CLOCK_PROCESS_CPUTIME_ID`).
    Cpu,
    /// The user and system CPU time of one thread (`CLOCK_THREAD_CPUTIME_ID`).
    Thread(i32),
}

impl Clock {
    /// The clock `id` names for thread `tid` of process `pid` (whose threads `is_thread` tells),
    /// if lego provides it: the wall clocks, the CPU-time clocks of the process and of the
    /// calling thread (2 and 3), and the dynamic CPU-clock ids the C library makes of those and
    /// of `pthread_getcpuclockid` (negative: `~pid << 3 | per-thread << 2 | kind`, pid 0 meaning
    /// the caller). A thread's clock counts its user and system time whatever its kind; other
    /// processes' clocks are not provided.
    pub fn from_id(id: i32, (pid, tid): (i32, i32), is_thread: impl Fn(i32) -> bool) -> Option<Clock> {
        const PER_THREAD: i32 = 4;
        const VIRT: i32 = 1;
        const FD: i32 = 3;
        match id {
            libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME | libc::CLOCK_REALTIME_ALARM | libc::CLOCK_BOOTTIME_ALARM => {
                Some(Clock::Wall)
            }
            libc::CLOCK_PROCESS_CPUTIME_ID => Some(Clock::Cpu),
            libc::CLOCK_THREAD_CPUTIME_ID => Some(Clock::Thread(tid)),
            c if c < 0 && c & 3 != FD => {
                let named = !(c >> 3);
                if c & PER_THREAD != 0 {
                    let t = if named == 0 { tid } else { named };
                    is_thread(t).then_some(Clock::Thread(t))
                } else {
                    (named == 0 || named == pid).then_some(if c & 3 == VIRT { Clock::User } else { Clock::Cpu })
                }
            }
            _ => None,
        }
    }
}

/// How often the service reads the CPU time of a process with a CPU-time timer armed.
pub const CPU_TICK: Duration = Duration::from_millis(4);

struct Armed {
    /// When it expires: the wall-clock moment, or the reading of its CPU clock.
    next: Due,
    interval: Option<Duration>,
    action: Action,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    At(Instant),
    Cpu(Clock, Duration),
}

#[derive(Default)]
struct Schedule {
    armed: BTreeMap<u64, Armed>,
    /// Whether the service thread runs.
    running: bool,
    next_key: u64,
    /// How many times each timer was set (armed or disarmed): an expiry found under an older
    /// setting is not fired, so no signal comes after `timer_settime` or `setitimer` returned.
    settings: BTreeMap<u64, u64>,
}

/// The timers of one process, in expiry order, and the host thread that fires them.
#[derive(Default)]
pub struct TimerService {
    schedule: Mutex<Schedule>,
    changed: Condvar,
}

/// Shortest period a timer repeats at (shorter ones are stretched to it).
pub const MIN_INTERVAL: Duration = Duration::from_micros(50);

/// `(value, interval)` of a timer, as `it_value` and `it_interval`: zero value for a disarmed
/// timer.
pub type Setting = (Duration, Duration);

impl TimerService {
    fn lock(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock_unpoisoned()
    }

    /// A key for a new timer.
    fn key(&self) -> u64 {
        let mut s = self.lock();
        s.next_key += 1;
        s.next_key
    }

    /// Arms timer `key` to expire after `value` and then every `interval` (none if zero) of
    /// `clock`, whose reading is `now` (ignored for wall-clock time), or disarms it (zero
    /// `value`). Returns what it was set to before.
    fn set(
        self: &Arc<Self>,
        key: u64,
        action: Action,
        (clock, now): (Clock, Duration),
        value: Duration,
        interval: Duration,
    ) -> SysResult<Setting> {
        let mut s = self.lock();
        if matches!(action, Action::Nothing) {
            // Deleted: no expiry of it fires any more.
            s.settings.remove(&key);
        } else {
            *s.settings.entry(key).or_default() += 1;
        }
        let old = s
            .armed
            .remove(&key)
            .map(|a| remaining(&a, now))
            .unwrap_or_default();
        if !value.is_zero() {
            // A period below the floor would keep the host thread firing without a pause.
            let interval = (!interval.is_zero()).then_some(interval.max(MIN_INTERVAL));
            let next = match clock {
                Clock::Wall => Due::At(Instant::now() + value),
                _ => Due::Cpu(clock, now + value),
            };
            s.armed.insert(key, Armed { next, interval, action });
            if !s.running {
                let me = self.clone();
                std::thread::Builder::new()
                    .name("timers".into())
                    .spawn(move || me.serve())
                    .map_err(|_| Errno::EAGAIN)?;
                s.running = true;
            }
        }
        drop(s);
        self.changed.notify_all();
        Ok(old)
    }

    /// What timer `key` is set to now; `now` is the reading of its clock if that is CPU time.
    fn get(&self, key: u64, now: Duration) -> Setting {
        self.lock()
            .armed
            .get(&key)
            .map(|a| remaining(a, now))
            .unwrap_or_default()
    }

    /// The current reading of the CPU clock of every armed CPU-time timer, by key (read with
    /// the schedule let go: a process's lock comes before it).
    fn read_cpu_clocks<'a>(&'a self, s: MutexGuard<'a, Schedule>) -> (MutexGuard<'a, Schedule>, BTreeMap<u64, Duration>) {
        let cpu: Vec<(u64, Clock, Action)> = s
            .armed
            .iter()
            .filter_map(|(&k, a)| match a.next {
                Due::Cpu(clock, _) => Some((k, clock, a.action.clone())),
                Due::At(_) => None,
            })
            .collect();
        if cpu.is_empty() {
            return (s, BTreeMap::new());
        }
        drop(s);
        let mut now = BTreeMap::new();
        let mut gone = Vec::new();
        for (key, clock, action) in cpu {
            match action {
                Action::Process { target, .. } => match target.upgrade() {
                    Some(t) => {
                        now.insert(key, t.reading(clock));
                    }
                    None => gone.push(key),
                },
                Action::Nothing => gone.push(key),
            }
        }
        let mut s = self.lock();
        // The timers of a process that is gone are dropped.
        s.armed.retain(|k, _| !gone.contains(k));
        (s, now)
    }

    /// The service thread: fires what is due, sleeps until the next expiry, and ends when
    /// nothing is armed.
    fn serve(self: Arc<Self>) {
        let mut s = self.lock();
        loop {
            if s.armed.is_empty() {
                s.running = false;
                return;
            }
            let cpu_now;
            (s, cpu_now) = self.read_cpu_clocks(s);
            let now = Instant::now();
            // How far past its expiry each timer is (`None`: not due yet).
            let overdue = |k: &u64, a: &Armed| match a.next {
                Due::At(at) => (at <= now).then(|| now - at),
                Due::Cpu(_, at) => cpu_now.get(k).filter(|&&t| t >= at).map(|&t| t - at),
            };
            let due: Vec<(u64, Duration)> = s.armed.iter().filter_map(|(k, a)| Some((*k, overdue(k, a)?))).collect();
            if due.is_empty() {
                let wake = s
                    .armed
                    .values()
                    .map(|a| match a.next {
                        Due::At(at) => at.saturating_duration_since(now),
                        Due::Cpu(..) => CPU_TICK,
                    })
                    .min()
                    .unwrap_or(CPU_TICK);
                s = self.changed.wait_timeout_unpoisoned(s, wake).0;
                continue;
            }
            let mut fire_now = Vec::new();
            for (key, late_by) in due {
                let setting = s.settings.get(&key).copied().unwrap_or_default();
                let Some(a) = s.armed.get_mut(&key) else {
                    continue;
                };
                let mut count = 1u64;
                match a.interval {
                    Some(i) => {
                        // Expirations missed while the host was busy count too.
                        let late = u32::try_from(late_by.as_nanos() / i.as_nanos().max(1)).unwrap_or(u32::MAX);
                        count += u64::from(late);
                        let step = i.checked_mul(late.saturating_add(1));
                        a.next = match a.next {
                            Due::At(at) => Due::At(step.and_then(|d| at.checked_add(d)).unwrap_or(now + i)),
                            Due::Cpu(clock, at) => Due::Cpu(clock, step.and_then(|d| at.checked_add(d)).unwrap_or(at + late_by + i)),
                        };
                        fire_now.push((a.action.clone(), count, setting));
                    }
                    None => {
                        if let Some(a) = s.armed.remove(&key) {
                            fire_now.push((a.action, count, setting));
                        }
                    }
                }
            }
            drop(s);
            let mut gone = Vec::new();
            for (action, count, setting) in fire_now {
                let alive = match &action {
                    Action::Process { target, key } => match target.upgrade() {
                        Some(t) => {
                            // Under the process lock, which a call that sets the timer holds:
                            // either it set the timer before (and this expiry is void), or it
                            // comes after and drops the signal this posts.
                            t.expire(*key, count, &mut || self.lock().settings.get(key) == Some(&setting));
                            true
                        }
                        None => false,
                    },
                    Action::Nothing => false,
                };
                if !alive {
                    gone.push(action);
                }
            }
            s = self.lock();
            // Timers of a process or a timerfd that are gone are dropped.
            s.armed
                .retain(|_, a| !gone.iter().any(|g| same(g, &a.action)));
        }
    }
}

fn same(a: &Action, b: &Action) -> bool {
    match (a, b) {
        (Action::Process { key: x, target: t }, Action::Process { key: y, target: u }) => {
            x == y && Weak::ptr_eq(t, u)
        }
        _ => false,
    }
}

/// The setting of armed timer `a`; `now` is the reading of its clock if that is CPU time.
fn remaining(a: &Armed, now: Duration) -> Setting {
    let left = match a.next {
        Due::At(at) => at.saturating_duration_since(Instant::now()),
        Due::Cpu(_, at) => at.saturating_sub(now),
    };
    // An armed timer never reads as disarmed.
    (
        left.max(Duration::from_nanos(1)),
        a.interval.unwrap_or_default(),
    )
}

/// How a POSIX timer tells its expiry (`struct sigevent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// `SIGEV_NONE`: nothing; the program polls `timer_gettime`.
    None,
    /// `SIGEV_SIGNAL`: the signal to the process.
    Process { signo: i32, value: u64 },
    /// `SIGEV_THREAD_ID`: the signal to one thread.
    Thread { signo: i32, value: u64, tid: i32 },
}

/// One POSIX timer.
#[derive(Debug, Clone, Copy)]
pub struct PosixTimer {
    key: u64,
    /// The clock id it was created on.
    pub clock: i32,
    /// What it counts.
    pub counts: Clock,
    pub notify: Notify,
    /// Expirations that found the timer's signal still queued, since it was queued.
    overrun_queued: u32,
    /// The overrun count of the signal delivered last (`timer_getoverrun`).
    overrun_last: u32,
}

impl PosixTimer {
    /// `timer_getoverrun`: the overruns of the signal delivered last. While the timer's signal
    /// is `queued`, the overruns it counts are not delivered yet.
    pub fn overrun(&self, queued: bool) -> u32 {
        if queued {
            self.overrun_last
        } else {
            self.overrun_queued
        }
    }
}

/// Most POSIX timers a process may have.
const MAX_TIMERS: usize = 1024;

/// The timers of a process. Not inherited by a fork; POSIX timers go on `execve`.
#[derive(Default)]
pub struct Timers {
    service: Arc<TimerService>,
    /// The key of the `ITIMER_REAL` timer, once used.
    real: Option<u64>,
    /// The keys of the `ITIMER_VIRTUAL` and `ITIMER_PROF` timers, once used.
    user: Option<u64>,
    cpu: Option<u64>,
    posix: BTreeMap<i32, PosixTimer>,
}

impl Timers {
    /// `ITIMER_REAL`: sets it (zero value disarms) and returns the old setting.
    pub fn set_real(
        &mut self,
        target: Weak<dyn TimerOwner>,
        value: Duration,
        interval: Duration,
    ) -> SysResult<Setting> {
        self.set_interval(target, (Clock::Wall, Duration::ZERO), value, interval)
    }

    /// The `ITIMER_REAL` setting.
    pub fn real(&self) -> Setting {
        self.interval((Clock::Wall, Duration::ZERO))
    }

    /// The interval timer on `clock` (`ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`), whose
    /// reading is `now`: sets it (zero value disarms) and returns the old setting.
    pub fn set_interval(
        &mut self,
        target: Weak<dyn TimerOwner>,
        (clock, now): (Clock, Duration),
        value: Duration,
        interval: Duration,
    ) -> SysResult<Setting> {
        let slot = match clock {
            Clock::Wall => &mut self.real,
            Clock::User => &mut self.user,
            Clock::Cpu => &mut self.cpu,
            // No interval timer counts one thread's time.
            Clock::Thread(_) => return Err(Errno::EINVAL),
        };
        let key = *slot.get_or_insert_with(|| self.service.key());
        self.service.set(key, Action::Process { target, key }, (clock, now), value, interval)
    }

    /// The setting of the interval timer on `clock`, whose reading is `now`.
    pub fn interval(&self, (clock, now): (Clock, Duration)) -> Setting {
        let key = match clock {
            Clock::Wall => self.real,
            Clock::User => self.user,
            Clock::Cpu => self.cpu,
            Clock::Thread(_) => None,
        };
        key.map(|k| self.service.get(k, now)).unwrap_or_default()
    }

    /// A new, disarmed POSIX timer; returns its id.
    pub fn create(&mut self, clock: i32, counts: Clock, notify: Notify) -> SysResult<i32> {
        if self.posix.len() >= MAX_TIMERS {
            return Err(Errno::EAGAIN);
        }
        let id = (0..)
            .find(|i| !self.posix.contains_key(i))
            .ok_or(Errno::EAGAIN)?;
        let key = self.service.key();
        self.posix.insert(
            id,
            PosixTimer {
                key,
                clock,
                counts,
                notify,
                overrun_queued: 0,
                overrun_last: 0,
            },
        );
        Ok(id)
    }

    /// How POSIX timer `id` tells its expiry.
    pub fn set_notify(&mut self, id: i32, notify: Notify) {
        if let Some(t) = self.posix.get_mut(&id) {
            t.notify = notify;
        }
    }

    /// POSIX timer `id`, `EINVAL` if there is none.
    pub fn posix(&self, id: i32) -> SysResult<&PosixTimer> {
        self.posix.get(&id).ok_or(Errno::EINVAL)
    }

    /// Arms or disarms POSIX timer `id`, whose clock reads `now`; returns its old setting.
    pub fn set_posix(
        &mut self,
        target: Weak<dyn TimerOwner>,
        id: i32,
        now: Duration,
        value: Duration,
        interval: Duration,
    ) -> SysResult<Setting> {
        let t = self.posix(id)?;
        let key = t.key;
        self.service.set(key, Action::Process { target, key }, (t.counts, now), value, interval)
    }

    /// The setting of POSIX timer `id`, whose clock reads `now`.
    pub fn get_posix(&self, id: i32, now: Duration) -> SysResult<Setting> {
        Ok(self.service.get(self.posix(id)?.key, now))
    }

    /// Deletes POSIX timer `id`.
    pub fn delete(&mut self, id: i32) -> SysResult<()> {
        let t = self.posix.remove(&id).ok_or(Errno::EINVAL)?;
        self.service
            .set(t.key, Action::Nothing, (Clock::Wall, Duration::ZERO), Duration::ZERO, Duration::ZERO)
            .map(drop)
    }

    /// Timer `key` expired `count` times: the signal it posts, and the thread that is to take
    /// it (`None`: the process), if it posts one: `SIGALRM`, `SIGVTALRM` or `SIGPROF` for the
    /// interval timers, the POSIX timer's notification otherwise. If `queued` finds the POSIX
    /// timer's earlier signal still pending for that process or thread, that signal counts the
    /// overruns instead.
    pub fn expiry<'a>(
        &mut self,
        key: u64,
        count: u64,
        queued: impl FnOnce(i32, Option<i32>) -> Option<&'a mut SigInfo>,
    ) -> Option<(SigInfo, Option<i32>)> {
        let interval = [(self.real, libc::SIGALRM), (self.user, libc::SIGVTALRM), (self.cpu, libc::SIGPROF)];
        if let Some(&(_, signo)) = interval.iter().find(|(k, _)| *k == Some(key)) {
            return Some((SigInfo::sent(signo, SI_KERNEL, 0, 0), None));
        }
        let (&id, t) = self.posix.iter_mut().find(|(_, t)| t.key == key)?;
        let extra = u32::try_from(count - 1).unwrap_or(u32::MAX);
        let (signo, value, tid) = match t.notify {
            Notify::None => return None,
            Notify::Process { signo, value } => (signo, value, None),
            Notify::Thread { signo, value, tid } => (signo, value, Some(tid)),
        };
        if let Some(info) = queued(id, tid) {
            let overrun = info
                .sender
                .map_or(0, |(_, o)| o)
                .saturating_add(1)
                .saturating_add(extra);
            info.sender = Some((id, overrun));
            t.overrun_queued = overrun;
            return None;
        }
        (t.overrun_last, t.overrun_queued) = (t.overrun_queued, extra);
        Some((SigInfo::timer(signo, id, extra, value), tid))
    }

    /// Deletes every POSIX timer (`execve`).
    pub fn delete_all(&mut self) {
        for id in self.posix.keys().copied().collect::<Vec<_>>() {
            // Each id is there.
            let _ = self.delete(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process stand-in that records what fires.
    struct Counter(Mutex<u64>);
    impl TimerOwner for Counter {
        fn reading(&self, _: Clock) -> Duration {
            Duration::ZERO
        }
        fn expire(&self, _: u64, _: u64, _: &mut dyn FnMut() -> bool) {
            *self.0.lock().unwrap() += 1;
        }
    }

    #[test]
    fn a_periodic_timer_repeats_and_a_one_shot_disarms() {
        let mut timers = Timers::default();
        let counter = Arc::new(Counter(Mutex::new(0)));
        let target = Arc::downgrade(&counter) as Weak<dyn TimerOwner>;
        assert_eq!(
            timers
                .set_real(
                    target.clone(),
                    Duration::from_millis(5),
                    Duration::from_millis(5)
                )
                .unwrap(),
            (Duration::ZERO, Duration::ZERO)
        );
        let (value, interval) = timers.real();
        assert!(value > Duration::ZERO && value <= Duration::from_millis(5));
        assert_eq!(interval, Duration::from_millis(5));
        while *counter.0.lock().unwrap() < 3 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let old = timers
            .set_real(target.clone(), Duration::ZERO, Duration::ZERO)
            .unwrap();
        assert_eq!(old.1, Duration::from_millis(5));
        assert_eq!(timers.real(), (Duration::ZERO, Duration::ZERO));
        let id = timers.create(libc::CLOCK_MONOTONIC, Clock::Wall, Notify::None).unwrap();
        let before = *counter.0.lock().unwrap();
        timers
            .set_posix(target, id, Duration::ZERO, Duration::from_millis(1), Duration::ZERO)
            .unwrap();
        while *counter.0.lock().unwrap() == before {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            timers.get_posix(id, Duration::ZERO).unwrap(),
            (Duration::ZERO, Duration::ZERO),
            "a one-shot timer disarms when it fires"
        );
        timers.delete(id).unwrap();
        assert_eq!(timers.delete(id), Err(Errno::EINVAL));
    }
}
