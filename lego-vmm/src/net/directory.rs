//! Where the listening endpoints of vNodes are: the table that maps a virtual endpoint (vIP,
//! port, protocol) to the host address of the socket serving it (LegoOS §5.2).
//!
//! The global manager keeps the table of a cluster (the `lego` binary implements [`Directory`]
//! over it); [`LocalDirectory`] keeps one in the VMM process, for a vNode run on its own.

use lego_proto::sync::LockExt;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;

/// The transport protocol of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (`SOCK_STREAM`).
    Tcp,
    /// UDP (`SOCK_DGRAM`).
    Udp,
}

/// A virtual endpoint: what a program in a vNode binds and connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VEndpoint {
    /// Its protocol.
    pub proto: Proto,
    /// The vNode's virtual IP.
    pub ip: Ipv4Addr,
    /// The port the program chose.
    pub port: u16,
}

/// Why the directory could not do what was asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DirectoryError {
    /// Another socket has the endpoint.
    #[error("the endpoint is taken")]
    Taken,
    /// The directory (the global manager) cannot be reached or refused the request.
    #[error("endpoint directory: {0}")]
    Unavailable(String),
}

/// The table of endpoints, shared by the vNodes of a cluster.
pub trait Directory: Send + Sync {
    /// Records that `ep` is served by the host socket at `host`; [`DirectoryError::Taken`] if
    /// another socket has it.
    fn register(&self, ep: VEndpoint, host: SocketAddrV4) -> Result<(), DirectoryError>;
    /// Forgets `ep` (its socket is closed). Best effort.
    fn unregister(&self, ep: VEndpoint);
    /// The host address serving `ep`, if any.
    fn resolve(&self, ep: VEndpoint) -> Result<Option<SocketAddrV4>, DirectoryError>;
    /// The endpoint the host socket at `host` serves, if it is one (the source of a datagram).
    fn reverse(&self, proto: Proto, host: SocketAddrV4) -> Result<Option<VEndpoint>, DirectoryError>;
}

/// A directory held in this process: vNodes see each other only if they run in it.
#[derive(Default)]
pub struct LocalDirectory {
    table: Mutex<HashMap<VEndpoint, SocketAddrV4>>,
}

impl LocalDirectory {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<VEndpoint, SocketAddrV4>> {
        self.table.lock_unpoisoned()
    }
}

impl Directory for LocalDirectory {
    fn register(&self, ep: VEndpoint, host: SocketAddrV4) -> Result<(), DirectoryError> {
        let mut t = self.table();
        if t.contains_key(&ep) {
            return Err(DirectoryError::Taken);
        }
        t.insert(ep, host);
        Ok(())
    }

    fn unregister(&self, ep: VEndpoint) {
        self.table().remove(&ep);
    }

    fn resolve(&self, ep: VEndpoint) -> Result<Option<SocketAddrV4>, DirectoryError> {
        Ok(self.table().get(&ep).copied())
    }

    fn reverse(&self, proto: Proto, host: SocketAddrV4) -> Result<Option<VEndpoint>, DirectoryError> {
        Ok(self.table().iter().find(|(ep, h)| ep.proto == proto && **h == host).map(|(ep, _)| *ep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_resolve_reverse_unregister() {
        let d = LocalDirectory::default();
        let ep = VEndpoint { proto: Proto::Tcp, ip: Ipv4Addr::new(10, 77, 0, 1), port: 80 };
        let host = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        d.register(ep, host).unwrap();
        assert_eq!(d.register(ep, host), Err(DirectoryError::Taken));
        assert_eq!(d.resolve(ep), Ok(Some(host)));
        assert_eq!(d.resolve(VEndpoint { proto: Proto::Udp, ..ep }), Ok(None));
        assert_eq!(d.reverse(Proto::Tcp, host), Ok(Some(ep)));
        d.unregister(ep);
        assert_eq!(d.resolve(ep), Ok(None));
    }
}
