//! `tideway demo` as a user runs it: one command, then HTTP and WebSocket through the backends
//! it registered, the dashboard, and the API showing them. Also `tideway run` without a config.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_http_and_websockets_through_registered_backends() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_port(), free_port());
    let (_demo, stdout) = spawn_demo(dir.path(), listen, admin);
    // Read what it prints until the tour's last line.
    let printed = tokio::task::spawn_blocking(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            all.push_str(&line);
            all.push('\n');
            if line.contains("Ctrl-C stops it") {
                break;
            }
        }
        all
    });
    let printed = tokio::time::timeout(Duration::from_secs(60), printed)
        .await
        .expect("the demo printed its tour")
        .unwrap();
    println!("{printed}");
    assert!(printed.contains("3 backends registered"), "{printed}");
    let token = printed
        .split("#token=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("the dashboard URL carries the token")
        .to_string();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/admin.token"))
            .unwrap()
            .trim(),
        token
    );

    // HTTP, sticky by uid, through a registered backend.
    let c = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{listen}/hello?uid=42");
    let first = backend_id(&c, &url).await;
    assert!(first.starts_with("demo-"), "{first}");
    for _ in 0..5 {
        assert_eq!(backend_id(&c, &url).await, first, "uid 42 stays put");
    }
    // A WebSocket echoes.
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{listen}/chat?uid=42"))
            .await
            .unwrap();
    assert_eq!(resp.headers()["x-backend-id"], first.as_str());
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));

    // The API lists the three, registered over HTTP; the dashboard is served.
    let v = get_json(
        &format!("http://127.0.0.1:{admin}/v1/upstreams/app"),
        &token,
    )
    .await;
    let backends = v["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 3, "{v}");
    assert!(backends
        .iter()
        .all(|b| b["source"] == "http" && b["state"] == "active"));
    let page = c
        .get(format!("http://127.0.0.1:{admin}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_a_config_uses_the_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, listen) = (free_port(), free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args([
            "run",
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("TIDEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TIDEWAY_REGISTER_TOKEN", REGISTER_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Killed(out);
    let c = reqwest::Client::new();
    wait_until(Duration::from_secs(20), || async {
        c.get(format!("http://127.0.0.1:{admin}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
            && tokio::net::TcpStream::connect(("127.0.0.1", listen))
                .await
                .is_ok()
    })
    .await;
    let v = get_json(
        &format!("http://127.0.0.1:{admin}/v1/upstreams"),
        ADMIN_TOKEN,
    )
    .await;
    let ups = v["upstreams"].as_array().unwrap();
    assert_eq!(ups.len(), 1, "{v}");
    assert_eq!(ups[0]["name"], "app");
    assert_eq!(ups[0]["balance"], "hash");
    assert_eq!(ups[0]["hash_key"], "query:uid");
    assert!(ups[0]["backends"].as_array().unwrap().is_empty());
    // Its listener serves, and says there is no backend yet.
    let r = c
        .get(format!("http://127.0.0.1:{listen}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}
