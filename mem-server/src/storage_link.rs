//! The mem-server's connection to its storage server, as the buffer cache's [`Backing`].
//!
//! Storage is stateless, so a broken connection is simply dropped and the next request opens a
//! new one: a restarted storage server is used again without anyone noticing but the request
//! that was in flight (which answers `EIO`).

use std::time::Duration;

use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::storage::{self, StorageReply, StorageRequest};
use lego_proto::transport::TcpTransport;

use crate::buffer_cache::Backing;

/// How long a storage request may take before the storage server counts as failed.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A lazily opened connection to one storage server.
pub(crate) struct StorageLink {
    addr: Option<String>,
    me: Hello,
    conn: Option<TcpTransport>,
}

impl StorageLink {
    /// A link to `addr` (`None`: no storage server configured) for a mem-server in `cluster`.
    pub(crate) fn new(addr: Option<String>, cluster: u64) -> StorageLink {
        StorageLink { addr, me: Hello::new(ComponentKind::Memory, cluster), conn: None }
    }
}

impl Backing for StorageLink {
    fn call(&mut self, req: &StorageRequest) -> Result<StorageReply, String> {
        let addr = self.addr.as_deref().ok_or("this mem-server has no storage server (--storage-server)")?;
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(TcpTransport::connect(addr, self.me, TIMEOUT).map_err(|e| e.to_string())?),
        };
        let result = storage::call(conn, req);
        if result.is_err() {
            self.conn = None;
        }
        result.map_err(|e| e.to_string())
    }
}
