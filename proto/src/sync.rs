//! Locks that stay usable after a holder panicked.
//!
//! Every component shares state between threads behind `std::sync` locks. A panic while one is
//! held poisons it; the state itself is still consistent for our uses (each critical section
//! leaves it valid between statements), and refusing every later caller would turn one bug into
//! a hung vNode or server. These traits take the guard either way, in one place, instead of
//! `.lock().unwrap_or_else(|e| e.into_inner())` at every call site.

use std::sync::{
    Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
    WaitTimeoutResult,
};
use std::time::Duration;

/// [`Mutex::lock`] that recovers the guard of a poisoned mutex.
pub trait LockExt<T: ?Sized> {
    /// Locks the mutex, whether or not an earlier holder panicked.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
    /// [`Mutex::get_mut`], whether or not an earlier holder panicked.
    fn get_mut_unpoisoned(&mut self) -> &mut T;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get_mut_unpoisoned(&mut self) -> &mut T {
        self.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`] that recover the guard of a poisoned lock.
pub trait RwLockExt<T: ?Sized> {
    /// Takes the lock shared, whether or not an earlier holder panicked.
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    /// Takes the lock exclusive, whether or not an earlier holder panicked.
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`Condvar`] waits that recover the guard of a poisoned mutex.
pub trait CondvarExt {
    /// [`Condvar::wait`], recovering a poisoned guard.
    fn wait_unpoisoned<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T>;
    /// [`Condvar::wait_timeout`], recovering a poisoned guard.
    fn wait_timeout_unpoisoned<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult);
    /// [`Condvar::wait_timeout_while`], recovering a poisoned guard.
    fn wait_timeout_while_unpoisoned<'a, T, F: FnMut(&mut T) -> bool>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
        condition: F,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult);
}

impl CondvarExt for Condvar {
    fn wait_unpoisoned<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_timeout_unpoisoned<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        self.wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_timeout_while_unpoisoned<'a, T, F: FnMut(&mut T) -> bool>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
        condition: F,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        self.wait_timeout_while(guard, timeout, condition)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_mutex_still_locks() {
        let m = Arc::new(Mutex::new(1));
        let m2 = Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *m.lock_unpoisoned() += 1;
        assert_eq!(*m.lock_unpoisoned(), 2);
    }

    #[test]
    fn a_poisoned_rwlock_still_reads_and_writes() {
        let l = Arc::new(RwLock::new(1));
        let l2 = Arc::clone(&l);
        let _ = std::thread::spawn(move || {
            let _g = l2.write().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(l.is_poisoned());
        *l.write_unpoisoned() = 5;
        assert_eq!(*l.read_unpoisoned(), 5);
    }

    #[test]
    fn wait_timeout_returns_the_guard() {
        let m = Mutex::new(0);
        let cv = Condvar::new();
        let (g, res) = cv.wait_timeout_unpoisoned(m.lock_unpoisoned(), Duration::from_millis(1));
        assert!(res.timed_out());
        assert_eq!(*g, 0);
    }
}
