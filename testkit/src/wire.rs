//! Raw connections to a server, below the transports: what every server must survive (malformed
//! frames close only their own connection) and refuse (handshakes of another cluster, version or
//! kind).

use std::net::TcpStream;
use std::time::Duration;

use lego_proto::frame::{Header, Op, MAX_CONTROL_LEN};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::transport::TcpTransport;
use lego_proto::ProtoError;

/// How long a test connection waits to connect and for each answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw connection to the server at `addr`, past the handshake (as a client of `cluster`).
pub fn raw(addr: &str, cluster: u64) -> TcpStream {
    TcpTransport::connect(addr, Hello::new(ComponentKind::Client, cluster), CONNECT_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
        .into_stream()
}

/// Fails the test unless the server closed the connection (EOF or reset) without answering.
pub fn assert_closed(mut s: TcpStream) {
    let closed = lego_proto::transport::closed_by_peer(&mut s).unwrap_or_else(|e| panic!("reading the connection: {e}"));
    assert!(closed, "the connection was not closed");
}

/// Bytes that are no frame a server may answer, each of which must close its connection: a bad
/// magic number, a control payload over [`MAX_CONTROL_LEN`], and garbage.
pub fn malformed_frames() -> Vec<Vec<u8>> {
    let mut bad_magic = Header::request(Op::Control, 1, 0, 0, 0).encode();
    bad_magic[0] ^= 0xff;
    let mut oversized = Header::request(Op::Control, 1, 0, 0, 0);
    oversized.len = MAX_CONTROL_LEN as u32 + 1;
    let garbage: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
    vec![bad_magic.to_vec(), oversized.encode().to_vec(), garbage]
}

/// The message of the server at `addr` refusing the handshake of `me`; fails the test if it
/// accepts or fails otherwise.
pub fn refused(addr: &str, me: Hello) -> String {
    match TcpTransport::connect(addr, me, CONNECT_TIMEOUT) {
        Err(ProtoError::Refused(m)) => m,
        Err(e) => panic!("not a refusal: {e}"),
        Ok(_) => panic!("accepted {me:?}"),
    }
}
