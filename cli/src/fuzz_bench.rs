//! `lego bench fuzz`: the guest fuzzers (guest-images `fuzz`) for longer than `make test` runs
//! them, for use before releases. Each runs in a vNode of its own; a run fails on a VMM exit
//! 125, a "VMM bug" or a panic in what the VMM printed, a child the VMM had to kill, or a run
//! past its deadline.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Options of `lego bench fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Directory holding the guest programs (`make guest-images` builds them).
    #[arg(long, default_value = "guest-images/out")]
    images: PathBuf,
    /// Batches of the system-call fuzzer (each a forked child).
    #[arg(long, default_value_t = 1000)]
    sys_batches: u32,
    /// Batches of the instruction fuzzer.
    #[arg(long, default_value_t = 100)]
    insn_batches: u32,
    /// Cases per batch.
    #[arg(long, default_value_t = 1000)]
    per_batch: u32,
    /// Seed (the same seed replays the same run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Longest a fuzzer may run, in seconds, before it counts as hung.
    #[arg(long, default_value_t = 3600)]
    deadline_s: u64,
}

/// Runs both fuzzers and prints their figures.
pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let prog = args.images.join("fuzz");
    let prog = prog.canonicalize().with_context(|| format!("{}: run `make guest-images` first", prog.display()))?;
    let lego = std::env::current_exe().context("finding the lego executable")?;
    let mut failed = Vec::new();
    for (kind, batches) in [("sys", args.sys_batches), ("insn", args.insn_batches)] {
        let root = tempfile::tempdir().context("a scratch root for the fuzzer")?;
        let mut cmd = Command::new(&lego);
        cmd.args(["run", "--mem", "1G", "--root"]).arg(root.path()).arg(&prog);
        cmd.args([kind.to_string(), batches.to_string(), args.per_batch.to_string(), args.seed.to_string()]);
        let started = Instant::now();
        let (status, stdout, stderr) = run_with_deadline(cmd, Duration::from_secs(args.deadline_s))?;
        print!("{stdout}");
        let bad: Vec<&str> = stderr.lines().filter(|l| l.contains("VMM bug") || l.contains("panicked") || l.contains(" failed: ")).collect();
        match status {
            None => failed.push(format!("fuzz {kind}: still running after {} s (a hang)", args.deadline_s)),
            Some(0) if bad.is_empty() => {}
            Some(s) => failed.push(format!("fuzz {kind}: exit {s} after {:.0} s\n{}", started.elapsed().as_secs_f64(), stderr.trim_end())),
        }
        if status == Some(0) && !bad.is_empty() {
            failed.push(format!("fuzz {kind}: the VMM said\n{}", bad.join("\n")));
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

/// Runs `cmd` with its output captured; `None` for the status if it outlived `limit` (killed).
fn run_with_deadline(mut cmd: Command, limit: Duration) -> anyhow::Result<(Option<i32>, String, String)> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting lego run")?;
    let (mut out, mut err) = (child.stdout.take().context("stdout")?, child.stderr.take().context("stderr")?);
    let readers = (
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            use std::os::unix::process::ExitStatusExt;
            break Some(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)));
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = readers.0.join().unwrap_or_default();
    let stderr = readers.1.join().unwrap_or_default();
    Ok((status, stdout, stderr))
}
