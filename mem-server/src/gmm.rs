//! The home's link to the global memory manager (GMM, LegoOS §4.6), which chooses the owner of
//! each new vRegion from its cluster-wide view. Without a global manager, or while it cannot be
//! reached, the home chooses itself from the statistics of the process's servers
//! ([`crate::placement::choose_owner`]): a manager that is down never stops allocation.

use lego_proto::sync::LockExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lego_proto::codec::{decode, encode};
use lego_proto::global::{GlobalReply, GlobalRequest};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::transport::{TcpTransport, Transport};

/// How long a request to the manager may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// After a failure, how long the home decides alone before asking again.
const BACKOFF: Duration = Duration::from_secs(10);

/// A connection to the global manager, made when first needed.
pub(crate) struct Gmm {
    addr: String,
    hello: Hello,
    state: Mutex<Link>,
}

#[derive(Default)]
struct Link {
    conn: Option<TcpTransport>,
    failed_at: Option<Instant>,
}

impl Gmm {
    /// The manager at `addr`, in `cluster`.
    pub(crate) fn new(addr: String, cluster: u64) -> Gmm {
        Gmm { addr, hello: Hello::new(ComponentKind::Memory, cluster), state: Mutex::new(Link::default()) }
    }

    /// The GMM's owner for a new vRegion among `among`: `None` if it has no candidate, cannot be
    /// reached, or failed within the last [`BACKOFF`].
    pub(crate) fn choose_owner(&self, among: &[String], vregion_size: u64) -> Option<String> {
        let mut link = self.state.lock_unpoisoned();
        if link.failed_at.is_some_and(|t| t.elapsed() < BACKOFF) {
            return None;
        }
        let req = GlobalRequest::ChooseOwner { among: among.to_vec(), vregion_size };
        let answer = (|| {
            let conn = match &mut link.conn {
                Some(c) => c,
                None => link.conn.insert(TcpTransport::connect(&self.addr, self.hello, TIMEOUT)?),
            };
            decode::<GlobalReply>(&conn.call(0, &encode(&req))?)
        })();
        match answer {
            Ok(GlobalReply::Owner(owner)) => {
                link.failed_at = None;
                owner
            }
            other => {
                tracing::warn!(global = %self.addr, answer = ?other, "the GMM did not choose a vRegion owner; the home chooses for {BACKOFF:?}");
                *link = Link { conn: None, failed_at: Some(Instant::now()) };
                None
            }
        }
    }
}
