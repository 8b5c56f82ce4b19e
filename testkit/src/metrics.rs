//! Reading a component's Prometheus `/metrics` endpoint.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The body of `GET /metrics` from the endpoint at `addr`, and the reply's status line.
pub fn scrape(addr: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connecting to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout is valid");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lego\r\nConnection: close\r\n\r\n").expect("sending the request");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reading the metrics");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// The value of the sample `series` (a name and its labels as printed, e.g.
/// `lego_mem_requests_total{op="fetch"}`) in the metrics `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
