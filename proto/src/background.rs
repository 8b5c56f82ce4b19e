//! A named thread that runs until its handle is dropped: heartbeats, process reports, lease
//! renewals, reclamation scans. The thread waits between rounds on a [`Stop`], which wakes it at
//! once when the handle goes, and the drop joins it, so nothing outlives its owner.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The handle of a background thread; dropping it stops the thread and waits for it.
#[derive(Debug)]
pub struct Background {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What a background thread waits on between rounds.
#[derive(Debug)]
pub struct Stop(mpsc::Receiver<()>);

impl Stop {
    /// Waits up to `interval`; `true` when the handle was dropped and the thread should end.
    pub fn wait(&self, interval: Duration) -> bool {
        !matches!(self.0.recv_timeout(interval), Err(RecvTimeoutError::Timeout))
    }
}

impl Background {
    /// Runs `body` on a new thread called `name`; `body` returns when its [`Stop`] says so.
    pub fn spawn(name: &str, body: impl FnOnce(Stop) + Send + 'static) -> std::io::Result<Background> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || body(Stop(stopped)))?;
        Ok(Background { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_drop_wakes_the_wait_and_joins() {
        let rounds = Arc::new(AtomicU32::new(0));
        let seen = rounds.clone();
        let bg = Background::spawn("test", move |stop| {
            while !stop.wait(Duration::from_millis(5)) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            seen.fetch_add(1000, Ordering::Relaxed);
        })
        .unwrap();
        while rounds.load(Ordering::Relaxed) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(bg);
        assert!(rounds.load(Ordering::Relaxed) >= 1000, "the body finished before the drop returned");
    }

    #[test]
    fn a_long_interval_does_not_delay_the_drop() {
        let bg = Background::spawn("test", |stop| while !stop.wait(Duration::from_secs(3600)) {}).unwrap();
        let t = Instant::now();
        drop(bg);
        assert!(t.elapsed() < Duration::from_secs(60));
    }
}
