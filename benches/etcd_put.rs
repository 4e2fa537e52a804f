//! What an etcd put costs tideway, with no other backend and with 5,000 etcd-registered
//! backends in the same upstream: the time from the put to the first request routed to the new
//! backend (over 200 puts), and tideway's own CPU time per put (500 puts, best of 3 batches;
//! all its threads, from a cgroup of its own). A put must cost the same at any pool size: the
//! target is ≤ 1.5x for both, and p99 under 50 ms (nginx-upsync polls every 5 s).
//!
//! Run with `cargo bench --bench etcd_put` (installs Debian `etcd-server` if missing). The
//! 5,000 are disabled (an etcd state key each), so a request is routed only once the new
//! backend is in; they are in the upstream's table, membership and the saved etcd set all
//! the same.

use etcd_client::{Client, GetOptions, Txn, TxnOp};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "cpu.rs"]
mod cpu;
#[path = "support.rs"]
mod support;

use cpu::CpuMeter;
use support::{free_port, tideway, wait_port, Killed};

/// Puts timed to their first routed request, at each size.
const PUTS: usize = 200;
/// Puts per CPU batch.
const CPU_PUTS: usize = 500;
/// The large pool.
const LARGE: usize = 5_000;
const TOKEN: &str = "bench-admin-token";
const ROOT: &str = "/b/upstreams/app";

struct Bench {
    etcd: Client,
    http: u16,
    admin: u16,
    backend: String,
    cpu: CpuMeter,
}

/// What one pool size measured.
struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
    cpu_per_put: Duration,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("etcd_put: run with `cargo bench --bench etcd_put`; skipped under cargo test");
        return;
    }
    if Command::new("etcd").arg("--version").output().is_err() {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "etcd-server"])
            .status();
    }
    let dir = tempfile::tempdir().unwrap();
    let (cp, pp, http, admin, be) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let url = format!("http://127.0.0.1:{cp}");
    let peer = format!("http://127.0.0.1:{pp}");
    let _etcd = Killed(
        Command::new("etcd")
            .args(["--name", "b", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("b={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd"),
    );
    wait_port(cp);
    let listen = format!("127.0.0.1:{be}");
    let _backend = tideway(&["demo-backend", "--listen", &listen], &[]);
    wait_port(be);
    let cfg = dir.path().join("tideway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[store]\ndata_dir = \"{}\"\netcd = {{ endpoints = [\"{url}\"], prefix = \"/b\" }}\n[[listener]]\nlisten = \"127.0.0.1:{http}\"\nupstream = \"app\"\n[upstream.app]\nbackends = []\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let proxy = tideway(
        &["run", "--config", cfg.to_str().unwrap()],
        &[("TIDEWAY_ADMIN_TOKEN", TOKEN)],
    );
    wait_port(http);
    wait_port(admin);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (empty, large) = rt.block_on(async {
        let mut b = Bench {
            etcd: Client::connect([&url], None).await.unwrap(),
            http,
            admin,
            backend: listen.clone(),
            cpu: CpuMeter::attach(proxy.0.id()),
        };
        let empty = b.measure(0).await;
        b.fill().await;
        let large = b.measure(LARGE).await;
        (empty, large)
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (n, f) in [(0, &empty), (LARGE, &large)] {
        println!(
            "etcd put at {n:>4} backends: put -> first request routed, {PUTS} puts: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; tideway CPU {:.1} us/put ({CPU_PUTS} puts, best of 3)",
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            f.cpu_per_put.as_secs_f64() * 1e6,
        );
    }
    println!(
        "etcd put, {LARGE} backends / 0: latency p50 {:.2}x, p99 {:.2}x; CPU per put {:.2}x (target ≤ 1.5x each; p99 < 50 ms)",
        large.p50.as_secs_f64() / empty.p50.as_secs_f64(),
        large.p99.as_secs_f64() / empty.p99.as_secs_f64(),
        large.cpu_per_put.as_secs_f64() / empty.cpu_per_put.as_secs_f64(),
    );
    drop(proxy); // before its meter, which removes the emptied cgroup
}

impl Bench {
    /// GET `path` from tideway's admin API, as JSON.
    async fn admin_json(&self, client: &reqwest::Client, path: &str) -> serde_json::Value {
        client
            .get(format!("http://127.0.0.1:{}{path}", self.admin))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Both figures with `base` backends in the pool.
    async fn measure(&mut self, base: usize) -> Figures {
        eprintln!("etcd_put: measuring at {base} backends");
        let mut times = self.latencies().await;
        times.sort();
        let pct =
            |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
        let mut cpu_per_put = Duration::MAX;
        eprintln!("etcd_put: CPU batches at {base} backends");
        for round in 0..3 {
            cpu_per_put = cpu_per_put.min(self.cpu_batch(base, round).await);
        }
        Figures {
            p50: pct(0.50),
            p99: pct(0.99),
            max: *times.last().unwrap(),
            cpu_per_put,
        }
    }

    /// Put a backend, time it to the first request routed (200), delete it, wait for 503.
    async fn latencies(&mut self) -> Vec<Duration> {
        let client = reqwest::Client::new();
        let u = format!("http://127.0.0.1:{}/", self.http);
        let status = |c: &reqwest::Client| {
            let req = c.get(&u).send();
            async move { req.await.map(|r| r.status().as_u16()).unwrap_or(0) }
        };
        let mut times = Vec::with_capacity(PUTS);
        for i in 0..PUTS {
            let key = format!("{ROOT}/backends/n{i}");
            let start = Instant::now();
            self.etcd
                .put(key.clone(), self.backend.clone(), None)
                .await
                .unwrap();
            while status(&client).await != 200 {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "put {i} never routed"
                );
            }
            times.push(start.elapsed());
            self.etcd.delete(key, None).await.unwrap();
            let gone = Instant::now();
            while status(&client).await != 503 {
                assert!(
                    gone.elapsed() < Duration::from_secs(10),
                    "delete {i} never applied"
                );
            }
        }
        times
    }

    /// `CPU_PUTS` puts one after another until the pool holds them all: tideway's CPU time
    /// per put. Then they are deleted (not measured) and gone from the pool.
    async fn cpu_batch(&mut self, base: usize, round: usize) -> Duration {
        let prefix = format!("{ROOT}/backends/c{round}-");
        let used = self.cpu.used();
        for i in 0..CPU_PUTS {
            self.etcd
                .put(format!("{prefix}{i}"), self.backend.clone(), None)
                .await
                .unwrap();
        }
        self.wait_backends(base + CPU_PUTS).await;
        let per_put = self.cpu.used().saturating_sub(used) / CPU_PUTS as u32;
        self.etcd
            .delete(
                prefix,
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        self.wait_backends(base).await;
        per_put
    }

    /// `LARGE` backends at addresses nothing listens on, each disabled by a state key, put in
    /// transactions of 100; waits until the pool holds them, all disabled.
    async fn fill(&mut self) {
        eprintln!("etcd_put: filling the pool to {LARGE}");
        let put = |key: String, value: String| TxnOp::put(key, value, None);
        let batches: Vec<Vec<TxnOp>> = (0..LARGE)
            .map(|i| {
                let addr = format!("10.9.{}.{}:2346", i >> 8, i & 255);
                put(format!("{ROOT}/backends/f{i}"), addr)
            })
            .collect::<Vec<_>>()
            .chunks(100)
            .map(<[TxnOp]>::to_vec)
            .collect();
        for ops in batches {
            self.etcd.txn(Txn::new().and_then(ops)).await.unwrap();
        }
        self.wait_backends(LARGE).await;
        for chunk in (0..LARGE).collect::<Vec<_>>().chunks(100) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|i| {
                    put(
                        format!("{ROOT}/state/f{i}"),
                        r#"{"state":"disabled"}"#.into(),
                    )
                })
                .collect();
            self.etcd.txn(Txn::new().and_then(ops)).await.unwrap();
        }
        let listed = self
            .etcd
            .get(
                format!("{ROOT}/"),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap();
        assert_eq!(listed.count() as usize, 2 * LARGE);
        // Disabled, all of them: no request is routed while only they are in.
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.admin_json(&client, "/v1/upstreams/app").await;
            let disabled = v["backends"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["state"] == "disabled")
                .count();
            if disabled == LARGE {
                return;
            }
            assert!(Instant::now() < deadline, "{disabled} of {LARGE} disabled");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Poll the (small) scale answer until the pool holds `n` backends.
    async fn wait_backends(&self, n: usize) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.admin_json(&client, "/v1/upstreams/app/scale").await;
            if v["backends"].as_u64() == Some(n as u64) {
                return;
            }
            assert!(Instant::now() < deadline, "pool at {v}, waiting for {n}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
