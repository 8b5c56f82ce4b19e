//! File descriptors and open file descriptions of a process.
//!
//! An open file description keeps the position and status flags itself (as Linux's `struct
//! file` does), so the file systems underneath stay stateless.

use lego_proto::sync::LockExt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use crate::errno::{Errno, SysResult};
use crate::fs::File;
use crate::pipe::PipeEnd;

/// What an open file description reads from and writes to.
pub enum Backing {
    /// A file or directory of the vNode's file system.
    File(Box<dyn File>),
    /// A descriptor of the host process (the caller's stdin, stdout, stderr).
    Host(OwnedFd),
    /// One end of a pipe.
    Pipe(PipeEnd),
    /// A socket, over a host socket ([`crate::net`]).
    Socket(crate::net::socket::Socket),
    /// An epoll instance ([`crate::epoll`]).
    Epoll(crate::epoll::Epoll),
    /// A descriptor the VMM answers itself (signalfd, pidfd).
    Anon(crate::anonfd::AnonFile),
}

/// An open file description (`struct file`).
pub struct OpenFile {
    pub backing: Backing,
    /// The vNode path it was opened by (for `*at` calls relative to a directory fd, and traces).
    pub path: Vec<u8>,
    /// Access mode and status flags (`O_APPEND`, `O_NONBLOCK`, ...).
    pub status: Mutex<i32>,
    pub offset: Mutex<u64>,
    /// The lock table it took an OFD lock or a `flock` in: they go when it is closed for good.
    pub locks: Mutex<Option<Arc<crate::locks::LockTable>>>,
    /// What happens when it is closed for good (a pty master's hang-up).
    pub on_close: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl OpenFile {
    /// A new description at offset 0.
    pub fn new(backing: Backing, path: Vec<u8>, status: i32) -> Arc<OpenFile> {
        Arc::new(OpenFile { backing, path, status: Mutex::new(status), offset: Mutex::new(0), locks: Mutex::new(None), on_close: Mutex::new(None) })
    }

    /// The owner of the locks the description holds itself (OFD locks, `flock`).
    pub fn lock_owner(&self) -> crate::locks::Owner {
        crate::locks::Owner::Description(self as *const OpenFile as usize)
    }

    /// Current status flags.
    pub fn status(&self) -> i32 {
        *self.status.lock_unpoisoned()
    }

    /// Whether the description was opened for reading / writing.
    pub fn readable(&self) -> bool {
        self.status() & libc::O_ACCMODE != libc::O_WRONLY
    }
    pub fn writable(&self) -> bool {
        matches!(self.status() & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR)
    }

    /// The host descriptor, for host-backed files (sockets and epoll instances included).
    pub fn host_fd(&self) -> Option<i32> {
        match &self.backing {
            Backing::Host(fd) => Some(fd.as_raw_fd()),
            Backing::Socket(s) => Some(s.fd()),
            Backing::Epoll(e) => Some(e.host_fd()),
            _ => None,
        }
    }
}

impl crate::epoll::Watched for OpenFile {
    fn host_fd(&self) -> Option<i32> {
        OpenFile::host_fd(self)
    }

    fn pipe(&self) -> Option<&PipeEnd> {
        match &self.backing {
            Backing::Pipe(end) => Some(end),
            _ => None,
        }
    }

    fn anon(&self) -> Option<&crate::anonfd::AnonFile> {
        match &self.backing {
            Backing::Anon(a) => Some(a),
            _ => None,
        }
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        let table = self.locks.get_mut_unpoisoned().take();
        if let Some(table) = table {
            table.release_owner(self.lock_owner());
        }
        if let Some(closed) = self.on_close.get_mut_unpoisoned().take() {
            closed();
        }
    }
}

#[derive(Clone)]
struct Slot {
    file: Arc<OpenFile>,
    cloexec: bool,
}

/// The descriptor table. A fork's copy shares the open file descriptions.
#[derive(Clone)]
pub struct FdTable {
    slots: Vec<Option<Slot>>,
    /// `RLIMIT_NOFILE`.
    pub limit: usize,
}

impl FdTable {
    /// An empty table allowing `limit` descriptors.
    pub fn new(limit: usize) -> FdTable {
        FdTable { slots: Vec::new(), limit }
    }

    /// The description behind `fd`, or `EBADF`.
    pub fn get(&self, fd: u64) -> SysResult<Arc<OpenFile>> {
        self.slots
            .get(usize::try_from(fd).map_err(|_| Errno::EBADF)?)
            .and_then(|s| s.as_ref())
            .map(|s| s.file.clone())
            .ok_or(Errno::EBADF)
    }

    /// Installs `file` at the lowest free descriptor `>= min`.
    pub fn alloc(&mut self, file: Arc<OpenFile>, min: usize, cloexec: bool) -> SysResult<u64> {
        let fd = (min..self.limit)
            .find(|&i| self.slots.get(i).is_none_or(|s| s.is_none()))
            .ok_or(Errno::EMFILE)?;
        self.put(fd, file, cloexec);
        Ok(fd as u64)
    }

    fn put(&mut self, fd: usize, file: Arc<OpenFile>, cloexec: bool) {
        if self.slots.len() <= fd {
            self.slots.resize(fd + 1, None);
        }
        self.slots[fd] = Some(Slot { file, cloexec });
    }

    /// Installs `file` at exactly `fd`, closing what was there (`dup2`).
    pub fn install(&mut self, fd: u64, file: Arc<OpenFile>, cloexec: bool) -> SysResult<()> {
        let fd = usize::try_from(fd).ok().filter(|&f| f < self.limit).ok_or(Errno::EBADF)?;
        self.put(fd, file, cloexec);
        Ok(())
    }

    /// Closes `fd`.
    pub fn close(&mut self, fd: u64) -> SysResult<()> {
        let slot = usize::try_from(fd).ok().and_then(|f| self.slots.get_mut(f)).ok_or(Errno::EBADF)?;
        slot.take().map(|_| ()).ok_or(Errno::EBADF)
    }

    /// `FD_CLOEXEC` of `fd`.
    pub fn cloexec(&self, fd: u64) -> SysResult<bool> {
        self.slots.get(fd as usize).and_then(|s| s.as_ref()).map(|s| s.cloexec).ok_or(Errno::EBADF)
    }

    /// Sets `FD_CLOEXEC` of `fd`.
    pub fn set_cloexec(&mut self, fd: u64, on: bool) -> SysResult<()> {
        let s = self.slots.get_mut(fd as usize).and_then(|s| s.as_mut()).ok_or(Errno::EBADF)?;
        s.cloexec = on;
        Ok(())
    }

    /// Closes every descriptor marked close-on-exec (`execve`).
    pub fn close_on_exec(&mut self) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|s| s.cloexec) {
                *slot = None;
            }
        }
    }

    /// Number of open descriptors.
    pub fn count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// The open descriptors in ascending order, with their descriptions.
    pub fn open_files(&self) -> impl Iterator<Item = (u64, Arc<OpenFile>)> + '_ {
        self.slots.iter().enumerate().filter_map(|(fd, s)| s.as_ref().map(|s| (fd as u64, s.file.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipe::Pipe;

    fn pipe_file() -> Arc<OpenFile> {
        let (r, _w) = Pipe::create();
        OpenFile::new(Backing::Pipe(r), b"pipe:".to_vec(), libc::O_RDONLY)
    }

    #[test]
    fn lowest_free_descriptor_and_limits() {
        let mut t = FdTable::new(4);
        assert_eq!(t.alloc(pipe_file(), 0, false), Ok(0));
        assert_eq!(t.alloc(pipe_file(), 0, true), Ok(1));
        assert_eq!(t.alloc(pipe_file(), 3, false), Ok(3));
        assert_eq!(t.alloc(pipe_file(), 0, false), Ok(2));
        assert_eq!(t.alloc(pipe_file(), 0, false), Err(Errno::EMFILE));
        t.close(1).unwrap();
        assert_eq!(t.close(1), Err(Errno::EBADF));
        assert_eq!(t.get(1).err(), Some(Errno::EBADF));
        assert_eq!(t.install(9, pipe_file(), false), Err(Errno::EBADF));
        assert_eq!(t.get(u64::MAX).err(), Some(Errno::EBADF));
    }
}
