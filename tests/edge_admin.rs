//! The admin port stays in its lane, and a full process says so: real tideway processes, raw
//! sockets.
//!
//! - With open files limited to 256 and 300 idle connections held on the admin port (silent,
//!   a head that never ends, a keep-alive request then silence), proxied requests are all
//!   answered; the never-ending head is closed after the admin header timeout; the admin API
//!   answers again once the idle connections are gone.
//! - Admin connections with no request under way close after the idle timeout.
//! - The process-wide connection cap: over it, HTTP gets 503 JSON and `Connection: close`,
//!   TCP is closed; a place freed is a place taken again.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Open files the tideway under test may hold.
const OPEN_FILES: u32 = 256;

/// Start tideway on `config` (TOML text, listeners given) with open files limited to
/// `open_files` (None: as inherited).
async fn start(
    http: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    config: &str,
    open_files: Option<u32>,
) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("tideway.toml");
    let config = config.replace("DATA_DIR", &dir.path().join("data").display().to_string());
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.path().join("tideway.log")).unwrap();
    let bin = env!("CARGO_BIN_EXE_tideway");
    let mut cmd = match open_files {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .args(["run", "--config"])
        .arg(&config_path)
        .env("TIDEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TIDEWAY_REGISTER_TOKEN", REGISTER_TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
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

fn addr() -> std::net::SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// Read until the peer closes or `limit` passes: what it sent, and whether it closed.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut all = Vec::new();
    let closed = match tokio::time::timeout(limit, s.read_to_end(&mut all)).await {
        Ok(Ok(_)) => true,
        // A reset is a close too.
        Ok(Err(_)) => true,
        Err(_) => false,
    };
    (String::from_utf8_lossy(&all).into_owned(), closed)
}

/// The soft open-files limit of process `pid`.
fn open_files_of(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().to_string()
}

#[tokio::test]
async fn idle_admin_connections_cannot_starve_proxied_requests() {
    admin_flood_leaves_the_data_plane_served("header_timeout = \"1s\"\n").await;
}

/// With an admin cap above the open-files limit and a header timeout that frees nothing while
/// the test runs, the descriptor reserve alone keeps the data plane served.
#[tokio::test]
async fn the_descriptor_reserve_holds_without_the_admin_cap() {
    admin_flood_leaves_the_data_plane_served(
        "header_timeout = \"60s\"\nmax_connections = 100000\n",
    )
    .await;
}

async fn admin_flood_leaves_the_data_plane_served(admin_extra: &str) {
    let b = backend("b1").await;
    let (http, admin) = (addr(), addr());
    let config = format!(
        "[server]\nthreads = 2\nshutdown_grace = \"1s\"\n\n\
         [admin]\nlisten = \"{admin}\"\nidle_timeout = \"60s\"\n{admin_extra}\n\
         [store]\ndata_dir = \"DATA_DIR\"\n\n\
         [[listener]]\nlisten = \"{http}\"\nupstream = \"app\"\n\n\
         [upstream.app]\nbackends = [{{ addr = \"{}\", id = \"b1\" }}]\n",
        b.addr
    );
    let p = start(http, admin, &config, Some(OPEN_FILES)).await;
    assert_eq!(open_files_of(p.child.id()), OPEN_FILES.to_string());

    // A head that never ends, opened first and seen served-around: a whole request on the next
    // connection is answered, so the admin listener had accepted the partial one before it.
    let mut partial = TcpStream::connect(admin).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let opened = Instant::now();
    let mut probe = TcpStream::connect(admin).await.unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), probe.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 "));

    // 300 idle connections, held: silent, a head that never ends, a request then silence.
    let mut held = vec![probe];
    for i in 0..300 {
        let mut s = TcpStream::connect(admin).await.unwrap();
        match i % 3 {
            0 => {}
            1 => s
                .write_all(b"GET /v1/upstreams HTTP/1.1\r\nHost: x\r\nX-A: ")
                .await
                .unwrap(),
            _ => s
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap(),
        }
        held.push(s);
    }

    // Every proxied request answered within 2 s, each on a new connection.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    for i in 0..20 {
        let t = Instant::now();
        let r = client.get(p.url(&format!("/req/{i}"))).send().await;
        match r {
            Ok(r) if r.status() == 200 => {
                let body = r.text().await.unwrap();
                assert!(body.contains("b1"), "{body}");
                answered += 1;
            }
            other => eprintln!("request {i}: {other:?}"),
        }
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("{answered}/20 answered, slowest {} ms", slowest.as_millis());
    assert_eq!(answered, 20);

    // With a header timeout of 1 s, the head that never ends is closed by tideway after it,
    // not before.
    if admin_extra.contains("header_timeout = \"1s\"") {
        let (_, closed) = read_to_close(&mut partial, Duration::from_secs(10)).await;
        assert!(closed, "the partial head is still open");
        assert!(opened.elapsed() >= Duration::from_millis(900));
    }

    // Once the idle connections are gone, the admin API answers again.
    drop(held);
    let took = wait_until(Duration::from_secs(10), || async {
        reqwest::get(p.admin_url("/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    eprintln!(
        "admin answering again {} ms after the release",
        took.as_millis()
    );
    let r = p
        .admin_req(reqwest::Method::GET, "/v1/upstreams", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Admin connections with no request under way close after the idle timeout; a request body
/// that stalls closes its connection after the header timeout.
#[tokio::test]
async fn admin_connections_with_no_request_under_way_close_when_idle() {
    let b = backend("b1").await;
    let (http, admin) = (addr(), addr());
    let config = format!(
        "[admin]\nlisten = \"{admin}\"\nheader_timeout = \"1s\"\nidle_timeout = \"1s\"\n\n\
         [store]\ndata_dir = \"DATA_DIR\"\n\n\
         [[listener]]\nlisten = \"{http}\"\nupstream = \"app\"\n\n\
         [upstream.app]\nbackends = [{{ addr = \"{}\", id = \"b1\" }}]\n",
        b.addr
    );
    let _p = start(http, admin, &config, None).await;
    let mut silent = TcpStream::connect(admin).await.unwrap();
    let mut kept = TcpStream::connect(admin).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_to_close(&mut kept, Duration::from_secs(10)).await;
    assert!(closed, "a kept-alive connection stayed open");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let (nothing, closed) = read_to_close(&mut silent, Duration::from_secs(10)).await;
    assert!(closed, "a silent connection stayed open");
    assert_eq!(nothing, "");
    // A registration whose body never ends: closed, unanswered.
    let mut stalled = TcpStream::connect(admin).await.unwrap();
    let head = format!(
        "POST /v1/upstreams/app/backends HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"addr\": "
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let (nothing, closed) = read_to_close(&mut stalled, Duration::from_secs(10)).await;
    assert!(closed, "a stalled body kept its connection open");
    assert_eq!(nothing, "");
}

/// Send a keep-alive GET on `s` and read one answer's head and body (Content-Length framed).
async fn get(s: &mut TcpStream) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return String::from_utf8_lossy(&got).into_owned(),
        }
    }
}

#[tokio::test]
async fn a_full_process_answers_503_and_serves_again_when_a_place_frees() {
    let b = backend("b1").await;
    let p = start_proxy_opts(
        "max_connections = 3",
        "",
        "",
        &format!(
            "[upstream.app]\nbackends = [{{ addr = \"{}\", id = \"b1\" }}]\n",
            b.addr
        ),
        &[],
    )
    .await;
    // Three served keep-alive connections hold the three places (the readiness probe's place
    // is freed once tideway sees it closed: retry until served).
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < 3 {
        assert!(Instant::now() < deadline, "places never freed");
        let mut s = TcpStream::connect(p.http).await.unwrap();
        if get(&mut s).await.starts_with("HTTP/1.1 200 ") {
            held.push(s);
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut fourth = TcpStream::connect(p.http).await.unwrap();
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (all, closed) = read_to_close(&mut fourth, Duration::from_secs(10)).await;
    assert!(closed, "{all}");
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 503 "), "{all}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{all}"
    );
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(json["error"]
        .as_str()
        .unwrap()
        .contains("too many connections"));
    // The held connections are still served.
    assert!(get(&mut held[0]).await.starts_with("HTTP/1.1 200 "));
    // A place freed is a place taken again.
    drop(held.pop());
    wait_until(Duration::from_secs(10), || async {
        let Ok(mut s) = TcpStream::connect(p.http).await else {
            return false;
        };
        get(&mut s).await.starts_with("HTTP/1.1 200 ")
    })
    .await;
}

#[tokio::test]
async fn a_full_process_closes_tcp_connections_over_its_cap() {
    let b = backend("b1").await;
    let p = start_proxy_opts(
        "max_connections = 1",
        "",
        "protocol = \"tcp\"",
        &format!(
            "[upstream.app]\nbackends = [{{ addr = \"{}\", id = \"b1\" }}]\n",
            b.addr
        ),
        &[],
    )
    .await;
    // One tunnel holds the one place (retry until the readiness probe's is freed).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tunnel = loop {
        assert!(Instant::now() < deadline, "the place never freed");
        let mut s = TcpStream::connect(p.http).await.unwrap();
        if get(&mut s).await.starts_with("HTTP/1.1 200 ") {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut second = TcpStream::connect(p.http).await.unwrap();
    let _ = second.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (all, closed) = read_to_close(&mut second, Duration::from_secs(10)).await;
    assert!(closed);
    assert_eq!(all, "", "the backend answered past the cap");
    // The tunnel still works; once it closes, a new one is served.
    assert!(get(&mut tunnel).await.starts_with("HTTP/1.1 200 "));
    drop(tunnel);
    wait_until(Duration::from_secs(10), || async {
        let Ok(mut s) = TcpStream::connect(p.http).await else {
            return false;
        };
        get(&mut s).await.starts_with("HTTP/1.1 200 ")
    })
    .await;
}
