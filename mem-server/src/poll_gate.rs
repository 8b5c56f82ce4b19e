//! Whether a page-path connection may poll for its next request.
//!
//! Polling saves the kernel's wake-up latency on every request, and costs a core while it
//! spins. On a host of its own (a memory server of a real cluster) that core would sit idle
//! anyway. Sharing a small host with pComponents, it is taken from the vCPUs: on two cores, a
//! polling server made a two-thread word count at 50% local memory ~9% slower than a blocking
//! one, while a one-thread checksum, which leaves a core idle, ran ~20% faster with it.
//!
//! So the gate lets connections poll only while the host has spare cores: over each window
//! of [`WINDOW`], the cores that sat idle (`/proc/stat`) plus those the server's own polling
//! kept busy (its pollers' thread CPU time) must add up to [`MIN_SPARE_CORES`]. Counting
//! the polling itself as spare keeps the gate from closing on its own spinning. A gate that
//! cannot read `/proc/stat` stays open (polling as before).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the gate looks at the host again.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);

/// Cores that must be spare (idle, or only polled on by this server) for polling to go on.
pub(crate) const MIN_SPARE_CORES: f64 = 0.5;

/// The gate: shared by the connections of one server.
pub(crate) struct PollGate {
    open: AtomicBool,
    /// Thread CPU time spent polling, in ns, since the server started.
    polled_ns: AtomicU64,
    window: Mutex<Window>,
}

/// Where the current window started.
struct Window {
    started: Instant,
    /// Idle CPU time of the host, in clock ticks (`None`: `/proc/stat` unreadable).
    idle_ticks: Option<u64>,
    polled_ns: u64,
}

impl PollGate {
    pub(crate) fn new() -> PollGate {
        let window = Window { started: Instant::now(), idle_ticks: host_idle_ticks(), polled_ns: 0 };
        if window.idle_ticks.is_none() {
            tracing::warn!("/proc/stat is unreadable: page-path connections poll whatever the host's load");
        }
        PollGate { open: AtomicBool::new(true), polled_ns: AtomicU64::new(0), window: Mutex::new(window) }
    }

    /// Whether a connection may poll now. Looks at the host again once a window has passed
    /// (by whichever caller gets there first; the others go on with the last verdict).
    pub(crate) fn open(&self) -> bool {
        if let Ok(mut w) = self.window.try_lock() {
            let elapsed = w.started.elapsed();
            if elapsed >= WINDOW && w.idle_ticks.is_some() {
                let idle = host_idle_ticks();
                let polled = self.polled_ns.load(Ordering::Relaxed);
                if let (Some(now), Some(before)) = (idle, w.idle_ticks) {
                    let idle_secs = now.saturating_sub(before) as f64 / clock_ticks_per_sec();
                    let polled_secs = polled.saturating_sub(w.polled_ns) as f64 / 1e9;
                    let open = spare_cores(idle_secs, polled_secs, elapsed.as_secs_f64()) >= MIN_SPARE_CORES;
                    if self.open.swap(open, Ordering::Relaxed) != open {
                        tracing::debug!(open, idle_secs, polled_secs, "page-path polling gate");
                    }
                }
                *w = Window { started: Instant::now(), idle_ticks: idle, polled_ns: polled };
            }
        }
        self.open.load(Ordering::Relaxed)
    }

    /// Runs `poll` if the gate is open, counting the calling thread's CPU time in it as polling.
    pub(crate) fn poll(&self, poll: impl FnOnce()) {
        if !self.open() {
            return;
        }
        let before = thread_cpu_ns();
        poll();
        self.polled_ns.fetch_add(thread_cpu_ns().saturating_sub(before), Ordering::Relaxed);
    }

    /// Whether connections poll now (as of the last look), for the metrics.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Thread CPU time spent polling since the server started.
    pub(crate) fn polled(&self) -> Duration {
        Duration::from_nanos(self.polled_ns.load(Ordering::Relaxed))
    }
}

/// Cores' worth of time spare over a window of `window_secs`: idle, or spent polling.
fn spare_cores(idle_secs: f64, polled_secs: f64, window_secs: f64) -> f64 {
    if window_secs <= 0.0 {
        return 0.0;
    }
    (idle_secs + polled_secs) / window_secs
}

/// The host's idle CPU time (idle and I/O wait, all CPUs), in clock ticks.
fn host_idle_ticks() -> Option<u64> {
    parse_idle_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The idle and I/O-wait ticks of the `cpu` line (the sum over CPUs) of `/proc/stat` text.
fn parse_idle_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>().ok()?;
    Some(fields.get(3)? + fields.get(4).copied().unwrap_or(0))
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into our own timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_ticks_come_from_the_cpu_line() {
        let stat = "cpu  4705 150 1120 16250 520 0 12 0 0 0\ncpu0 2000 75 560 8125 260 0 6 0 0 0\nintr 1 2\n";
        assert_eq!(parse_idle_ticks(stat), Some(16250 + 520));
        assert_eq!(parse_idle_ticks("cpu0 1 2 3 4 5\n"), None, "only the all-CPU line counts");
        assert_eq!(parse_idle_ticks("cpu  1 2 x 4\n"), None);
        assert_eq!(parse_idle_ticks("cpu  1 2 3 4\n"), Some(4), "old kernels have no I/O wait");
        assert!(host_idle_ticks().is_some(), "this host has a /proc/stat");
    }

    #[test]
    fn polling_counts_as_spare() {
        // Two busy vCPUs on two cores: no core to spare, poll or not.
        assert!(spare_cores(0.01, 0.0, 0.1) < MIN_SPARE_CORES);
        assert!(spare_cores(0.0, 0.02, 0.1) < MIN_SPARE_CORES);
        // One vCPU: the other core sits idle, or is the server's own polling.
        assert!(spare_cores(0.09, 0.0, 0.1) >= MIN_SPARE_CORES);
        assert!(spare_cores(0.01, 0.08, 0.1) >= MIN_SPARE_CORES);
        assert_eq!(spare_cores(1.0, 1.0, 0.0), 0.0);
    }

    #[test]
    fn the_gate_counts_its_polls() {
        let g = PollGate::new();
        assert!(g.is_open(), "a new gate is open");
        g.poll(|| {
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(5) {
                std::hint::spin_loop();
            }
        });
        assert!(g.polled() >= Duration::from_millis(2), "{:?} of spinning counted", g.polled());
    }
}
