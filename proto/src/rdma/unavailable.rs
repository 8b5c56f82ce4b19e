//! Why RDMA cannot be used toward a peer: what [`super::select::probe`] and, behind the `rdma`
//! feature, the device lookup of `verbs` report.

/// Where devices are looked for, for messages.
pub const DEVICE_GLOB: &str = "/dev/infiniband/uverbs*";

/// Why RDMA cannot be used toward a peer.
#[derive(Debug, thiserror::Error)]
pub enum RdmaUnavailable {
    /// This binary has no verbs support.
    #[error("RDMA to {peer}: this lego was built without RDMA support (build with `--features rdma`)")]
    NotBuilt {
        /// The peer.
        peer: String,
    },
    /// No device here.
    #[error("RDMA to {peer}: no RDMA device {device} on this host ({why})")]
    NoDevice {
        /// The device looked for: a name, or [`DEVICE_GLOB`] for any.
        device: String,
        /// What the lookup said.
        why: String,
        /// The peer.
        peer: String,
    },
    /// The device is there but cannot be used (its port is down, it cannot be opened).
    #[error("RDMA to {peer}: device {device}: {why}")]
    Unusable {
        /// The device.
        device: String,
        /// What failed.
        why: String,
        /// The peer.
        peer: String,
    },
}
