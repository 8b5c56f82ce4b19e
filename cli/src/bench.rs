//! `lego bench`: micro-benchmarks, each printed beside the limit measured in the same run.

use anyhow::Context;

use crate::memory::MemoryArgs;

mod check;

/// Which benchmark.
#[derive(clap::Subcommand)]
pub enum Bench {
    /// Cost of a forwarded system call beside the bare guest exit and a native call.
    Syscall {
        /// Calls per measurement.
        #[arg(long, default_value_t = 20000)]
        iterations: u64,
        /// Rounds (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[command(flatten)]
        memory: MemoryArgs,
    },
    /// What each ExCache event costs the guest (misses on 1 and 2 vCPUs, first writes,
    /// evictions, prefetch), beside the limit of a miss measured in the same run.
    Fault(crate::fault_bench::FaultArgs),
    /// Requests per second one mem-server serves on one core, beside a raw socket echo of the
    /// same sizes.
    Throughput(crate::throughput::ThroughputArgs),
    /// Whole programs at ExCache sizes relative to their working set, beside native runs.
    Slowdown(crate::slowdown::SlowdownArgs),
    /// Applications on lego beside Linux swap (disk, zram) and Infiniswap-style remote swap.
    Apps(crate::apps::AppsArgs),
    /// 4 KB file I/O through the buffer cache and storage server, beside native I/O.
    Storage(crate::storage_bench::StorageBenchArgs),
    /// The threaded word count at 1, 2 and 4 threads, 100% and 25% ExCache, beside native runs.
    Threads(crate::threads_bench::ThreadsBenchArgs),
    /// TCP latency and throughput between two vNodes, beside raw host sockets.
    Net(crate::net_bench::NetBenchArgs),
    /// The guest fuzzers (system calls, instructions) for longer than `make test` runs them.
    Fuzz(crate::fuzz_bench::FuzzArgs),
    /// Memory replication (`--replicas 2`): the applications' overhead at 25% ExCache beside
    /// LegoOS's, and the fail-over time after a `kill -9` of the primary beside two heartbeats.
    Replication(crate::replication_bench::ReplicationBenchArgs),
    /// The quick benchmarks (syscall, fault, throughput) in under a minute, with one verdict
    /// per named target of the issues; exits with status 1 when one is not met.
    Check(check::CheckArgs),
}

/// Exit status of `lego bench check` when a target is not met (125 stays for a benchmark that
/// could not run).
const STATUS_TARGET_NOT_MET: i32 = 1;

/// Runs one benchmark.
pub fn run(which: Bench) -> anyhow::Result<()> {
    match which {
        Bench::Syscall {
            iterations,
            rounds,
            memory,
        } => syscall(iterations, rounds, &memory),
        Bench::Fault(args) => crate::fault_bench::run(&args),
        Bench::Throughput(args) => crate::throughput::run(&args),
        Bench::Slowdown(args) => crate::slowdown::run(&args),
        Bench::Storage(args) => crate::storage_bench::run(&args),
        Bench::Threads(args) => crate::threads_bench::run(&args),
        Bench::Apps(args) => crate::apps::run(&args),
        Bench::Fuzz(args) => crate::fuzz_bench::run(&args),
        Bench::Net(args) => crate::net_bench::run(&args),
        Bench::Replication(args) => crate::replication_bench::run(&args),
        Bench::Check(args) => {
            let (text, failed) = check::report(&check::run(&args)?);
            print!("{text}");
            if failed > 0 {
                use std::io::Write;
                std::io::stdout().flush().context("writing the verdicts")?;
                std::process::exit(STATUS_TARGET_NOT_MET);
            }
            Ok(())
        }
    }
}

fn syscall(iterations: u64, rounds: usize, memory: &MemoryArgs) -> anyhow::Result<()> {
    let (memory, _embedded) = memory.config(1 << 30, None)?;
    let f = lego_vmm::bench::syscall(iterations, rounds, &memory).context("syscall benchmark")?;
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    let ns = |d: std::time::Duration| d.as_secs_f64() * 1e9;
    let vs_round_trip = us(f.forwarded_getpid) / us(f.syscall_round_trip);
    let vs_exit = us(f.forwarded_getpid) / us(f.bare_exit);
    let clock_ratio = ns(f.vdso_clock_gettime) / ns(f.native_clock_gettime);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "lego bench syscall: {} calls x {rounds} rounds, medians",
        f.iterations
    );
    println!(
        "  forwarded getpid (guest syscall -> VMM -> guest)   {:>9.2} us",
        us(f.forwarded_getpid)
    );
    println!(
        "  do-nothing syscall round trip (stub exit, sysret) {:>9.2} us   = limit",
        us(f.syscall_round_trip)
    );
    println!(
        "  bare guest exit (CPL3 out, sync regs)             {:>9.2} us",
        us(f.bare_exit)
    );
    println!(
        "  native getpid                                     {:>9.3} us",
        us(f.native_getpid)
    );
    println!(
        "  forwarded / do-nothing syscall round trip  {vs_round_trip:.2}x  (target <= {:.2}x: {})",
        check::FORWARDED_CALL_MAX,
        met(vs_round_trip <= check::FORWARDED_CALL_MAX)
    );
    println!("  forwarded / bare exit                      {vs_exit:.2}x");
    println!(
        "  forwarded / native                         {:.0}x",
        us(f.forwarded_getpid) / us(f.native_getpid)
    );
    println!(
        "  clock_gettime in the guest (vDSO)                 {:>9.1} ns",
        ns(f.vdso_clock_gettime)
    );
    println!(
        "  clock_gettime native (host vDSO)                  {:>9.1} ns",
        ns(f.native_clock_gettime)
    );
    println!(
        "  clock_gettime guest / native               {clock_ratio:.2}x  (target <= {}x: {})",
        check::CLOCK_GETTIME_MAX,
        met(clock_ratio <= check::CLOCK_GETTIME_MAX)
    );
    Ok(())
}
