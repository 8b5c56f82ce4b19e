//! The cluster's endpoint directory as a vNode's VMM sees it: the global manager's endpoint
//! table ([`GlobalRequest::RegisterEndpoint`] and the rest), over one connection kept open.

use lego_proto::sync::LockExt;
use std::net::SocketAddrV4;
use std::sync::Mutex;
use std::time::Duration;

use lego_proto::codec::{decode, encode};
use lego_proto::global::{Endpoint, EndpointOwner, GlobalReply, GlobalRequest, NetProto};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::transport::{TcpTransport, Transport};
use lego_vmm::net::{Directory, DirectoryError, Proto, VEndpoint};

/// How long a connection to the manager may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint table of the global manager at `addr`, for the vNode `vnode`.
pub struct GlobalDirectory {
    addr: String,
    cluster: u64,
    vnode: String,
    /// This VMM, as its process reports name it.
    owner: EndpointOwner,
    conn: Mutex<Option<TcpTransport>>,
}

impl GlobalDirectory {
    /// The directory of the manager at `addr` (connected on first use), for the VMM of this
    /// process running on `pcomp`.
    pub fn new(addr: String, cluster: u64, vnode: String, pcomp: String) -> GlobalDirectory {
        let owner = EndpointOwner { pcomp, pid: std::process::id() };
        GlobalDirectory { addr, cluster, vnode, owner, conn: Mutex::new(None) }
    }

    /// One request, on the kept connection (made again once if it broke).
    fn ask(&self, req: &GlobalRequest) -> Result<GlobalReply, DirectoryError> {
        let mut conn = self.conn.lock_unpoisoned();
        let body = encode(req);
        let mut last = String::new();
        for _ in 0..2 {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match TcpTransport::connect(&self.addr, Hello::new(ComponentKind::Client, self.cluster), CONNECT_TIMEOUT) {
                    Ok(c) => conn.insert(c),
                    Err(e) => return Err(DirectoryError::Unavailable(format!("global manager {}: {e}", self.addr))),
                },
            };
            match c.call(0, &body).map_err(|e| e.to_string()).and_then(|r| decode::<GlobalReply>(&r).map_err(|e| e.to_string())) {
                Ok(GlobalReply::Failed(e)) => return Err(DirectoryError::Unavailable(e)),
                Ok(r) => return Ok(r),
                Err(e) => {
                    last = e;
                    *conn = None;
                }
            }
        }
        Err(DirectoryError::Unavailable(format!("global manager {}: {last}", self.addr)))
    }
}

fn proto(p: Proto) -> NetProto {
    match p {
        Proto::Tcp => NetProto::Tcp,
        Proto::Udp => NetProto::Udp,
    }
}

fn endpoint(ep: VEndpoint) -> Endpoint {
    Endpoint { proto: proto(ep.proto), vip: ep.ip.octets(), port: ep.port }
}

fn unexpected(r: GlobalReply) -> DirectoryError {
    DirectoryError::Unavailable(format!("unexpected answer {r:?}"))
}

impl Directory for GlobalDirectory {
    fn register(&self, ep: VEndpoint, host: SocketAddrV4) -> Result<(), DirectoryError> {
        let req = GlobalRequest::RegisterEndpoint {
            endpoint: endpoint(ep),
            host: host.to_string(),
            vnode: self.vnode.clone(),
            owner: self.owner.clone(),
        };
        match self.ask(&req)? {
            GlobalReply::Ok => Ok(()),
            GlobalReply::EndpointTaken => Err(DirectoryError::Taken),
            r => Err(unexpected(r)),
        }
    }

    fn unregister(&self, ep: VEndpoint) {
        if let Err(e) = self.ask(&GlobalRequest::UnregisterEndpoint { endpoint: endpoint(ep) }) {
            tracing::warn!("cannot unregister {ep:?}: {e}");
        }
    }

    fn resolve(&self, ep: VEndpoint) -> Result<Option<SocketAddrV4>, DirectoryError> {
        match self.ask(&GlobalRequest::ResolveEndpoint { endpoint: endpoint(ep) })? {
            GlobalReply::EndpointAt(h) => Ok(h.and_then(|h| h.parse().ok())),
            r => Err(unexpected(r)),
        }
    }

    fn reverse(&self, p: Proto, host: SocketAddrV4) -> Result<Option<VEndpoint>, DirectoryError> {
        match self.ask(&GlobalRequest::ReverseEndpoint { proto: proto(p), host: host.to_string() })? {
            GlobalReply::EndpointOf(e) => Ok(e.map(|e| VEndpoint { proto: p, ip: e.vip.into(), port: e.port })),
            r => Err(unexpected(r)),
        }
    }
}
