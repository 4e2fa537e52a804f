//! The per-request cost of per-client limits: a rate check (`limit_req`, nodelay, a rate no
//! client reaches) and a connection count taken and given back (`limit_conn`), alone and both
//! together as a request pays them, with 1 client address and with 100,000 (each iteration the
//! next address, so the zone's table is as large as a flood of distinct clients makes it).
//!
//! `cargo bench --bench limit`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::net::IpAddr;
use tideway::config::{ClientLimit, LimitRule, LimitZone, ZoneKind};
use tideway::proxy::limit::ClientLimits;

/// Address number `i`, in 10.0.0.0/8.
fn addr(i: u32) -> Option<IpAddr> {
    Some(IpAddr::from((0x0a00_0000 | i).to_be_bytes()))
}

fn limit(name: &str, kind: ZoneKind, rule: LimitRule) -> ClientLimit {
    ClientLimit {
        zone: LimitZone {
            name: name.into(),
            kind,
            // Room for every address: "16m" of rate entries, "8m" of conn entries.
            entries: 131_072,
        },
        rule,
        status: 503,
    }
}

fn rate(name: &str) -> ClientLimit {
    limit(
        name,
        ZoneKind::Rate {
            milli_per_sec: 1_000_000_000,
        },
        LimitRule::Rate {
            burst: u32::MAX,
            delay: u32::MAX,
        },
    )
}

fn conn(name: &str) -> ClientLimit {
    limit(name, ZoneKind::Conn, LimitRule::Conn { max: 1_000_000 })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("limit");
    for clients in [1u32, 100_000] {
        let sets = [
            ("rate", vec![rate(&format!("r{clients}"))]),
            ("conn", vec![conn(&format!("c{clients}"))]),
            (
                "rate+conn",
                vec![rate(&format!("rb{clients}")), conn(&format!("cb{clients}"))],
            ),
        ];
        for (what, set) in sets {
            let limits = ClientLimits::new(&set);
            let mut i = 0u32;
            g.bench_with_input(BenchmarkId::new(what, clients), &clients, |b, &n| {
                b.iter(|| {
                    i = (i + 1) % n;
                    let ip = addr(i);
                    black_box(limits.rate(ip).unwrap());
                    black_box(limits.conn(ip).unwrap());
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
