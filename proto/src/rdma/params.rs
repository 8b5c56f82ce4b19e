//! The connection-parameter exchange: after the TCP handshake (version, cluster, secret proof),
//! each side sends what the other needs to reach its queue pair and its region. Nothing of it
//! crosses before authentication: the only way to send it is with an [`Authenticated`], which
//! only the handshake code of this crate makes, and a queue pair is brought to RTS only through a
//! [`RtsPermit`], which needs the [`Authenticated`] of the connection and validated parameters.

use crate::frame::RDMA_PARAMS_LEN;

use super::layout::SlotLayout;
use super::ring::RingError;

const MAGIC: [u8; 4] = *b"RDMA";
/// Largest valid queue pair number or packet sequence number (24 bits).
const MAX_24: u32 = (1 << 24) - 1;

/// What one side tells the other about its queue pair and its registered region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectParams {
    /// Local identifier of the port (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// GID of the port (RoCE routes by it; may be zero on InfiniBand).
    pub gid: [u8; 16],
    /// Queue pair number.
    pub qpn: u32,
    /// First packet sequence number.
    pub psn: u32,
    /// Remote key of the region the peer may write into (and of nothing else).
    pub rkey: u32,
    /// Address of that region.
    pub addr: u64,
    /// Its length.
    pub len: u64,
    /// Slots of the request ring.
    pub slots: u32,
    /// Path MTU (`ibv_mtu`: 1 = 256 bytes ... 5 = 4096 bytes).
    pub mtu: u8,
}

/// Parameters that cannot describe a working connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamsError {
    /// Not a parameter message.
    #[error("not an RDMA parameter message ({0})")]
    Malformed(&'static str),
    /// A field out of range.
    #[error("RDMA parameters: {0}")]
    Invalid(String),
    /// The ring size is not valid.
    #[error("RDMA parameters: {0}")]
    Ring(#[from] RingError),
}

/// Which side sent the parameters: it decides the region length they must describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The pComponent (its staging region).
    Client,
    /// The mem-server (the request ring of this client).
    Server,
}

impl ConnectParams {
    /// Wire form.
    pub fn encode(&self) -> [u8; RDMA_PARAMS_LEN] {
        let mut b = [0u8; RDMA_PARAMS_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.lid.to_le_bytes());
        b[6] = self.mtu;
        b[8..24].copy_from_slice(&self.gid);
        b[24..28].copy_from_slice(&self.qpn.to_le_bytes());
        b[28..32].copy_from_slice(&self.psn.to_le_bytes());
        b[32..36].copy_from_slice(&self.rkey.to_le_bytes());
        b[36..40].copy_from_slice(&self.slots.to_le_bytes());
        b[40..48].copy_from_slice(&self.addr.to_le_bytes());
        b[48..56].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Parses a peer's parameters (without validating them: see [`ConnectParams::validate`]).
    pub fn decode(b: &[u8]) -> Result<ConnectParams, ParamsError> {
        let b: &[u8; RDMA_PARAMS_LEN] = b.try_into().map_err(|_| ParamsError::Malformed("wrong length"))?;
        if b[..4] != MAGIC {
            return Err(ParamsError::Malformed("bad magic"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(ConnectParams {
            lid: u16::from_le_bytes([b[4], b[5]]),
            mtu: b[6],
            gid: b[8..24].try_into().expect("16 bytes"),
            qpn: u32_at(24),
            psn: u32_at(28),
            rkey: u32_at(32),
            slots: u32_at(36),
            addr: u64_at(40),
            len: u64_at(48),
        })
    }

    /// Checks that the parameters a `side` sent describe a reachable queue pair and exactly the
    /// region that side must register for a ring of `slots` slots.
    pub fn validate(&self, side: Side, slots: u32) -> Result<SlotLayout, ParamsError> {
        let bad = |what: String| Err(ParamsError::Invalid(what));
        if self.slots != slots {
            return bad(format!("a ring of {} slots where {slots} were agreed", self.slots));
        }
        let layout = SlotLayout::new(self.slots)?;
        if self.qpn == 0 || self.qpn > MAX_24 {
            return bad(format!("queue pair number {:#x} is out of range", self.qpn));
        }
        if self.psn > MAX_24 {
            return bad(format!("packet sequence number {:#x} is out of range", self.psn));
        }
        if self.lid == 0 && self.gid == [0; 16] {
            return bad("neither a LID nor a GID: the port cannot be reached".into());
        }
        if !(1..=5).contains(&self.mtu) {
            return bad(format!("path MTU code {} is not one of 1 to 5", self.mtu));
        }
        let want = match side {
            Side::Client => layout.client_len(),
            Side::Server => layout.server_len(),
        } as u64;
        if self.len != want {
            return bad(format!("a region of {} bytes where {want} were due", self.len));
        }
        if self.addr == 0 || self.addr.checked_add(self.len).is_none() {
            return bad(format!("region {:#x}+{:#x} wraps or is null", self.addr, self.len));
        }
        Ok(layout)
    }
}

/// Proof that the connection named `peer` passed the TCP handshake: same protocol version and
/// cluster, and the cluster secret proven both ways. Only this crate's handshake code makes one.
#[derive(Debug)]
pub struct Authenticated {
    peer: String,
}

impl Authenticated {
    /// Made by the handshake code once the secret was proven (client: a connected
    /// [`crate::transport::TcpTransport`]; server: a frame handler, which runs only after
    /// [`crate::aio::accept_handshake`] accepted the peer).
    pub(crate) fn new(peer: String) -> Authenticated {
        Authenticated { peer }
    }

    /// The authenticated peer.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

/// Leave to bring a queue pair to RTS toward `remote`: made only from the connection's
/// [`Authenticated`] and the peer's parameters once they validated.
#[derive(Debug)]
pub struct RtsPermit {
    /// The peer's validated parameters.
    pub remote: ConnectParams,
    /// The layout they describe.
    pub layout: SlotLayout,
}

impl RtsPermit {
    /// Validates the parameters that `side` sent over the authenticated connection `auth`.
    pub fn grant(auth: &Authenticated, remote: ConnectParams, side: Side, slots: u32) -> Result<RtsPermit, ParamsError> {
        let layout = remote.validate(side, slots).map_err(|e| match e {
            ParamsError::Invalid(what) => ParamsError::Invalid(format!("from {}: {what}", auth.peer)),
            other => other,
        })?;
        Ok(RtsPermit { remote, layout })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn good(side: Side) -> ConnectParams {
        let l = SlotLayout::new(16).unwrap();
        let len = match side {
            Side::Client => l.client_len(),
            Side::Server => l.server_len(),
        };
        ConnectParams { lid: 0, gid: [0xfe; 16], qpn: 0x123, psn: 0x4567, rkey: 9, addr: 0x7f00_0000_0000, len: len as u64, slots: 16, mtu: 5 }
    }

    #[test]
    fn good_parameters_pass_both_ways() {
        for side in [Side::Client, Side::Server] {
            let p = good(side);
            assert_eq!(ConnectParams::decode(&p.encode()).unwrap(), p);
            assert_eq!(p.validate(side, 16).unwrap().slots(), 16);
            let auth = Authenticated::new("10.0.0.2:7000".into());
            assert_eq!(RtsPermit::grant(&auth, p, side, 16).unwrap().remote, p);
        }
    }

    #[test]
    fn bad_parameters_are_refused_with_the_peer_named() {
        let auth = Authenticated::new("10.0.0.2:7000".into());
        let p = good(Side::Server);
        let cases = [
            ConnectParams { qpn: 0, ..p },
            ConnectParams { qpn: 1 << 24, ..p },
            ConnectParams { psn: 1 << 24, ..p },
            ConnectParams { lid: 0, gid: [0; 16], ..p },
            ConnectParams { mtu: 0, ..p },
            ConnectParams { mtu: 6, ..p },
            ConnectParams { len: p.len + 1, ..p },
            ConnectParams { addr: 0, ..p },
            ConnectParams { addr: u64::MAX - 4, ..p },
        ];
        for c in cases {
            let e = RtsPermit::grant(&auth, c, Side::Server, 16).unwrap_err().to_string();
            assert!(e.contains("10.0.0.2:7000"), "{e}");
        }
        // The client's region is not the server's: a length for the other side is refused.
        assert!(p.validate(Side::Client, 16).is_err());
        assert!(matches!(ConnectParams { slots: 12, ..p }.validate(Side::Server, 12), Err(ParamsError::Ring(_))));
        assert!(p.validate(Side::Server, 32).is_err());
    }

    #[test]
    fn garbage_is_not_parameters() {
        assert_eq!(ConnectParams::decode(&[0u8; 10]), Err(ParamsError::Malformed("wrong length")));
        assert_eq!(ConnectParams::decode(&[0u8; RDMA_PARAMS_LEN]), Err(ParamsError::Malformed("bad magic")));
    }

    proptest! {
        /// Any 64 bytes decode to an error or to parameters that encode back to the same fields;
        /// validation never panics on them.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), RDMA_PARAMS_LEN)) {
            let mut b = bytes;
            b[..4].copy_from_slice(&MAGIC);
            let p = ConnectParams::decode(&b).unwrap();
            prop_assert_eq!(ConnectParams::decode(&p.encode()).unwrap(), p);
            let _ = p.validate(Side::Client, p.slots);
            let _ = p.validate(Side::Server, p.slots);
        }
    }
}
