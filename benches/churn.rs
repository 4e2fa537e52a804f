//! HTTP tail latency while the pool churns: tideway in front of one demo backend that 10,000
//! registered backends all point at, an open-loop load at a fixed rate, measured once quietly
//! and once while 1,000 changes a second land on the pool (registration refreshes that flip a
//! backend's weight between 1 and 2, each a real change that publishes a snapshot).
//!
//! `cargo bench --bench churn`. Prints p50 and p99 for both runs and the p99 ratio.

#[path = "compare/latency.rs"]
#[allow(dead_code)] // the compare bench's load; this bench runs it once (`run`), not in rounds
mod latency;
#[path = "support.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{free_port, tideway, wait_port, Http};

const TOKEN: &str = "bench-admin-token";
const BACKENDS: u32 = 10_000;
const CHANGES_PER_SECOND: u64 = 1_000;
const RATE: f64 = 5_000.0;
const SECONDS: u64 = 10;

fn body(i: u32, weight: u32, backend: u16) -> String {
    serde_json::json!({
        "id": format!("b{i}"),
        "addr": format!("127.0.0.1:{backend}"),
        "weight": weight,
        "ttl": 3600,
    })
    .to_string()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = free_port();
    let listen = format!("127.0.0.1:{backend}");
    let _demo = tideway(&["demo-backend", "--listen", &listen, "--id", "churn"], &[]);
    wait_port(backend);
    let (http, admin) = (free_port(), free_port());
    let config = format!(
        "[server]\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[store]\ndata_dir = \"{}\"\n[[listener]]\nlisten = \"127.0.0.1:{http}\"\nupstream = \"app\"\n[upstream.app]\nbalance = \"round_robin\"\n",
        dir.path().join("data").display()
    );
    let path = dir.path().join("churn.toml");
    std::fs::write(&path, config).unwrap();
    let _proxy = tideway(
        &["run", "--config", path.to_str().unwrap()],
        &[("TIDEWAY_ADMIN_TOKEN", TOKEN)],
    );
    wait_port(admin);
    wait_port(http);
    std::thread::scope(|s| {
        for k in 0..8 {
            s.spawn(move || {
                let mut c = Http::connect(admin);
                for i in (k..BACKENDS).step_by(8) {
                    let st = c.request(
                        "POST",
                        "/v1/upstreams/app/backends",
                        TOKEN,
                        &body(i, 1, backend),
                    );
                    assert!((200..300).contains(&st), "registration answered {st}");
                }
            });
        }
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!("churn: {BACKENDS} backends, {RATE} req/s for {SECONDS} s, quiet and with {CHANGES_PER_SECOND} changes/s");
    let quiet = rt.block_on(latency::run(http, RATE, SECONDS));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let churner = {
        let (stop, done) = (stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut c = Http::connect(admin);
            let start = Instant::now();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                // Paced: change n is due at n / CHANGES_PER_SECOND.
                let due = start + Duration::from_secs_f64(n as f64 / CHANGES_PER_SECOND as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let i = (n % u64::from(BACKENDS)) as u32;
                // Every backend goes to weight 2 in the first pass, back to 1 in the next, ...
                let weight = if (n / u64::from(BACKENDS)).is_multiple_of(2) {
                    2
                } else {
                    1
                };
                let st = c.request(
                    "POST",
                    "/v1/upstreams/app/backends",
                    TOKEN,
                    &body(i, weight, backend),
                );
                assert!((200..300).contains(&st), "change answered {st}");
                n += 1;
                done.store(n, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let churned = rt.block_on(latency::run(http, RATE, SECONDS));
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    churner.join().unwrap();
    let changes = done.load(Ordering::Relaxed) as f64 / elapsed;
    println!(
        "quiet:    p50 {:>6.0} us  p99 {:>6.0} us  ({} failed)",
        quiet.p50, quiet.p99, quiet.failed
    );
    println!(
        "churning: p50 {:>6.0} us  p99 {:>6.0} us  ({} failed), {changes:.0} changes/s applied",
        churned.p50, churned.p99, churned.failed
    );
    println!("p99 with churn / quiet: {:.2}x", churned.p99 / quiet.p99);
}
