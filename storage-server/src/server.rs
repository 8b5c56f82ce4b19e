//! The network side: accepts connections, checks their handshake and serves their frames. Each
//! control frame carries one [`StorageRequest`]; the store is behind one lock, and a request runs
//! under `block_in_place` since it does file I/O (and, for `Fsync`, waits for the disk).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lego_proto::aio::{push_reply, FrameHandler};
use lego_proto::frame::{Header, Op, Status};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{decode, encode};
use lego_proto::storage::{errno, StorageReply, StorageRequest};

use crate::lock;
use crate::store::Store;

/// Kinds of peers a storage server talks to.
pub(crate) const ACCEPTS: [ComponentKind; 3] = [ComponentKind::Processor, ComponentKind::Memory, ComponentKind::Client];

/// State shared by every connection of one server.
pub(crate) struct Shared {
    me: Hello,
    store: Mutex<Store>,
    /// Requests served since start.
    requests: AtomicU64,
}

impl Shared {
    pub(crate) fn new(store: Store, cluster: u64) -> Shared {
        Shared { me: Hello::new(ComponentKind::Storage, cluster), store: Mutex::new(store), requests: AtomicU64::new(0) }
    }

    /// How this server introduces itself.
    pub(crate) fn me(&self) -> Hello {
        self.me
    }

    /// Makes every change durable (at shutdown).
    pub(crate) fn sync(&self) {
        if let Err(e) = lock(&self.store).sync() {
            tracing::error!(errno = e, "making the index durable at shutdown");
        }
    }

    /// Requests served since start.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn control(&self, peer: SocketAddr, body: &[u8]) -> StorageReply {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match decode::<StorageRequest>(body) {
            Ok(req) => tokio::task::block_in_place(|| lock(&self.store).handle(req)),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "undecodable storage request");
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
        match req.op {
            // A storage server has no pages.
            Op::Fetch | Op::Flush | Op::FlushFetch => push_reply(out, &req.reply(Status::BadRequest), &[]),
            Op::Control => {
                // Replies are bounded well below the frame limit (MAX_IO bytes of data, or
                // MAX_DIRENTS names of at most MAX_NAME bytes).
                let body = encode(&self.shared.control(self.peer, payload));
                let mut h = req.reply(Status::Ok);
                h.len = body.len() as u32;
                push_reply(out, &h, &body);
            }
        }
    }
}
