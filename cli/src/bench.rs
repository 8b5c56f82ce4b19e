//! `lego bench`: micro-benchmarks, each printed beside the limit measured in the same run.

use anyhow::Context;

use crate::memory::MemoryArgs;

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
    /// Latency of an ExCache miss as the guest sees it, beside a local userfaultfd fault plus
    /// one raw TCP round trip of the same sizes on the same path.
    Fault {
        /// Pages in the working set.
        #[arg(long, default_value_t = 16384)]
        pages: u64,
        /// ExCache lines (the working set should be several times larger).
        #[arg(long, default_value_t = 2048)]
        lines: u64,
        /// Seed of the random order.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        memory: MemoryArgs,
    },
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
    /// The guest fuzzers (system calls, instructions) for longer than `make test` runs them.
    Fuzz(crate::fuzz_bench::FuzzArgs),
}

/// Runs one benchmark.
pub fn run(which: Bench) -> anyhow::Result<()> {
    match which {
        Bench::Syscall { iterations, rounds, memory } => syscall(iterations, rounds, &memory),
        Bench::Fault { pages, lines, seed, memory } => fault(pages, lines, seed, &memory),
        Bench::Throughput(args) => crate::throughput::run(&args),
        Bench::Slowdown(args) => crate::slowdown::run(&args),
        Bench::Storage(args) => crate::storage_bench::run(&args),
        Bench::Threads(args) => crate::threads_bench::run(&args),
        Bench::Apps(args) => crate::apps::run(&args),
        Bench::Fuzz(args) => crate::fuzz_bench::run(&args),
    }
}

fn syscall(iterations: u64, rounds: usize, memory: &MemoryArgs) -> anyhow::Result<()> {
    let (memory, _embedded) = memory.config(1 << 30, None)?;
    let f = lego_vmm::bench::syscall(iterations, rounds, &memory).context("syscall benchmark")?;
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

fn fault(pages: u64, lines: u64, seed: u64, memory: &MemoryArgs) -> anyhow::Result<()> {
    let (memory, _embedded) = memory.config(4 * (pages + lines) * 4096 + (512 << 20), None)?;
    let f = lego_vmm::bench::fault(pages, lines, &memory, seed).context("fault benchmark")?;
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    let limit_p50 = us(f.local_fault.p50) + us(f.raw_rtt.p50);
    let limit_p99 = us(f.local_fault.p99) + us(f.raw_rtt.p99);
    println!(
        "lego bench fault: {} pages ({} MiB) through a {}-line ({} MiB) ExCache, memory on {}",
        f.pages,
        f.pages * 4 / 1024,
        f.lines,
        f.lines * 4 / 1024,
        memory.servers.join(",")
    );
    let row = |name: &str, p: lego_vmm::bench::Percentiles| {
        println!("  {name:<58} p50 {:>7.1} us   p99 {:>7.1} us", us(p.p50), us(p.p99));
    };
    row("guest CPL3 fault served by userfaultfd from local memory", f.local_fault);
    row("raw TCP round trip, fetch sizes, same host (echo thread)", f.raw_rtt);
    println!("  {:<58} p50 {:>7.1} us   p99 {:>7.1} us", "= limit", limit_p50, limit_p99);
    row("(4 KB fetch round trip through the mem-server, for reference)", f.fetch_rtt);
    let miss = |name: &str, p: lego_vmm::bench::Percentiles| {
        println!(
            "  {name:<58} p50 {:>7.1} us   p99 {:>7.1} us   p50/limit {:.2}x",
            us(p.p50),
            us(p.p99),
            us(p.p50) / limit_p50
        );
    };
    miss("miss, sequential, clean victim", f.sequential);
    miss("miss, random, clean victim", f.random);
    miss("miss, sequential, dirty victim (write-back piggybacked)", f.with_writeback);
    let worst = us(f.sequential.p50).max(us(f.random.p50)) / limit_p50;
    println!("  target p50 miss <= 1.25x limit: {} ({worst:.2}x)", if worst <= 1.25 { "met" } else { "NOT met" });
    let c = &f.cache;
    println!(
        "  ExCache: {} misses, {} p-local fills, {} evictions, {} dirty flushes ({} piggybacked)",
        c.misses, c.plocal_fills, c.evictions, c.dirty_flushes, c.piggybacked
    );
    Ok(())
}
