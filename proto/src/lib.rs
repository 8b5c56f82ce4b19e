//! Wire messages and transports shared by the lego components.
//!
//! - [`auth`]: the cluster secret, proven both ways after the hello.
//! - [`codec`]: the bincode codec of control messages and on-disk records.
//! - [`handshake`]: the versioned introduction every connection starts with.
//! - [`frame`]: the fixed binary header and the page path's 4 KB payloads.
//! - [`global`]: registration and heartbeats to the global managers (LegoOS §4.6).
//! - [`mm`]: control messages of two-level memory management (LegoOS §4.4.1).
//! - [`pcomp`]: run sessions between `lego run` and a pComponent, streaming standard I/O.
//! - [`status`]: the outcome of a request, in every reply header.
//! - [`storage`]: stateless file requests of the storage path (LegoOS §4.5).
//! - [`vma`]: address-space regions, as sent on the wire and as kept by both sides.
//! - [`transport`]: the client side ([`transport::Transport`], TCP implementation).
//! - [`rdma`]: the RDMA page path (ring, slot layout, parameter exchange; verbs behind `rdma`).
//! - [`aio`]: the server side on tokio.
//! - [`background`]: named threads that stop and are joined when their handle drops.
//! - [`service`]: a whole server front (listener, runtime, handshake, frame loop) on top of it.
//! - [`metrics`]: the Prometheus `/metrics` endpoint every component can serve.
//! - [`sync`]: lock helpers that recover a poisoned guard, shared by every crate.

pub mod aio;
pub mod background;
pub mod auth;
pub mod codec;
pub mod error;
pub mod frame;
pub mod global;
pub mod handshake;
pub mod metrics;
pub mod mm;
pub mod pcomp;
pub mod rdma;
pub mod service;
pub mod status;
pub mod storage;
pub mod sync;
pub mod transport;
pub mod vma;

pub use error::ProtoError;
