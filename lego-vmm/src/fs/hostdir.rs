//! [`HostDir`]: a vNode file system whose root is a directory on the host.
//!
//! # Confinement
//!
//! Every guest path is resolved by the host kernel, never lexically here: [`HostDir`] keeps an
//! `O_PATH` descriptor of the root directory and resolves paths against it with `openat2(2)` and
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`. The kernel then treats that directory as `/` for the
//! whole walk: absolute paths start there, `..` at it stays there, and symlinks (absolute or
//! relative, in any component) are resolved inside it, free of races with concurrent renames.
//!
//! Operations on a *name* (`mkdir`, `rmdir`, `unlink`, `rename`) resolve the parent directory
//! that way and hand the final component, trailing slashes included, to the `*at` system call on
//! the parent's descriptor. Those calls never follow the final component and reject `.` and `..`
//! by their *type* before any lookup, so the host kernel gives Linux's exact errors (`EEXIST`,
//! `EINVAL`, `ENOTEMPTY`, `EISDIR`, `EBUSY`, `ENOTDIR`, ...) without leaving the root. Operations
//! that look at the final component (`stat`, `lstat`, `readlink`, `access`) open the whole path
//! with `O_PATH` (plus `O_NOFOLLOW` when the final symlink must not be followed) and work on that
//! descriptor, so `..` as a final component is confined as well.
//!
//! # Owners
//!
//! The VMM runs as root, so the host gives what it creates to root (or to the group of a
//! set-group-ID parent directory, with the bit on a new subdirectory: that part the host kernel
//! does as Linux does for the guest). Right after a create, the new object is given its
//! creator ([`FileSystem`]'s rule) with `fchownat` on a descriptor of it, when the host gave it
//! another owner; the set-user-ID and set-group-ID bits that change of owner clears are set
//! again. `open` with `O_CREAT` tells a file it created from one that existed (which keeps its
//! owner) by creating exclusively first.
//!
//! Requires Linux 5.6 (`openat2`); [`FileSystem::access`] with `R_OK`/`W_OK`/`X_OK` uses
//! `faccessat2` (5.8) and falls back to `/proc/self/fd` before that.
//!
//! What this does *not* confine: device nodes, FIFOs and sockets that exist inside the root are
//! opened as the host sees them, and mount points inside the root are crossed. Export a root
//! without device nodes (or on a `nodev` mount).

use lego_proto::sync::LockExt;
use std::ffi::{CStr, CString};
use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

use super::{DirEntry, File, FileSystem, NodeId, Owner, SetAttr, Stat, TimeSet, Timespec};
use crate::errno::{retry, Errno, SysResult};

/// Linux `PATH_MAX`: a path of this many bytes or more (without its NUL) is `ENAMETOOLONG`.
const PATH_MAX: usize = 4096;

/// `openat2` resolution flags used for every guest path.
const RESOLVE: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

/// How often `openat2` is retried when it reports `EAGAIN` (a rename or mount raced with
/// `RESOLVE_IN_ROOT` resolution) before the error is passed on.
const EAGAIN_RETRIES: u32 = 64;

/// Guest `open(2)` flags passed through to the host unchanged (besides the access mode).
/// `O_APPEND`, `O_NONBLOCK`, `O_ASYNC` and `O_CLOEXEC` are the state layer's business; `O_DIRECT`
/// is dropped because buffers handed to [`File::read_at`] need not be aligned; `O_LARGEFILE` is
/// implied on a 64-bit host.
const PASSED_OPEN_FLAGS: i32 = libc::O_CREAT
    | libc::O_EXCL
    | libc::O_TRUNC
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_NOATIME
    | libc::O_TMPFILE;


/// Symlinks `open` with `O_CREAT` follows to the file it creates (Linux's `MAXSYMLINKS`).
const MAXSYMLINKS: usize = 40;

/// Size of `struct linux_dirent64` up to `d_name`.
const DIRENT_HEADER: usize = 19;

/// A [`FileSystem`] rooted at a host directory; see the [module documentation](self) for how
/// paths are confined to it.
#[derive(Debug)]
pub struct HostDir {
    /// `O_PATH | O_DIRECTORY` descriptor of the root directory.
    root: OwnedFd,
    /// `(st_dev, st_ino)` of the root directory.
    root_id: (u64, u64),
}

impl HostDir {
    /// Opens `root` (a host directory, relative to the VMM's working directory or absolute) as
    /// the vNode's `/`. Fails if it is not a directory or the host kernel lacks `openat2(2)`.
    pub fn new(root: &Path) -> io::Result<HostDir> {
        let path = CString::new(root.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: `path` is a NUL-terminated string that outlives the call; `open` only reads it.
        let fd = retry(|| unsafe { libc::open(path.as_ptr(), flags) }).map_err(errno_to_io)?;
        // SAFETY: `open` just returned this descriptor; nothing else owns it.
        let root = unsafe { OwnedFd::from_raw_fd(fd) };
        // Probe `openat2` now rather than failing every guest call later.
        openat2(root.as_fd(), c".", flags, 0).map_err(|e| {
            let inner = errno_to_io(e);
            if e == Errno::ENOSYS {
                io::Error::new(io::ErrorKind::Unsupported, format!("openat2(2) unavailable: {inner}"))
            } else {
                inner
            }
        })?;
        let st = fstat(root.as_fd()).map_err(errno_to_io)?;
        Ok(HostDir { root, root_id: (st.dev, st.ino) })
    }

    /// Opens `path` with host `flags` (`O_CLOEXEC` is added) inside the root.
    fn resolve(&self, path: &[u8], flags: i32, mode: u32) -> SysResult<OwnedFd> {
        check_path(path)?;
        openat2(self.root.as_fd(), &c_bytes(path)?, flags | libc::O_CLOEXEC, mode)
    }

    /// Opens `path` with host flags `host_flags` and `O_NONBLOCK`, so that a FIFO never blocks
    /// the VMM here (the state layer waits on the FIFO's pipe, [`crate::fifo`]): a FIFO nobody
    /// reads on the host refuses a write-only open with `ENXIO`, and is then opened as a node
    /// (`O_PATH`).
    fn open_host(&self, path: &[u8], host_flags: i32, mode: u32) -> SysResult<OwnedFd> {
        let nonblock = if host_flags & libc::O_PATH == 0 { libc::O_NONBLOCK } else { 0 };
        match self.resolve(path, host_flags | nonblock, mode) {
            Err(Errno::ENXIO) if host_flags & libc::O_PATH == 0 => {
                let node = self.resolve(path, libc::O_PATH | (host_flags & libc::O_NOFOLLOW), 0)?;
                if fstat(node.as_fd())?.mode & libc::S_IFMT != libc::S_IFIFO {
                    return Err(Errno::ENXIO);
                }
                Ok(node)
            }
            r => r,
        }
    }

    /// [`HostDir::open_host`] with `O_CREAT` in `host_flags`, telling a file this call created
    /// (`Some` of the path it was made at, the target of a final symlink when the path names a
    /// dangling one) from one that existed. Without `O_EXCL` the file is created exclusively
    /// first; if the name is taken, the existing file is opened, and a dangling final symlink
    /// (which an exclusive create never follows) is followed here to create its target, as
    /// `open(2)` does.
    fn open_creating(&self, path: &[u8], host_flags: i32, mode: u32) -> SysResult<(OwnedFd, Option<Vec<u8>>)> {
        if host_flags & libc::O_EXCL != 0 {
            return Ok((self.open_host(path, host_flags, mode)?, Some(path.to_vec())));
        }
        let mut path = path.to_vec();
        for _ in 0..=MAXSYMLINKS {
            match self.open_host(&path, host_flags | libc::O_EXCL, mode) {
                Ok(fd) => return Ok((fd, Some(path))),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            match self.open_host(&path, host_flags & !libc::O_CREAT, 0) {
                // `O_CREAT` refuses a directory, whatever the access mode.
                Ok(fd) if fstat(fd.as_fd())?.mode & libc::S_IFMT == libc::S_IFDIR => return Err(Errno::EISDIR),
                Ok(fd) => return Ok((fd, None)),
                // A symlink to nothing; or the name went meanwhile (not a symlink): again.
                Err(Errno::ENOENT) => {
                    if let Ok(target) = self.readlink(&path) {
                        path = beside(&path, &target);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Errno::ELOOP)
    }

    /// Resolves the parent directory of `path`'s final component.
    fn locate(&self, path: &[u8]) -> SysResult<Target> {
        check_path(path)?;
        match split(path) {
            Split::Root => Ok(Target::Root),
            Split::Child { parent, name } => {
                let name = c_bytes(name)?;
                let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
                let dir = openat2(self.root.as_fd(), &c_bytes(parent)?, flags, 0)?;
                Ok(Target::Child { dir, name })
            }
        }
    }
}

impl FileSystem for HostDir {
    /// Opens `path`. The host kernel applies the *host* process umask to `mode` when it creates
    /// a file: the caller applies the guest's umask to `mode` first, and the VMM should run with
    /// umask 0 so that the guest's is the only one in effect.
    ///
    /// Guest `O_PATH` keeps only `O_DIRECTORY` and `O_NOFOLLOW`, as `open(2)` does. Unknown
    /// flag bits are ignored, as `open(2)` ignores them. The host descriptor always has
    /// `O_CLOEXEC` and `O_NOCTTY`, and `O_NONBLOCK` ([`HostDir::open_host`]).
    fn open(&self, path: &[u8], flags: i32, mode: u32, creator: Owner) -> SysResult<Box<dyn File>> {
        let (host_flags, mode) = host_open_flags(flags, mode);
        let fd = if host_flags & libc::O_CREAT != 0 {
            let (fd, created) = self.open_creating(path, host_flags, mode)?;
            if let Some(at) = created {
                adopt(fd.as_fd(), || self.locate(&at).and_then(|t| t.dir_stat()), creator)?;
            }
            fd
        } else {
            self.open_host(path, host_flags, mode)?
        };
        let st = fstat(fd.as_fd())?;
        let fifo = (st.mode & libc::S_IFMT == libc::S_IFIFO).then_some(NodeId { dev: st.dev, ino: st.ino });
        Ok(Box::new(HostFile { fd, root_id: self.root_id, dir_lock: Mutex::new(()), fifo }))
    }

    fn stat(&self, path: &[u8], follow: bool) -> SysResult<Stat> {
        let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
        let fd = self.resolve(path, libc::O_PATH | nofollow, 0)?;
        fstat(fd.as_fd())
    }

    fn readlink(&self, path: &[u8]) -> SysResult<Vec<u8>> {
        let fd = self.resolve(path, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = fstat(fd.as_fd())?;
        if st.mode & libc::S_IFMT != libc::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        // A symlink's size is its target's length (procfs-like file systems report 0).
        let mut cap = usize::try_from(st.size).unwrap_or(0).saturating_add(1).clamp(256, PATH_MAX);
        loop {
            let mut buf = vec![0u8; cap];
            // SAFETY: the path is NUL-terminated; `buf` is writable for `buf.len()` bytes and
            // outlives the call; `fd` is an open descriptor.
            let n = retry(|| unsafe {
                libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            })?;
            let n = usize::try_from(n).map_err(|_| Errno::EIO)?;
            // A full buffer may mean truncation: grow (bounded), as readlink(2) never reports it.
            if n < buf.len() || cap >= 1 << 20 {
                buf.truncate(n);
                return Ok(buf);
            }
            cap = cap.saturating_mul(4);
        }
    }

    fn access(&self, path: &[u8], mode: i32) -> SysResult<()> {
        if mode & !(libc::F_OK | libc::R_OK | libc::W_OK | libc::X_OK) != 0 {
            return Err(Errno::EINVAL);
        }
        let fd = self.resolve(path, libc::O_PATH, 0)?;
        // SAFETY: the path is NUL-terminated and outlives the call; `fd` is open; the kernel only
        // reads the arguments.
        let r = retry(|| unsafe {
            libc::syscall(libc::SYS_faccessat2, fd.as_raw_fd(), c"".as_ptr(), mode, libc::AT_EMPTY_PATH)
        });
        match r {
            Ok(_) => Ok(()),
            Err(Errno::ENOSYS) if mode == libc::F_OK => Ok(()),
            Err(Errno::ENOSYS) => {
                // Before Linux 5.8: check through the descriptor's /proc entry. This follows a
                // magic link the VMM made itself, to the file already resolved inside the root.
                let proc = c_bytes(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
                // SAFETY: `proc` is NUL-terminated and outlives the call.
                retry(|| unsafe { libc::faccessat(libc::AT_FDCWD, proc.as_ptr(), mode, 0) })?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates directory `path`. The host umask applies on top of `mode`, as for
    /// [`FileSystem::open`].
    fn mkdir(&self, path: &[u8], mode: u32, creator: Owner) -> SysResult<()> {
        match self.locate(path)? {
            Target::Root => Err(Errno::EEXIST),
            Target::Child { dir, name } => {
                // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
                retry(|| unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })?;
                adopt_name(dir.as_fd(), &name, creator)
            }
        }
    }

    fn mknod(&self, path: &[u8], mode: u32, creator: Owner) -> SysResult<()> {
        if !matches!(mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFSOCK) {
            return Err(Errno::EINVAL);
        }
        match self.locate(path)? {
            Target::Root => Err(Errno::EEXIST),
            Target::Child { dir, name } => {
                let mode = mode & (libc::S_IFMT | 0o7777);
                // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
                retry(|| unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) })?;
                adopt_name(dir.as_fd(), &name, creator)
            }
        }
    }

    fn rmdir(&self, path: &[u8]) -> SysResult<()> {
        match self.locate(path)? {
            Target::Root => Err(Errno::EBUSY),
            Target::Child { dir, name } => {
                // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
                retry(|| unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })?;
                Ok(())
            }
        }
    }

    fn unlink(&self, path: &[u8]) -> SysResult<()> {
        match self.locate(path)? {
            Target::Root => Err(Errno::EISDIR),
            Target::Child { dir, name } => {
                // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
                retry(|| unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })?;
                Ok(())
            }
        }
    }

    fn rename(&self, from: &[u8], to: &[u8]) -> SysResult<()> {
        let from = self.locate(from)?;
        let to = self.locate(to)?;
        match (from, to) {
            (Target::Child { dir: fdir, name: fname }, Target::Child { dir: tdir, name: tname }) => {
                // SAFETY: both names are NUL-terminated and outlive the call; both descriptors
                // are open.
                retry(|| unsafe {
                    libc::renameat(fdir.as_raw_fd(), fname.as_ptr(), tdir.as_raw_fd(), tname.as_ptr())
                })?;
                Ok(())
            }
            _ => Err(Errno::EBUSY),
        }
    }

    /// The target is stored as given: following it later resolves it inside the root like any
    /// guest path, so a link to `/etc/passwd` names the vNode's `/etc/passwd`.
    fn symlink(&self, target: &[u8], path: &[u8], creator: Owner) -> SysResult<()> {
        let target = c_bytes(target)?;
        match self.locate(path)? {
            Target::Root => Err(Errno::EEXIST),
            Target::Child { dir, name } => {
                // SAFETY: both strings are NUL-terminated and outlive the call; `dir` is open.
                retry(|| unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
                adopt_name(dir.as_fd(), &name, creator)
            }
        }
    }

    /// With `follow`, the source is resolved inside the root first and linked by its descriptor,
    /// so a symlink at `from` is never followed by the host kernel outside the root.
    fn link(&self, from: &[u8], to: &[u8], follow: bool) -> SysResult<()> {
        let Target::Child { dir: tdir, name: tname } = self.locate(to)? else {
            // Linux checks the source first: the root as a source is a directory (`EPERM`).
            self.stat(from, follow)?;
            return Err(Errno::EEXIST);
        };
        if follow {
            let src = self.resolve(from, libc::O_PATH, 0)?;
            // SAFETY: both names are NUL-terminated and outlive the call; both descriptors are
            // open.
            let by_fd = retry(|| unsafe {
                libc::linkat(src.as_raw_fd(), c"".as_ptr(), tdir.as_raw_fd(), tname.as_ptr(), libc::AT_EMPTY_PATH)
            });
            return match by_fd {
                // Without CAP_DAC_READ_SEARCH, `AT_EMPTY_PATH` is refused with ENOENT: link
                // through the descriptor's /proc entry, a magic link the VMM made itself.
                Err(Errno::ENOENT) => {
                    let proc = c_bytes(format!("/proc/self/fd/{}", src.as_raw_fd()).as_bytes())?;
                    // SAFETY: as above.
                    retry(|| unsafe {
                        libc::linkat(libc::AT_FDCWD, proc.as_ptr(), tdir.as_raw_fd(), tname.as_ptr(), libc::AT_SYMLINK_FOLLOW)
                    })
                    .map(drop)
                }
                r => r.map(drop),
            };
        }
        match self.locate(from)? {
            Target::Root => Err(Errno::EPERM),
            Target::Child { dir, name } => {
                // SAFETY: both names are NUL-terminated and outlive the call; both descriptors
                // are open.
                retry(|| unsafe { libc::linkat(dir.as_raw_fd(), name.as_ptr(), tdir.as_raw_fd(), tname.as_ptr(), 0) })?;
                Ok(())
            }
        }
    }

    fn set_attr(&self, path: &[u8], follow: bool, attr: SetAttr) -> SysResult<()> {
        let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
        let fd = self.resolve(path, libc::O_PATH | nofollow, 0)?;
        set_attr_fd(fd.as_fd(), attr)
    }

    fn sync_all(&self) -> SysResult<()> {
        // `syncfs` refuses the `O_PATH` root (EBADF), so it gets a readable descriptor of it.
        let dir = openat2(self.root.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)?;
        // SAFETY: plain system call on an open descriptor, no memory is passed.
        retry(|| unsafe { libc::syncfs(dir.as_raw_fd()) })?;
        Ok(())
    }

    fn source(&self) -> Vec<u8> {
        use std::os::unix::ffi::OsStringExt;
        std::fs::read_link(format!("/proc/self/fd/{}", self.root.as_raw_fd())).map_or_else(|_| b"?".to_vec(), |p| p.into_os_string().into_vec())
    }

    fn stat_fs(&self) -> SysResult<super::FsStat> {
        // SAFETY: an all-zero statfs is a valid value for fstatfs(2) to overwrite.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a live, writable statfs; the root descriptor is open.
        retry(|| unsafe { libc::fstatfs(self.root.as_raw_fd(), &mut st) })?;
        // SAFETY: an all-zero statvfs is a valid value for fstatvfs(3) to overwrite.
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `vfs` is a live, writable statvfs; the root descriptor is open. (Its `f_flag`
        // has the mount flags glibc's statfs does not show.)
        retry(|| unsafe { libc::fstatvfs(self.root.as_raw_fd(), &mut vfs) })?;
        Ok(super::FsStat {
            fs_type: st.f_type as u64,
            block_size: st.f_bsize as u64,
            blocks: st.f_blocks,
            free: st.f_bfree,
            available: st.f_bavail,
            files: st.f_files,
            free_files: st.f_ffree,
            name_max: st.f_namelen as u64,
            flags: vfs.f_flag,
        })
    }
}

/// An open host file or directory, as [`HostDir::open`](FileSystem::open) returns it.
#[derive(Debug)]
pub struct HostFile {
    fd: OwnedFd,
    /// `(st_dev, st_ino)` of the vNode root, so that `..` of the root reads as the root itself.
    root_id: (u64, u64),
    /// Serialises [`File::read_dir`], which moves the host descriptor's position; nothing else
    /// uses that position (reads and writes are positioned).
    dir_lock: Mutex<()>,
    /// The node, if this is a FIFO (then `fd` is only a reference to it).
    fifo: Option<NodeId>,
}

impl HostFile {

    /// Whether this is the vNode root directory.
    fn is_root(&self) -> SysResult<bool> {
        let st = fstat(self.fd.as_fd())?;
        Ok((st.dev, st.ino) == self.root_id)
    }
}

impl AsFd for HostFile {
    /// The host descriptor (for `mmap` of file-backed memory, say). Its file position is
    /// [`File::read_dir`]'s: do not move it.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl File for HostFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> SysResult<usize> {
        let offset = to_off(offset)?;
        // SAFETY: `buf` is writable for `buf.len()` bytes and outlives the call; the descriptor
        // is open.
        let n = retry(|| unsafe { libc::pread(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) })?;
        usize::try_from(n).map_err(|_| Errno::EIO)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> SysResult<usize> {
        let offset = to_off(offset)?;
        // SAFETY: `buf` is readable for `buf.len()` bytes and outlives the call; the descriptor
        // is open.
        let n = retry(|| unsafe { libc::pwrite(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), offset) })?;
        usize::try_from(n).map_err(|_| Errno::EIO)
    }

    fn stat(&self) -> SysResult<Stat> {
        fstat(self.fd.as_fd())
    }

    fn unlinked(&self) -> bool {
        fstat(self.fd.as_fd()).is_ok_and(|st| st.nlink == 0)
    }

    /// Opens the host's `/proc/self/fd/N` of the descriptor, which reaches the file itself.
    fn reopen(&self, flags: i32) -> SysResult<Box<dyn File>> {
        let (host, _) = host_open_flags(flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW), 0);
        let link = CString::new(format!("/proc/self/fd/{}", self.fd.as_raw_fd())).map_err(|_| Errno::EINVAL)?;
        // SAFETY: `link` is a NUL-terminated string that outlives the call.
        let fd = retry(|| unsafe { libc::open(link.as_ptr(), host) })?;
        // SAFETY: `open` just returned this descriptor, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Box::new(HostFile { fd, root_id: self.root_id, dir_lock: Mutex::new(()), fifo: self.fifo }))
    }

    fn set_len(&self, len: u64) -> SysResult<()> {
        let len = to_off(len)?;
        // SAFETY: plain system call on an open descriptor, no memory is passed.
        retry(|| unsafe { libc::ftruncate(self.fd.as_raw_fd(), len) })?;
        Ok(())
    }

    fn sync(&self, data_only: bool) -> SysResult<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: plain system calls on an open descriptor, no memory is passed.
        retry(|| unsafe {
            if data_only {
                libc::fdatasync(fd)
            } else {
                libc::fsync(fd)
            }
        })?;
        Ok(())
    }

    /// Reads entries with the host's `getdents64`, after `lseek`ing to `pos`: `next` cookies are
    /// the host's `d_off` values. `max == 0` returns no entries but still reports `ENOTDIR`.
    fn read_dir(&self, pos: u64, max: usize) -> SysResult<Vec<DirEntry>> {
        let _guard = self.dir_lock.lock_unpoisoned();
        let fd = self.fd.as_raw_fd();
        // Cookies are `d_off` (an `off_t`) carried bit for bit in a `u64`.
        let off = i64::from_ne_bytes(pos.to_ne_bytes());
        // SAFETY: plain system call on an open descriptor, no memory is passed.
        match retry(|| unsafe { libc::lseek(fd, off, libc::SEEK_SET) }) {
            Ok(_) => {}
            // Pipes and the like cannot seek, and they are not directories either.
            Err(Errno::ESPIPE) => return Err(Errno::ENOTDIR),
            Err(e) => return Err(e),
        }
        let mut out = Vec::with_capacity(max.min(64));
        let mut buf = vec![0u8; max.saturating_mul(64).clamp(1024, 32 * 1024)];
        let mut is_root = None;
        loop {
            // SAFETY: `buf` is writable for `buf.len()` bytes and outlives the call; the
            // descriptor is open.
            let n = retry(|| unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) })?;
            let n = usize::try_from(n).map_err(|_| Errno::EIO)?;
            if n == 0 {
                break;
            }
            let mut data = buf.get(..n).ok_or(Errno::EIO)?;
            while !data.is_empty() && out.len() < max {
                let (mut entry, reclen) = parse_dirent(data)?;
                if entry.name == b".." {
                    let root = match is_root {
                        Some(root) => root,
                        None => *is_root.insert(self.is_root()?),
                    };
                    if root {
                        entry.ino = self.root_id.1;
                    }
                }
                out.push(entry);
                data = data.get(reclen..).ok_or(Errno::EIO)?;
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    fn set_attr(&self, attr: SetAttr) -> SysResult<()> {
        set_attr_fd(self.fd.as_fd(), attr)
    }

    fn fifo(&self) -> Option<NodeId> {
        self.fifo
    }
}

/// Applies `attr` to the host file `fd` refers to (any descriptor, `O_PATH` ones included,
/// which is how a symlink itself is changed). A symlink's mode cannot be changed on Linux
/// (`EOPNOTSUPP`).
pub(crate) fn set_attr_fd(fd: BorrowedFd<'_>, attr: SetAttr) -> SysResult<()> {
    let raw = fd.as_raw_fd();
    match attr {
        SetAttr::Mode(mode) => {
            // SAFETY: the path is NUL-terminated and outlives the call; `raw` is open.
            let r = retry(|| unsafe {
                libc::syscall(libc::SYS_fchmodat2, raw, c"".as_ptr(), mode & 0o7777, libc::AT_EMPTY_PATH)
            });
            match r {
                // Before Linux 6.6: through the descriptor's /proc entry (a magic link the VMM
                // made itself, to the file already resolved inside the root).
                Err(Errno::ENOSYS) => {
                    if fstat(fd)?.mode & libc::S_IFMT == libc::S_IFLNK {
                        return Err(Errno::EOPNOTSUPP);
                    }
                    let proc = c_bytes(format!("/proc/self/fd/{raw}").as_bytes())?;
                    // SAFETY: `proc` is NUL-terminated and outlives the call.
                    retry(|| unsafe { libc::fchmodat(libc::AT_FDCWD, proc.as_ptr(), (mode & 0o7777) as libc::mode_t, 0) })?;
                    Ok(())
                }
                r => r.map(drop),
            }
        }
        SetAttr::Owner { uid, gid } => {
            let (uid, gid) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
            // SAFETY: the path is NUL-terminated and outlives the call; `raw` is open.
            retry(|| unsafe { libc::fchownat(raw, c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) })?;
            Ok(())
        }
        SetAttr::Times { atime, mtime } => {
            let ts = |t: TimeSet| match t {
                TimeSet::Omit => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
                TimeSet::Now => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
                TimeSet::At(t) => libc::timespec { tv_sec: t.sec, tv_nsec: t.nsec },
            };
            let times = [ts(atime), ts(mtime)];
            // SAFETY: the path is NUL-terminated and `times` holds two timespecs; both outlive
            // the call; `raw` is open.
            retry(|| unsafe { libc::utimensat(raw, c"".as_ptr(), times.as_ptr(), libc::AT_EMPTY_PATH) })?;
            Ok(())
        }
    }
}

/// Gives `fd`, an object this VMM just created in the directory whose attributes `parent`
/// reads, the owner of [`Owner::in_dir`] for `creator` (looking at the directory only when the
/// host did not give the object the creator's own ids, which the rule then keeps too). A change
/// of owner clears the set-user-ID and set-group-ID bits of a non-directory: they are set again,
/// as the creator's own file keeps them. (Changing the owner needs the VMM to run as root; else
/// it is the host's error, but then the host gives the creator's ids already.)
fn adopt(fd: BorrowedFd<'_>, parent: impl FnOnce() -> SysResult<Stat>, creator: Owner) -> SysResult<()> {
    let st = fstat(fd)?;
    if (st.uid, st.gid) == (creator.uid, creator.gid) {
        return Ok(());
    }
    let dir = parent()?;
    let owner = creator.in_dir(dir.mode, dir.gid);
    if (st.uid, st.gid) == (owner.uid, owner.gid) {
        return Ok(());
    }
    set_attr_fd(fd, SetAttr::Owner { uid: Some(owner.uid), gid: Some(owner.gid) })?;
    let kind = st.mode & libc::S_IFMT;
    if st.mode & (libc::S_ISUID | libc::S_ISGID) != 0 && kind != libc::S_IFDIR && kind != libc::S_IFLNK {
        set_attr_fd(fd, SetAttr::Mode(st.mode & 0o7777))?;
    }
    Ok(())
}

/// [`adopt`] of entry `name` (not followed) of directory `dir`, just created by this VMM.
fn adopt_name(dir: BorrowedFd<'_>, name: &CStr, creator: Owner) -> SysResult<()> {
    let fd = openat2(dir, name, libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0)?;
    adopt(fd.as_fd(), || fstat(dir), creator)
}

/// Where [`HostDir::locate`] found a path's final component.
enum Target {
    /// The path names the root itself.
    Root,
    /// Component `name` (trailing slashes kept) of directory `dir`.
    Child { dir: OwnedFd, name: CString },
}

impl Target {
    /// The attributes of the directory the final component is in (`EEXIST` for the root,
    /// which is in none: nothing creates it).
    fn dir_stat(self) -> SysResult<Stat> {
        match self {
            Target::Root => Err(Errno::EEXIST),
            Target::Child { dir, .. } => fstat(dir.as_fd()),
        }
    }
}

/// A path cut before its final component.
#[derive(Debug, PartialEq, Eq)]
enum Split<'a> {
    /// The path is only slashes: it names the root.
    Root,
    /// `parent` (never empty) and final component `name`, with any trailing slashes kept so the
    /// host kernel applies Linux's trailing-slash rules to it.
    Child { parent: &'a [u8], name: &'a [u8] },
}

/// Splits `path` (not empty) before its final component.
fn split(path: &[u8]) -> Split<'_> {
    let Some(last) = path.iter().rposition(|&b| b != b'/') else {
        return Split::Root;
    };
    // `last < path.len()` and `start <= last + 1`: every slice below is in bounds.
    let start = path[..=last].iter().rposition(|&b| b == b'/').map_or(0, |slash| slash + 1);
    let parent = if start == 0 { &b"."[..] } else { &path[..start] };
    Split::Child { parent, name: &path[start..] }
}

/// The path a symlink at `link` whose text is `target` leads to: `target` itself if absolute
/// (it is resolved inside the root like any guest path), else `target` in the link's directory.
fn beside(link: &[u8], target: &[u8]) -> Vec<u8> {
    match split(link) {
        Split::Child { parent, .. } if target.first() != Some(&b'/') => [parent, b"/", target].concat(),
        _ => target.to_vec(),
    }
}

/// Rejects paths Linux would refuse before any lookup.
fn check_path(path: &[u8]) -> SysResult<()> {
    if path.is_empty() {
        Err(Errno::ENOENT)
    } else if path.len() >= PATH_MAX {
        Err(Errno::ENAMETOOLONG)
    } else {
        Ok(())
    }
}

/// `bytes` as a C string; `EINVAL` for an inner NUL (which a guest C string cannot contain).
fn c_bytes(bytes: &[u8]) -> SysResult<CString> {
    CString::new(bytes).map_err(|_| Errno::EINVAL)
}

/// A file offset or length as an `off_t`; `EINVAL` past `i64::MAX`, as Linux says for negative
/// ones.
fn to_off(value: u64) -> SysResult<libc::off_t> {
    libc::off_t::try_from(value).map_err(|_| Errno::EINVAL)
}

/// Host flags and mode for a guest `open(2)`.
fn host_open_flags(flags: i32, mode: u32) -> (i32, u32) {
    if flags & libc::O_PATH != 0 {
        return (libc::O_PATH | (flags & (libc::O_DIRECTORY | libc::O_NOFOLLOW)) | libc::O_CLOEXEC, 0);
    }
    let host = (flags & libc::O_ACCMODE) | (flags & PASSED_OPEN_FLAGS) | libc::O_CLOEXEC | libc::O_NOCTTY;
    let creating = host & libc::O_CREAT != 0 || host & libc::O_TMPFILE == libc::O_TMPFILE;
    // openat2 refuses a mode without O_CREAT/O_TMPFILE and mode bits beyond 0o7777.
    (host, if creating { mode & 0o7777 } else { 0 })
}

/// Converts an [`Errno`] for [`HostDir::new`]'s `io::Result`.
fn errno_to_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.0)
}

/// `openat2(dir, path, flags, mode)` with [`RESOLVE`]: `path` stays inside `dir`.
fn openat2(dir: BorrowedFd<'_>, path: &CStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    // SAFETY: `open_how` is plain old data (integer fields only), for which all-zero bytes are a
    // valid value (and the "unset" value of any field a later libc adds).
    let mut how: libc::open_how = unsafe { mem::zeroed() };
    // Open flags are a bit set: reinterpret, do not sign-extend.
    how.flags = u64::from(u32::from_ne_bytes(flags.to_ne_bytes()));
    how.mode = u64::from(mode);
    how.resolve = RESOLVE;
    let mut again = 0;
    loop {
        // SAFETY: `path` is NUL-terminated and `how` is a valid `open_how` of the size passed;
        // both outlive the call and the kernel only reads them. `dir` is an open descriptor.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                mem::size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            // A descriptor always fits an int; anything else would be a kernel bug.
            let fd = RawFd::try_from(r).map_err(|_| Errno::EIO)?;
            // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        match Errno::last() {
            Errno::EINTR => {}
            Errno::EAGAIN if again < EAGAIN_RETRIES => again += 1,
            e => return Err(e),
        }
    }
}

/// `fstat(2)` of `fd` (also works on `O_PATH` descriptors).
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> SysResult<Stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable memory for one `struct stat` that outlives the call; `fd` is open.
    retry(|| unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: `fstat` succeeded, so the kernel filled in all of `st`.
    let st = unsafe { st.assume_init() };
    Ok(to_stat(&st))
}

/// `stat(2)` of the host path `path`.
pub(crate) fn stat_path(path: &std::ffi::CStr) -> SysResult<Stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is NUL-terminated; `st` is writable memory for one `struct stat` that
    // outlives the call.
    retry(|| unsafe { libc::stat(path.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: `stat` succeeded, so the kernel filled in all of `st`.
    let st = unsafe { st.assume_init() };
    Ok(to_stat(&st))
}

/// Converts a host `struct stat`. The field types vary between architectures, hence the casts;
/// the signed size fields are never negative.
#[allow(clippy::unnecessary_cast)]
fn to_stat(st: &libc::stat) -> Stat {
    Stat {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        mode: st.st_mode as u32,
        nlink: st.st_nlink as u64,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u64,
        size: st.st_size as u64,
        blksize: st.st_blksize as u64,
        blocks: st.st_blocks as u64,
        atime: Timespec { sec: st.st_atime as i64, nsec: st.st_atime_nsec as i64 },
        mtime: Timespec { sec: st.st_mtime as i64, nsec: st.st_mtime_nsec as i64 },
        ctime: Timespec { sec: st.st_ctime as i64, nsec: st.st_ctime_nsec as i64 },
    }
}

/// Parses the `struct linux_dirent64` at the start of `data`; returns it and its record length.
fn parse_dirent(data: &[u8]) -> SysResult<(DirEntry, usize)> {
    let field =
        |at: usize| -> SysResult<[u8; 8]> { data.get(at..at + 8).and_then(|b| b.try_into().ok()).ok_or(Errno::EIO) };
    let ino = u64::from_ne_bytes(field(0)?);
    let next = u64::from_ne_bytes(field(8)?);
    let reclen = data.get(16..18).and_then(|b| b.try_into().ok()).map(u16::from_ne_bytes).ok_or(Errno::EIO)?;
    let reclen = usize::from(reclen);
    let kind = *data.get(18).ok_or(Errno::EIO)?;
    let name = data.get(DIRENT_HEADER..reclen).ok_or(Errno::EIO)?;
    let name = name.split(|&b| b == 0).next().unwrap_or_default().to_vec();
    Ok((DirEntry { ino, next, kind, name }, reclen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::PathBuf;

    /// Who the tests create as: the test process itself, as a vNode's first process is the
    /// VMM's ids (so no owner changes, whoever runs the tests).
    fn me() -> Owner {
        crate::identity::Creds::of_host().creator()
    }

    /// A vNode root `<tmp>/outer/root`, with `<tmp>/outer/secret` and `<tmp>/outer/dir/`
    /// outside it and `/etc/passwd` inside it.
    struct Fixture {
        _tmp: tempfile::TempDir,
        outer: PathBuf,
        root: PathBuf,
        fs: HostDir,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outer = tmp.path().join("outer");
        let root = outer.join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::create_dir_all(outer.join("dir")).expect("mkdir");
        std::fs::write(outer.join("secret"), b"outside").expect("write");
        std::fs::write(root.join("etc/passwd"), b"inside").expect("write");
        let fs = HostDir::new(&root).expect("HostDir::new");
        Fixture { _tmp: tmp, outer, root, fs }
    }

    fn read_all(fs: &HostDir, path: &[u8]) -> SysResult<Vec<u8>> {
        let f = fs.open(path, libc::O_RDONLY, 0, me())?;
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = f.read_at(&mut buf, out.len() as u64)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    fn names(fs: &HostDir, path: &[u8], max: usize) -> Vec<Vec<u8>> {
        let dir = fs.open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0, me()).expect("open dir");
        let mut pos = 0;
        let mut out = Vec::new();
        loop {
            let batch = dir.read_dir(pos, max).expect("read_dir");
            assert!(batch.len() <= max);
            let Some(last) = batch.last() else { return out };
            pos = last.next;
            out.extend(batch.into_iter().map(|e| e.name));
        }
    }

    #[test]
    fn split_paths() {
        assert_eq!(split(b"/"), Split::Root);
        assert_eq!(split(b"///"), Split::Root);
        assert_eq!(split(b"a"), Split::Child { parent: b".", name: b"a" });
        assert_eq!(split(b"/a"), Split::Child { parent: b"/", name: b"a" });
        assert_eq!(split(b"/a/b//"), Split::Child { parent: b"/a/", name: b"b//" });
        assert_eq!(split(b"//a//b"), Split::Child { parent: b"//a//", name: b"b" });
        assert_eq!(split(b"/a/.."), Split::Child { parent: b"/a/", name: b".." });
    }

    /// `sync`/`syncfs` work on a mount whose root is held as an `O_PATH` descriptor.
    #[test]
    fn sync_all_syncs_the_mount() {
        let f = fixture();
        assert_eq!(f.fs.sync_all(), Ok(()));
    }

    #[test]
    fn new_rejects_non_directories() {
        let f = fixture();
        assert!(HostDir::new(&f.outer.join("secret")).is_err());
        assert!(HostDir::new(&f.outer.join("missing")).is_err());
        assert!(HostDir::new(Path::new("a\0b")).is_err());
    }

    #[test]
    fn dotdot_stays_inside() {
        let f = fixture();
        assert_eq!(read_all(&f.fs, b"../../etc/passwd").unwrap(), b"inside");
        assert_eq!(read_all(&f.fs, b"/../../etc/passwd").unwrap(), b"inside");
        assert_eq!(read_all(&f.fs, b"/etc/../../../etc/passwd").unwrap(), b"inside");
        assert_eq!(read_all(&f.fs, b"/../secret"), Err(Errno::ENOENT));
        let root = f.fs.stat(b"/", true).unwrap();
        assert_eq!(f.fs.stat(b"/..", true).unwrap().ino, root.ino);
        assert_eq!(f.fs.stat(b"/..", false).unwrap().ino, root.ino);
        assert_eq!(f.fs.stat(b"/../..", false).unwrap().ino, root.ino);
    }

    #[test]
    fn symlinks_resolve_inside() {
        let f = fixture();
        symlink("/etc", f.root.join("abs")).unwrap();
        symlink("../../..", f.root.join("up")).unwrap();
        symlink(&f.outer, f.root.join("host")).unwrap();
        symlink("..", f.root.join("etc/parent")).unwrap();
        assert_eq!(read_all(&f.fs, b"/abs/passwd").unwrap(), b"inside");
        assert_eq!(read_all(&f.fs, b"/up/etc/passwd").unwrap(), b"inside");
        assert_eq!(read_all(&f.fs, b"/etc/parent/up/abs/passwd").unwrap(), b"inside");
        assert_eq!(read_all(&f.fs, b"/up/secret"), Err(Errno::ENOENT));
        assert_eq!(read_all(&f.fs, b"/host/secret"), Err(Errno::ENOENT));
        assert_eq!(f.fs.stat(b"/up", true).unwrap().ino, f.fs.stat(b"/", true).unwrap().ino);
        // Creating through symlinks lands inside too.
        symlink("../escaped", f.root.join("dangling")).unwrap();
        f.fs.open(b"/dangling", libc::O_CREAT | libc::O_WRONLY, 0o644, me()).unwrap();
        assert!(f.root.join("escaped").exists());
        assert!(!f.outer.join("escaped").exists());
        f.fs.mkdir(b"/up/made", 0o755, me()).unwrap();
        assert!(f.root.join("made").is_dir());
        f.fs.rename(b"/up/made", b"/etc/parent/up/moved").unwrap();
        assert!(f.root.join("moved").is_dir());
        assert_eq!(f.fs.unlink(b"/host/secret"), Err(Errno::ENOENT));
        assert_eq!(f.fs.rename(b"/host/secret", b"/stolen"), Err(Errno::ENOENT));
        assert_eq!(f.fs.rename(b"/etc/passwd", b"/host/dir/passwd"), Err(Errno::ENOENT));
        assert!(f.outer.join("secret").exists());
        assert!(!f.outer.join("dir/passwd").exists());
    }

    #[test]
    fn symlink_loop_is_eloop() {
        let f = fixture();
        symlink("b", f.root.join("a")).unwrap();
        symlink("a", f.root.join("b")).unwrap();
        assert_eq!(f.fs.open(b"/a", libc::O_RDONLY, 0, me()).err(), Some(Errno::ELOOP));
        assert_eq!(f.fs.stat(b"/a", true), Err(Errno::ELOOP));
        assert_eq!(f.fs.access(b"/a", libc::F_OK), Err(Errno::ELOOP));
        assert_eq!(f.fs.mkdir(b"/a/x", 0o755, me()), Err(Errno::ELOOP));
        assert_eq!(f.fs.stat(b"/a", false).unwrap().mode & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(f.fs.readlink(b"/a").unwrap(), b"b");
    }

    #[test]
    fn round_trip() {
        let f = fixture();
        f.fs.mkdir(b"/d", 0o755, me()).unwrap();
        let file = f.fs.open(b"/d/f", libc::O_CREAT | libc::O_RDWR, 0o644, me()).unwrap();
        assert_eq!(file.write_at(b"hello world", 0).unwrap(), 11);
        assert_eq!(file.write_at(b"W", 6).unwrap(), 1);
        let mut buf = [0u8; 32];
        assert_eq!(file.read_at(&mut buf, 0).unwrap(), 11);
        assert_eq!(&buf[..11], b"hello World");
        assert_eq!(file.read_at(&mut buf, 100).unwrap(), 0);
        assert_eq!(file.read_at(&mut buf, u64::MAX), Err(Errno::EINVAL));
        let st = file.stat().unwrap();
        assert_eq!(st.size, 11);
        assert_eq!(st.mode, libc::S_IFREG | 0o644);
        assert_eq!(st.nlink, 1);
        let host = std::fs::metadata(f.root.join("d/f")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((st.dev, st.ino), (host.dev(), host.ino()));
        assert_eq!(st.mtime, Timespec { sec: host.mtime(), nsec: host.mtime_nsec() });
        file.set_len(5).unwrap();
        file.sync(false).unwrap();
        file.sync(true).unwrap();
        assert_eq!(f.fs.stat(b"/d/f", true).unwrap().size, 5);
        f.fs.rename(b"/d/f", b"/d/g").unwrap();
        assert_eq!(f.fs.stat(b"/d/f", true), Err(Errno::ENOENT));
        assert_eq!(read_all(&f.fs, b"/d/g").unwrap(), b"hello");
        assert_eq!(f.fs.rmdir(b"/d"), Err(Errno::ENOTEMPTY));
        f.fs.unlink(b"/d/g").unwrap();
        assert_eq!(f.fs.unlink(b"/d/g"), Err(Errno::ENOENT));
        f.fs.rmdir(b"/d/").unwrap();
        assert_eq!(f.fs.stat(b"/d", false), Err(Errno::ENOENT));
        // The open file outlives its name.
        assert_eq!(file.read_at(&mut buf, 0).unwrap(), 5);
    }

    #[test]
    fn open_flags() {
        let f = fixture();
        let p = b"/etc/passwd";
        assert_eq!(f.fs.open(p, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644, me()).err(), Some(Errno::EEXIST));
        symlink("nowhere", f.root.join("dangling")).unwrap();
        let excl = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
        assert_eq!(f.fs.open(b"/dangling", excl, 0o644, me()).err(), Some(Errno::EEXIST));
        assert_eq!(f.fs.open(p, libc::O_RDONLY | libc::O_DIRECTORY, 0, me()).err(), Some(Errno::ENOTDIR));
        assert_eq!(f.fs.open(b"/etc/passwd/", libc::O_RDONLY, 0, me()).err(), Some(Errno::ENOTDIR));
        assert_eq!(f.fs.open(b"/missing", libc::O_RDONLY, 0, me()).err(), Some(Errno::ENOENT));
        assert_eq!(f.fs.open(b"/dangling", libc::O_RDONLY | libc::O_NOFOLLOW, 0, me()).err(), Some(Errno::ELOOP));
        assert_eq!(f.fs.open(b"/etc", libc::O_WRONLY, 0, me()).err(), Some(Errno::EISDIR));
        // Access modes are enforced by the host descriptor.
        let ro = f.fs.open(p, libc::O_RDONLY | libc::O_APPEND | libc::O_NONBLOCK, 0, me()).unwrap();
        assert_eq!(ro.write_at(b"x", 0), Err(Errno::EBADF));
        let wo = f.fs.open(p, libc::O_WRONLY, 0, me()).unwrap();
        assert_eq!(wo.read_at(&mut [0u8; 4], 0), Err(Errno::EBADF));
        // O_APPEND is the state layer's: positioned writes stay positioned.
        let app = f.fs.open(p, libc::O_WRONLY | libc::O_APPEND, 0, me()).unwrap();
        assert_eq!(app.write_at(b"I", 0).unwrap(), 1);
        assert_eq!(read_all(&f.fs, p).unwrap(), b"Inside");
        f.fs.open(p, libc::O_WRONLY | libc::O_TRUNC, 0, me()).unwrap();
        assert_eq!(read_all(&f.fs, p).unwrap(), b"");
        // O_CREAT uses the mode (under the host umask, which is at most 0o022 here).
        f.fs.open(b"/new", libc::O_CREAT | libc::O_WRONLY, 0o640, me()).unwrap();
        assert_eq!(f.fs.stat(b"/new", true).unwrap().mode, libc::S_IFREG | 0o640);
        // Unknown bits are ignored, as open(2) does; O_PATH drops the rest.
        f.fs.open(p, libc::O_RDONLY | 0x4000_0000, 0, me()).unwrap();
        let path = f.fs.open(p, libc::O_PATH | libc::O_CREAT | libc::O_TRUNC | libc::O_RDWR, 0o777, me()).unwrap();
        assert_eq!(path.read_at(&mut [0u8; 4], 0), Err(Errno::EBADF));
        assert_eq!(path.stat().unwrap().mode & libc::S_IFMT, libc::S_IFREG);
        // O_TMPFILE creates an unnamed file in a directory of the root.
        let tmp = f.fs.open(b"/etc", libc::O_TMPFILE | libc::O_RDWR, 0o600, me());
        match tmp {
            Ok(t) => assert_eq!(t.write_at(b"x", 0).unwrap(), 1),
            Err(e) => assert_eq!(e, Errno::EOPNOTSUPP),
        }
        // Directories open read-only (for getdents) and refuse reads.
        let dir = f.fs.open(b"/", libc::O_RDONLY, 0, me()).unwrap();
        assert_eq!(dir.read_at(&mut [0u8; 4], 0), Err(Errno::EISDIR));
        assert_eq!(dir.stat().unwrap().mode & libc::S_IFMT, libc::S_IFDIR);
    }

    #[test]
    fn read_dir_pages() {
        let f = fixture();
        f.fs.mkdir(b"/d", 0o755, me()).unwrap();
        let mut expected = BTreeSet::from([b".".to_vec(), b"..".to_vec()]);
        for i in 0..57 {
            let name = format!("file-{i}-{}", "x".repeat(i * 4));
            f.fs.open(format!("/d/{name}").as_bytes(), libc::O_CREAT | libc::O_WRONLY, 0o644, me()).unwrap();
            expected.insert(name.into_bytes());
        }
        for max in [1, 2, 3, 5, 8, 64, 1000] {
            let got = names(&f.fs, b"/d", max);
            assert_eq!(got.len(), expected.len(), "max {max}");
            assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected, "max {max}");
        }
        // Position 0 rewinds; a cookie continues; max 0 reads nothing.
        let dir = f.fs.open(b"/d", libc::O_RDONLY, 0, me()).unwrap();
        let first = dir.read_dir(0, 3).unwrap();
        let again = dir.read_dir(0, 3).unwrap();
        assert_eq!(first, again);
        let rest = dir.read_dir(first[1].next, 1).unwrap();
        assert_eq!(rest[0], first[2]);
        assert!(dir.read_dir(0, 0).unwrap().is_empty());
        // Kinds and inode numbers come from the host.
        let all = dir.read_dir(0, usize::MAX).unwrap();
        let dot = all.iter().find(|e| e.name == b".").unwrap();
        assert_eq!(dot.kind, libc::DT_DIR);
        assert_eq!(dot.ino, f.fs.stat(b"/d", true).unwrap().ino);
        let dotdot = all.iter().find(|e| e.name == b"..").unwrap();
        assert_eq!(dotdot.ino, f.fs.stat(b"/", true).unwrap().ino);
        assert!(all.iter().filter(|e| e.name.starts_with(b"file-")).all(|e| e.kind == libc::DT_REG));
        // At the root, `..` is the root.
        let root = f.fs.open(b"/", libc::O_RDONLY, 0, me()).unwrap().read_dir(0, usize::MAX).unwrap();
        let ino = |n: &[u8]| root.iter().find(|e| e.name == n).map(|e| e.ino);
        assert_eq!(ino(b".."), ino(b"."));
        assert!(ino(b"etc").is_some());
        // Not a directory.
        let file = f.fs.open(b"/etc/passwd", libc::O_RDONLY, 0, me()).unwrap();
        assert_eq!(file.read_dir(0, 10), Err(Errno::ENOTDIR));
        assert_eq!(file.read_dir(0, 0), Err(Errno::ENOTDIR));
        let path = f.fs.open(b"/d", libc::O_PATH, 0, me()).unwrap();
        assert_eq!(path.read_dir(0, 10), Err(Errno::EBADF));
    }

    #[test]
    fn stat_and_lstat() {
        let f = fixture();
        symlink("etc/passwd", f.root.join("link")).unwrap();
        symlink("etc", f.root.join("dirlink")).unwrap();
        let l = f.fs.stat(b"/link", false).unwrap();
        assert_eq!(l.mode & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(l.size, 10);
        let s = f.fs.stat(b"/link", true).unwrap();
        assert_eq!(s.mode & libc::S_IFMT, libc::S_IFREG);
        assert_eq!(s.size, 6);
        assert_eq!(f.fs.readlink(b"/link").unwrap(), b"etc/passwd");
        assert_eq!(f.fs.readlink(b"/etc/passwd"), Err(Errno::EINVAL));
        assert_eq!(f.fs.readlink(b"/"), Err(Errno::EINVAL));
        assert_eq!(f.fs.readlink(b"/missing"), Err(Errno::ENOENT));
        // A trailing slash follows the link, as on Linux.
        assert_eq!(f.fs.stat(b"/dirlink/", false).unwrap().mode & libc::S_IFMT, libc::S_IFDIR);
        assert_eq!(f.fs.stat(b"/dirlink", false).unwrap().mode & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(f.fs.stat(b"/link/", true), Err(Errno::ENOTDIR));
        assert_eq!(f.fs.readlink(b"/dirlink/"), Err(Errno::EINVAL));
        let long = "t".repeat(4000);
        symlink(&long, f.root.join("long")).unwrap();
        assert_eq!(f.fs.readlink(b"/long").unwrap(), long.as_bytes());
    }

    /// Symlinks a guest makes resolve inside the root, whatever their text; hard links,
    /// following or not, and attribute changes through symlinks never touch a host file.
    #[test]
    fn links_and_attributes_stay_inside() {
        use std::os::unix::fs::MetadataExt;
        let f = fixture();
        let secret = f.outer.join("secret");
        let before = std::fs::metadata(&secret).unwrap();
        let host_secret = secret.to_str().unwrap().as_bytes();
        f.fs.symlink(b"/etc/passwd", b"/abs", me()).unwrap();
        f.fs.symlink(b"../../secret", b"/up", me()).unwrap();
        f.fs.symlink(host_secret, b"/host", me()).unwrap();
        assert_eq!(std::fs::read_link(f.root.join("abs")).unwrap(), Path::new("/etc/passwd"));
        assert_eq!(read_all(&f.fs, b"/abs").unwrap(), b"inside");
        assert_eq!(f.fs.readlink(b"/abs").unwrap(), b"/etc/passwd");
        assert_eq!(f.fs.symlink(b"x", b"/abs", me()), Err(Errno::EEXIST));
        assert_eq!(f.fs.symlink(b"x", b"/", me()), Err(Errno::EEXIST));
        assert_eq!(f.fs.symlink(b"x", b"/../../escape", me()), Ok(()));
        assert!(f.root.join("escape").symlink_metadata().is_ok(), "`..` of the root is the root");
        for (link, name) in [(&b"/up"[..], &b"/l1"[..]), (b"/host", b"/l2")] {
            // Followed: the target does not exist inside the root.
            assert_eq!(f.fs.link(link, name, true), Err(Errno::ENOENT));
            assert_eq!(f.fs.set_attr(link, true, SetAttr::Mode(0o777)), Err(Errno::ENOENT));
            let times = SetAttr::Times { atime: TimeSet::Now, mtime: TimeSet::At(Timespec { sec: 1, nsec: 0 }) };
            assert_eq!(f.fs.set_attr(link, true, times), Err(Errno::ENOENT));
            assert_eq!(f.fs.set_attr(link, true, SetAttr::Owner { uid: Some(1), gid: None }), Err(Errno::ENOENT));
            // Not followed: the link itself.
            f.fs.link(link, name, false).unwrap();
            assert_eq!(f.fs.stat(name, false).unwrap().mode & libc::S_IFMT, libc::S_IFLNK);
        }
        f.fs.link(b"/abs", b"/hard", true).unwrap();
        assert_eq!(f.fs.stat(b"/hard", false).unwrap().nlink, 2);
        assert_eq!(f.fs.link(b"/etc", b"/d", false), Err(Errno::EPERM));
        assert_eq!(f.fs.link(b"/", b"/d", true), Err(Errno::EPERM));
        assert_eq!(f.fs.link(b"/etc/passwd", b"/", false), Err(Errno::EEXIST));
        // Attributes through an in-root symlink change the in-root file; a symlink's own mode
        // cannot change.
        f.fs.set_attr(b"/abs", true, SetAttr::Mode(0o600)).unwrap();
        assert_eq!(f.fs.stat(b"/etc/passwd", true).unwrap().mode & 0o7777, 0o600);
        assert_eq!(f.fs.set_attr(b"/abs", false, SetAttr::Mode(0o600)), Err(Errno::EOPNOTSUPP));
        let at = Timespec { sec: 1_000_000_000, nsec: 42 };
        f.fs.set_attr(b"/abs", false, SetAttr::Times { atime: TimeSet::At(at), mtime: TimeSet::Omit }).unwrap();
        assert_eq!(f.fs.stat(b"/abs", false).unwrap().atime, at);
        assert_ne!(f.fs.stat(b"/etc/passwd", true).unwrap().atime, at);
        let file = f.fs.open(b"/etc/passwd", libc::O_RDONLY, 0, me()).unwrap();
        file.set_attr(SetAttr::Times { atime: TimeSet::Omit, mtime: TimeSet::At(at) }).unwrap();
        assert_eq!(file.stat().unwrap().mtime, at);
        let after = std::fs::metadata(&secret).unwrap();
        assert_eq!((before.mode(), before.nlink(), before.mtime(), before.uid()), (after.mode(), after.nlink(), after.mtime(), after.uid()));
    }

    /// What a guest creates is its creator's, of every kind (a set-user-ID file stays so), and
    /// under a set-group-ID directory has the directory's group (a subdirectory the bit too);
    /// a file that existed keeps its owner when opened with `O_CREAT`, and the file made through
    /// a dangling symlink is its creator's, the symlink unchanged.
    #[test]
    fn new_objects_belong_to_their_creator() {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(uid, 0, "giving new files their creator's ids needs root, as the VMM runs; this test runs as uid {uid}");
        let f = fixture();
        let me = Owner { uid: 1000, gid: 1001 };
        let owner = |path: &[u8]| {
            let st = f.fs.stat(path, false).unwrap();
            (st.uid, st.gid, st.mode & 0o7777)
        };
        f.fs.open(b"/f", libc::O_CREAT | libc::O_WRONLY, 0o4755, me).unwrap();
        f.fs.mkdir(b"/d", 0o750, me).unwrap();
        f.fs.mknod(b"/p", libc::S_IFIFO | 0o640, me).unwrap();
        f.fs.symlink(b"f", b"/l", me).unwrap();
        f.fs.mkdir(b"/s", 0o755, Owner::ROOT).unwrap();
        f.fs.set_attr(b"/s", true, SetAttr::Owner { uid: None, gid: Some(50) }).unwrap();
        f.fs.set_attr(b"/s", true, SetAttr::Mode(0o2775)).unwrap();
        f.fs.open(b"/s/f", libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o640, me).unwrap();
        f.fs.mkdir(b"/s/d", 0o700, me).unwrap();
        f.fs.symlink(b"f", b"/s/l", me).unwrap();
        assert_eq!(owner(b"/f"), (1000, 1001, 0o4755));
        assert_eq!(owner(b"/d"), (1000, 1001, 0o750));
        assert_eq!(owner(b"/p"), (1000, 1001, 0o640));
        assert_eq!(owner(b"/l"), (1000, 1001, 0o777));
        assert_eq!(owner(b"/s"), (0, 50, 0o2775));
        assert_eq!(owner(b"/s/f"), (1000, 50, 0o640));
        assert_eq!(owner(b"/s/d"), (1000, 50, 0o2700));
        assert_eq!(owner(b"/s/l"), (1000, 50, 0o777));
        let other = Owner { uid: 2000, gid: 2000 };
        f.fs.open(b"/f", libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC, 0o600, other).unwrap();
        assert_eq!(owner(b"/f"), (1000, 1001, 0o4755), "an existing file keeps its owner");
        assert_eq!(f.fs.open(b"/d", libc::O_CREAT | libc::O_RDONLY, 0o600, other).err(), Some(Errno::EISDIR));
        assert_eq!(f.fs.open(b"/p", libc::O_CREAT | libc::O_RDONLY, 0o600, other).map(|p| p.fifo().is_some()), Ok(true));
        assert_eq!(owner(b"/p"), (1000, 1001, 0o640));
        f.fs.symlink(b"s/made", b"/dangling", me).unwrap();
        f.fs.open(b"/dangling", libc::O_CREAT | libc::O_WRONLY, 0o600, other).unwrap();
        assert_eq!(owner(b"/s/made"), (2000, 50, 0o600), "made through the symlink, in the set-group-ID directory");
        assert_eq!(owner(b"/dangling"), (1000, 1001, 0o777));
        f.fs.link(b"/f", b"/s/h", false).unwrap();
        assert_eq!(owner(b"/s/h"), (1000, 1001, 0o4755), "a hard link is the same inode");
    }

    #[test]
    fn access_modes() {
        let f = fixture();
        let p = f.root.join("etc/passwd");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(f.fs.access(b"/etc/passwd", libc::F_OK), Ok(()));
        assert_eq!(f.fs.access(b"/etc/passwd", libc::R_OK), Ok(()));
        // Even root needs an execute bit.
        assert_eq!(f.fs.access(b"/etc/passwd", libc::X_OK), Err(Errno::EACCES));
        assert_eq!(f.fs.access(b"/etc", libc::X_OK), Ok(()));
        assert_eq!(f.fs.access(b"/missing", libc::F_OK), Err(Errno::ENOENT));
        assert_eq!(f.fs.access(b"/missing", 0x40), Err(Errno::EINVAL));
        assert_eq!(f.fs.access(b"/../secret", libc::F_OK), Err(Errno::ENOENT));
    }

    #[test]
    fn linux_edge_cases() {
        let f = fixture();
        for r in [
            f.fs.open(b"", libc::O_RDONLY, 0, me()).err(),
            f.fs.stat(b"", true).err(),
            f.fs.stat(b"", false).err(),
            f.fs.readlink(b"").err(),
            f.fs.access(b"", 0).err(),
            f.fs.mkdir(b"", 0, me()).err(),
            f.fs.rmdir(b"").err(),
            f.fs.unlink(b"").err(),
            f.fs.rename(b"", b"/x").err(),
            f.fs.rename(b"/etc", b"").err(),
        ] {
            assert_eq!(r, Some(Errno::ENOENT));
        }
        assert_eq!(f.fs.mkdir(b"/", 0o755, me()), Err(Errno::EEXIST));
        assert_eq!(f.fs.mkdir(b"/etc/.", 0o755, me()), Err(Errno::EEXIST));
        assert_eq!(f.fs.mkdir(b"/..", 0o755, me()), Err(Errno::EEXIST));
        assert_eq!(f.fs.rmdir(b"/"), Err(Errno::EBUSY));
        assert_eq!(f.fs.rmdir(b"/etc/."), Err(Errno::EINVAL));
        assert_eq!(f.fs.rmdir(b"/.."), Err(Errno::ENOTEMPTY));
        assert_eq!(f.fs.rmdir(b"/etc/passwd"), Err(Errno::ENOTDIR));
        assert_eq!(f.fs.unlink(b"/etc"), Err(Errno::EISDIR));
        assert_eq!(f.fs.unlink(b"/"), Err(Errno::EISDIR));
        assert_eq!(f.fs.unlink(b"/.."), Err(Errno::EISDIR));
        assert_eq!(f.fs.unlink(b"/etc/passwd/"), Err(Errno::ENOTDIR));
        assert_eq!(f.fs.rename(b"/etc", b"/etc/sub"), Err(Errno::EINVAL));
        assert_eq!(f.fs.rename(b"/", b"/x"), Err(Errno::EBUSY));
        assert_eq!(f.fs.rename(b"/etc/..", b"/x"), Err(Errno::EBUSY));
        assert_eq!(f.fs.rename(b"/etc/passwd", b"/.."), Err(Errno::EBUSY));
        assert_eq!(f.fs.rename(b"/etc/passwd", b"/etc/passwd/"), Err(Errno::ENOTDIR));
        assert_eq!(f.fs.mkdir(b"/missing/x", 0o755, me()), Err(Errno::ENOENT));
        assert_eq!(f.fs.mkdir(b"/etc/passwd/x", 0o755, me()), Err(Errno::ENOTDIR));
        f.fs.mkdir(b"//new//dir//", 0o755, me()).err();
        f.fs.mkdir(b"//new", 0o755, me()).unwrap();
        f.fs.mkdir(b"//new//dir//", 0o755, me()).unwrap();
        assert!(f.root.join("new/dir").is_dir());
        f.fs.rename(b"/new/dir/", b"/new/moved/").unwrap();
        assert!(f.root.join("new/moved").is_dir());
        assert_eq!(f.fs.stat(b"/new/./moved/../moved/.", false).unwrap().mode & libc::S_IFMT, libc::S_IFDIR);
        // Relative paths are taken from the root too.
        assert_eq!(read_all(&f.fs, b"etc/passwd").unwrap(), b"inside");
        // Out-of-range offsets.
        let file = f.fs.open(b"/etc/passwd", libc::O_RDWR, 0, me()).unwrap();
        assert_eq!(file.set_len(u64::MAX), Err(Errno::EINVAL));
        assert_eq!(file.write_at(b"x", 1 << 63), Err(Errno::EINVAL));
        assert!(f.fs.open(b"/etc\0/passwd", libc::O_RDONLY, 0, me()).is_err());
    }

    #[test]
    fn long_names() {
        let f = fixture();
        let long = format!("/{}", "n".repeat(256));
        let lb = long.as_bytes();
        assert_eq!(f.fs.open(lb, libc::O_CREAT | libc::O_WRONLY, 0o644, me()).err(), Some(Errno::ENAMETOOLONG));
        assert_eq!(f.fs.mkdir(lb, 0o755, me()), Err(Errno::ENAMETOOLONG));
        assert_eq!(f.fs.stat(lb, true), Err(Errno::ENAMETOOLONG));
        assert_eq!(f.fs.rename(b"/etc/passwd", lb), Err(Errno::ENAMETOOLONG));
        let ok = format!("/{}", "n".repeat(255));
        f.fs.mkdir(ok.as_bytes(), 0o755, me()).unwrap();
        let deep = "/a".repeat(2048);
        for r in [
            f.fs.open(deep.as_bytes(), libc::O_RDONLY, 0, me()).err(),
            f.fs.stat(deep.as_bytes(), false).err(),
            f.fs.readlink(deep.as_bytes()).err(),
            f.fs.access(deep.as_bytes(), 0).err(),
            f.fs.mkdir(deep.as_bytes(), 0, me()).err(),
            f.fs.rmdir(deep.as_bytes()).err(),
            f.fs.unlink(deep.as_bytes()).err(),
            f.fs.rename(deep.as_bytes(), b"/x").err(),
        ] {
            assert_eq!(r, Some(Errno::ENAMETOOLONG));
        }
        // 4095 bytes is a legal length.
        let just = format!("/{}", "a/".repeat(2047));
        assert_eq!(just.len(), 4095);
        assert_eq!(f.fs.stat(just.as_bytes(), false), Err(Errno::ENOENT));
    }

    /// Every file under `dir` (not following symlinks) except the `skip` subtree, with its
    /// kind and mode, size, modification time, owner and link count.
    fn snapshot(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, (u32, u64, i64, i64, u32, u64)>) {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path == skip {
                continue;
            }
            if let Ok(md) = std::fs::symlink_metadata(&path) {
                out.insert(path.clone(), (md.mode(), md.size(), md.mtime(), md.mtime_nsec(), md.uid(), md.nlink()));
                if md.is_dir() {
                    snapshot(&path, skip, out);
                }
            }
        }
    }

    fn names_of(dir: &Path) -> BTreeSet<std::ffi::OsString> {
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default()
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Path pieces likely to hit confinement and parsing corner cases, plus random bytes.
        fn piece() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                4 => prop::sample::select(vec![
                    "/", "//", ".", "..", "../..", "a", "b", "etc", "passwd", "up", "abs", "host",
                    "dotdot", "loop", "f", "", "secret", "dir", "root", "outer",
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                1 => prop::collection::vec(1u8..=255, 0..12),
                1 => (250usize..260).prop_map(|n| vec![b'z'; n]),
            ]
        }

        fn path() -> impl Strategy<Value = Vec<u8>> {
            (any::<bool>(), prop::collection::vec(piece(), 0..8)).prop_map(|(abs, pieces)| {
                let mut p = if abs { b"/".to_vec() } else { Vec::new() };
                for (i, piece) in pieces.iter().enumerate() {
                    if i > 0 {
                        p.push(b'/');
                    }
                    p.extend_from_slice(piece);
                }
                p
            })
        }

        fn op() -> impl Strategy<Value = (u8, Vec<u8>, Vec<u8>, i32, u32, u64, usize)> {
            (0u8..15, path(), path(), any::<i32>(), any::<u32>(), 0u64..(1 << 20), 0usize..8)
        }

        fn run(fs: &HostDir, (op, a, b, flags, mode, off, max): (u8, Vec<u8>, Vec<u8>, i32, u32, u64, usize)) {
            let mode = mode | 0o700;
            match op {
                0 => {
                    let _ = fs.stat(&a, true);
                }
                1 => {
                    let _ = fs.stat(&a, false);
                }
                2 => {
                    let _ = fs.readlink(&a);
                }
                3 => {
                    let _ = fs.access(&a, flags & 7);
                }
                4 => {
                    let _ = fs.mkdir(&a, mode, me());
                }
                5 => {
                    let _ = fs.rmdir(&a);
                }
                6 => {
                    let _ = fs.unlink(&a);
                }
                7 => {
                    let _ = fs.rename(&a, &b);
                }
                8 => {
                    let _ = fs.access(&a, flags);
                }
                12 => {
                    let _ = fs.symlink(&b, &a, me());
                }
                13 => {
                    let _ = fs.link(&a, &b, flags & 1 != 0);
                }
                14 => {
                    let attr = match flags & 3 {
                        0 => SetAttr::Mode(mode),
                        1 => SetAttr::Owner { uid: Some(mode), gid: None },
                        _ => SetAttr::Times { atime: TimeSet::Now, mtime: TimeSet::At(Timespec { sec: 1, nsec: 0 }) },
                    };
                    let _ = fs.set_attr(&a, flags & 4 != 0, attr);
                }
                _ => {
                    // The fixture holds no FIFOs, so no open can block.
                    if let Ok(file) = fs.open(&a, flags, mode, me()) {
                        let mut buf = [0u8; 64];
                        let _ = file.read_at(&mut buf, off);
                        let _ = file.write_at(b"fuzz", off);
                        let _ = file.read_dir(off, max);
                        let _ = file.read_dir(0, max);
                        let _ = file.set_len(off);
                        let _ = file.stat();
                    }
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
            #[test]
            fn random_paths_stay_inside(ops in prop::collection::vec(op(), 1..40)) {
                let f = fixture();
                symlink("../../..", f.root.join("up")).unwrap();
                symlink("/etc", f.root.join("abs")).unwrap();
                symlink(&f.outer, f.root.join("host")).unwrap();
                symlink("..", f.root.join("dotdot")).unwrap();
                symlink("loop", f.root.join("loop")).unwrap();
                std::fs::write(f.root.join("f"), b"file").unwrap();
                let top = f.outer.parent().unwrap().to_path_buf();
                let mut before = BTreeMap::new();
                snapshot(&top, &f.root, &mut before);
                let host_root = names_of(Path::new("/"));
                for op in ops {
                    run(&f.fs, op);
                }
                let mut after = BTreeMap::new();
                snapshot(&top, &f.root, &mut after);
                prop_assert_eq!(before, after);
                prop_assert_eq!(host_root, names_of(Path::new("/")));
            }
        }
    }
}
