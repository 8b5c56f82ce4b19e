//! Open file descriptions in flight in `SCM_RIGHTS` messages between the sockets of a run.
//!
//! A socket is a host socket, so a message carries a host token (a memfd) for each description
//! it passes; the receiver gets the description back by the token's inode.

use lego_proto::sync::LockExt;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use crate::errno::{Errno, SysResult};
use crate::fdtable::OpenFile;
use crate::net::host::inode;

/// The descriptions the processes of a run sent with `SCM_RIGHTS` and did not receive yet.
#[derive(Default)]
pub struct InFlight {
    /// By the inode of their token.
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
}

impl InFlight {
    /// A host token standing for `file` in an `SCM_RIGHTS` message; the receiver gets the same
    /// open file description back with [`InFlight::take`].
    pub fn send(&self, file: Arc<OpenFile>) -> SysResult<OwnedFd> {
        // A memfd, unlike anonymous-inode descriptors, has an inode of its own.
        // SAFETY: the name is a NUL-terminated string; on success the descriptor is ours alone.
        let fd = unsafe { libc::memfd_create(c"lego-scm-rights".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let token = unsafe { OwnedFd::from_raw_fd(fd) };
        self.files
            .lock_unpoisoned()
            .insert(inode(token.as_raw_fd())?, file);
        Ok(token)
    }

    /// Forgets a token [`InFlight::send`] made whose message was not sent.
    pub fn cancel(&self, token: &OwnedFd) {
        if let Ok(ino) = inode(token.as_raw_fd()) {
            self.files.lock_unpoisoned().remove(&ino);
        }
    }

    /// The description a received token stands for (`None` for a descriptor that is no token).
    pub fn take(&self, token: OwnedFd) -> Option<Arc<OpenFile>> {
        let ino = inode(token.as_raw_fd()).ok()?;
        self.files.lock_unpoisoned().remove(&ino)
    }
}
