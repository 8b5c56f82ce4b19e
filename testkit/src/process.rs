//! Programs run to their end under a deadline, natively or in a vNode, and `lego` servers as real
//! processes. A run that outlives its deadline is killed and fails the test (a hang must not hang
//! `make test`).

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::paths::lego_bin;

/// The deadline of [`TimedOutput::timed_output`]: far above any command the tests run, even on a loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(300);

/// A command for a native run that starts as a vNode's first process does: with descriptors
/// 0, 1 and 2 only. Whatever started the test binary (a CI harness, a shell) may have left
/// others open, and a program that probes a "closed" descriptor would see them.
pub fn native_command(prog: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(prog);
    // SAFETY: the closure runs in the forked child before exec and makes one system call,
    // which is async-signal-safe; CLOSE_RANGE_CLOEXEC leaves std's exec-error pipe working.
    unsafe {
        c.pre_exec(|| {
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Makes `cmd` start with `signals` ignored (`SIG_IGN`, which `execve` keeps), as a
/// non-interactive shell starts its background jobs with `SIGINT` and `SIGQUIT` ignored.
pub fn with_ignored(cmd: &mut Command, signals: &'static [i32]) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls signal(2), which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for &sig in signals {
                if libc::signal(sig, libc::SIG_IGN) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Makes `cmd` start with `signals` blocked (a signal mask, which `execve` keeps).
pub fn with_blocked(cmd: &mut Command, signals: &[i32]) {
    use std::os::unix::process::CommandExt;
    let mask: u64 = signals.iter().fold(0, |m, &s| m | 1 << (s - 1));
    // SAFETY: the closure runs in the forked child before exec and makes one rt_sigprocmask
    // system call (the raw call: the C library refuses the signals it reserves), which is
    // async-signal-safe, on a mask on its stack.
    unsafe {
        cmd.pre_exec(move || {
            if libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, &mask as *const u64, std::ptr::null_mut::<u64>(), 8usize) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The stdout of a native run of `prog args`, which must succeed within a minute.
pub fn native_stdout(prog: &Path, args: &[&str]) -> String {
    let mut c = native_command(prog);
    c.args(args);
    let r = run(c, Duration::from_secs(60), &format!("native {}", prog.display()));
    assert_eq!(r.status, Some(0), "native {} failed: {}", prog.display(), r.stderr);
    r.stdout
}

/// A `lego` command (the binary cargo built), with nothing set.
pub fn lego_command() -> Command {
    Command::new(lego_bin())
}

/// `lego image push SOURCE` into `vnode` on the storage server at `storage`; it must succeed.
pub fn push_image(storage: &str, vnode: &str, source: &Path) {
    let out = lego_command().args(["image", "push"]).arg(source).args(["--vnode", vnode, "--storage-server", storage]).timed_output();
    assert!(out.status.success(), "image push: {}", String::from_utf8_lossy(&out.stderr));
}

/// `lego run OPTIONS PROG ARGS` with the vNode's files in `dir` (also its working directory).
pub fn lego(options: &[&str], prog: &Path, args: &[&str], dir: &Path) -> Command {
    let mut c = lego_command();
    c.arg("run").arg("--mem").arg("1G").arg("--root").arg(dir).args(options).arg(prog).args(args);
    c.current_dir(dir);
    c
}

/// What a run printed and how it ended.
pub struct Run {
    /// Its standard output, lossily decoded.
    pub stdout: String,
    /// Its standard error, lossily decoded.
    pub stderr: String,
    /// The exit status, or 128 + the signal that ended it.
    pub status: Option<i32>,
}

/// What a run printed (its output as bytes) and how it ended.
pub struct RawRun {
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error, lossily decoded.
    pub stderr: String,
    /// The exit status, or 128 + the signal that ended it.
    pub status: Option<i32>,
}

/// Runs `cmd` to its end, failing the test if it takes longer than `limit` (a hang).
pub fn run(cmd: Command, limit: Duration, what: &str) -> Run {
    let r = run_input(cmd, None, limit, what);
    Run { stdout: String::from_utf8_lossy(&r.stdout).into_owned(), stderr: r.stderr, status: r.status }
}

/// Runs `cmd` to its end with `stdin` as its input (none: `/dev/null`), failing the test if it
/// takes longer than `limit` (a hang).
pub fn run_input(mut cmd: Command, stdin: Option<&[u8]>, limit: Duration, what: &str) -> RawRun {
    let out = output_input(&mut cmd, stdin, limit, what);
    // As a shell reports it: 128 + N for a death by signal N.
    let status = out.status.code().or(out.status.signal().map(|s| 128 + s));
    RawRun { stdout: out.stdout, stderr: String::from_utf8_lossy(&out.stderr).into_owned(), status }
}

/// [`Command::output`] under a deadline, for the commands a test runs and reads the output of.
pub trait TimedOutput {
    /// Runs the command to its end with no input, its output captured, failing the test if it
    /// takes longer than [`DEADLINE`] (a hang).
    fn timed_output(&mut self) -> Output;
}

impl TimedOutput for Command {
    fn timed_output(&mut self) -> Output {
        let what = format!("{self:?}");
        output_input(self, None, DEADLINE, &what)
    }
}

/// Spawns `cmd`, again for a second at most while its program is busy (`ETXTBSY`): a test
/// that has just copied the program may still see it open for writing in a child another
/// test thread forked before the copy closed it, until that child execs.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// Runs `cmd` to its end with `stdin` as its input, failing the test after `limit`. The input is
/// written from a thread, so a child that prints a lot before it reads cannot deadlock the test,
/// and one that never reads is fine.
pub fn output_input(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration, what: &str) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(cmd).unwrap_or_else(|e| panic!("{what}: spawning: {e}"));
    let feeder = stdin.map(|data| {
        let (mut input, data) = (child.stdin.take().expect("stdin is piped"), data.to_vec());
        std::thread::spawn(move || {
            use std::io::Write;
            // A child that exits without reading all its input closes the pipe: not an error.
            let _ = input.write_all(&data);
        })
    });
    // Each reader keeps what it has read where a hung run's output can be shown, without
    // waiting for a descendant that may still hold the pipe open.
    let drain = |mut r: Box<dyn Read + Send>| {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            // A read error ends the output early; the test then sees what came before it.
            while let Ok(n @ 1..) = r.read(&mut chunk) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&chunk[..n]);
            }
        });
        (reader, got)
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let err = drain(Box::new(child.stderr.take().expect("stderr is piped")));
    let Some(status) = wait_within(&mut child, limit) else {
        // What the killed child wrote last is in the pipes still.
        std::thread::sleep(Duration::from_millis(200));
        let shown = |got: &Mutex<Vec<u8>>| tail(&got.lock().unwrap_or_else(|e| e.into_inner()));
        panic!("{what}: still running after {limit:?} (a hang?), killed; its stdout ended:\n{}\nits stderr ended:\n{}", shown(&out.1), shown(&err.1));
    };
    if let Some(f) = feeder {
        f.join().expect("the stdin feeder does not panic");
    }
    let take = |(reader, got): (std::thread::JoinHandle<()>, Arc<Mutex<Vec<u8>>>)| {
        reader.join().expect("a pipe reader does not panic");
        std::mem::take(&mut *got.lock().unwrap_or_else(|e| e.into_inner()))
    };
    Output { status, stdout: take(out), stderr: take(err) }
}

/// The last 4 KiB of `b`, lossily decoded: enough of a hung run's output to see where it was.
fn tail(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[b.len().saturating_sub(4096)..]).into_owned()
}

/// Waits for `child` to end, or kills it after `limit` (a hang) and gives `None`.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(e) => panic!("waiting for a child: {e}"),
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The program natively, in `dir`, within a minute.
pub fn native(prog: &Path, args: &[&str], dir: &Path) -> Run {
    let mut c = native_command(prog);
    c.args(args).current_dir(dir);
    run(c, Duration::from_secs(60), "native run")
}

/// A `lego` server process (`mem-server`, `storage-server`, `global-mgr`, `pcomp`), killed
/// when dropped. It is up once it has printed `lego <kind> listening on ADDR` (after `lego
/// <kind> metrics on http://ADDR/metrics` with `--metrics`).
pub struct Server {
    child: Child,
    /// The address it listens on.
    pub addr: String,
    /// The address of its `/metrics` endpoint, if it was started with `--metrics`.
    pub metrics: Option<String>,
}

impl Server {
    /// Runs `lego ARGS` and waits for its "listening on" line.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Server {
        Server::start_with_env(&[], args)
    }

    /// A `lego storage-server` over `dir`, listening on `listen`, with `extra` options.
    pub fn storage(dir: &Path, listen: &str, extra: &[&str]) -> Server {
        let dir = dir.to_str().expect("a UTF-8 directory");
        let mut args = vec!["storage-server", "--listen", listen, "--dir", dir];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// A `lego mem-server` on a loopback port with `capacity` of memory, caching the files of
    /// the storage server at `storage` if given.
    pub fn mem(capacity: &str, storage: Option<&str>) -> Server {
        let mut args = vec!["mem-server", "--listen", "127.0.0.1:0", "--capacity", capacity];
        args.extend(storage.iter().flat_map(|s| ["--storage-server", s]));
        Server::start(&args)
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env<S: AsRef<std::ffi::OsStr>>(env: &[(&str, &str)], args: &[S]) -> Server {
        let mut cmd = lego_command();
        cmd.args(args).envs(env.iter().copied()).stderr(Stdio::null());
        Server::spawn(cmd)
    }

    /// Spawns `cmd`, a `lego` server command, and waits for its "listening on" line. `cmd` may
    /// wrap lego in a launcher that execs it (`ip netns exec NS lego ...`), so that the child is
    /// the server itself; its stderr goes where `cmd` says.
    pub fn spawn(mut cmd: Command) -> Server {
        use std::io::{BufRead, BufReader};
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawning a lego server");
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let last_word = |line: &str| line.trim().rsplit(' ').next().expect("an address").to_string();
        let mut metrics = None;
        loop {
            let mut line = String::new();
            out.read_line(&mut line).expect("reading what it prints");
            if line.contains(" metrics on ") && metrics.is_none() {
                metrics = Some(last_word(&line).trim_start_matches("http://").trim_end_matches("/metrics").to_string());
                continue;
            }
            assert!(line.contains(" listening on "), "the server said {line:?}");
            return Server { child, addr: last_word(&line), metrics };
        }
    }

    /// Sends `sig` to the server.
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("pids fit in pid_t");
        // SAFETY: kill(2) on our own child, which is not reaped before `self` is dropped.
        unsafe { libc::kill(pid, sig) };
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Reaped already ([`Server::kill`]): its pid may be another process's by now.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // A stopped server (SIGSTOP in a test) must run again to die.
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new pseudo-terminal: its master, and its slave for a child's standard streams.
pub fn openpty() -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the ints; the NULL name, termios and window
    // size are allowed.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty succeeded, so both are open descriptors owned by nothing else.
    unsafe { (std::fs::File::from_raw_fd(master), std::os::fd::OwnedFd::from_raw_fd(slave)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hung run is killed, and the failure shows what it printed, even while a descendant
    /// still holds its pipes open.
    #[test]
    #[should_panic(expected = "its stdout ended:\nbefore the hang\n")]
    fn a_hang_fails_showing_the_output_so_far() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo before the hang; sleep 30"]);
        output_input(&mut c, None, Duration::from_millis(300), "sleeper");
    }

    #[test]
    fn a_run_in_time_gives_all_its_output() {
        let mut c = Command::new("sh");
        c.args(["-c", "seq 1 20000; echo done >&2"]);
        let out = output_input(&mut c, None, Duration::from_secs(20), "seq");
        assert!(out.status.success());
        assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 20000);
        assert_eq!(out.stderr, b"done\n");
    }
}
