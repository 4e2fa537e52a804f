//! The access log: one line per request naming the backend that served it and the status,
//! one per tunnel end, in text (close to nginx's combined) and in JSON (`--log-format json`).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const REQUESTS: usize = 12;

/// Send REQUESTS sticky requests (uid 0..) and one WebSocket; the backend id of each request.
async fn traffic(p: &Proxy) -> Vec<String> {
    let c = reqwest::Client::new();
    let mut ids = Vec::new();
    for uid in 0..REQUESTS {
        ids.push(backend_id(&c, &p.url(&format!("/chat?uid={uid}"))).await);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(p.ws_url("/ws?uid=99"))
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    ids
}

fn log(p: &Proxy) -> String {
    std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap_or_default()
}

async fn start(a1: &Backend, a2: &Backend, args: &[&str]) -> Proxy {
    start_proxy_opts(
        "access_log = true",
        "",
        "",
        &format!(
            "[upstream.app]\nbalance = \"hash\"\nhash_key = \"query:uid\"\n{}",
            backends_toml(&[(a1, 1), (a2, 1)])
        ),
        args,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_text_line_per_request_with_its_backend_and_status() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    let addr: HashMap<&str, String> = [("a1", a1.addr.to_string()), ("a2", a2.addr.to_string())]
        .into_iter()
        .collect();
    let p = start(&a1, &a2, &[]).await;
    let ids = traffic(&p).await;
    wait_until(Duration::from_secs(10), || async {
        log(&p).contains("\"websocket tunnel\" end=closed")
    })
    .await;
    let text = log(&p);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("tideway::access"))
        .collect();
    for (uid, id) in ids.iter().enumerate() {
        let request = format!("\"GET /chat?uid={uid} HTTP/1.1\" 200 ");
        let mine: Vec<&&str> = lines.iter().filter(|l| l.contains(&request)).collect();
        assert_eq!(mine.len(), 1, "one line for uid {uid}: {lines:#?}");
        assert!(
            mine[0].contains(&format!("backend={}", addr[id.as_str()])),
            "uid {uid} was served by {id}: {}",
            mine[0]
        );
        assert!(mine[0].contains("upstream=app"));
    }
    // The handshake (101) and the tunnel's end.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("\"GET /ws?uid=99 HTTP/1.1\" 101 "))
            .count(),
        1
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("\"websocket tunnel\" end=closed upstream=app"))
            .count(),
        1
    );
    assert_eq!(lines.len(), REQUESTS + 2, "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_makes_every_line_json() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    let p = start(&a1, &a2, &["--log-format", "json"]).await;
    let ids = traffic(&p).await;
    wait_until(Duration::from_secs(10), || async {
        log(&p).contains("\"end\":\"closed\"")
    })
    .await;
    let text = log(&p);
    let all: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&serde_json::Value> = all
        .iter()
        .filter(|v| v["target"] == "tideway::access")
        .collect();
    assert_eq!(access.len(), REQUESTS + 2);
    let by_id: HashMap<&str, String> = [("a1", a1.addr.to_string()), ("a2", a2.addr.to_string())]
        .into_iter()
        .collect();
    for (uid, id) in ids.iter().enumerate() {
        let line = access
            .iter()
            .find(|v| {
                v["kind"] == "http"
                    && v["method"] == "GET"
                    && v["status"] == 200
                    && v["uri"] == format!("/chat?uid={uid}").as_str()
            })
            .unwrap_or_else(|| panic!("no line for uid {uid}"));
        assert_eq!(line["backend"], by_id[id.as_str()].as_str());
        assert_eq!(line["upstream"], "app");
        assert!(line["bytes_sent"].as_u64().unwrap() > 0);
    }
    let tunnel = access.iter().find(|v| v["kind"] == "websocket").unwrap();
    assert_eq!(tunnel["end"], "closed");
    assert!(tunnel["bytes_up"].as_u64().unwrap() >= 5);
}

/// A User-Agent that tries to add fields of its own.
const FORGED: &str = "evil\" status=200 backend=6.6.6.6:1 client=9.9.9.9";

async fn forged_request(p: &Proxy) {
    let r = reqwest::Client::new()
        .get(p.url("/forge?uid=1"))
        .header("user-agent", FORGED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_forge_fields_of_the_text_line() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    let p = start(&a1, &a2, &[]).await;
    forged_request(&p).await;
    wait_until(Duration::from_secs(10), || async {
        log(&p).contains("/forge")
    })
    .await;
    let text = log(&p);
    let line = text.lines().find(|l| l.contains("/forge")).unwrap();
    assert!(!line.contains('\x1b'), "no colours in a file: {line}");
    // The User-Agent stays inside its quotes, its quote escaped; the line ends with tideway's
    // own fields and nothing a client sent comes after them.
    assert!(
        line.contains("\"evil\\\" status=200 backend=6.6.6.6:1 client=9.9.9.9\""),
        "{line}"
    );
    let tail = line.rsplit_once("\" ").unwrap().1;
    assert!(
        tail.starts_with("upstream=app backend=127.0.0.1:"),
        "{line}"
    );
    assert!(
        tail.split(' ')
            .next_back()
            .unwrap()
            .starts_with("bytes_received="),
        "{line}"
    );
    assert_eq!(
        line.matches("backend=").count(),
        2,
        "the forged one and ours: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_fields_carry_what_the_client_sent_exactly() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    let p = start(&a1, &a2, &["--log-format", "json"]).await;
    forged_request(&p).await;
    wait_until(Duration::from_secs(10), || async {
        log(&p).contains("/forge")
    })
    .await;
    let text = log(&p);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().find(|l| l.contains("/forge")).unwrap()).unwrap();
    assert_eq!(v["user_agent"], FORGED);
    assert_eq!(v["status"], 200);
    assert_ne!(v["backend"], "6.6.6.6:1");
}
