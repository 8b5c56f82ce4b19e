//! Who is at the other end of an `AF_UNIX` socket (`SO_PEERCRED`), in the vNode's terms.
//!
//! The host kernel records the credentials of the process that connected, listened or made a
//! pair, and for every socket of a vNode that process is the VMM: its host pid and ids mean
//! nothing inside (and would tell the guest about the host). So the VMM records the guest's
//! instead, where Linux does:
//! - a pair: both ends carry the creator's ([`PeerCred`] in the sockets' state);
//! - a connect: the client carries the credentials the listener had when it called `listen`
//!   ([`PeerCreds::listener`]), and is recorded itself ([`PeerCreds::connecting`]) before the
//!   host connect, so that the server's `accept` finds it: the accepted socket's host peer is
//!   the client socket, which the host's `sock_diag` names ([`peer_inode`]).
//!
//! A peer in another VMM process (two `lego run` of one vNode on a host, whose `AF_UNIX` names
//! meet) is not in these tables: it shows Linux's answer for no credentials, pid 0 and ids
//! -1.

use lego_proto::sync::LockExt;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use crate::errno::{Errno, SysResult};

/// A `struct ucred`: process id, effective user and group ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

impl PeerCred {
    /// What Linux reports for a socket with no peer credentials (a TCP socket, an unconnected
    /// one): pid 0, ids -1.
    pub const NONE: PeerCred = PeerCred { pid: 0, uid: u32::MAX, gid: u32::MAX };

    /// The `struct ucred` bytes.
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&self.pid.to_ne_bytes());
        b[4..8].copy_from_slice(&self.uid.to_ne_bytes());
        b[8..].copy_from_slice(&self.gid.to_ne_bytes());
        b
    }
}

/// The credentials behind the listening and connecting `AF_UNIX` sockets of a VMM's vNode.
#[derive(Default)]
pub struct PeerCreds {
    /// By host name: the listening socket's host inode, and who called `listen`.
    listening: Mutex<HashMap<Vec<u8>, (u64, PeerCred)>>,
    /// By host inode of a client socket: who connected it.
    connecting: Mutex<HashMap<u64, PeerCred>>,
}

impl PeerCreds {
    /// Records `cred` as the listener of the host name `name`, socket `ino`.
    pub fn listening(&self, name: &[u8], ino: u64, cred: PeerCred) {
        self.listening.lock_unpoisoned().insert(name.to_vec(), (ino, cred));
    }

    /// Who listens on the host name `name`, if a process of this VMM does.
    pub fn listener(&self, name: &[u8]) -> Option<PeerCred> {
        self.listening.lock_unpoisoned().get(name).map(|&(_, c)| c)
    }

    /// Records `cred` as the process connecting client socket `ino`.
    pub fn connecting(&self, ino: u64, cred: PeerCred) {
        self.connecting.lock_unpoisoned().insert(ino, cred);
    }

    /// Who connected client socket `ino`, if a process of this VMM did.
    pub fn connector(&self, ino: u64) -> Option<PeerCred> {
        self.connecting.lock_unpoisoned().get(&ino).copied()
    }

    /// Forgets socket `ino` (closed), and its listening name `name` if it still holds it.
    pub fn forget(&self, ino: u64, name: Option<&[u8]>) {
        self.connecting.lock_unpoisoned().remove(&ino);
        if let Some(name) = name {
            let mut listening = self.listening.lock_unpoisoned();
            if listening.get(name).is_some_and(|&(i, _)| i == ino) {
                listening.remove(name);
            }
        }
    }
}

/// `SOCK_DIAG_BY_FAMILY`, the netlink message type of a `sock_diag` request.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `UDIAG_SHOW_PEER`: report the peer's inode.
const UDIAG_SHOW_PEER: u32 = 0x4;
/// `UNIX_DIAG_PEER`, the attribute holding it.
const UNIX_DIAG_PEER: u16 = 2;
/// `struct nlmsghdr`, `struct unix_diag_req` and `struct unix_diag_msg` sizes.
const NLMSG_HDR: usize = 16;
const UNIX_DIAG_REQ: usize = 24;
const UNIX_DIAG_MSG: usize = 16;

/// The host inode of the peer of the host `AF_UNIX` socket `ino`, asked of the host's
/// `sock_diag` (as `ss -x` asks); `None` if it has none.
pub fn peer_inode(ino: u64) -> SysResult<Option<u64>> {
    let ino = u32::try_from(ino).map_err(|_| Errno::EINVAL)?;
    // SAFETY: plain syscall; the descriptor returned is owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = [0u8; NLMSG_HDR + UNIX_DIAG_REQ];
    req[0..4].copy_from_slice(&((NLMSG_HDR + UNIX_DIAG_REQ) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    let r = &mut req[NLMSG_HDR..];
    r[0] = libc::AF_UNIX as u8;
    // Every state; this inode; show the peer; no cookie (all ones).
    r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    r[8..12].copy_from_slice(&ino.to_ne_bytes());
    r[12..16].copy_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    r[16..24].fill(0xff);
    // SAFETY: `req` is a live buffer of `req.len()` bytes; the netlink socket is ours.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(Errno::last());
    }
    let mut buf = [0u8; 512];
    let n = crate::errno::retry_len(|| {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
        unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) }
    })?;
    parse_peer(&buf[..n])
}

/// The peer inode in a `sock_diag` answer for one `AF_UNIX` socket.
fn parse_peer(msg: &[u8]) -> SysResult<Option<u64>> {
    let u16_at = |at: usize| msg.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let u32_at = |at: usize| msg.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let len = u32_at(0).ok_or(Errno::EIO)? as usize;
    if u16_at(4) == Some(libc::NLMSG_ERROR as u16) {
        let err = u32_at(NLMSG_HDR).map_or(libc::EIO, |e| -(e as i32));
        return Err(Errno(if err > 0 { err } else { libc::EIO }));
    }
    if u16_at(4) != Some(SOCK_DIAG_BY_FAMILY) || len > msg.len() || len < NLMSG_HDR + UNIX_DIAG_MSG {
        return Err(Errno::EIO);
    }
    // The attributes follow the message, each a length, a type and a value padded to 4 bytes.
    let mut at = NLMSG_HDR + UNIX_DIAG_MSG;
    while at + 4 <= len {
        let (alen, ty) = (u16_at(at).ok_or(Errno::EIO)? as usize, u16_at(at + 2).ok_or(Errno::EIO)?);
        if alen < 4 || at + alen > len {
            return Err(Errno::EIO);
        }
        if ty == UNIX_DIAG_PEER && alen >= 8 {
            return Ok(u32_at(at + 4).filter(|&p| p != 0).map(u64::from));
        }
        at += (alen + 3) & !3;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn inode(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
        crate::fs::hostdir::fstat(fd).unwrap().ino
    }

    #[test]
    fn the_host_names_a_sockets_peer() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (ia, ib) = (inode(a.as_fd()), inode(b.as_fd()));
        assert_eq!(peer_inode(ia), Ok(Some(ib)));
        assert_eq!(peer_inode(ib), Ok(Some(ia)));
        let lone = std::os::unix::net::UnixDatagram::unbound().unwrap();
        assert_eq!(peer_inode(inode(lone.as_fd())), Ok(None), "not connected");
        assert!(peer_inode(u64::from(u32::MAX) - 7).is_err(), "no such socket");
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert_eq!(parse_peer(&[]), Err(Errno::EIO));
        let len = NLMSG_HDR + UNIX_DIAG_MSG + 8;
        let mut m = vec![0u8; len];
        m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let at = NLMSG_HDR + UNIX_DIAG_MSG;
        m[at..at + 2].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(parse_peer(&m), Err(Errno::EIO), "an attribute past the end");
        m[at..at + 2].copy_from_slice(&8u16.to_ne_bytes());
        m[at + 2..at + 4].copy_from_slice(&UNIX_DIAG_PEER.to_ne_bytes());
        m[at + 4..at + 8].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(parse_peer(&m), Ok(Some(77)));
    }

    #[test]
    fn a_listener_is_forgotten_only_by_its_own_socket() {
        let creds = PeerCreds::default();
        let c = PeerCred { pid: 3, uid: 1000, gid: 100 };
        creds.listening(b"\0lego/x/s", 11, c);
        creds.connecting(12, PeerCred { pid: 4, ..c });
        creds.forget(99, Some(b"\0lego/x/s"));
        assert_eq!(creds.listener(b"\0lego/x/s"), Some(c), "another socket of that name");
        creds.forget(11, Some(b"\0lego/x/s"));
        assert_eq!(creds.listener(b"\0lego/x/s"), None);
        assert_eq!(creds.connector(12).map(|c| c.pid), Some(4));
        creds.forget(12, None);
        assert_eq!(creds.connector(12), None);
        assert_eq!(PeerCred::NONE.to_bytes()[4..], [0xff; 8]);
    }
}
