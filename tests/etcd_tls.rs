//! etcd over TLS with a client certificate and a password: a real etcd started by the
//! harness with `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth` and
//! authentication on ([`Etcd::start_secure`]). tideway watches it and writes through it;
//! a wrong password gets nothing, and no password ever reaches the log.

mod common;

use common::etcd::{Etcd, ROOT_PASSWORD};
use common::*;
use std::time::Duration;

async fn ids(p: &Proxy) -> Vec<String> {
    p.backends().await.into_iter().map(|b| b.0).collect()
}

fn log(p: &Proxy) -> String {
    std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap()
}

#[tokio::test]
async fn tideway_watches_and_writes_through_etcd_over_tls_as_an_authenticated_user() {
    let etcd = Etcd::start_secure().await;
    let (a, b) = (backend("a").await, backend("b").await);
    let p = start_proxy_full(&etcd.store(), "", "[upstream.app]\nbackends = []").await;
    wait_until(Duration::from_secs(10), || async {
        metric(&p, "tideway_etcd_up").await == 1.0
    })
    .await;
    // A key written by someone else reaches the pool through the watch.
    let mut c = etcd.client().await;
    c.put("/tw/upstreams/app/backends/a", a.addr.to_string(), None)
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), || async { ids(&p).await == ["a"] }).await;
    let client = reqwest::Client::new();
    assert_eq!(backend_id(&client, &p.url("/")).await, "a");
    // A registration through the admin API is written to etcd.
    p.register("b", &b.addr.to_string()).await;
    let got = c.get("/tw/upstreams/app/backends/b", None).await.unwrap();
    assert_eq!(got.kvs().len(), 1);
    assert!(got.kvs()[0]
        .value_str()
        .unwrap()
        .contains(&b.addr.to_string()));
    wait_until(Duration::from_secs(5), || async {
        ids(&p).await == ["a", "b"]
    })
    .await;
    assert!(!log(&p).contains(ROOT_PASSWORD));
}

#[tokio::test]
async fn a_wrong_password_gets_nothing_from_etcd_and_is_never_logged() {
    let etcd = Etcd::start_secure().await;
    let s = etcd.secure.as_ref().unwrap();
    let wrong = "not-the-Pa55word";
    let dir = tempfile::tempdir().unwrap();
    let wrong_file = dir.path().join("password");
    std::fs::write(&wrong_file, wrong).unwrap();
    let store = etcd.store().replace(
        &format!("{:?}", s.password_file.display().to_string()),
        &format!("{:?}", wrong_file.display().to_string()),
    );
    assert!(store.contains(&wrong_file.display().to_string()));
    let b = backend("b").await;
    let p = start_proxy_full(&store, "", "[upstream.app]\nbackends = []").await;
    let r = p
        .admin_req(
            reqwest::Method::POST,
            "/v1/upstreams/app/backends",
            REGISTER_TOKEN,
        )
        .json(&serde_json::json!({"addr": b.addr.to_string(), "id": "b", "ttl": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    wait_until(Duration::from_secs(10), || async {
        log(&p).contains("authentication failed")
    })
    .await;
    assert_eq!(metric(&p, "tideway_etcd_up").await, 0.0);
    let mut c = etcd.client().await;
    let got = c.get("/tw/upstreams/app/backends/b", None).await.unwrap();
    assert!(got.kvs().is_empty());
    let log = log(&p);
    assert!(
        !log.contains(wrong) && !log.contains(ROOT_PASSWORD),
        "{log}"
    );
}

/// Half a TLS setup, a password with no user, or a user over plain http:// (its password
/// would go in clear) is a config error naming the line.
#[test]
fn incomplete_etcd_security_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    for (etcd, expected) in [
        (
            r#"etcd = { endpoints = ["https://127.0.0.1:2379"] }"#,
            "needs ca",
        ),
        (
            r#"etcd = { endpoints = ["http://127.0.0.1:2379"], password_file = "/p" }"#,
            "needs user",
        ),
        (
            r#"etcd = { endpoints = ["https://127.0.0.1:2379"], ca = "/nonexistent/ca.pem" }"#,
            "/nonexistent/ca.pem",
        ),
        (
            r#"etcd = { endpoints = ["http://127.0.0.1:2379"], user = "u", password_file = "PW" }"#,
            "in clear",
        ),
    ] {
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let etcd = etcd.replace("PW", &pw.display().to_string());
        let text = format!("[store]\n{etcd}\n");
        let path = dir.path().join("t.toml");
        let e = tideway::config::parse(&text, &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected) && e.contains(":2:"), "{e}");
    }
}
