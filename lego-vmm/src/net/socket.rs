//! A socket of a vNode program: a host socket, the virtual addresses the program sees, and the
//! port it holds in the vNode (given back when the socket is closed).

use lego_proto::sync::LockExt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use super::addr::SockAddr;
use super::host::{self, HostAddr};
use super::peercred::PeerCred;
use super::{preamble, Claim, Net, Proto};
use crate::errno::{Errno, SysResult};

/// What a socket knows in the guest's terms.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Its virtual local address, once bound (or connected).
    pub local: Option<SockAddr>,
    /// Its virtual peer, once connected.
    pub peer: Option<SockAddr>,
    /// The vNode port it holds.
    pub claim: Option<Claim>,
    /// Whether it is bound on the host.
    pub host_bound: bool,
    /// A TCP connection to this virtual address is being made on the host; its preamble is
    /// sent once it is up.
    pub connecting: Option<SocketAddrV4>,
    /// `listen` was called.
    pub listening: bool,
    /// `IPV6_V6ONLY` as the program set it (an `AF_INET6` socket is dual-stack whatever it
    /// says: the vNode network is IPv4).
    pub v6only: bool,
    /// The host name an `AF_UNIX` socket is bound to.
    pub host_name: Option<Vec<u8>>,
    /// Who is at the other end, as `SO_PEERCRED` reports it ([`super::peercred`]).
    pub peer_cred: Option<PeerCred>,
}

/// A vNode socket (the backing of its open file description).
pub struct Socket {
    fd: OwnedFd,
    /// The host socket's inode (`AF_UNIX` only, 0 otherwise), which `sock_diag` names it by.
    ino: u64,
    /// `AF_INET`, `AF_INET6` (dual-stack, over a host `AF_INET` socket) or `AF_UNIX`.
    pub domain: i32,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub kind: i32,
    net: Arc<Net>,
    state: Mutex<State>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        let mut st = self.state();
        if let Some(c) = st.claim.take() {
            self.net.release(c);
        }
        if self.domain == libc::AF_UNIX {
            let name = st.host_name.take();
            self.net.creds().forget(self.ino, name.as_deref().filter(|_| st.listening));
            if let Some(name) = name {
                self.net.unbound(&name, self.ino);
            }
        }
    }
}

impl Socket {
    /// A socket over the host socket `fd`.
    pub fn new(net: Arc<Net>, domain: i32, kind: i32, fd: OwnedFd, state: State) -> Socket {
        let ino = if domain == libc::AF_UNIX { crate::fs::hostdir::fstat(fd.as_fd()).map_or(0, |st| st.ino) } else { 0 };
        Socket { fd, ino, domain, kind, net, state: Mutex::new(state) }
    }

    /// The host descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The vNode's network.
    pub fn net(&self) -> &Arc<Net> {
        &self.net
    }

    /// The socket's state.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock_unpoisoned()
    }

    /// Whether it is an Internet socket (`AF_INET` or `AF_INET6`).
    pub fn is_inet(&self) -> bool {
        matches!(self.domain, libc::AF_INET | libc::AF_INET6)
    }

    /// Whether it is a stream (TCP, or a stream `AF_UNIX` socket).
    pub fn is_stream(&self) -> bool {
        self.kind == libc::SOCK_STREAM
    }

    fn proto(&self) -> Proto {
        if self.is_stream() {
            Proto::Tcp
        } else {
            Proto::Udp
        }
    }

    /// `bind` to `addr`; for `AF_UNIX`, `name` is the vNode name it stands for (the socket
    /// node's [`super::socket_key`] for a path, which the caller has made).
    pub fn bind(&self, addr: &SockAddr, name: &[u8]) -> SysResult<()> {
        let mut st = self.state();
        if st.local.is_some() {
            return Err(Errno::EINVAL);
        }
        match addr {
            SockAddr::V4(want) => {
                let host = self.host_bound(&mut st)?;
                st.claim = Some(self.net.claim(self.proto(), *want, host)?);
                let port = st.claim.map_or(0, |c| c.port);
                st.local = Some(SockAddr::V4(SocketAddrV4::new(*want.ip(), port)));
            }
            SockAddr::Unix(guest) => {
                if guest.is_empty() {
                    // An unnamed bind autobinds on Linux; inside a vNode the name stays unseen.
                    st.local = Some(SockAddr::Unix(Vec::new()));
                    return Ok(());
                }
                let host_name = self.net.unix_name(name);
                host::bind(self.fd(), &HostAddr::Unix(host_name.clone()))?;
                if guest.first() != Some(&0) {
                    self.net.bound_path(&host_name, self.ino, guest);
                }
                st.host_name = Some(host_name);
                st.host_bound = true;
                st.local = Some(SockAddr::Unix(guest.clone()));
            }
            SockAddr::Unspec => return Err(Errno(libc::EAFNOSUPPORT)),
        }
        Ok(())
    }

    /// Binds the host socket (once) to an ephemeral port of the pComponent; its address.
    fn host_bound(&self, st: &mut State) -> SysResult<SocketAddrV4> {
        if !st.host_bound {
            host::bind(self.fd(), &HostAddr::V4(self.net.host_bind_addr()))?;
            st.host_bound = true;
        }
        match host::local(self.fd())? {
            Some(HostAddr::V4(a)) => Ok(a),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Binds an `AF_INET` socket that is not bound yet to a free port of the vNode (what a
    /// `listen` or the first `sendto` of an unbound socket does).
    pub fn autobind(&self) -> SysResult<()> {
        if !self.is_inet() || self.state().local.is_some() {
            return Ok(());
        }
        self.bind(&SockAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)), &[])
    }

    /// `listen` by a process with credentials `cred` (what its clients' `SO_PEERCRED` shows).
    pub fn listen(&self, backlog: i32, cred: PeerCred) -> SysResult<()> {
        if !self.is_stream() && self.kind != libc::SOCK_SEQPACKET {
            return Err(Errno::EOPNOTSUPP);
        }
        self.autobind()?;
        host::listen(self.fd(), backlog)?;
        let mut st = self.state();
        st.listening = true;
        if let Some(name) = &st.host_name {
            self.net.creds().listening(name, self.ino, cred);
        }
        Ok(())
    }

    /// Starts or goes on with a `connect` to the virtual address `to` (`name`: the vNode name
    /// of an `AF_UNIX` address, see [`Socket::bind`]) by a process with credentials `cred`.
    /// `Ok(true)`: connected; `Ok(false)`: the host connection is being made, call
    /// [`Socket::finish_connect`] once the socket is writable.
    pub fn connect(&self, to: &SockAddr, name: &[u8], cred: PeerCred) -> SysResult<bool> {
        match to {
            SockAddr::Unspec if !self.is_stream() => {
                host::connect(self.fd(), None)?;
                self.state().peer = None;
                Ok(true)
            }
            SockAddr::Unspec => Err(Errno(libc::EAFNOSUPPORT)),
            SockAddr::Unix(_) => {
                let host_name = self.net.unix_name(name);
                // A connection carries credentials both ways (not a datagram socket's). The
                // client is known before the host connects it, so that the server's accept,
                // which may come first, finds it.
                let creds = (self.kind != libc::SOCK_DGRAM).then(|| self.net.creds());
                if let Some(creds) = creds {
                    creds.connecting(self.ino, cred);
                }
                let r = host::connect(self.fd(), Some(&HostAddr::Unix(host_name.clone())));
                if r.is_err() {
                    if let Some(creds) = creds {
                        creds.forget(self.ino, None);
                    }
                }
                match r {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let mut st = self.state();
                        st.peer = Some(to.clone());
                        st.peer_cred = creds.and_then(|c| c.listener(&host_name));
                        Ok(true)
                    }
                }
            }
            SockAddr::V4(dst) => self.connect_v4(*dst),
        }
    }

    fn connect_v4(&self, dst: SocketAddrV4) -> SysResult<bool> {
        {
            let st = self.state();
            if st.listening {
                return Err(Errno::EINVAL);
            }
            if self.is_stream() && st.peer.is_some() && st.connecting.is_none() {
                return Err(Errno(libc::EISCONN));
            }
            if let Some(c) = st.connecting {
                if c == dst {
                    return Err(Errno(libc::EALREADY));
                }
            }
        }
        let proto = self.proto();
        for attempt in 0..2 {
            let Some(host) = self.net.resolve(proto, dst)? else {
                return Err(Errno(libc::ECONNREFUSED));
            };
            {
                let mut st = self.state();
                if st.local.is_none() {
                    drop(st);
                    if proto == Proto::Udp {
                        self.autobind()?;
                    } else {
                        let mut st = self.state();
                        self.host_bound(&mut st)?;
                    }
                    st = self.state();
                }
                st.connecting = self.is_stream().then_some(dst);
                st.peer = Some(SockAddr::V4(dst));
            }
            match host::connect(self.fd(), Some(&HostAddr::V4(host))) {
                Ok(()) => return self.finish_connect().map(|()| true),
                Err(Errno(libc::EINPROGRESS)) => return Ok(false),
                Err(Errno(libc::ECONNREFUSED)) if attempt == 0 && self.net.forget(proto, dst) => {
                    self.abort_connect();
                    continue;
                }
                Err(e) => {
                    self.abort_connect();
                    return Err(e);
                }
            }
        }
        self.abort_connect();
        Err(Errno(libc::ECONNREFUSED))
    }

    fn abort_connect(&self) {
        let mut st = self.state();
        st.connecting = None;
        st.peer = None;
    }

    /// Ends a connect [`Socket::connect`] left in progress: the host's verdict (`SO_ERROR`),
    /// then the preamble. `EINPROGRESS` again if it is still being made.
    pub fn finish_connect(&self) -> SysResult<()> {
        let Some(dst) = self.state().connecting else { return Ok(()) };
        let err = host::int_option(self.fd(), libc::SOL_SOCKET, libc::SO_ERROR)?;
        if err != 0 {
            self.abort_connect();
            if err == libc::ECONNREFUSED {
                self.net.forget(Proto::Tcp, dst);
            }
            return Err(Errno(err));
        }
        if host::peer(self.fd()).is_err() {
            return Err(Errno(libc::EINPROGRESS));
        }
        let port = match host::local(self.fd())? {
            Some(HostAddr::V4(a)) => a.port(),
            _ => 0,
        };
        let mut st = self.state();
        let me = match (&st.local, st.claim) {
            (Some(SockAddr::V4(a)), Some(c)) if !a.ip().is_unspecified() => SocketAddrV4::new(*a.ip(), c.port),
            (_, Some(c)) => SocketAddrV4::new(self.net.local_ip_for(*dst.ip()), c.port),
            _ => SocketAddrV4::new(self.net.local_ip_for(*dst.ip()), port),
        };
        // A fresh connection's send buffer is empty: the preamble goes in one piece.
        let sent = host::send(self.fd(), &preamble::encode(me), 0, None, &[])?;
        if sent != preamble::LEN {
            return Err(Errno::EIO);
        }
        st.local = Some(SockAddr::V4(me));
        st.connecting = None;
        Ok(())
    }

    /// Takes a connection the host has accepted: its preamble if it is all there (`EAGAIN`
    /// if not yet), checked (`ECONNABORTED` for a bad one), and the new socket.
    pub fn take_accepted(&self, conn: &OwnedFd) -> SysResult<State> {
        let local = self.state().local.clone();
        if self.domain == libc::AF_UNIX {
            // The connection's host peer is the client socket, recorded by its connect.
            let client = crate::fs::hostdir::fstat(conn.as_fd()).ok().and_then(|st| super::peercred::peer_inode(st.ino).ok().flatten());
            let peer_cred = client.and_then(|c| self.net.creds().connector(c));
            return Ok(State { local, peer: Some(SockAddr::Unix(Vec::new())), host_bound: true, peer_cred, ..State::default() });
        }
        let mut b = [0u8; preamble::LEN];
        let got = host::recv(conn.as_raw_fd(), &mut b, libc::MSG_PEEK, 0)?;
        if got.len == 0 {
            return Err(Errno(libc::ECONNABORTED));
        }
        if got.len < preamble::LEN {
            return Err(Errno::EAGAIN);
        }
        let Some(peer) = preamble::decode(&b) else { return Err(Errno(libc::ECONNABORTED)) };
        host::recv(conn.as_raw_fd(), &mut b, 0, 0)?;
        let port = self.state().claim.map_or(0, |c| c.port);
        let ip = if peer.ip().is_loopback() { Ipv4Addr::LOCALHOST } else { self.net.vip() };
        Ok(State {
            local: Some(SockAddr::V4(SocketAddrV4::new(ip, port))),
            peer: Some(SockAddr::V4(peer)),
            host_bound: true,
            ..State::default()
        })
    }

    /// The host address a datagram for the virtual address `to` goes to; `None` if nobody
    /// has it (the datagram is lost, as on a network).
    pub fn target(&self, to: &SockAddr, name: &[u8]) -> SysResult<Option<HostAddr>> {
        match to {
            SockAddr::V4(dst) => {
                self.autobind()?;
                Ok(self.net.resolve(self.proto(), *dst)?.map(HostAddr::V4))
            }
            SockAddr::Unix(_) => Ok(Some(HostAddr::Unix(self.net.unix_name(name)))),
            SockAddr::Unspec => Err(Errno(libc::EAFNOSUPPORT)),
        }
    }

    /// The virtual address of the sender of something received from `from`.
    pub fn source(&self, from: Option<HostAddr>) -> Option<SockAddr> {
        if self.is_stream() {
            return self.state().peer.clone();
        }
        match from? {
            HostAddr::V4(h) => Some(SockAddr::V4(self.net.source_of(self.proto(), h))),
            HostAddr::Unix(name) => Some(SockAddr::Unix(self.net.guest_unix_name(&name))),
        }
    }
}
