//! What lego's test suites share (a dev-dependency only, never published):
//!
//! - [`paths`]: the repository, the guest images, the `lego` binary, whether KVM tests can run.
//! - [`process`]: programs run to their end under a deadline (natively or in a vNode), and
//!   `lego` servers as real processes.
//! - [`cli`]: what `lego` commands print (`ps --json`, `run --stats`).
//! - [`wait`]: polling for a condition with a deadline.
//! - [`metrics`]: reading a component's `/metrics`.
//! - [`wire`]: raw connections to a server and the malformed frames every server must survive.
//! - [`busybox`]: the busybox cases compared with native runs.
//! - [`data`]: reproducible test data.
//!
//! Everything is re-exported at the root, so a test file says `use lego_testkit as common;` and
//! calls `common::image(..)`, `common::run(..)`.

pub mod busybox;
pub mod cli;
pub mod data;
pub mod metrics;
pub mod paths;
pub mod process;
pub mod wait;
pub mod wire;

pub use busybox::*;
pub use cli::*;
pub use data::*;
pub use metrics::*;
pub use paths::*;
pub use process::*;
pub use wait::*;
pub use wire::*;
