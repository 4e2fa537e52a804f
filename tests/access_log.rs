//! The access log: nginx's `combined` format exactly in text (GoAccess parses it), one line
//! per request and one per WebSocket written when it ends (status 101); in JSON
//! (`--log-format json`) numbers as numbers, the request id (the one a route sends with
//! `set_header = { "X-Request-Id" = "$request_id" }`), Host, the backend's id and address, and
//! a tunnel line with the URI and close code. An `access_log_file` is reopened on SIGUSR1.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const REQUESTS: usize = 12;

/// nginx's `combined` line: `$remote_addr - $remote_user [$time_local] "$request" $status
/// $body_bytes_sent "$http_referer" "$http_user_agent"`.
const COMBINED: &str = r#"^(\S+) - - \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "((?:[^"\\]|\\.)*)" (\d{3}) (\d+) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$"#;

/// Send REQUESTS sticky requests (uid 0..) and one WebSocket the client closes with 4000; the
/// backend id of each request.
async fn traffic(p: &Proxy) -> Vec<String> {
    let c = reqwest::Client::new();
    let mut ids = Vec::new();
    for uid in 0..REQUESTS {
        ids.push(backend_id(&c, &p.url(&format!("/chat?uid={uid}"))).await);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(p.ws_url("/ws?uid=99"))
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4000),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    while ws.next().await.is_some() {}
    ids
}

fn log(p: &Proxy) -> String {
    std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap_or_default()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

const ROUTE: &str = "[[listener.route]]\npath = \"/\"\nupstream = \"app\"\nset_header = { \"X-Request-Id\" = \"$request_id\" }\n";

async fn start_with(a1: &Backend, a2: &Backend, server: &str, args: &[&str]) -> Proxy {
    start_written(args, |http, admin, dir| {
        // `DIR` in `server`: the proxy's own directory.
        let server = server.replace("DIR", &dir.display().to_string());
        format!(
            "[server]\nthreads = 2\nshutdown_grace = \"1s\"\n{server}\n\n[admin]\nlisten = \"{admin}\"\n\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"{http}\"\n{ROUTE}\n[upstream.app]\nbalance = \"hash\"\nhash_key = \"query:uid\"\n{}\n",
            dir.join("data").display(),
            backends_toml(&[(a1, 1), (a2, 1)])
        )
    })
    .await
}

async fn start(a1: &Backend, a2: &Backend, args: &[&str]) -> Proxy {
    start_with(a1, a2, "access_log = true", args).await
}

/// A proxy writing its access log to `access.log` in its directory (created by tideway).
async fn start_file(a1: &Backend, a2: &Backend) -> (Proxy, PathBuf) {
    let p = start_with(a1, a2, "access_log_file = \"DIR/access.log\"", &[]).await;
    let file = p.dir.path().join("access.log");
    (p, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_are_nginx_combined_exactly_one_per_request_and_websocket() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    let (p, file) = start_file(&a1, &a2).await;
    traffic(&p).await;
    wait_until(Duration::from_secs(10), || async {
        read(&file).contains("\"GET /ws?uid=99 HTTP/1.1\" 101 ")
    })
    .await;
    let text = read(&file);
    let combined = regex::Regex::new(COMBINED).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), REQUESTS + 1, "{lines:#?}");
    for line in &lines {
        let c = combined
            .captures(line)
            .unwrap_or_else(|| panic!("not combined: {line}"));
        assert_eq!(&c[1], "127.0.0.1");
        assert_eq!((&c[6], &c[7]), ("-", "-"), "{line}");
    }
    for uid in 0..REQUESTS {
        let request = format!("\"GET /chat?uid={uid} HTTP/1.1\" 200 ");
        let mine: Vec<&&str> = lines.iter().filter(|l| l.contains(&request)).collect();
        assert_eq!(mine.len(), 1, "one line for uid {uid}: {lines:#?}");
        // $body_bytes_sent: the demo backend's JSON body, not its head.
        let body: u64 = combined.captures(mine[0]).unwrap()[5].parse().unwrap();
        assert!((100..400).contains(&body), "{}", mine[0]);
    }
    // The WebSocket: one line, at its end, with what the tunnel sent to the client (the
    // echoed "hello" and the close frame).
    let ws = lines.iter().find(|l| l.contains("/ws?uid=99")).unwrap();
    let sent: u64 = combined.captures(ws).unwrap()[5].parse().unwrap();
    assert!(sent >= 7, "{ws}");
    // Nothing of the access log went to stderr.
    assert!(!log(&p).contains("/chat?uid="), "{}", log(&p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_have_numbers_ids_host_and_the_websocket_s_uri_and_close_code() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    let addr: HashMap<&str, String> = [("a1", a1.addr.to_string()), ("a2", a2.addr.to_string())]
        .into_iter()
        .collect();
    let p = start(&a1, &a2, &["--log-format", "json"]).await;
    // The request id the backend got is the log's.
    let sent: serde_json::Value = reqwest::get(p.url("/id?uid=5"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let given = sent["x_request_id"].as_str().unwrap().to_string();
    let ids = traffic(&p).await;
    wait_until(Duration::from_secs(10), || async {
        log(&p).contains("\"kind\":\"websocket\"")
    })
    .await;
    let text = log(&p);
    let all: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&serde_json::Value> = all
        .iter()
        .filter(|v| v["target"] == "tideway::access")
        .collect();
    assert_eq!(access.len(), REQUESTS + 3, "{access:#?}");
    let hex32 = regex::Regex::new("^[0-9a-f]{32}$").unwrap();
    let line = access.iter().find(|v| v["uri"] == "/id?uid=5").unwrap();
    assert_eq!(line["request_id"], given.as_str());
    assert!(hex32.is_match(&given), "{given}");
    let mut seen = std::collections::HashSet::new();
    for (uid, id) in ids.iter().enumerate() {
        let line = access
            .iter()
            .find(|v| v["kind"] == "http" && v["uri"] == format!("/chat?uid={uid}").as_str())
            .unwrap_or_else(|| panic!("no line for uid {uid}"));
        assert_eq!(line["status"], 200);
        assert_eq!(line["backend_id"], id.as_str(), "{line}");
        assert_eq!(line["backend_addr"], addr[id.as_str()].as_str());
        assert_eq!(line["upstream"], "app");
        assert_eq!(line["host"], p.http.to_string().as_str());
        assert!(line["sni"].is_null());
        assert!(line["bytes_sent"].as_u64().unwrap() > line["body_bytes_sent"].as_u64().unwrap());
        assert!(
            line["request_time"].is_f64() || line["request_time"].is_u64(),
            "{line}"
        );
        assert!(line["upstream_time"].is_number(), "{line}");
        let rid = line["request_id"].as_str().unwrap();
        assert!(
            hex32.is_match(rid) && seen.insert(rid.to_string()),
            "{line}"
        );
    }
    let handshake = access
        .iter()
        .find(|v| v["kind"] == "http" && v["status"] == 101)
        .unwrap();
    let tunnel = access.iter().find(|v| v["kind"] == "websocket").unwrap();
    assert_eq!(tunnel["request_id"], handshake["request_id"]);
    assert_eq!(tunnel["uri"], "/ws?uid=99");
    assert_eq!(tunnel["end"], "closed");
    assert_eq!(tunnel["close_code"], 4000, "{tunnel}");
    assert_eq!(tunnel["closed_by"], "client");
    assert_eq!(tunnel["backend_id"], handshake["backend_id"]);
    assert!(tunnel["duration"].is_number());
    assert!(tunnel["bytes_up"].as_u64().unwrap() >= 5);
}

/// A User-Agent that tries to add fields of its own.
const FORGED: &str = "evil\" status=200 backend=6.6.6.6:1 client=9.9.9.9";

async fn forged_request(p: &Proxy) {
    let r = reqwest::Client::new()
        .get(p.url("/forge?uid=1"))
        .header("user-agent", FORGED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_forge_fields_of_the_text_line() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    let p = start(&a1, &a2, &[]).await;
    forged_request(&p).await;
    wait_until(Duration::from_secs(10), || async {
        log(&p).contains("/forge")
    })
    .await;
    let text = log(&p);
    let line = text.lines().find(|l| l.contains("/forge")).unwrap();
    assert!(!line.contains('\x1b'), "no colours in a file: {line}");
    // The User-Agent stays inside its quotes, its quote escaped as nginx does, and ends the
    // line.
    assert!(
        line.ends_with("\"evil\\x22 status=200 backend=6.6.6.6:1 client=9.9.9.9\""),
        "{line}"
    );
    let combined = regex::Regex::new(COMBINED).unwrap();
    let at = line.find("127.0.0.1 - - [").unwrap();
    let c = combined.captures(&line[at..]).expect("combined");
    assert_eq!(&c[4], "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_fields_carry_what_the_client_sent_exactly() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    let p = start(&a1, &a2, &["--log-format", "json"]).await;
    forged_request(&p).await;
    wait_until(Duration::from_secs(10), || async {
        log(&p).contains("/forge")
    })
    .await;
    let text = log(&p);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().find(|l| l.contains("/forge")).unwrap()).unwrap();
    // The text line's escaped value: `"` as nginx writes it.
    assert_eq!(v["user_agent"], FORGED.replace('"', "\\x22").as_str());
    assert_eq!(v["status"], 200);
    assert_ne!(v["backend_addr"], "6.6.6.6:1");

    // HTTP/1.0 with an absolute-form target and no Host: routed by the target's authority,
    // logged with it.
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"GET http://Example.test/abs?uid=1 HTTP/1.0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    wait_until(Duration::from_secs(10), || async {
        log(&p).contains("/abs?uid=1")
    })
    .await;
    let text = log(&p);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().find(|l| l.contains("/abs?uid=1")).unwrap()).unwrap();
    assert_eq!(v["host"], "Example.test", "{v}");
}

/// Send `raw` and read the answer to its end.
async fn send_raw(addr: std::net::SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, raw)
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut answer).await;
    answer
}

/// The request, Referer and User-Agent of a text line escape what nginx escapes, as nginx
/// writes them, byte for byte: the same raw request to real nginx and to tideway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_fields_are_nginx_s_byte_for_byte() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    let (p, file) = start_file(&a1, &a2).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let nginx_log = dir.path().join("nginx.log");
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "{}http {{\n access_log {};\n server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
            common::nginx::nginx_main(dir.path()),
            nginx_log.display()
        ),
    )
    .unwrap();
    let _nginx = common::nginx::start_nginx_checked(dir.path(), &conf);
    common::nginx::wait_port(port).await;
    let raw: &[u8] = b"GET /a%22b%5C?uid=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\
        User-Agent: ua \"q\" \\ \t\xff\xc3\xa9 end\r\nReferer: http://r/\"\\\r\n\r\n";
    let theirs = send_raw(([127, 0, 0, 1], port).into(), raw).await;
    assert!(
        theirs.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&theirs)
    );
    let ours = send_raw(p.http, raw).await;
    assert!(
        ours.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&ours)
    );
    wait_until(Duration::from_secs(10), || async {
        !read(&nginx_log).is_empty() && read(&file).contains("uid=1")
    })
    .await;
    let combined = regex::Regex::new(COMBINED).unwrap();
    let fields = |text: String| {
        let line = text
            .lines()
            .find(|l| l.contains("uid=1"))
            .unwrap()
            .to_string();
        let c = combined
            .captures(&line)
            .unwrap_or_else(|| panic!("not combined: {line}"));
        (c[3].to_string(), c[6].to_string(), c[7].to_string())
    };
    let (n, t) = (fields(read(&nginx_log)), fields(read(&file)));
    assert_eq!(t, n);
    assert!(
        n.2.contains("\\x22q\\x22 \\x5C \\x09\\xFF\\xC3\\xA9 end"),
        "{n:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log_file_after_a_rename() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    let (p, file) = start_file(&a1, &a2).await;
    let c = reqwest::Client::new();
    backend_id(&c, &p.url("/before?uid=1")).await;
    wait_until(Duration::from_secs(10), || async {
        read(&file).contains("/before")
    })
    .await;
    let rotated = file.with_extension("log.1");
    std::fs::rename(&file, &rotated).unwrap();
    let pid = p.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    // The writer thread creates the file at its path when it reopens, and writes every line
    // queued after that to the new file. Its log line ("access log reopened") does not say
    // this signal's reopen came: tideway also reopens once at start (this test, waiting for
    // that line, once sent its next request before the signal's reopen on a loaded machine).
    wait_until(Duration::from_secs(10), || async { file.exists() }).await;
    backend_id(&c, &p.url("/after?uid=1")).await;
    wait_until(Duration::from_secs(10), || async {
        read(&file).contains("/after")
    })
    .await;
    let (old, new) = (read(&rotated), read(&file));
    assert!(old.contains("/before") && !old.contains("/after"), "{old}");
    assert!(!new.contains("/before"), "{new}");
    assert!(log(&p).contains("SIGUSR1: reopening the access log"));
    // Still running, and serving.
    backend_id(&c, &p.url("/still?uid=1")).await;
}

/// GoAccess, run as operators run it on nginx's logs, reads every line and fails none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaccess_parses_the_text_log_as_nginx_combined() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    // A TCP listener beside: its tunnels' ends are not access lines (combined has no shape
    // for them) but events on stderr.
    let tcp = free_port();
    let server = format!(
        "access_log_file = \"DIR/access.log\"\n\n[[listener]]\nlisten = \"127.0.0.1:{tcp}\"\nprotocol = \"tcp\"\nupstream = \"app\""
    );
    let p = start_with(&a1, &a2, &server, &[]).await;
    let file = p.dir.path().join("access.log");
    traffic(&p).await;
    let through = send_raw(([127, 0, 0, 1], tcp).into(), b"GET /tcp HTTP/1.0\r\n\r\n").await;
    assert!(
        through.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&through)
    );
    wait_until(Duration::from_secs(10), || async {
        log(&p).contains("tunnel ended")
    })
    .await;
    assert!(
        log(&p).contains("kind=\"tcp\"") || log(&p).contains("kind=tcp"),
        "{}",
        log(&p)
    );
    let c = reqwest::Client::new();
    // A referer, an agent with a quote, a 404 answered by tideway (no route) and a 405.
    let r = c
        .get(p.url("/r?uid=3"))
        .header("referer", "http://example.com/a b")
        .header("user-agent", "Mozilla/5.0 (X11; \"Linux\")")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let raw = format!(
        "TRACE / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        p.http
    );
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, raw.as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 405"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let expected = REQUESTS + 3;
    wait_until(Duration::from_secs(10), || async {
        read(&file).lines().count() == expected
    })
    .await;
    let report = file.with_extension("json");
    let out = std::process::Command::new("goaccess")
        .arg(&file)
        .args(["--log-format=COMBINED", "--no-global-config", "-o"])
        .arg(&report)
        .output()
        .expect("goaccess (Debian package goaccess; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "goaccess: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&read(&report)).unwrap();
    let general = &v["general"];
    assert_eq!(general["total_requests"], expected as u64, "{general}");
    assert_eq!(general["valid_requests"], expected as u64, "{general}");
    assert_eq!(general["failed_requests"], 0, "{general}");
    assert!(!read(&file).contains("tcp"), "{}", read(&file));
}

/// `access_log_format` picks the access log's format apart from the other logs': JSON lines in
/// the file while stderr stays text; a value it does not know is refused with its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_format_is_chosen_apart_from_the_logs() {
    let (a1, a2) = (backend("a1").await, backend("a2").await);
    let server = "access_log_file = \"DIR/access.log\"\naccess_log_format = \"json\"";
    let p = start_with(&a1, &a2, server, &[]).await;
    let file = p.dir.path().join("access.log");
    let c = reqwest::Client::new();
    backend_id(&c, &p.url("/j?uid=1")).await;
    wait_until(Duration::from_secs(10), || async {
        read(&file).contains("/j?uid=1")
    })
    .await;
    let line: serde_json::Value =
        serde_json::from_str(read(&file).lines().next().unwrap()).unwrap();
    assert_eq!(line["uri"], "/j?uid=1");
    assert_eq!(line["status"], 200);
    // The process's own log stays text.
    assert!(log(&p).contains(" INFO "), "{}", log(&p));

    let bad = p.dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\naccess_log_format = \"main\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.toml:2:") && err.contains("expected combined or json"),
        "{err}"
    );
}
