//! A lean createRecord load generator for the side-by-side write benchmarks (scripts/bench.sh),
//! so the figures measure the servers rather than the client: `@atproto/api` under Node costs
//! about as much CPU per write as Vow does, and on a 2-core machine that caps what either
//! server can show. Signs in each account (`com.atproto.server.createSession`), warms up with a
//! few writes per account, then keeps `concurrency` writers busy, spread over the accounts in
//! turn, until `count` posts are written. Prints one JSON line like `bench/writes.js`.
//!
//! Usage: cargo run --release -p vow --example write_load -- <pds> <id[,id...]> <password> <count> <concurrency>

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

async fn post(client: &reqwest::Client, pds: &str, token: &str, did: &str, text: &str) -> Result<(), String> {
    let body = json!({ "repo": did, "collection": "app.bsky.feed.post",
        "record": { "$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-02T00:00:00.000Z" } });
    let res = client
        .post(format!("{pds}/xrpc/com.atproto.repo.createRecord"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let text = res.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pds, ids, password, count, concurrency] = args.as_slice() else {
        eprintln!("usage: write_load <pds> <id[,id...]> <password> <count> <concurrency>");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("count is a number");
    let concurrency: usize = concurrency.parse().expect("concurrency is a number");
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let mut accounts = Vec::new();
    for id in ids.split(',') {
        let session: Value = client
            .post(format!("{pds}/xrpc/com.atproto.server.createSession"))
            .json(&json!({ "identifier": id, "password": password }))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("createSession")
            .json()
            .await
            .expect("a session");
        let token = session["accessJwt"].as_str().expect("accessJwt").to_owned();
        let did = session["did"].as_str().expect("did").to_owned();
        for i in 0..3 {
            post(&client, pds, &token, &did, &format!("warm {i}")).await.expect("warm-up write");
        }
        accounts.push((token, did));
    }
    let accounts = Arc::new(accounts);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (client, pds, accounts, next) = (client.clone(), pds.clone(), accounts.clone(), next.clone());
            tokio::spawn(async move {
                let (token, did) = &accounts[w % accounts.len()];
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let t = Instant::now();
                    post(&client, &pds, token, did, &format!("bench {w}/{}", lat.len())).await.expect("a write");
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let q = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{{\"writes\":{count},\"concurrency\":{concurrency},\"accounts\":{},\"seconds\":{seconds:.2},\"perSecond\":{:.1},\"p50Ms\":{:.2},\"p90Ms\":{:.2},\"p99Ms\":{:.2}}}",
        accounts.len(),
        count as f64 / seconds,
        q(0.5),
        q(0.9),
        q(0.99)
    );
}
