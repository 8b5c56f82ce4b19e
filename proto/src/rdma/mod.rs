//! The RDMA page path (LegoOS §5.2): the parts that need no RDMA device, compiled always.
//!
//! - [`ring`]: the request ring and its credits.
//! - [`layout`]: where requests, replies and stamps lie in the registered regions.
//! - [`params`]: the connection-parameter exchange that follows the TCP handshake, and the rule
//!   that a queue pair reaches RTS only toward an authenticated peer.
//! - [`select`]: choosing between TCP and RDMA (`--transport tcp|rdma|auto`), probing the device.

pub mod layout;
pub mod params;
pub mod ring;
pub mod select;

#[cfg(feature = "rdma")]
mod device;
