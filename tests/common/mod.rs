//! What the end-to-end test files share: where the repository and the guest programs are,
//! whether KVM tests can run, and lego server processes.

// Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (the tests are built as part of `cli/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
}

/// A guest program from `guest-images/out`, which must have been built.
pub fn image(name: &str) -> PathBuf {
    let p = repo().join("guest-images/out").join(name);
    assert!(p.exists(), "{} is missing: run `make guest-images` first", p.display());
    p
}

/// Whether KVM tests can run; panics with the reason if not, unless told to skip
/// (`LEGO_SKIP_KVM_TESTS=1`), in which case the test says on stderr that it was skipped.
pub fn kvm() -> bool {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => true,
        Err(e) if std::env::var("LEGO_SKIP_KVM_TESTS").as_deref() == Ok("1") => {
            eprintln!("SKIPPED (LEGO_SKIP_KVM_TESTS=1): /dev/kvm is not usable: {e}");
            false
        }
        Err(e) => panic!(
            "/dev/kvm is not usable ({e}): lego runs programs as KVM guests. \
             Run on a machine with KVM, or set LEGO_SKIP_KVM_TESTS=1 to skip these tests."
        ),
    }
}

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

/// The stdout of a native run of `prog args`, which must succeed.
pub fn native_stdout(prog: &Path, args: &[&str]) -> String {
    let out = native_command(prog).args(args).output().expect("native run");
    assert!(out.status.success(), "native {} failed", prog.display());
    String::from_utf8(out.stdout).unwrap()
}

/// The counter `name` of `lego run --stats` output (the last number on its line).
pub fn stat(stderr: &str, name: &str) -> u64 {
    stderr
        .lines()
        .find(|l| l.contains(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no '{name}' in {stderr}"))
}

/// A `lego` server process (`mem-server`, `storage-server`, `global-mgr`, `pcomp`), killed
/// when dropped. It is up once it has printed `lego <kind> listening on ADDR` (after `lego
/// <kind> metrics on http://ADDR/metrics` with `--metrics`).
pub struct Server {
    child: std::process::Child,
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

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env<S: AsRef<std::ffi::OsStr>>(env: &[(&str, &str)], args: &[S]) -> Server {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lego"));
        cmd.args(args).envs(env.iter().copied()).stderr(std::process::Stdio::null());
        Server::spawn(cmd)
    }

    /// Spawns `cmd`, a `lego` server command, and waits for its "listening on" line. `cmd` may
    /// wrap lego in a launcher that execs it (`ip netns exec NS lego ...`), so that the child is
    /// the server itself; its stderr goes where `cmd` says.
    pub fn spawn(mut cmd: std::process::Command) -> Server {
        use std::io::{BufRead, BufReader};
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().expect("spawning a lego server");
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
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A component as `lego ps --json` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    /// The id the global manager gave it.
    pub id: u64,
    /// `Memory`, `Storage` or `Processor`.
    pub role: String,
    /// The address it listens on.
    pub addr: String,
    /// Whether it is up (heard from within three heartbeats).
    pub up: bool,
    /// Milliseconds since the manager last heard from it.
    pub last_seen_ms: u64,
    /// Requests it has served, as of its last heartbeat.
    pub requests: u64,
}

/// The output of `lego ps --json`, which must have succeeded: its components in id order, and
/// the whole document (for the vNodes).
pub fn ps_json(out: &std::process::Output) -> (Vec<Component>, serde_json::Value) {
    assert!(out.status.success(), "lego ps: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lego ps --json prints JSON");
    let components = v["components"]
        .as_array()
        .expect("a components array")
        .iter()
        .map(|c| Component {
            id: c["id"].as_u64().unwrap(),
            role: c["role"].as_str().unwrap().to_string(),
            addr: c["addr"].as_str().unwrap().to_string(),
            up: c["up"].as_bool().unwrap(),
            last_seen_ms: c["last_seen_ms"].as_u64().unwrap(),
            requests: c["load"]["requests"].as_u64().unwrap(),
        })
        .collect();
    (components, v)
}

/// Calls `probe` every 25 ms until it answers `Ok`, for at most `limit`; returns the answer and
/// how long it took. Panics with `what` and the last `Err` (what was seen instead) otherwise.
pub fn poll<T>(what: &str, limit: std::time::Duration, mut probe: impl FnMut() -> Result<T, String>) -> (T, std::time::Duration) {
    let started = std::time::Instant::now();
    loop {
        match probe() {
            Ok(v) => return (v, started.elapsed()),
            Err(seen) => assert!(started.elapsed() < limit, "{what}: not within {limit:?}; last seen: {seen}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// The body of `GET /metrics` from the endpoint at `addr`, and the reply's status line.
pub fn scrape(addr: &str) -> (String, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connecting to the metrics endpoint");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lego\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reading the metrics");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// The value of the sample `series` (a name and its labels as printed, e.g.
/// `lego_mem_requests_total{op="fetch"}`) in the metrics `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What the busybox cases read on stdin and as `words.txt`.
pub const WORDS: &str = "pear\napple\nfig\napple\nbanana\nfig\nfig\ncherry\n";

/// Creates the files the busybox cases read, in `dir`.
pub fn busybox_files(dir: &Path) {
    std::fs::write(dir.join("words.txt"), WORDS).unwrap();
    std::fs::write(dir.join("table.csv"), "id,name,qty\n3,fig,7\n1,apple,12\n2,pear,5\n").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/a"), "a\n").unwrap();
    std::fs::write(dir.join("sub/b"), vec![7u8; 10000]).unwrap();
}

/// The busybox applet invocations compared with native runs, in the directory
/// [`busybox_files`] made, with [`WORDS`] on stdin.
pub const BUSYBOX_CASES: &[&[&str]] = &[
    &["echo", "-n", "hello", "world"],
    &["echo", "-e", "a\\tb\\nc"],
    &["cat", "words.txt", "table.csv"],
    &["wc", "words.txt", "table.csv"],
    &["wc", "-c", "sub/b"],
    &["sort", "words.txt"],
    &["sort", "-r", "-u", "words.txt"],
    &["sort", "-t,", "-k3", "-n", "table.csv"],
    &["uniq", "-c", "words.txt"],
    &["md5sum", "words.txt", "sub/b"],
    &["sha256sum", "table.csv"],
    &["grep", "-n", "an", "words.txt"],
    &["grep", "-c", "zzz", "words.txt"],
    &["sed", "-e", "s/fig/FIG/g;2d", "words.txt"],
    &["awk", "-F,", "NR>1 { s += $3 } END { print s, NR }", "table.csv"],
    &["head", "-n", "3", "words.txt"],
    &["tail", "-n", "2", "words.txt"],
    &["tr", "a-z", "A-Z"],
    &["cut", "-d,", "-f2", "table.csv"],
    &["ls"],
    &["ls", "-a", "sub"],
    &["ls", "-1s", "sub"],
    &["seq", "1", "3", "20"],
    &["expr", "7", "*", "6"],
    &["expr", "length", "vnode"],
    &["od", "-A", "x", "-t", "x1z", "table.csv"],
    &["cat", "does-not-exist"],
];

/// A `busybox sh -c` script making symlinks and hard links and changing modes, owners and
/// times (`ln -s`, `ln`, `cp -p`, `touch -d`, `touch -h`, `chmod`, `chown`), then printing them
/// with `stat -c '%a %u %g %Y %F'`: every time it prints was set by the script, so a native run
/// prints the same. Run it in an empty directory.
pub const BUSYBOX_LINKS_SCRIPT: &str = "export TZ=UTC; echo data > f && chmod 640 f && chown 12:34 f && ln -s f s \
    && ln f h && touch -d '2020-01-02 03:04:05' f && cp -p f c && cp f plain && mkdir d && chmod 711 d \
    && touch -d '2019-05-06 07:08:09' d && ln -s d/../f s2 && touch -h -d '2021-01-01 00:00:00' s s2 \
    && touch -d '2018-01-01 00:00:00' plain && chmod u+s,g-r plain \
    && stat -c '%n %a %u %g %Y %F %h %s' f s h c plain s2; stat -c '%n %a %u %g %Y %F' d; \
    stat -L -c '%n %a %F' s s2; readlink s; readlink s2; \
    ln s2 s3; stat -c '%n %F %h' s3 s2; ln -s f f 2>&1; ln f h 2>&1; ln d d2 2>&1; chmod 600 missing 2>&1; \
    rm h s3; stat -c '%n %h' f s2; echo end";

/// The part of [`BUSYBOX_LINKS_SCRIPT`] remote storage keeps: `chmod`, `touch -d`, `touch -m`,
/// `ln -s`, `touch -h`, `readlink` and `stat -c '%a %Y %F'` of files, symlinks and a directory. Run it in a directory of its own
/// (`sh -c SCRIPT` with the directory as `$0`).
pub const BUSYBOX_ATTRS_SCRIPT: &str = "export TZ=UTC; cd \"$0\" && echo data > f && chmod 640 f && mkdir d && chmod 711 d \
    && touch -d '2020-01-02 03:04:05' f && touch -m -d '2019-05-06 07:08:09' d && echo more >> f \
    && touch -d '2018-01-01 00:00:00' f && chmod u+s,g-r f && touch -d '2017-01-01 00:00:01' g \
    && stat -c '%n %a %Y %F %s' f g && stat -c '%n %a %Y %F' d; chmod 600 missing 2>&1; \
    ln -s f s && ln -s d/../f s2 && ln -s /nowhere s3 && touch -h -d '2021-01-01 00:00:00' s s2 \
    && stat -c '%n %a %Y %F %s' s s2 && stat -L -c '%n %a %F' s s2; readlink s; readlink s2; \
    ln -s f f 2>&1; cat s3 2>&1; mv s s4 && cat s4 && rm s4 s2 && ls; echo end";

/// What a run printed and how it ended.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    /// The exit status, or 128 + the signal that ended it.
    pub status: Option<i32>,
}

/// Runs `cmd` to its end, failing the test if it takes longer than `limit` (a hang).
pub fn run(cmd: Command, limit: Duration, what: &str) -> Run {
    let r = run_input(cmd, None, limit, what);
    Run { stdout: String::from_utf8_lossy(&r.stdout).into_owned(), stderr: r.stderr, status: r.status }
}

/// What a run printed (its output as bytes) and how it ended.
pub struct RawRun {
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// The exit status, or 128 + the signal that ended it.
    pub status: Option<i32>,
}

/// Runs `cmd` to its end with `stdin` as its input (none: `/dev/null`), failing the test if it
/// takes longer than `limit` (a hang). The input is written from a thread, so a child that
/// prints a lot before it reads cannot deadlock the test, and one that never reads is fine.
pub fn run_input(mut cmd: Command, stdin: Option<&[u8]>, limit: Duration, what: &str) -> RawRun {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning");
    let feeder = stdin.map(|data| {
        let (mut input, data) = (child.stdin.take().expect("stdin"), data.to_vec());
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = input.write_all(&data);
        })
    });
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (a hang?)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(f) = feeder {
        f.join().expect("stdin feeder");
    }
    use std::os::unix::process::ExitStatusExt;
    // As a shell reports it: 128 + N for a death by signal N.
    let status = status.code().or(status.signal().map(|s| 128 + s));
    RawRun { stdout: reader.join().unwrap(), stderr: err_reader.join().unwrap(), status }
}

/// The program natively, in `dir`.
pub fn native(prog: &Path, args: &[&str], dir: &Path) -> Run {
    let mut c = native_command(prog);
    c.args(args).current_dir(dir);
    run(c, Duration::from_secs(60), "native run")
}

/// `lego run OPTIONS PROG ARGS` with the vNode's files in `dir`.
pub fn lego(options: &[&str], prog: &Path, args: &[&str], dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lego"));
    c.arg("run").arg("--mem").arg("1G").arg("--root").arg(dir).args(options).arg(prog).args(args);
    c.current_dir(dir);
    c
}
