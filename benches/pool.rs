//! The pool at scale: what a pick and a change cost at 10 to 10,000 backends, for every
//! algorithm, and what 30 backends at weight 1000 cost on a `hash` upstream.
//!
//! `cargo bench --bench pool`. A change is one diff through the controller, publish included:
//! the benchmark adds a backend and removes it again, and reports the pair (two diffs).

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tideway::config::{Balance, UpstreamConfig, UpstreamPolicy};
use tideway::pool::toggles::Toggles;
use tideway::pool::{BackendSpec, Controller, Diff, Source};
use tokio_util::sync::CancellationToken;

const ALGOS: [Balance; 4] = [
    Balance::RoundRobin,
    Balance::LeastConn,
    Balance::P2c,
    Balance::Hash,
];

fn spec(i: u32, weight: u32) -> BackendSpec {
    BackendSpec {
        id: format!("10.{}.{}.{}:2346", i >> 16, (i >> 8) & 255, i & 255).into(),
        addr: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 2346)),
        weight,
        max_conns: 0,
        source: Source::Http,
        server: Default::default(),
    }
}

fn add(i: u32, weight: u32) -> Diff {
    Diff::Add {
        upstream: "u".into(),
        backend: spec(i, weight),
        ttl: None,
        operator: false,
    }
}

/// A controller whose upstream `u` has `n` backends of weights 1 to 3.
fn pool(balance: Balance, n: u32) -> Controller {
    let cfg = [UpstreamConfig {
        name: "u".into(),
        policy: UpstreamPolicy {
            balance,
            ..UpstreamPolicy::default()
        },
        backends: Vec::new(),
        names: Vec::new(),
    }];
    let mut c = Controller::new(&cfg, CancellationToken::new(), Toggles::in_memory());
    for i in 0..n {
        c.apply(add(i, 1 + i % 3)).expect("add");
    }
    c
}

fn picks(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [10, 10_000] {
        for balance in ALGOS {
            let ctl = pool(balance, n);
            let snap = ctl.current().load_full();
            let up = snap.upstream("u").expect("upstream").clone();
            let mut key: u32 = 1;
            g.bench_with_input(BenchmarkId::new(balance.to_string(), n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_mul(2_654_435_761).wrapping_add(1);
                    black_box(up.pick(key, |_| false).map(|b| b.addr))
                })
            });
        }
    }
    g.finish();
}

fn changes(c: &mut Criterion) {
    let mut g = c.benchmark_group("change");
    g.sample_size(30);
    for n in [0, 5_000, 10_000] {
        for balance in ALGOS {
            let mut ctl = pool(balance, n);
            let mut next = 1_000_000;
            g.bench_with_input(BenchmarkId::new(balance.to_string(), n), &n, |b, _| {
                b.iter_batched(
                    || {
                        next += 1;
                        next
                    },
                    |i| {
                        ctl.apply(add(i, 2)).expect("add");
                        ctl.apply(Diff::Remove {
                            upstream: "u".into(),
                            id: spec(i, 2).id,
                        })
                        .expect("remove")
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// 30 registrations at weight 1000 on a `hash` upstream: time and RSS, printed once.
fn heavy_weights(_: &mut Criterion) {
    let before = rss_kib();
    let start = Instant::now();
    let mut ctl = pool(Balance::Hash, 0);
    for i in 0..30 {
        ctl.apply(add(i, 1000)).expect("add");
    }
    let took = start.elapsed();
    let grown = rss_kib().saturating_sub(before);
    let snap = ctl.current().load_full();
    let up = snap.upstream("u").expect("upstream");
    assert!(up.pick(42, |_| false).is_some());
    println!(
        "weights: 30 backends at weight 1000 on hash: {:.2} s, RSS +{:.1} MiB",
        took.as_secs_f64(),
        grown as f64 / 1024.0
    );
    drop(ctl);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = heavy_weights, picks, changes
}
criterion_main!(benches);
