//! `lego bench apps`: whole applications on lego beside the alternatives a user would pick
//! instead (LegoOS OSDI'18, Figures 11 and 12). Every workload runs, on the same inputs and
//! thread count, as:
//!
//! - (a) a native process with unlimited memory: the 1.0 reference, and its peak resident set
//!   is the working set the other configurations get a share of;
//! - (b) a native process in a memory cgroup limited to X% of the working set, swapping to a
//!   swap file on the local disk;
//! - (c) the same, swapping to zram;
//! - (d) the same, swapping to an Infiniswap-style remote block device: a loop device over the
//!   FUSE file of `lego remote-swap`, whose blocks live on a `lego mem-server`;
//! - (e) `lego run` with an ExCache of X% of the working set, memory on 1 and on 2 mem-server
//!   processes.
//!
//! Every run's output must be the reference run's. Every system change is undone by a
//! [`system::Guard`] on success, error and Ctrl-C; a configuration that cannot be set up is
//! reported as skipped with the reason.

mod report;
mod system;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::measure::{measure, median, stat, Interrupt, Interrupted, Sample, TimedOut};
use system::Guard;
use workloads::{Workload, WORKLOADS};

/// Options of `lego bench apps`.
#[derive(clap::Args, Clone)]
pub struct AppsArgs {
    /// Directory holding the guest programs (`make guest-images` builds them).
    #[arg(long, default_value = "guest-images/out")]
    images: PathBuf,
    /// Where the results go (a directory per run, named by its start time).
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// A small matrix: local memory 100% and 25%, 1 run, no warm-up, inputs at scale 0.25
    /// (each can still be set explicitly).
    #[arg(long)]
    quick: bool,
    /// Local memory sizes, in percent of each workload's working set [default: 100,50,25].
    #[arg(long, value_delimiter = ',')]
    percents: Option<Vec<u64>>,
    /// Measured runs per configuration; the median is reported [default: 3].
    #[arg(long)]
    runs: Option<usize>,
    /// Unmeasured warm-up runs before them [default: 1].
    #[arg(long)]
    warmup: Option<usize>,
    /// Input sizes relative to the full ones [default: 1].
    #[arg(long)]
    scale: Option<f64>,
    /// Threads each workload runs with (word count, histogram, k-means, matmul, parallel sort)
    /// [default: the host's cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Only these workloads (default: all).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Only these configurations, by letter: a (always run: it is the reference), b, c, d, e.
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e")]
    configs: Vec<String>,
    /// A run slower than this many seconds is stopped and reported as timed out.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Seed of the generated inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The options with `--quick` and the defaults applied.
struct Plan {
    percents: Vec<u64>,
    runs: usize,
    warmup: usize,
    scale: f64,
    threads: usize,
}

impl AppsArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        let q = self.quick;
        let plan = Plan {
            percents: self.percents.clone().unwrap_or_else(|| if q { vec![100, 25] } else { vec![100, 50, 25] }),
            runs: self.runs.unwrap_or(if q { 1 } else { 3 }),
            warmup: self.warmup.unwrap_or(if q { 0 } else { 1 }),
            scale: self.scale.unwrap_or(if q { 0.25 } else { 1.0 }),
            threads: self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        };
        if plan.runs == 0 || plan.percents.iter().any(|&p| p == 0 || p > 100) || plan.scale.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || plan.threads == 0 {
            bail!("--runs and --threads must be at least 1, --percents in 1..=100, --scale positive");
        }
        Ok(plan)
    }
}

/// How a configuration gives the program less memory than it uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Setup {
    /// (b) swap file on the local disk.
    DiskSwap,
    /// (c) zram.
    Zram,
    /// (d) Infiniswap-style remote block device.
    RemoteSwap,
    /// (e) lego with its memory on this many mem-servers.
    Lego(usize),
}

impl Setup {
    const ALL: [Setup; 5] = [Setup::DiskSwap, Setup::Zram, Setup::RemoteSwap, Setup::Lego(1), Setup::Lego(2)];

    fn letter(self) -> &'static str {
        match self {
            Setup::DiskSwap => "b",
            Setup::Zram => "c",
            Setup::RemoteSwap => "d",
            Setup::Lego(_) => "e",
        }
    }

    /// Name in the results.
    pub fn name(self) -> String {
        match self {
            Setup::DiskSwap => "Linux swap to local disk".into(),
            Setup::Zram => "Linux swap to zram".into(),
            Setup::RemoteSwap => "Infiniswap-style remote swap".into(),
            Setup::Lego(1) => "lego, 1 mem-server".into(),
            Setup::Lego(n) => format!("lego, {n} mem-servers"),
        }
    }
}

/// What became of one configuration of one workload.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Measured: the run times.
    Measured { median: Duration, min: Duration, max: Duration },
    /// Not run, and why.
    Skipped(String),
    /// A run exceeded `--timeout`.
    TimedOut(Duration),
    /// The kernel's OOM killer ended a run: the limit is below what Linux cannot swap out
    /// (page tables, kernel stacks, pinned pages). A result of the configuration, not an error.
    OomKilled,
    /// A run failed or printed something other than the reference.
    Failed(String),
}

/// One line of the results.
#[derive(Clone, Debug)]
pub struct Row {
    /// Workload name.
    pub workload: String,
    /// `None` for the reference (a).
    pub setup: Option<Setup>,
    /// Local memory in percent of the working set (100 for the reference).
    pub percent: u64,
    /// Local memory in bytes (the cgroup limit or the ExCache; the working set for the reference).
    pub local: u64,
    /// The result.
    pub outcome: Outcome,
    /// Where the time went (swap traffic, ExCache counters), from the last run.
    pub detail: String,
}

/// The reference run of a workload.
struct Reference {
    stdout: Vec<u8>,
    working_set: u64,
}

/// Everything a configuration run needs to know about a workload.
struct Prepared<'a> {
    w: &'a Workload,
    program: PathBuf,
    dir: PathBuf,
    argv: Vec<String>,
    reference: Option<Reference>,
}

const PAGE: u64 = 4096;

/// Runs the benchmark and writes its results.
pub fn run(args: &AppsArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    // Ctrl-C (and SIGTERM) stop the running program; the guards then restore the system.
    let interrupt = Interrupt::on_ctrl_c()?;
    let lego = std::env::current_exe().context("finding the lego executable")?;
    let stamp = report::timestamp();
    let results = args.out.join(&stamp);
    std::fs::create_dir_all(results.join("logs")).with_context(|| format!("creating {}", results.display()))?;
    let mut outer = Guard::new(&interrupt);
    let work = system::temp_dir(&mut outer, results.join("work"))?;

    let selected: Vec<&Workload> =
        WORKLOADS.iter().filter(|w| args.workloads.is_empty() || args.workloads.iter().any(|n| n == w.name)).collect();
    if selected.is_empty() {
        bail!("no workload matches --workloads {}", args.workloads.join(","));
    }
    for n in &args.workloads {
        if !WORKLOADS.iter().any(|w| w.name == n) {
            bail!("unknown workload {n}");
        }
    }
    let setups: Vec<Setup> = Setup::ALL.into_iter().filter(|s| args.configs.iter().any(|c| c == s.letter())).collect();
    let per_config = (plan.warmup + plan.runs) as u64;
    let total = selected.len() as u64 * per_config * (1 + setups.len() as u64 * plan.percents.len() as u64);
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let ctx = Ctx { args, plan: &plan, pb: &pb, lego: &lego, logs: results.join("logs"), interrupt: interrupt.clone() };

    // (a) for every workload first: it fixes the expected output and the working set.
    let mut rows = Vec::new();
    let mut prepared = Vec::new();
    for w in &selected {
        let (p, row) = ctx.reference(w, &work)?;
        rows.push(row);
        prepared.push(p);
    }
    let max_ws = prepared.iter().filter_map(|p| p.reference.as_ref()).map(|r| r.working_set).max().unwrap_or(0);
    for setup in &setups {
        if interrupt.raised() {
            break;
        }
        rows.extend(ctx.setup_rows(*setup, &prepared, &work, max_ws)?);
    }
    pb.finish_and_clear();
    let teardown = outer.undo_all();
    let interrupted = interrupt.raised();
    let header = report::Header {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: system::machine(),
        date: stamp.clone(),
        threads: plan.threads,
        runs: plan.runs,
        warmup: plan.warmup,
        scale: plan.scale,
        interrupted,
    };
    let files = report::write(&results, &header, &rows)?;
    println!("{}", std::fs::read_to_string(&files.markdown)?);
    println!("results: {}, {}, {}", files.markdown.display(), files.csv.display(), files.plot.display());
    teardown.context("restoring the system")?;
    if interrupted {
        return Err(Interrupted.into());
    }
    let failed: Vec<String> = rows
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Failed(e) => Some(format!("{} {}: {e}", r.workload, r.setup.map_or("native".into(), Setup::name))),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        bail!("{} configuration(s) failed:\n  {}", failed.len(), failed.join("\n  "));
    }
    Ok(())
}

struct Ctx<'a> {
    args: &'a AppsArgs,
    plan: &'a Plan,
    pb: &'a ProgressBar,
    lego: &'a Path,
    logs: PathBuf,
    interrupt: Interrupt,
}

impl Ctx<'_> {
    /// Generates a workload's input and runs the reference (a).
    fn reference<'w>(&self, w: &'w Workload, work: &Path) -> anyhow::Result<(Prepared<'w>, Row)> {
        let n = w.n(self.plan.scale);
        let program = std::fs::canonicalize(self.args.images.join(w.program)).unwrap_or_else(|_| self.args.images.join(w.program));
        let dir = work.join(w.name);
        std::fs::create_dir_all(&dir)?;
        let mut p = Prepared { w, argv: w.argv(n, self.plan.threads), program, dir, reference: None };
        let mut row = Row { workload: w.name.into(), setup: None, percent: 100, local: 0, outcome: Outcome::Skipped(String::new()), detail: String::new() };
        self.pb.set_message(format!("{} natively", w.name));
        if !p.program.exists() {
            row.outcome = Outcome::Skipped(format!("{} is not built (`make guest-images`)", p.program.display()));
            self.pb.inc((self.plan.warmup + self.plan.runs) as u64);
            return Ok((p, row));
        }
        if let Some(input) = w.input {
            input.generate(&p.dir.join(input.file_name()), n, self.args.seed)?;
        }
        // The working set is the peak memory use of the reference runs, in a memory cgroup
        // without a limit (the figure the limits of (b)-(d) apply to). Without cgroups it is
        // the peak RSS, which includes the harness's pages the forked child shares until exec.
        let mut guard = Guard::new(&self.interrupt);
        let cgroup = system::Cgroup::create(&mut guard, &format!("lego-bench-{}-{}-a", std::process::id(), w.name), None);
        if let Err(e) = &cgroup {
            tracing::warn!("measuring peak RSS instead of cgroup usage: {e:#}");
        }
        let cmd = || {
            let mut c = Command::new(&p.program);
            c.args(&p.argv).current_dir(&p.dir);
            if let Ok(cg) = &cgroup {
                cg.enter_on_exec(&mut c);
            }
            c
        };
        let (outcome, samples) = self.runs(&cmd, None)?;
        row.outcome = outcome;
        if let (Outcome::Measured { .. }, Some(first)) = (&row.outcome, samples.first()) {
            let rss = samples.iter().map(|s| s.max_rss).max().unwrap_or(0);
            let (ws, what) = match cgroup.as_ref().map(|c| c.max_usage()) {
                Ok(Ok(u)) => (u, "peak cgroup memory use"),
                _ => (rss, "peak RSS"),
            };
            let ws = ws.div_ceil(PAGE) * PAGE;
            row.local = ws;
            row.detail = format!(
                "n = {n}, data {} KiB, working set ({what}) {} KiB: {}",
                (w.data)(n) >> 10,
                ws >> 10,
                String::from_utf8_lossy(&first.stdout).trim()
            );
            p.reference = Some(Reference { stdout: first.stdout.clone(), working_set: ws });
        }
        Ok((p, row))
    }

    /// Warm-up and measured runs of `cmd`, checked against `expect`.
    fn runs(&self, cmd: &dyn Fn() -> Command, expect: Option<&[u8]>) -> anyhow::Result<(Outcome, Vec<Sample>)> {
        let mut samples = Vec::new();
        let timeout = Some(Duration::from_secs(self.args.timeout));
        for i in 0..self.plan.warmup + self.plan.runs {
            let s = match measure(cmd(), timeout, &self.interrupt) {
                Ok(s) => s,
                Err(e) if e.is::<Interrupted>() => return Err(e),
                Err(e) => {
                    let left = (self.plan.warmup + self.plan.runs - i) as u64;
                    self.pb.inc(left);
                    return Ok((
                        match e.downcast::<TimedOut>() {
                            Ok(t) => Outcome::TimedOut(t.0),
                            Err(e) => Outcome::Failed(format!("{e:#}")),
                        },
                        samples,
                    ));
                }
            };
            self.pb.inc(1);
            if let Some(want) = expect {
                if s.stdout != want {
                    self.pb.inc((self.plan.warmup + self.plan.runs - i - 1) as u64);
                    let msg = format!(
                        "printed {:?}, the reference printed {:?}",
                        String::from_utf8_lossy(&s.stdout).trim(),
                        String::from_utf8_lossy(want).trim()
                    );
                    return Ok((Outcome::Failed(msg), samples));
                }
            }
            if i >= self.plan.warmup {
                samples.push(s);
            }
        }
        let times: Vec<Duration> = samples.iter().map(|s| s.elapsed).collect();
        let outcome = Outcome::Measured {
            median: median(times.clone()),
            min: *times.iter().min().expect("at least one run"),
            max: *times.iter().max().expect("at least one run"),
        };
        Ok((outcome, samples))
    }

    /// Sets up one configuration, runs every workload at every percentage under it, and tears
    /// it down. A set-up that fails makes every row of the configuration a skipped one.
    fn setup_rows(&self, setup: Setup, prepared: &[Prepared], work: &Path, max_ws: u64) -> anyhow::Result<Vec<Row>> {
        let mut guard = Guard::new(&self.interrupt);
        self.pb.set_message(format!("setting up {}", setup.name()));
        let ready = self.set_up(&mut guard, setup, work, max_ws);
        if let Err(e) = &ready {
            if e.is::<Interrupted>() {
                return Ok(Vec::new());
            }
        }
        let mut rows = Vec::new();
        for p in prepared {
            for &percent in &self.plan.percents {
                let mut row = Row { workload: p.w.name.into(), setup: Some(setup), percent, local: 0, outcome: Outcome::Skipped(String::new()), detail: String::new() };
                let per = (self.plan.warmup + self.plan.runs) as u64;
                match (&ready, &p.reference) {
                    (Err(e), _) => {
                        row.outcome = Outcome::Skipped(format!("{e:#}"));
                        self.pb.inc(per);
                    }
                    (_, None) => {
                        row.outcome = Outcome::Skipped("no reference run".into());
                        self.pb.inc(per);
                    }
                    (Ok(servers), Some(r)) => {
                        row.local = (r.working_set * percent / 100).div_ceil(PAGE) * PAGE;
                        self.pb.set_message(format!("{} on {} at {percent}%", p.w.name, setup.name()));
                        match self.one(setup, servers, p, r, row.local) {
                            Ok((outcome, detail)) => {
                                row.outcome = outcome;
                                row.detail = detail;
                            }
                            Err(e) if e.is::<Interrupted>() => {
                                rows.push(row);
                                return Ok(rows);
                            }
                            Err(e) => row.outcome = Outcome::Failed(format!("{e:#}")),
                        }
                    }
                }
                rows.push(row);
            }
        }
        guard.undo_all().with_context(|| format!("tearing down {}", setup.name()))?;
        Ok(rows)
    }

    /// Sets up the devices and servers of `setup`; for lego, returns the mem-server addresses.
    fn set_up(&self, guard: &mut Guard, setup: Setup, work: &Path, max_ws: u64) -> anyhow::Result<Vec<String>> {
        guard.check_interrupt()?;
        let swap_size = (max_ws + (64 << 20)).div_ceil(1 << 20) << 20;
        if setup != Setup::Lego(1) && setup != Setup::Lego(2) {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                bail!("needs root (swapon, cgroups)");
            }
            let active = system::active_swaps()?;
            if !active.is_empty() {
                bail!("other swap is active ({}): the results would mix devices", active.join(", "));
            }
            if !Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
                bail!("no cgroup v1 memory controller at /sys/fs/cgroup/memory");
            }
        }
        let mem_server = |guard: &mut Guard, name: &str, capacity: u64| {
            let args = ["mem-server", "--listen", "127.0.0.1:0", "--capacity", &capacity.to_string()].map(String::from);
            system::start_server(guard, self.lego, &args, &self.logs.join(format!("{name}.log")), "listening on")
        };
        match setup {
            Setup::DiskSwap => system::swap_file(guard, &work.join("swapfile"), swap_size).map(|()| Vec::new()),
            Setup::Zram => system::zram(guard, swap_size).map(|()| Vec::new()),
            Setup::RemoteSwap => {
                let server = mem_server(guard, "remote-swap-mem-server", swap_size + (64 << 20))?;
                let mount = system::temp_dir(guard, work.join("remote-swap"))?;
                let args = ["remote-swap", "--mem-server", &server, "--size", &swap_size.to_string(), "--mount", &mount.to_string_lossy()]
                    .map(String::from);
                system::start_server(guard, self.lego, &args, &self.logs.join("remote-swap.log"), "serving")?;
                guard.check_interrupt()?;
                let dev = system::loop_device(guard, &mount.join(crate::remote_swap::DISK))?;
                system::swapon(guard, &dev)?;
                Ok(Vec::new())
            }
            Setup::Lego(n) => {
                (0..n).map(|i| mem_server(guard, &format!("lego-{n}-mem-server-{i}"), 2 * max_ws + (512 << 20))).collect()
            }
        }
    }

    /// Runs one workload in one configuration with `local` bytes of local memory.
    fn one(&self, setup: Setup, servers: &[String], p: &Prepared, r: &Reference, local: u64) -> anyhow::Result<(Outcome, String)> {
        let mut guard = Guard::new(&self.interrupt);
        let cgroup = match setup {
            Setup::Lego(_) => None,
            _ => {
                let name = format!("lego-bench-{}-{}-{}", std::process::id(), p.w.name, setup.letter());
                Some(system::Cgroup::create(&mut guard, &name, Some(local))?)
            }
        };
        let cmd: Box<dyn Fn() -> Command> = match (setup, &cgroup) {
            (Setup::Lego(n), _) => {
                let excache = local.max(64 << 10);
                let vregion = if n > 1 { "4M" } else { "1G" };
                let servers = servers.join(",");
                Box::new(move || {
                    let mut c = Command::new(self.lego);
                    c.args(["run", "--stats", "--mem-server", &servers, "--vregion-size", vregion, "--excache"])
                        .arg(excache.to_string())
                        .arg("--root")
                        .arg(&p.dir)
                        .arg(&p.program)
                        .args(&p.argv);
                    c
                })
            }
            (_, cg) => Box::new(move || {
                let mut c = Command::new(&p.program);
                c.args(&p.argv).current_dir(&p.dir);
                if let Some(cg) = cg {
                    cg.enter_on_exec(&mut c);
                }
                c
            }),
        };
        let before = system::swap_counters();
        let (mut outcome, samples) = self.runs(&*cmd, Some(&r.stdout))?;
        let after = system::swap_counters();
        if matches!(outcome, Outcome::Failed(_)) && cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0) {
            outcome = Outcome::OomKilled;
        }
        drop(cmd);
        guard.undo_all()?;
        let detail = match (setup, samples.last()) {
            (Setup::Lego(_), Some(s)) => lego_detail(&s.stats, s.elapsed),
            (Setup::Lego(_), None) => String::new(),
            _ => {
                let runs = (self.plan.warmup + self.plan.runs) as u64;
                format!(
                    "{} pages swapped out, {} in, per run",
                    (after.1 - before.1) / runs,
                    (after.0 - before.0) / runs
                )
            }
        };
        Ok((outcome, detail))
    }
}

/// Where a lego run's time went, from its `--stats`: misses and their latency, the share of the
/// run they account for, first writes, evictions and write-backs (with the misses that waited
/// for them), prefetched lines and the bytes moved: the counterparts of Linux's `pswpin`/`pswpout`
/// in the swap rows.
fn lego_detail(stats: &str, elapsed: Duration) -> String {
    let n = |name| stat(stats, name).unwrap_or(0);
    let misses = n("misses (remote fetches)");
    let latency = |key: &str| -> f64 {
        stats
            .lines()
            .find(|l| l.contains("miss latency") && l.contains(key))
            .and_then(|l| l.split_whitespace().skip_while(|w| *w != key).nth(1)?.parse().ok())
            .unwrap_or(0.0)
    };
    let (p50_us, mean_us) = (latency("p50"), latency("mean"));
    let bytes = stats.lines().find(|l| l.contains("bytes in / out")).map(|l| {
        let v: Vec<&str> = l.split_whitespace().collect();
        let mib = |s: &str| s.parse::<f64>().unwrap_or(0.0) / (1 << 20) as f64;
        format!("{:.1}/{:.1} MiB in/out", mib(v[v.len() - 3]), mib(v[v.len() - 1]))
    });
    // Summed over the threads that missed, so it can exceed the run with several threads.
    let share = misses as f64 * mean_us * 1e-6 / elapsed.as_secs_f64().max(1e-9);
    format!(
        "{misses} misses (p50 {p50_us:.0} us, mean {mean_us:.0} us: ~{:.0}% of the run, summed over threads); \
         {} KVM exits, {} of them shadow faults KVM fixed itself; {} p-local fills, {} first writes (no exit), \
         {} evictions, {} second chances, {} dirty flushes, {} waits on write-back; {} lines prefetched ({} used); {}",
        share * 100.0,
        n("(exits)"),
        n("(pf_fixed)"),
        n("p-local fills"),
        n("first writes (dirtied)"),
        n("evictions"),
        n("second chances (CLOCK)"),
        n("dirty flushes"),
        n("waits on write-back"),
        n("prefetched lines"),
        n("prefetched, used"),
        bytes.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lego_detail_reads_the_stats_lego_run_prints() {
        let stats = "lego:   misses (remote fetches)       4594
lego:   p-local fills                  618
lego:   evictions                    17394
lego:   dirty flushes                 9819
lego:   first writes (dirtied)         443
lego:   waits on write-back             60
lego:   second chances (CLOCK)       56544
lego:   prefetched lines             19826
lego:   prefetched, used             17605
lego:   bytes in / out            48234496 / 40370176
lego:   miss latency (VMM side) p50 32.3 us  p99 2213.9 us  p99.9 3569.7 us
lego:   miss latency (VMM side) mean 131.0 us, 0.602 s in all
lego: KVM's counters (what KVM handled itself never reaches the VMM)
lego:   exits of the guest, of any kind (exits)                         63709
lego:   of them fixed in its shadow page tables (pf_fixed)              45546
";
        let d = lego_detail(stats, Duration::from_secs(2));
        for want in [
            "4594 misses (p50 32 us, mean 131 us: ~30% of the run",
            "63709 KVM exits, 45546 of them shadow faults",
            "618 p-local fills",
            "17394 evictions, 56544 second chances, 9819 dirty flushes, 60 waits on write-back",
            "19826 lines prefetched (17605 used)",
            "46.0/38.5 MiB in/out",
        ] {
            assert!(d.contains(want), "{want:?} missing from {d:?}");
        }
    }
}
