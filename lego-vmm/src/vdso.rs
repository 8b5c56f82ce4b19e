//! The vDSO: an ELF image (built from `lego-vmm/vdso/vdso.c` by `build.rs`) and a data page,
//! mapped read-only into every vNode process just above its user memory, so that
//! `clock_gettime`, `gettimeofday`, `time` and `getcpu` run without an exit. `AT_SYSINFO_EHDR`
//! points at the image; glibc and musl find `__vdso_*` there by version `LINUX_2.6`.
//!
//! Time: the guest reads the TSC at CPL3 (native speed on this KVM, and the same counter as
//! the host's: [`align_tsc`] makes sure of it) and turns it into nanoseconds with the
//! parameters of the data page: a TSC value, the host's `CLOCK_MONOTONIC`, `CLOCK_REALTIME` and
//! `CLOCK_BOOTTIME` at that value, and the nanoseconds per cycle. [`Clock`] keeps them current:
//! a thread of the run re-reads the host clocks every [`REFRESH`] and writes every process's
//! page under a sequence lock. The rate is measured against the host's `CLOCK_MONOTONIC` over
//! everything since the run started, so it tracks NTP's adjustments; a new anchor never goes
//! back on what the old parameters gave, so the clocks read through it never go backwards.
//! Until the first [`MIN_BASELINE`] of the run has been measured the page says to make the
//! system call.

use lego_proto::sync::{CondvarExt, LockExt};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

use crate::layout::{PAGE_SIZE, VDSO_BASE, VDSO_PAGES, VVAR_PAGE};
use crate::sysmem::SysMem;

/// The vDSO image (an ELF shared object linked at 0).
pub const IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vdso.so"));

const _: () = assert!(
    IMAGE.len() as u64 <= VDSO_PAGES * PAGE_SIZE,
    "the vDSO outgrew its pages"
);

/// How often the parameters are refreshed.
pub const REFRESH: Duration = Duration::from_millis(10);
/// How much of the run is measured before the TSC rate is trusted.
pub const MIN_BASELINE: Duration = Duration::from_millis(5);

/// Word offsets in the data page (`struct vdso_data` of `vdso/vdso.h`).
mod field {
    pub const SEQ: u64 = 0;
    pub const MODE: u64 = 8;
    pub const TSC_BASE: u64 = 16;
    pub const MULT: u64 = 24;
    pub const MONO_NS: u64 = 32;
    pub const REAL_NS: u64 = 40;
    pub const BOOT_NS: u64 = 48;
}
/// `VDSO_MODE_TSC`.
const MODE_TSC: u64 = 1;

/// `MSR_IA32_TSC`.
const MSR_TSC: u32 = 0x10;

/// One reading of the TSC with the host clocks at that moment.
#[derive(Clone, Copy, Debug)]
struct Sample {
    tsc: u64,
    mono: u64,
    real: u64,
    boot: u64,
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86-64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Readings taken for one [`Sample`]: the tightest is kept, so that a reading the host
/// scheduler interrupted does not skew the rate.
const SAMPLE_TRIES: usize = 8;

impl Sample {
    /// The TSC in the middle of a `CLOCK_MONOTONIC` reading, and the other clocks' offsets
    /// from it read right after: of [`SAMPLE_TRIES`] readings, the one that took least time.
    fn now() -> Sample {
        (0..SAMPLE_TRIES)
            .map(|_| {
                let t0 = rdtsc();
                let mono = clock_ns(libc::CLOCK_MONOTONIC);
                let real = clock_ns(libc::CLOCK_REALTIME);
                let boot = clock_ns(libc::CLOCK_BOOTTIME);
                let mono2 = clock_ns(libc::CLOCK_MONOTONIC);
                let t1 = rdtsc();
                // `real` and `boot` were read about a third and two thirds of the way.
                let step = mono2.saturating_sub(mono) / 3;
                let s = Sample {
                    tsc: t0 / 2 + t1 / 2,
                    mono: mono + step * 3 / 2,
                    real: real + step / 2,
                    boot: boot.saturating_sub(step / 2),
                };
                (t1.wrapping_sub(t0), s)
            })
            .min_by_key(|(took, _)| *took)
            .map(|(_, s)| s)
            .unwrap_or_else(|| unreachable!("SAMPLE_TRIES > 0"))
    }
}

/// The parameters a data page holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Params {
    tsc_base: u64,
    /// Nanoseconds per cycle times 2^32.
    mult: u64,
    mono_ns: u64,
    real_ns: u64,
    boot_ns: u64,
}

impl Params {
    /// What these parameters give `CLOCK_MONOTONIC` at `tsc` (as the vDSO computes it).
    fn mono_at(&self, tsc: u64) -> u64 {
        self.mono_ns
            + ((u128::from(tsc.saturating_sub(self.tsc_base)) * u128::from(self.mult)) >> 32) as u64
    }
}

/// The calibration: the run's first sample and the parameters last published.
#[derive(Default)]
struct Calibration {
    origin: Option<Sample>,
    last: Option<Params>,
}

impl Calibration {
    /// New parameters from `now`, `None` while the baseline is too short.
    fn update(&mut self, now: Sample) -> Option<Params> {
        let origin = *self.origin.get_or_insert(now);
        let span = now.mono.checked_sub(origin.mono)?;
        let cycles = now.tsc.checked_sub(origin.tsc).filter(|&c| c > 0)?;
        if span < MIN_BASELINE.as_nanos() as u64 {
            return None;
        }
        let rate = u64::try_from((u128::from(span) << 32) / u128::from(cycles)).ok()?;
        // Never behind what the previous parameters already gave for this TSC value; a lead
        // over the host's clock is given back by running slower (by at most 1%) until the
        // next refresh, as NTP slews a clock rather than stepping it back.
        let ahead = self
            .last
            .map_or(0, |p| p.mono_at(now.tsc).saturating_sub(now.mono));
        let slew =
            (u128::from(ahead) * u128::from(rate) / REFRESH.as_nanos()).min(u128::from(rate) / 100);
        let mult = rate - slew as u64;
        let p = Params {
            tsc_base: now.tsc,
            mult,
            mono_ns: now.mono + ahead,
            real_ns: now.real + ahead,
            boot_ns: now.boot + ahead,
        };
        self.last = Some(p);
        Some(p)
    }
}

struct Shared {
    calibration: Mutex<Calibration>,
    /// The system memory (holding the data page) of every process of the run.
    pages: Mutex<Vec<Weak<SysMem>>>,
    /// Set when the run's [`Clock`] is dropped: the refresh thread ends.
    stopped: (Mutex<bool>, Condvar),
}

/// The vDSO clock of a run: its calibration, shared by the data pages of all its processes,
/// and the thread that refreshes them.
pub struct Clock {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock that starts measuring now; its thread starts with the first page.
    pub fn new() -> Clock {
        let shared = Arc::new(Shared {
            calibration: Mutex::new(Calibration::default()),
            pages: Mutex::new(Vec::new()),
            stopped: (Mutex::new(false), Condvar::new()),
        });
        shared.calibration.lock_unpoisoned().update(Sample::now());
        Clock {
            shared,
            thread: Mutex::new(None),
        }
    }

    /// Keeps the data page in `sys` current from now on (until `sys` is dropped).
    pub fn attach(&self, sys: &Arc<SysMem>) {
        let mut pages = self.shared.pages.lock_unpoisoned();
        pages.push(Arc::downgrade(sys));
        if let Some(p) = self.shared.calibration.lock_unpoisoned().last {
            publish(sys, &p);
        }
        drop(pages);
        let mut thread = self.thread.lock_unpoisoned();
        if thread.is_none() {
            let shared = self.shared.clone();
            match std::thread::Builder::new()
                .name("vdso-clock".into())
                .spawn(move || refresh_loop(&shared))
            {
                Ok(h) => *thread = Some(h),
                // Without the thread the pages stay in system-call mode: slower, still right.
                Err(e) => {
                    tracing::warn!("the vDSO clock thread did not start ({e}): clock calls exit")
                }
            }
        }
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        *self.shared.stopped.0.lock_unpoisoned() = true;
        self.shared.stopped.1.notify_all();
        if let Some(h) = self.thread.lock_unpoisoned().take() {
            // The loop only sleeps and writes pages; a panic there has been reported.
            let _ = h.join();
        }
    }
}

fn refresh_loop(shared: &Shared) {
    loop {
        let params = shared.calibration.lock_unpoisoned().update(Sample::now());
        if let Some(p) = params {
            let mut pages = shared.pages.lock_unpoisoned();
            pages.retain(|w| match w.upgrade() {
                Some(sys) => {
                    publish(&sys, &p);
                    true
                }
                None => false,
            });
        }
        let stopped = shared.stopped.0.lock_unpoisoned();
        let (stopped, _) = shared
            .stopped
            .1
            .wait_timeout_while_unpoisoned(stopped, REFRESH, |s| !*s);
        if *stopped {
            return;
        }
    }
}

/// Writes `p` into the data page of `sys` under its sequence lock (the caller holds the lock of
/// the page list: one writer at a time).
fn publish(sys: &SysMem, p: &Params) {
    let word = |off: u64| sys.word(VVAR_PAGE + off);
    let seq = word(field::SEQ);
    let s = seq.load(Ordering::Relaxed);
    seq.store(s.wrapping_add(1), Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    for (off, v) in [
        (field::TSC_BASE, p.tsc_base),
        (field::MULT, p.mult),
        (field::MONO_NS, p.mono_ns),
        (field::REAL_NS, p.real_ns),
        (field::BOOT_NS, p.boot_ns),
        (field::MODE, MODE_TSC),
    ] {
        word(off).store(v, Ordering::Relaxed);
    }
    seq.store(s.wrapping_add(2), Ordering::Release);
}

/// Whether the data page in `sys` lets the vDSO read the clocks itself (the clock has been
/// calibrated and published there).
pub fn ready(sys: &SysMem) -> bool {
    sys.word(VVAR_PAGE + field::MODE).load(Ordering::Acquire) == MODE_TSC
}

/// Offset in the image of the dynamic symbol `name` (a function the vDSO exports).
pub fn symbol(name: &[u8]) -> Option<u64> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(IMAGE.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(IMAGE.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(IMAGE.get(o..o + 8)?.try_into().ok()?));
    // Section headers: find .dynsym (type 11) and its string table (its sh_link).
    let (shoff, shentsize, shnum) = (
        u64_at(0x28)? as usize,
        usize::from(u16_at(0x3a)?),
        usize::from(u16_at(0x3c)?),
    );
    let section = |i: usize| shoff + i * shentsize;
    let dynsym = (0..shnum).find(|&i| u32_at(section(i) + 4) == Some(11))?;
    let strtab = section(u32_at(section(dynsym) + 40)? as usize);
    let (sym_off, sym_size) = (
        u64_at(section(dynsym) + 24)? as usize,
        u64_at(section(dynsym) + 32)? as usize,
    );
    let str_off = u64_at(strtab + 24)? as usize;
    (0..sym_size / 24)
        .map(|i| sym_off + 24 * i)
        .find_map(|sym| {
            let name_at = str_off + u32_at(sym)? as usize;
            let end = name_at + IMAGE.get(name_at..)?.iter().position(|&c| c == 0)?;
            (&IMAGE[name_at..end] == name)
                .then(|| u64_at(sym + 8))
                .flatten()
        })
}

/// Writes the image into `sys` (the data page stays zero: system-call mode).
pub fn install(sys: &SysMem) {
    sys.write_bytes(VDSO_BASE, IMAGE);
}

/// Makes the guest's TSC the host's (the vDSO's parameters are in host cycles): KVM starts a
/// new VM's TSC near 0 on VMX/SVM, while this nested PVM passes the host's through. Reads the
/// guest's TSC between two host readings and, if it is off, writes the host's value.
pub fn align_tsc(vcpu: &VcpuFd) {
    let read = || -> Option<(u64, u64, u64)> {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_TSC,
            ..Default::default()
        }])
        .ok()?;
        let before = rdtsc();
        let n = vcpu.get_msrs(&mut msrs).ok()?;
        let after = rdtsc();
        (n == 1).then(|| (before, msrs.as_slice()[0].data, after))
    };
    let Some((before, guest, after)) = read() else {
        return;
    };
    // Within the time the ioctl took, plus a margin: the same counter.
    let slack = (after - before).max(1) * 4;
    if guest + slack >= before && guest <= after + slack {
        return;
    }
    if let Ok(msrs) = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_TSC,
        data: rdtsc(),
        ..Default::default()
    }]) {
        if vcpu.set_msrs(&msrs).is_err() {
            tracing::warn!(
                "the guest TSC differs from the host's and cannot be set: vDSO times will be wrong"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tsc: u64, mono: u64) -> Sample {
        Sample {
            tsc,
            mono,
            real: mono + 1_000_000_000_000,
            boot: mono + 5,
        }
    }

    #[test]
    fn the_rate_comes_from_the_baseline_and_waits_for_it() {
        let mut c = Calibration::default();
        assert_eq!(c.update(at(1_000, 0)), None, "the origin");
        assert_eq!(
            c.update(at(1_000 + 2_000_000, 1_000_000)),
            None,
            "1 ms is too short a baseline"
        );
        let p = c
            .update(at(1_000 + 20_000_000, 10_000_000))
            .expect("10 ms is enough");
        // 2 cycles per ns: half a ns per cycle.
        assert_eq!(p.mult, 1 << 31);
        assert_eq!(p.mono_at(p.tsc_base + 2_000), p.mono_ns + 1_000);
        assert_eq!(p.real_ns - p.mono_ns, 1_000_000_000_000);
    }

    #[test]
    fn a_new_anchor_never_goes_back() {
        let mut c = Calibration::default();
        c.update(at(0, 0));
        let p1 = c.update(at(20_000_000, 10_000_000)).unwrap();
        // The host clock ran slower than the old rate said: the new base keeps what the old
        // parameters gave, so readings straddling the update stay ordered.
        let p2 = c.update(at(40_000_000, 19_999_000)).unwrap();
        assert!(p2.mono_ns >= p1.mono_at(40_000_000));
        assert!(p2.mono_at(40_000_001) >= p1.mono_at(40_000_000));
    }

    #[test]
    fn exported_functions_are_found_in_the_image() {
        let at = symbol(b"__vdso_clock_gettime").expect("exported");
        assert!(at > 0 && (at as usize) < IMAGE.len());
        assert_eq!(symbol(b"clock_gettime"), Some(at), "the alias");
        assert_eq!(symbol(b"no_such_function"), None);
    }

    #[test]
    fn the_image_is_a_shared_object_with_the_dynamic_table_libcs_need() {
        assert_eq!(&IMAGE[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([IMAGE[16], IMAGE[17]]), 3, "ET_DYN");
        let has = |s: &[u8]| IMAGE.windows(s.len()).any(|w| w == s);
        for name in [
            &b"__vdso_clock_gettime"[..],
            b"__vdso_gettimeofday",
            b"__vdso_time",
            b"__vdso_getcpu",
            b"LINUX_2.6",
        ] {
            assert!(has(name), "{}", String::from_utf8_lossy(name));
        }
    }
}
