//! Routing by server_name and location, differentially: the same nginx config is served by
//! real nginx (/usr/sbin/nginx) and by `tideway run --nginx`, and the same requests go to
//! both. The same backend must answer (each recording backend names itself and the method
//! and target it received), with the same status; what a proxy answers itself (`return`, the
//! trailing-slash 301) must match too. Configs: the seed's two (addresses moved to loopback,
//! `proxy_http_version 1.1`) and conf/workerman-site.conf.

mod common;

use common::nginx::{wait_port, Running};
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers every request with `NAME METHOD TARGET` and closes.
async fn recorder(name: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let line = head.lines().next().unwrap_or_default().to_string();
                let mut parts = line.split(' ');
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let body = format!("{name} {method} {target}");
                let mut resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                if method != "HEAD" {
                    resp.push_str(&body);
                }
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// What a proxy answered: status, the Location with the proxy's port made generic, and the
/// recording backend's line (when the proxy answered a 200 itself, its body; else empty).
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    location: Option<String>,
    backend: String,
}

async fn send(port: u16, raw: &str) -> Seen {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
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
    let location = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or(l.strip_prefix("location: "))
        })
        .map(|l| l.replace(&port.to_string(), "PORT"));
    let recorded = body.split(' ').count() == 3 && !body.starts_with('{') && !body.starts_with('<');
    Seen {
        status,
        location,
        backend: match (recorded, status) {
            (true, _) => body.to_string(),
            (false, 200) => format!("answered {body:?}"),
            _ => String::new(),
        },
    }
}

/// nginx and tideway serving the same config: their ports, and the processes (stopped on
/// drop) with their directory.
struct Both {
    nginx: u16,
    tideway: u16,
    _procs: (Running, Running, tempfile::TempDir),
}

/// Serve `conf` (with `LISTEN` for the address) with nginx and with tideway.
async fn serve_both(conf: &str) -> Both {
    assert!(
        Path::new("/usr/sbin/nginx").exists(),
        "nginx is not installed (scripts/test.sh installs nginx-light)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (np, tp) = (free_port(), free_port());
    let main =
        format!("daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n");
    let http = format!(
        "http {{\n    access_log off;\n    client_body_temp_path {d};\n    proxy_temp_path {d};\n"
    );
    let file = |port: u16| {
        conf.replace("LISTEN", &format!("127.0.0.1:{port}"))
            .replacen("http {\n", &http, 1)
    };
    let nfile = dir.path().join("nginx.conf");
    std::fs::write(&nfile, format!("{main}{}", file(np))).unwrap();
    let tfile = dir.path().join("tideway-nginx.conf");
    std::fs::write(&tfile, file(tp)).unwrap();
    let check = Command::new("/usr/sbin/nginx")
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&nfile)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _nginx = Running(
        Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&nfile)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _tideway = Running(
        Command::new(env!("CARGO_BIN_EXE_tideway"))
            .args(["run", "--nginx"])
            .arg(&tfile)
            .args(["--admin", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(np).await;
    wait_port(tp).await;
    Both {
        nginx: np,
        tideway: tp,
        _procs: (_nginx, _tideway, dir),
    }
}

/// Serve `conf` with nginx and with tideway ([`serve_both`]), send each of `requests` to
/// both, and compare.
async fn differential(name: &str, conf: &str, requests: &[String]) {
    let both = serve_both(conf).await;
    let (np, tp) = (both.nginx, both.tideway);
    let mut differ = Vec::new();
    for raw in requests {
        let from_nginx = send(np, raw).await;
        let from_tideway = send(tp, raw).await;
        println!(
            "{name}: {:?} -> nginx {from_nginx:?}",
            raw.lines().next().unwrap_or("")
        );
        // Stricter than nginx, on purpose: a dot segment, a fragment or a leading `//` reaches
        // a lenient backend as written while nginx routes on the normalized path, so tideway
        // refuses it (400) instead.
        let target = raw.split(' ').nth(1).unwrap_or("");
        let path = target.split('?').next().unwrap_or("");
        let ambiguous = target.contains('#')
            || path.starts_with("//")
            || path.split('/').any(|s| s == "." || s == "..");
        if ambiguous {
            assert_eq!(from_tideway.status, 400, "{raw:?} is refused by tideway");
            continue;
        }
        if from_nginx != from_tideway {
            differ.push(format!(
                "{raw:?}\n  nginx:   {from_nginx:?}\n  tideway: {from_tideway:?}"
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{name}: {} of {} requests routed differently:\n{}",
        differ.len(),
        requests.len(),
        differ.join("\n")
    );
}

/// Every combination of `methods`, `hosts` (None: an HTTP/1.0 request without Host) and
/// `paths`, as raw requests.
fn requests(methods: &[&str], hosts: &[Option<&str>], paths: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for m in methods {
        for h in hosts {
            for p in paths {
                let body = if *m == "POST" {
                    "content-length: 2\r\n\r\nhi"
                } else {
                    "\r\n"
                };
                out.push(match h {
                    Some(h) => {
                        format!("{m} {p} HTTP/1.1\r\nHost: {h}\r\nconnection: close\r\n{body}")
                    }
                    None => format!("{m} {p} HTTP/1.0\r\n{body}"),
                });
            }
        }
    }
    out
}

/// A seed config from tests/nginx/golden with its addresses rewritten: the backends to
/// recorders named after their upstream, `listen 80` to `LISTEN`, wrapped in `http`.
fn seed(file: &str, upstream: &str, ports: (u16, u16)) -> String {
    let text = std::fs::read_to_string(Path::new("tests/nginx/golden").join(file)).unwrap();
    let text = text
        .replace("127.0.0.1:2346", &format!("127.0.0.1:{}", ports.0))
        .replace("127.0.0.1:2347", &format!("127.0.0.1:{}", ports.1))
        .replace("listen 80;", "listen LISTEN;");
    assert!(text.contains(upstream));
    format!(
        "events {{ worker_connections 64; }}\nhttp {{\n    proxy_http_version 1.1;\n{text}\n}}\n"
    )
}

const SEED_PATHS: [&str; 8] = [
    "/",
    "/chat",
    "/api/",
    "/a%20b?x=1",
    "/a//b/../c",
    "/%7Euser/",
    "/%zz",
    "/../etc/passwd",
];

#[tokio::test]
async fn the_seed_configs_route_as_nginx_does() {
    let ports = (
        recorder("workerman_backend").await,
        recorder("workerman_backend").await,
    );
    let conf = seed("seed-workerman-backend.conf", "workerman_backend", ports);
    let hosts = [Some("your_domain.com"), Some("unknown.test"), None];
    let reqs = requests(&["GET", "POST", "DELETE"], &hosts, &SEED_PATHS);
    differential("seed 1", &conf, &reqs).await;

    let ports = (
        recorder("workerman_servers").await,
        recorder("workerman_servers").await,
    );
    let conf = seed("seed-workerman-servers.conf", "workerman_servers", ports);
    let reqs = requests(&["GET", "HEAD"], &hosts, &SEED_PATHS);
    differential("seed 2", &conf, &reqs).await;
}

#[tokio::test]
async fn the_workerman_site_routes_as_nginx_does() {
    let text = std::fs::read_to_string("conf/workerman-site.conf").unwrap();
    let mut conf = text.replace("127.0.0.1:8080", "LISTEN");
    for (default_port, name) in [
        (2346, "workerman"),
        (2347, "api"),
        (2348, "app"),
        (2349, "assets"),
    ] {
        let port = recorder(name).await;
        conf = conf.replace(
            &format!("127.0.0.1:{default_port};"),
            &format!("127.0.0.1:{port};"),
        );
    }
    let hosts = [
        Some("example.com"),
        Some("WWW.Example.com:8080"),
        Some("www.example.com."),
        Some("api.example.com"),
        Some("v2.api.example.com"),
        Some("unknown.test"),
        None,
    ];
    let paths = [
        "/",
        "/ws",
        "/ws/chat",
        "/wsx",
        "/api",
        "/api/",
        "/api/users?id=1",
        "/api/a%20b",
        "/api/%61bc/../x",
        "/api%2Fusers",
        "/status",
        "/status/",
        "/status?x=1",
        "/style.css",
        "/img/logo.PNG?v=2",
        "/api/app.js",
        "/ws/app.js",
        "/old",
        "/old/x",
        "/a//b",
        "/%7Euser",
        "/x.css.map",
    ];
    let mut reqs = requests(&["GET", "POST", "DELETE"], &hosts, &paths);
    // Over /api/'s client_max_body_size (1k): 413 from both, the backend sees nothing.
    reqs.push(format!(
        "POST /api/upload HTTP/1.1\r\nHost: example.com\r\nconnection: close\r\ncontent-length: 2000\r\n\r\n{}",
        "x".repeat(2000)
    ));
    reqs.push(format!(
        "POST /api/upload HTTP/1.1\r\nHost: example.com\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n",
        "x".repeat(2000)
    ));
    // Under it, both pass the body on.
    reqs.push(
        "POST /api/upload HTTP/1.1\r\nHost: example.com\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_string(),
    );
    differential("workerman site", &conf, &reqs).await;
}

/// The routes of a TOML config for `[[listener]]` at `http` (without its `listen`).
fn toml_config(
    admin: std::net::SocketAddr,
    http: std::net::SocketAddr,
    dir: &Path,
    routes: &str,
    upstreams: &str,
) -> String {
    format!(
        "[admin]\nlisten = \"{admin}\"\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"{http}\"\n{routes}\n{upstreams}\n",
        dir.join("data").display()
    )
}

async fn start_routes(routes: &str, upstreams: &str) -> Proxy {
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("tideway.toml");
    std::fs::write(
        &config_path,
        toml_config(admin, http, dir.path(), routes, upstreams),
    )
    .unwrap();
    let child = spawn_tideway_with(&config_path, dir.path(), &[]);
    let p = Proxy {
        child,
        http,
        admin,
        dir,
        config_path,
    };
    wait_ready(&p).await;
    p
}

/// GET through the proxy with a Host: the status and the demo backend's JSON (if any).
async fn get(p: &Proxy, host: &str, path: &str) -> (u16, serde_json::Value) {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nconnection: close\r\n\r\n");
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

const TOML_ROUTES: &str = r#"
[[listener.route]]
host = ["api.example.com"]
path = "/api/"
upstream = "api"
uri = "/v1/"
connect_timeout = "1s"

[[listener.route]]
host = ["api.example.com"]
path = "= /status"
return = { code = 200, text = "ok" }

[[listener.route]]
path = "/"
upstream = "app"
default = true
max_body = 4
"#;

/// The routes form of the TOML: dispatch by Host and path, proxy_pass's URI replacement, the
/// trailing-slash 301, `return`, the body limit, `GET /v1/routes`, and a reload that swaps
/// the routes (an open WebSocket keeps the route it started on).
#[tokio::test]
async fn toml_routes_dispatch_reload_and_are_listed() {
    let (api, app) = (backend("api-1").await, backend("app-1").await);
    let upstreams = format!(
        "[upstream.api]\nbackends = [{{ addr = \"{}\" }}]\n[upstream.app]\nbackends = [{{ addr = \"{}\" }}]\n",
        api.addr, app.addr
    );
    let p = start_routes(TOML_ROUTES, &upstreams).await;
    let (status, v) = get(&p, "api.example.com", "/api/users?id=7").await;
    assert_eq!(
        (status, v["id"].as_str(), v["uri"].as_str()),
        (200, Some("api-1"), Some("/v1/users?id=7"))
    );
    // The api server has no location for /other: 404, as nginx.
    assert_eq!(get(&p, "API.example.com:80", "/other").await.0, 404);
    let (status, v) = get(&p, "unknown.test", "/api/users").await;
    assert_eq!(
        (status, v["id"].as_str(), v["uri"].as_str()),
        (200, Some("app-1"), Some("/api/users")),
        "the default server answers unknown hosts"
    );
    assert_eq!(get(&p, "api.example.com", "/status").await.0, 200);
    assert_eq!(get(&p, "api.example.com", "/api").await.0, 301);
    assert_eq!(get(&p, "api.example.com", "/%zz").await.0, 400);

    // The body limit of the catch-all route: 413 (by length, or as a chunked body grows
    // past it), and the backend never sees it; a body within it goes through.
    for (raw, status) in [
        (&b"POST /up HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\n\r\nhello"[..], "413"),
        (b"POST /up HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "413"),
        (b"POST /up HTTP/1.1\r\nHost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n4\r\nhell\r\n0\r\n\r\n", "200"),
    ] {
        let mut s = TcpStream::connect(p.http).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let want = format!("HTTP/1.1 {status} ");
        assert!(
            got.starts_with(want.as_bytes()),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }

    let listed = p.admin_json("/v1/routes").await;
    let routes = listed["listeners"][0]["routes"].as_array().unwrap().clone();
    assert_eq!(routes.len(), 3, "{listed}");
    assert_eq!(routes[0]["path"], "/api/");
    assert_eq!(routes[0]["upstream"], "api");
    assert_eq!(routes[0]["hosts"][0], "api.example.com");
    assert_eq!(routes[1]["return"]["code"], 200);

    // A WebSocket opened now keeps its route after a reload sends / elsewhere.
    let (mut ws, _) = tokio_tungstenite::connect_async(p.ws_url("/chat"))
        .await
        .unwrap();
    let swapped = TOML_ROUTES.replace("upstream = \"app\"", "upstream = \"api\"");
    std::fs::write(
        &p.config_path,
        toml_config(p.admin, p.http, p.dir.path(), &swapped, &upstreams),
    )
    .unwrap();
    p.reload().await;
    let (_, v) = get(&p, "x", "/other").await;
    assert_eq!(
        v["id"].as_str(),
        Some("api-1"),
        "the reload applied the routes"
    );
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text("id")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("app-1"));
}

/// Route errors point at the file and line.
#[test]
fn route_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        ("path = \"~ (\"\nupstream = \"app\"", "invalid regex"),
        (
            "path = \"~ x\"\nupstream = \"app\"\nuri = \"/v1/\"",
            "regex location",
        ),
        ("path = \"/\"\nupstream = \"nope\"", "unknown upstream"),
        ("path = \"/\"", "a route needs"),
        (
            "host = [\"a*b\"]\nupstream = \"app\"",
            "invalid server_name",
        ),
    ];
    for (route, want) in bad {
        let text = format!("[[listener]]\nlisten = \"127.0.0.1:1\"\n[[listener.route]]\n{route}\n\n[upstream.app]\nbackends = []\n");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let e = tideway::config::load(&path).unwrap_err().to_string();
        assert!(e.contains("bad.toml:"), "{e}");
        assert!(e.contains(want), "{route}: {e}");
    }
    let conf = dir.path().join("bad.conf");
    std::fs::write(&conf, "http {\n  server {\n    listen 127.0.0.1:1;\n    location ~ ( { proxy_pass http://127.0.0.1:2; }\n  }\n}\n").unwrap();
    let e = tideway::nginx::load(&conf).unwrap_err().to_string();
    assert!(e.contains("bad.conf:4"), "{e}");
}

/// A backend that answers every request with its whole head as the body (status from a
/// `status=N` in the target, else 200), and closes.
async fn head_echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = &buf[..end];
                let text = String::from_utf8_lossy(head);
                let status = text
                    .split_once("status=")
                    .and_then(|(_, r)| r.get(..3))
                    .unwrap_or("200");
                let mut resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                )
                .into_bytes();
                resp.extend_from_slice(head);
                let _ = s.write_all(&resp).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// What a client got through a proxy from [`head_echo`]: the status, the response's header
/// lines and the head the backend received (empty when the proxy answered itself).
struct Echoed {
    status: u16,
    response: Vec<(String, String)>,
    backend: Vec<(String, String)>,
    backend_head: String,
}

/// `name: value` lines of a head, after its first line; names lowercased.
fn fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// Send `raw` and read one answer: to its Content-Length, or to the close.
async fn echo(port: u16, raw: &[u8]) -> Echoed {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut got = Vec::new();
    let whole = |got: &[u8]| {
        let text = String::from_utf8_lossy(got);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        fields(head)
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .is_some_and(|n| body.len() >= n)
    };
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        while !whole(&got) {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer to {:?}",
        String::from_utf8_lossy(raw)
    );
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let backend_head = if body.starts_with("GET ") || body.starts_with("POST ") {
        body.to_string()
    } else {
        String::new()
    };
    Echoed {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        response: fields(head),
        backend: fields(&backend_head),
        backend_head,
    }
}

/// The values of `name` in `fields`, with the proxy's own port made generic.
fn values(fields: &[(String, String)], name: &str, port: u16) -> Vec<String> {
    fields
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.replace(&port.to_string(), "PORT"))
        .collect()
}

/// The config of the header differential: every variable tideway reads in a
/// `proxy_set_header`, a map (the WebSocket idiom and one with a regex), a server-level set
/// inherited by one location and replaced in another, and `add_header` with and without
/// `always`.
const HEADERS_CONF: &str = "events { worker_connections 64; }
http {
    proxy_http_version 1.1;
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
    map $arg_v $ver { default none; v1 one; ~^v[23]$ many; }
    upstream echo { server 127.0.0.1:ECHO; }
    server {
        listen LISTEN;
        server_name example.com;
        proxy_set_header X-Static \"static text\";
        add_header X-Server-Added yes;
        location / {
            proxy_pass http://echo;
            proxy_set_header Host $host;
            proxy_set_header X-Host $host;
            proxy_set_header X-Http-Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Scheme $scheme;
            proxy_set_header X-Request-Uri $request_uri;
            proxy_set_header X-Server-Port $server_port;
            proxy_set_header X-Agent $http_user_agent;
            proxy_set_header X-Sid $cookie_sid;
            proxy_set_header X-Arg \"a=${arg_a};\";
            proxy_set_header X-Ver $ver;
            proxy_set_header X-Empty $http_x_absent;
            proxy_set_header X-Method $request_method;
            proxy_set_header X-Args \"$is_args$args\";
            proxy_set_header X-Server-Name $server_name;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            add_header X-Added \"for $host\";
            add_header X-Always yes always;
        }
        location /inherit/ {
            proxy_pass http://echo;
        }
    }
}
";

/// Headers `location /` sets; `location /inherit/` sets only X-Static (inherited).
const SET_NAMES: [&str; 17] = [
    "host",
    "x-static",
    "x-host",
    "x-http-host",
    "x-real-ip",
    "x-forwarded-for",
    "x-scheme",
    "x-request-uri",
    "x-server-port",
    "x-agent",
    "x-sid",
    "x-arg",
    "x-ver",
    "x-empty",
    "x-method",
    "x-args",
    "x-server-name",
];

#[tokio::test]
async fn proxy_set_header_and_add_header_match_nginx() {
    let conf = HEADERS_CONF.replace("ECHO", &head_echo().await.to_string());
    let both = serve_both(&conf).await;
    let base = "Host: Example.COM:8080\r\nUser-Agent: probe/1.0\r\nCookie: a=1; sid=s%20id; z=2\r\nX-Forwarded-For: 203.0.113.9\r\nconnection: close\r\n\r\n";
    let mut reqs: Vec<(String, &[&str])> = Vec::new();
    for target in [
        "/",
        "/p?a=1&v=v1",
        "/p?v=v3&A=two",
        "/p?v=x",
        "/p%20q?a=%41",
        "/p?status=404",
        "/p?status=302&a=redirect",
        "/p?status=500",
    ] {
        reqs.push((format!("GET {target} HTTP/1.1\r\n{base}"), &SET_NAMES));
    }
    reqs.push((
        "GET / HTTP/1.0\r\n\r\n".to_string(),
        &[
            "x-host",
            "x-http-host",
            "x-agent",
            "x-sid",
            "x-empty",
            "x-args",
        ],
    ));
    reqs.push((
        format!("GET /inherit/x HTTP/1.1\r\n{base}"),
        &["x-static", "x-host", "x-agent", "x-real-ip"][..2],
    ));
    // Hostile: CR LF percent-encoded in an argument stays raw text in the value (nginx does not
    // decode $arg_), so no header is split.
    reqs.push((
        format!("GET /?a=x%0d%0aInjected:%20yes HTTP/1.1\r\n{base}"),
        &SET_NAMES,
    ));
    let mut differ = Vec::new();
    for (raw, names) in &reqs {
        let n = echo(both.nginx, raw.as_bytes()).await;
        let t = echo(both.tideway, raw.as_bytes()).await;
        assert_eq!(n.status, t.status, "{raw:?}");
        for name in names.iter() {
            let (nv, tv) = (
                values(&n.backend, name, both.nginx),
                values(&t.backend, name, both.tideway),
            );
            if nv != tv {
                differ.push(format!("{raw:?} {name}: nginx {nv:?}, tideway {tv:?}"));
            }
        }
        for name in ["x-added", "x-always", "x-server-added"] {
            let (nv, tv) = (values(&n.response, name, 0), values(&t.response, name, 0));
            if nv != tv {
                differ.push(format!(
                    "{raw:?} response {name}: nginx {nv:?}, tideway {tv:?}"
                ));
            }
        }
        assert!(
            !t.backend.iter().any(|(n, _)| n == "injected"),
            "no header split: {}",
            t.backend_head
        );
        assert_eq!(values(&t.backend, "host", 0).len(), 1, "{}", t.backend_head);
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // Not equal by being absent on both: what the backend got through tideway, spelled out.
    let raw = format!("GET /p?a=1&v=v1 HTTP/1.1\r\n{base}");
    let t = echo(both.tideway, raw.as_bytes()).await;
    for (name, want) in [
        ("host", "example.com"),
        ("x-http-host", "Example.COM:8080"),
        ("x-real-ip", "127.0.0.1"),
        ("x-forwarded-for", "203.0.113.9, 127.0.0.1"),
        ("x-scheme", "http"),
        ("x-request-uri", "/p?a=1&v=v1"),
        ("x-server-port", "PORT"),
        ("x-agent", "probe/1.0"),
        ("x-sid", "s%20id"),
        ("x-arg", "a=1;"),
        ("x-ver", "one"),
        ("x-method", "GET"),
        ("x-args", "?a=1&v=v1"),
        ("x-server-name", "example.com"),
    ] {
        assert_eq!(values(&t.backend, name, both.tideway), [want], "{name}");
    }
    assert!(values(&t.backend, "x-empty", 0).is_empty());
    // location / sets its own: the server's X-Static is not inherited there (nginx's rule),
    // only in /inherit/, which sets none.
    assert!(values(&t.backend, "x-static", 0).is_empty());
    let raw = format!("GET /inherit/x HTTP/1.1\r\n{base}");
    let i = echo(both.tideway, raw.as_bytes()).await;
    assert_eq!(values(&i.backend, "x-static", 0), ["static text"]);
    assert_eq!(values(&i.response, "x-server-added", 0), ["yes"]);
    assert_eq!(values(&t.response, "x-added", 0), ["for example.com"]);

    // The idiom's meaning: a WebSocket handshake is passed on as one (the engine writes
    // Connection and Upgrade), a plain request carries neither.
    let ws = echo(
        both.tideway,
        b"GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(
        values(&ws.backend, "upgrade", 0),
        ["websocket"],
        "{}",
        ws.backend_head
    );
    assert_eq!(values(&ws.backend, "connection", 0), ["upgrade"]);
    let plain = echo(both.tideway, format!("GET / HTTP/1.1\r\n{base}").as_bytes()).await;
    assert!(values(&plain.backend, "upgrade", 0).is_empty());
    assert!(values(&plain.backend, "connection", 0).is_empty());

    // Hostile: a bare CR inside a header value is refused by both before any backend.
    let raw = b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: a\rInjected: yes\r\nconnection: close\r\n\r\n";
    let (n, t) = (echo(both.nginx, raw).await, echo(both.tideway, raw).await);
    assert_eq!((n.status, t.status), (400, 400));
    assert!(n.backend_head.is_empty() && t.backend_head.is_empty());
}

/// The TOML form: `set_header` and `add_header` on a route, inherited by a nested one that
/// sets none, and config errors naming the line.
#[test]
fn header_tables_in_toml() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\n\n\
        [[listener.route]]\npath = \"/\"\nupstream = \"app\"\n\
        set_header = { \"X-Real-IP\" = \"$remote_addr\", \"X-Up\" = \"$connection_upgrade\" }\n\
        add_header = { \"X-A\" = \"a\", \"X-B\" = { value = \"b\", always = true } }\n\n\
        [[listener.route.route]]\npath = \"/x/\"\nupstream = \"app\"\n\n\
        [map.connection_upgrade]\nsource = \"$http_upgrade\"\ndefault = \"upgrade\"\nvalues = { \"\" = \"close\" }\n\n\
        [upstream.app]\nbackends = [{ addr = \"127.0.0.1:2346\" }]\n";
    let c = tideway::config::parse(text, Path::new("t.toml")).unwrap();
    let root = &c.listeners[0].routes[0].locations[0];
    let h = root.settings.headers.as_ref().unwrap();
    assert_eq!(h.set.len(), 2);
    assert_eq!(h.add.len(), 2);
    assert!(h.add[1].always);
    assert_eq!(root.nested[0].settings.headers, root.settings.headers);
    for (bad, want) in [
        ("\"X-A\" = \"$nope\"", "unknown variable \"$nope\""),
        ("\"Content-Length\" = \"1\"", "cannot be set"),
        ("\"Connection\" = \"close\"", "websocket = true"),
        ("\"X-A\" = \"a\\r\\nB: c\"", "control byte"),
    ] {
        let t = text.replace(
            "set_header = { \"X-Real-IP\" = \"$remote_addr\", \"X-Up\" = \"$connection_upgrade\" }",
            &format!("set_header = {{ {bad} }}"),
        );
        let e = tideway::config::parse(&t, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:7") && e.contains(want), "{bad}: {e}");
    }
}
