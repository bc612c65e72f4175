//! A small HTTP load generator for the side-by-side read benchmarks (scripts/bench.sh): keeps
//! `concurrency` GET requests in flight against one URL for `seconds`, then prints one JSON
//! line with requests per second and latency percentiles. Non-2xx answers count as errors.
//!
//! Usage: cargo run --release -p vow --example xrpc_load -- <url> <concurrency> <seconds>
//! With `XRPC_LOAD_BEARER` set, every request carries it as a bearer token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, concurrency, seconds] = args.as_slice() else {
        eprintln!("usage: xrpc_load <url> <concurrency> <seconds>");
        std::process::exit(2);
    };
    let concurrency: usize = concurrency.parse().expect("concurrency is a number");
    let duration = Duration::from_secs_f64(seconds.parse().expect("seconds is a number"));
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var("XRPC_LOAD_BEARER") {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("a header value"));
    }
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(concurrency).default_headers(headers).build().unwrap();
    // Warm-up: connections open, caches filled.
    for _ in 0..concurrency * 4 {
        let _ = client.get(url).send().await.and_then(|r| r.error_for_status());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (lat, e) = w.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let q =
        |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0.0);
    println!(
        "{{\"requests\":{},\"errors\":{errors},\"perSecond\":{:.0},\"p50Ms\":{:.3},\"p99Ms\":{:.3}}}",
        all.len(),
        all.len() as f64 / elapsed,
        q(0.5),
        q(0.99)
    );
}
