//! Pieces of `lego bench fault` that live beside the VMM: the raw TCP round trip the miss
//! path is measured against, and the time-stamp counter rate the guest's own timings are
//! converted with. The misses themselves are timed inside a guest program (guest-images
//! `faultlat`), by the CLI.

use std::time::{Duration, Instant};

use lego_proto::frame::HEADER_LEN;
use lego_proto::transport::poll_readable;

use crate::layout::PAGE_SIZE;

/// Median and tail of a latency sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Percentiles {
    /// The percentiles of a sample.
    pub fn of(mut v: Vec<Duration>) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Percentiles { p50: at(0.5), p99: at(0.99) }
    }
}

/// Ticks of the time-stamp counter per nanosecond, measured against the monotonic clock.
pub fn tsc_per_ns() -> f64 {
    // SAFETY: rdtsc has no preconditions on x86-64.
    let t0 = unsafe { core::arch::x86_64::_rdtsc() };
    let c0 = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: as above.
    let t1 = unsafe { core::arch::x86_64::_rdtsc() };
    (t1 - t0) as f64 / c0.elapsed().as_nanos() as f64
}

/// `n` round trips to an echo thread listening on `host`: a frame header out, a header and a
/// page back, both sides with TCP_NODELAY, as on the page path but with no protocol and no
/// store. Each side polls for up to `poll` before it blocks, as the path it is the limit of
/// does (the page path's client waiting for a reply and the mem-server waiting for the next
/// request: [`lego_proto::transport::DEFAULT_POLL`]; zero: block at once).
pub fn raw_round_trips(host: &str, n: usize, poll: Duration) -> std::io::Result<Vec<Duration>> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    const REPLY: usize = HEADER_LEN + PAGE_SIZE as usize;
    let listener = TcpListener::bind((host, 0))?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let (mut req, reply) = ([0u8; HEADER_LEN], [0u8; REPLY]);
        for _ in 0..n {
            poll_readable(&s, poll);
            s.read_exact(&mut req)?;
            s.write_all(&reply)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let (req, mut reply) = ([0u8; HEADER_LEN], vec![0u8; REPLY]);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        c.write_all(&req)?;
        poll_readable(&c, poll);
        c.read_exact(&mut reply)?;
        out.push(started.elapsed());
    }
    echo.join().map_err(|_| std::io::Error::other("the echo thread panicked"))??;
    Ok(out)
}
