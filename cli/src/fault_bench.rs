//! `lego bench fault`: what each ExCache event costs the guest, beside its limit measured in the
//! same run, rounds interleaved.
//!
//! The guest program `faultlat` (guest-images) times single accesses with `rdtsc` inside the
//! vNode, on 1 and on 2 vCPUs faulting at once; each configuration is a `lego run` of its own
//! with an embedded mem-server on loopback (or the `--mem-server`s given). Rows:
//! - the limit of a miss: a *do-nothing miss* (the same #PF path into a VMM that only zero-fills
//!   a line, with room in the cache: no network, no eviction; in the same random order as the
//!   misses) plus one raw TCP round trip of a
//!   fetch's sizes, each measured alone; the bare exit is shown for reference;
//! - misses with prefetch off, random order, with clean and with dirty victims;
//! - the first write to a resident clean line, which KVM takes through the D bit;
//! - the eviction work per line, batched (from the VMM's `--stats`);
//! - prefetch, on a sequential scan, as a mean per page with prefetch off and on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::memory::MemoryArgs;

/// Options of `lego bench fault`.
#[derive(clap::Args)]
pub struct FaultArgs {
    /// Pages in the working set.
    #[arg(long, default_value_t = 16384)]
    pages: u64,
    /// ExCache lines for the miss runs (the working set should be several times larger).
    #[arg(long, default_value_t = 2048)]
    lines: u64,
    /// Seed of the random orders.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rounds, interleaved; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory holding the guest programs (`make guest-images` builds them).
    #[arg(long, default_value = "guest-images/out")]
    images: PathBuf,
    #[command(flatten)]
    memory: MemoryArgs,
}

/// One timed phase of a `faultlat` run, in microseconds.
#[derive(Clone, Copy, Default)]
struct Phase {
    p50: f64,
    p99: f64,
    mean: f64,
}

/// What one `lego run` of `faultlat` reported.
struct Run {
    phases: Vec<(String, Phase)>,
    stderr: String,
}

impl Run {
    fn phase(&self, name: &str) -> anyhow::Result<Phase> {
        self.phases.iter().find(|(n, _)| n == name).map(|p| p.1).with_context(|| format!("faultlat printed no {name} phase"))
    }

    /// A `--stats` counter.
    fn stat(&self, label: &str) -> f64 {
        self.stderr
            .lines()
            .find_map(|l| l.trim_start_matches("lego:").trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// Runs `faultlat MODE pages threads lines seed` in a vNode with an ExCache of `lines` lines.
fn faultlat(prog: &Path, a: &FaultArgs, mode: &str, threads: u32, lines: u64, prefetch: u64, tsc: f64) -> anyhow::Result<Run> {
    let exe = std::env::current_exe().context("finding the lego binary")?;
    let mut c = Command::new(exe);
    c.args(["run", "--stats", "--mem", "4G", "--excache"]).arg((lines * 4096).to_string());
    c.args(["--prefetch", &prefetch.to_string()]);
    if !a.memory.mem_server.is_empty() {
        c.arg("--mem-server").arg(a.memory.mem_server.join(","));
    }
    c.args(["--transport", &a.memory.transport.transport.to_string()]);
    c.arg(prog).args([mode, &a.pages.to_string(), &threads.to_string(), &a.lines.to_string(), &a.seed.to_string()]);
    let out = c.output().context("running faultlat")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("faultlat {mode} ({threads} vCPUs) failed: {}\n{stderr}", out.status);
    }
    let us = |ticks: &str| ticks.parse::<f64>().map(|t| t / tsc / 1e3);
    let mut phases = Vec::new();
    for line in stdout.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if let ["faultlat", name, "n", _, "p50", p50, "p99", p99, "mean", mean] = w[..] {
            phases.push((name.to_string(), Phase { p50: us(p50)?, p99: us(p99)?, mean: us(mean)? }));
        }
    }
    Ok(Run { phases, stderr })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the benchmark and prints its table.
pub fn run(a: &FaultArgs) -> anyhow::Result<()> {
    let prog = a.images.join("faultlat");
    if !prog.exists() {
        bail!("{} is missing: run `make guest-images` first", prog.display());
    }
    if a.pages < 4 * a.lines || a.lines < 64 {
        bail!("--pages ({}) must be at least 4 times --lines ({}), and --lines at least 64", a.pages, a.lines);
    }
    let tsc = lego_vmm::bench::tsc_per_ns();
    let (memory, _embedded) = a.memory.config(1 << 30, None)?;
    // Room for every page: the do-nothing miss never evicts.
    let roomy = a.pages + 1024;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut rows: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut push = |k: &'static str, v: f64| rows.entry(k).or_default().push(v);
    for _ in 0..a.rounds {
        push("exit", us(lego_vmm::bench::bare_exit(20_000, &memory).context("bare exit")?));
        let rtt = lego_vmm::bench::raw_round_trips("127.0.0.1", 5000, lego_proto::transport::DEFAULT_POLL).context("raw TCP round trips")?;
        push("rtt", us(lego_vmm::bench::Percentiles::of(rtt).p50));
        for threads in [1, 2] {
            let (local, miss) = if threads == 1 { ("local1", "clean1") } else { ("local2", "clean2") };
            let l = faultlat(&prog, a, "local", threads, roomy, 0, tsc)?;
            push(local, l.phase("local")?.p50);
            if threads == 1 {
                push("first_write", l.phase("first_write")?.p50);
                push("dirty_hit", l.phase("dirty_hit")?.p50);
            }
            let r = faultlat(&prog, a, "remote", threads, a.lines, 0, tsc)?;
            push(miss, r.phase("miss_clean")?.p50);
            if threads == 1 {
                push("clean1_p99", r.phase("miss_clean")?.p99);
                push("dirty1", r.phase("miss_dirty")?.p50);
                push("evict", r.stat("eviction work per line"));
            } else {
                push("dirty2", r.phase("miss_dirty")?.p50);
            }
        }
        for (key, prefetch) in [("seq0", 0), ("seq32", 32)] {
            push(key, faultlat(&prog, a, "seq", 1, a.lines, prefetch, tsc)?.phase("seq")?.mean);
        }
    }
    let m: std::collections::BTreeMap<&str, f64> = rows.into_iter().map(|(k, v)| (k, median(v))).collect();
    let limit1 = m["local1"] + m["rtt"];
    let limit2 = m["local2"] + m["rtt"];
    println!(
        "lego bench fault: {} pages ({} MiB) through a {}-line ({} MiB) ExCache, memory on {}; medians of {} interleaved rounds",
        a.pages,
        a.pages / 256,
        a.lines,
        a.lines / 256,
        memory.servers.join(","),
        a.rounds
    );
    println!("  limits, each measured alone                                   1 vCPU     2 vCPUs at once");
    println!("    bare exit (CPL3 out -> VMM -> resume), for reference     {:>8.1} us", m["exit"]);
    println!("    do-nothing miss (#PF -> VMM zero-fills, no evict)        {:>8.1} us  {:>8.1} us", m["local1"], m["local2"]);
    println!("    raw TCP round trip, fetch sizes, both sides poll as lego {:>8.1} us", m["rtt"]);
    println!("    = limit of a miss                                        {limit1:>8.1} us  {limit2:>8.1} us");
    println!("  misses, prefetch off, random order (p50)");
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let miss_row = |name: &str, one: f64, two: f64| {
        println!(
            "    {name:<54} {one:>8.1} us  {two:>8.1} us   {:.2}x / {:.2}x of limit",
            one / limit1,
            two / limit2
        );
    };
    miss_row("clean victims", m["clean1"], m["clean2"]);
    miss_row("dirty victims (written back, pipelined per owner)", m["dirty1"], m["dirty2"]);
    println!("    clean victims, p99, 1 vCPU                              {:>8.1} us", m["clean1_p99"]);
    let worst = (m["clean1"] / limit1).max(m["clean2"] / limit2).max(m["dirty1"] / limit1).max(m["dirty2"] / limit2);
    println!("    target: p50 <= 1.2x limit with 1 and 2 vCPUs: {} (worst {worst:.2}x)", verdict(worst <= 1.2));
    let fw = m["first_write"] / m["clean1"];
    println!("  first write to a resident clean line (KVM sets D, no exit)  {:>8.1} us   {fw:.2}x of a miss (target <= 0.3x: {})", m["first_write"], verdict(fw <= 0.3));
    println!("  write to a dirty resident line, for reference              {:>8.2} us", m["dirty_hit"]);
    println!(
        "  eviction work per line, batched (sweep, invalidation, copy) {:>7.2} us   (target <= 1 us: {})",
        m["evict"],
        verdict(m["evict"] <= 1.0)
    );
    println!("  sequential read of remote pages, mean per page: prefetch off {:.1} us, prefetch 32 lines {:.1} us ({:.1}x less)", m["seq0"], m["seq32"], m["seq0"] / m["seq32"].max(1e-9));
    Ok(())
}
