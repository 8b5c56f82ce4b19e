//! The futex table of a process: wait queues keyed by guest address, outside the process lock.
//!
//! A waiter is queued under the table lock in the same critical section in which the caller
//! checks the futex word ([`Futexes::enqueue`]), so a waker that changes the word and then wakes
//! cannot slip in between: either the check sees the new value, or the wake finds the waiter.
//! The waiter then blocks ([`Futexes::wait`]) with no other lock held; a wake that came first
//! has already marked it woken.
//!
//! All threads of a vNode process share one address space, so the key is the guest address for
//! private and shared futexes alike.

use lego_proto::sync::{CondvarExt, LockExt};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::errno::{Errno, SysResult};

/// The bitset that matches every waiter (`FUTEX_BITSET_MATCH_ANY`).
pub const MATCH_ANY: u32 = u32::MAX;

/// One thread waiting on a futex.
pub struct Waiter {
    /// The address it waits on now (a requeue moves it).
    key: AtomicU64,
    bitset: u32,
    woken: AtomicBool,
    cv: Condvar,
}

#[derive(Default)]
struct Table {
    queues: HashMap<u64, VecDeque<Arc<Waiter>>>,
    /// The process is ending: every wait returns at once.
    closed: bool,
}

impl Table {
    /// Wakes up to `n` waiters on `key` whose bitset meets `bitset`.
    fn wake(&mut self, key: u64, n: usize, bitset: u32) -> usize {
        let Some(queue) = self.queues.get_mut(&key) else { return 0 };
        let mut woken = 0;
        queue.retain(|w| {
            if woken < n && w.bitset & bitset != 0 {
                woken += 1;
                w.woken.store(true, Ordering::Relaxed);
                w.cv.notify_one();
                false
            } else {
                true
            }
        });
        if queue.is_empty() {
            self.queues.remove(&key);
        }
        woken
    }

    fn remove(&mut self, w: &Arc<Waiter>) {
        let key = w.key.load(Ordering::Relaxed);
        if let Some(queue) = self.queues.get_mut(&key) {
            queue.retain(|x| !Arc::ptr_eq(x, w));
            if queue.is_empty() {
                self.queues.remove(&key);
            }
        }
    }
}

/// The futex wait queues of one process.
#[derive(Default)]
pub struct Futexes {
    table: Mutex<Table>,
}

impl Futexes {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock_unpoisoned()
    }

    /// Queues a waiter on `key` (matching wakes whose bitset meets `bitset`) if `check`, run
    /// under the table lock, succeeds: it reads the futex word and fails with `EAGAIN` when it
    /// no longer holds the expected value. `EINTR` once the process is ending.
    pub fn enqueue(&self, key: u64, bitset: u32, check: impl FnOnce() -> SysResult<()>) -> SysResult<Arc<Waiter>> {
        if bitset == 0 {
            return Err(Errno::EINVAL);
        }
        let mut t = self.lock();
        if t.closed {
            return Err(Errno::EINTR);
        }
        check()?;
        let w = Arc::new(Waiter { key: AtomicU64::new(key), bitset, woken: AtomicBool::new(false), cv: Condvar::new() });
        t.queues.entry(key).or_default().push_back(w.clone());
        Ok(w)
    }

    /// Blocks until `w` is woken (`Ok`), `deadline` passes (`ETIMEDOUT`), or the process ends
    /// or `interrupted` says a signal waits for the thread (`EINTR`; it is asked again after
    /// each [`Futexes::interrupt`]). The waiter is off every queue when this returns.
    pub fn wait(&self, w: &Arc<Waiter>, deadline: Option<Instant>, interrupted: impl Fn() -> bool) -> SysResult<()> {
        let mut t = self.lock();
        loop {
            if w.woken.load(Ordering::Relaxed) {
                return Ok(());
            }
            if t.closed || interrupted() {
                t.remove(w);
                return Err(Errno::EINTR);
            }
            t = match deadline {
                None => w.cv.wait_unpoisoned(t),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        t.remove(w);
                        return Err(Errno::ETIMEDOUT);
                    }
                    w.cv.wait_timeout_unpoisoned(t, d - now).0
                }
            };
        }
    }

    /// `FUTEX_WAKE(_BITSET)`: wakes up to `n` waiters on `key` whose bitset meets `bitset`;
    /// returns how many.
    pub fn wake(&self, key: u64, n: usize, bitset: u32) -> SysResult<usize> {
        if bitset == 0 {
            return Err(Errno::EINVAL);
        }
        Ok(self.lock().wake(key, n, bitset))
    }

    /// `FUTEX_(CMP_)REQUEUE`: if `check` (run under the table lock) succeeds, wakes up to `n`
    /// waiters on `key` and moves up to `moved` of the rest to `to`. Returns both counts added.
    pub fn requeue(&self, key: u64, n: usize, moved: usize, to: u64, check: impl FnOnce() -> SysResult<()>) -> SysResult<usize> {
        let mut t = self.lock();
        check()?;
        let woken = t.wake(key, n, MATCH_ANY);
        if key == to {
            return Ok(woken);
        }
        let Some(queue) = t.queues.get_mut(&key) else { return Ok(woken) };
        let take = moved.min(queue.len());
        let taken: Vec<_> = queue.drain(..take).collect();
        if queue.is_empty() {
            t.queues.remove(&key);
        }
        for w in &taken {
            w.key.store(to, Ordering::Relaxed);
        }
        t.queues.entry(to).or_default().extend(taken);
        Ok(woken + take)
    }

    /// `FUTEX_WAKE_OP`: runs `op` under the table lock (it changes the word at `key2` and says
    /// whether the old value met the comparison), wakes up to `n` waiters on `key`, and up to
    /// `n2` on `key2` if the comparison held. Returns how many were woken.
    pub fn wake_op(&self, key: u64, n: usize, key2: u64, n2: usize, op: impl FnOnce() -> SysResult<bool>) -> SysResult<usize> {
        let mut t = self.lock();
        let cmp = op()?;
        let mut woken = t.wake(key, n, MATCH_ANY);
        if cmp {
            woken += t.wake(key2, n2, MATCH_ANY);
        }
        Ok(woken)
    }

    /// The process is ending: wakes every waiter (with `EINTR`) and refuses new ones.
    pub fn close(&self) {
        let mut t = self.lock();
        t.closed = true;
        for w in t.queues.values().flatten() {
            w.cv.notify_one();
        }
    }

    /// A signal waits for some thread: every waiter looks whether it is the one.
    pub fn interrupt(&self) {
        let t = self.lock();
        for w in t.queues.values().flatten() {
            w.cv.notify_one();
        }
    }

    /// Threads waiting now (for tests).
    pub fn waiting(&self) -> usize {
        self.lock().queues.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    fn waiting_thread(f: &Arc<Futexes>, key: u64, bitset: u32) -> std::thread::JoinHandle<SysResult<()>> {
        let w = f.enqueue(key, bitset, || Ok(())).unwrap();
        let f = f.clone();
        std::thread::spawn(move || f.wait(&w, None, || false))
    }

    #[test]
    fn a_changed_word_is_not_waited_on() {
        let f = Futexes::default();
        assert_eq!(f.enqueue(8, MATCH_ANY, || Err(Errno::EAGAIN)).err(), Some(Errno::EAGAIN));
        assert_eq!(f.waiting(), 0);
        assert_eq!(f.enqueue(8, 0, || Ok(())).err(), Some(Errno::EINVAL));
    }

    #[test]
    fn a_wake_before_the_wait_is_not_lost() {
        let f = Futexes::default();
        let w = f.enqueue(8, MATCH_ANY, || Ok(())).unwrap();
        assert_eq!(f.wake(8, 1, MATCH_ANY), Ok(1));
        assert_eq!(f.wait(&w, Some(Instant::now()), || false), Ok(()));
    }

    #[test]
    fn wake_counts_and_bitsets() {
        let f = Arc::new(Futexes::default());
        let a = waiting_thread(&f, 16, 1);
        let b = waiting_thread(&f, 16, 2);
        let c = waiting_thread(&f, 16, 2);
        assert_eq!(f.wake(16, 10, 4), Ok(0));
        assert_eq!(f.wake(24, 10, MATCH_ANY), Ok(0));
        assert_eq!(f.wake(16, 1, 2), Ok(1));
        assert_eq!(f.waiting(), 2);
        assert_eq!(f.wake(16, 10, MATCH_ANY), Ok(2));
        for t in [a, b, c] {
            assert_eq!(t.join().unwrap(), Ok(()));
        }
    }

    #[test]
    fn timeouts_expire_and_leave_the_queue() {
        let f = Futexes::default();
        let w = f.enqueue(8, MATCH_ANY, || Ok(())).unwrap();
        let start = Instant::now();
        assert_eq!(f.wait(&w, Some(start + Duration::from_millis(30)), || false), Err(Errno::ETIMEDOUT));
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(f.waiting(), 0);
        assert_eq!(f.wake(8, 1, MATCH_ANY), Ok(0));
    }

    #[test]
    fn requeue_moves_waiters_to_the_second_address() {
        let f = Arc::new(Futexes::default());
        let threads: Vec<_> = (0..4).map(|_| waiting_thread(&f, 8, MATCH_ANY)).collect();
        assert_eq!(f.requeue(8, 1, 1, 64, || Err(Errno::EAGAIN)), Err(Errno::EAGAIN));
        assert_eq!(f.requeue(8, 1, 2, 64, || Ok(())), Ok(3));
        assert_eq!(f.wake(8, 10, MATCH_ANY), Ok(1));
        assert_eq!(f.wake(64, 10, MATCH_ANY), Ok(2));
        for t in threads {
            assert_eq!(t.join().unwrap(), Ok(()));
        }
    }

    #[test]
    fn wake_op_wakes_the_second_queue_only_if_the_comparison_held() {
        let f = Arc::new(Futexes::default());
        let word = AtomicU32::new(0);
        let a = waiting_thread(&f, 8, MATCH_ANY);
        let b = waiting_thread(&f, 16, MATCH_ANY);
        let op = |expect: u32| {
            let old = word.fetch_add(1, Ordering::SeqCst);
            Ok(old == expect)
        };
        assert_eq!(f.wake_op(8, 1, 16, 1, || op(5)), Ok(1));
        assert_eq!(f.waiting(), 1);
        assert_eq!(f.wake_op(8, 1, 16, 1, || op(1)), Ok(1));
        assert_eq!(word.load(Ordering::SeqCst), 2);
        for t in [a, b] {
            assert_eq!(t.join().unwrap(), Ok(()));
        }
    }

    #[test]
    fn an_interrupt_ends_only_the_wait_it_is_for() {
        let f = Arc::new(Futexes::default());
        let signalled = Arc::new(AtomicBool::new(false));
        let w = f.enqueue(8, MATCH_ANY, || Ok(())).unwrap();
        let (f2, s2) = (f.clone(), signalled.clone());
        let t = std::thread::spawn(move || f2.wait(&w, None, || s2.load(Ordering::SeqCst)));
        // An interrupt for another thread: this one looks, and waits on.
        f.interrupt();
        std::thread::sleep(Duration::from_millis(30));
        assert!(!t.is_finished());
        signalled.store(true, Ordering::SeqCst);
        f.interrupt();
        assert_eq!(t.join().unwrap(), Err(Errno::EINTR));
        assert_eq!(f.waiting(), 0);
    }

    #[test]
    fn closing_ends_every_wait() {
        let f = Arc::new(Futexes::default());
        let t = waiting_thread(&f, 8, MATCH_ANY);
        while f.waiting() == 0 {
            std::thread::yield_now();
        }
        f.close();
        assert_eq!(t.join().unwrap(), Err(Errno::EINTR));
        assert_eq!(f.enqueue(8, MATCH_ANY, || Ok(())).err(), Some(Errno::EINTR));
    }
}
