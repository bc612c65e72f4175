//! Firehose delivery benchmark (scripts/bench-sync.sh): `subscribers` clients replay
//! subscribeRepos from cursor 0 at the same time; each stops after `events` frames. Prints one
//! JSON line with the slowest and average per-subscriber rate in events per second.
//!
//! Usage: cargo run --release -p vow --example firehose_load -- <ws-url> <subscribers> <events>

use std::time::Instant;

use futures_util::StreamExt;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, subscribers, events] = args.as_slice() else {
        eprintln!("usage: firehose_load <ws-url> <subscribers> <events>");
        std::process::exit(2);
    };
    let subscribers: usize = subscribers.parse().expect("subscribers is a number");
    let events: u64 = events.parse().expect("events is a number");
    let url = format!("{url}/xrpc/com.atproto.sync.subscribeRepos?cursor=0");
    let tasks: Vec<_> = (0..subscribers)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
                let started = Instant::now();
                let (mut n, mut bytes) = (0u64, 0u64);
                while let Some(msg) = socket.next().await {
                    let msg = msg.expect("stream stays up");
                    if msg.is_binary() {
                        n += 1;
                        bytes += msg.len() as u64;
                        if n >= events {
                            break;
                        }
                    }
                }
                (n, bytes, started.elapsed().as_secs_f64())
            })
        })
        .collect();
    let mut rates = Vec::new();
    let mut total_bytes = 0;
    for t in tasks {
        let (n, bytes, secs) = t.await.unwrap();
        assert_eq!(n, events, "a subscriber ended early");
        rates.push(n as f64 / secs);
        total_bytes += bytes;
    }
    let min = rates.iter().cloned().fold(f64::INFINITY, f64::min);
    let avg = rates.iter().sum::<f64>() / rates.len() as f64;
    println!(
        "{{\"subscribers\":{subscribers},\"events\":{events},\"minPerSecond\":{min:.0},\"avgPerSecond\":{avg:.0},\"avgFrameBytes\":{}}}",
        total_bytes / (events * subscribers as u64)
    );
}
