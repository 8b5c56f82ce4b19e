//! The server side of a connection, on tokio: the handshake, then a loop that reads request
//! frames, hands each to a [`FrameHandler`] and writes the replies.
//!
//! Replies to all the requests that arrived together are written with one `write_all`, so a
//! client that pipelines requests gets batched replies without any extra machinery. A malformed
//! or oversized frame closes that connection (logged with the peer address); other connections
//! are not affected.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::{nonce, Secret, CLIENT_LEN};
use crate::error::ProtoError;
use crate::frame::{Header, Op, Status, HEADER_LEN, PAGE_SIZE};
use crate::handshake::{ComponentKind, Hello, HELLO_LEN};

/// Serves the requests of one connection.
pub trait FrameHandler: Send {
    /// Handles one request with its payload, appending exactly one reply frame (header and
    /// payload) to `out`.
    fn handle(&mut self, req: &Header, payload: &[u8], out: &mut Vec<u8>);

    /// Called after the replies went out and before the loop waits in the runtime for more:
    /// a handler may poll `socket` for the next request here
    /// ([`crate::transport::poll_readable`]). A page-path client polls for its reply and sends
    /// its next miss within tens of microseconds; a server that sleeps in between pays the
    /// kernel's wake-up latency on every request, as long as the round trip itself here. The
    /// default does nothing.
    fn idle(&mut self, socket: BorrowedFd<'_>) {
        let _ = socket;
    }
}

/// Appends a reply frame to `out`.
pub fn push_reply(out: &mut Vec<u8>, header: &Header, payload: &[u8]) {
    debug_assert_eq!(header.len as usize, payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
}

/// Handles a request to a server that answers control calls only (the storage server, the
/// global manager): page operations are bad requests, RDMA is refused, and a control call's
/// body is answered with what `serve` makes of it.
pub fn handle_control_only(req: &Header, payload: &[u8], out: &mut Vec<u8>, serve: impl FnOnce(&[u8]) -> Vec<u8>) {
    match req.op {
        Op::Fetch | Op::Flush | Op::FlushFetch | Op::FetchRun => push_reply(out, &req.reply(Status::BadRequest), &[]),
        Op::RdmaConnect => push_reply(out, &req.reply(Status::NoRdma), &[]),
        Op::Control => {
            let body = serve(payload);
            let mut h = req.reply(Status::Ok);
            h.len = body.len() as u32;
            push_reply(out, &h, &body);
        }
    }
}

/// Reads the peer's hello and answers with ours: accepted if it is of one of the `accepts` kinds,
/// same version and same cluster; refused (and the error returned, naming both sides) otherwise.
pub async fn accept_handshake(
    stream: &mut TcpStream,
    me: Hello,
    accepts: &[ComponentKind],
) -> Result<Hello, ProtoError> {
    let peer = peer_name(stream);
    let mut b = [0u8; HELLO_LEN];
    stream.read_exact(&mut b).await.map_err(|source| ProtoError::Io { peer: peer.clone(), source })?;
    let theirs = Hello::decode(&b)?;
    let verdict = me.judge(&theirs, accepts);
    let reply = Hello { refusal: verdict.err().unwrap_or(0), ..me };
    let io = |source| ProtoError::Io { peer: peer.clone(), source };
    stream.write_all(&reply.encode()).await.map_err(io)?;
    if let Err(code) = verdict {
        return Err(theirs.mismatch(&me, code));
    }
    // The cluster secret, both ways (see `crate::auth`).
    let secret = Secret::current();
    let server_nonce = nonce();
    stream.write_all(&server_nonce).await.map_err(io)?;
    let mut msg = [0u8; CLIENT_LEN];
    stream.read_exact(&mut msg).await.map_err(io)?;
    let (ok, out) = secret.verdict(&server_nonce, &msg);
    stream.write_all(&out).await.map_err(io)?;
    if !ok {
        return Err(ProtoError::Refused(format!("a {} without the cluster secret", theirs.kind)));
    }
    Ok(theirs)
}

fn peer_name(stream: &TcpStream) -> String {
    stream.peer_addr().map(|a: SocketAddr| a.to_string()).unwrap_or_else(|_| "unknown peer".into())
}

/// Runs the request loop until the peer closes the connection (`Ok`) or sends something that is
/// not a valid frame (`Err`, after which the caller logs and drops the connection).
pub async fn serve<H: FrameHandler>(stream: &mut TcpStream, handler: &mut H) -> Result<(), ProtoError> {
    let peer = peer_name(stream);
    let io = |source| ProtoError::Io { peer: peer.clone(), source };
    // Incoming bytes: [0, filled) are valid, [0, start) already handled.
    let mut inbuf = vec![0u8; 4 * (HEADER_LEN + PAGE_SIZE)];
    let (mut start, mut filled) = (0usize, 0usize);
    let mut out = Vec::with_capacity(4 * (HEADER_LEN + PAGE_SIZE));
    loop {
        // Handle every complete frame already buffered.
        loop {
            let avail = filled - start;
            if avail < HEADER_LEN {
                break;
            }
            let hb: &[u8; HEADER_LEN] = inbuf[start..start + HEADER_LEN].try_into().expect("header slice");
            let h = Header::decode(hb)?;
            h.check_request()?;
            let total = HEADER_LEN + h.len as usize;
            if avail < total {
                if total > inbuf.len() {
                    // A control frame bigger than the buffer: grow it (bounded by the decoder).
                    inbuf.resize(total, 0);
                }
                break;
            }
            handler.handle(&h, &inbuf[start + HEADER_LEN..start + total], &mut out);
            start += total;
        }
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(io)?;
            out.clear();
        }
        // Move the partial frame to the front and read more.
        if start > 0 {
            inbuf.copy_within(start..filled, 0);
            filled -= start;
            start = 0;
        }
        // The last read found data, so tokio still takes the socket as readable and the read
        // below tries the socket at once: a request that arrives while we poll skips the
        // reactor.
        handler.idle(stream.as_fd());
        let n = stream.read(&mut inbuf[filled..]).await.map_err(io)?;
        if n == 0 {
            return if filled == 0 {
                Ok(())
            } else {
                Err(ProtoError::Malformed(format!("{peer} closed the connection in the middle of a frame")))
            };
        }
        filled += n;
    }
}
