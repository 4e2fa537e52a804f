//! What a registration costs as the pool grows, end to end: HTTP registrations against a
//! running tideway, 500 from an empty pool and 500 more at 5,000 backends, for every algorithm
//! (each the best of 3 runs: this machine is noisy).
//!
//! `cargo bench --bench registrations`. Prints one line per algorithm with both times and
//! their ratio (the figure the pool must keep near 1: a change must not cost more in a large
//! pool).

#[path = "support.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{free_port, wait_port, Killed};

const TOKEN: &str = "bench-admin-token";
const TIMED: u32 = 500;
const LARGE: u32 = 5_000;

fn start(balance: &str, dir: &std::path::Path) -> (Killed, u16) {
    let (http, admin) = (free_port(), free_port());
    let config = format!(
        "[server]\nthreads = 1\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"127.0.0.1:{http}\"\nupstream = \"app\"\n\n[upstream.app]\nbalance = \"{balance}\"\n{key}",
        dir.join("data").display(),
        key = if balance == "hash" { "hash_key = \"query:uid\"\n" } else { "" },
    );
    let path = dir.join(format!("{balance}.toml"));
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["run", "--config"])
        .arg(&path)
        .env("TIDEWAY_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tideway runs");
    wait_port(admin);
    (Killed(child), admin)
}

async fn register(client: &reqwest::Client, admin: u16, i: u32) {
    let body = serde_json::json!({
        "id": format!("b{i}"),
        "addr": format!("10.{}.{}.{}:2346", i >> 16, (i >> 8) & 255, i & 255),
        "weight": 1 + i % 3,
    });
    let r = client
        .post(format!(
            "http://127.0.0.1:{admin}/v1/upstreams/app/backends"
        ))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("admin answers");
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Time `TIMED` registrations, one after another, numbered from `from`.
async fn timed(client: &reqwest::Client, admin: u16, from: u32) -> Duration {
    let start = Instant::now();
    for i in from..from + TIMED {
        register(client, admin, i).await;
    }
    start.elapsed()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    println!(
        "registrations: {TIMED} one after another, from an empty pool and at {LARGE} backends"
    );
    // `REGISTRATIONS_ONLY=hash` (say) runs one algorithm.
    let only = std::env::var("REGISTRATIONS_ONLY").ok();
    for balance in ["round_robin", "least_conn", "p2c", "hash"] {
        if only.as_deref().is_some_and(|o| o != balance) {
            continue;
        }
        // Each figure is the best of 3: from an empty pool, 3 fresh proxies; at LARGE, 3
        // batches one after another (LARGE, then LARGE + 500, then LARGE + 1000).
        let client = reqwest::Client::new();
        let mut empty = Duration::MAX;
        for _ in 0..3 {
            let (_proxy, admin) = start(balance, dir.path());
            empty = empty.min(timed(&client, admin, 0).await);
        }
        let (_proxy, admin) = start(balance, dir.path());
        // Fill to LARGE, 16 at a time.
        let mut i = 0;
        while i < LARGE {
            let batch: Vec<_> = (i..(i + 16).min(LARGE))
                .map(|k| register(&client, admin, k))
                .collect();
            futures_util::future::join_all(batch).await;
            i += 16;
        }
        // A client of its own, like the empty runs' (the fill left it 16 pooled connections).
        let client = reqwest::Client::new();
        let mut large = Duration::MAX;
        for round in 0..3 {
            large = large.min(timed(&client, admin, LARGE + round * TIMED).await);
        }
        println!(
            "{balance:<12} empty {:>7.1} ms ({:.0} us each)   at {LARGE} {:>7.1} ms ({:.0} us each)   ratio {:.2}x",
            empty.as_secs_f64() * 1e3,
            empty.as_secs_f64() * 1e6 / f64::from(TIMED),
            large.as_secs_f64() * 1e3,
            large.as_secs_f64() * 1e6 / f64::from(TIMED),
            large.as_secs_f64() / empty.as_secs_f64()
        );
    }
}
