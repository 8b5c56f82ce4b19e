//! `lego bench replication`: what memory replication (LegoOS §4.7, `--replicas 2`) costs and
//! how fast it fails over, in the same invocation.
//!
//! Three mem-servers run on loopback as separate processes: the home (the most memory, so the
//! VMM picks it), the primary and the secondary of every vRegion, in front of a storage server,
//! where the secondary's backup log goes. Each application runs at 25%
//! of its working set (what its 100% run left resident) with `--replicas 1` and with
//! `--replicas 2`, interleaved; the overhead is the second's median time over the first's,
//! printed beside LegoOS's 2-23% and the 25% target. Then the primary is killed (`kill -9`) in
//! the middle of `--kills` runs, each on fresh servers; the fail-over time each run reports with
//! `--stats` (from the start of the request that found the primary gone to its end, served by
//! the secondary) gives the p50, beside two heartbeats, and the rebuild each run reports gives
//! the p50 time to two copies again. Last, the VMM of a running process is
//! killed `--reclaims` times, with a global manager: the time until its memory is released on
//! every mem-server gives the p50, beside three heartbeats (`crate::reclaim_bench`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::measure::{measure, median, Interrupt};
use crate::net_bench::{start, Running};

/// Options of `lego bench replication`.
#[derive(clap::Args)]
pub struct ReplicationBenchArgs {
    /// Directory holding the guest programs and words.txt (`make guest-images` builds them).
    #[arg(long, default_value = "guest-images/out")]
    images: PathBuf,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Applications (of sort, wordcount, checksum).
    #[arg(long, value_delimiter = ',', default_value = "sort,wordcount,checksum")]
    workloads: Vec<String>,
    /// Runs whose primary is killed, for the fail-over time.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Runs whose VMM is killed, for the time until the global manager has its memory released.
    #[arg(long, default_value_t = 5)]
    reclaims: usize,
    /// The cluster's heartbeat period, the unit of the fail-over and reclamation targets.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
}

/// An application and its arguments.
fn workload(name: &str) -> anyhow::Result<&'static [&'static str]> {
    Ok(match name {
        "sort" => &["1048576", "3"],
        "wordcount" => &["words.txt", "4"],
        "checksum" => &["1"],
        other => bail!("unknown workload {other} (sort, wordcount, checksum)"),
    })
}

/// A lego server started by `c`, and its address.
fn server(c: Command) -> anyhow::Result<(Running, String)> {
    let (child, line) = start(c, " listening on ")?;
    Ok((child, line.rsplit(' ').next().unwrap_or_default().to_string()))
}

/// The home, the primary and the secondary, in front of the storage server at `storage`:
/// started in that order, each with less memory.
fn servers(lego: &Path, storage: &str) -> anyhow::Result<Vec<(Running, String)>> {
    ["1G", "768M", "512M"]
        .iter()
        .map(|capacity| {
            let mut c = Command::new(lego);
            c.args(["mem-server", "--listen", "127.0.0.1:0", "--capacity", capacity, "--storage-server", storage]);
            server(c)
        })
        .collect()
}

/// `lego run` of `prog args` in `images` on `servers`.
fn lego_run(lego: &Path, images: &Path, servers: &[(Running, String)], replicas: u8, excache: u64, prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(lego);
    c.args(["run", "--mem", "1G", "--stats", "--replicas", &replicas.to_string(), "--excache", &excache.to_string()]);
    for (_, addr) in servers {
        c.args(["--mem-server", addr]);
    }
    c.arg("--root").arg(images).arg(images.join(prog)).args(args).current_dir(images);
    c
}

/// Lines resident at exit, from `--stats`.
fn resident(stats: &str) -> Option<u64> {
    let line = stats.lines().find(|l| l.contains("resident at exit"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    words.get(words.iter().position(|w| *w == "resident")?.checked_sub(1)?)?.parse().ok()
}

/// The longest time of the `--stats` line `name` ("longest X ms"), in milliseconds.
fn longest_ms(stats: &str, name: &str) -> Option<f64> {
    let line = stats.lines().find(|l| l.contains(name))?;
    line.split("longest ").nth(1)?.split_whitespace().next()?.parse().ok()
}

/// p50 and max of `ms`, which must not be empty.
fn p50_max(ms: &mut [f64]) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() - 1])
}

/// Runs the benchmark.
pub fn run(args: &ReplicationBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.workloads.is_empty() {
        bail!("--runs and --workloads must not be empty");
    }
    let lego = std::env::current_exe().context("finding the lego executable")?;
    let images = args.images.canonicalize().with_context(|| format!("{}: run `make guest-images` first", args.images.display()))?;
    let interrupt = Interrupt::on_ctrl_c()?;
    let dir = tempfile::tempdir().context("a directory for the storage server")?;
    let mut c = Command::new(&lego);
    c.args(["storage-server", "--listen", "127.0.0.1:0", "--dir"]).arg(dir.path());
    let (_storage, storage) = server(c)?;
    println!(
        "lego bench replication: 3 mem-servers on loopback (home, primary, secondary; the secondary's backup log on a storage server), 25% ExCache, median of {} runs, {} cores",
        args.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  {:<10} {:>9} {:>12} {:>12} {:>9}", "app", "ExCache", "replicas 1", "replicas 2", "overhead");
    let mut worst = f64::NEG_INFINITY;
    for name in &args.workloads {
        let wargs = workload(name)?;
        let want = Command::new(images.join(name)).args(wargs).current_dir(&images).output()?.stdout;
        let servers = servers(&lego, &storage)?;
        let full = measure(lego_run(&lego, &images, &servers, 1, 256 << 20, name, wargs), None, &interrupt)?;
        let lines = resident(&full.stats).context("no resident lines in --stats")?;
        let excache = (lines / 4).max(16) * 4096;
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..args.runs {
            for (i, replicas) in [1u8, 2].into_iter().enumerate() {
                let s = measure(lego_run(&lego, &images, &servers, replicas, excache, name, wargs), None, &interrupt)?;
                if s.stdout != want {
                    bail!("{name} with --replicas {replicas} printed something else than natively");
                }
                times[i].push(s.elapsed);
            }
        }
        let [one, two] = times.map(median);
        let overhead = (two.as_secs_f64() / one.as_secs_f64() - 1.0) * 100.0;
        worst = worst.max(overhead);
        println!(
            "  {name:<10} {:>8}K {:>10.2} s {:>10.2} s {:>8.1}%",
            excache / 1024,
            one.as_secs_f64(),
            two.as_secs_f64(),
            overhead
        );
    }
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("  worst overhead {worst:.1}%   LegoOS: 2-23%   (target <= 25%: {})", met(worst <= 25.0));

    if args.kills > 0 {
        let (name, wargs) = ("sort", workload("sort")?);
        let want = Command::new(images.join(name)).args(wargs).current_dir(&images).output()?.stdout;
        let (mut ms, mut rebuild_ms) = (Vec::new(), Vec::new());
        for _ in 0..args.kills {
            interrupt.check()?;
            let mut servers = servers(&lego, &storage)?;
            let cmd = lego_run(&lego, &images, &servers, 2, 1 << 20, name, wargs);
            let interrupt = &interrupt;
            let out = std::thread::scope(|s| {
                let run = s.spawn(move || measure(cmd, None, interrupt));
                std::thread::sleep(Duration::from_millis(500));
                let (mut primary, _) = servers.remove(1);
                let _ = primary.0.kill();
                let _ = primary.0.wait();
                run.join().map_err(|_| anyhow::anyhow!("the measuring thread panicked"))?
            })?;
            if out.stdout != want {
                bail!("{name} printed something else than natively after its primary was killed");
            }
            ms.push(longest_ms(&out.stats, "fail-overs").context("the run reported no fail-over: it ended before the kill?")?);
            rebuild_ms.extend(longest_ms(&out.stats, "copies rebuilt"));
        }
        let (p50, max) = p50_max(&mut ms);
        let limit = 2.0 * args.heartbeat_ms as f64;
        println!(
            "  fail-over after kill -9 of the primary ({name}, {} kills): p50 {p50:.1} ms, max {max:.1} ms   2 heartbeats: {limit:.0} ms   ({:.3}x, target < 1: {})",
            ms.len(),
            p50 / limit,
            met(p50 < limit)
        );
        if rebuild_ms.is_empty() {
            println!("  no run rebuilt its lost copy before it ended");
        } else {
            let (n, (p50, max)) = (rebuild_ms.len(), p50_max(&mut rebuild_ms));
            println!("  two copies again (rebuild on the home's server, ExCache held): p50 {p50:.1} ms, max {max:.1} ms in {n} of the runs");
        }
    }
    if args.reclaims > 0 {
        crate::reclaim_bench::run(&lego, &images, args.reclaims, args.heartbeat_ms, &interrupt)?;
    }
    Ok(())
}
