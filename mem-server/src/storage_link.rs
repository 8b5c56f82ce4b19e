//! The mem-server's connection to its storage server, as the buffer cache's [`Backing`].
//!
//! Storage is stateless, so a broken connection is dropped and the next request opens a new one.
//! A request that fails on a connection opened earlier (the storage server may have restarted
//! since) is sent once more on a new connection if sending it twice is harmless (reads, stats,
//! writes at an offset, truncates, fsyncs, syncs, statfs, readdirs); any other answers `EIO`. Each new connection
//! starts a new *generation*: the buffer cache compares generations to learn that write-backs
//! made before an fsync may not have reached the disk of the server that answers the fsync.

use std::time::Duration;

use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::storage::{self, StorageOp, StorageReply, StorageRequest};
use lego_proto::transport::TcpTransport;

use crate::buffer_cache::{Backing, StorageUnreachable};

/// How long a storage request may take before the storage server counts as failed.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A lazily opened connection to one storage server.
pub(crate) struct StorageLink {
    addr: Option<String>,
    me: Hello,
    conn: Option<TcpTransport>,
    generation: u64,
}

impl StorageLink {
    /// A link to `addr` (`None`: no storage server configured) for a mem-server in `cluster`.
    pub(crate) fn new(addr: Option<String>, cluster: u64) -> StorageLink {
        StorageLink { addr, me: Hello::new(ComponentKind::Memory, cluster), conn: None, generation: 0 }
    }
}

impl Backing for StorageLink {
    fn call(&mut self, req: &StorageRequest) -> Result<StorageReply, StorageUnreachable> {
        let addr = self.addr.clone().ok_or(StorageUnreachable::NotConfigured)?;
        let fresh = self.conn.is_none();
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = TcpTransport::connect(&addr, self.me, TIMEOUT)?;
                self.generation += 1;
                self.conn.insert(c)
            }
        };
        match storage::call(conn, req) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.conn = None;
                if fresh || !idempotent(&req.op) {
                    return Err(e.into());
                }
                tracing::info!(storage = %addr, "storage connection lost ({e}); retrying on a new one");
                self.call(req)
            }
        }
    }

    fn generation(&self) -> u64 {
        self.generation
    }
}

/// Whether sending `op` twice has the effect of sending it once.
fn idempotent(op: &StorageOp) -> bool {
    matches!(
        op,
        StorageOp::Stat { .. }
            | StorageOp::Read { .. }
            | StorageOp::Write { .. }
            | StorageOp::Truncate { .. }
            | StorageOp::Fsync { .. }
            | StorageOp::SyncFs
            | StorageOp::StatFs
            | StorageOp::Readdir { .. }
            | StorageOp::SetAttr { .. }
            | StorageOp::Resolve { .. }
            | StorageOp::Readlink { .. }
    )
}
