//! The `--metrics ADDR` option of every component: its Prometheus endpoint
//! ([`lego_proto::metrics`]).

use anyhow::Context;
use lego_proto::metrics::Registry;
use lego_proto::service::Handle;

/// The `--metrics` option.
#[derive(clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9464; port 0 picks a free
    /// one) [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

impl MetricsArgs {
    /// Starts the endpoint of the component `kind`, if one was asked for, serving the metrics
    /// `register` adds; prints `lego KIND metrics on http://ADDR/metrics`, which comes before the
    /// component's "listening on" line. Dropping the handle stops the endpoint.
    pub fn serve(&self, kind: &str, register: impl FnOnce(&mut Registry)) -> anyhow::Result<Option<Handle>> {
        let Some(listen) = &self.metrics else { return Ok(None) };
        let mut registry = Registry::default();
        register(&mut registry);
        let handle = lego_proto::metrics::serve(listen, registry).context("starting the metrics endpoint")?;
        println!("lego {kind} metrics on http://{}/metrics", handle.addr());
        Ok(Some(handle))
    }
}
