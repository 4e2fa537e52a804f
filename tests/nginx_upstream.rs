//! nginx's upstream semantics, side by side with real nginx on the same config file (`tideway
//! run --nginx`): plain `hash $arg_key` over 2,000 keys, `backup` failover, and
//! `proxy_next_upstream` on each condition (same statuses, same backends in the same order).

mod common;

use common::nginx::*;
use common::*;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Requests as the test backends saw them, in arrival order: "ID METHOD".
type Log = Arc<Mutex<Vec<String>>>;

/// A test backend: answers `200` with its id, or, when its id is in the request's `fail=`
/// list, fails the way the path says: `/error` closes without answering, `/timeout` says
/// nothing, `/invalid` sends a header nginx and tideway refuse, `/sNNN` answers status NNN.
/// Every answer closes the connection, so no connection is reused.
struct TestBackend {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn test_backend(id: &'static str, log: Log) -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(answer(s, id, log.clone()));
        }
    });
    TestBackend { addr, task }
}

async fn answer(mut s: TcpStream, id: &'static str, log: Log) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    log.lock().unwrap().push(format!("{id} {method}"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let fails = query
        .split('&')
        .find_map(|p| p.strip_prefix("fail="))
        .is_some_and(|f| f.split(',').any(|x| x == id));
    let reply = |status: u16, extra: &str| {
        format!(
            "HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{id}",
            id.len()
        )
    };
    let out = match (fails, path) {
        (false, _) => reply(200, ""),
        (true, "/error") => return,
        (true, "/timeout") => {
            // Silent until the proxy gives up and closes.
            let _ = tokio::time::timeout(Duration::from_secs(20), s.read(&mut [0u8; 64])).await;
            return;
        }
        (true, "/invalid") => reply(200, "Bad Header: x\r\n"),
        (true, p) => reply(p.trim_start_matches("/s").parse().unwrap_or(500), ""),
    };
    let _ = s.write_all(out.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// One request through a proxy: the status, and the body when a backend wrote it (an id),
/// else "proxy".
async fn ask(port: u16, method: &str, target: &str) -> (u16, String) {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}{target}");
    let req = match method {
        "POST" => client.post(&url).body("x=1"),
        _ => client.get(&url),
    };
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    let body = if ["a", "b", "c"].contains(&body.as_str()) {
        body
    } else {
        "proxy".into()
    };
    (status, body)
}

/// Write `http` (an nginx `http { ... }` block made for `port`) into two config files, one per
/// proxy, and start nginx and tideway on them; `ports` gives each server block's port per
/// proxy (nginx's first).
async fn both(
    dir: &Path,
    http: impl Fn(&[u16]) -> String,
    servers: usize,
) -> (Running, Running, Vec<u16>, Vec<u16>) {
    let nports: Vec<u16> = (0..servers).map(|_| free_port()).collect();
    let tports: Vec<u16> = (0..servers).map(|_| free_port()).collect();
    let nfile = dir.join("nginx.conf");
    std::fs::write(&nfile, nginx_main(dir) + &http(&nports)).unwrap();
    let tfile = dir.join("tideway-nginx.conf");
    std::fs::write(&tfile, nginx_main(dir) + &http(&tports)).unwrap();
    let nginx = run_nginx(&nfile, nports[0], dir).await;
    let tideway = run_tideway_nginx(&tfile, tports[0], dir).await;
    for (&n, &t) in nports.iter().zip(&tports) {
        wait_port(n).await;
        wait_port(t).await;
    }
    (nginx, tideway, nports, tports)
}

/// `http { ... }` head shared by the tests: no access log, temp files in `dir`.
fn http_head(dir: &Path) -> String {
    format!(
        "http {{\n    access_log off;\n    client_body_temp_path {d};\n    proxy_temp_path {d};\n",
        d = dir.display()
    )
}

#[tokio::test]
async fn plain_hash_maps_2000_keys_as_nginx_before_and_after_a_server_goes() {
    const WEIGHTS: [u32; 5] = [1, 2, 3, 7, 10];
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(backend(&format!("h{i}")).await);
    }
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let ndir = dir.path().join(format!("r{round}"));
        std::fs::create_dir_all(&ndir).unwrap();
        let servers: String = all
            .iter()
            .zip(WEIGHTS)
            .enumerate()
            .filter(|(i, _)| round == 0 || *i != 2)
            .map(|(_, (b, w))| format!("        server {} weight={w};\n", b.addr))
            .collect();
        let head = http_head(&ndir);
        let http = |ports: &[u16]| {
            format!(
                "{head}    upstream app {{\n        hash $arg_key;\n{servers}    }}\n    server {{\n        listen 127.0.0.1:{};\n        location / {{ proxy_pass http://app; proxy_http_version 1.1; }}\n    }}\n}}\n",
                ports[0]
            )
        };
        let (_n, _t, np, tp) = both(&ndir, http, 1).await;
        let client = reqwest::Client::new();
        let mut differ = 0;
        let mut used = std::collections::HashSet::new();
        for key in 0..2000 {
            let path = format!("/?key=user-{key}");
            let want = backend_id(&client, &format!("http://127.0.0.1:{}{path}", np[0])).await;
            let got = backend_id(&client, &format!("http://127.0.0.1:{}{path}", tp[0])).await;
            differ += usize::from(want != got);
            used.insert(want);
        }
        println!("round {round}: 2000 keys, {differ} differ");
        assert_eq!(
            differ, 0,
            "round {round}: nginx and tideway disagree on {differ} keys"
        );
        assert_eq!(used.len(), if round == 0 { 5 } else { 4 });
    }
}

#[tokio::test]
async fn backup_takes_over_while_the_primary_is_down_as_in_nginx() {
    let log: Log = Arc::default();
    let backup = test_backend("b", log.clone()).await;
    let primary = test_backend("a", log.clone()).await;
    let paddr = primary.addr;
    let dir = tempfile::tempdir().unwrap();
    let head = http_head(dir.path());
    let http = |ports: &[u16]| {
        format!(
            "{head}    upstream app {{\n        server {paddr} max_fails=1 fail_timeout=1s;\n        server {} backup;\n    }}\n    server {{\n        listen 127.0.0.1:{};\n        location / {{ proxy_pass http://app; proxy_http_version 1.1; }}\n    }}\n}}\n",
            backup.addr, ports[0]
        )
    };
    let (_n, _t, np, tp) = both(dir.path(), http, 1).await;
    let ports = [np[0], tp[0]];
    for p in ports {
        for _ in 0..5 {
            assert_eq!(ask(p, "GET", "/").await, (200, "a".into()), "port {p}");
        }
    }
    // The primary goes down: the backup answers, with nginx and with tideway.
    drop(primary);
    for p in ports {
        for _ in 0..5 {
            assert_eq!(ask(p, "GET", "/").await, (200, "b".into()), "port {p}");
        }
    }
    // The primary comes back on its address: after fail_timeout, it answers again.
    let listener = loop {
        match TcpListener::bind(paddr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let back_log = log.clone();
    let back = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(answer(s, "a", back_log.clone()));
        }
    });
    for p in ports {
        let deadline = Instant::now() + Duration::from_secs(15);
        while ask(p, "GET", "/").await.1 != "a" {
            assert!(
                Instant::now() < deadline,
                "port {p}: the primary never came back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for _ in 0..5 {
            assert_eq!(ask(p, "GET", "/").await, (200, "a".into()), "port {p}");
        }
    }
    back.abort();
}

/// The upstreams of the next_upstream test: name, `proxy_next_upstream` and extra directives.
const RETRY_UPSTREAMS: [(&str, &str); 13] = [
    ("error", "proxy_next_upstream error;"),
    ("timeout", "proxy_next_upstream error timeout;"),
    ("invalid", "proxy_next_upstream error invalid_header;"),
    ("h502", "proxy_next_upstream error http_502;"),
    ("h503", "proxy_next_upstream error http_503;"),
    ("h404", "proxy_next_upstream error http_404;"),
    ("h500", "proxy_next_upstream error http_500;"),
    ("h504", "proxy_next_upstream error http_504;"),
    ("h403", "proxy_next_upstream error http_403;"),
    ("h429", "proxy_next_upstream error http_429;"),
    (
        "nonidem",
        "proxy_next_upstream error http_502 non_idempotent;",
    ),
    ("off", "proxy_next_upstream off;"),
    (
        "tries",
        "proxy_next_upstream error http_502; proxy_next_upstream_tries 2;",
    ),
];

#[tokio::test]
async fn next_upstream_conditions_retry_as_nginx_does() {
    let log: Log = Arc::default();
    let mut bs = Vec::new();
    for id in ["a", "b", "c"] {
        bs.push(test_backend(id, log.clone()).await);
    }
    let servers: String = bs
        .iter()
        .map(|b| format!("        server {} max_fails=0;\n", b.addr))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let head = http_head(dir.path());
    let http = |ports: &[u16]| {
        let mut out = head.clone();
        for (i, (name, retry)) in RETRY_UPSTREAMS.iter().enumerate() {
            out += &format!(
                "    upstream {name} {{\n        hash $arg_key;\n{servers}    }}\n    server {{\n        listen 127.0.0.1:{};\n        location / {{\n            proxy_pass http://{name};\n            proxy_http_version 1.1;\n            proxy_read_timeout 1s;\n            {retry}\n        }}\n    }}\n",
                ports[i]
            );
        }
        out + "}\n"
    };
    let (_n, _t, np, tp) = both(dir.path(), http, RETRY_UPSTREAMS.len()).await;
    let port = |ports: &[u16], name: &str| {
        ports[RETRY_UPSTREAMS.iter().position(|u| u.0 == name).unwrap()]
    };
    // (upstream, method, path, keys, fail sets)
    let fail_sets: &[&str] = &["a", "b", "c", "a,b", "b,c", "a,c", "a,b,c"];
    let cases: Vec<(&str, &str, &str, u32, &[&str])> = vec![
        ("error", "GET", "/error", 6, fail_sets),
        ("error", "POST", "/error", 3, &["a", "b", "c"]),
        ("off", "GET", "/error", 3, &["a", "b", "c"]),
        ("timeout", "GET", "/timeout", 2, &["a", "b", "c"]),
        ("error", "GET", "/timeout", 2, &["a", "b", "c"]),
        ("invalid", "GET", "/invalid", 4, fail_sets),
        ("error", "GET", "/invalid", 3, &["a", "b", "c"]),
        ("h502", "GET", "/s502", 6, fail_sets),
        ("error", "GET", "/s502", 3, &["a", "b", "c"]),
        ("h502", "POST", "/s502", 3, &["a", "b", "c"]),
        ("nonidem", "POST", "/s502", 4, fail_sets),
        ("h503", "GET", "/s503", 4, fail_sets),
        ("h503", "GET", "/s502", 2, &["a", "b", "c"]),
        ("h404", "GET", "/s404", 4, fail_sets),
        ("error", "GET", "/s404", 3, &["a", "b", "c"]),
        ("h500", "GET", "/s500", 3, fail_sets),
        ("h500", "GET", "/s502", 2, &["a", "b", "c"]),
        ("h504", "GET", "/s504", 3, fail_sets),
        ("h403", "GET", "/s403", 3, fail_sets),
        ("h403", "POST", "/s403", 2, &["a", "b", "c"]),
        ("h429", "GET", "/s429", 3, fail_sets),
        ("tries", "GET", "/s502", 4, fail_sets),
    ];
    let mut retried = std::collections::BTreeMap::<&str, usize>::new();
    for (upstream, method, path, keys, sets) in cases {
        for key in 0..keys {
            for fail in sets {
                let target = format!("{path}?key=k{key}&fail={fail}");
                let mut seen = Vec::new();
                for ports in [&np, &tp] {
                    log.lock().unwrap().clear();
                    let answer = ask(port(ports, upstream), method, &target).await;
                    // A silent backend's log line may come after the proxy gave up on it.
                    let trail = std::mem::take(&mut *log.lock().unwrap());
                    seen.push((answer, trail));
                }
                let what = format!("{upstream} {method} {target}");
                println!("{what}: nginx {:?}", seen[0]);
                assert_eq!(seen[1], seen[0], "{what}: tideway vs nginx");
                if seen[0].1.len() > 1 {
                    *retried.entry(upstream).or_default() += 1;
                }
            }
        }
    }
    // Each condition that lists a failure went on to another backend at least once.
    for u in [
        "error", "timeout", "invalid", "h502", "h503", "h404", "h500", "h504", "h403", "h429",
        "nonidem", "tries",
    ] {
        assert!(
            retried.get(u).copied().unwrap_or(0) > 0,
            "{u}: never retried"
        );
    }
    assert_eq!(retried.get("off"), None, "off never retries");
}

/// A status `proxy_next_upstream` lists takes its backend out for `fail_timeout` when it sends
/// the request on, as with nginx; a listed 404 sends it on without counting.
#[tokio::test]
async fn listed_5xx_ejects_its_backend_and_404_does_not_as_in_nginx() {
    let log: Log = Arc::default();
    let mut bs = Vec::new();
    for id in ["a", "b", "c"] {
        bs.push(test_backend(id, log.clone()).await);
    }
    let servers: String = bs
        .iter()
        .map(|b| format!("        server {} max_fails=1 fail_timeout=60s;\n", b.addr))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let head = http_head(dir.path());
    let http = |ports: &[u16]| {
        let mut out = head.clone();
        for (i, status) in ["502", "404"].iter().enumerate() {
            out += &format!(
                "    upstream u{status} {{\n        hash $arg_key;\n{servers}    }}\n    server {{\n        listen 127.0.0.1:{};\n        location / {{\n            proxy_pass http://u{status};\n            proxy_http_version 1.1;\n            proxy_next_upstream error http_{status};\n        }}\n    }}\n",
                ports[i]
            );
        }
        out + "}\n"
    };
    let (_n, _t, np, tp) = both(dir.path(), http, 2).await;
    let mut hits_on_a = Vec::new();
    for (i, status) in ["502", "404"].iter().enumerate() {
        let mut runs = Vec::new();
        for ports in [&np, &tp] {
            let mut run = Vec::new();
            for key in 0..8 {
                for target in [
                    format!("/s{status}?key=k{key}&fail=a"),
                    format!("/?key=k{key}"),
                ] {
                    log.lock().unwrap().clear();
                    let answer = ask(ports[i], "GET", &target).await;
                    run.push((target, answer, std::mem::take(&mut *log.lock().unwrap())));
                }
            }
            runs.push(run);
        }
        for (want, got) in runs[0].iter().zip(&runs[1]) {
            assert_eq!(got, want, "http_{status}: tideway vs nginx");
        }
        let a = runs[0]
            .iter()
            .flat_map(|r| &r.2)
            .filter(|l| l.starts_with("a "))
            .count();
        println!("http_{status}: backend a got {a} requests");
        hits_on_a.push(a);
    }
    assert_eq!(hits_on_a[0], 1, "a 502 took a out after its first");
    assert!(hits_on_a[1] > 2, "404s never take a out: {hits_on_a:?}");
}

/// TOML's `backup = true`: shown by the API, idle while the primary serves, serving while an
/// operator has the primary disabled.
#[tokio::test]
async fn a_toml_backup_serves_only_while_no_primary_can() {
    let (primary, spare) = (backend("p").await, backend("s").await);
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"least_conn\"\nbackends = [{{ addr = \"{}\", id = \"p\" }}, {{ addr = \"{}\", id = \"s\", backup = true }}]",
        primary.addr, spare.addr
    ))
    .await;
    let v = p.upstream_json().await;
    let backup: Vec<_> = v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_str().unwrap().to_string(), b["backup"].as_bool()))
        .collect();
    assert_eq!(backup, [("p".into(), None), ("s".into(), Some(true))]);
    let client = reqwest::Client::new();
    for _ in 0..10 {
        assert_eq!(backend_id(&client, &p.url("/")).await, "p");
    }
    let r = p
        .admin_req(
            reqwest::Method::POST,
            "/v1/upstreams/app/backends/p/state",
            ADMIN_TOKEN,
        )
        .json(&serde_json::json!({ "state": "disabled" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    for _ in 0..10 {
        assert_eq!(backend_id(&client, &p.url("/")).await, "s");
    }
}
