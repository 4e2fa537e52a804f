//! Route selection: what picking a request's route costs at 1, 100 and 1,000 routes.
//!
//! `cargo bench --bench routing`. The 1-route table is `upstream = "NAME"` (no matching at
//! all). The larger ones mix what real configs hold, spread over 10 server names: a third
//! exact (`= /pN`), a third prefix (`/pN/`), a third regex (`~ ^/rN/.*\.json$`), and a
//! catch-all per server. Each table is asked for the same requests: an exact hit, a prefix
//! hit, a regex hit (the regexes of the chosen server are tried in order), and a miss that
//! ends at the catch-all after trying every regex of its server.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use tideway::config::routes::single;
use tideway::config::{LocationConfig, PathRule, RouteAction, RouteSettings, ServerConfig};
use tideway::routing::Table;

const SERVERS: usize = 10;

fn location(rule: &str) -> LocationConfig {
    LocationConfig {
        rule: PathRule::parse(rule).unwrap(),
        action: RouteAction::Proxy {
            upstream: "u".into(),
            uri: None,
        },
        settings: RouteSettings::default(),
        nested: Vec::new(),
        at: "bench".into(),
    }
}

/// `n` routes over [`SERVERS`] servers, each with a catch-all `/` (one route: the shorthand).
fn routes(n: usize) -> Vec<ServerConfig> {
    if n == 1 {
        return single("u", "bench");
    }
    let servers = SERVERS.min(n);
    (0..servers)
        .map(|s| {
            let mut locations = vec![location("/")];
            for i in (s..n).step_by(servers).skip(1) {
                locations.push(location(&match i % 3 {
                    0 => format!("= /p{i}"),
                    1 => format!("/p{i}/"),
                    _ => format!("~ ^/r{i}/.*\\.json$"),
                }));
            }
            ServerConfig {
                names: vec![format!("s{s}.example.com")],
                default: s == 0,
                locations,
                tls: None,
            }
        })
        .collect()
}

fn selection(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_selection");
    for n in [1usize, 100, 1000] {
        let table = Table::new(&routes(n)).unwrap();
        assert_eq!(table.routes().len(), n);
        // Requests for the last server's routes (the longest lists to search).
        let s = SERVERS.min(n) - 1;
        let host = format!("s{s}.example.com");
        let last = |m: usize| {
            (s..n)
                .step_by(SERVERS.min(n))
                .skip(usize::from(n > 1))
                .rfind(|i| i % 3 == m)
        };
        let requests: Vec<String> = [
            last(0).map(|i| format!("/p{i}")),
            last(1).map(|i| format!("/p{i}/item?id=1")),
            last(2).map(|i| format!("/r{i}/a/b.json")),
            Some("/not/configured/anywhere".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                for r in &requests {
                    black_box(table.select(Some(black_box(host.as_bytes())), r.as_bytes()));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
