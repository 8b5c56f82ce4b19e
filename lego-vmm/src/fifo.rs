//! Named pipes (FIFOs) of a run.
//!
//! The vNode's file system keeps only the name and the node (`mknod(S_IFIFO)`); the pipe
//! behind it lives here, one per node, shared by every process of the run (they are VMs of one
//! VMM process, as with the lock table). It comes into being at the first open and goes with
//! its last end, its unread bytes with it, as on Linux.
//!
//! Opening follows Linux: a read-only open waits until a writer has opened, a write-only open
//! until a reader has (an end of the other kind opened since the wait began counts, even if it
//! has closed again); `O_NONBLOCK` makes a reader return at once and a writer with no reader
//! fail with `ENXIO`.

use lego_proto::sync::LockExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::errno::{Errno, SysResult};
use crate::pipe::{Ends, Pipe, PipeEnd};
use crate::fs::NodeId;

/// The pipes of the run's FIFOs, by node.
#[derive(Default)]
pub struct Fifos {
    pipes: Mutex<HashMap<NodeId, Weak<Pipe>>>,
}

impl Fifos {
    /// The pipe of FIFO `node`, made if no end of it is open.
    pub fn pipe(&self, node: NodeId) -> Arc<Pipe> {
        let mut pipes = self.pipes.lock_unpoisoned();
        pipes.retain(|_, p| p.strong_count() > 0);
        if let Some(pipe) = pipes.get(&node).and_then(Weak::upgrade) {
            return pipe;
        }
        let pipe = Pipe::new();
        pipes.insert(node, Arc::downgrade(&pipe));
        pipe
    }
}

/// How an open of a FIFO goes on.
#[derive(Debug, PartialEq, Eq)]
pub enum Open {
    /// Take the end and return.
    Now,
    /// Take the end, then wait for [`rendezvous`] with the ends opened so far.
    Wait(Ends),
    /// Refuse the open.
    Fail(Errno),
}

/// The first step of an open for writing (`write`) or reading of a FIFO whose pipe has the
/// ends `open` now and `opened` in all, before the new end is taken.
pub fn opening(write: bool, nonblock: bool, open: Ends, opened: Ends) -> Open {
    match (nonblock, write) {
        (true, true) if open.read == 0 => Open::Fail(Errno::ENXIO),
        (true, _) => Open::Now,
        (false, true) if open.read > 0 => Open::Now,
        (false, false) if open.write > 0 => Open::Now,
        (false, _) => Open::Wait(opened),
    }
}

/// Whether a waiting open for writing (`write`) or reading, which began when `before` ends had
/// been opened, may return now that `opened` have: an end of the other kind came.
pub fn rendezvous(write: bool, before: Ends, opened: Ends) -> bool {
    if write {
        opened.read > before.read
    } else {
        opened.write > before.write
    }
}

/// Opens an end of `pipe` after [`opening`] said so; the caller waits if it must.
pub fn take_end(pipe: &Arc<Pipe>, write: bool, nonblock: bool) -> SysResult<(PipeEnd, Option<Ends>)> {
    let (open, opened) = pipe.ends();
    match opening(write, nonblock, open, opened) {
        Open::Now => Ok((Pipe::end(pipe, write), None)),
        Open::Wait(before) => Ok((Pipe::end(pipe, write), Some(before))),
        Open::Fail(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(read: u64, write: u64) -> Ends {
        Ends { read, write }
    }

    #[test]
    fn opens_wait_for_the_other_kind_as_linux_does() {
        // A reader with no writer waits; with one, it does not; non-blocking never waits.
        assert_eq!(opening(false, false, ends(0, 0), ends(3, 2)), Open::Wait(ends(3, 2)));
        assert_eq!(opening(false, false, ends(0, 1), ends(0, 1)), Open::Now);
        assert_eq!(opening(false, true, ends(0, 0), ends(0, 0)), Open::Now);
        // A writer waits for a reader; non-blocking with none is ENXIO.
        assert_eq!(opening(true, false, ends(0, 0), ends(0, 0)), Open::Wait(ends(0, 0)));
        assert_eq!(opening(true, false, ends(1, 0), ends(1, 0)), Open::Now);
        assert_eq!(opening(true, true, ends(0, 0), ends(0, 0)), Open::Fail(Errno::ENXIO));
        assert_eq!(opening(true, true, ends(2, 0), ends(2, 0)), Open::Now);
        // An end of the other kind that came and went still ends the wait; one of the same
        // kind does not.
        assert!(rendezvous(false, ends(0, 0), ends(0, 1)));
        assert!(!rendezvous(false, ends(0, 0), ends(5, 0)));
        assert!(rendezvous(true, ends(1, 4), ends(2, 4)));
        assert!(!rendezvous(true, ends(1, 4), ends(1, 9)));
    }

    #[test]
    fn a_node_has_one_pipe_while_an_end_is_open_and_a_fresh_one_after() {
        let fifos = Fifos::default();
        let node = NodeId { dev: 1, ino: 2 };
        let pipe = fifos.pipe(node);
        let (w, _) = take_end(&pipe, true, false).unwrap();
        let (r, _) = take_end(&fifos.pipe(node), false, true).unwrap();
        w.write(b"abc", false).unwrap();
        drop(pipe);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf, true), Ok(3));
        assert_eq!(&buf[..3], b"abc");
        w.write(b"left", false).unwrap();
        drop((w, r));
        // Every end closed: the unread bytes went with the pipe.
        let (r, _) = take_end(&fifos.pipe(node), false, true).unwrap();
        assert_eq!(r.read(&mut buf, true), Ok(0));
        assert_eq!(fifos.pipe(NodeId { dev: 1, ino: 3 }).ends().0, ends(0, 0));
    }
}
