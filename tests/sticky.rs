//! Cookie-insert stickiness (`sticky = { cookie = ... }`, NGINX Plus's `sticky cookie`), on
//! real sockets with real demo backends: the first answer sets the cookie with its
//! attributes, requests carrying it stay on its backend while others spread, a disabled,
//! drained or removed backend's cookie is replaced, a forged, oversized or duplicated cookie is
//! balanced normally, a backup is honoured only while the primaries are out, and a WebSocket
//! handshake's 101 carries the cookie too. NGINX Plus is not at hand, so this is tested
//! directly, not against nginx.

mod common;

use common::nginx::{nginx_main, run_tideway_nginx};
use common::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};
use std::collections::BTreeMap;
use std::time::Duration;
use tideway::pool::sticky::StickyId;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The cookie value naming backend `id` (the documented derivation).
fn value_of(id: &str) -> String {
    StickyId::of(id).to_string()
}

/// One GET with these `Cookie` header lines: the backend that answered and the answer's
/// `Set-Cookie`, if any.
async fn get(url: &str, cookies: &[&str]) -> (String, Option<String>) {
    let mut h = HeaderMap::new();
    for c in cookies {
        h.append(COOKIE, HeaderValue::from_str(c).unwrap());
    }
    // A fresh client each time: no cookie store, no connection reuse between requests.
    let r = reqwest::Client::new()
        .get(url)
        .headers(h)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set: Vec<String> = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(set.len() <= 1, "one Set-Cookie at most: {set:?}");
    let v: serde_json::Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        set.into_iter().next(),
    )
}

/// The value a `Set-Cookie: srv_id=VALUE; ...` sets.
fn set_value(set: &str) -> &str {
    set.strip_prefix("srv_id=")
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("not a srv_id cookie: {set}"))
}

async fn set_state(p: &Proxy, id: &str, state: &str) {
    let r = p
        .admin_req(
            reqwest::Method::POST,
            &format!("/v1/upstreams/app/backends/{id}/state"),
            ADMIN_TOKEN,
        )
        .json(&serde_json::json!({ "state": state }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let want = state.to_string();
    wait_until(Duration::from_secs(10), || {
        let want = want.clone();
        async move { p.backends().await.iter().any(|b| b.0 == id && b.2 == want) }
    })
    .await;
}

#[tokio::test]
async fn cookie_pins_requests_and_is_replaced_when_its_backend_goes() {
    let (s1, s2, s3) = (
        backend("s1").await,
        backend("s2").await,
        backend("s3").await,
    );
    let p = start_proxy(&format!(
        "[upstream.app]\nsticky = {{ cookie = \"srv_id\", expires = \"1h\", domain = \".example.com\", path = \"/\" }}\n{}\n",
        backends_toml(&[(&s1, 1), (&s2, 1), (&s3, 1)])
    ))
    .await;
    let url = p.url("/");

    // The first answer sets the cookie, with its attributes, to the backend that answered.
    let (first, set) = get(&url, &[]).await;
    let set = set.expect("the first answer sets the cookie");
    let value = set_value(&set).to_string();
    assert_eq!(value, value_of(&first), "{set}");
    assert_eq!(value.len(), 32);
    for addr in [&s1.addr, &s2.addr, &s3.addr] {
        assert!(
            !set.contains(&addr.ip().to_string()),
            "an address in clear: {set}"
        );
    }
    let attrs: Vec<&str> = set.split("; ").skip(1).collect();
    assert!(
        attrs[0].starts_with("expires=") && attrs[0].ends_with(" GMT"),
        "{set}"
    );
    assert_eq!(
        attrs[1..],
        ["max-age=3600", "domain=.example.com", "path=/"],
        "{set}"
    );

    // With the cookie: always the same backend, and no new cookie. Without: spread.
    let cookie = format!("srv_id={value}");
    for _ in 0..30 {
        assert_eq!(get(&url, &[&cookie]).await, (first.clone(), None));
    }
    let mut spread = BTreeMap::new();
    for _ in 0..12 {
        let (id, set) = get(&url, &[]).await;
        assert_eq!(set_value(&set.unwrap()), value_of(&id));
        *spread.entry(id).or_insert(0) += 1;
    }
    assert_eq!(
        spread.len(),
        3,
        "requests without a cookie spread: {spread:?}"
    );
    // Other cookies around it do not matter.
    let among = format!("a=1; srv_id={value}; b=2");
    assert_eq!(get(&url, &["x=y", &among]).await, (first.clone(), None));

    // The live upstream rendered as nginx says it back.
    let block = p
        .admin_req(
            reqwest::Method::GET,
            "/v1/upstreams/app?format=nginx",
            ADMIN_TOKEN,
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        block.contains("    sticky cookie srv_id expires=3600s domain=.example.com path=/;\n"),
        "{block}"
    );

    // Disabled: the next request lands elsewhere and gets a cookie for where it landed.
    set_state(&p, &first, "disabled").await;
    let (moved, set) = get(&url, &[&cookie]).await;
    assert_ne!(moved, first);
    assert_eq!(set_value(&set.expect("a new cookie")), value_of(&moved));
    // Active again: the old cookie names it again (the value is stable).
    set_state(&p, &first, "active").await;
    assert_eq!(get(&url, &[&cookie]).await, (first.clone(), None));
    // Draining: no new requests through the cookie either.
    set_state(&p, &first, "draining").await;
    let (moved, set) = get(&url, &[&cookie]).await;
    assert_ne!(moved, first);
    assert_eq!(set_value(&set.unwrap()), value_of(&moved));
}

#[tokio::test]
async fn a_removed_backends_cookie_is_replaced() {
    let (s1, r1) = (backend("s1").await, backend("r1").await);
    let p = start_proxy(&format!(
        "[upstream.app]\nsticky = {{ cookie = \"srv_id\", httponly = true, secure = true, samesite = \"Strict\" }}\n{}\n",
        backends_toml(&[(&s1, 1)])
    ))
    .await;
    let url = p.url("/");
    p.register("r1", &r1.addr.to_string()).await;
    let cookie = format!("srv_id={}", value_of("r1"));
    wait_until(Duration::from_secs(10), || async {
        get(&url, &[&cookie]).await == ("r1".to_string(), None)
    })
    .await;
    for _ in 0..10 {
        assert_eq!(get(&url, &[&cookie]).await, ("r1".to_string(), None));
    }
    p.deregister("r1").await;
    wait_until(Duration::from_secs(10), || async {
        !p.backends().await.iter().any(|b| b.0 == "r1")
    })
    .await;
    let (id, set) = get(&url, &[&cookie]).await;
    assert_eq!(id, "s1");
    // A session cookie (no expires), with its flags.
    assert_eq!(
        set.as_deref(),
        Some(&*format!(
            "srv_id={}; secure; httponly; samesite=strict",
            value_of("s1")
        ))
    );
}

/// What a client may send instead of a value the proxy gave: each is balanced as if there
/// were no cookie, and gets a cookie naming where it landed.
#[tokio::test]
async fn forged_oversized_and_duplicate_cookies_are_balanced_normally() {
    let (s1, s2, b) = (
        backend("s1").await,
        backend("s2").await,
        backend("bk").await,
    );
    let p = start_proxy(&format!(
        "[upstream.app]\nsticky = {{ cookie = \"srv_id\" }}\nbackends = [{{ addr = \"{}\", id = \"s1\" }}, {{ addr = \"{}\", id = \"s2\" }}, {{ addr = \"{}\", id = \"bk\", backup = true }}]\n",
        s1.addr, s2.addr, b.addr
    ))
    .await;
    let url = p.url("/");
    let s2_cookie = format!("srv_id={}", value_of("s2"));
    let huge = format!("srv_id={}", "a".repeat(6000));
    let unknown = format!("srv_id={}", value_of("nobody"));
    let upper = format!("srv_id={}", value_of("s2").to_uppercase());
    // The first `srv_id` counts, as nginx's $cookie_srv_id: a good one after a bad one is
    // not looked at, in one header or in a second one.
    let shadowed = format!("srv_id=garbage; {s2_cookie}");
    let backup = format!("srv_id={}", value_of("bk"));
    let cases: Vec<Vec<&str>> = vec![
        vec!["srv_id=garbage"],
        vec!["srv_id="],
        vec!["srv_id"],
        vec!["SRV_ID=0"],
        vec![&huge],
        vec![&unknown],
        vec!["srv_id=127.0.0.1:1"],
        vec![&shadowed],
        vec!["srv_id=zz", &s2_cookie],
        // A cookie naming the backup while the primaries are up.
        vec![&backup],
    ];
    for cookies in &cases {
        let mut seen = BTreeMap::new();
        for _ in 0..4 {
            let (id, set) = get(&url, cookies).await;
            assert_ne!(id, "bk", "{cookies:?}: a backup while primaries are up");
            let set = set.unwrap_or_else(|| panic!("{cookies:?}: no new cookie"));
            assert_eq!(set, format!("srv_id={}", value_of(&id)), "{cookies:?}");
            *seen.entry(id).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2, "{cookies:?}: balanced as usual: {seen:?}");
    }
    // Hex digits in either case name the same backend.
    assert_eq!(get(&url, &[&upper]).await.0, "s2");

    // With both primaries out, the backup takes the requests and its cookie is honoured.
    set_state(&p, "s1", "disabled").await;
    set_state(&p, "s2", "disabled").await;
    let (id, set) = get(&url, &[&s2_cookie]).await;
    assert_eq!(id, "bk");
    let bk_cookie = set.expect("a cookie for the backup");
    assert_eq!(bk_cookie, format!("srv_id={}", value_of("bk")));
    assert_eq!(get(&url, &[&bk_cookie]).await, ("bk".to_string(), None));
    // A primary is back: the backup's cookie is not honoured any more.
    set_state(&p, "s1", "active").await;
    let (id, set) = get(&url, &[&bk_cookie]).await;
    assert_eq!(id, "s1");
    assert_eq!(set.unwrap(), format!("srv_id={}", value_of("s1")));
}

#[tokio::test]
async fn websocket_handshakes_follow_and_get_the_cookie() {
    let (s1, s2) = (backend("s1").await, backend("s2").await);
    let p = start_proxy(&format!(
        "[upstream.app]\nsticky = {{ cookie = \"srv_id\", path = \"/\" }}\n{}\n",
        backends_toml(&[(&s1, 1), (&s2, 1)])
    ))
    .await;
    // Which backend a WebSocket reached, and the 101's Set-Cookie.
    let open = |cookie: Option<String>| {
        let url = p.ws_url("/ws");
        async move {
            let mut req = url.into_client_request().unwrap();
            if let Some(c) = cookie {
                req.headers_mut()
                    .insert(COOKIE, HeaderValue::from_str(&c).unwrap());
            }
            let (mut ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
            assert_eq!(res.status(), 101);
            let set = res
                .headers()
                .get(SET_COOKIE)
                .map(|v| v.to_str().unwrap().to_string());
            ws.send(Message::Text("id".into())).await.unwrap();
            let id = match ws.next().await.unwrap().unwrap() {
                Message::Text(t) => t.to_string(),
                m => panic!("unexpected {m:?}"),
            };
            (id, set)
        }
    };
    let (id, set) = open(None).await;
    let set = set.expect("the 101 sets the cookie");
    assert_eq!(set, format!("srv_id={}; path=/", value_of(&id)));
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..6 {
        assert_eq!(open(Some(cookie.clone())).await, (id.clone(), None));
    }
    // Plain HTTP with the WebSocket's cookie lands there too.
    assert_eq!(get(&p.url("/"), &[&cookie]).await, (id, None));
}

/// `sticky cookie` in an nginx upstream, run as it is by `tideway run --nginx`.
#[tokio::test]
async fn nginx_sticky_cookie_is_read() {
    let (s1, s2) = (backend("s1").await, backend("s2").await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = format!(
        "{}http {{\n  upstream app {{\n    sticky cookie srv_id expires=1h domain=.example.com path=/;\n    server {};\n    server {};\n  }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{ proxy_pass http://app; }}\n  }}\n}}\n",
        nginx_main(dir.path()),
        s1.addr,
        s2.addr
    );
    let file = dir.path().join("nginx.conf");
    std::fs::write(&file, conf).unwrap();
    let _t = run_tideway_nginx(&file, port, dir.path()).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (first, set) = get(&url, &[]).await;
    let set = set.expect("a Set-Cookie");
    // A static nginx server's id is its address.
    let addr = if first == "s1" { s1.addr } else { s2.addr };
    let value = value_of(&addr.to_string());
    assert!(
        set.starts_with(&format!("srv_id={value}; expires=")),
        "{set}"
    );
    assert!(
        set.ends_with("; max-age=3600; domain=.example.com; path=/"),
        "{set}"
    );
    let cookie = format!("srv_id={value}");
    for _ in 0..10 {
        assert_eq!(get(&url, &[&cookie]).await, (first.clone(), None));
    }
}

/// Stickiness and a hash decide the same thing: one upstream may not have both, in TOML or
/// in nginx, and the error says where.
#[test]
fn sticky_with_hash_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let check = |args: &[&str], file: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tideway"))
            .arg("check")
            .args(args)
            .arg(file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let toml = dir.path().join("t.toml");
    std::fs::write(
        &toml,
        "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\n\n[upstream.app]\nbalance = \"hash\"\nsticky = { cookie = \"srv_id\" }\nbackends = [{ addr = \"127.0.0.1:2\" }]\n",
    )
    .unwrap();
    let (code, err) = check(&["--config"], &toml);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("t.toml:7:")
            && err.contains("sticky cannot be combined with balance = \"hash\""),
        "{err}"
    );

    for (upstream, line, want) in [
        (
            "rebalance = { per_second = 5 }\nsticky = { cookie = \"srv_id\" }\n",
            7,
            "sticky cannot be combined with rebalance",
        ),
        (
            "sticky = { cookie = \"srv_id\", path = \"/a; secure\" }\n",
            6,
            "must start with '/' and hold no spaces, controls or ';'",
        ),
        ("sticky = { cookie = \"a b\" }\n", 6, "is not a cookie name"),
        (
            "sticky = { cookie = \"s\", expires = \"soon\" }\n",
            6,
            "sticky expires",
        ),
    ] {
        std::fs::write(
            &toml,
            format!("[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\n\n[upstream.app]\n{upstream}backends = [{{ addr = \"127.0.0.1:2\" }}]\n"),
        )
        .unwrap();
        let (code, err) = check(&["--config"], &toml);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&format!("t.toml:{line}:")) && err.contains(want),
            "{want}: {err}"
        );
    }

    let conf = dir.path().join("n.conf");
    std::fs::write(
        &conf,
        "http {\n  upstream app {\n    ip_hash;\n    sticky cookie srv_id;\n    server 127.0.0.1:2;\n  }\n  server {\n    listen 127.0.0.1:1;\n    location / { proxy_pass http://app; }\n  }\n}\n",
    )
    .unwrap();
    let (code, err) = check(&["--nginx"], &conf);
    assert_eq!(code, Some(1), "{err}");
    // The import report: `sticky cookie` is read, the other NGINX Plus forms are ignored.
    let good = dir.path().join("good.conf");
    std::fs::write(
        &good,
        "http {\n  upstream app {\n    sticky cookie srv_id expires=1h;\n    server 127.0.0.1:2;\n  }\n  upstream b {\n    sticky route $x;\n    server 127.0.0.1:3;\n  }\n  server {\n    listen 127.0.0.1:1;\n    location / { proxy_pass http://app; }\n    location /b { proxy_pass http://b; }\n  }\n}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["check", "--nginx"])
        .arg(&good)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    let (read, ignored) = report.split_once("ignored (").expect("an ignored group");
    assert!(read.contains("good.conf:3: \"sticky\""), "{report}");
    assert!(
        ignored.contains("good.conf:7: \"sticky\" is read only in its \"cookie\" form"),
        "{report}"
    );
    assert!(
        err.contains("n.conf:4: \"sticky\" cannot be combined with \"hash\" or \"ip_hash\""),
        "{err}"
    );
}
