//! Socket system calls (`socket`, `socketpair`, `bind`, `listen`, `accept*`, `connect`,
//! `send*`/`recv*` with `SCM_RIGHTS`, `shutdown`, `get*name`, `[gs]etsockopt`) over the
//! [`crate::net`] layer, and `read`/`write`/`readv`/`writev` on sockets.
//!
//! Host sockets are non-blocking; a call that has to wait polls the host descriptor without
//! the process lock ([`crate::threads::ThreadGroup::poll_host`]), so other threads go on and a
//! signal ends the wait with `EINTR`. `SO_RCVTIMEO`/`SO_SNDTIMEO` bound those waits (`EAGAIN`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fs::common::fdarg;
use super::fs::data::{clip, gather, read_iovecs, scatter};
use super::fs::paths::resolve;
use super::{Args, Cpu};
use crate::delivery;
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::net::peercred::PeerCred;
use crate::net::addr::{self, SockAddr};
use crate::net::host;
use crate::net::socket::{Socket, State};
use crate::process::{Locked, Process};
use crate::signal::{SigInfo, SI_USER};

/// Largest guest `sockaddr` accepted (`sizeof(struct sockaddr_storage)`).
const SOCKADDR_MAX: u64 = 128;
/// Largest host buffer one transfer step uses.
const CHUNK: u64 = 1 << 20;
/// How long `accept` waits for a new connection's preamble before dropping it.
const PREAMBLE_WAIT: Duration = Duration::from_secs(2);
/// How long `connect` on a non-blocking socket waits for the host connection before it
/// answers `EINPROGRESS` (a connection inside the cluster is usually up by then).
const NONBLOCKING_CONNECT_WAIT: Duration = Duration::from_millis(100);
/// `sizeof(struct msghdr)` and `sizeof(struct mmsghdr)` on x86-64.
const MSGHDR_LEN: u64 = 56;
const MMSGHDR_LEN: u64 = 64;
/// Most messages one `sendmmsg`/`recvmmsg` handles (`UIO_MAXIOV`).
const MMSG_MAX: u64 = 1024;
/// Most descriptors one `SCM_RIGHTS` message carries (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;
/// `sizeof(struct cmsghdr)`.
const CMSG_HDR: usize = 16;
/// Largest socket option value copied.
const OPT_MAX: u64 = 256;

/// The status flags of a new socket and whether it is close-on-exec, from `SOCK_*` flags;
/// `EINVAL` for unknown flags.
fn sock_flags(flags: i32) -> SysResult<(i32, bool)> {
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    Ok((libc::O_RDWR | (flags & libc::O_NONBLOCK), flags & libc::SOCK_CLOEXEC != 0))
}

/// Whether `fd` is a socket (for `read`/`write` and friends).
pub(super) fn is_socket(p: &Process, fd: u64) -> bool {
    p.fds.get(fdarg(fd)).is_ok_and(|f| matches!(f.backing, Backing::Socket(_)))
}

/// The description of socket `fd`: `EBADF`, or `ENOTSOCK` for another kind of file.
fn socket_file(p: &Process, fd: u64) -> SysResult<Arc<OpenFile>> {
    let file = p.fds.get(fdarg(fd))?;
    if !matches!(file.backing, Backing::Socket(_)) {
        return Err(Errno(libc::ENOTSOCK));
    }
    Ok(file)
}

fn sock(file: &OpenFile) -> &Socket {
    match &file.backing {
        Backing::Socket(s) => s,
        // `socket_file` let only sockets through.
        _ => unreachable!("socket_file checked the backing"),
    }
}

/// Whether a call on `file` with `flags` must not wait.
fn nonblocking(file: &OpenFile, flags: i32) -> bool {
    file.status() & libc::O_NONBLOCK != 0 || flags & libc::MSG_DONTWAIT != 0
}

/// Reads a guest socket address of `len` bytes for a socket of `domain`.
fn read_addr(p: &Process, domain: i32, at: u64, len: u64) -> SysResult<SockAddr> {
    if len > SOCKADDR_MAX {
        return Err(Errno::EINVAL);
    }
    let mut raw = vec![0u8; len as usize];
    p.mm.read_user(at, &mut raw)?;
    addr::parse(domain, &raw)
}

/// Writes `a`, as a socket of `domain` shows it, to the guest buffer at `at` whose length is
/// at `lenp` (truncated to it), and its full length to `lenp`, as Linux's `move_addr_to_user`
/// does. Nothing if `at` is NULL.
fn write_addr(p: &Process, domain: i32, at: u64, lenp: u64, a: &SockAddr) -> SysResult<()> {
    write_name(p, at, lenp, &addr::encode(domain, a))
}

/// Writes the socket address `bytes` as [`write_addr`] does.
fn write_name(p: &Process, at: u64, lenp: u64, bytes: &[u8]) -> SysResult<()> {
    if at == 0 || lenp == 0 {
        return Ok(());
    }
    let mut l = [0u8; 4];
    p.mm.read_user(lenp, &mut l)?;
    let room = i32::from_le_bytes(l);
    if room < 0 {
        return Err(Errno::EINVAL);
    }
    let n = bytes.len().min(room as usize);
    p.mm.write_user(at, &bytes[..n])?;
    p.mm.write_user(lenp, &(bytes.len() as u32).to_le_bytes())
}

/// The vNode name an `AF_UNIX` address that a `connect` or `sendto` names stands for: the
/// abstract name as it is, or for a path the socket node it leads to ([`crate::net::socket_key`]:
/// `ENOENT` if there is none, `ECONNREFUSED` if it is not a socket, as on Linux).
fn unix_name(p: &Process, a: &SockAddr) -> SysResult<Vec<u8>> {
    match a {
        SockAddr::Unix(n) if n.first().is_some_and(|&b| b != 0) => {
            let path = resolve(p, libc::AT_FDCWD as u64, n)?;
            let st = crate::pseudo::stat(p, &path, true, |_, _| Err(Errno(libc::ECONNREFUSED)))?;
            if st.mode & libc::S_IFMT != libc::S_IFSOCK {
                return Err(Errno(libc::ECONNREFUSED));
            }
            Ok(crate::net::socket_key(&st))
        }
        SockAddr::Unix(n) => Ok(n.clone()),
        _ => Ok(Vec::new()),
    }
}

/// For `bind` of an `AF_UNIX` path `n`: makes its socket node in the vNode's files (mode
/// `0777` less the umask, as Linux; `EADDRINUSE` if the name is taken, a dangling symlink
/// included); returns the node's path and vNode name.
fn make_socket_node(p: &Process, n: &[u8]) -> SysResult<(Vec<u8>, Vec<u8>)> {
    let in_use = |e: Errno| if e == Errno::EEXIST { Errno(libc::EADDRINUSE) } else { e };
    let path = crate::pseudo::new_name(p, &resolve(p, libc::AT_FDCWD as u64, n)?).map_err(in_use)?;
    p.fs.mknod(&path, libc::S_IFSOCK | (0o777 & !p.umask), p.creds.creator()).map_err(in_use)?;
    let st = p.fs.stat(&path, false)?;
    Ok((path, crate::net::socket_key(&st)))
}

/// A `SO_RCVTIMEO`/`SO_SNDTIMEO` of the host socket (`None`: no limit).
fn timeout_of(fd: i32, opt: i32) -> Option<Duration> {
    let b = host::getsockopt(fd, libc::SOL_SOCKET, opt, 16).ok()?;
    let (sec, usec) = (i64::from_ne_bytes(b.get(..8)?.try_into().ok()?), i64::from_ne_bytes(b.get(8..16)?.try_into().ok()?));
    let t = Duration::from_secs(sec.max(0) as u64) + Duration::from_micros(usec.max(0) as u64);
    (!t.is_zero()).then_some(t)
}

/// Waits without the process lock until the host descriptor `fd` has `events`, at most until
/// `deadline`: `EAGAIN` when it passes, `EINTR` for a signal or the end of the process.
fn wait(p: &mut Locked<'_>, tid: i32, fd: i32, events: i16, deadline: Option<Instant>) -> SysResult<()> {
    let group = p.group.clone();
    let fds = [libc::pollfd { fd, events, revents: 0 }];
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if left == Some(Duration::ZERO) {
        return Err(Errno::EAGAIN);
    }
    let (n, _) = p.unlocked(|| group.poll_host(tid, &fds, left))?;
    if n == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(Errno::EAGAIN);
    }
    Ok(())
}

/// The deadline of a wait on `fd` under its `opt` timeout.
fn deadline_of(fd: i32, opt: i32) -> Option<Instant> {
    timeout_of(fd, opt).map(|t| Instant::now() + t)
}

/// Ends a connect left in progress before data moves: waits for it unless the call must not
/// wait (`EAGAIN` then).
fn settle_connect(p: &mut Locked<'_>, tid: i32, file: &Arc<OpenFile>, flags: i32) -> SysResult<()> {
    loop {
        match sock(file).finish_connect() {
            Err(Errno(libc::EINPROGRESS)) if nonblocking(file, flags) => return Err(Errno::EAGAIN),
            Err(Errno(libc::EINPROGRESS)) => wait(p, tid, sock(file).fd(), libc::POLLOUT, None)?,
            r => return r,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Creating, naming, connecting
// ---------------------------------------------------------------------------------------------

/// `socket(domain, type, protocol)`: `AF_INET` stream (TCP) and datagram (UDP) sockets, the
/// same in `AF_INET6` (dual-stack over the vNode's IPv4 network, on a host `AF_INET` socket;
/// see [`addr`]), and `AF_UNIX` stream, datagram and seqpacket ones. Other families:
/// `EAFNOSUPPORT`.
pub fn socket(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (domain, ty, protocol) = (a[0] as i32, a[1] as i32, a[2] as i32);
    let kind = ty & 0xf;
    let (status, cloexec) = sock_flags(ty & !0xf)?;
    match (domain, kind) {
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM) if matches!(protocol, 0 | libc::IPPROTO_TCP) => {}
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM) if matches!(protocol, 0 | libc::IPPROTO_UDP) => {}
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_DGRAM) => return Err(Errno(libc::EPROTONOSUPPORT)),
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_RAW) => return Err(Errno::EPERM),
        (libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET) if protocol == 0 => {}
        (libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET) => return Err(Errno(libc::EPROTONOSUPPORT)),
        (libc::AF_INET | libc::AF_INET6 | libc::AF_UNIX, _) => return Err(Errno(libc::ESOCKTNOSUPPORT)),
        _ => return Err(Errno(libc::EAFNOSUPPORT)),
    }
    let fd = host::socket(if domain == libc::AF_INET6 { libc::AF_INET } else { domain }, kind)?;
    let s = Socket::new(p.net.clone(), domain, kind, fd, State::default());
    p.fds.alloc(OpenFile::new(Backing::Socket(s), b"socket:".to_vec(), status), 0, cloexec)
}

/// `socketpair(AF_UNIX, type, 0, sv)`.
pub fn socketpair(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (domain, ty, protocol, sv) = (a[0] as i32, a[1] as i32, a[2] as i32, a[3]);
    let kind = ty & 0xf;
    let (status, cloexec) = sock_flags(ty & !0xf)?;
    match (domain, kind) {
        (libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET) if protocol == 0 => {}
        (libc::AF_UNIX, _) => return Err(Errno(libc::EPROTONOSUPPORT)),
        (libc::AF_INET | libc::AF_INET6, _) => return Err(Errno::EOPNOTSUPP),
        _ => return Err(Errno(libc::EAFNOSUPPORT)),
    }
    if !p.mm.user_accessible(sv, 8, true) {
        return Err(Errno::EFAULT);
    }
    let (x, y) = host::socketpair(domain, kind)?;
    let state = State {
        local: Some(SockAddr::Unix(Vec::new())),
        peer: Some(SockAddr::Unix(Vec::new())),
        host_bound: true,
        peer_cred: Some(cred_of(p)),
        ..State::default()
    };
    let mut fds = [0i32; 2];
    for (i, fd) in [x, y].into_iter().enumerate() {
        let s = Socket::new(p.net.clone(), domain, kind, fd, state.clone());
        match p.fds.alloc(OpenFile::new(Backing::Socket(s), b"socket:".to_vec(), status), 0, cloexec) {
            Ok(n) => fds[i] = n as i32,
            Err(e) => {
                if i == 1 {
                    let _ = p.fds.close(fds[0] as u64);
                }
                return Err(e);
            }
        }
    }
    let out = [fds[0].to_le_bytes(), fds[1].to_le_bytes()].concat();
    p.mm.write_user(sv, &out)?;
    Ok(0)
}

/// `bind(fd, addr, len)`.
pub fn bind(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = socket_file(p, a[0])?;
    let s = sock(&file);
    // An IPv6 address outside the IPv4 network is none of the vNode's.
    let addr = read_addr(p, s.domain, a[1], a[2]).map_err(|e| if e.0 == libc::ENETUNREACH { Errno(libc::EADDRNOTAVAIL) } else { e })?;
    let SockAddr::Unix(n) = &addr else {
        s.bind(&addr, &[])?;
        return Ok(0);
    };
    if n.first().is_none_or(|&b| b == 0) {
        s.bind(&addr, n)?;
        return Ok(0);
    }
    if s.state().local.is_some() {
        return Err(Errno::EINVAL);
    }
    let (path, name) = make_socket_node(p, n)?;
    if let Err(e) = s.bind(&addr, &name) {
        // The name was this bind's to give: take it back.
        let _ = p.fs.unlink(&path);
        return Err(e);
    }
    Ok(0)
}

/// The credentials `SO_PEERCRED` shows of process `p` at the other end of a socket.
fn cred_of(p: &Process) -> PeerCred {
    PeerCred { pid: p.pid, uid: p.creds.euid, gid: p.creds.egid }
}

/// `listen(fd, backlog)`.
pub fn listen(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = socket_file(p, a[0])?;
    sock(&file).listen((a[1] as i32).clamp(0, libc::SOMAXCONN), cred_of(p))?;
    Ok(0)
}

/// `connect(fd, addr, len)`: waits for a TCP connection to be made (a non-blocking socket
/// briefly, then `EINPROGRESS`).
pub fn connect(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = socket_file(p, a[0])?;
    let s = sock(&file);
    let addr = read_addr(p, s.domain, a[1], a[2])?;
    let name = unix_name(p, &addr)?;
    let connecting = s.state().connecting.is_some();
    let started = if connecting {
        match s.finish_connect() {
            Ok(()) => return Err(Errno(libc::EISCONN)),
            Err(Errno(libc::EINPROGRESS)) if nonblocking(&file, 0) => return Err(Errno(libc::EALREADY)),
            Err(Errno(libc::EINPROGRESS)) => false,
            Err(e) => return Err(e),
        }
    } else {
        match s.connect(&addr, &name, cred_of(p)) {
            Err(Errno::EAGAIN) if s.domain == libc::AF_UNIX => return Err(Errno::EAGAIN),
            r => r?,
        }
    };
    if started {
        return Ok(0);
    }
    let deadline = nonblocking(&file, 0).then(|| Instant::now() + NONBLOCKING_CONNECT_WAIT);
    loop {
        match wait(p, cpu.tid, s.fd(), libc::POLLOUT, deadline) {
            Err(Errno::EAGAIN) => return Err(Errno(libc::EINPROGRESS)),
            r => r?,
        }
        match s.finish_connect() {
            Err(Errno(libc::EINPROGRESS)) => continue,
            r => return r.map(|()| 0),
        }
    }
}

pub fn accept(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    accept4(p, cpu, [a[0], a[1], a[2], 0, 0, 0])
}

/// `accept4(fd, addr, len, flags)`: the peer is the client's virtual address, from the
/// connection's preamble.
pub fn accept4(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (status, cloexec) = sock_flags(a[3] as i32)?;
    let file = socket_file(p, a[0])?;
    let s = sock(&file);
    if !s.state().listening {
        return Err(Errno::EINVAL);
    }
    let deadline = deadline_of(s.fd(), libc::SO_RCVTIMEO);
    loop {
        let conn = match host::accept(s.fd()) {
            Ok(c) => c,
            Err(Errno::EAGAIN) if nonblocking(&file, 0) => return Err(Errno::EAGAIN),
            Err(Errno::EAGAIN) => {
                wait(p, cpu.tid, s.fd(), libc::POLLIN, deadline)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(state) = take_preamble(p, cpu.tid, s, &conn)? else { continue };
        let new = Socket::new(p.net.clone(), s.domain, s.kind, conn, state);
        let peer = new.state().peer.clone();
        let fd = p.fds.alloc(OpenFile::new(Backing::Socket(new), b"socket:".to_vec(), status), 0, cloexec)?;
        if let Some(peer) = peer {
            if let Err(e) = write_addr(p, s.domain, a[1], a[2], &peer) {
                let _ = p.fds.close(fd);
                return Err(e);
            }
        }
        return Ok(fd);
    }
}

/// The state of a connection `listener` accepted on the host, once its preamble is in;
/// `None` for a connection that brought none in time (dropped).
fn take_preamble(p: &mut Locked<'_>, tid: i32, listener: &Socket, conn: &OwnedFd) -> SysResult<Option<State>> {
    let deadline = Instant::now() + PREAMBLE_WAIT;
    loop {
        match listener.take_accepted(conn) {
            Ok(st) => return Ok(Some(st)),
            Err(Errno::EAGAIN) => match wait(p, tid, conn.as_raw_fd(), libc::POLLIN, Some(deadline)) {
                Err(Errno::EAGAIN) => return Ok(None),
                r => r?,
            },
            Err(e) => {
                tracing::debug!("a connection without a valid preamble is dropped: {e:?}");
                return Ok(None);
            }
        }
    }
}

/// `shutdown(fd, how)`.
pub fn shutdown(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = socket_file(p, a[0])?;
    let how = a[1] as i32;
    if !(0..=2).contains(&how) {
        return Err(Errno::EINVAL);
    }
    let s = sock(&file);
    if s.state().connecting.is_some() {
        s.finish_connect().map_err(|_| Errno(libc::ENOTCONN))?;
    }
    host::shutdown(s.fd(), how)?;
    Ok(0)
}

/// `getsockname(fd, addr, len)`.
pub fn getsockname(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = socket_file(p, a[0])?;
    let s = sock(&file);
    let local = s.state().local.clone().unwrap_or_else(|| {
        if s.is_inet() {
            SockAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0))
        } else {
            SockAddr::Unix(Vec::new())
        }
    });
    if a[1] == 0 {
        return Err(Errno::EFAULT);
    }
    write_addr(p, s.domain, a[1], a[2], &local)?;
    Ok(0)
}

/// `getpeername(fd, addr, len)`.
pub fn getpeername(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = socket_file(p, a[0])?;
    let s = sock(&file);
    if s.state().connecting.is_some() {
        s.finish_connect().map_err(|_| Errno(libc::ENOTCONN))?;
    }
    let peer = s.state().peer.clone().ok_or(Errno(libc::ENOTCONN))?;
    if a[1] == 0 {
        return Err(Errno::EFAULT);
    }
    write_addr(p, s.domain, a[1], a[2], &peer)?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// Whether the option is one a vNode socket may use (passed to the host socket as it is).
/// Options that would reach past the vNode (`SO_BINDTODEVICE`, `SO_MARK`, multicast, raw IP
/// headers) are not.
fn allowed_option(s: &Socket, level: i32, name: i32) -> bool {
    match level {
        libc::SOL_SOCKET => matches!(
            name,
            libc::SO_REUSEADDR
                | libc::SO_TYPE
                | libc::SO_ERROR
                | libc::SO_BROADCAST
                | libc::SO_SNDBUF
                | libc::SO_RCVBUF
                | libc::SO_KEEPALIVE
                | libc::SO_OOBINLINE
                | libc::SO_PRIORITY
                | libc::SO_LINGER
                | libc::SO_REUSEPORT
                | libc::SO_PASSCRED
                | libc::SO_RCVLOWAT
                | libc::SO_SNDLOWAT
                | libc::SO_RCVTIMEO
                | libc::SO_SNDTIMEO
                | libc::SO_TIMESTAMP
                | libc::SO_ACCEPTCONN
                | libc::SO_PROTOCOL
                | libc::SO_DOMAIN
                | libc::SO_PEERCRED
        ),
        libc::IPPROTO_TCP if s.is_inet() && s.is_stream() => matches!(
            name,
            libc::TCP_NODELAY
                | libc::TCP_MAXSEG
                | libc::TCP_CORK
                | libc::TCP_KEEPIDLE
                | libc::TCP_KEEPINTVL
                | libc::TCP_KEEPCNT
                | libc::TCP_SYNCNT
                | libc::TCP_LINGER2
                | libc::TCP_DEFER_ACCEPT
                | libc::TCP_WINDOW_CLAMP
                | libc::TCP_INFO
                | libc::TCP_QUICKACK
                | libc::TCP_USER_TIMEOUT
        ),
        libc::IPPROTO_IP if s.is_inet() => matches!(name, libc::IP_TOS | libc::IP_TTL | libc::IP_MTU_DISCOVER | libc::IP_RECVERR),
        libc::IPPROTO_IPV6 if s.domain == libc::AF_INET6 => name == libc::IPV6_V6ONLY,
        _ => false,
    }
}

/// `setsockopt(fd, level, name, value, len)`.
pub fn setsockopt(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = socket_file(p, a[0])?;
    let s = sock(&file);
    let (level, name, len) = (a[1] as i32, a[2] as i32, a[4] as u32 as u64);
    if !allowed_option(s, level, name) {
        return Err(Errno(libc::ENOPROTOOPT));
    }
    if len > OPT_MAX {
        return Err(Errno::EINVAL);
    }
    let mut value = vec![0u8; len as usize];
    p.mm.read_user(a[3], &mut value)?;
    if (level, name) == (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) {
        // Recorded and reported: the socket stays dual-stack (see `addr`). As on Linux, only
        // until it is bound.
        let on: [u8; 4] = value.get(..4).and_then(|v| v.try_into().ok()).ok_or(Errno::EINVAL)?;
        let mut st = s.state();
        if st.local.is_some() || st.host_bound {
            return Err(Errno::EINVAL);
        }
        st.v6only = i32::from_ne_bytes(on) != 0;
        return Ok(0);
    }
    host::setsockopt(s.fd(), level, name, &value)?;
    Ok(0)
}

/// `getsockopt(fd, level, name, value, lenp)`. `SO_ERROR` also ends a connect in progress.
pub fn getsockopt(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = socket_file(p, a[0])?;
    let s = sock(&file);
    let (level, name) = (a[1] as i32, a[2] as i32);
    if !allowed_option(s, level, name) {
        return Err(Errno(libc::ENOPROTOOPT));
    }
    let mut l = [0u8; 4];
    p.mm.read_user(a[4], &mut l)?;
    let room = i32::from_le_bytes(l);
    if room < 0 {
        return Err(Errno::EINVAL);
    }
    let value = if level == libc::SOL_SOCKET && name == libc::SO_ERROR && s.state().connecting.is_some() {
        let err = match s.finish_connect() {
            Ok(()) | Err(Errno(libc::EINPROGRESS)) => 0,
            Err(e) => e.0,
        };
        err.to_ne_bytes().to_vec()
    } else if (level, name) == (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) {
        i32::from(s.state().v6only).to_ne_bytes().to_vec()
    } else if (level, name) == (libc::SOL_SOCKET, libc::SO_DOMAIN) {
        s.domain.to_ne_bytes().to_vec()
    } else if (level, name) == (libc::SOL_SOCKET, libc::SO_PEERCRED) {
        // The guest's credentials, never the host's (the VMM's own, for every socket).
        s.state().peer_cred.unwrap_or(PeerCred::NONE).to_bytes().to_vec()
    } else {
        host::getsockopt(s.fd(), level, name, (room as u64).min(OPT_MAX) as usize)?
    };
    let n = value.len().min(room as usize);
    p.mm.write_user(a[3], &value[..n])?;
    p.mm.write_user(a[4], &(n as u32).to_le_bytes())?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Sending and receiving
// ---------------------------------------------------------------------------------------------

/// What one send carries besides its data.
#[derive(Default)]
struct SendExtra {
    to: Option<SockAddr>,
    /// Guest descriptors for `SCM_RIGHTS`.
    rights: Vec<i32>,
}

/// Sends the guest segments on socket `fd`: a stream socket that may wait sends everything
/// (or what it sent before a signal or timeout); `EPIPE` raises `SIGPIPE` unless
/// `MSG_NOSIGNAL`.
fn send(p: &mut Locked<'_>, tid: i32, fd: u64, segs: &[(u64, u64)], flags: i32, extra: SendExtra) -> SysResult<u64> {
    let file = socket_file(p, fd)?;
    let s = sock(&file);
    if s.state().connecting.is_some() {
        settle_connect(p, tid, &file, flags)?;
    }
    let (segs, total) = clip(p, segs, false)?;
    let stream = s.is_stream();
    let target = match (&extra.to, stream) {
        (Some(to), false) => {
            let name = unix_name(p, to)?;
            match s.target(to, &name)? {
                Some(t) => Some(t),
                // Nobody has that address: the datagram is lost.
                None => return Ok(total),
            }
        }
        _ => {
            if !stream {
                s.autobind()?;
            }
            None
        }
    };
    let mut tokens = Vec::new();
    for &g in &extra.rights {
        let f = p.fds.get(fdarg(g as u64))?;
        match p.in_flight.send(f) {
            Ok(t) => tokens.push(t),
            Err(e) => {
                tokens.iter().for_each(|t| p.in_flight.cancel(t));
                return Err(e);
            }
        }
    }
    let host_flags = flags & (libc::MSG_OOB | libc::MSG_DONTROUTE | libc::MSG_EOR | libc::MSG_MORE) | libc::MSG_DONTWAIT;
    let deadline = deadline_of(s.fd(), libc::SO_SNDTIMEO);
    let mut done = 0u64;
    let result = loop {
        let want = if stream { (total - done).min(CHUNK) } else { total };
        let mut buf = vec![0u8; want as usize];
        if let Err(e) = gather(p, &segs, done, &mut buf) {
            break Err(e);
        }
        let raw: Vec<i32> = if done == 0 { tokens.iter().map(|t| t.as_raw_fd()).collect() } else { Vec::new() };
        match host::send(s.fd(), &buf, host_flags, target.as_ref(), &raw) {
            Ok(n) => {
                done += n as u64;
                tokens.clear();
                if !stream || done >= total {
                    break Ok(done);
                }
                if nonblocking(&file, flags) && (n as u64) < want {
                    break Ok(done);
                }
            }
            Err(Errno::EAGAIN) if nonblocking(&file, flags) => break Err(Errno::EAGAIN),
            Err(Errno::EAGAIN) => {
                if let Err(e) = wait(p, tid, s.fd(), libc::POLLOUT, deadline) {
                    break Err(e);
                }
            }
            Err(e) => break Err(e),
        }
    };
    tokens.iter().for_each(|t| p.in_flight.cancel(t));
    match result {
        Err(_) if done > 0 => Ok(done),
        Err(Errno::EPIPE) => {
            if flags & libc::MSG_NOSIGNAL == 0 {
                let info = SigInfo::sent(libc::SIGPIPE, SI_USER, p.pid, p.creds.uid);
                // The sender exists: it is the caller.
                let _ = delivery::post_thread(p, tid, info, Some(tid));
            }
            Err(Errno::EPIPE)
        }
        r => r,
    }
}

/// What one receive got besides its data.
struct Got {
    len: u64,
    /// `MSG_TRUNC`, `MSG_CTRUNC`.
    flags: i32,
    /// The sender, as the socket shows addresses.
    from: Option<Vec<u8>>,
    files: Vec<Arc<OpenFile>>,
}

/// Receives into the guest segments from socket `fd`, taking up to `max_fds` passed
/// descriptors. `MSG_WAITALL` on a stream waits for all of it (or the end, or a signal).
fn recv(p: &mut Locked<'_>, tid: i32, fd: u64, segs: &[(u64, u64)], flags: i32, max_fds: usize) -> SysResult<Got> {
    if flags & libc::MSG_ERRQUEUE != 0 {
        return Err(Errno::EAGAIN);
    }
    let file = socket_file(p, fd)?;
    let s = sock(&file);
    if s.state().connecting.is_some() {
        settle_connect(p, tid, &file, flags)?;
    }
    let (segs, total) = clip(p, segs, true)?;
    let stream = s.is_stream();
    let want = if stream { total.min(CHUNK) } else { total.min(1 << 17) };
    let host_flags = flags & (libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_OOB) | libc::MSG_DONTWAIT;
    let waitall = stream && flags & libc::MSG_WAITALL != 0 && flags & libc::MSG_PEEK == 0;
    let deadline = deadline_of(s.fd(), libc::SO_RCVTIMEO);
    let mut buf = vec![0u8; want as usize];
    let mut done = 0usize;
    let mut got = Got { len: 0, flags: 0, from: None, files: Vec::new() };
    loop {
        match host::recv(s.fd(), &mut buf[done..], host_flags, max_fds) {
            Ok(r) => {
                got.flags |= r.flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC);
                if got.from.is_none() {
                    got.from = s.source(r.from).map(|a| addr::encode(s.domain, &a));
                }
                got.files.extend(r.fds.into_iter().filter_map(|t| p.in_flight.take(t)));
                let n = if stream { r.len } else { r.len.min(want as usize) };
                done += n;
                got.len = if !stream && flags & libc::MSG_TRUNC != 0 { r.len as u64 } else { done as u64 };
                if !waitall || r.len == 0 || done == buf.len() {
                    break;
                }
            }
            Err(Errno::EAGAIN) if done > 0 => break,
            Err(Errno::EAGAIN) if nonblocking(&file, flags) => return Err(Errno::EAGAIN),
            Err(Errno::EAGAIN) => match wait(p, tid, s.fd(), libc::POLLIN, deadline) {
                Err(_) if done > 0 => break,
                r => r?,
            },
            Err(_) if done > 0 => break,
            Err(e) => return Err(e),
        }
    }
    scatter(p, &segs, 0, &buf[..done.min(want as usize)])?;
    Ok(got)
}

/// `read`/`readv` on a socket.
pub(super) fn read_socket(p: &mut Locked<'_>, tid: i32, fd: u64, segs: &[(u64, u64)]) -> SysResult<u64> {
    recv(p, tid, fd, segs, 0, 0).map(|g| g.len)
}

/// `write`/`writev` on a socket.
pub(super) fn write_socket(p: &mut Locked<'_>, tid: i32, fd: u64, segs: &[(u64, u64)]) -> SysResult<u64> {
    send(p, tid, fd, segs, 0, SendExtra::default())
}

/// `sendto(fd, buf, len, flags, addr, addrlen)`.
pub fn sendto(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = socket_file(p, a[0])?;
    let to = if a[4] != 0 { Some(read_addr(p, sock(&file).domain, a[4], a[5])?) } else { None };
    send(p, cpu.tid, a[0], &super::fs::data::one_seg(a[1], a[2])?, a[3] as i32, SendExtra { to, rights: Vec::new() })
}

/// `recvfrom(fd, buf, len, flags, addr, addrlen)`.
pub fn recvfrom(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let got = recv(p, cpu.tid, a[0], &super::fs::data::one_seg(a[1], a[2])?, a[3] as i32, 0)?;
    if let Some(from) = &got.from {
        write_name(p, a[4], a[5], from)?;
    }
    Ok(got.len)
}

/// A guest `struct msghdr`.
struct MsgHdr {
    name: u64,
    namelen: u64,
    iov: u64,
    iovlen: u64,
    control: u64,
    controllen: u64,
}

fn read_msghdr(p: &Process, at: u64) -> SysResult<MsgHdr> {
    let mut b = [0u8; MSGHDR_LEN as usize];
    p.mm.read_user(at, &mut b)?;
    let q = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
    Ok(MsgHdr { name: q(0), namelen: u64::from(q(8) as u32), iov: q(16), iovlen: q(24), control: q(32), controllen: q(40) })
}

/// The descriptors of the `SCM_RIGHTS` messages in a guest control buffer; other control
/// messages are ignored (`SCM_CREDENTIALS` is implied by the host socket).
fn read_rights(p: &Process, at: u64, len: u64) -> SysResult<Vec<i32>> {
    if at == 0 || len == 0 {
        return Ok(Vec::new());
    }
    if len > 64 * 1024 {
        return Err(Errno(libc::ENOBUFS));
    }
    let mut b = vec![0u8; len as usize];
    p.mm.read_user(at, &mut b)?;
    let mut fds = Vec::new();
    let mut off = 0usize;
    while off + CMSG_HDR <= b.len() {
        let clen = u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or_default()) as usize;
        let level = i32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap_or_default());
        let ty = i32::from_le_bytes(b[off + 12..off + 16].try_into().unwrap_or_default());
        if clen < CMSG_HDR || off + clen > b.len() {
            return Err(Errno::EINVAL);
        }
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            for c in b[off + CMSG_HDR..off + clen].chunks_exact(4) {
                fds.push(i32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
        }
        off += clen.div_ceil(8) * 8;
    }
    if fds.len() > SCM_MAX_FD {
        return Err(Errno::EINVAL);
    }
    Ok(fds)
}

fn sendmsg_one(p: &mut Locked<'_>, tid: i32, fd: u64, msg: u64, flags: i32) -> SysResult<u64> {
    let m = read_msghdr(p, msg)?;
    let file = socket_file(p, fd)?;
    let s = sock(&file);
    let to = if m.name != 0 && m.namelen != 0 { Some(read_addr(p, s.domain, m.name, m.namelen)?) } else { None };
    let rights = read_rights(p, m.control, m.controllen)?;
    if !rights.is_empty() && s.domain != libc::AF_UNIX {
        return Err(Errno::EINVAL);
    }
    let segs = read_iovecs(p, m.iov, m.iovlen)?;
    send(p, tid, fd, &segs, flags, SendExtra { to, rights })
}

fn recvmsg_one(p: &mut Locked<'_>, tid: i32, fd: u64, msg: u64, flags: i32) -> SysResult<u64> {
    let m = read_msghdr(p, msg)?;
    let segs = read_iovecs(p, m.iov, m.iovlen)?;
    let max_fds = (m.controllen as usize).saturating_sub(CMSG_HDR) / 4;
    let got = recv(p, tid, fd, &segs, flags & !libc::MSG_CMSG_CLOEXEC, max_fds.min(SCM_MAX_FD))?;
    let mut msg_flags = got.flags;
    // The sender's address.
    let namelen = match (&got.from, m.name) {
        (Some(bytes), name) if name != 0 => {
            let n = bytes.len().min(m.namelen as usize);
            p.mm.write_user(name, &bytes[..n])?;
            bytes.len() as u32
        }
        _ => 0,
    };
    p.mm.write_user(msg + 8, &namelen.to_le_bytes())?;
    // Passed descriptors, installed in this process.
    let mut controllen = 0u64;
    if !got.files.is_empty() {
        let cloexec = flags & libc::MSG_CMSG_CLOEXEC != 0;
        let mut fds = Vec::new();
        for f in got.files {
            match p.fds.alloc(f, 0, cloexec) {
                Ok(n) => fds.push(n as i32),
                Err(_) => msg_flags |= libc::MSG_CTRUNC,
            }
        }
        let mut c = Vec::with_capacity(CMSG_HDR + 4 * fds.len());
        c.extend_from_slice(&((CMSG_HDR + 4 * fds.len()) as u64).to_le_bytes());
        c.extend_from_slice(&libc::SOL_SOCKET.to_le_bytes());
        c.extend_from_slice(&libc::SCM_RIGHTS.to_le_bytes());
        fds.iter().for_each(|f| c.extend_from_slice(&f.to_le_bytes()));
        p.mm.write_user(m.control, &c)?;
        controllen = (c.len().div_ceil(8) * 8).min(m.controllen as usize) as u64;
    }
    p.mm.write_user(msg + 40, &controllen.to_le_bytes())?;
    p.mm.write_user(msg + 48, &msg_flags.to_le_bytes())?;
    Ok(got.len)
}

/// `sendmsg(fd, msg, flags)`.
pub fn sendmsg(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    sendmsg_one(p, cpu.tid, a[0], a[1], a[2] as i32)
}

/// `recvmsg(fd, msg, flags)`.
pub fn recvmsg(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    recvmsg_one(p, cpu.tid, a[0], a[1], a[2] as i32)
}

/// `sendmmsg(fd, msgvec, vlen, flags)`: the number of messages sent.
pub fn sendmmsg(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (fd, vec, vlen, flags) = (a[0], a[1], a[2].min(MMSG_MAX), a[3] as i32);
    socket_file(p, fd)?;
    let mut sent = 0;
    while sent < vlen {
        let at = vec + sent * MMSGHDR_LEN;
        match sendmsg_one(p, cpu.tid, fd, at, flags) {
            Ok(n) => p.mm.write_user(at + MSGHDR_LEN, &(n as u32).to_le_bytes())?,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
        sent += 1;
    }
    Ok(sent)
}

/// `recvmmsg(fd, msgvec, vlen, flags, timeout)`: `MSG_WAITFORONE` makes every message after the
/// first non-blocking. (The timeout, which Linux only checks between messages, is not used.)
pub fn recvmmsg(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (fd, vec, vlen, mut flags) = (a[0], a[1], a[2].min(MMSG_MAX), a[3] as i32);
    socket_file(p, fd)?;
    let mut got = 0;
    while got < vlen {
        let at = vec + got * MMSGHDR_LEN;
        match recvmsg_one(p, cpu.tid, fd, at, flags) {
            Ok(n) => p.mm.write_user(at + MSGHDR_LEN, &(n as u32).to_le_bytes())?,
            Err(e) if got == 0 => return Err(e),
            Err(_) => break,
        }
        got += 1;
        if flags & libc::MSG_WAITFORONE != 0 {
            flags |= libc::MSG_DONTWAIT;
        }
    }
    Ok(got)
}

/// The calls of the network and readiness layer (sockets, `select`, epoll, eventfd), kept
/// apart from the main table in [`super::lookup`].
pub(super) fn lookup(nr: u64) -> Option<(super::Signature, super::Handler)> {
    use super::epoll::*;
    use super::poll::{pselect6, select};
    use super::Handler::{Blocking, Plain};
    Some(match nr {
        23 => ("dxxxx", Blocking(select)),
        41 => ("ddd", Plain(socket)),
        42 => ("fxu", Blocking(connect)),
        43 => ("fxx", Blocking(accept)),
        44 => ("fbuxxu", Blocking(sendto)),
        45 => ("fxuxxx", Blocking(recvfrom)),
        46 => ("fxx", Blocking(sendmsg)),
        47 => ("fxx", Blocking(recvmsg)),
        48 => ("fd", Plain(shutdown)),
        49 => ("fxu", Plain(bind)),
        50 => ("fd", Plain(listen)),
        51 => ("fxx", Plain(getsockname)),
        52 => ("fxx", Plain(getpeername)),
        53 => ("dddx", Plain(socketpair)),
        54 => ("fddxu", Plain(setsockopt)),
        55 => ("fddxx", Plain(getsockopt)),
        213 => ("d", Plain(epoll_create)),
        232 => ("fxdd", Blocking(epoll_wait)),
        233 => ("fdfx", Plain(epoll_ctl)),
        270 => ("dxxxxx", Blocking(pselect6)),
        281 => ("fxddxu", Blocking(epoll_pwait)),
        284 => ("u", Plain(eventfd)),
        288 => ("fxxx", Blocking(accept4)),
        290 => ("ux", Plain(eventfd2)),
        291 => ("x", Plain(epoll_create1)),
        299 => ("fxuxx", Blocking(recvmmsg)),
        307 => ("fxux", Blocking(sendmmsg)),
        441 => ("fxdxxu", Blocking(epoll_pwait2)),
        _ => return None,
    })
}
