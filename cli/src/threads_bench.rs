//! `lego bench threads`: the map-reduce word count (guest-images `wordcount` over `words.txt`)
//! with 1, 2 and 4 worker threads, natively and in a vNode at 100% and 25% ExCache, all in the
//! same invocation. The native run at the same thread count is the reference (and the limit).
//!
//! The working set of a thread count is what its 100% run left resident in the ExCache (the
//! threads' tables and stacks grow with their number); the 25% run gets a quarter of it. Every
//! lego run must print exactly what the native run printed. Times are wall-clock times of the
//! whole `lego run` process (VMM and embedded mem-server start-up included), medians over
//! `--runs` runs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::measure::{Interrupt, measure, median, stat, Sample};

/// Options of `lego bench threads`.
#[derive(clap::Args)]
pub struct ThreadsBenchArgs {
    /// Directory holding the guest programs and words.txt (`make guest-images` builds them).
    #[arg(long, default_value = "guest-images/out")]
    images: PathBuf,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Worker-thread counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    threads: Vec<u32>,
}

/// Lines resident at exit, from `--stats`.
fn resident(stats: &str) -> Option<u64> {
    let line = stats.lines().find(|l| l.contains("resident at exit"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    words.get(words.iter().position(|w| *w == "resident")?.checked_sub(1)?)?.parse().ok()
}

/// `runs` runs of `make()`, each of which must print `want` (if given).
fn runs(n: usize, want: Option<&[u8]>, what: &str, make: impl Fn() -> Command) -> anyhow::Result<(Duration, Sample)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..n {
        let s = measure(make(), None, &Interrupt::default())?;
        if let Some(want) = want {
            if s.stdout != want {
                bail!("{what} printed {:?}, natively {:?}", String::from_utf8_lossy(&s.stdout), String::from_utf8_lossy(want));
            }
        }
        times.push(s.elapsed);
        last = Some(s);
    }
    Ok((median(times), last.expect("at least one run")))
}

/// Runs the benchmark.
pub fn run(args: &ThreadsBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.threads.is_empty() {
        bail!("--runs and --threads must not be empty");
    }
    let lego = std::env::current_exe().context("finding the lego executable")?;
    let images = args.images.canonicalize().with_context(|| format!("{}: run `make guest-images` first", args.images.display()))?;
    let prog = images.join("wordcount");
    if !prog.exists() || !images.join("words.txt").exists() {
        bail!("{} or words.txt is missing: run `make guest-images` first", prog.display());
    }
    let text = std::fs::metadata(images.join("words.txt"))?.len();
    println!(
        "lego bench threads: wordcount over words.txt ({} KiB), median of {} runs; embedded mem-server on loopback; {} cores",
        text / 1024,
        args.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  {:>7} {:>9} {:>10} {:>9} {:>10} {:>9} {:>9}",
        "threads", "config", "ExCache", "time", "vs native", "misses", "resident"
    );
    for &threads in &args.threads {
        let wargs = ["words.txt".to_string(), threads.to_string()];
        let (reference, native) = runs(args.runs, None, "native", || {
            let mut c = Command::new(&prog);
            c.args(&wargs).current_dir(&images);
            c
        })?;
        println!("  {threads:>7} {:>9} {:>10} {:>7.3} s {:>9.2}x {:>9} {:>9}", "native", "-", reference.as_secs_f64(), 1.0, "-", "-");
        let mut excache: u64 = 256 << 20;
        for percent in [100u64, 25] {
            let what = format!("wordcount with {threads} threads at {percent}% ExCache");
            let (t, last) = runs(args.runs, Some(&native.stdout), &what, || {
                let mut c = Command::new(&lego);
                c.arg("run").arg("--stats").arg("--root").arg(&images).arg("--excache").arg(excache.to_string()).arg(&prog).args(&wargs);
                c
            })?;
            let lines = resident(&last.stats).context("no ExCache statistics")?;
            println!(
                "  {threads:>7} {:>9} {:>10} {:>7.3} s {:>9.2}x {:>9} {:>9}",
                format!("lego {percent}%"),
                format!("{} KiB", excache / 1024),
                t.as_secs_f64(),
                t.as_secs_f64() / reference.as_secs_f64(),
                stat(&last.stats, "misses (remote fetches)").map_or("?".into(), |n| n.to_string()),
                lines,
            );
            excache = (lines / 4).max(64) * 4096;
        }
    }
    println!("  resident: ExCache lines (4 KiB) at exit; the 25% run gets a quarter of the 100% run's.");
    Ok(())
}
