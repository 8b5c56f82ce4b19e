//! Pipes: a buffer in the VMM shared by a read end and a write end (`pipe`, and the pipes of
//! FIFOs, [`crate::fifo`]).

use lego_proto::sync::{CondvarExt, LockExt};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use crate::errno::{Errno, SysResult};

/// Capacity of a pipe, as Linux's default.
pub const PIPE_CAPACITY: usize = 65536;

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
            state: Mutex::new(PipeState {
                buf: VecDeque::new(),
                readers: 0,
                writers: 0,
                opened: Ends::default(),
            }),
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
        PipeEnd {
            pipe: pipe.clone(),
            write,
        }
    }

    /// The ends open now, and how many were ever opened.
    pub fn ends(&self) -> (Ends, Ends) {
        let st = self.state.lock_unpoisoned();
        (
            Ends {
                read: st.readers as u64,
                write: st.writers as u64,
            },
            st.opened,
        )
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
                return if done > 0 {
                    Ok(done)
                } else {
                    Err(Errno::EPIPE)
                };
            }
            let room = PIPE_CAPACITY - st.buf.len();
            if room == 0 {
                if nonblock {
                    return if done > 0 {
                        Ok(done)
                    } else {
                        Err(Errno::EAGAIN)
                    };
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
        self.ready_locked(&st).then(|| {
            if self.write {
                PIPE_CAPACITY - st.buf.len()
            } else {
                st.buf.len()
            }
        })
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
        if self.write {
            st.readers == 0
        } else {
            st.writers == 0
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
