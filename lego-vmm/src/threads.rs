//! What the threads of a process share outside the process lock: the futex table, and the news
//! that the process is ending.
//!
//! A system call that blocks (futex wait, sleep, poll, a read from a pipe or the terminal)
//! releases the process lock first ([`crate::process::Locked::unlocked`]) and then waits here,
//! on its own event or on the end of the process, whichever comes first: `exit_group` in
//! another thread must never wait for it.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::errno::{Errno, SysResult};
use crate::futex::Futexes;

/// The shared, lock-free side of a thread group.
pub struct ThreadGroup {
    /// Futex wait queues.
    pub futexes: Futexes,
    ending: AtomicBool,
    /// Sleepers wait on this condition variable, notified when the process ends.
    sleepers: (Mutex<()>, Condvar),
    /// Readable once the process is ending, so that a host `poll` returns.
    ended: EventFd,
}

impl ThreadGroup {
    /// A group whose process is running.
    pub fn new() -> std::io::Result<ThreadGroup> {
        Ok(ThreadGroup {
            futexes: Futexes::default(),
            ending: AtomicBool::new(false),
            sleepers: (Mutex::new(()), Condvar::new()),
            ended: EventFd::new(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)?,
        })
    }

    /// Whether the process is ending: no thread may start waiting or run guest code again.
    pub fn ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// The process is ending: wakes every thread blocked in a futex wait, a sleep or a poll.
    pub fn end(&self) {
        self.ending.store(true, Ordering::Release);
        self.futexes.close();
        drop(self.sleepers.0.lock().unwrap_or_else(|e| e.into_inner()));
        self.sleepers.1.notify_all();
        // The counter cannot overflow from a single write of 1.
        let _ = self.ended.write(1);
    }

    /// Sleeps until `deadline`; `EINTR` if the process ends first.
    pub fn sleep_until(&self, deadline: Instant) -> SysResult<()> {
        let mut guard = self.sleepers.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.ending() {
                return Err(Errno::EINTR);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            guard = self.sleepers.1.wait_timeout(guard, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Host `poll` of `fds` for up to `timeout` (`None`: no limit); `EINTR` if the process ends
    /// first. Returns the number of ready descriptors, as `poll` does.
    pub fn poll_host(&self, fds: &[libc::pollfd], timeout: Option<Duration>) -> SysResult<(usize, Vec<libc::pollfd>)> {
        let mut all: Vec<libc::pollfd> = fds.to_vec();
        all.push(libc::pollfd { fd: self.ended.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.ending() {
                return Err(Errno::EINTR);
            }
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
            if self.ending() {
                return Err(Errno::EINTR);
            }
            all.pop();
            return Ok((n as usize, all));
        }
    }
}
