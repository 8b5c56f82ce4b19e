//! How a home reaches the other mem-servers: blocking [`TcpTransport`] connections, opened
//! lazily and kept in a pool per server, so that concurrent home calls each get a connection of
//! their own and none is opened twice in a row.

use lego_proto::sync::LockExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lego_proto::codec::{decode, encode};
use lego_proto::frame::Status;
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{OwnerCall, OwnerOutcome, Reply, Request, ServerStat};
use lego_proto::transport::{TcpTransport, Transport};
use lego_proto::ProtoError;

use crate::home::OwnerFailure;
use crate::owner::OwnerError;

/// How long a peer may take to answer one call.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections to the other mem-servers of the cluster.
pub(crate) struct Peers {
    me: Hello,
    idle: Mutex<HashMap<String, Vec<TcpTransport>>>,
}

impl Peers {
    /// No connections yet; they will introduce themselves as mem-servers of `cluster`.
    pub(crate) fn new(cluster: u64) -> Peers {
        Peers { me: Hello::new(ComponentKind::Memory, cluster), idle: Mutex::new(HashMap::new()) }
    }

    /// One control call to `addr`, on an idle connection or a new one. A connection that failed
    /// is dropped; one that got an answer (even a refusal) goes back to the pool.
    fn request(&self, addr: &str, proc: u64, req: &Request) -> Result<Reply, ProtoError> {
        let pooled = self.idle.lock_unpoisoned().get_mut(addr).and_then(Vec::pop);
        let mut t = match pooled {
            Some(t) => t,
            None => TcpTransport::connect(addr, self.me, PEER_TIMEOUT)?,
        };
        let answer = t.call(proc, &encode(req));
        if matches!(answer, Ok(_) | Err(ProtoError::Remote { .. })) {
            self.idle.lock_unpoisoned().entry(addr.to_string()).or_default().push(t);
        }
        decode(&answer?)
    }

    /// Hands `call` to the owner at `addr`.
    pub(crate) fn owner_call(&self, addr: &str, proc: u64, call: OwnerCall) -> Result<OwnerOutcome, OwnerFailure> {
        match self.request(addr, proc, &Request::Owner(call)) {
            Ok(Reply::Owner(Ok(outcome))) => Ok(outcome),
            Ok(Reply::Owner(Err(errno))) if errno == libc::ENOMEM => Err(OwnerError::NoSpace.into()),
            Ok(Reply::Owner(Err(_))) => Err(OwnerError::Invalid.into()),
            Ok(Reply::Failed(why)) => Err(OwnerFailure::Unreachable(why)),
            Ok(other) => Err(OwnerFailure::Unreachable(format!("unexpected reply {other:?}"))),
            Err(ProtoError::Remote { status: Status::NotOwner, .. }) => Err(OwnerError::NotOwner.into()),
            Err(e) => Err(OwnerFailure::Unreachable(e.to_string())),
        }
    }

    /// The capacity and load of the server at `addr`.
    pub(crate) fn stat(&self, addr: &str) -> Result<ServerStat, OwnerFailure> {
        match self.request(addr, 0, &Request::Stat) {
            Ok(Reply::Stat(s)) => Ok(s),
            Ok(other) => Err(OwnerFailure::Unreachable(format!("unexpected reply {other:?}"))),
            Err(e) => Err(OwnerFailure::Unreachable(e.to_string())),
        }
    }
}
