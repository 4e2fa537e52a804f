//! Access control and per-route limits (issue 21), differentially: the same nginx config is
//! served by real nginx (/usr/sbin/nginx) and by `tideway run --nginx`, and the same requests
//! go to both from different loopback source addresses (127.0.0.1, .2, ... and ::1; Linux
//! routes all of 127/8). The status and the backend that answered must be the same, and a
//! request tideway denies must never reach a backend.

mod common;
#[path = "support/counting.rs"]
mod counting;

use common::nginx::{nginx_main, read_head, start_nginx_checked, start_tideway_nginx, wait_port};
use common::*;
use counting::{connect_from, Counting};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A backend that answers every request with `NAME METHOD TARGET` and closes, and keeps the
/// `X-Probe` value of every request it received.
async fn recorder(name: &'static str, probes: Arc<Mutex<HashSet<String>>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let probes = probes.clone();
            tokio::spawn(async move {
                let Some(buf) = read_head(&mut s).await else {
                    return;
                };
                let end = buf.len();
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                for line in head.lines() {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("x-probe: ") {
                        probes.lock().unwrap().insert(v.trim().to_string());
                    }
                }
                let line = head.lines().next().unwrap_or_default().to_string();
                let mut parts = line.split(' ');
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let body = format!("{name} {method} {target}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// A connection to `to` from the address `from` (IPv4 or IPv6).
async fn connect(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Send `raw` from `from` to `to`: the status and the body.
async fn send(from: IpAddr, to: SocketAddr, raw: &str) -> (u16, String) {
    let mut s = connect(from, to).await;
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "no answer to {raw:?}");
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// allow/deny at the http (none), server and location levels, nested, with `all`, CIDRs and
/// IPv6; a regex location beside a guarded prefix; a `return` and a handler-less location in
/// guarded places; a second server without rules. `PORT`, `APP`, `ADM`, `DIR` are filled in.
const ACCESS_CONF: &str = r#"http {
    access_log off;
    client_body_temp_path DIR;
    proxy_temp_path DIR;
    proxy_http_version 1.1;
    upstream app { server 127.0.0.1:APP; }
    upstream adm { server 127.0.0.1:ADM; }
    server {
        listen 127.0.0.1:PORT;
        listen [::1]:PORT;
        allow 127.0.0.1;
        allow 127.0.0.5/31;
        deny all;
        location / { proxy_pass http://app; }
        location /admin/ {
            satisfy any;
            deny 127.0.0.4;
            allow 127.0.0.0/29;
            deny all;
            proxy_pass http://adm;
            location /admin/open/ { allow all; proxy_pass http://adm; }
            location ~ \.css$ { proxy_pass http://adm; }
        }
        location ~ \.php$ { proxy_pass http://app; }
        location /public/ { allow all; proxy_pass http://app; }
        location /v6/ { allow ::1; deny 127.0.0.0/8; proxy_pass http://app; }
        location /v4rule/ { deny 127.0.0.2; proxy_pass http://app; }
        location = /ret { return 200 "ret"; }
        location /empty/ {
            allow 127.0.0.3;
            deny all;
            location /empty/in/ { allow 127.0.0.2; proxy_pass http://app; }
        }
    }
    server {
        listen 127.0.0.1:PORT;
        server_name open.test;
        location / { proxy_pass http://app; }
        location /closed/ { deny all; proxy_pass http://adm; }
    }
}
"#;

#[tokio::test]
async fn allow_and_deny_answer_as_nginx_does_and_a_denied_request_reaches_no_backend() {
    let dir = tempfile::tempdir().unwrap();
    let probes = Arc::new(Mutex::new(HashSet::new()));
    let app = recorder("app", probes.clone()).await;
    let adm = recorder("adm", probes.clone()).await;
    let (np, tp) = (free_port(), free_port());
    let conf = |port: u16| {
        ACCESS_CONF
            .replace("PORT", &port.to_string())
            .replace("APP", &app.to_string())
            .replace("ADM", &adm.to_string())
            .replace("DIR", &dir.path().display().to_string())
    };
    let nfile = dir.path().join("nginx.conf");
    std::fs::write(&nfile, format!("{}{}", nginx_main(dir.path()), conf(np))).unwrap();
    let tfile = dir.path().join("tideway.conf");
    std::fs::write(&tfile, conf(tp)).unwrap();
    let _nginx = start_nginx_checked(dir.path(), &nfile);
    // --skip-unproxied: the handler-less `location /empty/` would serve files in nginx; left
    // out, it answers 404 after its access list, as nginx does.
    let _tideway = start_tideway_nginx(&tfile, dir.path(), &["--skip-unproxied"]);
    wait_port(np).await;
    wait_port(tp).await;

    let v4: Vec<IpAddr> = [1, 2, 3, 4, 5, 6, 9]
        .iter()
        .map(|n| IpAddr::from([127, 0, 0, *n]))
        .collect();
    let v6: IpAddr = "::1".parse().unwrap();
    let paths = [
        "/",
        "/x?a=1",
        "/admin/",
        "/admin/x",
        "/admin/open/y",
        "/admin/s.css",
        "/admin/p.php",
        "/%61dmin/x",
        "/admin%2Fx",
        "/ADMIN/x",
        "/admin",
        "/public/x",
        "/v6/x",
        "/v4rule/x",
        "/ret",
        "/empty/x",
        "/empty/in/z",
        "/closed/x",
    ];
    let mut cases = Vec::new();
    for from in v4.iter().chain([&v6]) {
        for host in ["", "open.test"] {
            if from.is_ipv6() && !host.is_empty() {
                continue; // the second server listens on IPv4 only
            }
            for path in paths {
                for method in ["GET", "POST"] {
                    cases.push((*from, host, path, method));
                }
            }
        }
    }
    let (mut differ, mut statuses) = (Vec::new(), std::collections::BTreeMap::new());
    for (n, (from, host, path, method)) in cases.iter().enumerate() {
        let body = if *method == "POST" {
            "Content-Length: 5\r\n\r\nhello"
        } else {
            "\r\n"
        };
        let host_line = if host.is_empty() {
            String::new()
        } else {
            format!("Host: {host}\r\n")
        };
        let raw =
            |who: &str| {
                format!(
                "{method} {path} HTTP/1.1\r\n{}X-Probe: {who}{n}\r\nConnection: close\r\n{body}",
                if host.is_empty() { "Host: x\r\n" } else { &host_line }
            )
            };
        let to = |port: u16| SocketAddr::new(if from.is_ipv6() { v6 } else { v4[0] }, port);
        let want = send(*from, to(np), &raw("n")).await;
        let got = send(*from, to(tp), &raw("t")).await;
        let seen = |(status, body): &(u16, String)| {
            let from_backend = body.starts_with("app ") || body.starts_with("adm ");
            (
                *status,
                if from_backend || *status == 200 {
                    body.clone()
                } else {
                    String::new()
                },
            )
        };
        *statuses.entry(want.0).or_insert(0) += 1;
        if seen(&want) != seen(&got) {
            differ.push(format!(
                "{from} {host:?} {method} {path}: nginx {:?}, tideway {:?}",
                seen(&want),
                seen(&got)
            ));
        }
        if got.0 == 403 {
            assert!(
                !probes.lock().unwrap().contains(&format!("t{n}")),
                "a request tideway denied reached a backend: {from} {method} {path}"
            );
        }
    }
    println!("nginx's statuses: {statuses:?}");
    assert!(
        differ.is_empty(),
        "{} of {} differ:\n{}",
        differ.len(),
        cases.len(),
        differ.join("\n")
    );
    // Not vacuous: both allowed and denied requests were sent, and answers of every kind.
    for status in [200, 301, 403, 404] {
        assert!(
            statuses.get(&status).copied().unwrap_or(0) > 0,
            "{statuses:?}"
        );
    }
}

/// A denied request on a keep-alive connection gets its 403 and the connection serves the
/// next request (nginx keeps it too); a denied request is refused before the route's
/// `limit_req` is charged (a second denied request still gets 403, not the limit's 503).
#[tokio::test]
async fn a_denied_request_leaves_a_keepalive_connection_usable() {
    let dir = tempfile::tempdir().unwrap();
    let b = Counting::start().await;
    let port = free_port();
    let file = dir.path().join("site.conf");
    std::fs::write(
        &file,
        format!(
            "http {{\n  limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;\n  upstream app {{ server {}; }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{ proxy_pass http://app; }}\n    location /in/ {{ limit_req zone=one nodelay; deny 127.0.0.0/8; proxy_pass http://app; }}\n  }}\n}}\n",
            b.addr
        ),
    )
    .unwrap();
    let _tideway = start_tideway_nginx(&file, dir.path(), &["--skip-unproxied"]);
    wait_port(port).await;
    let mut io = connect_from(counting::TWO, SocketAddr::from(([127, 0, 0, 1], port))).await;
    io.write_all(b"GET /in/x HTTP/1.1\r\nHost: a\r\n\r\nGET /in/z HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut got))
        .await
        .expect("both answers")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 403 "), "{text}");
    assert_eq!(text.matches("HTTP/1.1 403 ").count(), 2, "{text}");
    assert!(
        text.contains("{\"error\":\"access forbidden by rule\"}"),
        "{text}"
    );
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 1, "{text}");
    assert_eq!(
        b.received(),
        1,
        "only the allowed request reached the backend"
    );
}

/// Per-location limits: a location's `limit_req` holds only there (nested locations inherit
/// it); a location's `limit_conn` replaces the server's; a server with limits of its own on a
/// listen shared with one without. Served by nginx and by tideway, from the same clients.
fn limits_conf(dir: &Path, backend: SocketAddr, port: u16) -> String {
    format!(
        "{main}http {{
    access_log off;
    client_body_temp_path {d};
    proxy_temp_path {d};
    limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
    limit_conn_zone $binary_remote_addr zone=addr:1m;
    upstream app {{ server {backend}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://app; }}
        location /limited/ {{
            limit_req zone=one nodelay;
            proxy_pass http://app;
            location /limited/inner/ {{ proxy_pass http://app; }}
        }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name conn.test;
        limit_conn addr 1;
        limit_conn_status 429;
        location / {{ proxy_pass http://app; }}
        location /own/ {{ limit_conn addr 5; proxy_pass http://app; }}
    }}
}}
",
        main = nginx_main(dir),
        d = dir.display(),
    )
}

/// `GET path` with Host `host` from `from` on a connection of its own: the status.
async fn get(from: IpAddr, to: SocketAddr, host: &str, path: &str) -> u16 {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    send(from, to, &raw).await.0
}

async fn exercise_limits(port: u16, b: &Counting) -> Vec<String> {
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let (one, two) = (counting::ONE, counting::TWO);
    let mut seen = Vec::new();
    let mut limited = Vec::new();
    for path in ["/limited/a", "/limited/b", "/limited/inner/c"] {
        limited.push(get(one, to, "x", path).await);
    }
    let mut free = Vec::new();
    for _ in 0..4 {
        free.push(get(one, to, "x", "/free").await);
    }
    limited.push(get(two, to, "x", "/limited/a").await);
    seen.push(format!(
        "limit_req in /limited/: {limited:?}, elsewhere {free:?}, backend {}",
        b.received()
    ));
    // The server's limit_conn (1) is held by a slow request; /own/ counts up to 5.
    b.hold();
    let slow = tokio::spawn(get(one, to, "conn.test", "/slow"));
    let before = b.received();
    wait_until(Duration::from_secs(10), || async {
        b.received() == before + 1
    })
    .await;
    let over = get(one, to, "conn.test", "/x").await;
    let own = get(one, to, "conn.test", "/own/x").await;
    let other_server = get(one, to, "x", "/x").await;
    b.release();
    let held = slow.await.unwrap();
    seen.push(format!(
        "limit_conn: held {held}, over {over}, own location {own}, other server {other_server}, backend {}",
        b.received()
    ));
    seen
}

#[tokio::test]
async fn a_location_limit_holds_only_on_its_location_as_in_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for who in ["nginx", "tideway"] {
        let b = Counting::start().await;
        let port = free_port();
        let d = dir.path().join(who);
        std::fs::create_dir_all(&d).unwrap();
        let file = d.join("nginx.conf");
        std::fs::write(&file, limits_conf(&d, b.addr, port)).unwrap();
        let _server = if who == "nginx" {
            start_nginx_checked(&d, &file)
        } else {
            start_tideway_nginx(&file, &d, &["--skip-unproxied"])
        };
        wait_port(port).await;
        results.push(exercise_limits(port, &b).await);
    }
    println!("nginx:   {:#?}\ntideway: {:#?}", results[0], results[1]);
    assert_eq!(results[0], results[1]);
    assert_eq!(
        results[0],
        [
            "limit_req in /limited/: [200, 503, 503, 200], elsewhere [200, 200, 200, 200], backend 6",
            "limit_conn: held 200, over 429, own location 200, other server 200, backend 9",
        ]
    );
}

/// The TOML form on a dual-stack listener (`[::]:PORT`): an IPv4 client arrives as
/// `::ffff:127.0.0.x` and is checked against the IPv4 rules, as nginx checks it; an IPv6
/// client meets only `all` and IPv6 rules; a nested route's own list replaces its parent's;
/// `GET /v1/routes` shows the lists.
#[tokio::test]
async fn toml_access_lists_check_mapped_ipv4_clients_as_ipv4() {
    let b = Counting::start().await;
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[store]\ndata_dir = \"{}\"\n\n\
         [[listener]]\nlisten = \"[::]:{port}\"\n\n\
         [[listener.route]]\npath = \"/\"\nupstream = \"app\"\naccess = [\"allow 127.0.0.2\", \"deny all\"]\n\n\
         [[listener.route]]\npath = \"/open/\"\nupstream = \"app\"\naccess = []\n\n\
         [[listener.route.route]]\npath = \"/open/shut/\"\nupstream = \"app\"\naccess = [\"deny 127.0.0.0/8\"]\n\n\
         [upstream.app]\nbackends = [{{ addr = \"{}\" }}]\n",
        dir.path().join("data").display(),
        b.addr
    );
    let config_path = dir.path().join("tideway.toml");
    std::fs::write(&config_path, config).unwrap();
    let p = Proxy {
        child: spawn_tideway_with(&config_path, dir.path(), &[]),
        http: SocketAddr::from(([127, 0, 0, 1], port)),
        admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        dir,
        config_path,
    };
    wait_ready(&p).await;
    let v4 = |n: u8| IpAddr::from([127, 0, 0, n]);
    let v6: IpAddr = "::1".parse().unwrap();
    let to = |from: IpAddr| SocketAddr::new(if from.is_ipv6() { v6 } else { v4(1) }, port);
    let mut got = Vec::new();
    for (from, path) in [
        (v4(2), "/"),
        (v4(3), "/"),
        (v6, "/"),
        (v4(3), "/open/x"),
        (v4(2), "/open/shut/x"),
        (v6, "/open/shut/x"),
    ] {
        got.push(get(from, to(from), "x", path).await);
    }
    assert_eq!(got, [200, 403, 403, 200, 403, 200]);
    assert_eq!(
        b.received(),
        3,
        "only the allowed requests reached the backend"
    );
    let routes = p.admin_json("/v1/routes").await;
    let lists: Vec<&serde_json::Value> = routes["listeners"][0]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["access"])
        .collect();
    assert_eq!(
        lists,
        [
            &serde_json::json!(["allow 127.0.0.2", "deny all"]),
            &serde_json::json!([]),
            &serde_json::json!(["deny 127.0.0.0/8"]),
        ]
    );
}

/// A denied upload gets its 403 whole: tideway does not read the body, so it closes after
/// the answer and drains what the client still sends (nginx's lingering close) rather than
/// reset the connection under the client before it reads the answer.
#[tokio::test]
async fn a_denied_upload_still_gets_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let b = Counting::start().await;
    let port = free_port();
    let file = dir.path().join("site.conf");
    std::fs::write(
        &file,
        format!(
            "http {{\n  upstream app {{ server {}; }}\n  server {{\n    listen 127.0.0.1:{port};\n    deny 127.0.0.2;\n    location / {{ proxy_pass http://app; }}\n  }}\n}}\n",
            b.addr
        ),
    )
    .unwrap();
    let _tideway = start_tideway_nginx(&file, dir.path(), &["--skip-unproxied"]);
    wait_port(port).await;
    let mut io = connect_from(counting::TWO, SocketAddr::from(([127, 0, 0, 1], port))).await;
    // The client sends its whole body before it reads (as a simple uploader does).
    io.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4000000\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    let mut sent = 0;
    while sent < 4_000_000 {
        let n = chunk.len().min(4_000_000 - sent);
        let write = tokio::time::timeout(Duration::from_secs(20), io.write_all(&chunk[..n])).await;
        assert!(
            matches!(write, Ok(Ok(()))),
            "the body was cut after {sent} bytes: {write:?}"
        );
        sent += n;
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), io.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        matches!(read, Ok(Ok(_))),
        "the connection was reset: {read:?}, got {text:?}"
    );
    assert!(text.starts_with("HTTP/1.1 403 "), "{text}");
    assert_eq!(b.received(), 0);
}
