//! A multi-threaded Rust guest program: std::thread workers fed through mpsc channels.
//!
//! `rust-threads [WORKERS] [LIMIT]`: the main thread sends ranges of 0..LIMIT to WORKERS worker
//! threads over one shared job channel; each counts the primes of its ranges and sums their
//! digits, and sends the result back on a result channel. A scoped-thread pass then checks the
//! total with a second split. The output does not depend on WORKERS.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

fn digit_sum(mut n: u64) -> u64 {
    let mut s = 0;
    while n > 0 {
        s += n % 10;
        n /= 10;
    }
    s
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4).max(1);
    let limit: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    const CHUNK: u64 = 5_000;

    let (job_tx, job_rx) = mpsc::channel::<(u64, u64)>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (result_tx, result_rx) = mpsc::channel::<(u64, u64, u64)>();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (jobs, results) = (Arc::clone(&job_rx), result_tx.clone());
            thread::spawn(move || {
                let mut done = 0u64;
                loop {
                    let job = jobs.lock().expect("job lock").recv();
                    let Ok((lo, hi)) = job else { break };
                    let primes: Vec<u64> = (lo..hi).filter(|&n| is_prime(n)).collect();
                    let digits = primes.iter().map(|&p| digit_sum(p)).sum();
                    results.send((lo, primes.len() as u64, digits)).expect("result channel");
                    done += 1;
                }
                done
            })
        })
        .collect();
    drop(result_tx);
    let mut lo = 0;
    while lo < limit {
        job_tx.send((lo, (lo + CHUNK).min(limit))).expect("job channel");
        lo += CHUNK;
    }
    drop(job_tx);

    let mut results: Vec<(u64, u64, u64)> = result_rx.iter().collect();
    results.sort();
    let jobs: u64 = handles.into_iter().map(|h| h.join().expect("worker panicked")).sum();
    let primes: u64 = results.iter().map(|r| r.1).sum();
    let digits: u64 = results.iter().map(|r| r.2).sum();
    println!("primes below {limit}: {primes}, digit sum {digits}, {jobs} jobs in {} results", results.len());
    let densest = results.iter().max_by_key(|r| (r.1, std::cmp::Reverse(r.0))).expect("some results");
    println!("densest range starts at {} with {} primes", densest.0, densest.1);

    // Scoped threads over a second split: the same count.
    let total = Mutex::new(0u64);
    thread::scope(|s| {
        for w in 0..workers as u64 {
            let total = &total;
            s.spawn(move || {
                let n = (w..limit).step_by(workers).filter(|&n| is_prime(n)).count() as u64;
                *total.lock().expect("total lock") += n;
            });
        }
    });
    println!("scoped threads agree: {}", *total.lock().expect("total lock") == primes);
}
