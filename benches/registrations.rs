//! What a registration costs as the pool grows, end to end: HTTP registrations against a
//! running tideway, 500 from an empty pool and 500 more at 5,000 backends, for every algorithm
//! (each the best of 3 runs: this machine is noisy).
//!
//! `cargo bench --bench registrations`. Prints one line per algorithm: wall time per
//! registration and tideway's own CPU time per registration (all its threads, from a cgroup of
//! its own), from empty and at 5,000, and their ratios (the figure the pool
//! must keep near 1: a change must not cost more in a large pool).

#[path = "cpu.rs"]
mod cpu;
#[path = "support.rs"]
mod support;

use cpu::CpuMeter;
use std::time::{Duration, Instant};
use support::{free_port, tideway, wait_port, Http, Killed};

const TOKEN: &str = "bench-admin-token";
const TIMED: u32 = 500;
const LARGE: u32 = 5_000;
/// Connections the timed registrations go over.
const CLIENTS: usize = 16;

fn start(balance: &str, dir: &std::path::Path) -> (Killed, u16) {
    let (http, admin) = (free_port(), free_port());
    let config = format!(
        "[server]\nthreads = 1\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"127.0.0.1:{http}\"\nupstream = \"app\"\n\n[upstream.app]\nbalance = \"{balance}\"\n{key}",
        dir.join("data").display(),
        key = if balance == "hash" { "hash_key = \"query:uid\"\n" } else { "" },
    );
    let path = dir.join(format!("{balance}.toml"));
    std::fs::write(&path, config).unwrap();
    let proxy = tideway(
        &["run", "--config", path.to_str().unwrap()],
        &[("TIDEWAY_ADMIN_TOKEN", TOKEN)],
    );
    wait_port(admin);
    (proxy, admin)
}

fn register(http: &mut Http, i: u32) {
    let body = serde_json::json!({
        "id": format!("b{i}"),
        "addr": format!("10.{}.{}.{}:2346", i >> 16, (i >> 8) & 255, i & 255),
        "weight": 1 + i % 3,
    })
    .to_string();
    let status = http.request("POST", "/v1/upstreams/app/backends", TOKEN, &body);
    assert!(
        (200..300).contains(&status),
        "registration answered {status}"
    );
}

/// `TIMED` registrations numbered from `from`, sent over `CLIENTS` connections at once (so
/// tideway is busy while measured, not waking up for each one): the wall time, and the CPU
/// time tideway spent meanwhile.
fn timed(admin: u16, cpu: &CpuMeter, from: u32) -> (Duration, Duration) {
    let mut conns: Vec<Http> = (0..CLIENTS).map(|_| Http::connect(admin)).collect();
    let (start, used) = (Instant::now(), cpu.used());
    std::thread::scope(|s| {
        for (k, http) in conns.iter_mut().enumerate() {
            s.spawn(move || {
                for i in (from + k as u32..from + TIMED).step_by(CLIENTS) {
                    register(http, i);
                }
            });
        }
    });
    (start.elapsed(), cpu.used().saturating_sub(used))
}

/// The best of runs: the least wall time and the least CPU time.
fn best(a: (Duration, Duration), b: (Duration, Duration)) -> (Duration, Duration) {
    (a.0.min(b.0), a.1.min(b.1))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "registrations: run with `cargo bench --bench registrations`; skipped under cargo test"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    println!(
        "registrations: {TIMED} over {CLIENTS} connections, from an empty pool and at {LARGE} backends"
    );
    // `REGISTRATIONS_ONLY=hash` (say) runs one algorithm.
    let only = std::env::var("REGISTRATIONS_ONLY").ok();
    for balance in ["round_robin", "least_conn", "p2c", "hash"] {
        if only.as_deref().is_some_and(|o| o != balance) {
            continue;
        }
        // Each figure is the best of 3: from an empty pool, 3 fresh proxies; at LARGE, 3
        // batches one after another (LARGE, then LARGE + 500, then LARGE + 1000).
        let mut empty = (Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            let (proxy, admin) = start(balance, dir.path());
            let cpu = CpuMeter::attach(proxy.0.id());
            empty = best(empty, timed(admin, &cpu, 0));
            drop(proxy);
        }
        let (proxy, admin) = start(balance, dir.path());
        let cpu = CpuMeter::attach(proxy.0.id());
        // Fill to LARGE over 16 connections.
        std::thread::scope(|s| {
            for k in 0..16 {
                s.spawn(move || {
                    let mut http = Http::connect(admin);
                    for i in (k..LARGE).step_by(16) {
                        register(&mut http, i);
                    }
                });
            }
        });
        let mut large = (Duration::MAX, Duration::MAX);
        for round in 0..3 {
            large = best(large, timed(admin, &cpu, LARGE + round * TIMED));
        }
        let each = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(TIMED);
        println!(
            "{balance:<12} wall us/registration: empty {:>5.0}, at {LARGE} {:>5.0} ({:.2}x)   tideway CPU us/registration: empty {:>5.1}, at {LARGE} {:>5.1} ({:.2}x)",
            each(empty.0),
            each(large.0),
            large.0.as_secs_f64() / empty.0.as_secs_f64(),
            each(empty.1),
            each(large.1),
            large.1.as_secs_f64() / empty.1.as_secs_f64(),
        );
        drop(proxy); // before its meter, which removes the emptied cgroup
        drop(cpu);
    }
}
