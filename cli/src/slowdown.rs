//! `lego bench slowdown`: whole programs in a vNode with their memory on a mem-server, at ExCache
//! sizes given as a share of the program's working set, beside the same program run natively in
//! the same invocation (the 1.0 reference and the limit).
//!
//! The working set is the program's data (checksum: its buffer; sort: the array and qsort's
//! temporary copy of it); the native run's peak resident set is printed beside it, since text,
//! stack and libc add to it. Every lego run must print exactly what the native run printed, or
//! the benchmark fails. Times are wall-clock times of the
//! whole `lego run` process (VMM and embedded mem-server start-up included), medians over
//! `--runs` runs.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Options of `lego bench slowdown`.
#[derive(clap::Args)]
pub struct SlowdownArgs {
    /// Directory holding the guest programs (`make guest-images` builds them).
    #[arg(long, default_value = "guest-images/out")]
    images: PathBuf,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// ExCache sizes, in percent of the program's data.
    #[arg(long, value_delimiter = ',', default_value = "100,25")]
    percents: Vec<u64>,
    /// MiB the random-access checksum works on (its cost grows with misses, nearly one per access
    /// below 100%).
    #[arg(long, default_value_t = 1)]
    checksum_mib: u64,
    /// Number of 64-bit integers `sort` sorts.
    #[arg(long, default_value_t = 1_000_000)]
    sort_n: u64,
}

/// One run's result.
pub(crate) struct Sample {
    pub elapsed: Duration,
    pub stdout: Vec<u8>,
    /// Peak resident set of a native run, in bytes.
    pub max_rss: u64,
    /// `--stats` lines of a lego run.
    pub stats: String,
}

/// Runs `cmd` to completion, timing it and collecting its peak resident set.
pub(crate) fn measure(mut cmd: Command) -> anyhow::Result<Sample> {
    let what = format!("{cmd:?}");
    let started = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("starting {what}"))?;
    // Drain both pipes before reaping, so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut out, &mut stdout).with_context(|| format!("reading the output of {what}"))?;
    let stderr = err_reader.join().unwrap_or_default();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `child` is our unreaped child; status and usage point to live locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    if pid < 0 {
        bail!("waiting for {what}: {}", std::io::Error::last_os_error());
    }
    let status = std::process::ExitStatus::from_raw(status);
    if !status.success() {
        bail!("{what} failed ({status}): {}", String::from_utf8_lossy(&stderr));
    }
    Ok(Sample { elapsed, stdout, max_rss: usage.ru_maxrss as u64 * 1024, stats: String::from_utf8_lossy(&stderr).into_owned() })
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The last number on the `--stats` line containing `name`, if any.
pub(crate) fn stat(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find(|l| l.contains(name))?.split_whitespace().last()?.parse().ok()
}

/// Runs the benchmark.
pub fn run(args: &SlowdownArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let lego = std::env::current_exe().context("finding the lego executable")?;
    // (program, arguments, bytes of data it works on)
    let workloads: [(&str, Vec<String>, u64); 2] = [
        ("checksum", vec![args.checksum_mib.to_string(), "7".into()], args.checksum_mib << 20),
        ("sort", vec![args.sort_n.to_string(), "3".into()], 2 * 8 * args.sort_n),
    ];
    println!(
        "lego bench slowdown: median of {} runs; ExCache as a share of the program's data; embedded mem-server on loopback",
        args.runs
    );
    println!(
        "  {:<24} {:>8} {:>10} {:>11} {:>10} {:>12} {:>12}",
        "workload", "config", "ExCache", "time", "slowdown", "misses", "first writes"
    );
    for (name, wargs, data) in &workloads {
        let prog = args.images.join(name);
        if !prog.exists() {
            bail!("{} is missing: run `make guest-images` first", prog.display());
        }
        let label = format!("{name} {}", wargs.join(" "));
        let mut native = Vec::new();
        for _ in 0..args.runs {
            let mut c = Command::new(&prog);
            c.args(wargs);
            native.push(measure(c)?);
        }
        let want = native[0].stdout.clone();
        let rss = native.iter().map(|s| s.max_rss).max().unwrap_or(0);
        let reference = median(native.iter().map(|s| s.elapsed).collect());
        println!(
            "  {label:<24} {:>8} {:>10} {:>9.3} s {:>9.2}x {:>12} {:>12}   data {} KiB, peak RSS {} KiB",
            "native",
            "-",
            reference.as_secs_f64(),
            1.0,
            "-",
            "-",
            data / 1024,
            rss / 1024
        );
        for &percent in &args.percents {
            let excache = (data * percent / 100).max(64 << 10) / 4096 * 4096;
            let mut times = Vec::new();
            let mut last = None;
            for _ in 0..args.runs {
                let mut c = Command::new(&lego);
                c.arg("run").arg("--stats").arg("--excache").arg(excache.to_string()).arg(&prog).args(wargs.iter().map(OsString::from));
                let s = measure(c)?;
                if s.stdout != want {
                    bail!(
                        "{label} at {percent}% ExCache printed {:?}, natively {:?}",
                        String::from_utf8_lossy(&s.stdout),
                        String::from_utf8_lossy(&want)
                    );
                }
                times.push(s.elapsed);
                last = Some(s);
            }
            let t = median(times);
            let stats = last.map(|s| s.stats).unwrap_or_default();
            let show = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
            println!(
                "  {label:<24} {:>8} {:>10} {:>9.3} s {:>9.2}x {:>12} {:>12}",
                format!("lego {percent}%"),
                format!("{} KiB", excache / 1024),
                t.as_secs_f64(),
                t.as_secs_f64() / reference.as_secs_f64(),
                show(stat(&stats, "misses (remote fetches)")),
                show(stat(&stats, "first writes (dirtied)")),
            );
        }
    }
    println!("  misses and first writes are from the last run: each costs a guest exit to the VMM's");
    println!("  userfaultfd handler (see `lego bench fault` for the per-miss cost and its limit).");
    Ok(())
}
