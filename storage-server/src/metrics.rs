//! The storage server's Prometheus metrics, read at each scrape from the same figures its
//! heartbeat load comes from.

use std::path::PathBuf;
use std::sync::Arc;

use lego_proto::metrics::{counter, counters, gauge, Collector, DescriptorEncoder};

use crate::server::{Shared, OPS};

/// The collector of one server's metrics.
pub(crate) struct Metrics {
    shared: Arc<Shared>,
    dir: PathBuf,
}

impl Metrics {
    /// Metrics of the server sharing `shared`, whose storage is in `dir`.
    pub(crate) fn new(shared: Arc<Shared>, dir: PathBuf) -> Metrics {
        Metrics { shared, dir }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage-server metrics of {}", self.dir.display())
    }
}

impl Collector for Metrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        let t = self.shared.traffic();
        let labels = OPS.map(|op| [("op", op)]);
        let by_op = |n: [u64; OPS.len()]| -> Vec<_> { labels.iter().zip(n).map(|(l, n)| (&l[..], n)).collect() };
        counters(e, "lego_storage_requests", "Requests served, by operation.", &by_op(t.requests))?;
        counters(e, "lego_storage_errors", "Requests answered with an errno, by operation.", &by_op(t.errors))?;
        counter(e, "lego_storage_undecodable_requests", "Requests that could not be decoded (answered EINVAL).", t.undecodable)?;
        counter(e, "lego_storage_read_bytes", "Bytes of file data read.", t.read_bytes)?;
        counter(e, "lego_storage_written_bytes", "Bytes of file data written.", t.written_bytes)?;
        if let Some((capacity, used)) = crate::disk_usage(&self.dir) {
            gauge(e, "lego_storage_disk_capacity_bytes", "Bytes of the file system holding the storage directory.", capacity)?;
            gauge(e, "lego_storage_disk_used_bytes", "Bytes in use on that file system.", used)?;
        }
        Ok(())
    }
}
