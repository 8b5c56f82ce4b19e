//! The network side: accepts connections, checks their handshake and serves their frames. Each
//! control frame carries one [`StorageRequest`]; requests of every connection run concurrently
//! (the store locks per vNode and per inode), each under `block_in_place` since it does file I/O
//! (and, for `Fsync`, waits for the disk).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lego_proto::aio::{handle_control_only, FrameHandler};
use lego_proto::codec::{decode, encode};
use lego_proto::frame::Header;
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::storage::{errno, StorageOp, StorageReply, StorageRequest};

use crate::store::Store;

/// Kinds of peers a storage server talks to.
/// The global manager tells it about vNodes ([`StorageOp::Mount`]).
pub(crate) const ACCEPTS: [ComponentKind; 4] =
    [ComponentKind::Processor, ComponentKind::Memory, ComponentKind::Global, ComponentKind::Client];

/// State shared by every connection of one server.
pub(crate) struct Shared {
    me: Hello,
    store: Store,
    traffic: Traffic,
}

/// Names of the storage operations, for the metrics' `op` label, in the order of [`op_index`].
pub(crate) const OPS: [&str; 20] = [
    "stat", "read", "write", "create", "truncate", "unlink", "rename", "mkdir", "rmdir", "readdir", "fsync", "syncfs", "statfs", "setattr",
    "resolve", "symlink", "readlink", "mount", "link", "mkfifo",
];

fn op_index(op: &StorageOp) -> usize {
    match op {
        StorageOp::Stat { .. } => 0,
        StorageOp::Read { .. } => 1,
        StorageOp::Write { .. } => 2,
        StorageOp::Create { .. } => 3,
        StorageOp::Truncate { .. } => 4,
        StorageOp::Unlink { .. } => 5,
        StorageOp::Rename { .. } => 6,
        StorageOp::Mkdir { .. } => 7,
        StorageOp::Rmdir { .. } => 8,
        StorageOp::Readdir { .. } => 9,
        StorageOp::Fsync { .. } => 10,
        StorageOp::SyncFs => 11,
        StorageOp::StatFs => 12,
        StorageOp::SetAttr { .. } => 13,
        StorageOp::Resolve { .. } => 14,
        StorageOp::Symlink { .. } => 15,
        StorageOp::Readlink { .. } => 16,
        StorageOp::Mount { .. } => 17,
        StorageOp::Link { .. } => 18,
        StorageOp::Mknod { .. } => 19,
    }
}

/// Requests served since start: the `requests` of the heartbeat load and the server's metrics.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Requests of each operation in [`OPS`].
    requests: [AtomicU64; OPS.len()],
    /// Those of them answered with an errno.
    errors: [AtomicU64; OPS.len()],
    /// Requests that could not be decoded.
    undecodable: AtomicU64,
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
}

/// What [`Traffic`] has counted.
pub(crate) struct TrafficFigures {
    pub(crate) requests: [u64; OPS.len()],
    pub(crate) errors: [u64; OPS.len()],
    pub(crate) undecodable: u64,
    pub(crate) read_bytes: u64,
    pub(crate) written_bytes: u64,
}

impl Traffic {
    fn count(&self, op: usize, reply: &StorageReply, written: usize) {
        let add = |n: &AtomicU64, v: usize| n.fetch_add(v as u64, Ordering::Relaxed);
        add(&self.requests[op], 1);
        match reply {
            StorageReply::Error(_) => add(&self.errors[op], 1),
            StorageReply::Data(d) => add(&self.read_bytes, d.len()),
            _ => add(&self.written_bytes, written),
        };
    }

    pub(crate) fn figures(&self) -> TrafficFigures {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        TrafficFigures {
            requests: self.requests.each_ref().map(get),
            errors: self.errors.each_ref().map(get),
            undecodable: get(&self.undecodable),
            read_bytes: get(&self.read_bytes),
            written_bytes: get(&self.written_bytes),
        }
    }
}

impl Shared {
    pub(crate) fn new(store: Store, cluster: u64) -> Shared {
        Shared { me: Hello::new(ComponentKind::Storage, cluster), store, traffic: Traffic::default() }
    }

    /// How this server introduces itself.
    pub(crate) fn me(&self) -> Hello {
        self.me
    }

    /// Makes every change durable in the index (at shutdown).
    pub(crate) fn sync(&self) {
        if let Err(e) = self.store.checkpoint() {
            tracing::error!(errno = e, "making the index durable at shutdown");
        }
    }

    /// Requests served since start, and their figures.
    pub(crate) fn traffic(&self) -> TrafficFigures {
        self.traffic.figures()
    }

    /// Requests served since start.
    pub(crate) fn requests(&self) -> u64 {
        let t = self.traffic();
        t.requests.iter().sum::<u64>() + t.undecodable
    }

    fn control(&self, peer: SocketAddr, body: &[u8]) -> StorageReply {
        match decode::<StorageRequest>(body) {
            Ok(req) => {
                let op = op_index(&req.op);
                let written = match &req.op {
                    StorageOp::Write { data, .. } => data.len(),
                    _ => 0,
                };
                let reply = tokio::task::block_in_place(|| self.store.handle(req));
                self.traffic.count(op, &reply, written);
                reply
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "undecodable storage request");
                self.traffic.undecodable.fetch_add(1, Ordering::Relaxed);
                StorageReply::Error(errno::EINVAL)
            }
        }
    }
}

/// The frame handler of one connection.
pub(crate) struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl Conn {
    /// A handler for a new connection from `peer` to the server sharing `shared`.
    pub(crate) fn new(shared: Arc<Shared>, peer: SocketAddr) -> Conn {
        Conn { shared, peer }
    }
}

impl FrameHandler for Conn {
    fn handle(&mut self, req: &Header, payload: &[u8], out: &mut Vec<u8>) {
        // A storage server has no pages. Replies are bounded well below the frame limit
        // (MAX_IO bytes of data, or MAX_DIRENTS names of at most MAX_NAME bytes).
        handle_control_only(req, payload, out, |body| encode(&self.shared.control(self.peer, body)));
    }
}
