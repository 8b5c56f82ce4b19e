//! What a TCP client's VMM sends first on a new connection: the client's virtual address, so
//! that the server's VMM can report it (`accept`, `getpeername`). It is taken off the stream
//! before the server program sees anything; a connection without a valid one is dropped.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Length of a preamble.
pub const LEN: usize = 12;
const MAGIC: [u8; 4] = *b"LGO\x01";

/// The preamble of a client at virtual address `src`.
pub fn encode(src: SocketAddrV4) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..4].copy_from_slice(&MAGIC);
    b[4..8].copy_from_slice(&src.ip().octets());
    b[8..10].copy_from_slice(&src.port().to_be_bytes());
    b
}

/// The client address in a preamble, `None` if it is not one.
pub fn decode(b: &[u8; LEN]) -> Option<SocketAddrV4> {
    if b[..4] != MAGIC || b[10..] != [0, 0] {
        return None;
    }
    Some(SocketAddrV4::new(Ipv4Addr::new(b[4], b[5], b[6], b[7]), u16::from_be_bytes([b[8], b[9]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 3), 51234);
        assert_eq!(decode(&encode(a)), Some(a));
        assert_eq!(decode(b"GET / HTTP/1"), None);
    }
}
