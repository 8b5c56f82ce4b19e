//! Reclamation of the memory of processes that end abnormally (LegoOS §4.7), with real
//! processes: a global manager, three mem-servers registered with it, and `lego run
//! --replicas 2` of a busybox script that fills memory on the mem-servers, then waits for a
//! file (`go`) to appear before it prints a digest of that memory. The mem-servers' pages are
//! read from the load they report to the manager (`lego ps --json`).
//!
//! - `kill -9` of the VMM: the manager has its home release it everywhere, and every page of it
//!   goes from the servers.
//! - The reports of a live process are lost (its connection to the manager is cut): the
//!   manager tries to reclaim it, its home refuses (the process renewed its lease), and the
//!   program finishes with the native output.
//! - A VMM stopped past the silence (SIGSTOP): its memory is reclaimed, and once continued it
//!   gets refusals and ends with status 125, never wrong output (fencing).
//! - `lego ps` shows each vRegion's copies: on two servers, then, once one of them is killed,
//!   on the survivor and a new one, and the program's output is native.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use lego_testkit as common;
use common::TimedOutput;

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// Heartbeat interval of the components (the process reports' interval too).
const HEARTBEAT_MS: u64 = 1000;

/// Fills about 1.3 MB of shell memory, waits for `go`, prints a digest of it.
const SCRIPT: &str = "x=$(./busybox seq 1 200000); while [ ! -e go ]; do ./busybox sleep 0.1; done; echo \"$x\" | ./busybox md5sum";

/// A global manager (with metrics) and three mem-servers registered with it.
struct Cluster {
    global: Server,
    servers: Vec<Server>,
    root: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let state = tempfile::tempdir().unwrap();
        let hb = HEARTBEAT_MS.to_string();
        let global = Server::start(&[
            "global-mgr",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            state.path().to_str().unwrap(),
            "--heartbeat-ms",
            &hb,
            "--metrics",
            "127.0.0.1:0",
        ]);
        let servers = ["1G", "768M", "512M"]
            .iter()
            .map(|c| {
                Server::start(&[
                    "mem-server",
                    "--listen",
                    "127.0.0.1:0",
                    "--capacity",
                    c,
                    "--global-mgr",
                    &global.addr,
                    "--heartbeat-ms",
                    &hb,
                    "--metrics",
                    "127.0.0.1:0",
                ])
            })
            .collect();
        let out = lego_cmd(&["vnode", "create", "rec", "--global-mgr", &global.addr]).timed_output();
        assert!(out.status.success(), "vnode create: {}", String::from_utf8_lossy(&out.stderr));
        let root = tempfile::tempdir().unwrap();
        std::fs::copy(image("busybox"), root.path().join("busybox")).unwrap();
        // The state directory lives as long as the manager needs it.
        std::mem::forget(state);
        Cluster { global, servers, root }
    }

    /// `lego run` of [`SCRIPT`], reporting to the manager at `manager`.
    fn run(&self, manager: &str) -> Running {
        let mut o = vec!["--global-mgr", manager, "--vnode", "rec", "--replicas", "2", "--excache", "1M"];
        for s in &self.servers {
            o.extend(["--mem-server", s.addr.as_str()]);
        }
        let mut cmd = lego(&o, &image("busybox"), &["sh", "-c", SCRIPT], self.root.path());
        cmd.current_dir(self.root.path());
        Running::spawn(cmd)
    }

    /// What the script prints natively (with `go` there already).
    fn native(&self) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(image("busybox"), dir.path().join("busybox")).unwrap();
        std::fs::write(dir.path().join("go"), "").unwrap();
        let out = native(&dir.path().join("busybox"), &["sh", "-c", SCRIPT], dir.path());
        assert_eq!(out.status, Some(0), "{}", out.stderr);
        out.stdout
    }

    fn go(&self) {
        std::fs::write(self.root.path().join("go"), "").unwrap();
    }

    /// The mem-servers' used bytes (as their last heartbeats say), and the processes listed.
    fn view(&self) -> (Vec<u64>, Vec<serde_json::Value>) {
        let out = lego_cmd(&["ps", "--json", "--global-mgr", &self.global.addr]).timed_output();
        let (_, v) = ps_json(&out);
        let used = v["components"].as_array().unwrap().iter().map(|c| c["load"]["used_bytes"].as_u64().unwrap()).collect();
        let procs = v["processes"].as_array().cloned().unwrap_or_default();
        (used, procs)
    }

    /// The vRegions of the run's first process (vNode pid 1), as `lego ps --json` lists them
    /// (none while it is not listed).
    fn vregions(&self) -> (String, Vec<serde_json::Value>) {
        let (_, procs) = self.view();
        let Some(p) = procs.iter().find(|p| p["who"]["vpid"] == 1) else { return (String::new(), Vec::new()) };
        (p["who"]["home"].as_str().unwrap().to_string(), p["cache"]["vregions"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until the run's process is listed and the mem-servers hold its pages.
    fn holding(&self) {
        poll("the process to be listed with its pages on the mem-servers", Duration::from_secs(90), || {
            let (used, procs) = self.view();
            let holding = used.iter().filter(|&&u| u >= 1 << 20).count();
            if !procs.is_empty() && holding >= 2 {
                Ok(())
            } else {
                Err(format!("used {used:?}, {} processes", procs.len()))
            }
        });
    }

    /// The bytes of pages each mem-server holds now (its metrics, not its last heartbeat).
    fn stored(&self) -> Vec<f64> {
        let stored = |s: &Server| sample(&scrape(s.metrics.as_deref().expect("started with --metrics")).1, "lego_mem_stored_bytes");
        self.servers.iter().map(|s| stored(s).expect("lego_mem_stored_bytes")).collect()
    }

    /// A counter of the manager's metrics.
    fn counter(&self, name: &str) -> f64 {
        let (_, body) = scrape(self.global.metrics.as_deref().expect("started with --metrics"));
        sample(&body, &format!("{name}_total")).unwrap_or(0.0)
    }
}

fn lego_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lego"));
    c.args(args);
    c
}

/// A `lego run` under way, its output read as it comes.
struct Running {
    child: Child,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning lego run");
        let read = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = Some(read(Box::new(child.stdout.take().unwrap())));
        let err = Some(read(Box::new(child.stderr.take().unwrap())));
        Running { child, out, err }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which has not been waited for.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the end, for at most `limit` (a hang fails the test).
    fn finish(mut self, limit: Duration) -> Run {
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("lego run did not end within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        use std::os::unix::process::ExitStatusExt;
        Run {
            stdout: self.out.take().unwrap().join().unwrap(),
            stderr: self.err.take().unwrap().join().unwrap(),
            status: status.code().or(status.signal().map(|s| 128 + s)),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP forwarder in front of the global manager, which can be cut: every connection through
/// it is shut down and new ones are refused (the reports of the processes behind it are lost).
struct Proxy {
    addr: String,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (flag, open, target) = (cut.clone(), conns.clone(), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                if flag.load(Ordering::Acquire) {
                    // Cut: a new connection is closed at once.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let mut open = open.lock().unwrap();
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
                open.extend([client, server]);
            }
        });
        Proxy { addr, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn the_memory_of_a_killed_vmm_is_released_everywhere() {
    if !kvm() {
        return;
    }
    let cluster = Cluster::start();
    let run = cluster.run(&cluster.global.addr);
    cluster.holding();
    let killed = Instant::now();
    run.signal(libc::SIGKILL);
    // As the mem-servers hold it now (their metrics), then as the manager sees it (their
    // heartbeats, and its list of processes).
    poll("every page of the killed process to be released", Duration::from_secs(60), || {
        let stored = cluster.stored();
        if stored.iter().all(|&b| b == 0.0) {
            Ok(())
        } else {
            Err(format!("stored {stored:?}"))
        }
    });
    let released = killed.elapsed();
    poll("the manager to see the pages released and the process gone", Duration::from_secs(60), || {
        let (used, procs) = cluster.view();
        if used.iter().all(|&u| u == 0) && procs.is_empty() {
            Ok(())
        } else {
            Err(format!("used {used:?}, {} processes", procs.len()))
        }
    });
    assert!(cluster.counter("lego_global_reclaimed_processes") >= 1.0, "the manager did not reclaim it");
    eprintln!(
        "released {:.2} s after kill -9, seen by the manager {:.2} s after (3 heartbeats: {} s)",
        released.as_secs_f64(),
        killed.elapsed().as_secs_f64(),
        3 * HEARTBEAT_MS / 1000
    );
}

#[test]
fn a_live_process_whose_reports_are_lost_keeps_its_memory() {
    if !kvm() {
        return;
    }
    let cluster = Cluster::start();
    let want = cluster.native();
    let proxy = Proxy::start(&cluster.global.addr);
    let run = cluster.run(&proxy.addr);
    cluster.holding();
    proxy.cut();
    // The manager gives up on the silent process and asks its home, which refuses.
    poll("the home to refuse a reclamation", Duration::from_secs(60), || {
        let refused = cluster.counter("lego_global_reclaims_refused");
        if refused >= 1.0 {
            Ok(())
        } else {
            Err(format!("refused {refused}, reclaimed {}", cluster.counter("lego_global_reclaimed_processes")))
        }
    });
    let (used, procs) = cluster.view();
    assert!(procs.is_empty(), "the process should look silent to the manager: {procs:?}");
    assert!(used.iter().filter(|&&u| u > 0).count() >= 2, "its pages must stay: {used:?}");
    cluster.go();
    let got = run.finish(Duration::from_secs(120));
    assert_eq!(got.status, Some(0), "stderr: {}", got.stderr);
    assert_eq!(got.stdout, want, "stderr: {}", got.stderr);
    assert_eq!(cluster.counter("lego_global_reclaimed_processes"), 0.0, "a live process was reclaimed");
}

#[test]
fn a_vmm_stopped_past_the_silence_is_fenced_off_its_reclaimed_memory() {
    if !kvm() {
        return;
    }
    let cluster = Cluster::start();
    let run = cluster.run(&cluster.global.addr);
    cluster.holding();
    run.signal(libc::SIGSTOP);
    poll("the stopped process's memory to be released", Duration::from_secs(60), || {
        let (used, _) = cluster.view();
        let reclaimed = cluster.counter("lego_global_reclaimed_processes");
        if reclaimed >= 1.0 && used.iter().all(|&u| u == 0) {
            Ok(())
        } else {
            Err(format!("used {used:?}, reclaimed {reclaimed}"))
        }
    });
    cluster.go();
    run.signal(libc::SIGCONT);
    let got = run.finish(Duration::from_secs(120));
    assert_eq!(got.status, Some(125), "a process whose memory was reclaimed must not go on: {}", got.stderr);
    assert_eq!(got.stdout, "", "nothing computed from reclaimed memory may come out; stderr: {}", got.stderr);
    eprintln!("fenced: {}", got.stderr.lines().last().unwrap_or(""));
}

#[test]
fn lego_ps_shows_each_vregion_lose_a_copy_and_get_it_back() {
    if !kvm() {
        return;
    }
    let mut cluster = Cluster::start();
    let want = cluster.native();
    let run = cluster.run(&cluster.global.addr);
    cluster.holding();
    let on = |v: &serde_json::Value| [v["primary"].as_str().unwrap().to_string(), v["secondary"].as_str().unwrap_or("-").to_string()];
    // Two copies of each vRegion, on two servers; not the home while another server can take it.
    let (home, before) = poll("every vRegion to be listed with two copies", Duration::from_secs(30), || {
        let (home, v) = cluster.vregions();
        if !v.is_empty() && v.iter().all(|v| v["state"] == "Replicated") {
            Ok((home, v))
        } else {
            Err(format!("{v:?}"))
        }
    })
    .0;
    for v in &before {
        let [p, s] = on(v);
        assert!(p != s && p != home && s != home, "{v} (home {home})");
    }
    let text = lego_cmd(&["ps", "--global-mgr", &cluster.global.addr]).timed_output();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("VREGION") && text.lines().filter(|l| l.ends_with(" replicated")).count() >= before.len(), "{text}");
    // Kill a server holding copies: each vRegion it held is copied again, to the home.
    let victim = on(&before[0])[0].clone();
    let i = cluster.servers.iter().position(|s| s.addr == victim).unwrap();
    cluster.servers.remove(i).kill();
    poll("every vRegion to have two copies again, none on the killed server", Duration::from_secs(30), || {
        let (_, v) = cluster.vregions();
        let again = !v.is_empty() && v.iter().all(|v| v["state"] == "Replicated" && !on(v).contains(&victim));
        if again {
            Ok(())
        } else {
            Err(format!("{v:?}"))
        }
    });
    cluster.go();
    let got = run.finish(Duration::from_secs(120));
    assert_eq!((got.status, got.stdout), (Some(0), want), "stderr: {}", got.stderr);
}
