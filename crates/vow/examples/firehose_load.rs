//! Firehose delivery benchmark (scripts/bench-sync.sh). Two modes:
//!
//! - `replay`: `subscribers` clients replay subscribeRepos from cursor 0 at the same time; each
//!   stops after `events` frames.
//! - `live`: `subscribers` clients connect without a cursor and count what arrives until no frame
//!   has come for two seconds after the first (run it while writes are going on).
//!
//! Prints one JSON line with the frames each got and the slowest and average per-subscriber
//! rate in events per second.
//!
//! Usage: firehose_load <ws-url> <subscribers> <events> [replay|live]

use std::time::{Duration, Instant};

use futures_util::StreamExt;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, subscribers, events, mode) = match args.as_slice() {
        [u, s, e] => (u, s, e, "replay"),
        [u, s, e, m] => (u, s, e, m.as_str()),
        _ => {
            eprintln!("usage: firehose_load <ws-url> <subscribers> <events> [replay|live]");
            std::process::exit(2);
        }
    };
    let subscribers: usize = subscribers.parse().expect("subscribers is a number");
    let events: u64 = events.parse().expect("events is a number");
    let live = match mode {
        "replay" => false,
        "live" => true,
        other => panic!("unknown mode {other}"),
    };
    let url = match live {
        false => format!("{url}/xrpc/com.atproto.sync.subscribeRepos?cursor=0"),
        true => format!("{url}/xrpc/com.atproto.sync.subscribeRepos"),
    };
    let mut sockets = Vec::new();
    for _ in 0..subscribers {
        sockets.push(tokio_tungstenite::connect_async(&url).await.expect("connects").0);
    }
    if live {
        println!("{{\"connected\":{subscribers}}}");
    }
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let mut started = Instant::now();
                let mut last = started;
                let (mut n, mut bytes) = (0u64, 0u64);
                loop {
                    let msg = if live && n > 0 {
                        match tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
                            Ok(msg) => msg,
                            Err(_) => break, // the writes are over
                        }
                    } else {
                        socket.next().await
                    };
                    let Some(msg) = msg else { break };
                    let msg = msg.expect("stream stays up");
                    if msg.is_binary() {
                        if n == 0 && live {
                            started = Instant::now();
                        }
                        n += 1;
                        last = Instant::now();
                        bytes += msg.len() as u64;
                        if n >= events {
                            break;
                        }
                    }
                }
                (n, bytes, last.duration_since(started).as_secs_f64().max(1e-6))
            })
        })
        .collect();
    let (mut rates, mut counts) = (Vec::new(), Vec::new());
    let mut total_bytes = 0;
    for t in tasks {
        let (n, bytes, secs) = t.await.unwrap();
        if !live {
            assert_eq!(n, events, "a subscriber ended early");
        }
        rates.push(n as f64 / secs);
        counts.push(n);
        total_bytes += bytes;
    }
    let min = rates.iter().cloned().fold(f64::INFINITY, f64::min);
    let avg = rates.iter().sum::<f64>() / rates.len() as f64;
    let (fewest, most) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    println!(
        "{{\"mode\":\"{mode}\",\"subscribers\":{subscribers},\"fewestEvents\":{fewest},\"mostEvents\":{most},\"minPerSecond\":{min:.0},\"avgPerSecond\":{avg:.0},\"avgFrameBytes\":{}}}",
        total_bytes / counts.iter().sum::<u64>().max(1)
    );
}
