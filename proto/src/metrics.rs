//! Prometheus `/metrics` of a component: [`serve`] answers `GET /metrics` with a
//! [`Registry`] in the Prometheus text format (0.0.4), on a thread of its own, until its
//! [`Handle`] is dropped.
//!
//! A component hooks in with a few lines: it registers a [`Collector`] that reads its own
//! counters at scrape time (the same atomics its heartbeat load comes from, so nothing is counted
//! twice), then serves the registry:
//!
//! ```no_run
//! # use lego_proto::metrics::{self, Collector};
//! # #[derive(Debug)] struct Mine;
//! # impl Collector for Mine {
//! #     fn encode(&self, mut e: metrics::DescriptorEncoder) -> std::fmt::Result {
//! #         metrics::counter(&mut e, "lego_example_requests", "Requests served.", 1)
//! #     }
//! # }
//! let mut registry = metrics::Registry::default();
//! registry.register_collector(Box::new(Mine));
//! let _metrics = metrics::serve("127.0.0.1:9464", registry)?;
//! # Ok::<(), lego_proto::service::ServiceError>(())
//! ```
//!
//! Other paths answer 404, other methods 405. The endpoint cannot disturb the component: it has
//! its own thread and runtime, at most [`MAX_CONNECTIONS`] connections at once (more are closed
//! at once), a request's headers must arrive within [`HEADER_TIMEOUT`] and a connection lives at
//! most [`CONNECTION_TIME`]; a malformed request gets a 400 from hyper and its connection closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::registry::Registry;

use crate::service::{bind_listener, runtime, Connections, Handle, ServiceError, Stop};

/// Most scrape connections open at once; a connection beyond that is closed straight away.
pub const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection stays open, kept alive or not.
pub const CONNECTION_TIME: Duration = Duration::from_secs(60);

/// Serves `registry` on `GET /metrics` at `listen` (`host:port`; port 0 picks a free one) until
/// the returned handle is dropped.
pub fn serve(listen: &str, registry: Registry) -> Result<Handle, ServiceError> {
    let (listener, addr) = bind_listener(listen)?;
    let rt = runtime("metrics", Some(1)).map_err(ServiceError::Runtime)?;
    let listener = {
        let _guard = rt.enter();
        TcpListener::from_std(listener).map_err(ServiceError::Runtime)?
    };
    let registry = Arc::new(registry);
    Handle::spawn("metrics", addr, rt, move |stop| accept_loop(listener, registry, stop), || ()).map_err(ServiceError::Runtime)
}

async fn accept_loop(listener: TcpListener, registry: Arc<Registry>, mut stop: Stop) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        tokio::spawn(connection(stream, peer, registry.clone(), slot));
                    }
                    Err(_) => tracing::warn!(%peer, "{MAX_CONNECTIONS} /metrics connections are open; closing a new one"),
                },
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a /metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// One scraper's connection; `_slot` is its place among the [`MAX_CONNECTIONS`].
async fn connection(stream: TcpStream, peer: SocketAddr, registry: Arc<Registry>, _slot: OwnedSemaphorePermit) {
    let answer = service_fn(move |req| std::future::ready(Ok::<_, Infallible>(answer(&registry, &req))));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), answer);
    match tokio::time::timeout(CONNECTION_TIME, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "/metrics connection"),
        Err(_) => tracing::debug!(%peer, "/metrics connection open for {CONNECTION_TIME:?}: closed"),
    }
}

/// The answer to one request.
fn answer<B>(registry: &Registry, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: the metrics are at /metrics\n".into());
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut text = String::new();
    match prometheus_text::encode(&mut text, registry) {
        Ok(()) => {
            let mut r = plain(StatusCode::OK, text);
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(prometheus_text::CONTENT_TYPE));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "encoding the metrics");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be encoded\n".into())
        }
    }
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Label pairs of one sample, e.g. `&[("op", "fetch")]`.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Writes a metric family whose samples a [`Collector`] computes at scrape time: `name`, its
/// help text, and one sample per label set. Nothing is written for no samples.
fn family<'a, M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels<'a>, M)>,
) -> std::fmt::Result {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut family = e.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a counter family: one value per label set (`name` gets `_total` appended).
pub fn counters(e: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, u64)]) -> std::fmt::Result {
    family(e, name, help, MetricType::Counter, samples.iter().map(|&(l, v)| (l, ConstCounter::new(v))))
}

/// Writes a gauge family: one value per label set.
pub fn gauges(e: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, u64)]) -> std::fmt::Result {
    family(e, name, help, MetricType::Gauge, samples.iter().map(|&(l, v)| (l, ConstGauge::new(v))))
}

/// Writes a counter without labels (`name` gets `_total` appended).
pub fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    counters(e, name, help, &[(&[], value)])
}

/// Writes a gauge without labels.
pub fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    gauges(e, name, help, &[(&[], value)])
}

/// A server's connection counts, read at scrape time.
impl Collector for Connections {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        counter(&mut e, "lego_connections_accepted", "Connections accepted since start.", get(&self.accepted))?;
        gauge(&mut e, "lego_connections_open", "Connections open now.", get(&self.open))?;
        counter(
            &mut e,
            "lego_connections_refused",
            "Connections closed at the handshake (wrong kind, version, cluster or secret, or too slow).",
            get(&self.refused),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[derive(Debug, Default)]
    struct Requests(AtomicU64);

    impl Collector for Requests {
        fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            counters(&mut e, "lego_test_requests", "Requests, by op.", &[(&[("op", "fetch")], n), (&[("op", "flush")], 7)])?;
            gauge(&mut e, "lego_test_capacity_bytes", "Capacity.", 4096)
        }
    }

    /// Sends `request` raw and returns everything the server answered before closing.
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        // A reset after a refused request still leaves what was answered before it.
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: lego\r\nConnection: close\r\n\r\n").as_bytes())
    }

    fn server() -> Handle {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Requests::default()));
        serve("127.0.0.1:0", registry).unwrap()
    }

    #[test]
    fn get_metrics_gives_the_text_format_and_fresh_values() {
        let h = server();
        let first = get(h.addr(), "/metrics");
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(first.contains("content-type: text/plain; version=0.0.4"), "{first}");
        assert!(first.contains("# HELP lego_test_requests_total Requests, by op.\n"), "{first}");
        assert!(first.contains("# TYPE lego_test_requests_total counter\n"), "{first}");
        assert!(first.contains("lego_test_requests_total{op=\"fetch\"} 0\n"), "{first}");
        assert!(first.contains("lego_test_requests_total{op=\"flush\"} 7\n"), "{first}");
        assert!(first.contains("# TYPE lego_test_capacity_bytes gauge\nlego_test_capacity_bytes 4096\n"), "{first}");
        assert!(get(h.addr(), "/metrics").contains("lego_test_requests_total{op=\"fetch\"} 1\n"), "computed at each scrape");
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let h = server();
        assert!(get(h.addr(), "/").starts_with("HTTP/1.1 404"));
        assert!(get(h.addr(), "/metrics/x").starts_with("HTTP/1.1 404"));
        let post = exchange(h.addr(), b"POST /metrics HTTP/1.1\r\nHost: lego\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405") && post.contains("allow: GET, HEAD"), "{post}");
    }

    #[test]
    fn bad_and_silent_clients_do_not_stop_it() {
        let h = server();
        let garbage = exchange(h.addr(), b"\x00\x01\x02 not http at all\r\n\r\n");
        assert!(garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"), "{garbage}");
        let huge = exchange(h.addr(), format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(1 << 20)).as_bytes());
        assert!(huge.is_empty() || huge.starts_with("HTTP/1.1 431") || huge.starts_with("HTTP/1.1 400"), "{huge}");
        // Clients that connect and say nothing hold a slot each; once the slots are taken new
        // connections are closed, and the silent ones are dropped after HEADER_TIMEOUT.
        let silent: Vec<TcpStream> = (0..MAX_CONNECTIONS + 2).map(|_| TcpStream::connect(h.addr()).unwrap()).collect();
        std::thread::sleep(HEADER_TIMEOUT + Duration::from_secs(1));
        assert!(get(h.addr(), "/metrics").starts_with("HTTP/1.1 200"), "it serves after all of that");
        drop(silent);
    }

    #[test]
    fn a_dropped_handle_stops_serving() {
        let h = server();
        let addr = h.addr();
        drop(h);
        assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
    }

    #[test]
    fn a_taken_address_is_an_error_naming_it() {
        let h = server();
        let e = serve(&h.addr().to_string(), Registry::default()).err().expect("the port is taken");
        assert!(e.to_string().contains(&h.addr().to_string()), "{e}");
    }
}
