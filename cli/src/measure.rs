//! Running a benchmarked program: wall-clock time, peak resident set, output, and the
//! `--stats` counters of `lego run`. Shared by `lego bench slowdown` and `lego bench apps`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Raised (by a Ctrl-C handler) to make the running [`measure`] kill its program and fail, and
/// the steps between runs stop. The default one is never raised.
#[derive(Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// One that Ctrl-C and SIGTERM raise. Installs the process's handler, which only a single
    /// caller per process may do.
    pub fn on_ctrl_c() -> anyhow::Result<Interrupt> {
        let i = Interrupt::default();
        let flag = i.0.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
        Ok(i)
    }

    /// Whether it was raised.
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Fails with [`Interrupted`] once it was raised.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.raised() {
            true => Err(Interrupted.into()),
            false => Ok(()),
        }
    }
}

/// One run's result.
pub struct Sample {
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
    /// What the program printed on stdout.
    pub stdout: Vec<u8>,
    /// Peak resident set of the process, in bytes.
    pub max_rss: u64,
    /// What it printed on stderr (`--stats` lines of a lego run).
    pub stats: String,
}

/// The program ran longer than the time it was given and was killed.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {} s", .0.as_secs())]
pub struct TimedOut(pub Duration);

/// The run was stopped because its [`Interrupt`] was raised.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Runs `cmd` to completion, timing it and collecting its peak resident set. The program is
/// killed, and the result is an error, if it outlives `timeout` ([`TimedOut`]), if
/// `interrupt` is raised ([`Interrupted`]), or if it exits unsuccessfully.
pub fn measure(mut cmd: Command, timeout: Option<Duration>, interrupt: &Interrupt) -> anyhow::Result<Sample> {
    let what = format!("{cmd:?}");
    interrupt.check()?;
    let started = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("starting {what}"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        let _ = child.kill();
        let _ = child.wait();
        bail!("pidfd_open for {what}: {e}");
    }
    // SAFETY: `raw` is a descriptor pidfd_open just returned to us alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // Drain both pipes on threads, so a chatty child cannot block on a full pipe.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    // Wait for the exit through the pidfd, killing the program on a deadline or an interrupt.
    let mut killed: Option<anyhow::Error> = None;
    loop {
        let mut p = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: `p` is one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 50) };
        if n > 0 {
            break;
        }
        let late = timeout.filter(|t| started.elapsed() > *t);
        if killed.is_none() && (late.is_some() || interrupt.raised()) {
            // SAFETY: pidfd_send_signal on our pidfd; the process cannot be a recycled one.
            unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, 0usize, 0u32) };
            killed = Some(match late {
                Some(t) => TimedOut(t).into(),
                None => Interrupted.into(),
            });
        }
    }
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `child` is our unreaped child; status and usage point to live locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    let stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    if pid < 0 {
        bail!("waiting for {what}: {}", std::io::Error::last_os_error());
    }
    if let Some(e) = killed {
        return Err(e);
    }
    let status = std::process::ExitStatus::from_raw(status);
    if !status.success() {
        bail!("{what} failed ({status}): {}", stderr.trim_end());
    }
    Ok(Sample { elapsed, stdout, max_rss: usage.ru_maxrss as u64 * 1024, stats: stderr })
}

/// The median of `v` (the upper one of an even count); `v` must not be empty.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The last number on the `--stats` line containing `name`, if any.
pub fn stat(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find(|l| l.contains(name))?.split_whitespace().last()?.parse().ok()
}
