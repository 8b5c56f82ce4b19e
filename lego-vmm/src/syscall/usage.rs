//! Resource usage: `getrusage` and `times`, from the CPU time of the host threads that run the
//! process's vCPUs (see [`crate::hostcpu`]), and of the children it reaped.

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::hostcpu::CpuTime;
use crate::process::Process;

const RUSAGE_SELF: i32 = 0;
const RUSAGE_CHILDREN: i32 = -1;
const RUSAGE_THREAD: i32 = 1;
/// Size of `struct rusage`.
const RUSAGE_SIZE: usize = 144;


/// A `struct rusage` with `time` and the maximum resident set (KiB).
pub(super) fn rusage(time: CpuTime, maxrss_kib: u64) -> [u8; RUSAGE_SIZE] {
    let mut b = [0u8; RUSAGE_SIZE];
    let tv = |d: std::time::Duration| {
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&d.as_secs().to_le_bytes());
        t[8..].copy_from_slice(&u64::from(d.subsec_micros()).to_le_bytes());
        t
    };
    b[0..16].copy_from_slice(&tv(time.user));
    b[16..32].copy_from_slice(&tv(time.system));
    b[32..40].copy_from_slice(&maxrss_kib.to_le_bytes());
    b
}

/// `getrusage(who, usage)`: CPU time of the process, the calling thread, or the reaped
/// children; `ru_maxrss` is the process's mapped memory (the ExCache holds what is resident).
/// The other fields (faults, context switches) are zero.
pub fn getrusage(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let rss = p.mm.mapped_bytes() / 1024;
    let b = match a[0] as i32 {
        RUSAGE_SELF => rusage(p.cpu_time(), rss),
        RUSAGE_THREAD => rusage(
            p.threads
                .get(&cpu.tid)
                .and_then(|t| t.host)
                .map(|h| h.spent())
                .unwrap_or_default(),
            rss,
        ),
        RUSAGE_CHILDREN => rusage(p.children_usage, 0),
        _ => return Err(Errno::EINVAL),
    };
    p.mm.write_user(a[1], &b).map(|()| 0)
}

/// Clock ticks per second of `times` (`USER_HZ`).
const USER_HZ: u128 = 100;

/// `times(buf)`: CPU times in clock ticks; returns the ticks since the host booted, as Linux does.
pub fn times(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let ticks = |d: std::time::Duration| (d.as_nanos() * USER_HZ / 1_000_000_000) as u64;
    if a[0] != 0 {
        let (own, children) = (p.cpu_time(), p.children_usage);
        let words = [
            ticks(own.user),
            ticks(own.system),
            ticks(children.user),
            ticks(children.system),
        ];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        p.mm.write_user(a[0], &bytes)?;
    }
    let up = super::time::now(libc::CLOCK_BOOTTIME)?;
    Ok(ticks(std::time::Duration::new(
        up.tv_sec as u64,
        up.tv_nsec as u32,
    )))
}
