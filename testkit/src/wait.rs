//! Waiting for a condition, with a deadline: tests wait for what they need to see rather than
//! sleep for a guessed time, so that a loaded machine makes them slower, not flaky.

use std::time::{Duration, Instant};

/// Calls `probe` every 25 ms until it answers `Ok`, for at most `limit`; returns the answer and
/// how long it took. Panics with `what` and the last `Err` (a description of what was seen
/// instead) otherwise.
pub fn poll<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> (T, Duration) {
    let started = Instant::now();
    loop {
        match probe() {
            Ok(v) => return (v, started.elapsed()),
            Err(seen) => assert!(started.elapsed() < limit, "{what}: not within {limit:?}; last seen: {seen}"),
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
