//! Backends by name, against a real DNS server of the test's own (`support/dns.rs`) on a
//! loopback UDP port, and real demo backends on 127.0.0.1, 127.0.0.2 and 127.0.0.3 sharing one
//! port: every address of a name is a backend with the id `NAME:PORT@ADDRESS`; with `resolve`
//! a changed answer adds and removes backends without a reload; a name that stops resolving
//! keeps its addresses and says so; nginx's `resolver` + `server NAME resolve` work.

mod common;
#[path = "support/dns.rs"]
mod dns;

use common::nginx::Running;
use common::*;
use dns::Dns;
use std::collections::BTreeSet;
use std::time::Duration;

/// Demo backends on 127.0.0.1..=127.0.0.N, all on the same port (a name has one port).
async fn same_port_backends(n: u8) -> (u16, Vec<tokio::task::JoinHandle<()>>) {
    'again: loop {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for i in 2..=n {
            match tokio::net::TcpListener::bind((format!("127.0.0.{i}"), port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'again,
            }
        }
        let tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let id = format!("b{}", i + 1);
                tokio::spawn(async move {
                    let _ = tideway::cli::demo::serve_with(l, id, Default::default()).await;
                })
            })
            .collect();
        return (port, tasks);
    }
}

/// The backend ids of upstream `app`.
async fn ids(p: &Proxy) -> Vec<String> {
    p.backends().await.into_iter().map(|b| b.0).collect()
}

/// Which demo backends answer `n` requests through the proxy.
async fn answering(p: &Proxy, n: usize) -> BTreeSet<String> {
    let client = reqwest::Client::new();
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        seen.insert(backend_id(&client, &p.url("/")).await);
    }
    seen
}

fn resolver(dns: &Dns) -> String {
    format!("[resolver]\nservers = [\"{}\"]\n", dns.addr)
}

#[tokio::test]
async fn every_address_of_a_name_is_a_backend_and_gets_traffic() {
    let dns = Dns::start().await;
    let (port, _b) = same_port_backends(3).await;
    // The answer's order is not the backends' order: they are sorted.
    dns.set("chat.test", &["127.0.0.3", "127.0.0.1", "127.0.0.2"], 30);
    let p = start_proxy(&format!(
        "{}\n[upstream.app]\nbackends = [{{ addr = \"chat.test:{port}\" }}]\n",
        resolver(&dns)
    ))
    .await;
    let want: Vec<String> = (1..=3)
        .map(|i| format!("chat.test:{port}@127.0.0.{i}"))
        .collect();
    assert_eq!(ids(&p).await, want);
    let addrs: Vec<String> = p.backends().await.into_iter().map(|b| b.1).collect();
    assert_eq!(
        addrs,
        (1..=3)
            .map(|i| format!("127.0.0.{i}:{port}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        answering(&p, 9).await,
        ["b1", "b2", "b3"].map(String::from).into()
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve_without_resolve_is_a_config_error() {
    let dns = Dns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        format!(
            "{}\n[upstream.app]\nbackends = [{{ addr = \"nowhere.test:80\" }}]\n",
            resolver(&dns)
        ),
    )
    .unwrap();
    // Not a blocking wait: the DNS server answers on this test's runtime.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("t.toml:5:") && err.contains("nowhere.test does not exist (NXDOMAIN)"),
        "{err}"
    );
    assert!(dns.queries("nowhere.test") > 0);
}

#[tokio::test]
async fn resolve_follows_the_answer_without_a_reload() {
    let dns = Dns::start().await;
    let (port, _b) = same_port_backends(3).await;
    dns.set("chat.test", &["127.0.0.1", "127.0.0.2"], 1);
    let p = start_proxy(&format!(
        "{}\n[upstream.app]\nbackends = [{{ addr = \"chat.test:{port}\", resolve = true }}]\n",
        resolver(&dns)
    ))
    .await;
    let id = |i: u8| format!("chat.test:{port}@127.0.0.{i}");
    assert_eq!(ids(&p).await, [id(1), id(2)]);
    // An operator's toggle on an id holds across re-resolutions (the id does not change).
    let r = p
        .admin_req(
            reqwest::Method::POST,
            &format!("/v1/upstreams/app/backends/{}/state", id(2)),
            ADMIN_TOKEN,
        )
        .json(&serde_json::json!({ "state": "disabled" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    dns.set("chat.test", &["127.0.0.1", "127.0.0.2", "127.0.0.3"], 1);
    wait_until(Duration::from_secs(15), || async {
        ids(&p).await == [id(1), id(2), id(3)]
    })
    .await;
    let states: Vec<String> = p.backends().await.into_iter().map(|b| b.2).collect();
    assert_eq!(states, ["active", "disabled", "active"]);
    assert_eq!(
        answering(&p, 8).await,
        ["b1", "b3"].map(String::from).into()
    );

    dns.set("chat.test", &["127.0.0.3"], 1);
    wait_until(Duration::from_secs(15), || async {
        ids(&p).await == [id(3)]
    })
    .await;
    assert_eq!(answering(&p, 4).await, ["b3"].map(String::from).into());
    assert_eq!(
        metric(&p, "tideway_name_addresses{name=\"chat.test\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_name_that_stops_resolving_keeps_its_last_addresses() {
    let dns = Dns::start().await;
    let (port, _b) = same_port_backends(2).await;
    dns.set("chat.test", &["127.0.0.1", "127.0.0.2"], 1);
    let p = start_proxy(&format!(
        "{}\n[upstream.app]\nbackends = [{{ addr = \"chat.test:{port}\", resolve = true }}]\n",
        resolver(&dns)
    ))
    .await;
    let before = ids(&p).await;
    assert_eq!(before.len(), 2);
    assert_eq!(
        metric(&p, "tideway_name_failing{name=\"chat.test\"}").await,
        0.0
    );

    dns.remove("chat.test");
    wait_until(Duration::from_secs(15), || async {
        metric(&p, "tideway_name_failing{name=\"chat.test\"}").await == 1.0
    })
    .await;
    assert_eq!(ids(&p).await, before, "the last addresses stay");
    assert_eq!(
        answering(&p, 6).await,
        ["b1", "b2"].map(String::from).into()
    );
    let log = std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap();
    assert!(
        log.contains("name does not resolve; keeping its last addresses")
            && log.contains("NXDOMAIN"),
        "{log}"
    );

    // Back: it resolves again, and a new answer applies.
    dns.set("chat.test", &["127.0.0.2"], 1);
    wait_until(Duration::from_secs(20), || async {
        ids(&p).await == [format!("chat.test:{port}@127.0.0.2")]
    })
    .await;
    assert_eq!(
        metric(&p, "tideway_name_failing{name=\"chat.test\"}").await,
        0.0
    );
}

#[tokio::test]
async fn nginx_resolver_and_server_resolve() {
    let dns = Dns::start().await;
    let (port, _b) = same_port_backends(3).await;
    dns.set("ws.test", &["127.0.0.1", "127.0.0.2"], 1);
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_port(), free_port());
    let conf = format!(
        "events {{}}\nhttp {{\n    resolver {dns} valid=1s;\n    upstream app {{\n        zone app 64k;\n        server ws.test:{port} resolve;\n    }}\n    server {{\n        listen 127.0.0.1:{listen};\n        location / {{ proxy_pass http://app; }}\n    }}\n}}\n",
        dns = dns.addr
    );
    let file = dir.path().join("nginx.conf");
    std::fs::write(&file, conf).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["run", "--nginx"])
        .arg(&file)
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("TIDEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _t = Running(child);
    common::nginx::wait_port(listen).await;
    let upstream = format!("http://127.0.0.1:{admin}/v1/upstreams/app");
    let ids = || async {
        let v = get_json(&upstream, ADMIN_TOKEN).await;
        let mut ids: Vec<String> = v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let id = |i: u8| format!("ws.test:{port}@127.0.0.{i}");
    assert_eq!(ids().await, [id(1), id(2)]);
    dns.set("ws.test", &["127.0.0.2", "127.0.0.3"], 300);
    // valid=1s: asked again after a second, whatever the TTL says.
    wait_until(Duration::from_secs(15), || async {
        ids().await == [id(2), id(3)]
    })
    .await;
    let client = reqwest::Client::new();
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        seen.insert(backend_id(&client, &format!("http://127.0.0.1:{listen}/")).await);
    }
    assert_eq!(seen, ["b2", "b3"].map(String::from).into());
}

#[tokio::test]
async fn a_reload_while_the_name_fails_keeps_its_addresses() {
    let dns = Dns::start().await;
    let (port, _b) = same_port_backends(3).await;
    dns.set("chat.test", &["127.0.0.1", "127.0.0.2"], 300);
    let p = start_proxy(&format!(
        "{}\n[upstream.app]\nbackends = [{{ addr = \"chat.test:{port}\", resolve = true }}]\n",
        resolver(&dns)
    ))
    .await;
    let before = ids(&p).await;
    assert_eq!(before.len(), 2);
    dns.remove("chat.test");
    let v = p.reload().await;
    assert_eq!(v["changed"], false, "{v}");
    assert_eq!(ids(&p).await, before);
    assert_eq!(
        answering(&p, 6).await,
        ["b1", "b2"].map(String::from).into()
    );
    // Resolving again: a reload takes the new answer at once.
    dns.set("chat.test", &["127.0.0.3"], 300);
    let v = p.reload().await;
    assert_eq!(v["changed"], true, "{v}");
    assert_eq!(ids(&p).await, [format!("chat.test:{port}@127.0.0.3")]);
}
