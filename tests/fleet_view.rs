//! `GET /v1/fleet`, which the dashboard's fleet panel draws: two tideway instances on one
//! real etcd each list both, this one first and counted now, the other as it last reported,
//! with their connections to backends and their client connections.

mod common;

use common::etcd::Etcd;
use common::*;
use serde_json::Value;
use std::time::Duration;

/// Open WebSockets through `p` (held until dropped).
async fn websockets(
    p: &Proxy,
    n: usize,
) -> Vec<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>
{
    let mut all = Vec::new();
    for _ in 0..n {
        let (ws, _) = tokio_tungstenite::connect_async(p.ws_url("/ws"))
            .await
            .unwrap();
        all.push(ws);
    }
    all
}

#[tokio::test]
async fn each_instance_lists_the_fleet_with_its_counts() {
    let etcd = Etcd::start().await;
    let b = backend("f1").await;
    let upstream = format!("[upstream.app]\n{}\n", backends_toml(&[(&b, 1)]));
    let one = start_proxy_full(&etcd.store(), "", &upstream).await;
    let two = start_proxy_full(&etcd.store(), "", &upstream).await;
    let _on_one = websockets(&one, 3).await;
    let _on_two = websockets(&two, 2).await;

    for (p, own, other) in [(&one, 3, 2), (&two, 2, 3)] {
        let complete = |v: &Value| {
            let i = v["instances"].as_array().cloned().unwrap_or_default();
            i.len() == 2
                && i[0]["this"] == true
                && i[0]["active_connections"] == own
                && i[0]["clients"] == own
                && i[0]["upstreams"]["app"] == own
                && i[1]["this"] == false
                && i[1]["active_connections"] == other
                && i[1]["clients"] == other
        };
        let seen = wait_until(Duration::from_secs(10), || async move {
            complete(&p.admin_json("/v1/fleet").await)
        })
        .await;
        let last = p.admin_json("/v1/fleet").await;
        assert!(complete(&last), "{last}");
        assert_eq!(last["etcd"], true, "{last}");
        assert_ne!(
            last["instances"][0]["instance"],
            last["instances"][1]["instance"]
        );
        println!("the fleet view was complete after {seen:?}: {last}");
    }
}

#[tokio::test]
async fn without_etcd_the_fleet_is_this_instance() {
    let b = backend("f2").await;
    let p = start_proxy(&format!("[upstream.app]\n{}\n", backends_toml(&[(&b, 1)]))).await;
    let _ws = websockets(&p, 2).await;
    let pr = &p;
    wait_until(Duration::from_secs(10), || async move {
        let v = pr.admin_json("/v1/fleet").await;
        v["etcd"] == false
            && v["instances"].as_array().is_some_and(|i| i.len() == 1)
            && v["instances"][0]["instance"].is_null()
            && v["instances"][0]["active_connections"] == 2
    })
    .await;
    let r = reqwest::get(p.admin_url("/v1/fleet")).await.unwrap();
    assert_eq!(r.status(), 401, "the admin token is needed");
}
