//! The host socket calls the vNode's sockets are made of. Every descriptor here is
//! non-blocking on the host: the system-call layer waits for readiness itself, without the
//! process lock and interruptibly.

use std::net::SocketAddrV4;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::addr::{from_host_v4, host_unix, host_v4};
use crate::errno::{retry, retry_len, Errno, SysResult};

/// A host socket address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostAddr {
    /// `AF_INET`.
    V4(SocketAddrV4),
    /// `AF_UNIX`, as the raw `sun_path` bytes (empty: unnamed).
    Unix(Vec<u8>),
}

/// A storage big enough for any socket address, and what the host wrote in it.
fn decode(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<HostAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, which it is large and
            // aligned enough for.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(HostAddr::V4(from_host_v4(sin)))
        }
        libc::AF_UNIX => {
            // SAFETY: as above, for `sockaddr_un`.
            let sun = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
            let n = (len as usize).saturating_sub(2).min(sun.sun_path.len());
            let mut path: Vec<u8> = sun.sun_path[..n].iter().map(|&c| c as u8).collect();
            if path.first() != Some(&0) {
                if let Some(end) = path.iter().position(|&b| b == 0) {
                    path.truncate(end);
                }
            }
            Some(HostAddr::Unix(path))
        }
        _ => None,
    }
}

/// Runs `f` with the host form of `addr` (pointer and length).
fn with_addr<R>(addr: &HostAddr, f: impl FnOnce(*const libc::sockaddr, libc::socklen_t) -> R) -> SysResult<R> {
    match addr {
        HostAddr::V4(a) => {
            let sin = host_v4(*a);
            Ok(f((&sin as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t))
        }
        HostAddr::Unix(name) => {
            let (sun, len) = host_unix(name)?;
            Ok(f((&sun as *const libc::sockaddr_un).cast(), len))
        }
    }
}

/// A new non-blocking, close-on-exec host socket.
pub fn socket(domain: i32, ty: i32) -> SysResult<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A connected pair of non-blocking, close-on-exec host sockets.
pub fn socketpair(domain: i32, ty: i32) -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::socketpair(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: both were just created and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `bind`.
pub fn bind(fd: RawFd, addr: &HostAddr) -> SysResult<()> {
    // SAFETY: the address is valid for its length during the call.
    let r = with_addr(addr, |a, l| unsafe { libc::bind(fd, a, l) })?;
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `connect` (`EINPROGRESS` while a TCP connection is being made).
pub fn connect(fd: RawFd, addr: Option<&HostAddr>) -> SysResult<()> {
    let r = match addr {
        // SAFETY: as in `bind`.
        Some(addr) => with_addr(addr, |a, l| unsafe { libc::connect(fd, a, l) })?,
        None => {
            let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
            // SAFETY: `unspec` is a valid address for its size.
            unsafe { libc::connect(fd, &unspec, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t) }
        }
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `listen`.
pub fn listen(fd: RawFd, backlog: i32) -> SysResult<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::listen(fd, backlog) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `accept4` of a non-blocking, close-on-exec connection.
pub fn accept(fd: RawFd) -> SysResult<OwnedFd> {
    let r = retry(|| {
        // SAFETY: no address is asked for.
        unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) }
    })?;
    // SAFETY: the descriptor was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

fn name_of(fd: RawFd, peer: bool) -> SysResult<Option<HostAddr>> {
    // SAFETY: all-zero is a valid `sockaddr_storage`.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut st as *mut libc::sockaddr_storage).cast();
    // SAFETY: `st` has room for `len` bytes.
    let r = unsafe { if peer { libc::getpeername(fd, p, &mut len) } else { libc::getsockname(fd, p, &mut len) } };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(decode(&st, len))
}

/// `getsockname`.
pub fn local(fd: RawFd) -> SysResult<Option<HostAddr>> {
    name_of(fd, false)
}

/// `getpeername`.
pub fn peer(fd: RawFd) -> SysResult<Option<HostAddr>> {
    name_of(fd, true)
}

/// `sendmsg` of `data` to `to` (or the peer), with descriptors for `SCM_RIGHTS`.
pub fn send(fd: RawFd, data: &[u8], flags: i32, to: Option<&HostAddr>, rights: &[RawFd]) -> SysResult<usize> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let space = if rights.is_empty() {
        0
    } else {
        // SAFETY: pure arithmetic.
        unsafe { libc::CMSG_SPACE(std::mem::size_of_val(rights) as u32) as usize }
    };
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut run = |name: *const libc::sockaddr, namelen: libc::socklen_t| {
        // SAFETY: all-zero is a valid `msghdr`.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = name as *mut libc::c_void;
        msg.msg_namelen = namelen;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if space > 0 {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            // SAFETY: the control buffer has room for one header and the descriptors
            // (`CMSG_SPACE`), so the first header and its data are in bounds.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(rights) as u32) as usize;
                std::ptr::copy_nonoverlapping(rights.as_ptr(), libc::CMSG_DATA(c).cast::<RawFd>(), rights.len());
            }
        }
        // SAFETY: `msg` points at live buffers for the duration of the call.
        retry_len(|| unsafe { libc::sendmsg(fd, &msg, flags | libc::MSG_NOSIGNAL) })
    };
    match to {
        Some(addr) => with_addr(addr, run)?,
        None => run(std::ptr::null(), 0),
    }
}

/// What one host `recvmsg` got.
pub struct Received {
    /// Bytes of data (the datagram's full length with `MSG_TRUNC`).
    pub len: usize,
    /// `msg_flags` (`MSG_TRUNC`, `MSG_CTRUNC`).
    pub flags: i32,
    /// The sender, for a datagram socket.
    pub from: Option<HostAddr>,
    /// Descriptors that came with `SCM_RIGHTS`.
    pub fds: Vec<OwnedFd>,
}

/// `recvmsg` into `buf`, taking up to `max_fds` passed descriptors (close-on-exec).
pub fn recv(fd: RawFd, buf: &mut [u8], flags: i32, max_fds: usize) -> SysResult<Received> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: all-zero is a valid `sockaddr_storage` and `msghdr`.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    let space = if max_fds == 0 {
        0
    } else {
        // SAFETY: pure arithmetic.
        unsafe { libc::CMSG_SPACE((max_fds * std::mem::size_of::<RawFd>()) as u32) as usize }
    };
    let mut control = vec![0u64; space.div_ceil(8)];
    msg.msg_name = (&mut st as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if space > 0 {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
    }
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let len = retry_len(|| unsafe { libc::recvmsg(fd, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) })?;
    let mut fds = Vec::new();
    if space > 0 {
        // SAFETY: the host filled the control buffer; the CMSG macros walk it within
        // `msg_controllen`, and each SCM_RIGHTS payload holds `(cmsg_len - CMSG_LEN(0)) / 4`
        // descriptors that are now ours.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let n = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    for i in 0..n {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
    }
    let from = if msg.msg_namelen > 0 { decode(&st, msg.msg_namelen) } else { None };
    Ok(Received { len, flags: msg.msg_flags, from, fds })
}

/// `setsockopt` with the option's bytes.
pub fn setsockopt(fd: RawFd, level: i32, name: i32, value: &[u8]) -> SysResult<()> {
    // SAFETY: `value` is valid for its length during the call.
    if unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), value.len() as libc::socklen_t) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `getsockopt` of at most `len` bytes.
pub fn getsockopt(fd: RawFd, level: i32, name: i32, len: usize) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut n = len as libc::socklen_t;
    // SAFETY: `buf` has room for `n` bytes.
    if unsafe { libc::getsockopt(fd, level, name, buf.as_mut_ptr().cast(), &mut n) } < 0 {
        return Err(Errno::last());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// An `int` socket option.
pub fn int_option(fd: RawFd, level: i32, name: i32) -> SysResult<i32> {
    let b = getsockopt(fd, level, name, 4)?;
    Ok(i32::from_ne_bytes(b.try_into().map_err(|_| Errno::EINVAL)?))
}

/// `shutdown`.
pub fn shutdown(fd: RawFd, how: i32) -> SysResult<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::shutdown(fd, how) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The inode number of a host descriptor.
pub fn inode(fd: RawFd) -> SysResult<u64> {
    // SAFETY: all-zero is a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(Errno::last());
    }
    Ok(st.st_ino)
}
