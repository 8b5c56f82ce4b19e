//! The reclamation part of `lego bench replication`: how long after a `kill -9` of a VMM the
//! global manager has its memory released on every mem-server (see `global_mgr::reclaim`).
//!
//! A global manager and three mem-servers registered with it run on loopback as separate
//! processes. Each round runs a busybox script that fills memory (two copies, `--replicas 2`)
//! and then sleeps, waits until the servers hold its pages, kills its VMM and times until
//! every server holds none, as the servers' own counts (`Request::Stat`) say, polled every
//! 10 ms. The p50 is printed beside three heartbeats.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lego_proto::codec::{decode, encode};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{Reply, Request};
use lego_proto::transport::{TcpTransport, Transport};

use crate::measure::Interrupt;
use crate::net_bench::{start, Running};

/// What the guest runs: about 1.3 MB of shell memory, then a long sleep.
const SCRIPT: &str = "x=$(./busybox seq 1 200000); ./busybox sleep 600";

/// The pages each of `servers` holds.
fn stored(servers: &[String]) -> anyhow::Result<Vec<u64>> {
    let hello = Hello::new(ComponentKind::Client, 0);
    servers
        .iter()
        .map(|s| {
            let mut t = TcpTransport::connect(s, hello, Duration::from_secs(5))?;
            match decode::<Reply>(&t.call(0, &encode(&Request::Stat))?)? {
                Reply::Stat(stat) => Ok(stat.used_pages),
                other => bail!("{s} answered Stat with {other:?}"),
            }
        })
        .collect()
}

/// Waits until `done` holds for the servers' page counts, for at most `limit`.
fn wait(servers: &[String], limit: Duration, interrupt: &Interrupt, what: &str, done: impl Fn(&[u64]) -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        interrupt.check()?;
        let pages = stored(servers)?;
        if done(&pages) {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("{what}: not within {limit:?} (pages held: {pages:?})");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `rounds` kills with components heartbeating every `heartbeat_ms`, and prints the line.
pub fn run(lego: &Path, images: &Path, rounds: usize, heartbeat_ms: u64, interrupt: &Interrupt) -> anyhow::Result<()> {
    let state = std::env::temp_dir().join(format!("lego-bench-reclaim-{}", std::process::id()));
    let measured = rounds_on_a_cluster(lego, images, &state, rounds, heartbeat_ms, interrupt);
    let _ = std::fs::remove_dir_all(&state);
    let mut ms = measured?;
    ms.sort_by(f64::total_cmp);
    let p50 = ms[ms.len() / 2];
    let limit = 3.0 * heartbeat_ms as f64;
    let met = if p50 <= limit { "met" } else { "NOT met" };
    println!(
        "  memory of a killed VMM released everywhere ({} kills): p50 {p50:.0} ms, max {:.0} ms   3 heartbeats: {limit:.0} ms   ({:.2}x, target <= 1: {met})",
        ms.len(),
        ms[ms.len() - 1],
        p50 / limit
    );
    Ok(())
}

fn rounds_on_a_cluster(
    lego: &Path,
    images: &Path,
    state: &Path,
    rounds: usize,
    heartbeat_ms: u64,
    interrupt: &Interrupt,
) -> anyhow::Result<Vec<f64>> {
    let hb = heartbeat_ms.to_string();
    let mut c = Command::new(lego);
    c.args(["global-mgr", "--listen", "127.0.0.1:0", "--heartbeat-ms", &hb]).arg("--state-dir").arg(state);
    let (_global, line) = start(c, " listening on ")?;
    let global = line.rsplit(' ').next().unwrap_or_default().to_string();
    let mut servers: Vec<(Running, String)> = Vec::new();
    for capacity in ["1G", "768M", "512M"] {
        let mut c = Command::new(lego);
        c.args(["mem-server", "--listen", "127.0.0.1:0", "--capacity", capacity, "--global-mgr", &global, "--heartbeat-ms", &hb]);
        let (child, line) = start(c, " listening on ")?;
        servers.push((child, line.rsplit(' ').next().unwrap_or_default().to_string()));
    }
    let addrs: Vec<String> = servers.iter().map(|(_, a)| a.clone()).collect();
    let created = Command::new(lego).args(["vnode", "create", "reclaim-bench", "--global-mgr", &global]).output()?;
    if !created.status.success() {
        bail!("lego vnode create: {}", String::from_utf8_lossy(&created.stderr));
    }
    let mut ms = Vec::new();
    for _ in 0..rounds {
        let mut run = Command::new(lego);
        run.args(["run", "--global-mgr", &global, "--vnode", "reclaim-bench", "--mem", "1G", "--excache", "1M", "--replicas", "2"]);
        for a in &addrs {
            run.args(["--mem-server", a]);
        }
        run.arg("--root").arg(images).arg(images.join("busybox")).args(["sh", "-c", SCRIPT]);
        run.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut vmm = Running(run.spawn().context("starting lego run")?);
        // The script's memory, two copies of it, is on the servers; and its first report (and
        // so its lease's first renewal) has been sent.
        wait(&addrs, Duration::from_secs(120), interrupt, "the script to fill memory", |p| p.iter().filter(|&&n| n >= 256).count() >= 2)?;
        std::thread::sleep(Duration::from_millis(1500));
        let killed = Instant::now();
        let _ = vmm.0.kill();
        let _ = vmm.0.wait();
        wait(&addrs, Duration::from_secs(60), interrupt, "the killed VMM's pages to be released", |p| p.iter().all(|&n| n == 0))?;
        ms.push(killed.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ms)
}
