//! How a vNode is stored in the registry's `vnodes` table: a versioned record, so that fields
//! can be added without making older registries unreadable.
//!
//! - **Version 1** (the registries of builds before vNode settings): the bare bincode (fixed-int)
//!   of `{ id, name, vip, storage, mem_bytes, excache_bytes }`, with no tag. Its first eight bytes
//!   are the id, which counts up from 1.
//! - **Version 2 and later**: the tag [`TAG`] (`u64::MAX`, an id no vNode ever gets), a `u16`
//!   version, then the bincode of that version's record. Version 2 adds the disk quota, the
//!   replicas, the published ports and egress ([`VnodeSettings`]).
//!
//! [`decode`] reads every version; [`encode`] writes the current one. The registry rewrites
//! older records in the current version when it opens.

use lego_proto::global::{PublishedPort, VnodeInfo, VnodeSettings};
use serde::{Deserialize, Serialize};

/// First eight bytes of a tagged record: an id no vNode has (ids count up from 1).
const TAG: u64 = u64::MAX;
/// The version [`encode`] writes.
pub const CURRENT: u16 = 2;

/// Version 1: the layout of `VnodeInfo` before settings, frozen.
#[derive(Serialize, Deserialize)]
struct V1 {
    id: u64,
    name: String,
    vip: [u8; 4],
    storage: Option<String>,
    mem_bytes: u64,
    excache_bytes: u64,
}

/// Version 2.
#[derive(Serialize, Deserialize)]
struct V2 {
    id: u64,
    name: String,
    vip: [u8; 4],
    storage: Option<String>,
    mem_bytes: u64,
    excache_bytes: u64,
    disk_quota: Option<u64>,
    replicas: u8,
    publish: Vec<(u16, u16)>,
    egress: bool,
}

impl From<V1> for V2 {
    /// A version 1 record has the default settings.
    fn from(r: V1) -> V2 {
        let d = VnodeSettings::default();
        let publish = d.publish.iter().map(|p| (p.host_port, p.vport)).collect();
        V2 {
            id: r.id,
            name: r.name,
            vip: r.vip,
            storage: r.storage,
            mem_bytes: r.mem_bytes,
            excache_bytes: r.excache_bytes,
            disk_quota: d.disk_quota,
            replicas: d.replicas,
            publish,
            egress: d.egress,
        }
    }
}

impl From<V2> for VnodeInfo {
    fn from(r: V2) -> VnodeInfo {
        let settings = VnodeSettings {
            disk_quota: r.disk_quota,
            replicas: r.replicas,
            publish: r.publish.into_iter().map(|(host_port, vport)| PublishedPort { host_port, vport }).collect(),
            egress: r.egress,
        };
        VnodeInfo {
            id: r.id,
            name: r.name,
            vip: r.vip,
            storage: r.storage,
            mem_bytes: r.mem_bytes,
            excache_bytes: r.excache_bytes,
            settings,
        }
    }
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Written by a newer build.
    #[error("vNode record version {0} is newer than this build's ({CURRENT})")]
    Newer(u16),
    /// Not a record of any version.
    #[error("vNode record is malformed: {0}")]
    Malformed(String),
}

/// The stored form of `v`, in version [`CURRENT`].
pub fn encode(v: &VnodeInfo) -> Vec<u8> {
    let s = &v.settings;
    let record = V2 {
        id: v.id,
        name: v.name.clone(),
        vip: v.vip,
        storage: v.storage.clone(),
        mem_bytes: v.mem_bytes,
        excache_bytes: v.excache_bytes,
        disk_quota: s.disk_quota,
        replicas: s.replicas,
        publish: s.publish.iter().map(|p| (p.host_port, p.vport)).collect(),
        egress: s.egress,
    };
    lego_proto::codec::encode(&(TAG, CURRENT, record))
}

/// Reads a record of any version; also answers the version it was in.
pub fn decode(bytes: &[u8]) -> Result<(VnodeInfo, u16), RecordError> {
    let bad = |e: lego_proto::ProtoError| RecordError::Malformed(e.to_string());
    if bytes.len() < 10 || bytes[..8] != TAG.to_le_bytes() {
        let r: V1 = lego_proto::codec::decode(bytes).map_err(bad)?;
        return Ok((V2::from(r).into(), 1));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    match version {
        2 => {
            let (_, _, r): (u64, u16, V2) = lego_proto::codec::decode(bytes).map_err(bad)?;
            Ok((r.into(), 2))
        }
        v if v > CURRENT => Err(RecordError::Newer(v)),
        v => Err(RecordError::Malformed(format!("unknown version {v}"))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The bytes the registry of the builds before settings wrote for a vNode (bincode, fixed
    /// ints, of the old `VnodeInfo`), spelled out so that no change to a type here moves them.
    pub(crate) fn v1_bytes() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&3u64.to_le_bytes()); // id
        b.extend_from_slice(&4u64.to_le_bytes()); // name
        b.extend_from_slice(b"demo");
        b.extend_from_slice(&[10, 77, 0, 3]); // vip
        b.push(1); // storage: Some
        b.extend_from_slice(&14u64.to_le_bytes());
        b.extend_from_slice(b"127.0.0.1:7080");
        b.extend_from_slice(&(1u64 << 30).to_le_bytes()); // mem_bytes
        b.extend_from_slice(&(1u64 << 26).to_le_bytes()); // excache_bytes
        b
    }

    #[test]
    fn a_version_1_record_reads_with_default_settings() {
        let (v, version) = decode(&v1_bytes()).unwrap();
        assert_eq!(version, 1);
        assert_eq!((v.id, v.name.as_str(), v.vip, v.storage.as_deref()), (3, "demo", [10, 77, 0, 3], Some("127.0.0.1:7080")));
        assert_eq!((v.mem_bytes, v.excache_bytes), (1 << 30, 1 << 26));
        assert_eq!(v.settings, VnodeSettings::default());
    }

    #[test]
    fn the_current_version_round_trips() {
        let (mut v, _) = decode(&v1_bytes()).unwrap();
        v.settings = VnodeSettings {
            disk_quota: Some(5 << 20),
            replicas: 2,
            publish: vec![PublishedPort { host_port: 8080, vport: 80 }],
            egress: true,
        };
        let bytes = encode(&v);
        assert_eq!(decode(&bytes).unwrap(), (v, CURRENT));
    }

    #[test]
    fn newer_and_broken_records_are_errors() {
        let mut newer = lego_proto::codec::encode(&(TAG, 9u16));
        newer.extend_from_slice(&[0; 32]);
        assert!(matches!(decode(&newer), Err(RecordError::Newer(9))));
        assert!(matches!(decode(&[1, 2, 3]), Err(RecordError::Malformed(_))));
        let (v, _) = decode(&v1_bytes()).unwrap();
        let bytes = encode(&v);
        assert!(matches!(decode(&bytes[..bytes.len() - 3]), Err(RecordError::Malformed(_))));
    }
}
