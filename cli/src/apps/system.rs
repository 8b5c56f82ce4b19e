//! The changes `lego bench apps` makes to the machine (memory cgroups, swap files, zram, loop
//! devices, FUSE mounts, server processes), each recorded in a [`Guard`] that undoes them in
//! reverse order when it is dropped: on success, on an error, and after Ctrl-C. Also the
//! description of the machine the results are from.

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::measure::Interrupt;

type Undo = Box<dyn FnOnce() -> anyhow::Result<()>>;

/// Undo actions for system changes, run in reverse order on drop, and the interrupt that stops
/// set-up between steps.
#[derive(Default)]
pub struct Guard {
    undo: Vec<(String, Undo)>,
    interrupt: Interrupt,
}

impl Guard {
    /// A guard whose set-up steps stop once `interrupt` is raised.
    pub fn new(interrupt: &Interrupt) -> Guard {
        Guard { undo: Vec::new(), interrupt: interrupt.clone() }
    }

    /// Fails with [`crate::measure::Interrupted`] once Ctrl-C was pressed, so set-up stops
    /// between steps.
    pub fn check_interrupt(&self) -> anyhow::Result<()> {
        self.interrupt.check()
    }

    /// Records that `what` was done and how to undo it.
    pub fn push(&mut self, what: impl Into<String>, undo: impl FnOnce() -> anyhow::Result<()> + 'static) {
        self.undo.push((what.into(), Box::new(undo)));
    }

    /// Undoes everything, newest first. Every action is tried; the failures are returned.
    pub fn undo_all(&mut self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        while let Some((what, undo)) = self.undo.pop() {
            tracing::debug!("undoing: {what}");
            if let Err(e) = undo() {
                failed.push(format!("undoing {what}: {e:#}"));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("{}", failed.join("; "))
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.undo_all() {
            tracing::error!("restoring the system: {e:#}");
            eprintln!("lego bench apps: restoring the system: {e:#}");
        }
    }
}

/// Runs a system tool, failing with its stderr; returns its stdout.
pub fn tool(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// Where the cgroup v1 memory controller is mounted.
const MEMCG: &str = "/sys/fs/cgroup/memory";

/// A memory cgroup (v1) with a limit, removed by the guard.
pub struct Cgroup {
    dir: PathBuf,
    procs: CString,
}

impl Cgroup {
    /// Creates cgroup `name`, limited to `limit` bytes if given (swap is not limited: cgroup v1
    /// without `memsw` lets the group swap as much as it needs).
    pub fn create(guard: &mut Guard, name: &str, limit: Option<u64>) -> anyhow::Result<Cgroup> {
        let root = Path::new(MEMCG);
        if !root.join("memory.limit_in_bytes").exists() {
            bail!("no cgroup v1 memory controller at {MEMCG}");
        }
        let dir = root.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let d = dir.clone();
        guard.push(format!("cgroup {}", dir.display()), move || remove_cgroup(&d));
        if let Some(limit) = limit {
            write(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
        }
        let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).expect("no NUL in a path");
        Ok(Cgroup { dir, procs })
    }

    /// How many processes of the group the kernel's OOM killer has killed.
    pub fn oom_kills(&self) -> u64 {
        let s = std::fs::read_to_string(self.dir.join("memory.oom_control")).unwrap_or_default();
        s.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()).unwrap_or(0)
    }

    /// The most memory the group's processes have used at once, in bytes. Only what they
    /// allocate after joining counts (v1 does not move charges), so unlike a child's peak RSS
    /// it leaves out the harness's pages a forked child shares before it executes.
    pub fn max_usage(&self) -> anyhow::Result<u64> {
        let path = self.dir.join("memory.max_usage_in_bytes");
        let s = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        s.trim().parse().with_context(|| format!("parsing {}", path.display()))
    }

    /// Makes `cmd`'s process join the cgroup before it executes its program.
    pub fn enter_on_exec(&self, cmd: &mut Command) {
        let procs = self.procs.clone();
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe calls (open, write, close) on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" is the writing process itself.
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(e);
                }
                Ok(())
            });
        }
    }
}

/// Removes a cgroup once its last process is gone (exit is asynchronous, so retry briefly).
fn remove_cgroup(dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }
}

/// The active swap areas, from /proc/swaps (their device or file names).
pub fn active_swaps() -> anyhow::Result<Vec<String>> {
    let s = std::fs::read_to_string("/proc/swaps").context("reading /proc/swaps")?;
    Ok(s.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
}

/// `mkswap` + `swapon` on `dev`; the guard turns it off again.
pub fn swapon(guard: &mut Guard, dev: &str) -> anyhow::Result<()> {
    tool("mkswap", &[dev])?;
    guard.check_interrupt()?;
    tool("swapon", &[dev])?;
    let d = dev.to_string();
    guard.push(format!("swapon {dev}"), move || tool("swapoff", &[&d]).map(drop));
    Ok(())
}

/// A swap file of `size` bytes at `path` on the local disk ("Linux swap to SSD"), swapped on.
pub fn swap_file(guard: &mut Guard, path: &Path, size: u64) -> anyhow::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).create_new(true).open(path).with_context(|| format!("creating {}", path.display()))?;
    let p = path.to_path_buf();
    guard.push(format!("swap file {}", path.display()), move || {
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))
    });
    // Written, not fallocated: swapon refuses files with holes, and on some file systems
    // unwritten extents.
    let chunk = vec![0u8; 1 << 20];
    let mut w = std::io::BufWriter::new(f);
    for _ in 0..size.div_ceil(1 << 20) {
        std::io::Write::write_all(&mut w, &chunk)?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    guard.check_interrupt()?;
    swapon(guard, &path.to_string_lossy())
}

/// /dev/zram0 of `size` bytes, swapped on ("ramdisk swap"); the guard resets it.
pub fn zram(guard: &mut Guard, size: u64) -> anyhow::Result<()> {
    let sys = Path::new("/sys/block/zram0");
    if !sys.exists() {
        let _ = tool("modprobe", &["zram"]);
    }
    if !sys.exists() {
        bail!("no /dev/zram0 (the zram module is not available)");
    }
    let current = std::fs::read_to_string(sys.join("disksize")).context("reading zram0's disksize")?;
    if current.trim() != "0" {
        bail!("/dev/zram0 is in use (disksize {})", current.trim());
    }
    write(&sys.join("disksize"), &size.to_string())?;
    let reset = sys.join("reset");
    guard.push("zram0 disksize", move || write(&reset, "1"));
    swapon(guard, "/dev/zram0")
}

/// A loop device over `file`; the guard detaches it.
pub fn loop_device(guard: &mut Guard, file: &Path) -> anyhow::Result<String> {
    let dev = tool("losetup", &["--find", "--show", &file.to_string_lossy()])?.trim().to_string();
    let d = dev.clone();
    guard.push(format!("loop device {dev}"), move || tool("losetup", &["-d", &d]).map(drop));
    Ok(dev)
}

/// A `lego` server process (mem-server, remote-swap), started in a process group of its own so
/// that Ctrl-C at the terminal does not reach it before the harness has torn down what uses it.
/// The guard stops it.
pub fn start_server(guard: &mut Guard, lego: &Path, args: &[String], log: &Path, ready: &str) -> anyhow::Result<String> {
    let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(lego)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting lego {}", args.join(" ")))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let what = format!("lego {}", args.first().map_or("", String::as_str));
    let pid = child.id();
    guard.push(format!("{what} (pid {pid})"), move || stop(child));
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).with_context(|| format!("reading the first line of {what}"))?;
    match line.trim().split_once(ready) {
        Some((_, rest)) => Ok(rest.trim().to_string()),
        None => bail!("{what} did not start (see {}): {line:?}", log.display()),
    }
}

/// SIGTERM, then SIGKILL after 10 s.
fn stop(mut child: Child) -> anyhow::Result<()> {
    // SAFETY: kill on our own unreaped child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()?;
    bail!("pid {} did not stop on SIGTERM and was killed", child.id())
}

/// A directory created for the benchmark, removed (with what is in it) by the guard.
pub fn temp_dir(guard: &mut Guard, path: PathBuf) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    let p = path.clone();
    guard.push(format!("directory {}", path.display()), move || {
        // A mount point still mounted is not removed, nor is what is under it.
        if is_mounted(&p)? {
            tool("umount", &["-l", &p.to_string_lossy()])?;
        }
        std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))
    });
    Ok(path)
}

/// Whether `path` is a mount point (in /proc/self/mounts).
pub fn is_mounted(path: &Path) -> anyhow::Result<bool> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let p = path.to_string_lossy();
    Ok(mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(&p)))
}

/// Pages swapped in and out so far, from /proc/vmstat.
pub fn swap_counters() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
    let get = |k: &str| {
        s.lines().find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
    };
    (get("pswpin "), get("pswpout "))
}

/// One line about the machine: cores, memory, CPU, kernel, KVM kind.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|v| v.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let kvm = if Path::new("/sys/module/kvm_pvm").exists() {
        "KVM PVM (nested, page-table based: every guest exit costs tens of us)"
    } else if Path::new("/sys/module/kvm_intel").exists() {
        "KVM on Intel VMX"
    } else if Path::new("/sys/module/kvm_amd").exists() {
        "KVM on AMD SVM"
    } else {
        "no KVM module found"
    };
    format!("{cores} cores ({cpu}), {:.1} GiB memory, Linux {kernel}, {kvm}", mem_kib as f64 / (1 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn guard_undoes_in_reverse_and_tries_everything() {
        let log = Rc::new(RefCell::new(Vec::new()));
        {
            let mut g = Guard::default();
            for i in 0..3 {
                let l = log.clone();
                g.push(format!("step {i}"), move || {
                    l.borrow_mut().push(i);
                    if i == 1 {
                        bail!("step 1 cannot be undone");
                    }
                    Ok(())
                });
            }
            let e = g.undo_all().unwrap_err();
            assert!(e.to_string().contains("undoing step 1"), "{e}");
            assert_eq!(*log.borrow(), [2, 1, 0]);
            let l = log.clone();
            g.push("step 3", move || {
                l.borrow_mut().push(3);
                Ok(())
            });
        } // dropped: runs what is left
        assert_eq!(*log.borrow(), [2, 1, 0, 3]);
    }
}
