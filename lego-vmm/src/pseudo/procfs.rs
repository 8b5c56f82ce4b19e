//! The text of the `/proc` files, in Linux's formats.

use std::fmt::Write as _;

use super::clock::wall_time;
use super::view::ProcView;
use crate::layout::PAGE_SIZE;
use crate::process::Process;
use lego_proto::vma::VmaKind;

/// `USER_HZ`: the unit of the times in `/proc/stat` and `/proc/PID/stat`.
const USER_HZ: u64 = 100;

/// The host CPUs the pComponent may run the vNode on (the VMM process's affinity).
pub fn host_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is valid; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; getpid has no preconditions.
    let ok = unsafe {
        libc::sched_getaffinity(
            libc::getpid(),
            std::mem::size_of::<libc::cpu_set_t>(),
            &mut set,
        )
    } == 0;
    if !ok {
        return vec![0];
    }
    // SAFETY: `set` is initialised and every index is below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// A CPU list in the kernel's `0-3,6` form, with a newline.
pub fn cpu_list(cpus: &[usize]) -> Vec<u8> {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if i == j {
            let _ = write!(out, "{}", cpus[i]);
        } else {
            let _ = write!(out, "{}-{}", cpus[i], cpus[j]);
        }
        i = j + 1;
    }
    out.push('\n');
    out.into_bytes()
}

/// The strings, each followed by a NUL (`cmdline`, `environ`).
pub fn nul_list(items: &[Vec<u8>]) -> Vec<u8> {
    items
        .iter()
        .flat_map(|s| s.iter().copied().chain(std::iter::once(0)))
        .collect()
}

/// What a host descriptor is, as the host's `/proc/self/fd` names it (the terminal, a pipe or
/// a file `lego run` was given as standard input or output).
pub fn host_fd_name(fd: std::os::fd::RawFd) -> Vec<u8> {
    let link = format!("/proc/self/fd/{fd}");
    std::fs::read_link(link)
        .map(|p| std::os::unix::ffi::OsStringExt::into_vec(p.into_os_string()))
        .unwrap_or_else(|_| b"anon_inode:[lego]".to_vec())
}

/// `/proc/cpuinfo`: the blocks of the CPUs the vNode may use.
pub fn cpuinfo() -> Vec<u8> {
    let cpus = host_cpus();
    let host = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut out = String::new();
    for block in host.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let n = block
            .lines()
            .find_map(|l| l.strip_prefix("processor"))
            .and_then(|r| {
                r.trim_start_matches([' ', '\t', ':'])
                    .trim()
                    .parse::<usize>()
                    .ok()
            });
        if n.is_some_and(|n| cpus.contains(&n)) {
            out.push_str(block.trim_matches('\n'));
            out.push_str("\n\n");
        }
    }
    out.into_bytes()
}

/// Every running process of the vNode as seen now (the caller's included).
fn all_views(p: &Process) -> Vec<ProcView> {
    p
        .procs
        .running_pids(p.pid)
        .into_iter()
        .filter_map(|pid| p.view_of(pid))
        .collect()
}

/// The vNode's memory: `(total, free, resident in the ExCaches, ExCache capacity)` in bytes.
/// Total is the vNode's user memory, free what no process has mapped of it.
pub fn memory(p: &Process) -> (u64, u64, u64, u64) {
    let views = all_views(p);
    let total = p.mm.size();
    let mapped: u64 = views.iter().map(ProcView::vsz).sum();
    let resident = views.iter().map(|v| v.resident).sum();
    let capacity = p.mm.cache().pool().size() * views.len().max(1) as u64;
    (total, total.saturating_sub(mapped), resident, capacity)
}

/// `/proc/meminfo`: the vNode's memory; `Cached` is what its ExCaches hold.
pub fn meminfo(p: &Process) -> Vec<u8> {
    let (total, free, resident, capacity) = memory(p);
    let kb = |b: u64| b / 1024;
    let rows: [(&str, u64); 16] = [
        ("MemTotal", kb(total)),
        ("MemFree", kb(free)),
        ("MemAvailable", kb(free)),
        ("Buffers", 0),
        ("Cached", kb(resident)),
        ("SwapCached", 0),
        ("Active", kb(resident)),
        ("Inactive", 0),
        ("SwapTotal", 0),
        ("SwapFree", 0),
        ("Dirty", 0),
        ("Shmem", 0),
        ("SReclaimable", 0),
        ("VmallocTotal", kb(crate::layout::MAX_USER_MEM)),
        ("ExCacheTotal", kb(capacity)),
        ("ExCacheResident", kb(resident)),
    ];
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{:<16}{:>8} kB", format!("{k}:"), v);
    }
    out.into_bytes()
}

/// Seconds since the vNode started.
fn uptime_secs(p: &Process) -> f64 {
    p.procs.started().elapsed().as_secs_f64()
}

/// CPU time (user, system) the VMM process has used running the vNode, in seconds.
fn vnode_cpu() -> (f64, f64) {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// `/proc/uptime`: seconds since the vNode started, and the idle seconds of its CPUs.
pub fn uptime(p: &Process) -> Vec<u8> {
    let up = uptime_secs(p);
    let (u, s) = vnode_cpu();
    let idle = (up * host_cpus().len() as f64 - u - s).max(0.0);
    format!("{up:.2} {idle:.2}\n").into_bytes()
}

/// The pComponent's load averages over 1, 5 and 15 minutes.
pub fn load_averages() -> [f64; 3] {
    let mut avg = [0f64; 3];
    // SAFETY: `avg` has room for the 3 values asked for.
    if unsafe { libc::getloadavg(avg.as_mut_ptr(), 3) } != 3 {
        avg = [0.0; 3];
    }
    avg
}

/// `/proc/loadavg`: the pComponent's load averages, then the vNode's threads (the caller
/// running, of all) and the last id handed out.
pub fn loadavg(p: &Process) -> Vec<u8> {
    let avg = load_averages();
    let threads: usize = all_views(p).iter().map(|v| v.threads.len()).sum();
    format!(
        "{:.2} {:.2} {:.2} 1/{} {}\n",
        avg[0],
        avg[1],
        avg[2],
        threads,
        p.procs.last_id()
    )
    .into_bytes()
}

/// `/proc/stat`: the CPU time of the vNode (what the VMM process used, the rest idle), when
/// it started and its processes. The VMM does not account its time per CPU, so each CPU the
/// vNode may use (numbered as in `cpuinfo`) gets an equal share of the total on its own
/// `cpuN` line; programs that count CPUs from these lines (libuv's `uv_cpu_info`, Node's
/// `os.cpus()`) find as many as `nproc`.
pub fn stat(p: &Process) -> Vec<u8> {
    let up = uptime_secs(p);
    let (u, s) = vnode_cpu();
    let ticks = |x: f64| (x * USER_HZ as f64) as u64;
    let cpus = host_cpus();
    let n = cpus.len() as u64;
    let (user, system) = (ticks(u), ticks(s));
    let idle = ticks((up * n as f64 - u - s).max(0.0));
    let mut out = String::new();
    let _ = writeln!(out, "cpu  {user} 0 {system} {idle} 0 0 0 0 0 0");
    // The `i`th of `n` equal shares of `total`, the remainder going to the first ones.
    let share = |total: u64, i: u64| total / n + u64::from(i < total % n);
    for (i, cpu) in (0..).zip(&cpus) {
        let _ = writeln!(out, "cpu{cpu} {} 0 {} {} 0 0 0 0 0 0", share(user, i), share(system, i), share(idle, i));
    }
    let _ = writeln!(out, "intr 0");
    let _ = writeln!(out, "ctxt 0");
    let _ = writeln!(
        out,
        "btime {}",
        wall_time(p.procs.started()).sec
    );
    let _ = writeln!(out, "processes {}", p.procs.last_id());
    let _ = writeln!(out, "procs_running 1");
    let _ = writeln!(out, "procs_blocked 0");
    out.into_bytes()
}

/// `/proc/PID/limits`: each resource limit, soft and hard, in Linux's table (the names and
/// units of `fs/proc/base.c`, in `RLIMIT_*` order).
pub fn limits(v: &ProcView) -> Vec<u8> {
    const NAMES: [(&str, &str); 16] = [
        ("Max cpu time", "seconds"),
        ("Max file size", "bytes"),
        ("Max data size", "bytes"),
        ("Max stack size", "bytes"),
        ("Max core file size", "bytes"),
        ("Max resident set", "bytes"),
        ("Max processes", "processes"),
        ("Max open files", "files"),
        ("Max locked memory", "bytes"),
        ("Max address space", "bytes"),
        ("Max file locks", "locks"),
        ("Max pending signals", "signals"),
        ("Max msgqueue size", "bytes"),
        ("Max nice priority", ""),
        ("Max realtime priority", ""),
        ("Max realtime timeout", "us"),
    ];
    let value = |x: u64| if x == libc::RLIM_INFINITY { "unlimited".to_string() } else { x.to_string() };
    let mut out = format!("{:<25} {:<20} {:<20} {:<10}\n", "Limit", "Soft Limit", "Hard Limit", "Units");
    for ((name, unit), &(soft, hard)) in NAMES.iter().zip(&v.rlimits) {
        let _ = write!(out, "{name:<25} {:<20} {:<20} ", value(soft), value(hard));
        if unit.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{unit:<10}");
        }
    }
    out.into_bytes()
}

/// The name a region has in `maps`.
fn region_name(v: &ProcView, kind: &VmaKind) -> Vec<u8> {
    match kind {
        VmaKind::Image => v.image.exe.clone(),
        VmaKind::Heap => b"[heap]".to_vec(),
        VmaKind::Stack => b"[stack]".to_vec(),
        VmaKind::Anon => Vec::new(),
        VmaKind::File(path) => path.clone(),
    }
}

/// `/proc/PID/maps`.
pub fn maps(v: &ProcView) -> Vec<u8> {
    let mut out = Vec::new();
    for m in &v.maps {
        let shared = v.shared.iter().any(|&(s, e)| s <= m.start && m.start < e);
        let name = match m.kind {
            // What Linux names a shared anonymous mapping (its shmem file).
            VmaKind::Anon if shared => b"/dev/zero (deleted)".to_vec(),
            _ => region_name(v, &m.kind),
        };
        let prot = m.prot;
        let mut line = format!(
            "{:08x}-{:08x} {}{}{}{} 00000000 00:00 0",
            m.start,
            m.end,
            if prot.readable() { 'r' } else { '-' },
            if prot.writable() { 'w' } else { '-' },
            if prot.executable() { 'x' } else { '-' },
            if shared { 's' } else { 'p' },
        )
        .into_bytes();
        if !name.is_empty() {
            line.resize(73, b' ');
            line.extend_from_slice(&name);
        }
        line.push(b'\n');
        out.extend_from_slice(&line);
    }
    use crate::layout::{VDSO_BASE, VDSO_PAGES, VVAR_PAGE};
    for (start, end, perm, name) in [
        (VVAR_PAGE, VDSO_BASE, "r--p", "[vvar]"),
        (
            VDSO_BASE,
            VDSO_BASE + VDSO_PAGES * PAGE_SIZE,
            "r-xp",
            "[vdso]",
        ),
    ] {
        let line = format!("{start:08x}-{end:08x} {perm} 00000000 00:00 0");
        out.extend_from_slice(format!("{line:<73}{name}\n").as_bytes());
    }
    out
}

/// Clock ticks from the vNode's start to the process's.
fn start_ticks(p: &Process, v: &ProcView) -> u64 {
    let since = v.started.saturating_duration_since(p.procs.started());
    (since.as_secs_f64() * USER_HZ as f64) as u64
}

/// The one-letter state: the caller runs; the others are taken as sleeping (the VMM does not
/// track whether a guest thread is on a CPU or waiting).
fn state(p: &Process, v: &ProcView) -> (char, &'static str) {
    if v.stopped {
        ('T', "stopped")
    } else if v.pid == p.pid {
        ('R', "running")
    } else {
        ('S', "sleeping")
    }
}

fn ids(p: &Process, pid: i32) -> (i32, i32, i32) {
    let t = &p.procs;
    (
        t.ppid(pid),
        t.pgid(pid).unwrap_or(pid),
        t.sid(pid).unwrap_or(pid),
    )
}

fn code_range(v: &ProcView) -> (u64, u64) {
    let image: Vec<_> = v.maps.iter().filter(|m| m.kind == VmaKind::Image).collect();
    let exec = image.iter().find(|m| m.prot.executable());
    exec.map_or((0, 0), |m| (m.start, m.end))
}

/// `/proc/PID/stat`, the 52 fields of Linux's `do_task_stat`. Faults are the ExCache's: minor
/// are lines filled locally, major lines fetched from a mem-server. CPU times are not kept per
/// process (0).
pub fn pid_stat(p: &Process, v: &ProcView) -> Vec<u8> {
    let (ppid, pgid, sid) = ids(p, v.pid);
    let (code_start, code_end) = code_range(v);
    let stack = v
        .maps
        .iter()
        .find(|m| m.kind == VmaKind::Stack)
        .map_or(0, |m| m.end);
    let rss_pages = v.resident / PAGE_SIZE;
    let nice = v.nice.iter().find(|&&(t, _)| t == v.tid).map_or(0, |&(_, n)| n);
    format!(
        "{pid} ({comm}) {st} {ppid} {pgid} {sid} 0 -1 4194304 {minflt} 0 {majflt} 0 0 0 0 0 {prio} {nice} {threads} 0 {start} {vsz} {rss} 18446744073709551615 {cs} {ce} {stack} 0 0 0 {blk} {ign} {cgt} 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        pid = v.tid,
        comm = String::from_utf8_lossy(&v.comm),
        st = state(p, v).0,
        minflt = v.faults.0,
        majflt = v.faults.1,
        prio = 20 + nice,
        nice = nice,
        threads = v.threads.len(),
        start = start_ticks(p, v),
        vsz = v.vsz(),
        rss = rss_pages,
        cs = code_start,
        ce = code_end,
        blk = v.sig_blocked,
        ign = v.sig_ignored,
        cgt = v.sig_caught,
    )
    .into_bytes()
}

/// `/proc/PID/statm`, in pages.
pub fn statm(v: &ProcView) -> Vec<u8> {
    let (cs, ce) = code_range(v);
    let data: u64 = v
        .maps
        .iter()
        .filter(|m| matches!(m.kind, VmaKind::Heap | VmaKind::Anon | VmaKind::Stack))
        .map(|m| m.end - m.start)
        .sum();
    format!(
        "{} {} 0 {} 0 {} 0\n",
        v.vsz() / PAGE_SIZE,
        v.resident / PAGE_SIZE,
        (ce - cs) / PAGE_SIZE,
        data / PAGE_SIZE
    )
    .into_bytes()
}

/// `/proc/PID/status`.
pub fn status(p: &Process, v: &ProcView) -> Vec<u8> {
    let (ppid, _, _) = ids(p, v.pid);
    let (st, st_name) = state(p, v);
    let c = v.creds;
    let kb = |b: u64| b / 1024;
    let (cs, ce) = code_range(v);
    let stack: u64 = v
        .maps
        .iter()
        .filter(|m| m.kind == VmaKind::Stack)
        .map(|m| m.end - m.start)
        .sum();
    let data: u64 = v
        .maps
        .iter()
        .filter(|m| matches!(m.kind, VmaKind::Heap | VmaKind::Anon))
        .map(|m| m.end - m.start)
        .sum();
    let fd_size = v
        .fds
        .last()
        .map_or(64, |(fd, _)| (fd + 1).next_multiple_of(64));
    let mut out = String::new();
    let _ = writeln!(out, "Name:\t{}", String::from_utf8_lossy(&v.comm));
    let _ = writeln!(out, "Umask:\t{:04o}", v.umask);
    let _ = writeln!(out, "State:\t{st} ({st_name})");
    let _ = writeln!(
        out,
        "Tgid:\t{}\nNgid:\t0\nPid:\t{}\nPPid:\t{ppid}\nTracerPid:\t0",
        v.pid, v.tid
    );
    let _ = writeln!(out, "Uid:\t{}\t{}\t{}\t{}", c.uid, c.euid, c.suid, c.fsuid);
    let _ = writeln!(out, "Gid:\t{}\t{}\t{}\t{}", c.gid, c.egid, c.sgid, c.fsgid);
    let _ = writeln!(out, "FDSize:\t{fd_size}");
    let _ = writeln!(
        out,
        "VmPeak:\t{:>8} kB\nVmSize:\t{:>8} kB",
        kb(v.vsz()),
        kb(v.vsz())
    );
    let _ = writeln!(out, "VmRSS:\t{:>8} kB", kb(v.resident));
    let _ = writeln!(
        out,
        "VmData:\t{:>8} kB\nVmStk:\t{:>8} kB\nVmExe:\t{:>8} kB",
        kb(data),
        kb(stack),
        kb(ce - cs)
    );
    let _ = writeln!(out, "Threads:\t{}", v.threads.len());
    let _ = writeln!(out, "SigPnd:\t{:016x}\nShdPnd:\t{:016x}", 0, v.sig_pending);
    let _ = writeln!(
        out,
        "SigBlk:\t{:016x}\nSigIgn:\t{:016x}\nSigCgt:\t{:016x}",
        v.sig_blocked, v.sig_ignored, v.sig_caught
    );
    let k = &c.caps;
    let _ = writeln!(
        out,
        "CapInh:\t{:016x}\nCapPrm:\t{:016x}\nCapEff:\t{:016x}\nCapBnd:\t{:016x}\nCapAmb:\t{:016x}\nNoNewPrivs:\t{}",
        k.inheritable, k.permitted, k.effective, k.bounding, k.ambient, u8::from(k.no_new_privs)
    );
    let _ = writeln!(
        out,
        "Cpus_allowed_list:\t{}",
        String::from_utf8_lossy(&cpu_list(&host_cpus())).trim_end()
    );
    out.into_bytes()
}

/// A pseudo file system as the mount table lists it.
pub struct PseudoMount {
    /// `st_dev` of its root.
    pub dev: u64,
    /// Its mount point.
    pub at: &'static str,
    /// Its type, also its source.
    pub kind: &'static str,
    /// Its mount options.
    pub options: &'static str,
}

/// The vNode's mounts, as `/proc/PID/mounts` and `mountinfo` show them: its files at `/`, then
/// the `pseudo` file systems. Each is `(st_dev, mount point, type, source, options)`.
fn mount_table(p: &Process, pseudo: &[PseudoMount]) -> Vec<(u64, &'static str, String, Vec<u8>, String)> {
    let fs = p.fs.stat_fs().ok();
    let magic = fs.as_ref().map_or(0, |f| f.fs_type);
    let names = [
        (libc::EXT4_SUPER_MAGIC, "ext4"),
        (libc::XFS_SUPER_MAGIC, "xfs"),
        (libc::BTRFS_SUPER_MAGIC, "btrfs"),
        (libc::OVERLAYFS_SUPER_MAGIC, "overlay"),
        (libc::TMPFS_MAGIC, "tmpfs"),
        (libc::NFS_SUPER_MAGIC, "nfs"),
    ];
    let fs_type = names.iter().find(|(m, _)| *m as u64 == magic).map_or("unknown", |&(_, name)| name);
    let flags = fs.as_ref().map_or(0, |f| f.flags);
    let opts = format!(
        "{},{}",
        if flags & libc::ST_RDONLY != 0 { "ro" } else { "rw" },
        if flags & libc::ST_NOATIME != 0 { "noatime" } else { "relatime" }
    );
    let root_dev = p.fs.stat(b"/", true).map_or(0, |s| s.dev);
    let mounted = pseudo.iter().map(|m| (m.dev, m.at, m.kind.to_string(), m.kind.as_bytes().to_vec(), m.options.to_string()));
    std::iter::once((root_dev, "/", fs_type.to_string(), p.fs.source(), opts)).chain(mounted).collect()
}

/// `name` with the bytes that separate the fields of a mount table written as octal escapes
/// (`\040` for a space), as Linux's `mangle` does.
fn mangled(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for &b in name {
        if matches!(b, b' ' | b'\t' | b'\n' | b'\\') {
            out.extend_from_slice(format!("\\{b:03o}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// `/proc/PID/mounts` (and `/proc/mounts`): `source mount-point type options 0 0`.
pub fn mounts(p: &Process, pseudo: &[PseudoMount]) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, at, kind, source, opts) in mount_table(p, pseudo) {
        out.extend_from_slice(&mangled(&source));
        out.extend_from_slice(format!(" {at} {kind} {opts} 0 0\n").as_bytes());
    }
    out
}

/// `/proc/PID/mountinfo`: mount id, parent id, `major:minor` of `st_dev`, root, mount point,
/// options, `-`, type, source, super options (Linux's `show_mountinfo`).
pub fn mountinfo(p: &Process, pseudo: &[PseudoMount]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (dev, at, kind, source, opts)) in mount_table(p, pseudo).into_iter().enumerate() {
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let parent = if i == 0 { 1 } else { 2 };
        out.extend_from_slice(format!("{} {parent} {major}:{minor} / {at} {opts} - {kind} ", i + 2).as_bytes());
        out.extend_from_slice(&mangled(&source));
        out.extend_from_slice(format!(" {}\n", opts.split(',').next().unwrap_or("rw")).as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_as_the_kernel_writes_them() {
        assert_eq!(cpu_list(&[0, 1]), b"0-1\n");
        assert_eq!(cpu_list(&[0, 2, 3, 4, 7]), b"0,2-4,7\n");
        assert_eq!(cpu_list(&[5]), b"5\n");
    }

    #[test]
    fn nul_separated_lists() {
        assert_eq!(nul_list(&[b"ls".to_vec(), b"-l".to_vec()]), b"ls\0-l\0");
        assert!(nul_list(&[]).is_empty());
    }
}
