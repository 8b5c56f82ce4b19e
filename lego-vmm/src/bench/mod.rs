//! Micro-benchmarks of the vNode execution path, each printed beside the limit measured in the
//! same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuExit;

mod fault;
pub use fault::{raw_round_trips, tsc_per_ns, Percentiles};

use crate::error::VmmError;
use crate::memory::excache::MemoryConfig;
use crate::layout::BENCH_PORT;
use crate::fs::hostdir::HostDir;
use crate::process::Termination;
use crate::vnode::{Files, Image, Program, Vnode, VnodeConfig};

const LOAD_AT: u64 = 0x40_0000;
/// Address space of benchmark vNodes.
const BENCH_MEM: u64 = 1 << 30;

/// `out 0x11, al; dec rbx; jnz 0; exit_group(0)` — run with IOPL=3 so `out` is legal at CPL3.
const BARE_EXIT_LOOP: &[u8] = &[
    0xe6, 0x11, 0x48, 0xff, 0xcb, 0x75, 0xf9, 0xb8, 0xe7, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05,
];
/// `mov eax, 39; syscall; dec rbx; jnz 0; exit_group(0)`.
const GETPID_LOOP: &[u8] = &[
    0xb8, 0x27, 0, 0, 0, 0x0f, 0x05, 0x48, 0xff, 0xcb, 0x75, 0xf4, 0xb8, 0xe7, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05,
];

/// Figures of `lego bench syscall`.
#[derive(Debug, Clone)]
pub struct SyscallFigures {
    pub iterations: u64,
    /// Guest `getpid` through the whole forwarding path.
    pub forwarded_getpid: Duration,
    /// The limit: a CPL3 `out` exit and resume with sync regs, nothing else.
    pub bare_exit: Duration,
    /// `getpid` in a host process.
    pub native_getpid: Duration,
}

pub(crate) fn code_vnode(code: &[u8], iopl3: bool, iterations: u64, memory: &MemoryConfig) -> Result<Vnode, VmmError> {
    let config = VnodeConfig {
        name: "bench".into(),
        mem_size: BENCH_MEM,
        files: Files::HostDir(std::env::temp_dir()),
        trace_syscalls: false,
        memory: memory.clone(),
        net: crate::net::NetConfig::standalone(),
    };
    let fs = HostDir::new(&std::env::temp_dir()).map_err(|e| VmmError::Config(e.to_string()))?;
    let program = Program { path: "bench".into(), argv: Vec::new(), envp: Vec::new() };
    let mut vnode = Vnode::create(&config, Arc::new(fs), Image::Code { code, load_at: LOAD_AT, iopl3 }, &program, b"bench")?;
    let vcpu = vnode.vcpu_mut();
    let mut regs = vcpu.get_regs().map_err(VmmError::kvm("GET_REGS"))?;
    regs.rbx = iterations;
    vcpu.set_regs(&regs).map_err(VmmError::kvm("SET_REGS"))?;
    Ok(vnode)
}

fn forwarded_getpid(iterations: u64, memory: &MemoryConfig) -> Result<Duration, VmmError> {
    let report = code_vnode(GETPID_LOOP, false, iterations, memory)?.run()?;
    if report.termination != Termination::Exited(0) || report.stats.calls != iterations + 1 {
        return Err(VmmError::GuestCrashed(format!("getpid loop ended with {:?}", report.termination)));
    }
    Ok(report.elapsed / iterations as u32)
}

/// Runs a benchmark guest to its first system call (its exit), counting its bench-port exits.
pub(crate) fn run_to_syscall(vnode: &mut Vnode, what: &str) -> Result<u64, VmmError> {
    let mut exits = 0u64;
    loop {
        match vnode.vcpu_mut().run() {
            Ok(VcpuExit::IoOut(BENCH_PORT, _)) => exits += 1,
            Ok(VcpuExit::IoOut(crate::layout::SYSCALL_PORT, _)) => return Ok(exits),
            Ok(other) => return Err(VmmError::GuestCrashed(format!("{what}: {other:?}"))),
            Err(e) if e.errno() == libc::EINTR => {
                if let Some(msg) = vnode.process().mm.failure() {
                    return Err(VmmError::MemoryServer(msg));
                }
            }
            Err(source) => return Err(VmmError::Kvm { op: "RUN", source }),
        }
    }
}

/// The bare exit: a CPL3 `out` exit and resume with sync regs, per exit, over `iterations`.
pub fn bare_exit(iterations: u64, memory: &MemoryConfig) -> Result<Duration, VmmError> {
    let mut vnode = code_vnode(BARE_EXIT_LOOP, true, iterations, memory)?;
    let start = Instant::now();
    let exits = run_to_syscall(&mut vnode, "bare-exit loop")?;
    let elapsed = start.elapsed();
    if exits != iterations {
        return Err(VmmError::GuestCrashed(format!("bare-exit loop made {exits} exits, not {iterations}")));
    }
    Ok(elapsed / iterations as u32)
}

fn native_getpid(iterations: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        // SAFETY: getpid has no arguments and no side effects.
        unsafe { libc::syscall(libc::SYS_getpid) };
    }
    start.elapsed() / iterations as u32
}

/// Measures a forwarded `getpid`, the bare exit and a native `getpid`, interleaved over
/// `rounds` rounds (median of each), so that machine noise hits all three alike.
pub fn syscall(iterations: u64, rounds: usize, memory: &MemoryConfig) -> Result<SyscallFigures, VmmError> {
    let iterations = iterations.max(1);
    let (mut fwd, mut bare, mut native) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        bare.push(bare_exit(iterations, memory)?);
        fwd.push(forwarded_getpid(iterations, memory)?);
        native.push(native_getpid(iterations * 10));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    Ok(SyscallFigures {
        iterations,
        forwarded_getpid: median(&mut fwd),
        bare_exit: median(&mut bare),
        native_getpid: median(&mut native),
    })
}
