//! The mem-server's Prometheus metrics, read at each scrape from the same figures its heartbeat
//! load and `Stat` replies come from.

use std::sync::Arc;

use lego_proto::frame::PAGE_SIZE;
use lego_proto::metrics::{counter, counters, gauge, Collector, DescriptorEncoder};

use crate::server::{Shared, OPS};

/// The collector of one server's metrics.
pub(crate) struct Metrics(Arc<Shared>);

impl Metrics {
    pub(crate) fn new(shared: Arc<Shared>) -> Metrics {
        Metrics(shared)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mem-server metrics")
    }
}

impl Collector for Metrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        let page = PAGE_SIZE as u64;
        let s = self.0.stat();
        gauge(e, "lego_mem_capacity_bytes", "Bytes of page frames the server may hold.", s.capacity_pages * page)?;
        gauge(e, "lego_mem_stored_bytes", "Bytes of page frames holding pages.", s.used_pages * page)?;
        gauge(e, "lego_mem_vregions", "vRegions the server owns.", s.vregions)?;
        gauge(e, "lego_mem_processes", "Processes the server is the home of.", s.homed)?;
        let traffic = self.0.traffic();
        let requests = traffic.requests();
        let labels = OPS.map(|op| [("op", op)]);
        let by_op: Vec<_> = labels.iter().zip(requests).map(|(l, n)| (&l[..], n)).collect();
        counters(
            e,
            "lego_mem_requests",
            "Requests served, by operation: fetch, flush and flush_fetch are the page path, control is everything else \
             (memory calls, owner calls, file requests, statistics).",
            &by_op,
        )?;
        let (received, sent) = traffic.bytes();
        counter(e, "lego_mem_received_bytes", "Bytes of request frames received, headers included.", received)?;
        counter(e, "lego_mem_sent_bytes", "Bytes of reply frames sent, headers included.", sent)?;
        let gate = self.0.poll_gate();
        gauge(e, "lego_mem_polling", "1 while page-path connections poll for their next request (the host has a core to spare), else 0.", u64::from(gate.is_open()))?;
        counter(e, "lego_mem_poll_cpu_microseconds", "CPU time spent polling for page-path requests.", gate.polled().as_micros() as u64)?;
        let c = self.0.cache();
        gauge(e, "lego_mem_buffer_cache_bytes", "Bytes of file pages in the buffer cache.", c.pages * page)?;
        gauge(e, "lego_mem_buffer_cache_capacity_bytes", "Most bytes of file pages the buffer cache holds.", c.capacity * page)?;
        counter(e, "lego_mem_buffer_cache_hits", "File pages answered from the buffer cache.", c.hits)?;
        counter(e, "lego_mem_buffer_cache_misses", "File pages read from the storage server into the buffer cache.", c.misses)?;
        counter(e, "lego_mem_buffer_cache_write_backs", "Dirty file pages written back to the storage server.", c.write_backs)?;
        counter(e, "lego_mem_buffer_cache_evictions", "File pages evicted from the buffer cache.", c.evictions)?;
        if let Some(b) = self.0.backup() {
            gauge(e, "lego_mem_backup_log_capacity_bytes", "Bytes of the backup log of the secondary copies this server keeps.", b.slots * page)?;
            gauge(e, "lego_mem_backup_log_unflushed_bytes", "Bytes in the backup log not yet appended to a backup file.", b.unflushed * page)?;
            counter(e, "lego_mem_backup_flushed_pages", "Pages appended to backup files on the storage server (4104-byte records).", b.flushed)?;
            counter(e, "lego_mem_backup_refused_writes", "Writes of secondary copies refused because the backup log was full.", b.refused)?;
            counter(e, "lego_mem_backup_storage_errors", "Failed attempts to reach the storage server with the backup log (retried).", b.storage_errors)?;
        }
        Ok(())
    }
}
