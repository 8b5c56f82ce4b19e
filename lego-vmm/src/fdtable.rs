//! File descriptors and open file descriptions of a process.
//!
//! An open file description keeps the position and status flags itself (as Linux's `struct
//! file` does), so the file systems underneath stay stateless.

use lego_proto::sync::{CondvarExt, LockExt};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};

use crate::errno::{Errno, SysResult};
use crate::fs::File;

/// Capacity of a pipe, as Linux's default.
pub const PIPE_CAPACITY: usize = 65536;

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
}

impl OpenFile {
    /// A new description at offset 0.
    pub fn new(backing: Backing, path: Vec<u8>, status: i32) -> Arc<OpenFile> {
        Arc::new(OpenFile { backing, path, status: Mutex::new(status), offset: Mutex::new(0), locks: Mutex::new(None) })
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

impl Drop for OpenFile {
    fn drop(&mut self) {
        let table = self.locks.get_mut_unpoisoned().take();
        if let Some(table) = table {
            table.release_owner(self.lock_owner());
        }
    }
}

struct PipeState {
    buf: VecDeque<u8>,
    readers: usize,
    writers: usize,
    /// How many read and write ends were ever opened (a FIFO's open waits for one of the
    /// other kind, even if it has closed again since).
    opened: Ends,
}

/// Counts of a pipe's ends, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ends {
    pub read: u64,
    pub write: u64,
}

/// A pipe shared by its two ends.
pub struct Pipe {
    state: Mutex<PipeState>,
    changed: Condvar,
}

/// One end of a pipe; dropping the last end of a kind wakes the other side.
pub struct PipeEnd {
    pipe: Arc<Pipe>,
    write: bool,
}

impl Pipe {
    /// Creates a pipe and returns its (read, write) ends.
    pub fn create() -> (PipeEnd, PipeEnd) {
        let pipe = Pipe::new();
        (Pipe::end(&pipe, false), Pipe::end(&pipe, true))
    }

    /// A pipe with no ends yet (a FIFO's, [`crate::fifo`]).
    pub fn new() -> Arc<Pipe> {
        Arc::new(Pipe {
            state: Mutex::new(PipeState { buf: VecDeque::new(), readers: 0, writers: 0, opened: Ends::default() }),
            changed: Condvar::new(),
        })
    }

    /// Opens one more read or write end of `pipe`.
    pub fn end(pipe: &Arc<Pipe>, write: bool) -> PipeEnd {
        let mut st = pipe.state.lock_unpoisoned();
        if write {
            st.writers += 1;
            st.opened.write += 1;
        } else {
            st.readers += 1;
            st.opened.read += 1;
        }
        drop(st);
        pipe.changed.notify_all();
        PipeEnd { pipe: pipe.clone(), write }
    }

    /// The ends open now, and how many were ever opened.
    pub fn ends(&self) -> (Ends, Ends) {
        let st = self.state.lock_unpoisoned();
        (Ends { read: st.readers as u64, write: st.writers as u64 }, st.opened)
    }

    /// Waits up to `timeout` for an end to open or close, or for data to move.
    pub fn wait_changed(&self, timeout: std::time::Duration) {
        let st = self.state.lock_unpoisoned();
        drop(self.changed.wait_timeout_unpoisoned(st, timeout));
    }
}

impl PipeEnd {
    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.pipe.state.lock_unpoisoned()
    }

    /// Whether this is the write end.
    pub fn is_write_end(&self) -> bool {
        self.write
    }

    /// Reads what is there; blocks while the pipe is empty and has writers (unless `nonblock`).
    pub fn read(&self, out: &mut [u8], nonblock: bool) -> SysResult<usize> {
        let mut st = self.lock();
        loop {
            if !st.buf.is_empty() || out.is_empty() {
                let n = out.len().min(st.buf.len());
                for (o, b) in out.iter_mut().zip(st.buf.drain(..n)) {
                    *o = b;
                }
                self.pipe.changed.notify_all();
                return Ok(n);
            }
            if st.writers == 0 {
                return Ok(0);
            }
            if nonblock {
                return Err(Errno::EAGAIN);
            }
            st = self.pipe.changed.wait_unpoisoned(st);
        }
    }

    /// Writes all of `data` (blocking while full), `EPIPE` when no reader is left.
    pub fn write(&self, data: &[u8], nonblock: bool) -> SysResult<usize> {
        let mut st = self.lock();
        let mut done = 0;
        while done < data.len() {
            if st.readers == 0 {
                return if done > 0 { Ok(done) } else { Err(Errno::EPIPE) };
            }
            let room = PIPE_CAPACITY - st.buf.len();
            if room == 0 {
                if nonblock {
                    return if done > 0 { Ok(done) } else { Err(Errno::EAGAIN) };
                }
                st = self.pipe.changed.wait_unpoisoned(st);
                continue;
            }
            let n = room.min(data.len() - done);
            st.buf.extend(&data[done..done + n]);
            done += n;
            self.pipe.changed.notify_all();
        }
        Ok(done)
    }

    /// Whether a read (on a read end) or a write (on a write end) would not wait now: there is
    /// data or room, or the other side is gone. Returns the room left (write end) or the bytes
    /// waiting (read end).
    pub fn ready(&self) -> Option<usize> {
        let st = self.lock();
        self.ready_locked(&st).then(|| if self.write { PIPE_CAPACITY - st.buf.len() } else { st.buf.len() })
    }

    /// Waits up to `timeout` for [`PipeEnd::ready`].
    pub fn wait_ready(&self, timeout: std::time::Duration) {
        let st = self.lock();
        if self.ready_locked(&st) {
            return;
        }
        drop(self.pipe.changed.wait_timeout_unpoisoned(st, timeout));
    }

    fn ready_locked(&self, st: &PipeState) -> bool {
        if self.write {
            st.readers == 0 || st.buf.len() < PIPE_CAPACITY
        } else {
            st.writers == 0 || !st.buf.is_empty()
        }
    }

    /// Whether the other side is gone (no writers for a read end, no readers for a write end).
    pub fn peer_closed(&self) -> bool {
        let st = self.lock();
        if self.write { st.readers == 0 } else { st.writers == 0 }
    }

    /// Whether a write would not block.
    pub fn has_room(&self) -> bool {
        self.lock().buf.len() < PIPE_CAPACITY
    }

    /// Bytes waiting to be read (`FIONREAD`).
    pub fn available(&self) -> usize {
        self.lock().buf.len()
    }

    /// A number identifying the pipe, the same for both ends (its `st_ino`).
    pub fn id(&self) -> u64 {
        Arc::as_ptr(&self.pipe) as usize as u64
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let mut st = self.lock();
        if self.write {
            st.writers -= 1;
        } else {
            st.readers -= 1;
        }
        drop(st);
        self.pipe.changed.notify_all();
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

    #[test]
    fn pipe_semantics() {
        let (r, w) = Pipe::create();
        assert_eq!(w.write(b"abc", false), Ok(3));
        let mut b = [0u8; 8];
        assert_eq!(r.read(&mut b, false), Ok(3));
        assert_eq!(r.read(&mut b, true), Err(Errno::EAGAIN));
        drop(w);
        assert_eq!(r.read(&mut b, false), Ok(0));
        let (r, w) = Pipe::create();
        drop(r);
        assert_eq!(w.write(b"x", false), Err(Errno::EPIPE));
    }
}
