//! The network of a vNode (LegoOS §5.2): programs use virtual IPs, the VMM runs their sockets
//! as host sockets of the pComponent and translates the addresses.
//!
//! - A vNode sees its virtual IP ([`Net::vip`]) as its address; 127.0.0.0/8 stays inside it.
//! - Every `AF_INET` socket is bound on the host to an ephemeral port of the pComponent's
//!   address; [`Net::claim`] gives it its virtual port, in the vNode's own port table, and for
//!   the vIP (or `INADDR_ANY`) in the cluster's [`Directory`] too.
//! - A connect to (vIP, port) is resolved through the directory (cached, and looked up again
//!   when the cached host address refuses); 127.0.0.1 and the vNode's own vIP through its port
//!   table. Nothing outside the vIP space ([`VIP_SPACE`]) is reachable (`ENETUNREACH`), so
//!   neither are the host's own addresses and services.
//! - A TCP client tells the server who it is in a [`preamble`] the server's VMM takes off
//!   before `accept` returns, so `accept` and `getpeername` report virtual addresses; a
//!   datagram's source is translated back through the directory.
//! - `AF_UNIX` names are abstract host names scoped by the vNode's name ([`Net::unix_name`]).
//!   A path name is a socket node in the vNode's files (made by `bind`), and its host name
//!   is that node's ([`socket_key`]), so a path unlinked and bound again is a new socket.
//! - Descriptors passed with `SCM_RIGHTS` travel as host tokens ([`Net::send_rights`]).

pub mod addr;
pub mod directory;
pub mod host;
pub mod peercred;
pub mod preamble;
pub mod publish;
pub mod socket;

use lego_proto::sync::LockExt;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use crate::errno::{Errno, SysResult};
pub use directory::{Directory, DirectoryError, LocalDirectory, Proto, VEndpoint};

/// The virtual IP space, 10.0.0.0/8: (network, prefix length).
pub const VIP_SPACE: (Ipv4Addr, u32) = (Ipv4Addr::new(10, 0, 0, 0), 8);

/// The virtual IP of a vNode run on its own (no global manager).
pub const STANDALONE_VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// Ports handed out when a program binds port 0 and the host's choice is taken.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// Whether `ip` lies in [`VIP_SPACE`].
pub fn in_vip_space(ip: Ipv4Addr) -> bool {
    let (net, len) = VIP_SPACE;
    let mask = u32::MAX << (32 - len);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// How a vNode is connected.
#[derive(Clone)]
pub struct NetConfig {
    /// Its virtual IP.
    pub vip: Ipv4Addr,
    /// The pComponent's address, which its sockets are bound to on the host.
    pub host_ip: Ipv4Addr,
    /// Whether addresses outside the vIP space are reachable (`--egress`).
    pub egress: bool,
    /// The table of endpoints of the cluster.
    pub directory: Arc<dyn Directory>,
}

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetConfig").field("vip", &self.vip).field("host_ip", &self.host_ip).field("egress", &self.egress).finish_non_exhaustive()
    }
}

impl NetConfig {
    /// A vNode on its own: [`STANDALONE_VIP`], loopback on the host, a directory of its own.
    pub fn standalone() -> NetConfig {
        NetConfig { vip: STANDALONE_VIP, host_ip: Ipv4Addr::LOCALHOST, egress: false, directory: Arc::new(LocalDirectory::default()) }
    }
}

/// A port of the vNode's port table as a socket holds it; given back by [`Net::release`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Protocol and virtual port.
    pub proto: Proto,
    pub port: u16,
    /// Registered in the directory (bound to the vIP or `INADDR_ANY`, not to 127.0.0.1).
    pub public: bool,
}

#[derive(Clone, Copy)]
struct Binding {
    host: SocketAddrV4,
    public: bool,
}

/// The network state one vNode's processes share.
pub struct Net {
    config: NetConfig,
    /// Prefix of the host abstract names of the vNode's `AF_UNIX` sockets.
    unix_scope: Vec<u8>,
    ports: Mutex<HashMap<(Proto, u16), Binding>>,
    resolved: Mutex<HashMap<VEndpoint, SocketAddrV4>>,
    sources: Mutex<HashMap<(Proto, SocketAddrV4), SocketAddrV4>>,
    /// Who is behind the vNode's `AF_UNIX` sockets, for `SO_PEERCRED`.
    creds: peercred::PeerCreds,
    /// The path each `AF_UNIX` socket of this VMM bound to a socket node, by host name: the
    /// source address of its datagrams.
    bound_paths: Mutex<HashMap<Vec<u8>, BoundPath>>,
}

/// A path an `AF_UNIX` socket bound ([`Net::bound_path`]).
struct BoundPath {
    /// The socket's host inode.
    ino: u64,
    /// The path as the program gave it.
    path: Vec<u8>,
}

/// The vNode name ([`Net::unix_name`] scopes it) of the socket node `st`: what an `AF_UNIX`
/// path that leads to that node stands for. Its device and inode, and its modification time,
/// which tells apart nodes that reuse an inode (a host file system reuses the inode of a node
/// unlinked while its socket is still bound) and which nothing changes but writes, which a
/// socket node takes none of, and `utimensat`.
pub fn socket_key(st: &crate::fs::Stat) -> Vec<u8> {
    format!("={:x}.{:x}.{:x}.{:x}", st.dev, st.ino, st.mtime.sec, st.mtime.nsec).into_bytes()
}

impl Net {
    /// The network of the vNode `name`.
    pub fn new(name: &str, config: NetConfig) -> Arc<Net> {
        let mut unix_scope = b"\0lego/".to_vec();
        unix_scope.extend_from_slice(name.as_bytes());
        unix_scope.push(b'/');
        Arc::new(Net {
            config,
            unix_scope,
            ports: Mutex::default(),
            resolved: Mutex::default(),
            sources: Mutex::default(),
            creds: peercred::PeerCreds::default(),
            bound_paths: Mutex::default(),
        })
    }

    /// Who is behind the vNode's `AF_UNIX` sockets ([`peercred`]).
    pub fn creds(&self) -> &peercred::PeerCreds {
        &self.creds
    }

    /// The vNode's virtual IP.
    pub fn vip(&self) -> Ipv4Addr {
        self.config.vip
    }

    /// The host address a new socket is bound to (port 0: the host picks).
    pub fn host_bind_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.config.host_ip, 0)
    }

    /// The local address a connection to `dst` has inside the vNode.
    pub fn local_ip_for(&self, dst: Ipv4Addr) -> Ipv4Addr {
        if dst.is_loopback() {
            Ipv4Addr::LOCALHOST
        } else {
            self.config.vip
        }
    }

    /// Gives the socket bound on the host at `host` the virtual address `want`: `EADDRNOTAVAIL`
    /// for an address that is not the vNode's, `EADDRINUSE` for a port taken in the vNode or
    /// (for the vIP) in the directory. Port 0 takes a free port.
    pub fn claim(&self, proto: Proto, want: SocketAddrV4, host: SocketAddrV4) -> SysResult<Claim> {
        let ip = *want.ip();
        let public = if ip.is_unspecified() || ip == self.config.vip {
            true
        } else if ip.is_loopback() {
            false
        } else {
            return Err(Errno(libc::EADDRNOTAVAIL));
        };
        let candidates: Box<dyn Iterator<Item = u16>> = if want.port() != 0 {
            Box::new(std::iter::once(want.port()))
        } else {
            Box::new(std::iter::once(host.port()).chain(EPHEMERAL))
        };
        for port in candidates {
            {
                let mut ports = self.ports.lock_unpoisoned();
                if ports.contains_key(&(proto, port)) {
                    continue;
                }
                ports.insert((proto, port), Binding { host, public });
            }
            if !public {
                return Ok(Claim { proto, port, public });
            }
            let ep = VEndpoint { proto, ip: self.config.vip, port };
            match self.config.directory.register(ep, host) {
                Ok(()) => return Ok(Claim { proto, port, public }),
                Err(e) => {
                    self.ports.lock_unpoisoned().remove(&(proto, port));
                    match e {
                        DirectoryError::Taken => continue,
                        DirectoryError::Unavailable(why) => {
                            tracing::warn!("cannot register {ep:?}: {why}");
                            return Err(Errno(libc::EADDRNOTAVAIL));
                        }
                    }
                }
            }
        }
        Err(Errno(libc::EADDRINUSE))
    }

    /// Gives back a port a socket held (it is closed).
    pub fn release(&self, c: Claim) {
        self.ports.lock_unpoisoned().remove(&(c.proto, c.port));
        if c.public {
            self.config.directory.unregister(VEndpoint { proto: c.proto, ip: self.config.vip, port: c.port });
        }
    }

    /// The host address serving the virtual address `dst`, `None` if nobody does;
    /// `ENETUNREACH` outside the vIP space (unless the vNode has egress, in which case the
    /// address is used as it is).
    pub fn resolve(&self, proto: Proto, dst: SocketAddrV4) -> SysResult<Option<SocketAddrV4>> {
        let ip = *dst.ip();
        let local = |public_only: bool| {
            self.ports.lock_unpoisoned().get(&(proto, dst.port())).filter(|b| b.public || !public_only).map(|b| b.host)
        };
        if ip.is_loopback() {
            return Ok(local(false));
        }
        if ip == self.config.vip || ip.is_unspecified() {
            return Ok(local(true));
        }
        if !in_vip_space(ip) {
            return if self.config.egress && !ip.is_multicast() && !ip.is_broadcast() {
                Ok(Some(dst))
            } else {
                Err(Errno(libc::ENETUNREACH))
            };
        }
        let ep = VEndpoint { proto, ip, port: dst.port() };
        if let Some(h) = self.resolved.lock_unpoisoned().get(&ep) {
            return Ok(Some(*h));
        }
        match self.config.directory.resolve(ep) {
            Ok(Some(h)) => {
                self.resolved.lock_unpoisoned().insert(ep, h);
                Ok(Some(h))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!("cannot resolve {ep:?}: {e}");
                Err(Errno(libc::ENETUNREACH))
            }
        }
    }

    /// Drops the cached resolution of `dst` (its host address refused).
    pub fn forget(&self, proto: Proto, dst: SocketAddrV4) -> bool {
        self.resolved.lock_unpoisoned().remove(&VEndpoint { proto, ip: *dst.ip(), port: dst.port() }).is_some()
    }

    /// The virtual address of the host socket at `host` that sent a datagram; 0.0.0.0:0 for one
    /// no vNode owns (the host's addresses are never shown).
    pub fn source_of(&self, proto: Proto, host: SocketAddrV4) -> SocketAddrV4 {
        let own = self.ports.lock_unpoisoned().iter().find(|(k, b)| k.0 == proto && b.host == host).map(|(k, b)| (k.1, b.public));
        if let Some((port, public)) = own {
            let ip = if public { self.config.vip } else { Ipv4Addr::LOCALHOST };
            return SocketAddrV4::new(ip, port);
        }
        if let Some(v) = self.sources.lock_unpoisoned().get(&(proto, host)) {
            return *v;
        }
        let found = match self.config.directory.reverse(proto, host) {
            Ok(Some(ep)) => SocketAddrV4::new(ep.ip, ep.port),
            Ok(None) => return SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            Err(e) => {
                tracing::warn!("cannot find the sender {host}: {e}");
                return SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
            }
        };
        self.sources.lock_unpoisoned().insert((proto, host), found);
        found
    }

    /// The host abstract name of the vNode's `AF_UNIX` name `name` (an absolute vNode path or
    /// an abstract name starting with NUL), hashed if it would not fit in `sun_path`.
    pub fn unix_name(&self, name: &[u8]) -> Vec<u8> {
        let mut out = self.unix_scope.clone();
        out.extend_from_slice(name);
        if out.len() > addr::SUN_PATH_LEN {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            name.hash(&mut h);
            out.truncate(self.unix_scope.len());
            out.extend_from_slice(format!("#{:016x}", h.finish()).as_bytes());
            out.truncate(addr::SUN_PATH_LEN);
        }
        out
    }

    /// Records that socket `ino` of this VMM bound the socket node of host name `host`
    /// through `path` (as the program gave it).
    pub fn bound_path(&self, host: &[u8], ino: u64, path: &[u8]) {
        self.bound_paths.lock_unpoisoned().insert(host.to_vec(), BoundPath { ino, path: path.to_vec() });
    }

    /// Forgets socket `ino`'s name `host` (closed).
    pub fn unbound(&self, host: &[u8], ino: u64) {
        let mut paths = self.bound_paths.lock_unpoisoned();
        if paths.get(host).is_some_and(|b| b.ino == ino) {
            paths.remove(host);
        }
    }

    /// The vNode name of the host abstract name `host` ([`Net::unix_name`]'s inverse): the
    /// path a socket node was bound through, or the abstract name; empty for a name outside
    /// the vNode, or a node a socket of another VMM bound.
    pub fn guest_unix_name(&self, host: &[u8]) -> Vec<u8> {
        if let Some(b) = self.bound_paths.lock_unpoisoned().get(host) {
            return b.path.clone();
        }
        host.strip_prefix(self.unix_scope.as_slice()).filter(|n| n.first() == Some(&0)).map(<[u8]>::to_vec).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(vip: [u8; 4], dir: Arc<dyn Directory>) -> Arc<Net> {
        Net::new("t", NetConfig { vip: vip.into(), host_ip: Ipv4Addr::LOCALHOST, egress: false, directory: dir })
    }

    #[test]
    fn claims_resolution_and_isolation() {
        let dir: Arc<dyn Directory> = Arc::new(LocalDirectory::default());
        let (a, b) = (net([10, 77, 0, 1], dir.clone()), net([10, 77, 0, 2], dir));
        let host = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 41000);
        let any = |port| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        let c = a.claim(Proto::Tcp, any(80), host).unwrap();
        assert_eq!(a.claim(Proto::Tcp, any(80), host), Err(Errno(libc::EADDRINUSE)));
        assert_eq!(b.claim(Proto::Tcp, SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 81), host), Err(Errno(libc::EADDRNOTAVAIL)));
        let vip_a = |port| SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), port);
        assert_eq!(b.resolve(Proto::Tcp, vip_a(80)), Ok(Some(host)));
        assert_eq!(b.resolve(Proto::Tcp, vip_a(81)), Ok(None));
        assert_eq!(b.resolve(Proto::Tcp, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80)), Ok(None), "127.0.0.1 stays in the vNode");
        assert_eq!(a.resolve(Proto::Tcp, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80)), Ok(Some(host)));
        assert_eq!(b.resolve(Proto::Tcp, SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 1), 80)), Err(Errno(libc::ENETUNREACH)));
        assert_eq!(b.source_of(Proto::Tcp, host), vip_a(80));
        a.release(c);
        assert_eq!(a.resolve(Proto::Tcp, vip_a(80)), Ok(None));
        let lo = a.claim(Proto::Udp, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), SocketAddrV4::new(Ipv4Addr::LOCALHOST, 42000)).unwrap();
        assert_eq!((lo.port, lo.public), (42000, false));
        assert_eq!(b.resolve(Proto::Udp, SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 42000)), Ok(None), "a loopback bind is not public");
    }

    #[test]
    fn vip_space() {
        assert!(in_vip_space(Ipv4Addr::new(10, 1, 2, 3)));
        assert!(!in_vip_space(Ipv4Addr::new(11, 0, 0, 1)));
        assert!(!in_vip_space(Ipv4Addr::LOCALHOST));
    }
}
