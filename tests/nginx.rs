//! nginx drop-in: golden conversions, the seed config end to end, and the same sticky
//! mapping as a real nginx (`hash $arg_uid consistent`).

mod common;

use common::nginx::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const GOLDEN: &str = "tests/nginx/golden";

/// Each `X.conf` in the golden folder converts to exactly `X.toml` with exactly the warnings in
/// `X.warnings`, and the TOML is a valid tideway config. `UPDATE_GOLDEN=1` rewrites them.
#[test]
fn golden_conversions() {
    let mut n = 0;
    for entry in std::fs::read_dir(GOLDEN).unwrap() {
        let conf = entry.unwrap().path();
        if conf.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        n += 1;
        let rel = PathBuf::from(GOLDEN).join(conf.file_name().unwrap());
        let got = tideway::nginx::import(&rel).unwrap_or_else(|e| panic!("{e}"));
        let warnings = got.warnings.join("\n") + "\n";
        let (toml_path, warn_path) = (conf.with_extension("toml"), conf.with_extension("warnings"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&toml_path, &got.toml).unwrap();
            std::fs::write(&warn_path, &warnings).unwrap();
        }
        assert_eq!(
            got.toml,
            std::fs::read_to_string(&toml_path).unwrap(),
            "{}",
            rel.display()
        );
        assert_eq!(
            warnings,
            std::fs::read_to_string(&warn_path).unwrap(),
            "{}",
            rel.display()
        );
        tideway::config::parse(&got.toml, &toml_path).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(n >= 3, "golden folder has {n} configs");
}

#[test]
fn check_nginx_reports_file_line_col_and_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "upstream u {\n    server 127.0.0.1:1\n}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["check", "--nginx"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:1: unexpected \"}}\"", bad.display())),
        "{err}"
    );

    let full = Path::new(GOLDEN).join("full.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["check", "--nginx"])
        .arg(&full)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The report, by class, on stdout.
    let report = String::from_utf8_lossy(&out.stdout);
    let ignored = report
        .split("ignored (")
        .nth(1)
        .unwrap_or_else(|| panic!("no ignored group: {report}"));
    assert!(
        ignored.contains("  tests/nginx/golden/full.conf:33: \"gzip\" is ignored"),
        "{report}"
    );
    assert!(
        ignored.contains("conf.d/chat.conf:6: backup server"),
        "{report}"
    );

    let good = Path::new(GOLDEN).join("seed-workerman-servers.conf");

    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .arg("import-nginx")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[upstream.workerman_servers]"));
}

#[tokio::test]
async fn the_seed_config_serves_http_and_websocket() {
    let (a, b) = (backend("w1").await, backend("w2").await);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let seed =
        std::fs::read_to_string(Path::new(GOLDEN).join("seed-workerman-backend.conf")).unwrap();
    let conf = seed
        .replace("127.0.0.1:2346", &a.addr.to_string())
        .replace("127.0.0.1:2347", &b.addr.to_string())
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    let file = dir.path().join("nginx.conf");
    std::fs::write(&file, conf).unwrap();
    let _t = run_tideway_nginx(&file, port, dir.path()).await;
    let client = reqwest::Client::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(backend_id(&client, &format!("http://127.0.0.1:{port}/")).await);
    }
    assert_eq!(seen.len(), 2);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/chat"))
        .await
        .unwrap();
    ws.send(Message::text("seed")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("seed"));
}

fn nginx_conf(dir: &Path, port: u16, backends: &[(&Backend, u32)]) -> String {
    let servers: String = backends
        .iter()
        .map(|(b, w)| format!("        server {} weight={w};\n", b.addr))
        .collect();
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 256; }}\nhttp {{\n    access_log off;\n    client_body_temp_path {d};\n    proxy_temp_path {d};\n    upstream app {{\n        hash $arg_uid consistent;\n{servers}    }}\n    server {{\n        listen 127.0.0.1:{port};\n        location / {{ proxy_pass http://app; }}\n    }}\n}}\n",
        d = dir.display()
    )
}

async fn owners(port: u16, uids: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut out = Vec::with_capacity(uids);
    for uid in 0..uids {
        out.push(backend_id(&client, &format!("http://127.0.0.1:{port}/?uid={uid}")).await);
    }
    out
}

#[tokio::test]
async fn same_sticky_mapping_as_real_nginx() {
    if Command::new("nginx").arg("-v").output().is_err() {
        panic!("nginx is not installed (scripts/test.sh installs nginx-light)");
    }
    // The weights nginx configs use, each a different number of ring points.
    const WEIGHTS: [u32; 5] = [1, 2, 3, 7, 10];
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(backend(&format!("n{i}")).await);
    }
    let refs: Vec<(&Backend, u32)> = all.iter().zip(WEIGHTS).collect();
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2 {
        // Round 1 removes the third backend from both.
        let members: Vec<(&Backend, u32)> = refs
            .iter()
            .enumerate()
            .filter(|(i, _)| round == 0 || *i != 2)
            .map(|(_, b)| *b)
            .collect();
        let (np, tp) = (free_port(), free_port());
        let ndir = dir.path().join(format!("nginx{round}"));
        std::fs::create_dir_all(&ndir).unwrap();
        let nfile = ndir.join("nginx.conf");
        std::fs::write(&nfile, nginx_conf(&ndir, np, &members)).unwrap();
        let tfile = ndir.join("tideway-nginx.conf");
        std::fs::write(&tfile, nginx_conf(&ndir, tp, &members)).unwrap();
        let _nginx = Running(
            Command::new("nginx")
                .arg("-p")
                .arg(&ndir)
                .arg("-c")
                .arg(&nfile)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_port(np).await;
        let _tideway = run_tideway_nginx(&tfile, tp, &ndir).await;
        let from_nginx = owners(np, 2000).await;
        let from_tideway = owners(tp, 2000).await;
        let differ = from_nginx
            .iter()
            .zip(&from_tideway)
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "round {round}: {} backends (weights {WEIGHTS:?}), 2000 uids, {differ} differ",
            members.len()
        );
        assert_eq!(
            differ, 0,
            "round {round}: tideway and nginx disagree on {differ} of 2000 uids"
        );
        let used: std::collections::HashSet<_> = from_nginx.iter().collect();
        assert_eq!(used.len(), members.len());
    }
}

#[tokio::test]
async fn export_renders_the_live_pool_as_an_upstream_block() {
    let (a, b) = (backend("a").await, backend("b").await);
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"hash\"\nhash_key = \"query:uid\"\nbackends = [{{ addr = \"{}\", weight = 3 }}, {{ addr = \"{}\", state = \"disabled\" }}]",
        a.addr, b.addr
    ))
    .await;
    let text = p
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
    let mut lines = [
        format!("    server {} weight=3;", a.addr),
        format!("    server {} down;", b.addr),
    ];
    lines.sort();
    let expected = format!(
        "upstream app {{\n    hash $arg_uid consistent;\n{}\n}}\n",
        lines.join("\n")
    );
    assert_eq!(text, expected);
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args([
            "ctl",
            "--admin",
            &p.admin_url(""),
            "--token",
            ADMIN_TOKEN,
            "show",
            "app",
            "--nginx",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

/// One request's raw bytes to `port`; what the demo backend says it got as (X-Real-IP,
/// X-Forwarded-For).
async fn forwarded_as(port: u16, bytes: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: port {port} answered {text}"));
    let f = |k: &str| v[k].as_str().unwrap_or("").to_string();
    (f("x_real_ip"), f("x_forwarded_for"))
}

/// The same realip settings in nginx and in tideway (`run --nginx` on the same file): every
/// request's bytes reach the backend with the same X-Real-IP and X-Forwarded-For.
#[tokio::test]
async fn same_real_client_address_as_real_nginx() {
    let b = backend("r").await;
    let dir = tempfile::tempdir().unwrap();
    let get = |headers: &str| {
        format!("GET / HTTP/1.1\r\nHost: app\r\n{headers}Connection: close\r\n\r\n").into_bytes()
    };
    let header_cases: Vec<Vec<u8>> = [
        "",
        "X-Forwarded-For: 203.0.113.9\r\n",
        "X-Forwarded-For: 203.0.113.9, 10.0.0.2\r\n",
        "X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 10.0.0.3, 10.0.0.2\r\n",
        "X-Forwarded-For: 10.0.0.5 10.0.0.2\r\n",
        "X-Forwarded-For: junk, 10.0.0.2\r\n",
        "X-Forwarded-For: 203.0.113.9:8080\r\n",
        "X-Forwarded-For: 2001:db8::5\r\n",
        "X-Real-IP: 192.0.2.44\r\n",
        "X-Real-IP: 192.0.2.44\r\nX-Forwarded-For: 203.0.113.9\r\n",
        "X-Real-IP: 192.0.2.44\r\nX-Real-IP: 192.0.2.45\r\n",
    ]
    .iter()
    .map(|h| get(h))
    .collect();
    let pp = |line: &str, headers: &str| [line.as_bytes(), &get(headers)].concat();
    let pp_cases = vec![
        pp("PROXY TCP4 198.51.100.7 127.0.0.1 5000 80\r\n", ""),
        pp(
            "PROXY TCP4 198.51.100.7 127.0.0.1 5000 80\r\n",
            "X-Forwarded-For: 203.0.113.9\r\n",
        ),
        pp("PROXY TCP6 2001:db8::7 ::1 5000 80\r\n", ""),
    ];
    // (realip directives, proxy_protocol on the listen line, the requests)
    let configs = [
        ("set_real_ip_from 127.0.0.0/8; real_ip_header X-Forwarded-For;", false, &header_cases),
        (
            "set_real_ip_from 127.0.0.0/8; set_real_ip_from 10.0.0.0/8; real_ip_header X-Forwarded-For; real_ip_recursive on;",
            false,
            &header_cases,
        ),
        ("set_real_ip_from 10.0.0.0/8; real_ip_header X-Forwarded-For;", false, &header_cases),
        ("set_real_ip_from 127.0.0.1;", false, &header_cases),
        ("set_real_ip_from 127.0.0.0/8; real_ip_header proxy_protocol;", true, &pp_cases),
        ("set_real_ip_from 10.0.0.0/8; real_ip_header proxy_protocol;", true, &pp_cases),
    ];
    for (n, (realip, proxy_protocol, requests)) in configs.iter().enumerate() {
        let ndir = dir.path().join(format!("c{n}"));
        std::fs::create_dir_all(&ndir).unwrap();
        let conf = |port: u16| {
            let pp = if *proxy_protocol {
                " proxy_protocol"
            } else {
                ""
            };
            format!(
                "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n    access_log off;\n    client_body_temp_path {d};\n    proxy_temp_path {d};\n    upstream app {{ server {b}; }}\n    server {{\n        listen 127.0.0.1:{port}{pp};\n        {realip}\n        location / {{\n            proxy_pass http://app;\n            proxy_set_header X-Real-IP $remote_addr;\n            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n        }}\n    }}\n}}\n",
                d = ndir.display(),
                b = b.addr,
            )
        };
        let (np, tp) = (free_port(), free_port());
        let nfile = ndir.join("nginx.conf");
        std::fs::write(&nfile, conf(np)).unwrap();
        let tfile = ndir.join("tideway-nginx.conf");
        std::fs::write(&tfile, conf(tp)).unwrap();
        let _nginx = Running(
            Command::new("nginx")
                .arg("-p")
                .arg(&ndir)
                .arg("-c")
                .arg(&nfile)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_port(np).await;
        let _tideway = run_tideway_nginx(&tfile, tp, &ndir).await;
        for req in requests.iter() {
            let want = forwarded_as(np, req).await;
            let got = forwarded_as(tp, req).await;
            println!("{realip} {:?}: {want:?}", String::from_utf8_lossy(req));
            assert_eq!(got, want, "{realip}: {:?}", String::from_utf8_lossy(req));
        }
    }
}

/// The import error for `conf` (written to a file of its own), or a panic if it imports.
fn import_error(conf: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.conf");
    std::fs::write(&path, conf).unwrap();
    let err = tideway::nginx::import(&path)
        .err()
        .unwrap_or_else(|| panic!("imported: {conf}"))
        .to_string();
    (err, path.display().to_string())
}

/// Access control is never dropped (issue 21): what tideway does not implement
/// (`auth_basic`, `auth_request`, `limit_except`) fails the import with file:line at every
/// level, and so do `allow`/`deny` where tideway does not read them (a stream server).
#[test]
fn auth_fails_the_import_with_file_and_line() {
    for (at, line) in [
        ("http", "auth_basic \"closed\";"),
        ("server", "auth_request /auth;"),
        ("location", "auth_basic_user_file htpasswd;"),
        ("nested", "auth_request /auth;"),
        ("nested", "limit_except GET { deny all; }"),
    ] {
        let (h, s, l, n) = match at {
            "http" => (line, "", "", ""),
            "server" => ("", line, "", ""),
            "location" => ("", "", line, ""),
            _ => ("", "", "", line),
        };
        let conf = format!(
            "http {{\n{h}\nupstream app {{ server 127.0.0.1:1; }}\nserver {{\nlisten 8080;\nallow 10.0.0.0/8;\n{s}\nlocation / {{\n{l}\nproxy_pass http://app;\nlocation /in {{\n{n}\nproxy_pass http://app;\n}}\n}}\n}}\n}}\n"
        );
        let want_line = conf.lines().position(|x| x == line).unwrap() + 1;
        let (err, file) = import_error(&conf);
        let name = line.split(' ').next().unwrap();
        assert!(
            err.contains(&format!("{file}:{want_line}: \"{name}\" is access control")),
            "{at}: {err}"
        );
        assert!(!err.contains("\"allow\""), "allow is read there: {err}");
    }
    let (err, file) = import_error(
        "stream {\nupstream t { server 127.0.0.1:1; }\nserver {\nlisten 9000;\ndeny 10.0.0.1;\nproxy_pass t;\n}\n}\n",
    );
    assert!(
        err.contains(&format!("{file}:5: \"deny\" is access control, which tideway reads only in http, server and location blocks")),
        "{err}"
    );
}

/// allow/deny are read at every http level, a level with any replacing the enclosing list;
/// a malformed one fails with file:line; on a proxy_protocol listen they need the balancer
/// trusted (else anyone reaching the port could write the address checked).
#[test]
fn allow_and_deny_are_read_with_nginx_inheritance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.conf");
    std::fs::write(
        &path,
        "http {\nallow 10.0.0.0/8;\ndeny all;\nupstream app { server 127.0.0.1:1; }\nserver {\nlisten 8080;\nlocation / { proxy_pass http://app; }\nlocation /in/ {\ndeny 10.0.0.5/8;\nproxy_pass http://app;\nlocation /in/deep/ { proxy_pass http://app; }\n}\n}\n}\n",
    )
    .unwrap();
    let got = tideway::nginx::import(&path).unwrap_or_else(|e| panic!("{e}"));
    let lists: Vec<&str> = got
        .toml
        .lines()
        .filter(|l| l.starts_with("access"))
        .collect();
    assert_eq!(
        lists,
        [
            "access = [\"allow 10.0.0.0/8\", \"deny all\"]",
            "access = [\"deny 10.0.0.0/8\"]",
            "access = [\"deny 10.0.0.0/8\"]",
        ],
        "{}",
        got.toml
    );
    assert!(
        got.warnings
            .iter()
            .any(|w| w.contains(":9: ") && w.contains("low address bits")),
        "{:?}",
        got.warnings
    );
    let (err, file) = import_error(
        "http {\nupstream app { server 127.0.0.1:1; }\nserver {\nlisten 8080;\nlocation / {\ndeny 10.0.0;\nproxy_pass http://app;\n}\n}\n}\n",
    );
    assert!(
        err.contains(&format!("{file}:6: \"deny\": invalid address")),
        "{err}"
    );
    let (err, file) = import_error(
        "http {\nupstream app { server 127.0.0.1:1; }\nserver {\nlisten 8080 proxy_protocol;\nlocation / {\nallow 10.0.0.0/8;\ndeny all;\nproxy_pass http://app;\n}\n}\n}\n",
    );
    assert!(
        err.contains(&format!("{file}:5: allow/deny on a proxy_protocol listen")),
        "{err}"
    );
    // The PROXY header is the listen's: a server on it whose own listen line lacks the flag
    // is no safer.
    let (err, file) = import_error(
        "http {\nupstream app { server 127.0.0.1:1; }\nserver {\nlisten 8080 proxy_protocol;\nlocation / { proxy_pass http://app; }\n}\nserver {\nlisten 8080;\nserver_name b;\nlocation / {\ndeny 10.0.0.1;\nproxy_pass http://app;\n}\n}\n}\n",
    );
    assert!(
        err.contains(&format!("{file}:10: allow/deny on a proxy_protocol listen")),
        "{err}"
    );
    std::fs::write(
        &path,
        "http {\nupstream app { server 127.0.0.1:1; }\nserver {\nlisten 8080 proxy_protocol;\nset_real_ip_from 10.1.1.1;\nreal_ip_header proxy_protocol;\nlocation / {\nallow 10.0.0.0/8;\ndeny all;\nproxy_pass http://app;\n}\n}\n}\n",
    )
    .unwrap();
    tideway::nginx::import(&path).unwrap_or_else(|e| panic!("a trusted balancer: {e}"));
}

/// A location's limits are its route's (`client_limits` on the route, the server's and http's
/// under its own); a server whose limits differ from those of the listen it shares carries
/// them on its routes; an unknown zone in a location fails with the location's file:line.
#[test]
fn limits_in_locations_become_the_routes_own() {
    let zone = "limit_req_zone $binary_remote_addr zone=z:1m rate=1r/s;\nlimit_conn_zone $binary_remote_addr zone=c:1m;\nupstream app { server 127.0.0.1:1; }";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.conf");
    std::fs::write(
        &path,
        format!("http {{\n{zone}\nserver {{\nlisten 8080;\nlimit_conn c 3;\nlocation / {{ proxy_pass http://app; }}\nlocation /api/ {{\nlimit_req zone=z burst=2;\nproxy_pass http://app;\n}}\n}}\nserver {{\nlisten 8080;\nserver_name b;\nlocation / {{ proxy_pass http://app; }}\n}}\n}}\n"),
    )
    .unwrap();
    let got = tideway::nginx::import(&path).unwrap_or_else(|e| panic!("{e}"));
    let limits: Vec<&str> = got
        .toml
        .lines()
        .filter(|l| l.starts_with("client_limits"))
        .collect();
    assert_eq!(
        limits,
        [
            "client_limits = [{ zone = \"c\", conn = 3 }]",
            "client_limits = [{ zone = \"z\", burst = 2 }, { zone = \"c\", conn = 3 }]",
            "client_limits = []",
        ],
        "{}",
        got.toml
    );
    let (err, file) = import_error(&format!(
        "http {{\n{zone}\nserver {{\nlisten 8080;\nlocation /api/ {{\nlimit_req zone=nowhere;\nproxy_pass http://app;\n}}\n}}\n}}\n"
    ));
    assert!(
        err.contains(&format!("{file}:7: unknown limit_req_zone \"nowhere\"")),
        "{err}"
    );
}
