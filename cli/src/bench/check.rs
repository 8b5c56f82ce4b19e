//! `lego bench check`: the quick benchmarks (syscall, fault, throughput) in under a minute, with
//! one verdict line per named target of the issues: `met` or `NOT met`, the figure, the limit
//! measured in the same run (or the fixed bound an issue names), and their ratio.
//!
//! The system-call figures come from `lego_vmm::bench` in this process; `lego bench fault` and
//! `lego bench throughput` run as child processes of this binary with small sizes, and their
//! printed rows are read back. A row that cannot be found is an error naming it, so a change to
//! those tables cannot turn into a silently skipped target.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use crate::memory::MemoryArgs;

/// Issue 2 (floor refined by issue 17): a forwarded call costs at most this times the
/// do-nothing `syscall` round trip measured in the same run.
pub const FORWARDED_CALL_MAX: f64 = 1.3;
/// Issue 17: `clock_gettime` in the guest (vDSO) at most this times native.
pub const CLOCK_GETTIME_MAX: f64 = 3.0;
/// Issue 15: a miss p50 at most this times its limit, with 1 and with 2 vCPUs.
const MISS_MAX: f64 = 1.2;
/// Issue 15: a first write at most this times a miss.
const FIRST_WRITE_MAX: f64 = 0.3;
/// Issue 15: eviction work per line, batched, at most this many microseconds.
const EVICTION_MAX_US: f64 = 1.0;
/// Issue 3: a mem-server on one core serves at least this many 4 KB fetches per second.
const THROUGHPUT_MIN: f64 = 150_000.0;

/// Options of `lego bench check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Directory holding the guest programs (`make guest-images` builds them).
    #[arg(long, default_value = "guest-images/out")]
    images: PathBuf,
    #[command(flatten)]
    memory: MemoryArgs,
}

/// Which way a target bounds its ratio.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// figure / limit must be at most this.
    AtMost(f64),
    /// figure / limit must be at least this.
    AtLeast(f64),
}

/// One named target and what this run measured for it.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The issue that names the target.
    pub issue: u32,
    /// What is measured.
    pub what: &'static str,
    /// The figure.
    pub figure: f64,
    /// The limit it is compared with (measured in the same run, or the issue's fixed bound).
    pub limit: f64,
    /// What the limit is.
    pub limit_name: &'static str,
    /// Unit of figure and limit.
    pub unit: &'static str,
    /// The target on figure / limit.
    pub bound: Bound,
    /// Printed after the verdict (another figure of the same run, for reference).
    pub note: String,
}

impl Verdict {
    /// figure / limit.
    pub fn ratio(&self) -> f64 {
        self.figure / self.limit
    }

    /// Whether the target is met (a ratio that is not a number never is).
    pub fn met(&self) -> bool {
        match self.bound {
            Bound::AtMost(max) => self.ratio() <= max,
            Bound::AtLeast(min) => self.ratio() >= min,
        }
    }

    /// The one line printed for this target.
    pub fn line(&self) -> String {
        let (op, bound) = match self.bound {
            Bound::AtMost(b) => ("<=", b),
            Bound::AtLeast(b) => (">=", b),
        };
        let line = format!(
            "{:<8} #{:<3} {:<40} {:>8} {u} vs {:>8} {u} {:<29} {:>5.2}x (target {op} {bound:.2}x)",
            if self.met() { "met" } else { "NOT met" },
            self.issue,
            self.what,
            figure(self.figure),
            figure(self.limit),
            self.limit_name,
            self.ratio(),
            u = self.unit,
        );
        match self.note.is_empty() {
            true => line,
            false => format!("{line}  {}", self.note),
        }
    }
}

/// A figure with as many decimals as its size needs.
fn figure(v: f64) -> String {
    match v.abs() {
        a if a >= 1000.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// The verdict lines and the summary; the number of targets not met.
pub fn report(verdicts: &[Verdict]) -> (String, usize) {
    let mut out = String::new();
    for v in verdicts {
        out.push_str(&v.line());
        out.push('\n');
    }
    let failed = verdicts.iter().filter(|v| !v.met()).count();
    out.push_str(&format!(
        "{} of {} targets met\n",
        verdicts.len() - failed,
        verdicts.len()
    ));
    (out, failed)
}

/// Runs the quick benchmarks and returns one verdict per target. The fault benchmark keeps its
/// default ExCache (2048 lines: the eviction batch is at its full 64 lines, as the issue's
/// per-line figure assumes) with 4 times as many pages, in one round: ~25 s here.
pub fn run(a: &CheckArgs) -> anyhow::Result<Vec<Verdict>> {
    let started = std::time::Instant::now();
    let mut verdicts = syscall(&a.memory)?;
    let mut fault = vec![
        "bench", "fault", "--pages", "8192", "--lines", "2048", "--rounds", "1", "--images",
    ];
    let images = a.images.to_string_lossy();
    fault.push(&images);
    let servers = a.memory.mem_server.join(",");
    if !servers.is_empty() {
        fault.extend(["--mem-server", &servers]);
    }
    // The children use the page-path transport this run was asked for.
    let transport = a.memory.transport.transport.to_string();
    fault.extend(["--transport", &transport]);
    verdicts.extend(fault_verdicts(&lego(&fault)?)?);
    let throughput = [
        "bench",
        "throughput",
        "--seconds",
        "1",
        "--transport",
        &transport,
    ];
    verdicts.extend(throughput_verdicts(&lego(&throughput)?)?);
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "bench check measured"
    );
    Ok(verdicts)
}

/// The system-call targets, measured in this process.
fn syscall(memory: &MemoryArgs) -> anyhow::Result<Vec<Verdict>> {
    let (memory, _embedded) = memory.config(1 << 30, None)?;
    let f = lego_vmm::bench::syscall(5000, 3, &memory).context("syscall benchmark")?;
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    let ns = |d: std::time::Duration| d.as_secs_f64() * 1e9;
    Ok(vec![
        Verdict {
            issue: 2,
            what: "forwarded getpid",
            figure: us(f.forwarded_getpid),
            limit: us(f.syscall_round_trip),
            limit_name: "(do-nothing syscall)",
            unit: "us",
            bound: Bound::AtMost(FORWARDED_CALL_MAX),
            note: String::new(),
        },
        Verdict {
            issue: 17,
            what: "clock_gettime in the guest (vDSO)",
            figure: ns(f.vdso_clock_gettime),
            limit: ns(f.native_clock_gettime),
            limit_name: "(native)",
            unit: "ns",
            bound: Bound::AtMost(CLOCK_GETTIME_MAX),
            note: String::new(),
        },
    ])
}

/// Runs this binary with `args` and returns its standard output.
fn lego(args: &[&str]) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding the lego binary")?;
    let out = Command::new(exe)
        .args(args)
        .output()
        .with_context(|| format!("running lego {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "lego {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The numbers of the row that starts with `label` (after indentation) and that are followed
/// by `unit`, in order.
fn row(table: &str, label: &str, unit: &str) -> anyhow::Result<Vec<f64>> {
    let line = table
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .with_context(|| format!("the benchmark printed no row `{label}`:\n{table}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let numbers: Vec<f64> = words
        .windows(2)
        .filter(|w| w[1] == unit)
        .filter_map(|w| w[0].parse().ok())
        .collect();
    if numbers.is_empty() {
        bail!("row `{label}` has no figure in {unit}: {line}");
    }
    Ok(numbers)
}

/// The first and second figures of a row, as 1 vCPU and 2 vCPUs.
fn pair(table: &str, label: &str) -> anyhow::Result<(f64, f64)> {
    match row(table, label, "us")?[..] {
        [one, two, ..] => Ok((one, two)),
        _ => bail!("row `{label}` has no figure for 2 vCPUs"),
    }
}

/// The targets of issue 15, read from `lego bench fault`'s table.
fn fault_verdicts(table: &str) -> anyhow::Result<Vec<Verdict>> {
    let (limit1, limit2) = pair(table, "= limit of a miss")?;
    // "clean victims, p99" starts with the same words: the p50 row has a figure right after.
    let (clean1, clean2) = pair(table, "clean victims  ")?;
    let (dirty1, dirty2) = pair(table, "dirty victims (written back, pipelined per owner)")?;
    let first_write = row(table, "first write to a resident clean line", "us")?[0];
    let eviction = row(table, "eviction work per line, batched", "us")?[0];
    let miss = |what, figure, limit| Verdict {
        issue: 15,
        what,
        figure,
        limit,
        limit_name: "(do-nothing miss + raw RTT)",
        unit: "us",
        bound: Bound::AtMost(MISS_MAX),
        note: String::new(),
    };
    Ok(vec![
        miss("miss p50, clean victims, 1 vCPU", clean1, limit1),
        miss("miss p50, clean victims, 2 vCPUs", clean2, limit2),
        miss("miss p50, dirty victims, 1 vCPU", dirty1, limit1),
        miss("miss p50, dirty victims, 2 vCPUs", dirty2, limit2),
        Verdict {
            issue: 15,
            what: "first write to a clean line (no exit)",
            figure: first_write,
            limit: clean1,
            limit_name: "(miss p50, 1 vCPU)",
            unit: "us",
            bound: Bound::AtMost(FIRST_WRITE_MAX),
            note: String::new(),
        },
        Verdict {
            issue: 15,
            what: "eviction work per line, batched",
            figure: eviction,
            limit: EVICTION_MAX_US,
            limit_name: "(the issue's bound)",
            unit: "us",
            bound: Bound::AtMost(1.0),
            note: String::new(),
        },
    ])
}

/// The target of issue 3, read from `lego bench throughput`'s table. Its bound is a rate; the
/// raw echo measured in the same run is printed beside it for reference.
fn throughput_verdicts(table: &str) -> anyhow::Result<Vec<Verdict>> {
    let served = row(table, "mem-server (tokio, page store)", "requests/s")?[0];
    let echo = row(table, "raw socket echo, same sizes = limit", "requests/s")?[0];
    Ok(vec![Verdict {
        issue: 3,
        what: "mem-server 4 KB fetches, one core",
        figure: served,
        limit: THROUGHPUT_MIN,
        limit_name: "(the issue's bound)",
        unit: "/s",
        bound: Bound::AtLeast(1.0),
        note: format!(
            "raw socket echo {echo:.0}/s in this run: {:.2}x",
            served / echo
        ),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lego bench fault`'s table as it printed on 2026-12-05 (README).
    const FAULT: &str = "\
lego bench fault: 16384 pages (64 MiB) through a 2048-line (8 MiB) ExCache, memory on 127.0.0.1:33069; medians of 3 interleaved rounds
  limits, each measured alone                                   1 vCPU     2 vCPUs at once
    bare exit (CPL3 out -> VMM -> resume), for reference         43.7 us
    do-nothing miss (#PF -> VMM zero-fills, no evict)            58.3 us      58.3 us
    raw TCP round trip, fetch sizes, both sides poll as lego     11.1 us
    = limit of a miss                                            69.4 us      69.4 us
  misses, prefetch off, random order (p50)
    clean victims                                              82.4 us      83.1 us   1.19x / 1.20x of limit
    dirty victims (written back, pipelined per owner)          78.8 us      90.2 us   1.14x / 1.30x of limit
    clean victims, p99, 1 vCPU                                 150.2 us
    target: p50 <= 1.2x limit with 1 and 2 vCPUs: NOT met (worst 1.30x)
  first write to a resident clean line (KVM sets D, no exit)      14.4 us   0.18x of a miss (target <= 0.3x: met)
  write to a dirty resident line, for reference                  0.09 us
  eviction work per line, batched (sweep, invalidation, copy)    0.80 us   (target <= 1 us: met)
";

    const THROUGHPUT: &str = "\
lego bench throughput: 4 KB fetches, 2 connection(s) x 32 in flight, 1.0 s each, server pinned to CPU 1
  mem-server (tokio, page store)              120000 requests/s
  raw socket echo, same sizes = limit          916363 requests/s
";

    #[test]
    fn reads_the_fault_table_into_one_verdict_per_target() {
        let v = fault_verdicts(FAULT).unwrap();
        let figures: Vec<(f64, f64)> = v.iter().map(|v| (v.figure, v.limit)).collect();
        assert_eq!(
            figures,
            [
                (82.4, 69.4),
                (83.1, 69.4),
                (78.8, 69.4),
                (90.2, 69.4),
                (14.4, 82.4),
                (0.8, 1.0)
            ]
        );
        let met: Vec<bool> = v.iter().map(Verdict::met).collect();
        assert_eq!(met, [true, true, true, false, true, true]);
    }

    #[test]
    fn a_missing_row_is_an_error_naming_it() {
        let without = FAULT.replace("= limit of a miss", "= something else");
        let e = fault_verdicts(&without).unwrap_err().to_string();
        assert!(e.contains("= limit of a miss"), "{e}");
    }

    #[test]
    fn throughput_below_the_floor_is_not_met_and_counted() {
        let mut v = throughput_verdicts(THROUGHPUT).unwrap();
        assert!(!v[0].met());
        v.extend(fault_verdicts(FAULT).unwrap());
        let (text, failed) = report(&v);
        assert_eq!(failed, 2);
        assert_eq!(text.lines().filter(|l| l.starts_with("NOT met")).count(), 2);
        assert!(text.ends_with("5 of 7 targets met\n"), "{text}");
        let line = v[0].line();
        assert!(line.starts_with("NOT met  #3 "), "{line}");
        assert!(
            line.contains("120000 /s vs   150000 /s") && line.contains("0.80x (target >= 1.00x)"),
            "{line}"
        );
        assert!(
            line.ends_with("raw socket echo 916363/s in this run: 0.13x"),
            "{line}"
        );
    }

    #[test]
    fn a_ratio_that_is_not_a_number_is_not_met() {
        let v = Verdict {
            issue: 2,
            what: "x",
            figure: 0.0,
            limit: 0.0,
            limit_name: "",
            unit: "us",
            bound: Bound::AtMost(1.3),
            note: String::new(),
        };
        assert!(!v.met());
    }
}
