//! The reconnect storm as a scenario (not a test; `cargo bench --bench storm`): 5,000
//! WebSockets reconnect at once to 3 demo backends whose upstream admits 500 new upgrades a
//! second per backend (`admission`, default burst). Clients that are refused come back after
//! their `Retry-After`, as a well-behaved client does. It reports how long the storm took to
//! settle (every client connected), the upgrades tideway admitted to each backend between
//! scrapes of its own `tideway_websocket_upgrades_total` about a second apart (an interval's
//! ends are when each scrape was answered: on a loaded machine the counts may have been read
//! earlier), and the 101s the clients saw each second. Expect about 5,000 / (3 x 500) = 3.3 s.
//!
//! `STORM_CLIENTS`, `STORM_RATE` and `STORM_QUEUE_TIMEOUT` change the scenario.

#[path = "../tests/support/storm.rs"]
mod storm;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use storm::{upgrades, Ended};
use support::{free_port, tideway, wait_port};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The admitted counts per backend, from tideway's /metrics.
async fn admitted(client: &reqwest::Client, url: &str) -> BTreeMap<String, u64> {
    let text = match client.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    upgrades(&text, "app")
        .into_iter()
        .filter(|((_, outcome), _)| outcome == "admitted")
        .map(|((b, _), n)| (b, n))
        .collect()
}

fn main() {
    let clients: usize = env_or("STORM_CLIENTS", 5000);
    let rate: u32 = env_or("STORM_RATE", 500);
    let queue_timeout: String = env_or("STORM_QUEUE_TIMEOUT", "10s".to_string());
    let fds = storm::raise_fd_limit();
    assert!(
        fds as usize > clients + 1000,
        "ulimit -n is {fds}: too low for {clients} clients"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut held = Vec::new();
    let mut items = Vec::new();
    for i in 1..=3 {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        held.push(tideway(
            &[
                "demo-backend",
                "--listen",
                &listen,
                "--id",
                &format!("b{i}"),
            ],
            &[],
        ));
        wait_port(port);
        items.push(format!("{{ addr = \"{listen}\", id = \"b{i}\" }}"));
    }
    let (http, admin) = (free_port(), free_port());
    let config = format!(
        "[server]\nthreads = 2\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"127.0.0.1:{http}\"\nupstream = \"app\"\n\n[upstream.app]\nbalance = \"round_robin\"\nbackends = [{}]\nadmission = {{ per_second = {rate}, queue = {clients}, queue_timeout = \"{queue_timeout}\" }}\n",
        dir.path().join("data").display(),
        items.join(", ")
    );
    let path = dir.path().join("tideway.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_string_lossy().into_owned();
    held.push(tideway(
        &["run", "--config", &path],
        &[("TIDEWAY_ADMIN_TOKEN", "storm-bench-token")],
    ));
    wait_port(http);
    wait_port(admin);
    let to: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let metrics = format!("http://127.0.0.1:{admin}/metrics");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let scraper = reqwest::Client::new();
        let conns = storm::connect_all(to, clients).await;
        let before = admitted(&scraper, &metrics).await;
        let started = Instant::now();
        let before = (Duration::ZERO, before);
        // tideway's own counts, once a second, until the storm is over.
        let done = tokio_util::sync::CancellationToken::new();
        let sampling = tokio::spawn({
            let (done, scraper, metrics) = (done.clone(), scraper.clone(), metrics.clone());
            async move {
                let mut samples = vec![before];
                let mut tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + Duration::from_secs(1),
                    Duration::from_secs(1),
                );
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let counts = admitted(&scraper, &metrics).await;
                            samples.push((started.elapsed(), counts));
                        }
                        () = done.cancelled() => break,
                    }
                }
                let counts = admitted(&scraper, &metrics).await;
                samples.push((started.elapsed(), counts));
                samples
            }
        });
        let ended = storm::storm(to, conns, true, Duration::from_secs(120)).await;
        let settled = ended.iter().map(|c| c.at).max().unwrap_or_default();
        done.cancel();
        let samples = sampling.await.unwrap();
        let took = started.elapsed();

        let (mut connected, mut failed, mut retried) = (0, 0, 0);
        let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
        for c in &ended {
            match &c.ended {
                Ended::Connected(_) => {
                    connected += 1;
                    *seen.entry(c.at.as_secs()).or_default() += 1;
                }
                Ended::Refused { .. } | Ended::Failed(_) => failed += 1,
            }
            if c.tries > 1 {
                retried += 1;
            }
        }
        println!(
            "storm: {clients} clients, 3 backends, admission {rate}/s per backend (burst {}), queue_timeout {queue_timeout}",
            tideway::config::AdmissionConfig::default_burst(rate)
        );
        println!(
            "settled in {:.2} s: {connected} connected, {failed} not, {retried} came back after a 503 (expected {:.2} s at the rate)",
            settled.as_secs_f64(),
            clients as f64 / (3.0 * f64::from(rate))
        );
        println!("admitted per interval (tideway's counters, scraped about once a second; times are");
        println!("when each scrape was answered, after the storm started):");
        println!("  interval (s)    b1     b2     b3     all    all/s");
        for pair in samples.windows(2) {
            let ((from, a), (to, b)) = (&pair[0], &pair[1]);
            let per: Vec<u64> = ["b1", "b2", "b3"]
                .iter()
                .map(|k| b.get(*k).copied().unwrap_or(0) - a.get(*k).copied().unwrap_or(0))
                .collect();
            let all = per.iter().sum::<u64>();
            let span = (*to - *from).as_secs_f64().max(1e-3);
            println!(
                "  {:>5.2}-{:<5.2}     {:<6} {:<6} {:<6} {:<6} {:.0}",
                from.as_secs_f64(),
                to.as_secs_f64(),
                per[0],
                per[1],
                per[2],
                all,
                all as f64 / span
            );
        }
        println!("101s seen by the clients per second:");
        for (s, n) in &seen {
            println!("  {s}-{}    {n}", s + 1);
        }
        let text = match scraper.get(&metrics).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        println!("tideway's counts at the end: {:?}", upgrades(&text, "app"));
        let failures: f64 = text
            .lines()
            .filter(|l| l.starts_with("tideway_backend_failures_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        println!("backend failures counted: {failures}");
        for l in text.lines().filter(|l| l.starts_with("tideway_upstream_failures_total{")) {
            println!("  {l}");
        }
        println!("(scenario wall time {:.2} s)", took.as_secs_f64());
        drop(ended);
    });
    drop(held);
}
