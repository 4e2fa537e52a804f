//! The dashboard at `/` on the admin listener: its headers, and the page itself driven end to
//! end in headless Chromium through chromedriver (W3C WebDriver over HTTP, with reqwest).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
#[path = "support/chromedriver.rs"]
mod chromedriver;

use chromedriver::*;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Upstream `app` with the static demo backends `b1` and `b2`.
async fn proxy_with_two_backends() -> (Proxy, Backend, Backend) {
    let (b1, b2) = (backend("b1").await, backend("b2").await);
    let p = start_proxy(&format!(
        "[upstream.app]\nrebalance = {{ per_second = 10 }}\n{}\n",
        backends_toml(&[(&b1, 1), (&b2, 1)])
    ))
    .await;
    (p, b1, b2)
}

#[tokio::test]
async fn page_is_served_without_token_with_strict_headers_and_nothing_external() {
    let (p, _b1, _b2) = proxy_with_two_backends().await;
    let r = reqwest::get(p.admin_url("/")).await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let header = |name: &str| {
        h.get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_string()
    };
    assert!(header("content-type").starts_with("text/html"));
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive:?}: {csp}");
    }
    assert!(
        csp.contains("script-src 'sha256-") && csp.contains("style-src 'sha256-"),
        "{csp}"
    );
    let body = r.text().await.unwrap();
    assert!(body.starts_with("<!doctype html>"));
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "the page references an external URL"
    );

    // Only `/` is the page: the API still wants the token, unknown paths are still 404.
    let r = reqwest::get(p.admin_url("/v1/upstreams")).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::get(p.admin_url("/index.html")).await.unwrap();
    assert_eq!(r.status(), 404);
}

/// `tideway demo` as a user runs it, then its dashboard in the browser: the three backends
/// that registered themselves are there.
#[tokio::test]
async fn the_demo_dashboard_shows_the_self_registered_backends() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_port(), free_port());
    let (_demo, stdout) = spawn_demo(dir.path(), listen, admin);
    // The dashboard URL, with its token, as the demo prints it.
    let url = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split("dashboard: ").nth(1).map(str::to_string))
            .expect("the demo prints its dashboard URL")
    })
    .await
    .unwrap();
    let (_driver, wd) = Chromedriver::start().await;
    wd.goto(url.trim()).await;
    for i in 1..=3 {
        let row = format!(r#"tr[data-backend="app/demo-{i}"]"#);
        wd.wait_for(&row).await;
        wd.wait_text(&format!(r#"{row} [data-field="state"]"#), "active")
            .await;
    }
}

#[tokio::test]
async fn dashboard_shows_backends_and_disables_one_in_headless_chromium() {
    let (p, back1, _back2) = proxy_with_two_backends().await;
    let (_driver, wd) = Chromedriver::start().await;

    wd.goto(&format!("http://{}/#token={ADMIN_TOKEN}", p.admin))
        .await;
    let b1 = r#"tr[data-backend="app/b1"]"#;
    let b2 = r#"tr[data-backend="app/b2"]"#;
    wd.wait_for(b1).await;
    wd.wait_for(b2).await;
    for row in [b1, b2] {
        wd.wait_text(&format!(r#"{row} [data-field="state"]"#), "active")
            .await;
        wd.wait_text(&format!(r#"{row} [data-field="health"]"#), "healthy")
            .await;
        wd.wait_text(&format!(r#"{row} [data-field="weight"]"#), "1")
            .await;
    }
    // Rebalancing is shown with its upstream.
    wd.wait_until_text(
        r#"section[data-upstream="app"] [data-field="policy"]"#,
        |t| t.contains("rebalanced: 0 moved, 0 misplaced"),
    )
    .await;
    let addr = wd
        .text(&format!(r#"{b1} [data-field="addr"]"#))
        .await
        .unwrap();
    assert_eq!(addr, back1.addr.to_string());
    no_token_kept(&wd).await;
    // The inline style ran too (the CSP allows it by hash; a blocked sheet leaves no border).
    let border = wd
        .execute("return getComputedStyle(document.querySelector('section')).borderTopStyle")
        .await;
    assert_eq!(border, "solid", "the page's style was not applied");

    // Disable b1 with its button: the pool has it disabled, b2 stays active.
    let button = wd
        .find(&format!(r#"{b1} button[data-action="disable"]"#))
        .await
        .expect("a Disable button");
    wd.click(&button).await;
    let pr = &p;
    wait_until(Duration::from_secs(10), || async move {
        pr.backends()
            .await
            .iter()
            .any(|b| b.0 == "b1" && b.2 == "disabled")
    })
    .await;
    let states: Vec<(String, String)> =
        p.backends().await.into_iter().map(|b| (b.0, b.2)).collect();
    assert_eq!(
        states,
        [
            ("b1".into(), "disabled".into()),
            ("b2".into(), "active".into())
        ]
    );
    // ... and the page shows it after its refresh.
    wd.wait_text(&format!(r#"{b1} [data-field="state"]"#), "disabled")
        .await;
    wd.wait_text(&format!(r#"{b2} [data-field="state"]"#), "active")
        .await;
    wd.wait_text("#status", "app/b1: state set to disabled")
        .await;

    // A new weight for b2 through its input and Set button.
    let input = wd
        .find(&format!(r#"{b2} input[data-input="weight"]"#))
        .await
        .expect("a weight input");
    wd.type_into(&input, "7").await;
    let set = wd
        .find(&format!(r#"{b2} button[data-action="set-weight"]"#))
        .await
        .expect("a Set button");
    wd.click(&set).await;
    wait_until(Duration::from_secs(10), || async move {
        pr.backends().await.iter().any(|b| b.0 == "b2" && b.3 == 7)
    })
    .await;
    wd.wait_text(&format!(r#"{b2} [data-field="weight"]"#), "7")
        .await;

    // Requests per second appear from the second poll on.
    let client = reqwest::Client::new();
    for _ in 0..5 {
        backend_id(&client, &p.url("/")).await;
    }
    wd.wait_until_text(&format!(r#"{b2} [data-field="rps"]"#), |t| {
        t.parse::<f64>().is_ok()
    })
    .await;

    // A wrong token: the 401 shows in the status line and the table is gone.
    wd.goto(&format!("http://{}/#token=wrong-token", p.admin))
        .await;
    wd.wait_until_text("#status", |t| {
        t.contains("401") && t.contains("invalid token")
    })
    .await;
    assert!(
        wd.find(b1).await.is_none(),
        "rows left after a refused token"
    );
    no_token_kept(&wd).await;
}

/// A listener with routes: the page lists each route of `GET /v1/routes` with its hosts,
/// location rule, action (upstream or return) and settings; a sticky upstream says so.
#[tokio::test]
async fn dashboard_shows_the_routes_of_a_routes_config() {
    let b = backend("r1").await;
    let dir = tempfile::tempdir().unwrap();
    let (http, admin) = (free_port(), free_port());
    let config = format!(
        r#"[admin]
listen = "127.0.0.1:{admin}"
[store]
data_dir = "{data}"

[[listener]]
listen = "127.0.0.1:{http}"

[[listener.route]]
host = ["api.example.com", "*.api.example.com"]
path = "^~ /api/"
upstream = "app"
uri = "/v1/"
connect_timeout = "2s"
websocket = false

[[listener.route]]
host = ["api.example.com", "*.api.example.com"]
path = "= /status"
return = {{ code = 200, text = "ok" }}

[[listener.route]]
path = "/"
upstream = "app"
default = true
max_body = 1024

[upstream.app]
sticky = {{ cookie = "srv_id" }}
backends = [{{ addr = "{addr}", id = "r1" }}]
"#,
        data = dir.path().join("data").display(),
        addr = b.addr,
    );
    let config_path = dir.path().join("tideway.toml");
    std::fs::write(&config_path, config).unwrap();
    let child = spawn_tideway_with(&config_path, dir.path(), &[]);
    let p = Proxy {
        child,
        http: format!("127.0.0.1:{http}").parse().unwrap(),
        admin: format!("127.0.0.1:{admin}").parse().unwrap(),
        dir,
        config_path,
    };
    wait_ready(&p).await;
    let (_driver, wd) = Chromedriver::start().await;
    wd.goto(&format!("http://{}/#token={ADMIN_TOKEN}", p.admin))
        .await;
    let listener = format!(r#"section[data-listener="127.0.0.1:{http}"]"#);
    let field = |route: usize, field: &str| {
        format!(r#"{listener} tr[data-route="{route}"] [data-field="{field}"]"#)
    };
    wd.wait_for(&field(0, "path")).await;
    wd.wait_text(&field(0, "hosts"), "api.example.com *.api.example.com")
        .await;
    wd.wait_text(&field(0, "path"), "^~ /api/").await;
    wd.wait_text(&field(0, "action"), "upstream app (uri /v1/)")
        .await;
    wd.wait_text(&field(0, "settings"), "connect 2 s \u{b7} websocket off")
        .await;
    wd.wait_text(&field(1, "path"), "= /status").await;
    wd.wait_text(&field(1, "action"), "return 200 ok").await;
    wd.wait_text(&field(2, "hosts"), "any host (default)").await;
    wd.wait_text(&field(2, "path"), "/").await;
    wd.wait_text(&field(2, "action"), "upstream app").await;
    wd.wait_text(&field(2, "settings"), "websocket on \u{b7} max body 1024 B")
        .await;
    wd.wait_until_text(&field(1, "at"), |t| t.ends_with("/tideway.toml:17"))
        .await;
    wd.wait_until_text(&format!("{listener} div"), |t| t.contains("3 routes"))
        .await;
    assert!(wd.find(&field(3, "path")).await.is_none(), "a fourth route");
    wd.wait_until_text(
        r#"section[data-upstream="app"] [data-field="policy"]"#,
        |t| t.contains("sticky cookie srv_id"),
    )
    .await;
}

/// The page's history, drain, fleet and closes panels, from a running tideway: the charts
/// draw the last samples (`GET /v1/history`), a draining backend shows its connections left
/// and the time until `drain_timeout`, and the closes panel lists the tunnels' ends by reason.
#[tokio::test]
async fn dashboard_draws_charts_drain_progress_fleet_and_closes() {
    let (b1, b2) = (backend("b1").await, backend("b2").await);
    let p = start_proxy(&format!(
        "[upstream.app]\ndrain_timeout = \"300s\"\n{}\n",
        backends_toml(&[(&b1, 1), (&b2, 1)])
    ))
    .await;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        backend_id(&client, &p.url("/")).await;
    }
    // Four WebSockets (two on each backend, round robin), and two closed by their clients.
    let mut open = Vec::new();
    for _ in 0..6 {
        let (mut ws, _) = tokio_tungstenite::connect_async(p.ws_url("/ws"))
            .await
            .unwrap();
        ws.send(Message::text("hi")).await.unwrap();
        assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
        open.push(ws);
    }
    for mut ws in open.drain(4..) {
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }
    let pr = &p;
    wait_until(Duration::from_secs(10), || async move {
        pr.upstream_json().await["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["active_connections"] == 2)
    })
    .await;
    // b1 drains: its two WebSockets stay until drain_timeout.
    let r = p
        .admin_req(
            reqwest::Method::POST,
            "/v1/upstreams/app/backends/b1/state",
            ADMIN_TOKEN,
        )
        .json(&json!({ "state": "draining" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let (_driver, wd) = Chromedriver::start().await;
    wd.goto(&format!("http://{}/#token={ADMIN_TOKEN}", p.admin))
        .await;
    let drain = r#"[data-drain="app/b1"]"#;
    wd.wait_text(&format!(r#"{drain} [data-field="left"]"#), "2")
        .await;
    let left = wd
        .wait_until_text(&format!(r#"{drain} [data-field="time-left"]"#), |t| {
            t.ends_with(" s")
        })
        .await;
    let secs: u64 = left.trim_end_matches(" s").parse().unwrap();
    assert!((250..=300).contains(&secs), "{left}");
    assert!(wd.find(r#"[data-drain="app/b2"]"#).await.is_none());
    // The closes panel: the two tunnels their clients closed.
    wd.wait_text(
        r#"[data-closes="tunnels_ended"] tr[data-close="app/closed"] [data-field="count"]"#,
        "2",
    )
    .await;
    // The fleet: this instance alone (no etcd), with its connections to backends.
    wd.wait_text(r#"#fleet-rows tr [data-field="active_connections"]"#, "4")
        .await;
    // Charts: the sampler takes one sample at start, then one every 5 s; each chart draws
    // the upstream's line through at least two of them, and a line per backend.
    let chart =
        |field: &str| format!(r#"section[data-upstream="app"] figure[data-chart="{field}"]"#);
    for field in ["connections", "requests_per_second", "errors_per_second"] {
        wd.wait_for(&format!("{} svg", chart(field))).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let drawn = wd
            .execute(&format!(
                "const s = document.querySelector('{} svg'); return s ? [Number(s.dataset.points), s.querySelectorAll('polyline').length] : [0, 0]",
                chart("connections")
            ))
            .await;
        if drawn[0].as_u64().unwrap() >= 2 && drawn[1].as_u64().unwrap() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the chart drew {drawn}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wd.wait_text(
        &format!(r#"{} [data-field="now"]"#, chart("connections")),
        "4",
    )
    .await;
    wd.wait_for(r#"section[data-upstream="app"] [data-series="b1"]"#)
        .await;
    wd.wait_for(r#"section[data-upstream="app"] [data-series="b2"]"#)
        .await;
    drop(open);
}

/// Nothing of the token outside the page's memory: no storage, no cookie, no fragment.
async fn no_token_kept(wd: &WebDriver) {
    let kept = wd
        .execute(
            "return [localStorage.length, sessionStorage.length, document.cookie, location.hash]",
        )
        .await;
    assert_eq!(
        kept,
        json!([0, 0, "", ""]),
        "the page kept the token somewhere"
    );
}
