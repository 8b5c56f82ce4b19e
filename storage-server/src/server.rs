//! The network side: accepts connections, checks their handshake and serves their frames. Each
//! control frame carries one [`StorageRequest`]; the store is behind one lock, and a request runs
//! under `block_in_place` since it does file I/O (and, for `Fsync`, waits for the disk).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lego_proto::aio::{accept_handshake, push_reply, serve, FrameHandler};
use lego_proto::error::ProtoError;
use lego_proto::frame::{Header, Op, Status};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{decode, encode};
use lego_proto::storage::{errno, StorageReply, StorageRequest};
use tokio::net::{TcpListener, TcpStream};

use crate::lock;
use crate::store::Store;

/// Kinds of peers a storage server talks to.
const ACCEPTS: [ComponentKind; 3] = [ComponentKind::Processor, ComponentKind::Memory, ComponentKind::Client];

/// How long a new connection may take to introduce itself.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by every connection of one server.
pub(crate) struct Shared {
    me: Hello,
    store: Mutex<Store>,
}

impl Shared {
    pub(crate) fn new(store: Store, cluster: u64) -> Shared {
        Shared { me: Hello::new(ComponentKind::Storage, cluster), store: Mutex::new(store) }
    }

    /// Makes every change durable (at shutdown).
    pub(crate) fn sync(&self) {
        if let Err(e) = lock(&self.store).sync() {
            tracing::error!(errno = e, "making the index durable at shutdown");
        }
    }

    fn control(&self, peer: SocketAddr, body: &[u8]) -> StorageReply {
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
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
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

/// Accepts connections until `stop` completes.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(stream, peer, shared.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "TCP_NODELAY");
    }
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_handshake(&mut stream, shared.me, &ACCEPTS)).await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "handshake refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs());
            return;
        }
    };
    tracing::debug!(%peer, kind = %hello.kind, "connected");
    let mut conn = Conn { shared, peer };
    match serve(&mut stream, &mut conn).await {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        // A client that goes away with requests in flight resets the connection: not an error.
        Err(ProtoError::Io { source, .. })
            if matches!(source.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) =>
        {
            tracing::debug!(%peer, "connection reset by the client")
        }
        Err(e) => tracing::warn!(%peer, error = %e, "closing the connection"),
    }
}
