//! `lego bench slowdown`: whole programs in a vNode with their memory on a mem-server, at ExCache
//! sizes given as a share of the program's working set, beside the same program run natively in
//! the same invocation (the 1.0 reference and the limit).
//!
//! Each lego configuration runs at every `--prefetch` window (0: prefetch off), so the effect of
//! prefetch is measured in the same invocation; `scan` is the sequential workload it is for.
//!
//! The working set is the program's data (checksum and scan: their buffer; sort: the array and
//! qsort's temporary copy of it); the native run's peak resident set is printed beside it, since text,
//! stack and libc add to it. Every lego run must print exactly what the native run printed, or
//! the benchmark fails. Times are wall-clock times of the
//! whole `lego run` process (VMM and embedded mem-server start-up included), medians over
//! `--runs` runs.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use crate::measure::{Interrupt, measure, median, stat};

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
    /// MiB the sequential `scan` works on (4 front-to-back passes, two of them
    /// read-modify-write).
    #[arg(long, default_value_t = 8)]
    scan_mib: u64,
    /// Prefetch windows (lines) every lego configuration runs at; 0 is prefetch off.
    #[arg(long, value_delimiter = ',', default_value = "32,0")]
    prefetch: Vec<u64>,
}

/// Runs the benchmark.
pub fn run(args: &SlowdownArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let lego = std::env::current_exe().context("finding the lego executable")?;
    // (program, arguments, bytes of data it works on)
    let workloads: [(&str, Vec<String>, u64); 3] = [
        ("checksum", vec![args.checksum_mib.to_string(), "7".into()], args.checksum_mib << 20),
        ("sort", vec![args.sort_n.to_string(), "3".into()], 2 * 8 * args.sort_n),
        ("scan", vec![args.scan_mib.to_string(), "4".into()], args.scan_mib << 20),
    ];
    println!(
        "lego bench slowdown: median of {} runs; ExCache as a share of the program's data; embedded mem-server on loopback",
        args.runs
    );
    println!(
        "  {:<24} {:>16} {:>10} {:>11} {:>10} {:>9} {:>12} {:>10}",
        "workload", "config", "ExCache", "time", "slowdown", "misses", "first writes", "prefetched"
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
            native.push(measure(c, None, &Interrupt::default())?);
        }
        let want = native[0].stdout.clone();
        let rss = native.iter().map(|s| s.max_rss).max().unwrap_or(0);
        let reference = median(native.iter().map(|s| s.elapsed).collect());
        println!(
            "  {label:<24} {:>16} {:>10} {:>9.3} s {:>9.2}x {:>9} {:>12} {:>10}   data {} KiB, peak RSS {} KiB",
            "native",
            "-",
            reference.as_secs_f64(),
            1.0,
            "-",
            "-",
            "-",
            data / 1024,
            rss / 1024
        );
        let configs = args.percents.iter().flat_map(|&p| args.prefetch.iter().map(move |&w| (p, w)));
        for (percent, prefetch) in configs {
            let excache = (data * percent / 100).max(64 << 10) / 4096 * 4096;
            let mut times = Vec::new();
            let mut last = None;
            for _ in 0..args.runs {
                let mut c = Command::new(&lego);
                c.arg("run").arg("--stats").arg("--excache").arg(excache.to_string());
                c.arg("--prefetch").arg(prefetch.to_string()).arg(&prog).args(wargs.iter().map(OsString::from));
                let s = measure(c, None, &Interrupt::default())?;
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
                "  {label:<24} {:>16} {:>10} {:>9.3} s {:>9.2}x {:>9} {:>12} {:>10}",
                format!("lego {percent}% pf {prefetch}"),
                format!("{} KiB", excache / 1024),
                t.as_secs_f64(),
                t.as_secs_f64() / reference.as_secs_f64(),
                show(stat(&stats, "misses (remote fetches)")),
                show(stat(&stats, "first writes (dirtied)")),
                show(stat(&stats, "prefetched lines")),
            );
        }
    }
    println!("  misses and first writes are from the last run: each costs a guest exit to the VMM's");
    println!("  userfaultfd handler (see `lego bench fault` for the per-miss cost and its limit);");
    println!("  pf N: prefetch window of at most N lines (0: off); prefetched lines cost no exit.");
    Ok(())
}
