//! Errors of the wire layer.

use crate::status::Status;

/// Something went wrong talking to a peer.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The socket failed.
    #[error("connection to {peer}: {source}")]
    Io {
        /// Peer address.
        peer: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The peer closed the connection (it died or refused to go on).
    #[error("{peer} closed the connection")]
    Closed {
        /// Peer address.
        peer: String,
    },
    /// The peer did not answer in time.
    #[error("{peer} did not answer within {secs} s")]
    Timeout {
        /// Peer address.
        peer: String,
        /// The limit.
        secs: u64,
    },
    /// Bytes that are not a valid frame or message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame whose stated length is out of bounds for its op.
    #[error("oversized frame: {op} with a {len}-byte payload")]
    Oversized {
        /// The op of the frame.
        op: String,
        /// Its stated payload length.
        len: usize,
    },
    /// The handshake was refused; the message names both sides.
    #[error("handshake refused: {0}")]
    Refused(String),
    /// The peer answered a request with an error status.
    #[error("{peer}: {}", status.describe())]
    Remote {
        /// Peer address.
        peer: String,
        /// What it said.
        status: Status,
    },
}
