//! `/metrics` answers everyday questions: exact counts after N requests and M WebSockets,
//! latency histograms filled, bytes per backend, failures by reason, process and build facts,
//! reloads, and the series of a removed backend gone with it.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const N: usize = 20;
const M: usize = 3;

async fn scrape(p: &Proxy) -> String {
    reqwest::get(p.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `name{labels}` exactly (labels as Prometheus prints them).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_histograms_bytes_failures_and_pruned_series() {
    let (m1, m2) = (backend("m1").await, backend("m2").await);
    let p = start_proxy("[upstream.app]\nbalance = \"round_robin\"\nmax_fails = 0\n").await;
    p.register("m1", &m1.addr.to_string()).await;
    p.register("m2", &m2.addr.to_string()).await;

    let c = reqwest::Client::new();
    let mut body_bytes = 0;
    for i in 0..N {
        let r = c.get(p.url(&format!("/n/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        body_bytes += r.bytes().await.unwrap().len();
    }
    for _ in 0..M {
        let (mut ws, _) = tokio_tungstenite::connect_async(p.ws_url("/ws"))
            .await
            .unwrap();
        ws.send(Message::text("x".repeat(1000))).await.unwrap();
        assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }
    // Tunnels are counted when they end, a moment after the client's close.
    wait_until(Duration::from_secs(10), || async {
        sample(
            &scrape(&p).await,
            "tideway_tunnels_ended_total{reason=\"closed\",upstream=\"app\"}",
        ) == Some(M as f64)
    })
    .await;
    let t = scrape(&p).await;
    let get = |s: &str| sample(&t, s).unwrap_or_else(|| panic!("no sample {s} in\n{t}"));
    let per_backend = |name: &str| -> f64 {
        ["m1", "m2"]
            .iter()
            .map(|b| get(&format!("{name}{{backend=\"{b}\",upstream=\"app\"}}")))
            .sum()
    };
    // Every request and every handshake started on a backend, and was timed.
    assert_eq!(
        per_backend("tideway_backend_requests_total"),
        (N + M) as f64
    );
    let up = "{upstream=\"app\"}";
    assert_eq!(
        get(&format!("tideway_request_duration_seconds_count{up}")),
        (N + M) as f64
    );
    assert_eq!(
        get("tideway_request_duration_seconds_bucket{upstream=\"app\",le=\"+Inf\"}"),
        (N + M) as f64
    );
    assert!(
        get("tideway_request_duration_seconds_bucket{upstream=\"app\",le=\"1\"}") > 0.0,
        "a finite bucket is filled"
    );
    assert_eq!(
        get(&format!(
            "tideway_upstream_response_duration_seconds_count{up}"
        )),
        (N + M) as f64
    );
    let connects = get(&format!(
        "tideway_upstream_connect_duration_seconds_count{up}"
    ));
    assert!(
        (2.0..=(N + M) as f64).contains(&connects),
        "keep-alive reuses connections: {connects}"
    );
    assert_eq!(
        get("tideway_http_responses_total{class=\"2xx\",upstream=\"app\"}"),
        N as f64
    );
    assert_eq!(
        get("tideway_http_responses_total{class=\"1xx\",upstream=\"app\"}"),
        M as f64
    );
    assert_eq!(
        get(&format!("tideway_tunnel_duration_seconds_count{up}")),
        M as f64
    );
    // Bytes: at least the bodies and the WebSocket messages, each way.
    let received = per_backend("tideway_backend_received_bytes_total");
    let sent = per_backend("tideway_backend_sent_bytes_total");
    assert!(received >= (body_bytes + M * 1000) as f64, "{received}");
    assert!(sent >= (M * 1000) as f64, "{sent}");
    // Process and build facts.
    assert!(get("process_resident_memory_bytes") > 0.0);
    assert!(get("process_open_fds") > 0.0);
    assert!(t.contains("process_cpu_seconds_total"));
    assert_eq!(
        get(&format!(
            "tideway_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );

    // A reload is counted.
    p.reload().await;
    assert_eq!(
        sample(
            &scrape(&p).await,
            "tideway_config_reloads_total{result=\"ok\"}"
        ),
        Some(1.0)
    );

    // Both leave: their series go with them.
    for id in ["m1", "m2"] {
        p.deregister(id).await;
    }
    wait_until(Duration::from_secs(10), || async {
        p.backends().await.is_empty()
    })
    .await;
    let t = scrape(&p).await;
    assert!(
        !t.lines()
            .any(|l| l.starts_with("tideway_backend_") && l.contains("backend=\"m1\"")),
        "no series of a removed backend:\n{t}"
    );
    // A backend that refuses connections: failures by reason.
    let dead = format!("127.0.0.1:{}", free_port());
    p.register("dead", &dead).await;
    let r = c.get(p.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let t = scrape(&p).await;
    assert_eq!(
        sample(
            &t,
            "tideway_upstream_failures_total{reason=\"connect\",upstream=\"app\"}"
        ),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(
            &t,
            "tideway_http_responses_total{class=\"5xx\",upstream=\"app\"}"
        ),
        Some(1.0)
    );
}

/// Send a GET on a kept-alive raw connection and read its answer's status.
async fn get_on(conn: &mut tokio::net::TcpStream, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return head[9..12].parse().unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_prunes_the_series_of_a_removed_upstream_even_counted_again() {
    let b = backend("k1").await;
    let old_port = free_port();
    let old = format!(
        "# old\n[upstream.old]\n{}\n[[listener]]\nlisten = \"127.0.0.1:{old_port}\"\nupstream = \"old\"\n",
        backends_toml(&[(&b, 1)])
    );
    let p = start_proxy(&format!(
        "[upstream.app]\n{}\n{old}",
        backends_toml(&[(&b, 1)])
    ))
    .await;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", old_port))
        .await
        .unwrap();
    assert_eq!(get_on(&mut conn, "/").await, 200);
    let has_old = |t: &str| t.lines().any(|l| l.contains("upstream=\"old\""));
    assert!(has_old(&scrape(&p).await));
    // The upstream and its listener leave.
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    std::fs::write(&p.config_path, text.split("# old").next().unwrap()).unwrap();
    p.reload().await;
    assert!(!has_old(&scrape(&p).await), "pruned by the reload");
    // The connection left open on the removed upstream counts again...
    assert_eq!(get_on(&mut conn, "/").await, 503);
    assert!(has_old(&scrape(&p).await));
    // ...until the next reload.
    p.reload().await;
    let t = scrape(&p).await;
    assert!(!has_old(&t), "{t}");
}
