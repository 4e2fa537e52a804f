//! The Grafana dashboard (docker/grafana/tideway-dashboard.json) queries only what exists:
//! every PromQL expression is parsed (promql-parser, by `scripts/validate-deploy.sh
//! --dashboard-queries`), and each metric it selects, with each label it filters on or groups
//! by (`by`/`without`, `on`/`ignoring`), must be in a live tideway's `/metrics` after traffic
//! that exercises every panel: requests, a WebSocket, failures to a dead backend, health
//! transitions, a rebalancing upstream and an autoscale hook run. `job` and `instance` are
//! Prometheus's own labels (added at scrape).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Labels Prometheus adds when it scrapes.
const SCRAPE_LABELS: [&str; 2] = ["job", "instance"];

/// Every metric of a Prometheus text exposition with the label names its series carry.
fn exposition(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let label = regex::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*""#).unwrap();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        if line[name_end..].starts_with('{') {
            let end = line.rfind('}').unwrap();
            for c in label.captures_iter(&line[name_end..end]) {
                labels.insert(c[1].to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_uses_metrics_and_labels_tideway_exports() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/validate-deploy.sh"))
        .arg("--dashboard-queries")
        .current_dir(root)
        .output()
        .expect("run scripts/validate-deploy.sh --dashboard-queries");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queries: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(queries.len() >= 30, "{queries:?}");

    // Traffic for every panel.
    let live = backend("live").await;
    let dead = format!("127.0.0.1:{}", free_port());
    // A TLS listener too, for the handshake failures panel.
    let tls_port = free_port();
    let p = start_written(&[], |http, admin, dir| {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (dir.join("tls.pem"), dir.join("tls.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        format!(
            "[server]\nthreads = 2\nshutdown_grace = \"1s\"\n\n[admin]\nlisten = \"{admin}\"\n\n\
             [store]\ndata_dir = \"{data}\"\n\n\
             [[listener]]\nlisten = \"{http}\"\n\
             [[listener.route]]\npath = \"/\"\nupstream = \"app\"\n\
             [[listener.route]]\npath = \"/dead/\"\nupstream = \"gone\"\n\n\
             [[listener]]\nlisten = \"127.0.0.1:{tls_port}\"\nupstream = \"app\"\n\
             tls = {{ cert = {cert:?}, key = {key:?} }}\n\n\
             [upstream.app]\nbalance = \"least_conn\"\nrebalance = {{ per_second = 50 }}\n\
             backends = [{{ addr = \"{live}\", id = \"live\" }}, {{ addr = \"{dead}\", id = \"dead\" }}]\n\
             health = {{ kind = \"tcp\", interval = \"200ms\", timeout = \"200ms\", rise = 1, fall = 1 }}\n\
             scale = {{ target_per_backend = 1, min = 3, max = 5 }}\n\
             [upstream.app.autoscale]\nexec = \"true\"\ncooldown = \"500ms\"\ninterval = \"100ms\"\n\n\
             [upstream.gone]\nbackends = [{{ addr = \"{dead}\", id = \"dead\" }}]\n",
            data = dir.join("data").display(),
            live = live.addr,
        )
    })
    .await;
    let c = reqwest::Client::new();
    for i in 0..5 {
        let r = c.get(p.url(&format!("/ok?{i}"))).send().await.unwrap();
        assert!(r.status().is_success());
        let r = c.get(p.url(&format!("/dead/x?{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 502);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(p.ws_url("/ws"))
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    // The upstream view reads the rebalancer's series.
    let r = p
        .admin_req(reqwest::Method::GET, "/v1/upstreams/app", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    // Wait for what takes time: the dead backend's health transition and a hook run.
    let metrics = || async {
        reqwest::get(p.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let wanted = [
        "tideway_health_transitions_total{",
        "tideway_autoscale_runs_total{",
        "tideway_tunnels_ended_total{",
        "tideway_websocket_closes_total{",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics().await;
        let missing: Vec<&&str> = wanted.iter().filter(|w| !m.contains(**w)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still missing {missing:?} in\n{m}\nlog:\n{}",
            std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = metrics().await;
    let exported = exposition(&text);

    let mut problems = Vec::new();
    for q in &queries {
        for u in q["uses"].as_array().unwrap() {
            let metric = u["metric"].as_str().unwrap();
            let Some(labels) = exported.get(metric) else {
                problems.push(format!("{}: {metric} is not in /metrics", q["where"]));
                continue;
            };
            for l in u["labels"].as_array().unwrap() {
                let l = l.as_str().unwrap();
                if !SCRAPE_LABELS.contains(&l) && !labels.contains(l) {
                    problems.push(format!(
                        "{}: {metric} has no label {l:?} (it has {labels:?}): {}",
                        q["where"], q["expr"]
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // A panel's query that groups by a label the metric lacks is what this test catches.
    let failures = &exported["tideway_backend_failures_total"];
    assert!(!failures.contains("reason"), "{failures:?}");
    // CPU seconds have their fraction.
    let cpu = text
        .lines()
        .find(|l| l.starts_with("process_cpu_seconds_total "))
        .unwrap();
    assert!(cpu.contains('.'), "{cpu}");
}
