//! The reports of a run's processes to the global manager, for `lego ps` and `lego top`: as
//! soon as the first process runs, then every [`PROCESS_REPORT_INTERVAL`], for each process of
//! the run (the first and every one it forked),
//! its ExCache figures, with the miss rate and the miss latency percentiles of that interval,
//! and a last report when it ends. A manager that cannot be reached costs the processes nothing
//! but a warning: reports are best effort.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lego_proto::background::Background;
use lego_proto::codec::{decode, encode};
use lego_proto::frame::PAGE_SIZE;
use lego_proto::global::{
    listed_vregions, CopyCounts, GlobalReply, GlobalRequest, ProcessFigures, ProcessIdentity, ProcessReport, PROCESS_REPORT_INTERVAL,
};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::transport::{TcpTransport, Transport};
use lego_vmm::memory::excache::{CacheStats, StatsProbe};
use lego_vmm::proctable::ProcTable;

/// How often the reporter looks for the run's first process, to report it at once.
const FIRST_REPORT: Duration = Duration::from_millis(50);

/// What the reporter remembers of one process: who it is, how to read its figures, and the
/// figures of its last report.
struct Known {
    who: ProcessIdentity,
    /// Its exec count when `who` was read.
    execs: u32,
    probe: StatsProbe,
    last: (Instant, CacheStats),
}

/// Starts reporting the processes of the run whose table is `procs` to the global manager at
/// `global`. `who` names the run (its `pid`, `vpid`, program and start time are each
/// process's own). Dropping the handle sends the last report and stops.
pub fn start(global: String, cluster: u64, who: ProcessIdentity, procs: Arc<ProcTable>) -> std::io::Result<Background> {
    let who = ProcessIdentity { pid: std::process::id(), ..who };
    Background::spawn("process report", move |stop| {
        let hello = Hello::new(ComponentKind::Client, cluster);
        let mut conn: Option<TcpTransport> = None;
        let mut known: BTreeMap<i32, Known> = BTreeMap::new();
        let mut warned = false;
        loop {
            // Until the run's first process is known, every FIRST_REPORT: its first report
            // settles its placement at the manager, which counts it as placed (one more thread)
            // until then, and a run shorter than a report interval would never report at all.
            let exited = stop.wait(if known.is_empty() { FIRST_REPORT } else { PROCESS_REPORT_INTERVAL });
            let running = if exited { Vec::new() } else { procs.running_pids(0) };
            for pid in &running {
                // A process is read when first seen, and again after each execve (the command
                // line is the current one, as `ps` shows it: a child seen between its fork and
                // its execve showed its parent's until then). The view waits for the process's
                // lock, so it is not taken every round.
                let execs = procs.execs(*pid).unwrap_or(0);
                if known.get(pid).is_some_and(|k| k.execs == execs) {
                    continue;
                }
                let Some(v) = procs.view(*pid) else { continue };
                let program = v.image.argv.iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>().join(" ");
                let program = shortened(if program.is_empty() { who.program.clone() } else { program });
                if let Some(k) = known.get_mut(pid) {
                    (k.who.program, k.execs) = (program, execs);
                } else {
                    let (mem_proc, home, mem_servers) = v.memory.clone();
                    let started_unix_ms = v.started_unix_ms();
                    let who = ProcessIdentity { vpid: *pid, program, started_unix_ms, mem_proc, home, mem_servers, ..who.clone() };
                    known.insert(*pid, Known { who, execs, probe: v.probe, last: (Instant::now(), CacheStats::default()) });
                }
            }
            let mut reports = Vec::new();
            for (pid, k) in known.iter_mut() {
                // The copies first: they are read without waiting for a rebuild, which the
                // figures wait for.
                let vregions = k.probe.vregions();
                let copies = CopyCounts::of(&vregions);
                let now = (Instant::now(), k.probe.stats());
                let ended = !running.contains(pid);
                let cache = ProcessFigures { vregions: listed_vregions(vregions), copies, ..figures(&k.last, &now) };
                reports.push(ProcessReport { who: k.who.clone(), cache, exited: ended });
                k.last = now;
            }
            known.retain(|pid, _| running.contains(pid));
            for report in reports {
                let sent = (|| {
                    let c = match &mut conn {
                        Some(c) => c,
                        None => conn.insert(TcpTransport::connect(&global, hello, Duration::from_secs(2))?),
                    };
                    decode::<GlobalReply>(&c.call(0, &encode(&GlobalRequest::Process(Box::new(report))))?)
                })();
                if let Err(e) = sent {
                    conn = None;
                    if !warned {
                        tracing::warn!(%global, "cannot report the processes to the global manager: {e}");
                        warned = true;
                    }
                }
            }
            if exited {
                return;
            }
        }
    })
}

/// The figures at `now`: totals, and the rates and miss percentiles of the interval since `last`
/// (no vRegions: they are not statistics).
fn figures(last: &(Instant, CacheStats), now: &(Instant, CacheStats)) -> ProcessFigures {
    let (s, prev) = (&now.1, &last.1);
    let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
    let mut interval: Histogram<u64> = s.miss_ns.clone();
    // Both come from the same histogram, which only grows: the subtraction cannot fail, and if
    // it did the interval would just count the whole run.
    let _ = interval.subtract(&prev.miss_ns);
    let us = |q: f64| (!interval.is_empty()).then(|| interval.value_at_quantile(q) as f64 / 1000.0);
    ProcessFigures {
        excache_bytes: s.lines * PAGE_SIZE as u64,
        resident_bytes: s.resident * PAGE_SIZE as u64,
        misses: s.misses,
        evictions: s.evictions,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        misses_per_s: s.misses.saturating_sub(prev.misses) as f64 / secs,
        evictions_per_s: s.evictions.saturating_sub(prev.evictions) as f64 / secs,
        miss_p50_us: us(0.5),
        miss_p99_us: us(0.99),
        replicated_bytes: s.replicated * PAGE_SIZE as u64,
        ..ProcessFigures::default()
    }
}

/// Most bytes of a command line a report carries: `lego ps` shows a line, and a program may
/// have 2 MB of arguments, more than a report may hold.
const MAX_PROGRAM_LEN: usize = 4096;

/// `program`, cut to [`MAX_PROGRAM_LEN`] bytes (at a character boundary) with `...` if longer.
fn shortened(mut program: String) -> String {
    if program.len() > MAX_PROGRAM_LEN {
        let mut end = MAX_PROGRAM_LEN;
        while !program.is_char_boundary(end) {
            end -= 1;
        }
        program.truncate(end);
        program.push_str("...");
    }
    program
}

/// This host's name, for the processes of `lego run --local` (`local:HOST`).
pub fn local_pcomp() -> String {
    format!("local:{}", hostname())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "unknown".into(), |h| h.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_percentiles_cover_only_the_interval() {
        let t0 = Instant::now();
        let mut a = CacheStats { misses: 100, evictions: 10, ..CacheStats::default() };
        for _ in 0..100 {
            a.miss_ns.record(1_000_000).unwrap();
        }
        let mut b = a.clone();
        b.misses += 50;
        b.evictions += 20;
        for _ in 0..50 {
            b.miss_ns.record(100_000).unwrap();
        }
        let r = figures(&(t0, a.clone()), &(t0 + Duration::from_secs(2), b.clone()));
        assert_eq!((r.misses, r.misses_per_s, r.evictions_per_s), (150, 25.0, 10.0));
        let p50 = r.miss_p50_us.unwrap();
        assert!((99.0..=101.0).contains(&p50), "the interval's misses took 100 us, the earlier ones 1 ms: {p50}");
        let idle = figures(&(t0, b.clone()), &(t0 + Duration::from_secs(1), b));
        assert_eq!((idle.misses_per_s, idle.miss_p50_us), (0.0, None));
    }

    #[test]
    fn a_long_command_line_is_cut_at_a_character_boundary() {
        assert_eq!(shortened("sort -n".into()), "sort -n");
        let long = format!("x{}", "é".repeat(MAX_PROGRAM_LEN));
        let cut = shortened(long);
        assert!(cut.ends_with("...") && cut.len() <= MAX_PROGRAM_LEN + 3 && cut.len() > MAX_PROGRAM_LEN - 2, "{}", cut.len());
    }
}
