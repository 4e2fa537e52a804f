//! Routing by server_name and location, differentially: the same nginx config is served by
//! real nginx (/usr/sbin/nginx) and by `tideway run --nginx`, and the same requests go to
//! both. The same backend must answer (each recording backend names itself and the method
//! and target it received), with the same status; what a proxy answers itself (`return`, the
//! trailing-slash 301) must match too. Configs: the seed's two (addresses moved to loopback,
//! `proxy_http_version 1.1`) and conf/workerman-site.conf.

mod common;

use common::nginx::{read_head, start_nginx_checked, start_tideway_nginx, wait_port, Running};
use common::*;
use std::path::Path;
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
                let Some(buf) = read_head(&mut s).await else {
                    return;
                };
                let end = buf.len();
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
    let _nginx = start_nginx_checked(dir.path(), &nfile);
    let _tideway = start_tideway_nginx(&tfile, dir.path(), &[]);
    wait_port(np).await;
    wait_port(tp).await;
    Both {
        nginx: np,
        tideway: tp,
        _procs: (_nginx, _tideway, dir),
    }
}

/// Serve `conf` with nginx and with tideway ([`serve_both`]), send each of `requests` to
/// both, and compare. Returns tideway's answers.
async fn differential(name: &str, conf: &str, requests: &[String]) -> Vec<Seen> {
    let both = serve_both(conf).await;
    let (np, tp) = (both.nginx, both.tideway);
    let mut differ = Vec::new();
    let mut seen = Vec::new();
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
        seen.push(from_tideway);
    }
    assert!(
        differ.is_empty(),
        "{name}: {} of {} requests routed differently:\n{}",
        differ.len(),
        requests.len(),
        differ.join("\n")
    );
    seen
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

/// conf/workerman-site.conf with `LISTEN` for its address and its backends on recorders;
/// with `api_down`, the API's primary server is a port nothing listens on.
async fn workerman_site(api_down: bool) -> String {
    let text = std::fs::read_to_string("conf/workerman-site.conf").unwrap();
    let mut conf = text.replace("127.0.0.1:8080", "LISTEN");
    for (default_port, name) in [
        (2346, "workerman"),
        (2347, "api"),
        (2348, "app"),
        (2349, "assets"),
        (2350, "api-backup"),
    ] {
        let port = if api_down && name == "api" {
            // Bound then dropped: connections to it are refused.
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        } else {
            recorder(name).await
        };
        conf = conf.replace(
            &format!("127.0.0.1:{default_port}"),
            &format!("127.0.0.1:{port}"),
        );
    }
    conf
}

#[tokio::test]
async fn the_workerman_site_routes_as_nginx_does() {
    let conf = workerman_site(false).await;
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
    // An absolute-form target without Host: its authority is the Host, for routing and for
    // the Location of a redirect alike.
    for target in ["http://Example.com/api", "http://www.example.com/old?x=1"] {
        reqs.push(format!("GET {target} HTTP/1.0\r\n\r\n"));
    }
    differential("workerman site", &conf, &reqs).await;
}

/// The API's primary server refuses connections: nginx and tideway both send /api/ (and the
/// api.example.com server) to the backup server, and everything else where it went before.
#[tokio::test]
async fn the_workerman_site_fails_over_to_the_api_backup_as_nginx_does() {
    let conf = workerman_site(true).await;
    let hosts = [Some("example.com"), Some("api.example.com"), None];
    let paths = ["/", "/api/", "/api/users?id=1", "/ws", "/status", "/x"];
    let reqs = requests(&["GET", "POST"], &hosts, &paths);
    let seen = differential("workerman site, api down", &conf, &reqs).await;
    let by_backup = seen
        .iter()
        .filter(|s| s.status == 200 && s.backend.starts_with("api-backup "))
        .count();
    // /api/ and /api/users from example.com and without Host (the default server), and all
    // six paths from api.example.com, each with GET and POST.
    assert_eq!(by_backup, 2 * (2 + 2 + 6), "answers: {seen:?}");
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

#[path = "routing/headers.rs"]
mod headers;
