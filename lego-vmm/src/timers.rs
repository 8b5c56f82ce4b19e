//! Timers of a vNode process: `alarm`/`setitimer` (`ITIMER_REAL`) and POSIX timers
//! (`timer_create` with `SIGEV_SIGNAL`, `SIGEV_THREAD_ID` or `SIGEV_NONE`). (A timerfd is a host
//! timerfd: the host's clocks are the guest's.)
//!
//! Every armed timer of a process is an entry in its [`TimerService`]: one host thread, started
//! when a timer is armed and gone when none is, sleeps until the earliest expiry and fires it.
//! A signal timer then posts its signal to the process under the process lock (through the
//! [`Signalable`] the process table knows it by); a timer whose previous signal still waits is
//! not queued again but counts an overrun, as Linux's preallocated timer signal does.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::errno::{Errno, SysResult};
use crate::process::Process;
use crate::proctable::Signalable;
use crate::signal::{self, SigInfo, SI_KERNEL};

/// What an armed timer does when it expires.
#[derive(Clone)]
enum Action {
    /// Fires timer `key` of the process (see [`fire`]).
    Process {
        target: Weak<dyn Signalable>,
        key: u64,
    },
    /// Nothing (a timer being disarmed).
    Nothing,
}

struct Armed {
    next: Instant,
    interval: Option<Duration>,
    action: Action,
}

#[derive(Default)]
struct Schedule {
    armed: BTreeMap<u64, Armed>,
    /// Whether the service thread runs.
    running: bool,
    next_key: u64,
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
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A key for a new timer.
    fn key(&self) -> u64 {
        let mut s = self.lock();
        s.next_key += 1;
        s.next_key
    }

    /// Arms timer `key` to expire after `value` and then every `interval` (none if zero), or
    /// disarms it (zero `value`). Returns what it was set to before.
    fn set(
        self: &Arc<Self>,
        key: u64,
        action: Action,
        value: Duration,
        interval: Duration,
    ) -> SysResult<Setting> {
        let mut s = self.lock();
        let old = s
            .armed
            .remove(&key)
            .map(|a| remaining(&a))
            .unwrap_or_default();
        if !value.is_zero() {
            // A period below the floor would keep the host thread firing without a pause.
            let interval = (!interval.is_zero()).then_some(interval.max(MIN_INTERVAL));
            s.armed.insert(
                key,
                Armed {
                    next: Instant::now() + value,
                    interval,
                    action,
                },
            );
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

    /// What timer `key` is set to now.
    fn get(&self, key: u64) -> Setting {
        self.lock()
            .armed
            .get(&key)
            .map(remaining)
            .unwrap_or_default()
    }

    /// The service thread: fires what is due, sleeps until the next expiry, and ends when
    /// nothing is armed.
    fn serve(self: Arc<Self>) {
        let mut s = self.lock();
        loop {
            let now = Instant::now();
            let Some(next) = s.armed.values().map(|a| a.next).min() else {
                s.running = false;
                return;
            };
            if next > now {
                s = self
                    .changed
                    .wait_timeout(s, next - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            let due: Vec<u64> = s
                .armed
                .iter()
                .filter(|(_, a)| a.next <= now)
                .map(|(&k, _)| k)
                .collect();
            let mut fire_now = Vec::new();
            for key in due {
                let Some(a) = s.armed.get_mut(&key) else {
                    continue;
                };
                let mut count = 1u64;
                match a.interval {
                    Some(i) => {
                        // Expirations missed while the host was busy count too.
                        let late = u32::try_from(
                            now.duration_since(a.next).as_nanos() / i.as_nanos().max(1),
                        )
                        .unwrap_or(u32::MAX);
                        count += u64::from(late);
                        a.next = i
                            .checked_mul(late.saturating_add(1))
                            .and_then(|d| a.next.checked_add(d))
                            .unwrap_or(now + i);
                        fire_now.push((a.action.clone(), count));
                    }
                    None => {
                        if let Some(a) = s.armed.remove(&key) {
                            fire_now.push((a.action, count));
                        }
                    }
                }
            }
            drop(s);
            let mut gone = Vec::new();
            for (action, count) in fire_now {
                let alive = match &action {
                    Action::Process { target, key } => match target.upgrade() {
                        Some(t) => {
                            t.with_process(&mut |p| fire(p, *key, count));
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

fn remaining(a: &Armed) -> Setting {
    let left = a.next.saturating_duration_since(Instant::now());
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
    pub clock: i32,
    pub notify: Notify,
    /// Expirations that found the timer's signal still queued, since it was queued.
    overrun_queued: u32,
    /// The overrun count of the signal delivered last (`timer_getoverrun`).
    overrun_last: u32,
}

/// Most POSIX timers a process may have.
const MAX_TIMERS: usize = 1024;

/// The timers of a process. Not inherited by a fork; POSIX timers go on `execve`.
#[derive(Default)]
pub struct Timers {
    service: Arc<TimerService>,
    /// The key of the `ITIMER_REAL` timer, once used.
    real: Option<u64>,
    posix: BTreeMap<i32, PosixTimer>,
}

impl Timers {
    /// `ITIMER_REAL`: sets it (zero value disarms) and returns the old setting.
    pub fn set_real(
        &mut self,
        target: Weak<dyn Signalable>,
        value: Duration,
        interval: Duration,
    ) -> SysResult<Setting> {
        let key = *self.real.get_or_insert_with(|| self.service.key());
        self.service
            .set(key, Action::Process { target, key }, value, interval)
    }

    /// The `ITIMER_REAL` setting.
    pub fn real(&self) -> Setting {
        self.real.map(|k| self.service.get(k)).unwrap_or_default()
    }

    /// A new, disarmed POSIX timer; returns its id.
    pub fn create(&mut self, clock: i32, notify: Notify) -> SysResult<i32> {
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

    /// Arms or disarms POSIX timer `id`; returns its old setting.
    pub fn set_posix(
        &mut self,
        target: Weak<dyn Signalable>,
        id: i32,
        value: Duration,
        interval: Duration,
    ) -> SysResult<Setting> {
        let key = self.posix(id)?.key;
        self.service
            .set(key, Action::Process { target, key }, value, interval)
    }

    /// The setting of POSIX timer `id`.
    pub fn get_posix(&self, id: i32) -> SysResult<Setting> {
        Ok(self.service.get(self.posix(id)?.key))
    }

    /// Deletes POSIX timer `id`.
    pub fn delete(&mut self, id: i32) -> SysResult<()> {
        let t = self.posix.remove(&id).ok_or(Errno::EINVAL)?;
        self.service
            .set(t.key, Action::Nothing, Duration::ZERO, Duration::ZERO)
            .map(drop)
    }

    /// Deletes every POSIX timer (`execve`).
    pub fn delete_all(&mut self) {
        for id in self.posix.keys().copied().collect::<Vec<_>>() {
            // Each id is there.
            let _ = self.delete(id);
        }
    }
}

/// Timer `id` of `p` is set again or deleted: a signal of its earlier arming that still waits
/// is not delivered.
pub fn forget_signal(p: &mut Process, id: i32) {
    p.signals.pending.drop_timer(id);
    for t in p.threads.values_mut() {
        t.pending.drop_timer(id);
    }
}

/// `timer_getoverrun` of timer `id`: the overruns of the signal delivered last.
pub fn overrun(p: &mut Process, id: i32) -> SysResult<u32> {
    let t = *p.timers.posix(id)?;
    let queued = signal_queued(p, id, t.notify);
    Ok(if queued {
        t.overrun_last
    } else {
        t.overrun_queued
    })
}

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

/// Timer `key` of `p` expired `count` times: `SIGALRM` for `ITIMER_REAL`, the POSIX timer's
/// notification otherwise.
fn fire(p: &mut Process, key: u64, count: u64) {
    if p.timers.real == Some(key) {
        signal::post_process(p, SigInfo::sent(libc::SIGALRM, SI_KERNEL, 0, 0), None);
        return;
    }
    let Some((&id, &t)) = p.timers.posix.iter().find(|(_, t)| t.key == key) else {
        return;
    };
    let extra = u32::try_from(count - 1).unwrap_or(u32::MAX);
    let (signo, value, tid) = match t.notify {
        Notify::None => return,
        Notify::Process { signo, value } => (signo, value, None),
        Notify::Thread { signo, value, tid } => (signo, value, Some(tid)),
    };
    let queued = match tid {
        None => p.signals.pending.timer_mut(id),
        Some(tid) => p
            .threads
            .get_mut(&tid)
            .and_then(|t| t.pending.timer_mut(id)),
    };
    if let Some(info) = queued {
        let overrun = info
            .sender
            .map_or(0, |(_, o)| o)
            .saturating_add(1)
            .saturating_add(extra);
        info.sender = Some((id, overrun));
        if let Some(t) = p.timers.posix.get_mut(&id) {
            t.overrun_queued = overrun;
        }
        return;
    }
    if let Some(t) = p.timers.posix.get_mut(&id) {
        (t.overrun_last, t.overrun_queued) = (t.overrun_queued, extra);
    }
    let info = SigInfo::timer(signo, id, extra, value);
    match tid {
        None => signal::post_process(p, info, None),
        Some(tid) => {
            // A thread that ended takes no more signals: Linux sends them to the process then.
            if signal::post_thread(p, tid, info, None).is_err() {
                signal::post_process(p, info, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Process;

    /// A process stand-in that records what fires.
    struct Counter(Mutex<u64>);
    impl Signalable for Counter {
        fn signal(&self, _: SigInfo) {}
        fn child_ended(&self, _: SigInfo, _: &mut dyn FnMut()) {}
        fn with_process(&self, _: &mut dyn FnMut(&mut Process)) {
            *self.0.lock().unwrap() += 1;
        }
    }

    #[test]
    fn a_periodic_timer_repeats_and_a_one_shot_disarms() {
        let mut timers = Timers::default();
        let counter = Arc::new(Counter(Mutex::new(0)));
        let target = Arc::downgrade(&counter) as Weak<dyn Signalable>;
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
        let id = timers.create(libc::CLOCK_MONOTONIC, Notify::None).unwrap();
        let before = *counter.0.lock().unwrap();
        timers
            .set_posix(target, id, Duration::from_millis(1), Duration::ZERO)
            .unwrap();
        while *counter.0.lock().unwrap() == before {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            timers.get_posix(id).unwrap(),
            (Duration::ZERO, Duration::ZERO),
            "a one-shot timer disarms when it fires"
        );
        timers.delete(id).unwrap();
        assert_eq!(timers.delete(id), Err(Errno::EINVAL));
    }
}
