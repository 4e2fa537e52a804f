//! Binary upgrade under load: a second tideway started with `--upgrade` takes the listening
//! sockets over when the running one gets SIGUSR2, while keep-alive HTTP load and WebSockets
//! run (4 keep-alive clients, 100 WebSockets). Counted: failed requests (must be 0) and WebSockets that ended without a 1001 close
//! (must be 0); every WebSocket of the old process gets its 1001 and reconnects to the new one,
//! and an operator's toggle made with the old process holds in the new one (read from
//! data_dir).
//! With `TIDEWAY_UPGRADE_FROM` set to an earlier release's binary, the old process runs that
//! release (see `tests/common`'s `tideway_bin`).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_hands_the_listeners_to_a_new_process_under_load() {
    let b = backend("b").await;
    let c = backend("c").await;
    let mut old = start_proxy(&format!(
        "[upstream.app]\n{}",
        backends_toml(&[(&b, 1), (&c, 1)])
    ))
    .await;
    // An operator's toggle, kept in data_dir: the new process must read the old one's.
    let st = old
        .admin_req(
            reqwest::Method::POST,
            "/v1/upstreams/app/backends/c/state",
            ADMIN_TOKEN,
        )
        .json(&serde_json::json!({"state": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(st.status(), 200);
    let toggles = old.dir.path().join("data").join("toggles.json");
    wait_until(Duration::from_secs(10), || async {
        std::fs::read_to_string(&toggles).is_ok_and(|t| t.contains("\"c\""))
    })
    .await;

    // Load: 4 keep-alive clients, counting failures, until told to stop.
    let load = Load::start(&old.url("/"), 4);
    let mut sockets = Vec::new();
    for _ in 0..100 {
        let (mut ws, _) = tokio_tungstenite::connect_async(old.ws_url("/chat"))
            .await
            .unwrap();
        ws.send(Message::text("hi")).await.unwrap();
        ws.next().await.unwrap().unwrap();
        sockets.push(ws);
    }

    // The new process waits on data_dir/upgrade.sock for the sockets.
    let mut new = spawn_tideway_with(&old.config_path, old.dir.path(), &["--upgrade"]);
    let sock = old.dir.path().join("data").join("upgrade.sock");
    wait_until(Duration::from_secs(20), || async { sock.exists() }).await;
    let before = load.ok();
    std::process::Command::new("kill")
        .args(["-USR2", &old.child.id().to_string()])
        .status()
        .unwrap();

    // Every WebSocket of the old process ends with a 1001, and reconnects to the new one.
    let mut abrupt = 0;
    for ws in sockets.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) if f.code == CloseCode::Away => {}
            other => {
                abrupt += 1;
                eprintln!("websocket ended with {other:?}");
            }
        }
    }
    // Waited for without blocking the runtime the load, the clients and the backend run on.
    let old_status = exit_within(&mut old.child, Duration::from_secs(15))
        .await
        .expect("the old process exits");
    assert!(old_status.success(), "{old_status}");
    for _ in 0..20 {
        let (mut ws, _) = tokio_tungstenite::connect_async(old.ws_url("/chat"))
            .await
            .expect("the new process accepts on the same port");
        ws.send(Message::text("again")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("again"));
    }
    let handed_over = Instant::now();
    while load.ok() < before + 200 {
        assert!(
            handed_over.elapsed() < Duration::from_secs(10),
            "load stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The toggle made with the old process holds in the new one.
    let states: Vec<(String, String)> = old
        .backends()
        .await
        .into_iter()
        .map(|(id, _, state, _)| (id, state))
        .collect();
    assert_eq!(
        states,
        [
            ("b".into(), "active".into()),
            ("c".into(), "disabled".into())
        ],
        "the backends after the upgrade"
    );
    let (ok, failed) = load.stop().await;
    println!("binary upgrade: {ok} requests ok, {failed} failed, {abrupt} websockets without 1001");
    let _ = new.kill();
    let _ = new.wait();
    assert_eq!(failed, 0, "failed requests");
    assert_eq!(abrupt, 0, "websockets that ended without 1001");
}

/// A SIGUSR1 (a logrotate run) that reaches a `run --upgrade` process while it waits for the
/// sockets does not end it: it takes the listeners over when the old one gets SIGUSR2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_while_run_upgrade_waits_does_not_end_it() {
    let b = backend("b").await;
    let mut old = start_proxy(&format!("[upstream.app]\n{}", backends_toml(&[(&b, 1)]))).await;
    let mut new = spawn_tideway_with(&old.config_path, old.dir.path(), &["--upgrade"]);
    let sock = old.dir.path().join("data").join("upgrade.sock");
    wait_until(Duration::from_secs(20), || async { sock.exists() }).await;
    let kill = |sig: &str, pid: u32| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    kill("-USR1", new.id());
    kill("-USR2", old.child.id());
    let exited = exit_within(&mut old.child, Duration::from_secs(15)).await;
    assert!(exited.is_some(), "the old process exits");
    assert!(new.try_wait().unwrap().is_none(), "{:?}", new.try_wait());
    let r = reqwest::get(old.url("/"))
        .await
        .expect("the new process serves");
    assert!(r.status().is_success(), "{}", r.status());
    let _ = new.kill();
    let _ = new.wait();
}
