//! File-system system calls: descriptors (`open`, `close`, `dup*`, `pipe*`, `fcntl`, `ioctl`),
//! I/O (`read`, `write`, `pread64`, `pwrite64`, `readv`, `writev`, `lseek`, `getdents64`),
//! metadata (`stat` family, `statx`, `access` family, `readlink*`), name-space changes
//! (`mkdir*`, `rmdir`, `unlink*`, `rename*`) and the working directory (`getcwd`, `chdir`,
//! `fchdir`, `umask`).
//!
//! Paths from the guest are joined with the working directory or a directory descriptor's path
//! into a vNode path and handed to the process's [`FileSystem`](crate::fs::FileSystem)
//! unnormalised; the file system resolves `..` and symlinks inside the vNode root. Positions and
//! status flags live in the open file description ([`OpenFile`]), as in Linux.
//!
//! Data moves between guest memory and the backing through a host buffer of at most
//! [`CHUNK`] bytes, so the size a guest asks for never decides how much the VMM allocates.
//! Guest buffers are checked before anything is consumed from the source: a buffer that is only
//! partly mapped gets a short transfer (as Linux's copy stopping at the fault would), an
//! unmapped one `EFAULT`.

pub(super) mod common;
pub(super) mod control;
pub(super) mod data;
mod dirs;
mod open;
pub(super) mod paths;
mod rw;
mod stat;

pub use control::*;
pub use dirs::*;
pub use open::*;
pub use rw::*;
pub use stat::*;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kvm_bindings::{kvm_regs, kvm_sregs};

    use super::common::*;
    use super::*;
    use crate::errno::{Errno, SysResult};
    use crate::fdtable::{Backing, FdTable, OpenFile};
    use crate::fs::Stat;
    use crate::process::{Locked, Process};
    use crate::syscall::{Args, Cpu};
    use crate::fs::hostdir::HostDir;
    use crate::memory::mm::flags::{MAP_ANONYMOUS, MAP_PRIVATE};
    use crate::memory::paging::Prot;
    use crate::identity::Creds;
    use crate::process::MAIN_TID;
    use crate::signal::SIG_IGN;
    use lego_proto::vma::VmaKind;

    type Handler = fn(&mut Process, &mut Cpu<'_>, Args) -> SysResult<u64>;
    type BlockingHandler = fn(&mut Locked<'_>, &mut Cpu<'_>, Args) -> SysResult<u64>;

    const BUF_LEN: u64 = 1 << 20;

    /// A process over a temporary directory, with a 1 MiB read-write buffer, a read-only page
    /// after it and a scratch area for strings.
    struct T {
        m: std::sync::Mutex<Process>,
        _server: mem_server::Handle,
        dir: tempfile::TempDir,
        buf: u64,
        ro: u64,
        scratch: u64,
        next: std::cell::Cell<u64>,
    }

    impl T {
        fn new() -> T {
            let dir = tempfile::tempdir().unwrap();
            let fs = Arc::new(HostDir::new(dir.path()).unwrap());
            let crate::testing::TestMm { mut mm, server } = crate::testing::mm(64 << 20);
            let flags = MAP_PRIVATE | MAP_ANONYMOUS;
            let buf = mm.mmap(0, BUF_LEN + 4096, Prot::RW, flags, VmaKind::Anon).unwrap();
            let ro = buf + BUF_LEN;
            mm.mprotect(ro, 4096, Prot::READ).unwrap();
            let scratch = mm.mmap(0, 1 << 16, Prot::RW, flags, VmaKind::Anon).unwrap();
            let creds = Creds::new((1000, 1000), (1000, 1000));
            let mut p = Process::new(mm, fs, "t".into(), b"t").unwrap();
            p.creds = creds;
            p.groups = Vec::new();
            p.fds = FdTable::new(64);
            p.rlimits = [(u64::MAX, u64::MAX); 16];
            T { m: std::sync::Mutex::new(p), _server: server, dir, buf, ro, scratch, next: std::cell::Cell::new(scratch) }
        }

        /// The process, locked.
        fn p(&self) -> std::sync::MutexGuard<'_, Process> {
            self.m.lock().unwrap()
        }

        fn call(&mut self, h: Handler, args: &[u64]) -> SysResult<u64> {
            self.callb_with(|p, cpu, a| h(p, cpu, a), args)
        }

        fn callb(&mut self, h: BlockingHandler, args: &[u64]) -> SysResult<u64> {
            self.callb_with(h, args)
        }

        fn callb_with(&mut self, h: impl FnOnce(&mut Locked<'_>, &mut Cpu<'_>, Args) -> SysResult<u64>, args: &[u64]) -> SysResult<u64> {
            let (mut regs, mut sregs) = (kvm_regs::default(), kvm_sregs::default());
            let mut cpu = Cpu::new(&mut regs, &mut sregs, 1);
            let mut a = [0u64; 6];
            a[..args.len()].copy_from_slice(args);
            h(&mut Locked::lock(&self.m), &mut cpu, a)
        }

        /// Puts a NUL-terminated string in guest memory.
        fn s(&self, s: &str) -> u64 {
            let at = self.next.get();
            let mut b = s.as_bytes().to_vec();
            b.push(0);
            self.p().mm.write_user(at, &b).unwrap();
            self.next.set(at + b.len() as u64);
            at
        }

        fn put(&self, addr: u64, data: &[u8]) {
            self.p().mm.write_user(addr, data).unwrap();
        }

        fn get(&self, addr: u64, len: usize) -> Vec<u8> {
            let mut b = vec![0u8; len];
            self.p().mm.read_user(addr, &mut b).unwrap();
            b
        }

        fn open(&mut self, path: &str, flags: i32, mode: u64) -> SysResult<u64> {
            let s = self.s(path);
            self.callb(openat, &[AT_FDCWD as u64, s, flags as u64, mode])
        }

        fn write_str(&mut self, fd: u64, data: &str) -> SysResult<u64> {
            self.put(self.buf, data.as_bytes());
            self.callb(write, &[fd, self.buf, data.len() as u64])
        }

        fn read_vec(&mut self, fd: u64, len: u64) -> SysResult<Vec<u8>> {
            let n = self.callb(read, &[fd, self.buf, len])?;
            Ok(self.get(self.buf, n as usize))
        }

        fn stat_of(&mut self, path: &str, flags: u64) -> SysResult<Stat> {
            let s = self.s(path);
            let out = self.scratch + 0x8000;
            self.call(newfstatat, &[AT_FDCWD as u64, s, out, flags])?;
            let b = self.get(out, STAT_SIZE);
            Ok(Stat {
                dev: u64_at(&b, 0),
                ino: u64_at(&b, 8),
                nlink: u64_at(&b, 16),
                mode: u64_at(&b, 24) as u32,
                size: u64_at(&b, 48),
                ..Stat::default()
            })
        }

        fn cwd(&mut self) -> Vec<u8> {
            let n = self.call(getcwd, &[self.buf, 4096]).unwrap();
            let mut v = self.get(self.buf, n as usize);
            assert_eq!(v.pop(), Some(0));
            v
        }
    }

    const RW_CREAT: i32 = libc::O_RDWR | libc::O_CREAT;

    #[test]
    fn open_write_seek_read() {
        let mut t = T::new();
        let fd = t.open("/f", RW_CREAT, 0o666).unwrap();
        assert_eq!(fd, 0);
        assert_eq!(t.write_str(fd, "hello world"), Ok(11));
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_CUR)]), Ok(11));
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_SET)]), Ok(0));
        assert_eq!(t.read_vec(fd, 5).unwrap(), b"hello");
        assert_eq!(t.call(pread64, &[fd, t.buf, 100, 6]), Ok(5));
        assert_eq!(t.get(t.buf, 5), b"world");
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_CUR)]), Ok(5), "pread keeps the offset");
        assert_eq!(t.call(lseek, &[fd, -1i64 as u64, u64::from(SEEK_END)]), Ok(10));
        assert_eq!(t.call(lseek, &[fd, -1i64 as u64, u64::from(SEEK_SET)]), Err(Errno::EINVAL));
        assert_eq!(t.call(lseek, &[fd, 0, 9]), Err(Errno::EINVAL));
        assert_eq!(t.call(lseek, &[fd, 20, u64::from(SEEK_DATA)]), Err(Errno(libc::ENXIO)));
        assert_eq!(t.call(lseek, &[fd, 3, u64::from(SEEK_HOLE)]), Ok(11));
        assert_eq!(t.call(fcntl, &[fd, F_GETFL as u64]), Ok((libc::O_RDWR | O_LARGEFILE) as u64));
        let st = t.stat_of("/f", 0).unwrap();
        assert_eq!((st.size, st.mode), (11, S_IFREG | 0o644));
        assert_eq!(t.call(ftruncate, &[fd, 4]), Ok(0));
        assert_eq!(t.call(ftruncate, &[fd, -1i64 as u64]), Err(Errno::EINVAL));
        assert_eq!(t.call(fsync, &[fd]), Ok(0));
        assert_eq!(std::fs::read(t.dir.path().join("f")).unwrap(), b"hell");
        assert_eq!(t.call(close, &[fd]), Ok(0));
        assert_eq!(t.call(close, &[fd]), Err(Errno::EBADF));
    }

    #[test]
    fn append_and_access_modes() {
        let mut t = T::new();
        let fd = t.open("/a", libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND, 0o600).unwrap();
        t.write_str(fd, "ab").unwrap();
        t.call(lseek, &[fd, 0, u64::from(SEEK_SET)]).unwrap();
        t.write_str(fd, "cd").unwrap();
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_CUR)]), Ok(4));
        assert_eq!(t.callb(read, &[fd, t.buf, 1]), Err(Errno::EBADF));
        assert_eq!(t.call(ftruncate, &[fd, 0]), Ok(0));
        let r = t.open("/a", libc::O_RDONLY, 0).unwrap();
        assert_eq!(t.write_str(r, "x"), Err(Errno::EBADF));
        assert_eq!(t.call(ftruncate, &[r, 0]), Err(Errno::EINVAL));
        let p = t.open("/a", libc::O_PATH, 0).unwrap();
        assert_eq!(t.callb(read, &[p, t.buf, 1]), Err(Errno::EBADF));
        assert_eq!(t.call(fcntl, &[p, F_GETFL as u64]), Ok((libc::O_PATH | O_LARGEFILE) as u64));
        assert_eq!(std::fs::read(t.dir.path().join("a")).unwrap(), b"");
        // O_PATH | O_NOFOLLOW opens the symlink itself.
        std::os::unix::fs::symlink("a", t.dir.path().join("l")).unwrap();
        let l = t.open("/l", libc::O_PATH | libc::O_NOFOLLOW, 0).unwrap();
        let st = t.scratch + 0x8000;
        assert_eq!(t.call(fstat, &[l, st]), Ok(0));
        assert_eq!(u64_at(&t.get(st, STAT_SIZE), 24) as u32 & S_IFMT, S_IFLNK);
        assert_eq!(t.call(getdents64, &[l, t.buf, 4096]), Err(Errno::EBADF));
        assert_eq!(t.open("/nope", libc::O_RDONLY, 0), Err(Errno::ENOENT));
        assert_eq!(t.open("", libc::O_RDONLY, 0), Err(Errno::ENOENT));
        assert_eq!(t.open("/t", libc::O_TMPFILE | libc::O_RDWR, 0o600), Err(Errno::EOPNOTSUPP));
    }

    #[test]
    fn guest_buffers_are_checked() {
        let mut t = T::new();
        let fd = t.open("/f", RW_CREAT, 0o644).unwrap();
        t.write_str(fd, "0123456789").unwrap();
        t.call(lseek, &[fd, 0, 0]).unwrap();
        assert_eq!(t.callb(read, &[fd, 0x10, 4]), Err(Errno::EFAULT));
        assert_eq!(t.callb(read, &[fd, t.ro, 4]), Err(Errno::EFAULT));
        assert_eq!(t.callb(read, &[fd, u64::MAX - 2, 4]), Err(Errno::EFAULT));
        // Only three bytes before the read-only page: a short read, the offset follows.
        assert_eq!(t.callb(read, &[fd, t.ro - 3, 10]), Ok(3));
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_CUR)]), Ok(3));
        // Writing from a read-only page is fine.
        assert_eq!(t.callb(write, &[fd, t.ro, 2]), Ok(2));
        assert_eq!(t.callb(read, &[99, t.buf, 1]), Err(Errno::EBADF));
        assert_eq!(t.callb(read, &[u64::MAX, t.buf, 1]), Err(Errno::EBADF));
        let big = t.call(pread64, &[fd, t.buf, u64::from(u32::MAX), 0]);
        assert_eq!(big, Ok(10));
        assert_eq!(t.call(pread64, &[fd, t.buf, 1, -5i64 as u64]), Err(Errno::EINVAL));
        assert_eq!(t.call(getcwd, &[0x10, 100]), Err(Errno::EFAULT));
        assert_eq!(t.callb(openat, &[AT_FDCWD as u64, 0x10, 0, 0]), Err(Errno::EFAULT));
        // A path of PATH_MAX bytes (no NUL within 4095) is too long.
        let long = "x".repeat(4096);
        assert_eq!(t.open(&long, 0, 0), Err(Errno::ENAMETOOLONG));
    }

    #[test]
    fn vectored_io() {
        let mut t = T::new();
        let fd = t.open("/v", RW_CREAT, 0o644).unwrap();
        let iov = t.scratch + 0x4000;
        let mut v = Vec::new();
        for (base, len) in [(t.buf, 3u64), (t.buf + 100, 0), (t.buf + 200, 4)] {
            v.extend_from_slice(&base.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
        }
        t.put(iov, &v);
        t.put(t.buf, b"abc");
        t.put(t.buf + 200, b"defg");
        assert_eq!(t.callb(writev, &[fd, iov, 3]), Ok(7));
        t.call(lseek, &[fd, 0, 0]).unwrap();
        t.put(t.buf, &[0; 300]);
        assert_eq!(t.callb(readv, &[fd, iov, 3]), Ok(7));
        assert_eq!(t.get(t.buf, 3), b"abc");
        assert_eq!(t.get(t.buf + 200, 4), b"defg");
        assert_eq!(t.callb(readv, &[fd, iov, 1025]), Err(Errno::EINVAL));
        let mut bad = v.clone();
        bad[8..16].copy_from_slice(&(-1i64).to_le_bytes());
        t.put(iov, &bad);
        assert_eq!(t.callb(writev, &[fd, iov, 3]), Err(Errno::EINVAL));
        assert_eq!(t.callb(writev, &[fd, 0x10, 1]), Err(Errno::EFAULT));
    }

    #[test]
    fn pipes_and_sigpipe() {
        let mut t = T::new();
        let fds = t.scratch + 0x4000;
        assert_eq!(t.call(pipe2, &[fds, libc::O_NONBLOCK as u64]), Ok(0));
        let b = t.get(fds, 8);
        let (r, w) = (u64::from(u32_at(&b, 0)), u64::from(u32_at(&b, 4)));
        assert_eq!((r, w), (0, 1));
        assert_eq!(t.callb(read, &[r, t.buf, 10]), Err(Errno::EAGAIN));
        assert_eq!(t.callb(read, &[w, t.buf, 10]), Err(Errno::EBADF));
        assert_eq!(t.write_str(w, "xyz"), Ok(3));
        assert_eq!(t.callb(ioctl, &[r, u64::from(FIONREAD), t.buf + 64]), Ok(0));
        assert_eq!(t.get(t.buf + 64, 4), 3i32.to_le_bytes());
        assert_eq!(t.call(lseek, &[r, 0, 0]), Err(Errno::ESPIPE));
        assert_eq!(t.call(pread64, &[r, t.buf, 1, 0]), Err(Errno::ESPIPE));
        assert_eq!(t.callb(ioctl, &[r, libc::TCGETS, t.buf]), Err(Errno::ENOTTY));
        assert_eq!(t.call(fcntl, &[r, F_GETPIPE_SZ as u64]), Ok(65536));
        assert_eq!(t.read_vec(r, 10).unwrap(), b"xyz");
        let st = t.scratch + 0x8000;
        assert_eq!(t.call(fstat, &[r, st]), Ok(0));
        assert_eq!(u32_at(&t.get(st, STAT_SIZE), 24), S_IFIFO | 0o600);
        assert_eq!(t.call(close, &[r]), Ok(0));
        // SIGPIPE goes to the writer, unless ignored; the run loop delivers it.
        let sigpipe = crate::signal::bit(libc::SIGPIPE);
        t.p().signals.actions[libc::SIGPIPE as usize].handler = SIG_IGN;
        assert_eq!(t.write_str(w, "x"), Err(Errno::EPIPE));
        assert_eq!(t.p().thread(MAIN_TID).pending.bits(), 0);
        t.p().signals.actions[libc::SIGPIPE as usize].handler = 0;
        assert_eq!(t.write_str(w, "x"), Err(Errno::EPIPE));
        assert_eq!(t.p().thread(MAIN_TID).pending.bits(), sigpipe);
        assert_eq!(t.call(pipe2, &[fds, libc::O_DIRECT as u64]), Err(Errno::EINVAL));
        assert_eq!(t.call(pipe2, &[t.ro, 0]), Err(Errno::EFAULT));
        assert_eq!(t.p().fds.count(), 1, "a failed pipe2 leaves no descriptors behind");
    }

    #[test]
    fn host_descriptors() {
        use std::os::fd::{FromRawFd, OwnedFd};
        let mut t = T::new();
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe(2) just created these and nothing else owns them.
        let (hr, hw) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let r = t.p().fds.alloc(OpenFile::new(Backing::Host(hr), b"host:r".to_vec(), libc::O_RDONLY), 0, false).unwrap();
        let w = t.p().fds.alloc(OpenFile::new(Backing::Host(hw), b"host:w".to_vec(), libc::O_WRONLY), 0, false).unwrap();
        // A read of a write-only end (a piped standard output) fails at once: it must not wait
        // for the end to become readable, which it never does.
        let iov = t.scratch + 0x4000;
        t.put(iov, &[t.buf.to_le_bytes(), 8u64.to_le_bytes()].concat());
        assert_eq!(t.callb(read, &[w, t.buf, 10]), Err(Errno::EBADF));
        assert_eq!(t.callb(readv, &[w, iov, 1]), Err(Errno::EBADF));
        assert_eq!(t.callb(write, &[r, t.buf, 10]), Err(Errno::EBADF));
        assert_eq!(t.callb(writev, &[r, iov, 1]), Err(Errno::EBADF));
        assert_eq!(t.call(fcntl, &[r, F_SETFL as u64, libc::O_NONBLOCK as u64]), Ok(0));
        assert_eq!(t.callb(read, &[r, t.buf, 10]), Err(Errno::EAGAIN), "emulated, host flags untouched");
        assert_eq!(t.write_str(w, "host"), Ok(4));
        assert_eq!(t.callb(ioctl, &[r, u64::from(FIONREAD), t.buf + 64]), Ok(0));
        assert_eq!(t.get(t.buf + 64, 4), 4i32.to_le_bytes());
        assert_eq!(t.read_vec(r, 10).unwrap(), b"host");
        assert_eq!(t.call(lseek, &[r, 0, 0]), Err(Errno::ESPIPE));
        assert_eq!(t.call(pread64, &[r, t.buf, 1, 0]), Err(Errno::ESPIPE));
        assert_eq!(t.callb(ioctl, &[r, libc::TCGETS, t.buf]), Err(Errno::ENOTTY));
        assert_eq!(t.callb(ioctl, &[r, u64::from(TIOCGPGRP), t.buf]), Err(Errno::ENOTTY));
        assert_eq!(t.call(fsync, &[w]), Err(Errno::EINVAL));
        let st = t.scratch + 0x8000;
        assert_eq!(t.call(fstat, &[r, st]), Ok(0));
        assert_eq!(u64_at(&t.get(st, STAT_SIZE), 24) as u32 & S_IFMT, S_IFIFO);
        t.call(close, &[r]).unwrap();
        t.p().signals.actions[libc::SIGPIPE as usize].handler = SIG_IGN;
        assert_eq!(t.write_str(w, "x"), Err(Errno::EPIPE));
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[test]
    fn descriptors() {
        let mut t = T::new();
        let fd = t.open("/f", RW_CREAT | libc::O_CLOEXEC, 0o644).unwrap();
        assert_eq!(t.call(fcntl, &[fd, F_GETFD as u64]), Ok(1));
        assert_eq!(t.call(dup, &[fd]), Ok(1));
        assert_eq!(t.call(fcntl, &[1, F_GETFD as u64]), Ok(0));
        assert_eq!(t.call(dup2, &[fd, fd]), Ok(fd));
        assert_eq!(t.call(dup2, &[7, 7]), Err(Errno::EBADF));
        assert_eq!(t.call(dup3, &[fd, fd, 0]), Err(Errno::EINVAL));
        assert_eq!(t.call(dup3, &[fd, 5, libc::O_CLOEXEC as u64]), Ok(5));
        assert_eq!(t.call(dup3, &[fd, 6, 1]), Err(Errno::EINVAL));
        assert_eq!(t.call(dup2, &[fd, 64]), Err(Errno::EBADF));
        assert_eq!(t.call(fcntl, &[5, F_GETFD as u64]), Ok(1));
        assert_eq!(t.call(fcntl, &[fd, F_DUPFD as u64, 10]), Ok(10));
        assert_eq!(t.call(fcntl, &[fd, F_DUPFD as u64, 64]), Err(Errno::EINVAL));
        assert_eq!(t.call(fcntl, &[fd, F_SETFL as u64, (libc::O_NONBLOCK | libc::O_WRONLY) as u64]), Ok(0));
        assert_eq!(t.call(fcntl, &[1, F_GETFL as u64]), Ok((libc::O_RDWR | libc::O_NONBLOCK | O_LARGEFILE) as u64));
        // Shared description: the offset moves for both.
        t.write_str(fd, "abc").unwrap();
        assert_eq!(t.call(lseek, &[10, 0, u64::from(SEEK_CUR)]), Ok(3));
        assert_eq!(t.call(fcntl, &[fd, 12345]), Err(Errno::EINVAL));
        assert_eq!(t.call(umask, &[0o7077]), Ok(0o022));
        assert_eq!(t.call(umask, &[0o022]), Ok(0o077));
    }

    #[test]
    fn directories_and_cwd() {
        let mut t = T::new();
        let (d, de) = (t.s("/d"), t.s("d/e"));
        assert_eq!(t.call(mkdir, &[d, 0o755]), Ok(0));
        assert_eq!(t.call(mkdir, &[d, 0o755]), Err(Errno::EEXIST));
        assert_eq!(t.call(mkdirat, &[AT_FDCWD as u64, de, 0o777]), Ok(0));
        assert_eq!(t.stat_of("/d/e", 0).unwrap().mode, S_IFDIR | 0o755);
        std::os::unix::fs::symlink("/d/e", t.dir.path().join("l")).unwrap();
        let up = t.s("d/e/..");
        assert_eq!(t.call(chdir, &[up]), Ok(0));
        assert_eq!(t.cwd(), b"/d");
        let l = t.s("/l/");
        assert_eq!(t.call(chdir, &[l]), Ok(0));
        assert_eq!(t.cwd(), b"/d/e");
        let dd = t.s("..");
        assert_eq!(t.call(chdir, &[dd]), Ok(0), "the physical parent of /l");
        assert_eq!(t.cwd(), b"/d");
        assert_eq!(t.call(getcwd, &[t.buf, 2]), Err(Errno::ERANGE));
        assert_eq!(t.call(getcwd, &[t.buf, 3]), Ok(3));
        // Relative to the cwd and to a directory descriptor.
        let f = t.open("e/f", RW_CREAT, 0o644).unwrap();
        assert_eq!(t.call(chdir, &[t.s("e/f")]), Err(Errno::ENOTDIR));
        let dirfd = t.open("/d/e", libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
        let g = t.s("g");
        assert_eq!(t.call(mkdirat, &[dirfd, g, 0o700]), Ok(0));
        assert!(t.dir.path().join("d/e/g").is_dir());
        assert_eq!(t.call(mkdirat, &[f, g, 0o700]), Err(Errno::ENOTDIR));
        assert_eq!(t.call(mkdirat, &[40, g, 0o700]), Err(Errno::EBADF));
        assert_eq!(t.call(fchdir, &[dirfd]), Ok(0));
        assert_eq!(t.cwd(), b"/d/e");
        assert_eq!(t.call(fchdir, &[f]), Err(Errno::ENOTDIR));
        // rmdir / unlink special names.
        assert_eq!(t.call(rmdir, &[t.s("g/.")]), Err(Errno::EINVAL));
        assert_eq!(t.call(rmdir, &[t.s("g/..")]), Err(Errno::ENOTEMPTY));
        assert_eq!(t.call(rmdir, &[t.s("/")]), Err(Errno(libc::EBUSY)));
        assert_eq!(t.call(unlink, &[t.s(".")]), Err(Errno::EISDIR));
        assert_eq!(t.call(unlinkat, &[AT_FDCWD as u64, g, 0x8000]), Err(Errno::EINVAL));
        assert_eq!(t.call(unlinkat, &[AT_FDCWD as u64, g, AT_REMOVEDIR]), Ok(0));
        assert_eq!(t.call(unlink, &[t.s("f")]), Ok(0));
        assert!(!t.dir.path().join("d/e/f").exists());
    }

    #[test]
    fn getdents64_lists_and_rewinds() {
        let mut t = T::new();
        for n in ["a", "bb", "ccc"] {
            std::fs::write(t.dir.path().join(n), n).unwrap();
        }
        let fd = t.open("/", libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
        let list = |t: &mut T, count: u64| -> SysResult<Vec<(Vec<u8>, u8)>> {
            let n = t.call(getdents64, &[fd, t.buf, count])? as usize;
            let b = t.get(t.buf, n);
            let mut out = Vec::new();
            let mut at = 0;
            while at < n {
                let reclen = usize::from(u16::from_le_bytes([b[at + 16], b[at + 17]]));
                assert_eq!(reclen % 8, 0);
                let name = &b[at + 19..at + reclen];
                let end = name.iter().position(|&c| c == 0).unwrap();
                out.push((name[..end].to_vec(), b[at + 18]));
                at += reclen;
            }
            Ok(out)
        };
        let mut all = list(&mut t, 4096).unwrap();
        all.sort();
        let names: Vec<&[u8]> = all.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(names, [&b"."[..], b"..", b"a", b"bb", b"ccc"]);
        assert!(all.iter().any(|(n, k)| n == b"a" && *k == libc::DT_REG));
        assert_eq!(list(&mut t, 4096).unwrap(), Vec::new(), "end of directory");
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_SET)]), Ok(0));
        // Small buffers: one 24-byte record at a time, then too small for any.
        let mut again = Vec::new();
        loop {
            let part = list(&mut t, 24).unwrap();
            if part.is_empty() {
                break;
            }
            assert_eq!(part.len(), 1);
            again.extend(part);
        }
        again.sort();
        assert_eq!(again, all);
        t.call(lseek, &[fd, 0, 0]).unwrap();
        assert_eq!(list(&mut t, 10), Err(Errno::EINVAL));
        let f = t.open("/a", libc::O_RDONLY, 0).unwrap();
        assert_eq!(t.call(getdents64, &[f, t.buf, 4096]), Err(Errno::ENOTDIR));
        assert_eq!(t.callb(read, &[fd, t.buf, 10]), Err(Errno::EISDIR));
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_END)]), Err(Errno::EINVAL));
    }

    #[test]
    fn stat_access_readlink_rename() {
        let mut t = T::new();
        std::fs::write(t.dir.path().join("f"), "12345").unwrap();
        std::os::unix::fs::symlink("f", t.dir.path().join("l")).unwrap();
        assert_eq!(t.stat_of("/l", 0).unwrap().size, 5);
        assert_eq!(t.stat_of("/l", AT_SYMLINK_NOFOLLOW).unwrap().mode & S_IFMT, S_IFLNK);
        assert_eq!(t.stat_of("", 0), Err(Errno::ENOENT));
        assert_eq!(t.stat_of("/f", 0x4000_0000), Err(Errno::EINVAL));
        // AT_EMPTY_PATH on a descriptor, and with a NULL path.
        let fd = t.open("/f", libc::O_RDONLY, 0).unwrap();
        let (e, out) = (t.s(""), t.scratch + 0x8000);
        assert_eq!(t.call(newfstatat, &[fd, e, out, AT_EMPTY_PATH]), Ok(0));
        assert_eq!(u64_at(&t.get(out, STAT_SIZE), 48), 5);
        assert_eq!(t.call(newfstatat, &[fd, 0, out, AT_EMPTY_PATH]), Ok(0));
        // statx
        let f = t.s("/f");
        assert_eq!(t.call(statx, &[AT_FDCWD as u64, f, 0, 0xfff, out]), Ok(0));
        let sx = t.get(out, STATX_SIZE);
        assert_eq!(u32_at(&sx, 0), STATX_BASIC_STATS);
        assert_eq!(u64_at(&sx, 40), 5);
        use std::os::unix::fs::MetadataExt;
        let host = std::fs::metadata(t.dir.path().join("f")).unwrap();
        assert_eq!(u32_at(&sx, 28) & 0xffff, host.mode());
        assert_eq!(u32_at(&sx, 16), 1);
        assert_eq!(u64_at(&sx, 32), host.ino());
        assert_eq!(u64_at(&sx, 112) as i64, host.mtime());
        assert_eq!((u32_at(&sx, 136), u32_at(&sx, 140)), (libc::major(host.dev()), libc::minor(host.dev())));
        assert_eq!(t.call(statx, &[AT_FDCWD as u64, f, 0x6000, 0x7ff, out]), Err(Errno::EINVAL));
        // access
        assert_eq!(t.call(access, &[f, libc::R_OK as u64]), Ok(0));
        assert_eq!(t.call(access, &[f, libc::X_OK as u64]), Err(Errno::EACCES));
        assert_eq!(t.call(access, &[f, 8]), Err(Errno::EINVAL));
        assert_eq!(t.call(access, &[t.s("/nope"), 0]), Err(Errno::ENOENT));
        assert_eq!(t.call(faccessat2, &[AT_FDCWD as u64, f, 0, 0x10]), Err(Errno::EINVAL));
        // readlink
        let l = t.s("/l");
        assert_eq!(t.call(readlink, &[l, t.buf, 100]), Ok(1));
        assert_eq!(t.get(t.buf, 1), b"f");
        assert_eq!(t.call(readlink, &[l, t.buf, 0]), Err(Errno::EINVAL));
        assert_eq!(t.call(readlink, &[f, t.buf, 10]), Err(Errno::EINVAL));
        // rename
        let g = t.s("/g");
        assert_eq!(t.call(rename, &[f, g]), Ok(0));
        std::fs::write(t.dir.path().join("f"), "new").unwrap();
        assert_eq!(t.call(renameat2, &[AT_FDCWD as u64, g, AT_FDCWD as u64, f, RENAME_NOREPLACE]), Err(Errno::EEXIST));
        assert_eq!(t.call(renameat2, &[AT_FDCWD as u64, g, AT_FDCWD as u64, f, 8]), Err(Errno::EINVAL));
        assert_eq!(t.call(renameat2, &[AT_FDCWD as u64, g, AT_FDCWD as u64, f, RENAME_EXCHANGE]), Err(Errno::EINVAL));
        assert_eq!(t.call(renameat, &[AT_FDCWD as u64, g, AT_FDCWD as u64, f]), Ok(0));
        assert_eq!(std::fs::read(t.dir.path().join("f")).unwrap(), b"12345");
        assert_eq!(t.call(rename, &[t.s("."), g]), Err(Errno(libc::EBUSY)));
    }
}
