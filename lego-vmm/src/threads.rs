//! What the threads of a process share outside the process lock: the futex table, the news
//! that the process is ending, and the news that a signal waits for a thread.
//!
//! A system call that blocks (futex wait, sleep, poll, a read from a pipe or the terminal)
//! releases the process lock first ([`crate::process::Locked::unlocked`]) and then waits here,
//! on its own event, on the end of the process or on a signal for its thread, whichever comes
//! first: `exit_group` in another thread must never wait for it, and a signal handler must run
//! (the wait then fails with `EINTR`, and the run loop restarts the call or not, see
//! [`crate::signal`]).

use lego_proto::sync::{CondvarExt, LockExt};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::errno::{Errno, SysResult};
use crate::futex::Futexes;
use crate::signal::{stopped_status, CONTINUED_STATUS};

/// The shared, lock-free side of a thread group.
pub struct ThreadGroup {
    /// Futex wait queues.
    pub futexes: Futexes,
    /// The run's wait queues of futex words in memory shared between processes, one table for
    /// every process of it (see [`crate::memory::shared`]).
    pub shared_futexes: Arc<Futexes>,
    ending: AtomicBool,
    /// Sleepers wait on this condition variable, notified when the process ends.
    sleepers: (Mutex<()>, Condvar),
    /// Readable once the process is ending, so that a host `poll` returns.
    ended: EventFd,
    /// Threads with a signal to take, by id.
    interrupts: Mutex<HashMap<i32, Arc<Interrupt>>>,
    /// The signal that stopped the process (job control), 0 while it runs.
    stopped: AtomicI32,
    /// A change of the process's job-control state its parent has not heard of yet, as
    /// `wait4` reports it (`WIFSTOPPED` or `WIFCONTINUED`), 0 if none.
    job_report: AtomicI32,
    /// Threads waiting in [`ThreadGroup::wait_while_stopped`].
    parked: AtomicUsize,
}

/// That a signal waits for one thread: a flag for the waits that look, and an eventfd for a
/// host `poll`.
struct Interrupt {
    flag: AtomicBool,
    fd: EventFd,
}

impl ThreadGroup {
    /// A group whose process is running, in the run whose shared futexes are `shared_futexes`.
    pub fn new(shared_futexes: Arc<Futexes>) -> std::io::Result<ThreadGroup> {
        Ok(ThreadGroup {
            futexes: Futexes::default(),
            shared_futexes,
            ending: AtomicBool::new(false),
            sleepers: (Mutex::new(()), Condvar::new()),
            ended: EventFd::new(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)?,
            interrupts: Mutex::new(HashMap::new()),
            stopped: AtomicI32::new(0),
            job_report: AtomicI32::new(0),
            parked: AtomicUsize::new(0),
        })
    }

    fn interrupts(&self) -> MutexGuard<'_, HashMap<i32, Arc<Interrupt>>> {
        self.interrupts.lock_unpoisoned()
    }

    /// Thread `tid`'s interrupt, made on first use.
    fn interrupt_of(&self, tid: i32) -> SysResult<Arc<Interrupt>> {
        let mut all = self.interrupts();
        if let Some(i) = all.get(&tid) {
            return Ok(i.clone());
        }
        let fd = EventFd::new(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK).map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EMFILE)))?;
        let i = Arc::new(Interrupt { flag: AtomicBool::new(false), fd });
        all.insert(tid, i.clone());
        Ok(i)
    }

    /// A signal waits for thread `tid`: its wait in a sleep, a futex or a poll ends with `EINTR`
    /// (a wait on a pipe looks every few milliseconds), and so does every wait it starts until
    /// [`ThreadGroup::clear_interrupt`].
    pub fn interrupt(&self, tid: i32) {
        match self.interrupt_of(tid) {
            Ok(i) => {
                i.flag.store(true, Ordering::Release);
                // The counter cannot overflow from writes of 1 between two reads.
                let _ = i.fd.write(1);
            }
            Err(e) => tracing::warn!(tid, "no eventfd to interrupt a poll with: {e}"),
        }
        drop(self.sleepers.0.lock_unpoisoned());
        self.sleepers.1.notify_all();
        self.futexes.interrupt();
        self.shared_futexes.interrupt();
    }

    /// Whether a signal waits for thread `tid` (see [`ThreadGroup::interrupt`]).
    pub fn interrupted(&self, tid: i32) -> bool {
        self.interrupts().get(&tid).is_some_and(|i| i.flag.load(Ordering::Acquire))
    }

    /// Thread `tid` has taken its signals: its waits wait again.
    pub fn clear_interrupt(&self, tid: i32) {
        if let Some(i) = self.interrupts().get(&tid) {
            i.flag.store(false, Ordering::Release);
            // Empty already is fine: the flag is what counts.
            let _ = i.fd.read();
        }
    }

    /// Thread `tid` ended.
    pub fn forget(&self, tid: i32) {
        self.interrupts().remove(&tid);
    }

    /// `EINTR` if the process is ending or a signal waits for `tid`.
    fn check(&self, tid: i32) -> SysResult<()> {
        if self.ending() || self.interrupted(tid) {
            return Err(Errno::EINTR);
        }
        Ok(())
    }

    /// Whether the process is ending: no thread may start waiting or run guest code again.
    pub fn ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// The process is ending: wakes every thread blocked in a futex wait, a sleep or a poll.
    pub fn end(&self) {
        self.ending.store(true, Ordering::Release);
        self.futexes.close();
        // Its threads waiting on shared words look, and leave (see `ending`).
        self.shared_futexes.interrupt();
        drop(self.sleepers.0.lock_unpoisoned());
        self.sleepers.1.notify_all();
        // The counter cannot overflow from a single write of 1.
        let _ = self.ended.write(1);
    }

    /// A stop signal `sig` took effect (its default action): no thread runs guest code until
    /// [`ThreadGroup::resume`]. `false` if the process was stopped already.
    pub fn stop(&self, sig: i32) -> bool {
        if self.stopped.swap(sig, Ordering::AcqRel) != 0 {
            return false;
        }
        self.job_report.store(stopped_status(sig), Ordering::Release);
        true
    }

    /// `SIGCONT` came: the threads run again. `true` if the process was stopped.
    pub fn resume(&self) -> bool {
        if self.stopped.swap(0, Ordering::AcqRel) == 0 {
            return false;
        }
        self.job_report.store(CONTINUED_STATUS, Ordering::Release);
        drop(self.sleepers.0.lock_unpoisoned());
        self.sleepers.1.notify_all();
        true
    }

    /// Whether the process is stopped.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire) != 0
    }

    /// Takes the job-control change the parent has not heard of, as a wait status.
    pub fn take_job_report(&self) -> Option<i32> {
        Some(self.job_report.swap(0, Ordering::AcqRel)).filter(|&s| s != 0)
    }

    /// A thread of the stopped process is out of the guest for good, and is to wait: how many
    /// are now (the last of the process's threads to get here completes the stop).
    pub fn park(&self) -> usize {
        self.parked.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// How many threads are parked (see [`ThreadGroup::park`]).
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Acquire)
    }

    /// Waits while the process is stopped and not ending, then counts the thread out of
    /// [`ThreadGroup::park`].
    pub fn wait_while_stopped(&self) {
        let mut guard = self.sleepers.0.lock_unpoisoned();
        while self.stopped() && !self.ending() {
            guard = self.sleepers.1.wait_unpoisoned(guard);
        }
        self.parked.fetch_sub(1, Ordering::AcqRel);
    }

    /// Thread `tid` sleeps until `deadline` (`None`: until a signal); `EINTR` if the process
    /// ends or a signal waits for the thread first.
    pub fn sleep_until(&self, tid: i32, deadline: Option<Instant>) -> SysResult<()> {
        let mut guard = self.sleepers.0.lock_unpoisoned();
        loop {
            self.check(tid)?;
            guard = match deadline {
                None => self.sleepers.1.wait_unpoisoned(guard),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(());
                    }
                    self.sleepers.1.wait_timeout_unpoisoned(guard, d - now).0
                }
            };
        }
    }

    /// Host `poll` of `fds` by thread `tid` for up to `timeout` (`None`: no limit); `EINTR` if
    /// the process ends or a signal waits for the thread first. Returns the number of ready
    /// descriptors, as `poll` does.
    pub fn poll_host(&self, tid: i32, fds: &[libc::pollfd], timeout: Option<Duration>) -> SysResult<(usize, Vec<libc::pollfd>)> {
        let interrupt = self.interrupt_of(tid)?;
        let mut all: Vec<libc::pollfd> = fds.to_vec();
        all.push(libc::pollfd { fd: self.ended.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        all.push(libc::pollfd { fd: interrupt.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.check(tid)?;
            let ms = match deadline {
                None => -1,
                Some(d) => d.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32,
            };
            // SAFETY: `all` is a valid array of `all.len()` pollfd structures.
            let n = unsafe { libc::poll(all.as_mut_ptr(), all.len() as libc::nfds_t, ms) };
            if n < 0 {
                let e = Errno::last();
                if e != Errno::EINTR {
                    return Err(e);
                }
                continue;
            }
            self.check(tid)?;
            all.truncate(fds.len());
            return Ok((n as usize, all));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_for_a_thread_ends_its_sleep_and_its_poll() {
        let g = Arc::new(ThreadGroup::new(Arc::default()).unwrap());
        let g2 = g.clone();
        let sleeper = std::thread::spawn(move || g2.sleep_until(2, None));
        std::thread::sleep(Duration::from_millis(20));
        g.interrupt(3);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!sleeper.is_finished(), "a signal for thread 3 woke thread 2 for good");
        g.interrupt(2);
        assert_eq!(sleeper.join().unwrap(), Err(Errno::EINTR));
        // Until the thread takes its signal, every wait ends at once.
        assert_eq!(g.sleep_until(2, Some(Instant::now() + Duration::from_secs(5))), Err(Errno::EINTR));
        g.clear_interrupt(2);
        assert_eq!(g.sleep_until(2, Some(Instant::now())), Ok(()));

        let g3 = g.clone();
        let poller = std::thread::spawn(move || g3.poll_host(2, &[], None).map(|(n, _)| n));
        std::thread::sleep(Duration::from_millis(20));
        g.interrupt(2);
        assert_eq!(poller.join().unwrap(), Err(Errno::EINTR));
        g.forget(2);
        assert!(!g.interrupted(2));
    }
}
