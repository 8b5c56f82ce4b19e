//! The wall clock the pseudo files show times in.

use crate::fs::Timespec;

/// Seconds and nanoseconds of the wall clock at `at`.
pub fn wall_time(at: std::time::Instant) -> Timespec {
    let ago = at.elapsed();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let t = now.saturating_sub(ago);
    Timespec {
        sec: t.as_secs() as i64,
        nsec: i64::from(t.subsec_nanos()),
    }
}
