//! Time from an etcd put to the first request routed to the new backend, over 200 puts.
//! Run with `cargo bench --bench etcd_put` (installs Debian `etcd-server` if missing).
//! nginx-upsync polls every 5 s; the target here is p99 under 50 ms.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;

use support::{free_port, tideway, wait_port, Killed};

const PUTS: usize = 200;

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
    let _tideway = tideway(&["run", "--config", cfg.to_str().unwrap()], &[]);
    wait_port(http);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut times = rt.block_on(async {
        let mut etcd = etcd_client::Client::connect([&url], None).await.unwrap();
        let client = reqwest::Client::new();
        let status = |client: &reqwest::Client| {
            let u = format!("http://127.0.0.1:{http}/");
            let c = client.clone();
            async move {
                c.get(u)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        };
        let mut times = Vec::with_capacity(PUTS);
        for i in 0..PUTS {
            let key = format!("/b/upstreams/app/backends/n{i}");
            let start = Instant::now();
            etcd.put(key.clone(), format!("127.0.0.1:{be}"), None)
                .await
                .unwrap();
            while status(&client).await != 200 {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "put {i} never routed"
                );
            }
            times.push(start.elapsed());
            etcd.delete(key, None).await.unwrap();
            let gone = Instant::now();
            while status(&client).await != 503 {
                assert!(
                    gone.elapsed() < Duration::from_secs(10),
                    "delete {i} never applied"
                );
            }
        }
        times
    });
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "etcd put -> first request routed, {PUTS} puts: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 < 50 ms; nginx-upsync polls every 5 s)",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3
    );
}
