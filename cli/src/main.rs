//! `lego`: the one command of the lego system. Subcommands are thin: they parse arguments and
//! call the component libraries.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lego_vmm::fault::signal_name;
use lego_vmm::process::Termination;
use lego_vmm::{syscall::names, Program, Vnode, VnodeConfig, VmmError};

/// Exit status when the program is not something lego can run (bad ELF, missing file, bad option).
const STATUS_BAD_PROGRAM: u8 = 2;
/// Exit status when the VMM itself failed (no KVM, KVM error).
const STATUS_VMM_FAILURE: u8 = 125;

#[derive(Parser)]
#[command(name = "lego", version, about = "Run unmodified Linux programs in vNodes on disaggregated memory")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a static x86-64 Linux program in a vNode.
    Run(RunArgs),
    /// Measure the vNode execution path.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Name of the vNode (its host name inside).
    #[arg(long, default_value = "vnode")]
    vnode: String,
    /// User memory of the vNode (e.g. 512M, 4G).
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    mem: u64,
    /// Host directory holding the vNode's files (default: the current directory). Paths the
    /// program uses cannot leave it.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Print every system call, its arguments and result to stderr, strace-style.
    #[arg(long)]
    trace_syscalls: bool,
    /// Print system-call counts at exit (and which unimplemented calls were made).
    #[arg(long)]
    stats: bool,
    /// argv[0] for the program (default: PROGRAM as given).
    #[arg(long)]
    argv0: Option<OsString>,
    /// Host path of the program.
    program: PathBuf,
    /// Arguments for the program.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

#[derive(Subcommand)]
enum Bench {
    /// Cost of a forwarded system call beside the bare guest exit and a native call.
    Syscall {
        /// Calls per measurement.
        #[arg(long, default_value_t = 20000)]
        iterations: u64,
        /// Rounds (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

/// Parses `4096`, `64K`, `512M`, `4G`, `1T` (binary units; an optional `iB`/`B` suffix).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches("iB").trim_end_matches('B');
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("'{s}' is not a size (e.g. 512M, 4G)"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("'{s}' is too large"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Bench { which: Bench::Syscall { iterations, rounds } } => match bench_syscall(iterations, rounds) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lego: {e:#}");
                ExitCode::from(STATUS_VMM_FAILURE)
            }
        },
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = VnodeConfig {
        name: args.vnode,
        mem_size: args.mem,
        root: args.root.unwrap_or_else(lego_vmm::vnode::default_root),
        trace_syscalls: args.trace_syscalls,
    };
    let argv0 = args.argv0.unwrap_or_else(|| args.program.clone().into_os_string());
    let argv = std::iter::once(argv0).chain(args.args).map(OsString::into_vec).collect();
    let envp = std::env::vars_os()
        .map(|(k, v)| {
            let mut e = k.into_vec();
            e.push(b'=');
            e.extend(v.into_vec());
            e
        })
        .collect();
    let program = Program { path: args.program, argv, envp };
    let report = match Vnode::new(&config, &program).and_then(Vnode::run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lego: {e}");
            let status = match e {
                VmmError::Program { .. } | VmmError::BadElf { .. } | VmmError::Config(_) => STATUS_BAD_PROGRAM,
                _ => STATUS_VMM_FAILURE,
            };
            return ExitCode::from(status);
        }
    };
    if let Termination::Signaled { signal, detail: Some(detail) } = &report.termination {
        eprintln!("lego: {} killed by {}: {detail}", program.path.display(), signal_name(*signal));
    }
    if args.stats {
        print_stats(&report);
    }
    ExitCode::from(report.termination.shell_status() as u8)
}

fn print_stats(report: &lego_vmm::RunReport) {
    let s = &report.stats;
    eprintln!("lego: {} system calls in {:.3} s", s.calls, report.elapsed.as_secs_f64());
    for (nr, n) in &s.by_nr {
        let name = names::name(*nr).unwrap_or("?");
        let note = if s.unimplemented.contains_key(nr) { "  (unimplemented: ENOSYS)" } else { "" };
        eprintln!("lego:   {name:<20} {n:>10}{note}");
    }
}

fn bench_syscall(iterations: u64, rounds: usize) -> anyhow::Result<()> {
    let f = lego_vmm::bench::syscall(iterations, rounds).context("syscall benchmark")?;
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    let ratio = us(f.forwarded_getpid) / us(f.bare_exit);
    println!("lego bench syscall: {} calls x {rounds} rounds, medians", f.iterations);
    println!("  forwarded getpid (guest syscall -> VMM -> guest)  {:>9.2} us", us(f.forwarded_getpid));
    println!("  bare guest exit (CPL3 out, sync regs) = limit     {:>9.2} us", us(f.bare_exit));
    println!("  native getpid                                     {:>9.3} us", us(f.native_getpid));
    println!("  forwarded / limit   {ratio:.2}x  (target <= 1.30x: {})", if ratio <= 1.3 { "met" } else { "NOT met" });
    println!("  forwarded / native  {:.0}x", us(f.forwarded_getpid) / us(f.native_getpid));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
