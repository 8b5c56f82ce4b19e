//! The first bytes on every connection: each side states its protocol version, cluster and
//! component kind, and the accepting side refuses a peer that does not fit. A refusal names both
//! sides, so an operator can tell which end is misconfigured.

use std::fmt;

use crate::error::ProtoError;

/// Version of everything in this crate that crosses the wire. Bump it on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 8;

const MAGIC: [u8; 4] = *b"LEGO";
/// Encoded size of a [`Hello`].
pub const HELLO_LEN: usize = 16;

/// What kind of component a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ComponentKind {
    /// A pComponent (`lego-vmm`).
    Processor = 1,
    /// An mComponent (`mem-server`).
    Memory = 2,
    /// An sComponent (`storage-server`).
    Storage = 3,
    /// The global managers.
    Global = 4,
    /// A command-line client or benchmark.
    Client = 5,
}

impl ComponentKind {
    fn from_u8(v: u8) -> Option<ComponentKind> {
        Some(match v {
            1 => ComponentKind::Processor,
            2 => ComponentKind::Memory,
            3 => ComponentKind::Storage,
            4 => ComponentKind::Global,
            5 => ComponentKind::Client,
            _ => return None,
        })
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComponentKind::Processor => "pComponent",
            ComponentKind::Memory => "mem-server",
            ComponentKind::Storage => "storage-server",
            ComponentKind::Global => "global-mgr",
            ComponentKind::Client => "client",
        })
    }
}

/// One side's introduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// What the sender is.
    pub kind: ComponentKind,
    /// Why the accepting side refused (0 in a request and in an acceptance).
    pub refusal: u8,
    /// Cluster the sender belongs to; peers of different clusters never talk.
    pub cluster: u64,
}

/// Refusal codes carried in the accepting side's [`Hello`].
mod refusal {
    pub const VERSION: u8 = 1;
    pub const CLUSTER: u8 = 2;
    pub const KIND: u8 = 3;
}

impl Hello {
    /// This build's introduction for a component of `kind` in `cluster`.
    pub fn new(kind: ComponentKind, cluster: u64) -> Hello {
        Hello { version: PROTOCOL_VERSION, kind, refusal: 0, cluster }
    }

    /// Wire form.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6] = self.kind as u8;
        b[7] = self.refusal;
        b[8..16].copy_from_slice(&self.cluster.to_le_bytes());
        b
    }

    /// Parses a peer's introduction; anything that is not a lego hello is a protocol error.
    pub fn decode(b: &[u8; HELLO_LEN]) -> Result<Hello, ProtoError> {
        if b[..4] != MAGIC {
            return Err(ProtoError::Malformed("the peer does not speak the lego protocol (bad magic)".into()));
        }
        let kind = ComponentKind::from_u8(b[6])
            .ok_or_else(|| ProtoError::Malformed(format!("unknown component kind {}", b[6])))?;
        Ok(Hello {
            version: u16::from_le_bytes([b[4], b[5]]),
            kind,
            refusal: b[7],
            cluster: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
        })
    }

    /// The accepting side's verdict on a peer: `Ok` or the refusal code to send back.
    pub fn judge(&self, peer: &Hello, accepts: &[ComponentKind]) -> Result<(), u8> {
        if peer.version != self.version {
            Err(refusal::VERSION)
        } else if peer.cluster != self.cluster {
            Err(refusal::CLUSTER)
        } else if !accepts.contains(&peer.kind) {
            Err(refusal::KIND)
        } else {
            Ok(())
        }
    }

    /// The error both sides report for a refusal, naming this side (`self`) and the peer.
    pub fn mismatch(&self, peer: &Hello, code: u8) -> ProtoError {
        let what = match code {
            refusal::VERSION => format!(
                "protocol version mismatch: this {} speaks v{}, the {} speaks v{}",
                self.kind, self.version, peer.kind, peer.version
            ),
            refusal::CLUSTER => format!(
                "cluster mismatch: this {} is in cluster {:#x}, the {} is in cluster {:#x}",
                self.kind, self.cluster, peer.kind, peer.cluster
            ),
            refusal::KIND => format!("a {} does not accept connections from a {}", peer.kind, self.kind),
            other => format!("the {} refused this {} (code {other})", peer.kind, self.kind),
        };
        ProtoError::Refused(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_judgement() {
        let me = Hello::new(ComponentKind::Memory, 7);
        let peer = Hello::new(ComponentKind::Processor, 7);
        assert_eq!(Hello::decode(&peer.encode()).unwrap(), peer);
        assert!(me.judge(&peer, &[ComponentKind::Processor]).is_ok());
        let old = Hello { version: 0, ..peer };
        let code = me.judge(&old, &[ComponentKind::Processor]).unwrap_err();
        let msg = old.mismatch(&me, code).to_string();
        assert!(msg.contains("v0") && msg.contains(&format!("v{PROTOCOL_VERSION}")) && msg.contains("mem-server"), "{msg}");
        let other = Hello { cluster: 8, ..peer };
        let msg = other.mismatch(&me, me.judge(&other, &[ComponentKind::Processor]).unwrap_err()).to_string();
        assert!(msg.contains("0x7") && msg.contains("0x8"), "{msg}");
        assert!(me.judge(&peer, &[ComponentKind::Memory]).is_err());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Hello::decode(b"GET / HTTP/1.1\r\n").is_err());
        let mut b = Hello::new(ComponentKind::Client, 1).encode();
        b[6] = 99;
        assert!(Hello::decode(&b).is_err());
    }
}
