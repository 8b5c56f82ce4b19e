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

/// `sub rsp, 64`, then `rbx` times `clock_gettime(CLOCK_MONOTONIC, rsp)` through the vDSO
/// function whose address is the 8 bytes at [`VDSO_CALL_TARGET`], then `exit_group(0)`.
const VDSO_CLOCK_LOOP: [u8; 38] = [
    0x48, 0x83, 0xec, 0x40, // sub rsp, 64
    0xbf, 0x01, 0, 0, 0, // loop: mov edi, CLOCK_MONOTONIC
    0x48, 0x89, 0xe6, // mov rsi, rsp
    0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, // mov rax, imm64
    0xff, 0xd0, // call rax
    0x48, 0xff, 0xcb, // dec rbx
    0x75, 0xe7, // jnz loop
    0xb8, 0xe7, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05, // exit_group(0)
];
/// Offset of the call target's immediate in [`VDSO_CLOCK_LOOP`].
const VDSO_CALL_TARGET: usize = 14;

/// Figures of `lego bench syscall`.
#[derive(Debug, Clone)]
pub struct SyscallFigures {
    pub iterations: u64,
    /// Guest `getpid` through the whole forwarding path.
    pub forwarded_getpid: Duration,
    /// A CPL3 `out` exit and resume with sync regs, nothing else.
    pub bare_exit: Duration,
    /// The floor of a forwarded call: guest `syscall` -> CPL0 stub exit -> emulated `sysret`,
    /// with no system call behind it (what `../shared/probes/cpl3_syscall.c` measures).
    pub syscall_round_trip: Duration,
    /// `getpid` in a host process.
    pub native_getpid: Duration,
    /// Guest `clock_gettime(CLOCK_MONOTONIC)` through the vDSO.
    pub vdso_clock_gettime: Duration,
    /// `clock_gettime(CLOCK_MONOTONIC)` in a host process (through the host's vDSO).
    pub native_clock_gettime: Duration,
}

pub(crate) fn code_vnode(code: &[u8], iopl3: bool, iterations: u64, memory: &MemoryConfig) -> Result<Vnode, VmmError> {
    let config = VnodeConfig {
        name: "bench".into(),
        mem_size: BENCH_MEM,
        files: Files::HostDir(std::env::temp_dir()),
        cwd: b"/".to_vec(),
        trace_syscalls: false,
        ignored_signals: 0,
        blocked_signals: 0,
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

/// The do-nothing `syscall` round trip, per call over `iterations`: the guest's `getpid` loop,
/// each `syscall` answered by emulating `sysret` at once, no handler, no process lock.
pub fn syscall_round_trip(iterations: u64, memory: &MemoryConfig) -> Result<Duration, VmmError> {
    let mut vnode = code_vnode(GETPID_LOOP, false, iterations, memory)?;
    let vcpu = vnode.vcpu_mut();
    let start = Instant::now();
    let mut calls = 0u64;
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(crate::layout::SYSCALL_PORT, _)) => {}
            Ok(other) => return Err(VmmError::GuestCrashed(format!("syscall round trip: {other:?}"))),
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(source) => return Err(VmmError::Kvm { op: "RUN", source }),
        }
        let sync = vcpu.sync_regs_mut();
        if sync.regs.rax == libc::SYS_exit_group as u64 {
            break;
        }
        calls += 1;
        sync.regs.rax = 0;
        crate::cpu::emulate_sysret(&mut sync.regs, &mut sync.sregs);
        vcpu.set_sync_dirty_reg(kvm_ioctls::SyncReg::Register);
        vcpu.set_sync_dirty_reg(kvm_ioctls::SyncReg::SystemRegister);
    }
    let elapsed = start.elapsed();
    if calls != iterations {
        return Err(VmmError::GuestCrashed(format!("syscall round trip made {calls} calls, not {iterations}")));
    }
    Ok(elapsed / iterations as u32)
}

/// Run time of a guest making `calls` vDSO `clock_gettime` calls, once its vDSO clock is
/// calibrated.
fn vdso_clock_run(calls: u64, memory: &MemoryConfig) -> Result<Duration, VmmError> {
    let offset = crate::vdso::symbol(b"__vdso_clock_gettime")
        .ok_or_else(|| VmmError::Config("the vDSO has no __vdso_clock_gettime".into()))?;
    let mut code = VDSO_CLOCK_LOOP;
    code[VDSO_CALL_TARGET..VDSO_CALL_TARGET + 8].copy_from_slice(&(crate::layout::VDSO_BASE + offset).to_le_bytes());
    let vnode = code_vnode(&code, false, calls, memory)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while !crate::vdso::ready(vnode.process().mm.sys()) {
        if Instant::now() > deadline {
            return Err(VmmError::Config("the vDSO clock did not calibrate within 2 s".into()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = vnode.run()?;
    if report.termination != Termination::Exited(0) || report.stats.calls != 1 {
        return Err(VmmError::GuestCrashed(format!(
            "vDSO clock loop ended with {:?} after {} system calls",
            report.termination, report.stats.calls
        )));
    }
    Ok(report.elapsed)
}

/// Guest `clock_gettime` through the vDSO, per call: the run time of `iterations` calls less
/// that of one call (the start-up and the first touches of the pages), so only the calls count.
pub fn vdso_clock_gettime(iterations: u64, memory: &MemoryConfig) -> Result<Duration, VmmError> {
    let one = vdso_clock_run(1, memory)?;
    let many = vdso_clock_run(iterations + 1, memory)?;
    Ok(many.saturating_sub(one) / iterations as u32)
}

fn native_clock_gettime(iterations: u64) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let start = Instant::now();
    for _ in 0..iterations {
        // SAFETY: `ts` is a valid, writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        std::hint::black_box(&ts);
    }
    start.elapsed() / iterations as u32
}

fn native_getpid(iterations: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        // SAFETY: getpid has no arguments and no side effects.
        unsafe { libc::syscall(libc::SYS_getpid) };
    }
    start.elapsed() / iterations as u32
}

/// Guest clock reads per forwarded call measured: they cost ~1000x less.
const CLOCK_CALLS_PER_CALL: u64 = 100;

/// Measures a forwarded `getpid`, the bare exit, the do-nothing `syscall` round trip, a native
/// `getpid`, and `clock_gettime` through the vDSO and natively, interleaved over `rounds`
/// rounds (median of each), so that machine noise hits them all alike.
pub fn syscall(iterations: u64, rounds: usize, memory: &MemoryConfig) -> Result<SyscallFigures, VmmError> {
    let iterations = iterations.max(1);
    let clock_calls = iterations * CLOCK_CALLS_PER_CALL;
    let mut v: [Vec<Duration>; 6] = Default::default();
    for _ in 0..rounds.max(1) {
        v[0].push(bare_exit(iterations, memory)?);
        v[1].push(syscall_round_trip(iterations, memory)?);
        v[2].push(forwarded_getpid(iterations, memory)?);
        v[3].push(native_getpid(iterations * 10));
        v[4].push(vdso_clock_gettime(clock_calls, memory)?);
        v[5].push(native_clock_gettime(clock_calls));
    }
    let [bare, round_trip, fwd, native, vdso, native_clock] = v.map(|mut v| {
        v.sort();
        v[v.len() / 2]
    });
    Ok(SyscallFigures {
        iterations,
        forwarded_getpid: fwd,
        bare_exit: bare,
        syscall_round_trip: round_trip,
        native_getpid: native,
        vdso_clock_gettime: vdso,
        native_clock_gettime: native_clock,
    })
}
