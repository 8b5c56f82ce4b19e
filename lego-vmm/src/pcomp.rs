//! The pComponent daemon (`lego pcomp`): accepts run sessions ([`lego_proto::pcomp`]) from
//! `lego run` in any shell of the cluster and runs each program in a VMM process of its own on
//! this machine, streaming its standard input, output and error and returning its exit status.
//!
//! One VMM process per vNode process, as Firecracker and Cloud Hypervisor do: a guest that
//! crashes its VMM takes nothing else down, and the VMM's own standard streams are the guest's.
//! How a VMM process is started is the caller's choice ([`Launch`]: `lego pcomp` starts
//! `lego run --local` with the request's options).
//!
//! The load the daemon reports to the global process manager (GPM) is the number of guest
//! threads it runs: for each VMM, its first guest thread plus its host threads named `vcpu-*`
//! (one per further guest thread, see `vnode.rs`), read from `/proc` at each heartbeat.

use lego_proto::sync::LockExt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use std::sync::{Arc, Mutex};

use lego_proto::global::Load;
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::metrics::{counter, gauge, Collector, DescriptorEncoder, Registry};
use lego_proto::pcomp::{recv, send, FromPcomp, RunRequest, ToPcomp, CHUNK};
use lego_proto::service::{Handle, Service, ServiceError, Sessions};

/// Makes the command that runs one request in a VMM process of its own, for the daemon at the
/// given address (as the client reached it). The daemon sets its standard streams.
pub type Launch = dyn Fn(&RunRequest, SocketAddr) -> Command + Send + Sync;

/// Who may ask for a run.
const ACCEPTS: [ComponentKind; 1] = [ComponentKind::Client];

/// Sessions a daemon holds at once unless told otherwise ([`Pcomp::max_sessions`]): each holds a
/// host thread (four while its process runs) and, once it runs, a VMM process.
pub const DEFAULT_MAX_SESSIONS: usize = 256;

/// How long an authenticated connection may stay idle before its run request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound, not yet running, pComponent daemon.
pub struct Pcomp {
    service: Service<Sessions>,
    counts: Arc<Counts>,
}

/// What the daemon has done: its heartbeat load and its metrics.
#[derive(Debug, Default)]
struct Counts {
    /// Host process ids of the VMMs running now.
    running: Mutex<BTreeSet<u32>>,
    /// Processes started since the daemon started.
    started: AtomicU64,
    /// Run requests refused (a bad first message, a VMM that could not start, too many sessions).
    refused: AtomicU64,
    /// Sessions open now, from the handshake to the exit status.
    sessions: AtomicUsize,
    /// Most sessions open at once.
    max_sessions: AtomicUsize,
}

impl Collector for Counts {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        gauge(&mut e, "lego_pcomp_processes", "vNode processes running on this pComponent.", self.processes())?;
        gauge(&mut e, "lego_pcomp_threads", "Guest threads of the vNode processes running on this pComponent.", self.threads())?;
        counter(&mut e, "lego_pcomp_processes_started", "vNode processes started since the daemon started.", get(&self.started))?;
        counter(&mut e, "lego_pcomp_runs_refused", "Run requests refused (bad request, VMM that could not start, too many sessions).", get(&self.refused))
    }
}

impl Pcomp {
    /// Binds `listen`; peers must present cluster id `cluster` (and the cluster secret).
    pub fn bind(
        listen: &str,
        cluster: u64,
        launch: impl Fn(&RunRequest, SocketAddr) -> Command + Send + Sync + 'static,
    ) -> Result<Pcomp, ServiceError> {
        let counts = Arc::new(Counts { max_sessions: AtomicUsize::new(DEFAULT_MAX_SESSIONS), ..Counts::default() });
        let (count, launch): (_, Arc<Launch>) = (counts.clone(), Arc::new(launch));
        let me = Hello::new(ComponentKind::Processor, cluster);
        let service = Service::bind_sessions("pcomp", listen, me, &ACCEPTS, move |stream, peer, _| {
            session(stream, peer, launch.as_ref(), &count);
        })?;
        Ok(Pcomp { service, counts })
    }

    /// Holds at most `n` sessions at once (idle or running a process): a connection beyond them
    /// is refused at once, so idle connections cannot pile up host threads.
    pub fn max_sessions(self, n: usize) -> Pcomp {
        self.counts.max_sessions.store(n, Ordering::Relaxed);
        self
    }

    /// The address the daemon listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.service.local_addr()
    }

    /// The load for heartbeats: guest threads running.
    pub fn load_probe(&self) -> impl Fn() -> Load + Send + 'static {
        let counts = self.counts.clone();
        move || Load { threads: counts.threads(), ..Load::default() }
    }

    /// Adds the daemon's metrics (processes, connections) to `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.counts.clone()));
        registry.register_collector(Box::new(self.service.connections()));
    }

    /// Serves on the calling thread until SIGTERM or SIGINT. Processes still running are
    /// killed: each VMM dies with the session thread that started it.
    pub fn run(self) -> Result<(), ServiceError> {
        self.log_cap();
        self.service.run()
    }

    /// Serves on a thread of its own until the returned handle is dropped.
    pub fn spawn(self) -> Result<Handle, ServiceError> {
        self.log_cap();
        self.service.spawn(|| ())
    }

    fn log_cap(&self) {
        let max_sessions = self.counts.max_sessions.load(Ordering::Relaxed);
        tracing::info!(max_sessions, "pcomp holds at most {max_sessions} sessions at once");
    }
}

impl Counts {
    fn running(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.running.lock_unpoisoned()
    }

    fn processes(&self) -> u64 {
        self.running().len() as u64
    }

    /// Guest threads of the running VMMs. A VMM that is just starting or ending counts one.
    fn threads(&self) -> u64 {
        self.running().iter().map(|&pid| guest_threads(pid)).sum()
    }
}

/// The guest threads of VMM `pid`: its first thread, which runs the first guest thread, and its
/// `vcpu-*` threads, which run the others.
fn guest_threads(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 1 };
    let vcpu = |t: &std::fs::DirEntry| std::fs::read(t.path().join("comm")).is_ok_and(|c| c.starts_with(b"vcpu-"));
    1 + tasks.flatten().filter(|t| vcpu(t)).count() as u64
}

/// Counts an open session for as long as it lives.
struct Session<'a>(&'a Counts);

impl<'a> Session<'a> {
    /// The session, or the cap if that many are open already.
    fn open(counts: &'a Counts) -> Result<Session<'a>, usize> {
        let cap = counts.max_sessions.load(Ordering::Relaxed);
        counts
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1))
            .map(|_| Session(counts))
            .map_err(|_| cap)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a running process for as long as it lives.
struct Running<'a>(&'a Counts, u32);

impl<'a> Running<'a> {
    fn start(counts: &'a Counts, pid: u32) -> Running<'a> {
        counts.started.fetch_add(1, Ordering::Relaxed);
        counts.running().insert(pid);
        Running(counts, pid)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running().remove(&self.1);
    }
}

/// One run session, from the request to the exit status.
fn session(stream: TcpStream, peer: SocketAddr, launch: &Launch, counts: &Counts) {
    let mut input = stream;
    let output = match input.try_clone() {
        Ok(s) => Arc::new(Mutex::new(s)),
        Err(e) => return tracing::warn!(%peer, error = %e, "cloning the session socket"),
    };
    let say = |msg: &FromPcomp| send(&mut *output.lock_unpoisoned(), msg).is_ok();
    let refuse = |why: String| {
        counts.refused.fetch_add(1, Ordering::Relaxed);
        say(&FromPcomp::Refused(why));
    };
    let _session = match Session::open(counts) {
        Ok(s) => s,
        Err(cap) => {
            tracing::warn!(%peer, max_sessions = cap, "refusing a session: {cap} are open already");
            return refuse(format!("this pComponent holds {cap} sessions already"));
        }
    };
    // An idle connection gives its place up after a while.
    let req = match input.set_read_timeout(Some(REQUEST_TIMEOUT)).map(|()| recv::<ToPcomp>(&mut input)) {
        Ok(Ok(Some(ToPcomp::Run(req)))) => req,
        Ok(Ok(None)) => return,
        Ok(Ok(Some(other))) => return refuse(format!("expected a run request first, got {other:?}")),
        Ok(Err(e)) => return tracing::warn!(%peer, error = %e, "no run request"),
        Err(e) => return tracing::warn!(%peer, error = %e, "setting the session's request timeout"),
    };
    if let Err(e) = input.set_read_timeout(None) {
        return tracing::warn!(%peer, error = %e, "clearing the session's request timeout");
    }
    let program = String::from_utf8_lossy(&req.program).into_owned();
    let me = match input.local_addr() {
        Ok(a) => a,
        Err(e) => return tracing::warn!(%peer, error = %e, "the session socket's address"),
    };
    let mut command = launch(&req, me);
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // A process group of its own, so that whatever the VMM leaves behind can be killed with it.
    command.process_group(0);
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        // The VMM dies with the thread that started it, which waits for it: a daemon that is
        // stopped leaves no guest running behind it.
        command.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    let spawned = command.spawn().and_then(|child| Ok((pidfd(&child)?, child)));
    let (pidfd, mut child) = match spawned {
        Ok(c) => c,
        Err(e) => return refuse(format!("cannot start a VMM for {program}: {e}")),
    };
    let running = Running::start(counts, child.id());
    tracing::info!(%peer, vnode = %req.vnode, %program, pid = child.id(), "process started");
    if !say(&FromPcomp::Started { pid: child.id() }) {
        kill(&pidfd);
    }
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let status = std::thread::scope(|s| {
        s.spawn(|| relay_input(&mut input, stdin, &pidfd));
        if let Some(pipe) = stdout {
            s.spawn(|| relay_output(pipe, FromPcomp::Stdout, &say, &pidfd));
        }
        if let Some(pipe) = stderr {
            s.spawn(|| relay_output(pipe, FromPcomp::Stderr, &say, &pidfd));
        }
        let status = wait(&mut child);
        // The output relays end at end of file, once nothing the VMM started holds the pipes;
        // the input relay ends here.
        let _ = output.lock_unpoisoned().shutdown(std::net::Shutdown::Read);
        status
    });
    tracing::info!(%peer, %program, status, "process ended");
    // Not counted any more by the time the client hears that it ended.
    drop(running);
    say(&FromPcomp::Exited { status });
}

/// Copies one of the process's output pipes to the client until it ends; a client that is gone
/// kills the process, since nobody will see what it writes.
fn relay_output(mut pipe: impl Read, wrap: fn(Vec<u8>) -> FromPcomp, say: &dyn Fn(&FromPcomp) -> bool, pidfd: &OwnedFd) {
    let mut buf = vec![0u8; CHUNK];
    while let Ok(n @ 1..) = pipe.read(&mut buf) {
        if !say(&wrap(buf[..n].to_vec())) {
            kill(pidfd);
            return;
        }
    }
}

/// Copies the client's standard input to the process until it ends; a client that goes away
/// kills the process.
fn relay_input(input: &mut TcpStream, mut stdin: Option<std::process::ChildStdin>, pidfd: &OwnedFd) {
    loop {
        match recv::<ToPcomp>(input) {
            Ok(Some(ToPcomp::Stdin(bytes))) => {
                // A process that closed its input just does not get it, as with a shell pipe.
                if let Some(p) = &mut stdin {
                    if p.write_all(&bytes).is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Some(ToPcomp::StdinClosed)) => stdin = None,
            Ok(Some(ToPcomp::Run(_))) | Err(_) | Ok(None) => {
                // The client left or misbehaved, so nobody waits for the process; or the process
                // ended and the session shut the socket down, and this does nothing.
                kill(pidfd);
                return;
            }
        }
    }
}

/// Waits for the process, kills what it leaves in its process group (which would otherwise hold
/// its output pipes open), and returns its status as a shell shows it.
fn wait(child: &mut Child) -> u8 {
    let pid = child.id() as libc::pid_t;
    // SAFETY: an all-zero siginfo_t is a valid value for waitid to fill in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child with a valid siginfo pointer. WNOWAIT leaves it a zombie,
    // which keeps its pid, and so the group id, from being reused until the killpg below.
    while unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) } != 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    // SAFETY: kill with a negative pid signals the process group the child leads.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    match child.wait() {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => code as u8,
            (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
            (None, None) => 255,
        },
        Err(e) => {
            tracing::warn!(error = %e, "waiting for a VMM process");
            255
        }
    }
}

/// A pidfd of the child, so that killing it later can never hit a recycled pid.
fn pidfd(child: &Child) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we just opened and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends SIGKILL through the pidfd (nothing happens once the process is gone).
fn kill(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo.
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use lego_proto::transport::TcpTransport;
    use std::time::{Duration, Instant};

    /// A daemon whose "VMM" is `sh -c PROGRAM ARGV...`, so sessions can be tested without KVM.
    fn daemon() -> (Handle, impl Fn() -> Load) {
        let pcomp = Pcomp::bind("127.0.0.1:0", 7, |req, _| {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(String::from_utf8_lossy(&req.program).into_owned());
            c
        })
        .unwrap();
        let load = pcomp.load_probe();
        (pcomp.spawn().unwrap(), load)
    }

    fn request(script: &str) -> RunRequest {
        RunRequest {
            vnode: "v".into(),
            program: script.as_bytes().to_vec(),
            argv: vec![],
            envp: vec![],
            mem: None,
            excache: None,
            excache_ways: 64,
            excache_clock: false,
            excache_prefetch: 0,
            excache_cleaner: false,
            vregion_size: 1 << 30,
            mem_timeout_s: 30,
            replicas: 1,
            trace_syscalls: false,
            ignored_signals: 0,
            blocked_signals: 0,
            stats: false,
            egress: false,
            publish: Vec::new(),
        }
    }

    fn connect(h: &Handle, script: &str) -> (TcpStream, FromPcomp) {
        let t = TcpTransport::connect(&h.addr().to_string(), Hello::new(ComponentKind::Client, 7), Duration::from_secs(5)).unwrap();
        let mut s = t.into_stream();
        send(&mut s, &ToPcomp::Run(request(script))).unwrap();
        let first = recv::<FromPcomp>(&mut s).unwrap().unwrap();
        (s, first)
    }

    /// Everything the session sends until the exit status: (stdout, stderr, status).
    fn finish(s: &mut TcpStream) -> (Vec<u8>, Vec<u8>, u8) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match recv::<FromPcomp>(s).unwrap().expect("the session ended without a status") {
                FromPcomp::Stdout(b) => out.extend(b),
                FromPcomp::Stderr(b) => err.extend(b),
                FromPcomp::Exited { status } => return (out, err, status),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn input_output_and_status_are_streamed() {
        let (h, _) = daemon();
        let (mut s, first) = connect(&h, "tr a-z A-Z; echo oops >&2; exit 3");
        assert!(matches!(first, FromPcomp::Started { .. }), "{first:?}");
        send(&mut s, &ToPcomp::Stdin(b"hello ".to_vec())).unwrap();
        send(&mut s, &ToPcomp::Stdin(vec![b'x'; 3 * CHUNK])).unwrap();
        send(&mut s, &ToPcomp::StdinClosed).unwrap();
        let (out, err, status) = finish(&mut s);
        assert_eq!(out.len(), 6 + 3 * CHUNK);
        assert!(out.starts_with(b"HELLO XXX"));
        assert_eq!((err, status), (b"oops\n".to_vec(), 3));
    }

    #[test]
    fn a_process_killed_by_a_signal_gets_128_plus_the_signal() {
        let (h, _) = daemon();
        let (mut s, _) = connect(&h, "kill -9 $$");
        assert_eq!(finish(&mut s).2, 128 + 9);
    }

    #[test]
    fn a_client_that_leaves_ends_its_process_and_the_thread_count() {
        let (h, load) = daemon();
        let (s, first) = connect(&h, "sleep 60");
        let FromPcomp::Started { pid } = first else { panic!("{first:?}") };
        assert_eq!(load().threads, 1);
        drop(s);
        let t = Instant::now();
        // SAFETY: signal 0 only asks whether the process exists.
        while unsafe { libc::kill(pid as i32, 0) } == 0 || load().threads != 0 {
            assert!(t.elapsed() < Duration::from_secs(5), "the process outlived its client");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn what_a_process_leaves_behind_does_not_keep_its_session_open() {
        let (h, load) = daemon();
        // The background sleep holds the output pipe; it dies with the process it outlived.
        let (mut s, _) = connect(&h, "sleep 60 & echo $!");
        let (out, _, status) = finish(&mut s);
        assert_eq!(status, 0);
        let orphan: i32 = String::from_utf8(out).unwrap().trim().parse().unwrap();
        assert_eq!(load().threads, 0);
        // Killed; gone once init has reaped it.
        let t = Instant::now();
        // SAFETY: signal 0 only asks whether the process exists.
        while unsafe { libc::kill(orphan, 0) } == 0 {
            assert!(t.elapsed() < Duration::from_secs(5), "the left-behind process still runs");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn sessions_beyond_the_cap_are_refused_and_a_closed_one_frees_its_place() {
        let pcomp = Pcomp::bind("127.0.0.1:0", 7, |_, _| Command::new("/bin/true")).unwrap().max_sessions(2);
        let counts = pcomp.counts.clone();
        let h = pcomp.spawn().unwrap();
        let open_now = |n: usize| {
            let t = Instant::now();
            while counts.sessions.load(Ordering::Acquire) != n {
                assert!(t.elapsed() < Duration::from_secs(5), "never {n} sessions open");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let hello = || {
            let t = TcpTransport::connect(&h.addr().to_string(), Hello::new(ComponentKind::Client, 7), Duration::from_secs(5));
            t.unwrap().into_stream()
        };
        // Two idle authenticated connections hold the two places...
        let (idle1, _idle2) = (hello(), hello());
        open_now(2);
        // ... so a third is refused, and the daemon closes it.
        let mut third = hello();
        let first = recv::<FromPcomp>(&mut third).unwrap().unwrap();
        assert!(matches!(&first, FromPcomp::Refused(m) if m.contains("holds 2 sessions")), "{first:?}");
        assert!(recv::<FromPcomp>(&mut third).unwrap().is_none(), "closed after the refusal");
        // An idle one that leaves frees its place (its session sees the end of the stream).
        drop(idle1);
        open_now(1);
        let (mut s, first) = connect(&h, "true");
        assert!(matches!(first, FromPcomp::Started { .. }), "{first:?}");
        assert_eq!(finish(&mut s).2, 0);
    }

    #[test]
    fn a_bad_first_message_or_launch_is_refused() {
        let bad = Pcomp::bind("127.0.0.1:0", 7, |_, _| Command::new("/nonexistent/vmm")).unwrap().spawn().unwrap();
        let (_, first) = connect(&bad, "true");
        assert!(matches!(&first, FromPcomp::Refused(m) if m.contains("cannot start a VMM")), "{first:?}");
        let (h, _) = daemon();
        let t = TcpTransport::connect(&h.addr().to_string(), Hello::new(ComponentKind::Client, 7), Duration::from_secs(5)).unwrap();
        let mut s = t.into_stream();
        send(&mut s, &ToPcomp::StdinClosed).unwrap();
        let first = recv::<FromPcomp>(&mut s).unwrap().unwrap();
        assert!(matches!(&first, FromPcomp::Refused(m) if m.contains("run request first")), "{first:?}");
    }
}
