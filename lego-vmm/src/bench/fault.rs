//! `lego bench fault`: the latency of an ExCache miss as the guest sees it, beside its limit
//! measured in the same run: a guest CPL3 fault served by userfaultfd from local memory, plus one
//! raw 4 KB TCP round trip over the same loopback path (an echo thread answering a request the
//! size of a fetch with a reply the size of a page). The fetch round trip through the mem-server
//! itself is measured too, to show what the protocol and page store add to the raw one.
//!
//! A hand-assembled guest loop reads one word from each address of a list and times each read
//! with `rdtsc`, writing the deltas to a result array the VMM reads afterwards.

use std::time::{Duration, Instant};

use lego_proto::frame::HEADER_LEN;
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::transport::{RegisteredBuf, Slot, TcpTransport, Transport};
use lego_proto::vma::{Prot, VmaKind};

use super::{code_vnode, run_to_syscall};
use crate::errno::Errno;
use crate::error::VmmError;
use crate::excache::{CacheStats, ExCacheConfig, MemoryConfig};
use crate::layout::PAGE_SIZE;
use crate::vnode::Vnode;

/// rdi: address list, rsi: count, r9: results. For each address: lfence; t0 = rdtsc;
/// load [addr]; lfence; results[i] = rdtsc - t0. Then exit_group(0).
const TIMED_READS: &[u8] = &[
    0x4c, 0x8b, 0x07, // mov r8, [rdi]
    0x0f, 0xae, 0xe8, // lfence
    0x0f, 0x31, // rdtsc
    0x48, 0xc1, 0xe2, 0x20, // shl rdx, 32
    0x48, 0x09, 0xd0, // or rax, rdx
    0x49, 0x89, 0xc2, // mov r10, rax
    0x4d, 0x8b, 0x18, // mov r11, [r8]
    0x0f, 0xae, 0xe8, // lfence
    0x0f, 0x31, // rdtsc
    0x48, 0xc1, 0xe2, 0x20, // shl rdx, 32
    0x48, 0x09, 0xd0, // or rax, rdx
    0x4c, 0x29, 0xd0, // sub rax, r10
    0x49, 0x89, 0x01, // mov [r9], rax
    0x48, 0x83, 0xc7, 0x08, // add rdi, 8
    0x49, 0x83, 0xc1, 0x08, // add r9, 8
    0x48, 0xff, 0xce, // dec rsi
    0x75, 0xcc, // jnz loop (-52)
    0xb8, 0xe7, 0, 0, 0, // mov eax, 231 (exit_group)
    0x31, 0xff, // xor edi, edi
    0x0f, 0x05, // syscall
];

/// Median and tail of a latency sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Percentiles {
    fn of(mut v: Vec<Duration>) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Percentiles { p50: at(0.5), p99: at(0.99) }
    }
}

/// Figures of `lego bench fault`.
#[derive(Debug)]
pub struct FaultFigures {
    /// Pages in the working set, and ExCache lines.
    pub pages: u64,
    /// ExCache lines.
    pub lines: u64,
    /// Sequential remote misses whose victim is clean.
    pub sequential: Percentiles,
    /// Random remote misses whose victim is clean.
    pub random: Percentiles,
    /// Sequential remote misses whose victim is dirty (write-back piggybacked on the fetch).
    pub with_writeback: Percentiles,
    /// Limit, part 1: a guest CPL3 fault served by userfaultfd from local memory (a p-local
    /// fill with room in the cache: no network, no eviction).
    pub local_fault: Percentiles,
    /// Limit, part 2: one raw TCP round trip of the same sizes as a fetch (header out, header
    /// and page back) to an echo thread on the mem-server's host.
    pub raw_rtt: Percentiles,
    /// One 4 KB fetch round trip to the same mem-server, from the VMM (not part of the limit).
    pub fetch_rtt: Percentiles,
    /// ExCache counters of the miss run.
    pub cache: CacheStats,
}

/// Ticks of the time-stamp counter per nanosecond, measured against the monotonic clock.
fn tsc_per_ns() -> f64 {
    // SAFETY: rdtsc has no preconditions on x86-64.
    let t0 = unsafe { core::arch::x86_64::_rdtsc() };
    let c0 = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: as above.
    let t1 = unsafe { core::arch::x86_64::_rdtsc() };
    (t1 - t0) as f64 / c0.elapsed().as_nanos() as f64
}

/// A vNode running [`TIMED_READS`] over `addrs` (which the caller maps); returns it stopped at
/// its exit with the per-read latencies.
struct TimedReads {
    vnode: Vnode,
    list: u64,
    results: u64,
}

impl TimedReads {
    fn new(memory: &MemoryConfig) -> Result<TimedReads, VmmError> {
        let mut vnode = code_vnode(TIMED_READS, false, 0, memory)?;
        let mm = &mut vnode.process_mut().mm;
        let anon = 0x22; // MAP_PRIVATE | MAP_ANONYMOUS
        let err = |e: Errno| VmmError::Config(format!("mapping benchmark arrays: {e}"));
        let list = mm.mmap(0, 64 << 20, Prot::RW, anon, VmaKind::Anon).map_err(err)?;
        let results = mm.mmap(0, 64 << 20, Prot::RW, anon, VmaKind::Anon).map_err(err)?;
        Ok(TimedReads { vnode, list, results })
    }

    /// Maps a working set of `pages` pages.
    fn map(&mut self, pages: u64) -> Result<u64, VmmError> {
        let mm = &mut self.vnode.process_mut().mm;
        mm.mmap(0, pages * PAGE_SIZE, Prot::RW, 0x22, VmaKind::Anon)
            .map_err(|e| VmmError::Config(format!("mapping the working set: {e}")))
    }

    /// Runs the guest over `addrs` and returns each read's latency.
    fn run(mut self, addrs: &[u64], tsc: f64) -> Result<(Vec<Duration>, Vnode), VmmError> {
        let bytes: Vec<u8> = addrs.iter().flat_map(|a| a.to_le_bytes()).collect();
        let written = self.vnode.process().mm.write_user(self.list, &bytes);
        written.map_err(|e| VmmError::Config(format!("address list: {e}")))?;
        let vcpu = self.vnode.vcpu_mut();
        let mut regs = vcpu.get_regs().map_err(VmmError::kvm("GET_REGS"))?;
        (regs.rdi, regs.rsi, regs.r9) = (self.list, addrs.len() as u64, self.results);
        vcpu.set_regs(&regs).map_err(VmmError::kvm("SET_REGS"))?;
        run_to_syscall(&mut self.vnode, "timed reads")?;
        let mut raw = vec![0u8; addrs.len() * 8];
        let read = self.vnode.process().mm.read_user(self.results, &mut raw);
        read.map_err(|e| VmmError::Config(format!("results: {e}")))?;
        let ticks = raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
        Ok((ticks.map(|t| Duration::from_nanos((t as f64 / tsc) as u64)).collect(), self.vnode))
    }
}

/// Measures miss latencies with an ExCache of `lines` lines over a working set of `pages`
/// pages (`pages` should be several times `lines`), and the limit.
pub fn fault(pages: u64, lines: u64, memory: &MemoryConfig, seed: u64) -> Result<FaultFigures, VmmError> {
    let tsc = tsc_per_ns();
    let config = MemoryConfig {
        excache: ExCacheConfig { bytes: lines * PAGE_SIZE, ..memory.excache },
        ..memory.clone()
    };

    // The limit, part 1: fresh pages, an ExCache big enough for all of them.
    let big = MemoryConfig {
        excache: ExCacheConfig { bytes: (lines + pages + 64 * 1024) * PAGE_SIZE, ..memory.excache },
        ..memory.clone()
    };
    let mut local = TimedReads::new(&big)?;
    let base = local.map(pages)?;
    let addrs: Vec<u64> = (0..pages).map(|i| base + i * PAGE_SIZE).collect();
    let (local_fault, _) = local.run(&addrs, tsc)?;

    // The misses: write every page from the VMM first (through the ExCache, so most of them are
    // evicted and written back), then read them sequentially (dirty victims), sequentially
    // again (clean victims) and in random order (clean victims).
    let mut misses = TimedReads::new(&config)?;
    let base = misses.map(pages)?;
    for i in 0..pages {
        let mm = &misses.vnode.process().mm;
        mm.write_u64(base + i * PAGE_SIZE, i).map_err(|e| VmmError::Config(format!("filling: {e}")))?;
    }
    let mut order: Vec<u64> = (0..pages).collect();
    let mut x = seed | 1;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let seq: Vec<u64> = (0..pages).map(|i| base + i * PAGE_SIZE).collect();
    let mut addrs = seq.clone();
    addrs.extend(&seq);
    addrs.extend(order.iter().map(|i| base + i * PAGE_SIZE));
    let (lat, vnode) = misses.run(&addrs, tsc)?;
    let n = pages as usize;
    let cache = vnode.process().mm.cache_stats();

    // The limit, part 2: fetch round trips of the same pages from their owner.
    let mm = &vnode.process().mm;
    let owner = mm.cache().owner_name(base).ok_or_else(|| VmmError::MemoryServer("no owner of the working set".into()))?;
    let mut t = TcpTransport::connect(&owner, Hello::new(ComponentKind::Processor, memory.cluster), memory.timeout)
        .map_err(|e| VmmError::MemoryServer(e.to_string()))?;
    let mut buf = RegisteredBuf::new(1);
    let mut rtt = Vec::with_capacity(n);
    for &a in seq.iter().take(n.min(20_000)) {
        let started = Instant::now();
        t.read_page(mm.proc_id(), a, &mut buf, Slot(0)).map_err(|e| VmmError::MemoryServer(e.to_string()))?;
        rtt.push(started.elapsed());
    }
    let host = owner.rsplit_once(':').map_or(owner.as_str(), |(h, _)| h);
    let raw_rtt = raw_round_trips(host, rtt.len()).map_err(|e| VmmError::MemoryServer(format!("raw TCP round trips: {e}")))?;
    Ok(FaultFigures {
        pages,
        lines,
        // Only the first `lines` reads find dirty victims (the lines the VMM's writes left).
        with_writeback: Percentiles::of(lat[..n.min(lines as usize)].to_vec()),
        sequential: Percentiles::of(lat[n..2 * n].to_vec()),
        random: Percentiles::of(lat[2 * n..].to_vec()),
        local_fault: Percentiles::of(local_fault),
        raw_rtt: Percentiles::of(raw_rtt),
        fetch_rtt: Percentiles::of(rtt),
        cache,
    })
}

/// `n` round trips to an echo thread listening on `host`: a frame header out, a header and a
/// page back, both sides with TCP_NODELAY, as on the page path but with no protocol and no store.
pub fn raw_round_trips(host: &str, n: usize) -> std::io::Result<Vec<Duration>> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    const REPLY: usize = HEADER_LEN + PAGE_SIZE as usize;
    let listener = TcpListener::bind((host, 0))?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let (mut req, reply) = ([0u8; HEADER_LEN], [0u8; REPLY]);
        for _ in 0..n {
            s.read_exact(&mut req)?;
            s.write_all(&reply)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let (req, mut reply) = ([0u8; HEADER_LEN], vec![0u8; REPLY]);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        c.write_all(&req)?;
        c.read_exact(&mut reply)?;
        out.push(started.elapsed());
    }
    echo.join().map_err(|_| std::io::Error::other("the echo thread panicked"))??;
    Ok(out)
}
