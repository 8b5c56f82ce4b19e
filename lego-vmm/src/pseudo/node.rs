//! Nodes of the pseudo tree: looking a path up, and opening or stat-ing what it names.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use super::dev::Device;
use super::clock::wall_time;
use super::procfs;
use super::view::ProcView;
use super::Opened;
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::fs::{DirEntry, File, Stat, Timespec};
use crate::process::Process;

/// `st_dev` of `/proc` (an anonymous device, as Linux's procfs).
const PROC_DEV: u64 = 0x16;
/// `st_dev` of `/sys`.
const SYS_DEV: u64 = 0x15;
/// `st_dev` of `/dev` (devtmpfs).
pub(super) const DEV_DEV: u64 = 0x5;
/// The inode of `/dev/pts`; its entries follow it.
const PTS_INO: u64 = 0x200;
/// What `/dev` lists for `shm` (a directory of the vNode's files: `stat` gives its own inode).
const SHM_INO: u64 = 0x1f0;

/// The pseudo file systems as `/proc/PID/mounts` lists them after the vNode's files.
const PSEUDO_MOUNTS: [procfs::PseudoMount; 3] = [
    procfs::PseudoMount { dev: PROC_DEV, at: "/proc", kind: "proc", options: "rw,nosuid,nodev,noexec,relatime" },
    procfs::PseudoMount { dev: SYS_DEV, at: "/sys", kind: "sysfs", options: "ro,nosuid,nodev,noexec,relatime" },
    procfs::PseudoMount { dev: DEV_DEV, at: "/dev", kind: "devtmpfs", options: "rw,nosuid,relatime" },
];

/// Where a pseudo symlink points.
#[derive(Clone)]
pub enum Target {
    /// A path (absolute, or relative to the link's directory).
    Path(Vec<u8>),
    /// A descriptor that is not a file of the vNode (a pipe, a host descriptor), with the name
    /// `readlink` gives it.
    Fd(Arc<OpenFile>, Vec<u8>),
}

impl Target {
    /// What `readlink` reports.
    pub fn text(&self) -> Vec<u8> {
        match self {
            Target::Path(p) | Target::Fd(_, p) => p.clone(),
        }
    }
}

/// Metadata common to every node.
#[derive(Clone, Copy)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub time: Timespec,
    /// The size `stat` reports where it is not the node's own (procfs gives its symlinks 0,
    /// and those of `fd/` 64, whatever their target).
    pub size: Option<u64>,
}

/// What a node is.
pub enum Kind {
    /// A directory and its entries (name, `DT_*`, inode).
    Dir(Vec<(Vec<u8>, u8, u64)>),
    /// A read-only text file, generated now.
    File(Vec<u8>),
    Link(Target),
    Device(Device),
    /// The slave of the run's pty of this number (`/dev/pts/N`), a host terminal.
    Pty(u32),
}

/// A node of the pseudo tree.
pub struct Node {
    pub meta: Meta,
    pub kind: Kind,
}

/// `/` + the components joined.
pub fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    if comps.is_empty() {
        return b"/".to_vec();
    }
    comps
        .iter()
        .flat_map(|c| std::iter::once(b'/').chain(c.iter().copied()))
        .collect()
}

/// What a look-up needs: the calling process, and through its process table the others.
pub struct Ctx<'a> {
    pub p: &'a Process,
    boot: Timespec,
}

/// The files of `/proc/PID`.
const PID_FILES: &[(&[u8], u8)] = &[
    (b"cmdline", libc::DT_REG),
    (b"comm", libc::DT_REG),
    (b"cwd", libc::DT_LNK),
    (b"environ", libc::DT_REG),
    (b"exe", libc::DT_LNK),
    (b"fd", libc::DT_DIR),
    (b"limits", libc::DT_REG),
    (b"maps", libc::DT_REG),
    (b"mountinfo", libc::DT_REG),
    (b"mounts", libc::DT_REG),
    (b"root", libc::DT_LNK),
    (b"stat", libc::DT_REG),
    (b"statm", libc::DT_REG),
    (b"status", libc::DT_REG),
    (b"task", libc::DT_DIR),
];

/// The files of `/proc` besides the process directories.
const PROC_FILES: &[(&[u8], u8)] = &[
    (b"cpuinfo", libc::DT_REG),
    (b"loadavg", libc::DT_REG),
    (b"meminfo", libc::DT_REG),
    (b"mounts", libc::DT_LNK),
    (b"self", libc::DT_LNK),
    (b"stat", libc::DT_REG),
    (b"uptime", libc::DT_REG),
];

/// The `/sys` directories leading to the CPU lists.
const SYS_CHAIN: &[&[u8]] = &[b"sys", b"devices", b"system", b"cpu"];

/// The CPU lists in `/sys/devices/system/cpu` and their inode numbers: each lists the CPUs the
/// vNode may use (`lscpu` reads all three and counts the present ones).
const CPU_LISTS: [(&[u8], u64); 3] = [(b"online", 0x120), (b"possible", 0x121), (b"present", 0x122)];

fn name_ino(base: u64, i: usize) -> u64 {
    base + i as u64 + 1
}

impl<'a> Ctx<'a> {
    pub fn new(p: &'a Process) -> Ctx<'a> {
        Ctx {
            p,
            boot: wall_time(p.procs.started()),
        }
    }

    fn meta(&self, dev: u64, ino: u64, mode: u32) -> Meta {
        Meta {
            dev,
            ino,
            mode,
            uid: 0,
            gid: 0,
            rdev: 0,
            time: self.boot,
            size: None,
        }
    }

    fn dir(&self, dev: u64, ino: u64, entries: Vec<(Vec<u8>, u8, u64)>) -> Node {
        Node {
            meta: self.meta(dev, ino, libc::S_IFDIR | 0o555),
            kind: Kind::Dir(entries),
        }
    }

    /// The snapshot of process `pid` of the vNode (the caller's own without its table look-up).
    pub fn view(&self, pid: i32) -> Option<ProcView> {
        self.p.view_of(pid)
    }

    /// The node at `at` (components, the first a pseudo root, without `.` or `..`).
    pub fn lookup(&self, at: &[Vec<u8>]) -> SysResult<Node> {
        match at[0].as_slice() {
            b"proc" => self.proc(&at[1..]),
            b"dev" => self.dev(&at[1..]),
            _ => self.sys(&at[1..]),
        }
    }

    fn sys(&self, rest: &[Vec<u8>]) -> SysResult<Node> {
        let depth = rest.len();
        if depth < SYS_CHAIN.len() && rest.iter().zip(&SYS_CHAIN[1..]).all(|(a, b)| a == b) {
            let entries = if depth + 1 < SYS_CHAIN.len() {
                vec![(
                    SYS_CHAIN[depth + 1].to_vec(),
                    libc::DT_DIR,
                    name_ino(0x100, depth + 1),
                )]
            } else {
                CPU_LISTS.iter().map(|(name, ino)| (name.to_vec(), libc::DT_REG, *ino)).collect()
            };
            return Ok(self.dir(SYS_DEV, name_ino(0x100, depth), entries));
        }
        if depth == SYS_CHAIN.len()
            && rest[..depth - 1]
                .iter()
                .zip(&SYS_CHAIN[1..])
                .all(|(a, b)| a == b)
        {
            let &(_, ino) = CPU_LISTS.iter().find(|(name, _)| *name == rest[depth - 1].as_slice()).ok_or(Errno::ENOENT)?;
            let text = procfs::cpu_list(&procfs::host_cpus());
            return Ok(Node {
                meta: self.meta(SYS_DEV, ino, libc::S_IFREG | 0o444),
                kind: Kind::File(text),
            });
        }
        Err(Errno::ENOENT)
    }

    fn dev(&self, rest: &[Vec<u8>]) -> SysResult<Node> {
        let Some(name) = rest.first() else {
            let mut entries: Vec<_> = Device::ALL
                .iter()
                .map(|d| (d.name().to_vec(), libc::DT_CHR, d.ino()))
                .collect();
            entries.push((b"fd".to_vec(), libc::DT_LNK, 0x40));
            entries.push((b"pts".to_vec(), libc::DT_DIR, PTS_INO));
            entries.push((b"shm".to_vec(), libc::DT_DIR, SHM_INO));
            for (i, n) in [&b"stdin"[..], b"stdout", b"stderr"].iter().enumerate() {
                entries.push((n.to_vec(), libc::DT_LNK, 0x41 + i as u64));
            }
            return Ok(self.dir(DEV_DEV, 0x2, entries));
        };
        if name.as_slice() == b"pts" {
            return self.pts(&rest[1..]);
        }
        if rest.len() > 1 {
            return Err(Errno::ENOENT);
        }
        let link = |ino: u64, target: String| Node {
            meta: self.meta(DEV_DEV, ino, libc::S_IFLNK | 0o777),
            kind: Kind::Link(Target::Path(target.into_bytes())),
        };
        match name.as_slice() {
            b"fd" => return Ok(link(0x40, "/proc/self/fd".into())),
            b"stdin" => return Ok(link(0x41, "/proc/self/fd/0".into())),
            b"stdout" => return Ok(link(0x42, "/proc/self/fd/1".into())),
            b"stderr" => return Ok(link(0x43, "/proc/self/fd/2".into())),
            _ => {}
        }
        let d = Device::ALL
            .iter()
            .find(|d| d.name() == name.as_slice())
            .ok_or(Errno::ENOENT)?;
        let mut meta = self.meta(DEV_DEV, d.ino(), libc::S_IFCHR | 0o666);
        meta.rdev = d.rdev();
        Ok(Node {
            meta,
            kind: Kind::Device(*d),
        })
    }

    /// `/dev/pts` (`rest` is what follows it): the slaves of the run's ptys, with the host's
    /// metadata, so that `ttyname` finds a slave descriptor's name, and `ptmx`.
    fn pts(&self, rest: &[Vec<u8>]) -> SysResult<Node> {
        let Some(name) = rest.first() else {
            let ptys = &self.p.ptys;
            let slave = |n: u32| (n.to_string().into_bytes(), libc::DT_CHR, ptys.slave_stat(n).map_or(PTS_INO + 2 + u64::from(n), |st| st.ino));
            let mut entries: Vec<_> = ptys.numbers().into_iter().map(slave).collect();
            entries.push((Device::Ptmx.name().to_vec(), libc::DT_CHR, PTS_INO + 1));
            return Ok(Node {
                meta: self.meta(DEV_DEV, PTS_INO, libc::S_IFDIR | 0o755),
                kind: Kind::Dir(entries),
            });
        };
        if rest.len() > 1 {
            return Err(Errno::ENOTDIR);
        }
        if name.as_slice() == Device::Ptmx.name() {
            // devpts's own multiplexer, as Linux mounts it (`ptmxmode=000`).
            let mut meta = self.meta(DEV_DEV, PTS_INO + 1, libc::S_IFCHR);
            meta.rdev = Device::Ptmx.rdev();
            return Ok(Node { meta, kind: Kind::Device(Device::Ptmx) });
        }
        let n: u32 = std::str::from_utf8(name).ok().and_then(|s| s.parse().ok()).ok_or(Errno::ENOENT)?;
        let st = self.p.ptys.slave_stat(n)?;
        Ok(Node {
            meta: Meta { dev: st.dev, ino: st.ino, mode: st.mode, uid: st.uid, gid: st.gid, rdev: st.rdev, time: st.mtime, size: None },
            kind: Kind::Pty(n),
        })
    }

    fn proc(&self, rest: &[Vec<u8>]) -> SysResult<Node> {
        let Some(first) = rest.first() else {
            let mut entries: Vec<_> = PROC_FILES
                .iter()
                .enumerate()
                .map(|(i, (n, t))| (n.to_vec(), *t, name_ino(0x10, i)))
                .collect();
            for pid in self.p.procs.running_pids(self.p.pid) {
                entries.push((pid.to_string().into_bytes(), libc::DT_DIR, pid_ino(pid, 0)));
            }
            return Ok(self.dir(PROC_DEV, 1, entries));
        };
        if let Some(i) = PROC_FILES.iter().position(|(n, _)| *n == first.as_slice()) {
            if rest.len() > 1 {
                return Err(Errno::ENOTDIR);
            }
            let meta = |mode| self.meta(PROC_DEV, name_ino(0x10, i), mode);
            let link = |target: String| Node {
                meta: meta(libc::S_IFLNK | 0o777),
                kind: Kind::Link(Target::Path(target.into_bytes())),
            };
            let text = match first.as_slice() {
                b"self" => {
                    let mut node = link(self.p.pid.to_string());
                    node.meta.size = Some(0);
                    return Ok(node);
                }
                b"mounts" => return Ok(link("self/mounts".to_string())),
                b"cpuinfo" => procfs::cpuinfo(),
                b"loadavg" => procfs::loadavg(self.p),
                b"meminfo" => procfs::meminfo(self.p),
                b"stat" => procfs::stat(self.p),
                _ => procfs::uptime(self.p),
            };
            return Ok(Node {
                meta: meta(libc::S_IFREG | 0o444),
                kind: Kind::File(text),
            });
        }
        let pid: i32 = std::str::from_utf8(first)
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&p| p > 0)
            .ok_or(Errno::ENOENT)?;
        let v = self.view(pid).ok_or(Errno::ENOENT)?;
        let owned = |ino: u64, mode: u32| Meta {
            uid: v.creds.euid,
            gid: v.creds.egid,
            time: wall_time(v.started),
            ..self.meta(PROC_DEV, ino, mode)
        };
        let Some(name) = rest.get(1) else {
            let entries = PID_FILES
                .iter()
                .enumerate()
                .map(|(i, (n, t))| (n.to_vec(), *t, pid_ino(pid, i + 1)))
                .collect();
            return Ok(Node {
                meta: owned(pid_ino(pid, 0), libc::S_IFDIR | 0o555),
                kind: Kind::Dir(entries),
            });
        };
        let ino = |name: &[u8]| PID_FILES.iter().position(|(n, _)| *n == name).map(|i| pid_ino(pid, i + 1));
        if name.as_slice() == b"task" {
            let meta = owned(ino(b"task").unwrap_or(0), libc::S_IFDIR | 0o555);
            return self.task_dir(&v, &rest[2..], meta, &owned);
        }
        self.pid_file(&v, pid, &rest[1..], &owned)
    }

    /// `/proc/PID/task` (`rest` is what follows it): a directory per thread, each with the
    /// files of `/proc/PID` as that thread shows them.
    fn task_dir(&self, v: &ProcView, rest: &[Vec<u8>], meta: Meta, owned: &dyn Fn(u64, u32) -> Meta) -> SysResult<Node> {
        let Some(first) = rest.first() else {
            let entries = v.threads.iter().map(|&t| (t.to_string().into_bytes(), libc::DT_DIR, pid_ino(t, 0))).collect();
            return Ok(Node { meta, kind: Kind::Dir(entries) });
        };
        let tid: i32 = std::str::from_utf8(first)
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|t| v.threads.contains(t))
            .ok_or(Errno::ENOENT)?;
        let thread = ProcView { tid, ..v.clone() };
        if rest.len() == 1 {
            let entries = PID_FILES
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| *n != b"task")
                .map(|(i, (n, t))| (n.to_vec(), *t, pid_ino(tid, i + 1)))
                .collect();
            return Ok(Node { meta: owned(pid_ino(tid, 0), libc::S_IFDIR | 0o555), kind: Kind::Dir(entries) });
        }
        self.pid_file(&thread, tid, &rest[1..], owned)
    }

    /// File `rest[0]` of `/proc/PID` (or of `/proc/PID/task/TID`, whose inodes are numbered
    /// after `ino_id`), and what lies below it.
    fn pid_file(&self, v: &ProcView, ino_id: i32, rest: &[Vec<u8>], owned: &dyn Fn(u64, u32) -> Meta) -> SysResult<Node> {
        let name = &rest[0];
        let i = PID_FILES
            .iter()
            .position(|(n, _)| *n == name.as_slice() && *n != b"task")
            .ok_or(Errno::ENOENT)?;
        let ino = pid_ino(ino_id, i + 1);
        if name.as_slice() == b"fd" {
            return self.fd_dir(v, &rest[1..], owned(ino, libc::S_IFDIR | 0o500));
        }
        if rest.len() > 1 {
            return Err(Errno::ENOTDIR);
        }
        let link = |t: Vec<u8>| Node {
            meta: Meta { size: Some(0), ..owned(ino, libc::S_IFLNK | 0o777) },
            kind: Kind::Link(Target::Path(t)),
        };
        let text = match name.as_slice() {
            b"cwd" => return Ok(link(v.cwd.clone())),
            b"exe" => return Ok(link(v.image.exe.clone())),
            b"root" => return Ok(link(b"/".to_vec())),
            b"cmdline" => procfs::nul_list(&v.image.argv),
            b"environ" => procfs::nul_list(&v.image.envp),
            b"comm" => [v.comm.as_slice(), b"\n"].concat(),
            b"limits" => procfs::limits(v),
            b"maps" => procfs::maps(v),
            b"mounts" => procfs::mounts(self.p, &PSEUDO_MOUNTS),
            b"mountinfo" => procfs::mountinfo(self.p, &PSEUDO_MOUNTS),
            b"stat" => procfs::pid_stat(self.p, v),
            b"statm" => procfs::statm(v),
            _ => procfs::status(self.p, v),
        };
        let mode = if name.as_slice() == b"environ" {
            0o400
        } else {
            0o444
        };
        Ok(Node {
            meta: owned(ino, libc::S_IFREG | mode),
            kind: Kind::File(text),
        })
    }

    fn fd_dir(&self, v: &ProcView, rest: &[Vec<u8>], meta: Meta) -> SysResult<Node> {
        let fd_ino = |fd: u64| meta.ino.wrapping_mul(0x1_0000) + fd;
        let Some(name) = rest.first() else {
            let entries = v
                .fds
                .iter()
                .map(|(fd, _)| (fd.to_string().into_bytes(), libc::DT_LNK, fd_ino(*fd)))
                .collect();
            return Ok(Node {
                meta,
                kind: Kind::Dir(entries),
            });
        };
        if rest.len() > 1 {
            return Err(Errno::ENOTDIR);
        }
        let fd: u64 = std::str::from_utf8(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Errno::ENOENT)?;
        let (_, file) = v.fds.iter().find(|(f, _)| *f == fd).ok_or(Errno::ENOENT)?;
        let target = match &file.backing {
            Backing::File(f) if f.unlinked() => Target::Fd(file.clone(), [file.path.as_slice(), b" (deleted)"].concat()),
            Backing::File(_) => Target::Path(file.path.clone()),
            Backing::Pipe(end) => Target::Fd(
                file.clone(),
                format!("pipe:[{}]", end.id() >> 4).into_bytes(),
            ),
            Backing::Host(h) => Target::Fd(file.clone(), procfs::host_fd_name(h.as_raw_fd())),
            Backing::Socket(s) => Target::Fd(file.clone(), procfs::host_fd_name(s.fd())),
            Backing::Epoll(e) => Target::Fd(file.clone(), procfs::host_fd_name(e.host_fd())),
            Backing::Anon(a) => Target::Fd(file.clone(), a.name().to_vec()),
        };
        let mode = libc::S_IFLNK
            | if file.readable() { 0o500 } else { 0 }
            | if file.writable() { 0o200 } else { 0 };
        Ok(Node {
            meta: Meta {
                ino: fd_ino(fd),
                mode,
                size: Some(64),
                ..meta
            },
            kind: Kind::Link(target),
        })
    }
}

/// Inode of entry `i` of `/proc/PID` (0 is the directory itself).
fn pid_ino(pid: i32, i: usize) -> u64 {
    ((pid as u64) << 8) + 0x1000 + i as u64
}

impl Node {
    /// The node's metadata as `stat` reports it.
    pub fn stat(&self) -> Stat {
        let m = &self.meta;
        let (nlink, size) = match &self.kind {
            Kind::Dir(e) => (
                2 + e.iter().filter(|(_, t, _)| *t == libc::DT_DIR).count() as u64,
                0,
            ),
            Kind::Link(t) => (1, t.text().len() as u64),
            _ => (1, 0),
        };
        let size = m.size.unwrap_or(size);
        Stat {
            dev: m.dev,
            ino: m.ino,
            mode: m.mode,
            nlink,
            uid: m.uid,
            gid: m.gid,
            rdev: m.rdev,
            size,
            blksize: if self.meta.dev == DEV_DEV { 4096 } else { 1024 },
            blocks: 0,
            atime: m.time,
            mtime: m.time,
            ctime: m.time,
        }
    }

    /// Opens the node for process `p` with `open(2)` `flags` (a symlink only with `O_PATH`).
    pub fn open(self, p: &Process, flags: i32, path: Vec<u8>) -> SysResult<Opened> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let opath = flags & libc::O_PATH != 0;
        let stat = self.stat();
        let file: Box<dyn File> = match self.kind {
            Kind::Link(_) if opath => Box::new(PseudoFile {
                stat,
                body: Body::Text(Vec::new()),
            }),
            Kind::Link(_) => return Err(Errno::ELOOP),
            Kind::Dir(_) if write => return Err(Errno::EISDIR),
            Kind::Dir(entries) => Box::new(PseudoFile {
                stat,
                body: Body::Dir(entries),
            }),
            _ if flags & libc::O_DIRECTORY != 0 && !opath => return Err(Errno::ENOTDIR),
            Kind::File(_) if write && !opath => return Err(Errno::EACCES),
            Kind::File(text) => Box::new(PseudoFile {
                stat,
                body: Body::Text(text),
            }),
            Kind::Device(Device::Tty) if !opath => {
                return Ok(Opened::New(Backing::Host(open_tty(p, flags)?), path));
            }
            Kind::Device(Device::Ptmx) if !opath => {
                let (master, n) = crate::pty::Ptys::open_master(flags)?;
                return Ok(Opened::Master(master, n));
            }
            Kind::Pty(n) if !opath => {
                let slave = p.ptys.open_slave(n, flags)?;
                if flags & libc::O_NOCTTY == 0 {
                    // A session leader without a controlling terminal takes the first it opens.
                    let sid = p.procs.sid(p.pid)?;
                    if sid == p.pid && p.ptys.ctty(sid).is_none() {
                        let _ = p.ptys.set_ctty(sid, n);
                    }
                }
                return Ok(Opened::New(Backing::Host(slave), path));
            }
            Kind::Pty(_) => Box::new(PseudoFile {
                stat,
                body: Body::Text(Vec::new()),
            }),
            Kind::Device(d) => Box::new(PseudoFile {
                stat,
                body: Body::Device(d),
            }),
        };
        Ok(Opened::New(Backing::File(file), path))
    }
}

/// `/dev/tty`: the controlling terminal of the caller's session. That is a pty of the run's if
/// the session took one, else the terminal of the `lego run` that started the first session;
/// a session made later by `setsid` has none (`ENXIO`), as on Linux.
fn open_tty(p: &Process, flags: i32) -> SysResult<OwnedFd> {
    let sid = p.procs.sid(p.pid)?;
    if let Some(n) = p.ptys.ctty(sid) {
        return p.ptys.open_slave(n, flags);
    }
    if sid != crate::proctable::FIRST_PID {
        return Err(Errno::ENXIO);
    }
    open_host_tty(flags)
}

/// The terminal of the `lego run` that started the vNode.
fn open_host_tty(flags: i32) -> SysResult<OwnedFd> {
    let keep = libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_NOCTTY;
    // SAFETY: a constant, NUL-terminated path; the descriptor returned is owned below.
    let fd = unsafe { libc::open(c"/dev/tty".as_ptr(), (flags & keep) | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

enum Body {
    Text(Vec<u8>),
    Dir(Vec<(Vec<u8>, u8, u64)>),
    Device(Device),
}

/// An open pseudo file: its contents as generated at open time.
struct PseudoFile {
    stat: Stat,
    body: Body,
}

impl File for PseudoFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> SysResult<usize> {
        match &self.body {
            Body::Text(t) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(t.len());
                let n = buf.len().min(t.len() - start);
                buf[..n].copy_from_slice(&t[start..start + n]);
                Ok(n)
            }
            Body::Dir(_) => Err(Errno::EISDIR),
            Body::Device(d) => d.read(buf),
        }
    }

    fn write_at(&self, buf: &[u8], _offset: u64) -> SysResult<usize> {
        match &self.body {
            Body::Device(d) => d.write(buf),
            Body::Dir(_) => Err(Errno::EISDIR),
            Body::Text(_) => Err(Errno::EBADF),
        }
    }

    fn stat(&self) -> SysResult<Stat> {
        Ok(self.stat)
    }

    fn set_len(&self, _len: u64) -> SysResult<()> {
        match &self.body {
            Body::Device(_) => Ok(()),
            Body::Dir(_) => Err(Errno::EISDIR),
            Body::Text(_) => Err(Errno::EACCES),
        }
    }

    fn sync(&self, _data_only: bool) -> SysResult<()> {
        match &self.body {
            Body::Device(_) => Err(Errno::EINVAL),
            _ => Ok(()),
        }
    }

    /// Generated files keep no attributes of their own: `EPERM`, as Linux answers a `chmod`
    /// of a `/proc/PID` entry.
    fn set_attr(&self, _attr: crate::fs::SetAttr) -> SysResult<()> {
        Err(Errno::EPERM)
    }

    fn read_dir(&self, pos: u64, max: usize) -> SysResult<Vec<DirEntry>> {
        let Body::Dir(entries) = &self.body else {
            return Err(Errno::ENOTDIR);
        };
        let dots = [
            (b".".to_vec(), libc::DT_DIR, self.stat.ino),
            (b"..".to_vec(), libc::DT_DIR, 1),
        ];
        Ok(dots
            .iter()
            .chain(entries.iter())
            .enumerate()
            .skip(usize::try_from(pos).unwrap_or(usize::MAX))
            .take(max)
            .map(|(i, (name, kind, ino))| DirEntry {
                ino: *ino,
                next: i as u64 + 1,
                kind: *kind,
                name: name.clone(),
            })
            .collect())
    }
}
