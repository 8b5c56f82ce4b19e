//! The RDMA page path (LegoOS §5.2). The parts that need no RDMA device are compiled always:
//!
//! - [`ring`]: the request ring and its credits.
//! - [`layout`]: where requests, replies and stamps lie in the registered regions.
//! - [`params`]: the connection-parameter exchange that follows the TCP handshake, and the rule
//!   that a queue pair reaches RTS only toward an authenticated peer.
//! - [`select`]: choosing between TCP and RDMA (`--transport tcp|rdma|auto`), probing the device.
//!
//! Behind the `rdma` feature, through rdma-core's libibverbs:
//!
//! - [`verbs`]: owners of the device, registered regions and RC queue pairs.
//! - [`client`]: [`client::RdmaTransport`], the page path of a pComponent over RDMA.
//! - [`server`]: the server's polling thread and the handler that sets sessions up.

pub mod layout;
pub mod params;
pub mod ring;
pub mod select;

#[cfg(feature = "rdma")]
pub mod client;
#[cfg(feature = "rdma")]
pub mod server;
#[cfg(feature = "rdma")]
pub mod verbs;
