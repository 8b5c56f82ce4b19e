//! The vNode file system seam: every file-system system call of the Linux state layer goes
//! through [`FileSystem`] and [`File`].
//!
//! Paths handed to a [`FileSystem`] are *vNode paths*: absolute byte strings as the guest sees
//! them, already joined with the cwd or directory fd by the state layer, but not normalised
//! (`..` and symlinks are resolved by the implementation, inside the vNode root: nothing can
//! escape it). Open files carry no position: the state layer keeps offsets, so an implementation
//! can be stateless: [`remote`] sends every call over the network as one request.
//!
//! - [`hostdir`]: a confined host directory (`lego run --root`).
//! - [`remote`]: the vNode's mount on a storage server, through a mem-server's buffer cache
//!   (`lego run --storage-server`).

pub mod hostdir;
pub mod memfd;
pub mod remote;

use crate::errno::SysResult;
pub use lego_proto::storage::Owner;

/// File metadata in the shape of Linux `struct stat` / `statx`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    /// File type and permission bits (`S_IFMT | 0o7777`).
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blksize: u64,
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

/// Seconds and nanoseconds, as in `struct timespec`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

/// The node a file is, as `(st_dev, st_ino)`: what names a FIFO's pipe ([`crate::fifo`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId {
    pub dev: u64,
    pub ino: u64,
}

/// One directory entry, as `getdents64` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    /// Opaque position just after this entry: passing it to [`File::read_dir`] continues there.
    pub next: u64,
    /// `DT_*` type byte.
    pub kind: u8,
    pub name: Vec<u8>,
}

/// A file system holding one vNode's files.
///
/// The calls that create an object (`open` with `O_CREAT`, `mkdir`, `mkfifo`, `symlink`) take
/// its `creator`, the calling process's file-system ids ([`crate::identity::Creds::creator`]),
/// and give the new object the owner Linux gives it: [`Owner::in_dir`] of its parent directory
/// (the creator, or the group of a set-group-ID parent), with a new directory set-group-ID
/// under a set-group-ID one. An object that already exists keeps its owner.
pub trait FileSystem: Send + Sync {
    /// Opens (and with `O_CREAT` creates, owned by `creator`) `path`. `flags` are Linux
    /// `open(2)` flags; the access mode, `O_CREAT`, `O_EXCL`, `O_TRUNC`, `O_DIRECTORY` and
    /// `O_NOFOLLOW` are honoured here; `O_APPEND`, `O_CLOEXEC` and `O_NONBLOCK` are the state
    /// layer's business.
    fn open(&self, path: &[u8], flags: i32, mode: u32, creator: Owner) -> SysResult<Box<dyn File>>;
    /// `stat` (`follow == true`) or `lstat` of `path`.
    fn stat(&self, path: &[u8], follow: bool) -> SysResult<Stat>;
    /// Target of the symlink at `path`.
    fn readlink(&self, path: &[u8]) -> SysResult<Vec<u8>>;
    /// `access(2)` check of `mode` (`F_OK`, or `R_OK|W_OK|X_OK` bits).
    fn access(&self, path: &[u8], mode: i32) -> SysResult<()>;
    /// `mkdir(2)`: a directory owned by `creator`.
    fn mkdir(&self, path: &[u8], mode: u32, creator: Owner) -> SysResult<()>;
    /// `mknod(path, mode)` of a FIFO (`S_IFIFO` in `mode`: opening it gives a [`File`] whose
    /// [`File::fifo`] names it) or a socket's name (`S_IFSOCK`: opening it is `ENXIO`), owned
    /// by `creator`; any other type is `EINVAL`.
    fn mknod(&self, path: &[u8], mode: u32, creator: Owner) -> SysResult<()>;
    fn rmdir(&self, path: &[u8]) -> SysResult<()>;
    fn unlink(&self, path: &[u8]) -> SysResult<()>;
    fn rename(&self, from: &[u8], to: &[u8]) -> SysResult<()>;
    /// `symlink(2)`: a symbolic link at `path`, owned by `creator`, whose text is `target`
    /// (stored as given; it is resolved inside the vNode root when followed).
    fn symlink(&self, target: &[u8], path: &[u8], creator: Owner) -> SysResult<()>;
    /// `link(2)`: a new name `to` for the file at `from` (with `follow`, a symlink at `from` is
    /// followed, as `linkat(AT_SYMLINK_FOLLOW)` does); the file keeps its owner.
    fn link(&self, from: &[u8], to: &[u8], follow: bool) -> SysResult<()>;
    /// `chmod`, `chown`, `utimensat` of `path` (`follow == false`: of a symlink itself).
    fn set_attr(&self, path: &[u8], follow: bool, attr: SetAttr) -> SysResult<()>;
    /// `syncfs(2)`: once it returns, every file's bytes and every name of this file system
    /// survive power loss.
    fn sync_all(&self) -> SysResult<()>;
    /// `statfs(2)`: the file system's space.
    fn stat_fs(&self) -> SysResult<FsStat>;
    /// What `/proc/mounts` names as the device of the vNode's `/`: the host directory, or the
    /// storage server's export of the vNode (`STORAGE:/VNODE`, as NFS names one).
    fn source(&self) -> Vec<u8>;
}

/// One timestamp of a [`SetAttr::Times`], as `utimensat(2)` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    /// Leave it (`UTIME_OMIT`).
    Omit,
    /// The current time (`UTIME_NOW`).
    Now,
    /// This time.
    At(Timespec),
}

/// An attribute change: what `chmod`, `chown` and `utimensat` ask of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetAttr {
    /// Permission bits (`0o7777` at most).
    Mode(u32),
    /// Owner and group; `None` leaves one as it is (`-1` in `chown(2)`).
    Owner { uid: Option<u32>, gid: Option<u32> },
    /// Access and modification times.
    Times { atime: TimeSet, mtime: TimeSet },
}

/// The space of a file system, as `statfs(2)` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStat {
    /// `f_type`, the file system's magic number.
    pub fs_type: u64,
    /// `f_bsize` and `f_frsize`.
    pub block_size: u64,
    /// `f_blocks`, `f_bfree`, `f_bavail`.
    pub blocks: u64,
    pub free: u64,
    pub available: u64,
    /// `f_files`, `f_ffree`.
    pub files: u64,
    pub free_files: u64,
    /// `f_namelen`.
    pub name_max: u64,
    /// `f_flags`: the mount's `ST_*` flags (`ST_NOATIME` for remote storage, whose reads do not
    /// move access times).
    pub flags: u64,
}

/// An open file or directory.
pub trait File: Send + Sync {
    /// Reads at `offset`; returns bytes read (0 at end of file). `EISDIR` on a directory.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> SysResult<usize>;
    /// Writes at `offset`; returns bytes written.
    fn write_at(&self, buf: &[u8], offset: u64) -> SysResult<usize>;
    fn stat(&self) -> SysResult<Stat>;
    /// `ftruncate(2)`.
    fn set_len(&self, len: u64) -> SysResult<()>;
    /// `fsync(2)` (`data_only == false`) or `fdatasync(2)`.
    fn sync(&self, data_only: bool) -> SysResult<()>;
    /// Directory entries from position `pos` (0 = start, else a [`DirEntry::next`]), at most
    /// `max` of them, including `.` and `..`. `ENOTDIR` on a non-directory.
    fn read_dir(&self, pos: u64, max: usize) -> SysResult<Vec<DirEntry>>;
    /// `fchmod`, `fchown`, `futimens` of the open file.
    fn set_attr(&self, attr: SetAttr) -> SysResult<()>;
    /// The node, when this is a FIFO: the state layer opens its pipe instead of the file.
    fn fifo(&self) -> Option<NodeId> {
        None
    }
    /// Whether no name leads to the file any more (unlinked while open, or a memfd):
    /// `/proc/PID/fd` then says `(deleted)`, and opening the link reaches the descriptor.
    fn unlinked(&self) -> bool {
        false
    }
    /// A new open of this same file with `open(2)` `flags` (access mode and `O_TRUNC`), for
    /// `/proc/PID/fd/N` of a file no name leads to ([`File::unlinked`]).
    fn reopen(&self, _flags: i32) -> SysResult<Box<dyn File>> {
        Err(crate::errno::Errno::ENOENT)
    }
}

/// All of the file at vNode path `path`, read through `fs` (a program to run).
pub fn read_all(fs: &dyn FileSystem, path: &[u8]) -> SysResult<Vec<u8>> {
    // Opening creates nothing here: no one is the creator.
    let file = fs.open(path, libc::O_RDONLY, 0, Owner::ROOT)?;
    let size = file.stat()?.size;
    let mut bytes = vec![0u8; usize::try_from(size).map_err(|_| crate::errno::Errno::EFBIG)?];
    let n = file.read_at(&mut bytes, 0)?;
    bytes.truncate(n);
    Ok(bytes)
}
