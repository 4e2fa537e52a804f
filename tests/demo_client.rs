//! `tideway-demo-client` (a binary of its own) from the command line: N uid-keyed WebSockets
//! through a real tideway, a JSON report at the end with the spread over backends.

mod common;

use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_opens_echoes_and_the_spread() {
    let (a, b) = (backend("c1").await, backend("c2").await);
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"hash\"\nhash_key = \"query:uid\"\n{}\n",
        backends_toml(&[(&a, 1), (&b, 1)])
    ))
    .await;
    let url = p.ws_url("/chat");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tideway-demo-client"))
            .args([
                "--url",
                &url,
                "--connections",
                "20",
                "--rate",
                "5",
                "--duration",
                "2s",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["opened"], 20, "{r}");
    assert_eq!(r["abrupt_closes"], 0, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 0 && r["echoed"] == sent, "{r}");
    // Where the connections were when the run stopped: over both backends (hash by uid).
    assert_eq!(r["open"], 20, "{r}");
    let spread = r["spread"].as_object().unwrap();
    let total: u64 = spread.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 20, "{r}");
    assert!(
        spread.contains_key("c1") && spread.contains_key("c2"),
        "{r}"
    );
}
