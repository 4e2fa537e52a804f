//! Health: active checks of each kind, passive ejection, retries, hysteresis, slow start.

mod common;

use common::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn health(kind: &str, interval: &str, rise: u32, fall: u32) -> String {
    let path = if kind == "websocket" {
        "/ws"
    } else {
        "/health"
    };
    format!("health = {{ kind = \"{kind}\", path = \"{path}\", interval = \"{interval}\", timeout = \"500ms\", rise = {rise}, fall = {fall} }}")
}

#[tokio::test]
async fn tcp_check_catches_a_closed_port() {
    let a = backend("a").await;
    let closed = free_port();
    let p = start_proxy(&format!(
        "[upstream.app]\n{}\nbackends = [{{ addr = \"{}\", id = \"a\" }}, {{ addr = \"127.0.0.1:{closed}\", id = \"closed\" }}]",
        health("tcp", "100ms", 2, 2),
        a.addr
    ))
    .await;
    wait_until(Duration::from_secs(5), || async {
        p.health().await.get("a") == Some(&true)
    })
    .await;
    assert!(
        !p.health().await["closed"],
        "a closed port never passes a TCP check"
    );
    let client = reqwest::Client::new();
    for _ in 0..20 {
        assert_eq!(backend_id(&client, &p.url("/")).await, "a");
    }
}

#[tokio::test]
async fn http_check_catches_a_500_behind_an_open_port() {
    let (a, _) = faulty_backend("a").await;
    let (b, b_faults) = faulty_backend("b").await;
    b_faults.http_status.store(500, Ordering::Relaxed);
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\n{}\n{}",
        health("http", "100ms", 2, 2),
        backends_toml(&[(&a, 1), (&b, 1)])
    ))
    .await;
    wait_until(Duration::from_secs(5), || async {
        p.health().await.get("a") == Some(&true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !p.health().await["b"],
        "TCP open but HTTP 500 must not pass"
    );
    // b recovers: its first pass brings it in.
    b_faults.http_status.store(0, Ordering::Relaxed);
    wait_until(Duration::from_secs(5), || async { p.health().await["b"] }).await;
    // b fails again: out after `fall` checks.
    b_faults.http_status.store(503, Ordering::Relaxed);
    wait_until(Duration::from_secs(5), || async { !p.health().await["b"] }).await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        assert_eq!(backend_id(&client, &p.url("/")).await, "a");
    }
}

#[tokio::test]
async fn websocket_check_catches_a_refused_handshake() {
    let (a, _) = faulty_backend("a").await;
    let (b, b_faults) = faulty_backend("b").await;
    b_faults.refuse_websocket.store(true, Ordering::Relaxed);
    let p = start_proxy(&format!(
        "[upstream.app]\n{}\n{}",
        health("websocket", "100ms", 2, 2),
        backends_toml(&[(&a, 1), (&b, 1)])
    ))
    .await;
    wait_until(Duration::from_secs(5), || async {
        p.health().await.get("a") == Some(&true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!p.health().await["b"], "HTTP fine but no 101 must not pass");
    // Plain HTTP on b is fine, which an http check would have accepted.
    let plain = reqwest::get(format!("http://{}/health", b.addr))
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    for _ in 0..10 {
        let (_ws, resp) = tokio_tungstenite::connect_async(p.ws_url("/chat"))
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-backend-id"], "a");
    }
    b_faults.refuse_websocket.store(false, Ordering::Relaxed);
    wait_until(Duration::from_secs(5), || async { p.health().await["b"] }).await;
}

/// Make `faults` fail (500) and pass in turn, starting with a failure: `phases` phases of
/// `500ms`, or irregular ones of 120-180 ms (so a delayed checker cannot alias onto one phase)
/// when `irregular`. Ends passing.
async fn flap(faults: &tideway::cli::demo::Faults, phases: u32, irregular: bool) {
    let mut lcg: u32 = 12345;
    for i in 0..phases {
        lcg = lcg.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let ms = if irregular {
            120 + u64::from(lcg >> 16) % 61
        } else {
            500
        };
        faults
            .http_status
            .store(if i % 2 == 0 { 500 } else { 0 }, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    faults.http_status.store(0, Ordering::Relaxed);
}

/// Health transitions of backend `id` so far (up and down), as the pool counts them.
fn transitions(pool: &tideway::pool::PoolHandle, id: &str) -> u64 {
    let snap = pool.snapshot();
    let (up, down) = snap
        .upstream("app")
        .unwrap()
        .backend(id)
        .unwrap()
        .live
        .transitions();
    up + down
}

/// Hysteresis, in-process on paused time: the pool controller and the upstream's checker run
/// here against real (in-process) backends, the clock jumps whenever everything waits, so the
/// 52 phases below take no real time and every check falls where the schedule says.
#[tokio::test(start_paused = true)]
async fn flapping_changes_state_only_as_hysteresis_allows_on_paused_time() {
    let (a, _) = faulty_backend("a").await;
    let (b, b_faults) = faulty_backend("b").await;
    let (_, pool) = in_process_pool(
        "127.0.0.1:1".parse().unwrap(),
        &format!(
            "[upstream.app]\n{}\n{}",
            health("http", "100ms", 2, 3),
            backends_toml(&[(&a, 1), (&b, 1)])
        ),
    );
    let checkers = tideway::health::Checkers::new(pool.clone());
    checkers.ensure();
    let healthy = |id: &str| {
        let snap = pool.snapshot();
        snap.upstream("app").unwrap().backend(id).unwrap().healthy
    };
    let settle = |want: bool| {
        let healthy = &healthy;
        async move {
            tokio::time::timeout(Duration::from_secs(5), async {
                while healthy("b") != want {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("b settles")
        }
    };
    settle(true).await;
    assert!(healthy("a"));
    // Phases of 500 ms with checks every 100 ms: each is long enough to cross the threshold
    // once (3 failures down, 2 passes up), so one transition per phase, no more.
    let base = transitions(&pool, "b");
    let phases = 12;
    flap(&b_faults, phases, false).await;
    let slow = transitions(&pool, "b") - base;
    println!("paused time, 500 ms flapping, {phases} phases: {slow} transitions");
    assert!(
        slow <= u64::from(phases),
        "{slow} transitions in {phases} phases"
    );
    assert!(
        slow >= 2,
        "a backend down for 500 ms at a time must be noticed ({slow})"
    );
    // Phases of 120-180 ms: none holds 3 failures in a row, so the state never moves.
    settle(true).await;
    let base = transitions(&pool, "b");
    flap(&b_faults, 40, true).await;
    let fast = transitions(&pool, "b") - base;
    assert_eq!(fast, 0, "{fast} transitions for 40 phases of 120-180 ms");
}

/// The binary does the same (its checker and controller on real time), over fewer phases than
/// the paused-time test above.
#[tokio::test]
async fn flapping_backend_changes_state_only_as_hysteresis_allows() {
    let (a, _) = faulty_backend("a").await;
    let (b, b_faults) = faulty_backend("b").await;
    let p = start_proxy(&format!(
        "[upstream.app]\n{}\n{}",
        health("http", "100ms", 2, 3),
        backends_toml(&[(&a, 1), (&b, 1)])
    ))
    .await;
    wait_until(Duration::from_secs(5), || async {
        p.health().await.values().all(|h| *h)
    })
    .await;
    let base = metric(&p, "tideway_health_transitions_total{backend=\"b\"").await;

    // Flapping every 500 ms with checks every 100 ms: each phase is long enough to cross the
    // threshold once, so at most one transition per phase.
    let phases = 6;
    flap(&b_faults, phases, false).await;
    let slow = metric(&p, "tideway_health_transitions_total{backend=\"b\"").await - base;
    println!("500 ms flapping, {phases} phases: {slow} transitions");
    assert!(
        slow <= f64::from(phases),
        "{slow} transitions in {phases} phases"
    );
    assert!(
        slow >= 2.0,
        "a backend down for 500 ms at a time must be noticed ({slow})"
    );

    // Flapping every 120-180 ms (irregular, so a delayed checker cannot alias onto one phase):
    // no phase holds `fall` (3) failures or `rise` (2) passes for long; the hysteresis keeps
    // the state almost still.
    wait_until(Duration::from_secs(5), || async { p.health().await["b"] }).await;
    let base = metric(&p, "tideway_health_transitions_total{backend=\"b\"").await;
    flap(&b_faults, 20, true).await;
    let fast = metric(&p, "tideway_health_transitions_total{backend=\"b\"").await - base;
    println!("120-180 ms flapping, 20 phases: {fast} transitions");
    assert!(
        fast <= 2.0,
        "{fast} transitions for 20 phases of 120-180 ms"
    );
}

#[tokio::test]
async fn clean_websocket_closes_never_mark_a_backend_down() {
    let a = backend("a").await;
    let p = start_proxy(&format!(
        "[upstream.app]\nmax_fails = 1\n{}\n{}",
        health("websocket", "200ms", 2, 2),
        backends_toml(&[(&a, 1)])
    ))
    .await;
    wait_until(Duration::from_secs(5), || async { p.health().await["a"] }).await;
    let mut tasks = Vec::new();
    for t in 0..20 {
        let url = p.ws_url(&format!("/chat?t={t}"));
        tasks.push(tokio::spawn(async move {
            use futures_util::{SinkExt, StreamExt};
            for _ in 0..50 {
                let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
                ws.send(tokio_tungstenite::tungstenite::Message::text("x"))
                    .await
                    .unwrap();
                ws.next().await.unwrap().unwrap();
                ws.close(None).await.unwrap();
                // Read until the server's close arrives: a clean close handshake.
                while let Some(Ok(_)) = ws.next().await {}
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(p.health().await["a"]);
    assert_eq!(metric(&p, "tideway_backend_failures_total").await, 0.0);
    assert_eq!(
        metric(
            &p,
            "tideway_health_transitions_total{backend=\"a\",to=\"down\""
        )
        .await,
        0.0
    );
    assert!(metric(&p, "tideway_tunnels_ended_total").await >= 1000.0);
}

#[tokio::test]
async fn slow_start_ramps_a_recovered_backends_share() {
    let (a, _) = faulty_backend("a").await;
    let (b, b_faults) = faulty_backend("b").await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\nslow_start = \"3s\"\n{}\n{}",
        health("http", "100ms", 1, 1),
        backends_toml(&[(&a, 1), (&b, 1)])
    ))
    .await;
    // Both ramp up after joining; let that finish before b fails.
    wait_until(Duration::from_secs(5), || async {
        p.health().await.values().all(|h| *h)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    b_faults.http_status.store(500, Ordering::Relaxed);
    wait_until(Duration::from_secs(5), || async {
        let h = p.health().await;
        h["a"] && !h["b"]
    })
    .await;
    b_faults.http_status.store(0, Ordering::Relaxed);
    wait_until(Duration::from_secs(5), || async { p.health().await["b"] }).await;
    let recovered = Instant::now();
    let client = reqwest::Client::new();
    // Windows of 0.5 s over the 3 s ramp: b's share vs 0.1 + 0.9 t / 3 of a weight against
    // a's 1. (The ramp's exact curve, on paused time, is the pool's unit tests' business.)
    let mut report = Vec::new();
    for w in 0..6 {
        let end = recovered + Duration::from_millis(500 * (w + 1));
        let mut counts: HashMap<String, u32> = HashMap::new();
        let mut times = Vec::new();
        while Instant::now() < end {
            times.push(recovered.elapsed().as_secs_f64());
            *counts
                .entry(backend_id(&client, &p.url("/")).await)
                .or_default() += 1;
        }
        let n: u32 = counts.values().sum();
        let got = f64::from(counts.get("b").copied().unwrap_or(0)) / f64::from(n);
        let expected = times
            .iter()
            .map(|t| {
                let eff = 0.1 + 0.9 * (t / 3.0).min(1.0);
                eff / (1.0 + eff)
            })
            .sum::<f64>()
            / times.len() as f64;
        report.push(format!(
            "{:.1}-{:.1}s: b {:.1}% (expected {:.1}%, {n} requests)",
            w as f64 * 0.5,
            (w + 1) as f64 * 0.5,
            got * 100.0,
            expected * 100.0
        ));
        assert!((got - expected).abs() <= 0.10, "{}", report.join("\n"));
    }
    println!("{}", report.join("\n"));
}

#[tokio::test]
async fn kill_9_of_one_of_three_backends_under_load() {
    // Three real backend processes, so one can be killed with SIGKILL.
    let mut children = Vec::new();
    let mut backends = Vec::new();
    for id in ["k1", "k2", "k3"] {
        let port = free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tideway"))
            .args([
                "demo-backend",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--id",
                id,
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
        backends.push(format!("{{ addr = \"127.0.0.1:{port}\", id = \"{id}\" }}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\n{}\nbackends = [{}]",
        health("http", "500ms", 2, 2),
        backends.join(", ")
    ))
    .await;
    wait_until(Duration::from_secs(5), || async {
        p.health().await.values().all(|h| *h)
    })
    .await;

    const WORKERS: usize = 8;
    let start = Instant::now();
    let kill_at = Duration::from_secs(2);
    let run_for = Duration::from_secs(9);
    let url = p.url("/load");
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut ok, mut failed_at) = (0u64, Vec::new());
                while start.elapsed() < run_for {
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => ok += 1,
                        _ => failed_at.push(start.elapsed()),
                    }
                }
                (ok, failed_at)
            })
        })
        .collect();
    tokio::time::sleep(kill_at).await;
    children[0].kill().unwrap(); // SIGKILL
    let killed = start.elapsed();
    let mut ok = 0;
    let mut failures = Vec::new();
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failures.extend(f);
    }
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let late: Vec<_> = failures
        .iter()
        .filter(|t| **t > killed + Duration::from_secs(1))
        .collect();
    println!(
        "kill -9 under load: {ok} ok, {} failed (at {:?}), killed at {killed:?}",
        failures.len(),
        failures
    );
    assert!(
        failures.len() <= WORKERS,
        "more failures than requests in flight: {failures:?}"
    );
    assert!(late.is_empty(), "failures after the kill settled: {late:?}");
    assert!(ok > 1000, "only {ok} requests succeeded");
}

#[tokio::test]
async fn passive_ejection_follows_max_fails_and_fail_timeout() {
    let (a, _) = faulty_backend("a").await;
    let (b, b_faults) = faulty_backend("b").await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\nmax_fails = 2\nfail_timeout = \"1s\"\nfail_on_5xx = true\n{}",
        backends_toml(&[(&a, 1), (&b, 1)])
    ))
    .await;
    b_faults.http_status.store(500, Ordering::Relaxed);
    let client = reqwest::Client::new();
    // Round robin sends b two requests among the first four; both answer 500.
    let mut fives = 0;
    for _ in 0..4 {
        if client.get(p.url("/")).send().await.unwrap().status() == 500 {
            fives += 1;
        }
    }
    assert_eq!(fives, 2);
    wait_until(Duration::from_secs(2), || async { !p.health().await["b"] }).await;
    let ejected = Instant::now();
    for _ in 0..20 {
        assert_eq!(backend_id(&client, &p.url("/")).await, "a");
    }
    // After fail_timeout it is readmitted (no active checks configured).
    b_faults.http_status.store(0, Ordering::Relaxed);
    wait_until(Duration::from_secs(3), || async { p.health().await["b"] }).await;
    assert!(
        ejected.elapsed() >= Duration::from_millis(700),
        "readmitted too early"
    );
}

#[tokio::test]
async fn no_healthy_backend_answers_503_naming_the_upstream() {
    let closed = free_port();
    let p = start_proxy(&format!(
        "[upstream.app]\n{}\nbackends = [{{ addr = \"127.0.0.1:{closed}\" }}]",
        health("tcp", "100ms", 1, 1)
    ))
    .await;
    let r = tokio::time::timeout(Duration::from_secs(5), reqwest::get(p.url("/")))
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "no available backend in upstream \"app\"");
}
