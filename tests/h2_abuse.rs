//! HTTP/2 abuse (issue 25, must-show 2): raw frames from `tests/support/h2_frames.py` against a
//! TLS listener with `http2 = true` and a counting backend behind it. Each attack must end in
//! a GOAWAY, an RST_STREAM, a 431 or a closed (or no longer read) connection, at a bounded
//! cost: what the backend received, tideway's CPU time and RSS (from /proc) before and after.
//! Another client (`curl --http2`) is served meanwhile and after. The figures are printed so
//! they can be quoted (`cargo test --test h2_abuse -- --nocapture`).
//!
//! - rapid reset (CVE-2023-44487), HEADERS + RST_STREAM pairs in bulk: GOAWAY
//!   ENHANCE_YOUR_CALM (the h2 crate's limit on streams reset before they are taken);
//!   paced 5 ms apart: GOAWAY after `keepalive_requests` streams, as nginx;
//! - CONTINUATION flood (CVE-2024-27316): GOAWAY once the header list passes `max_head`;
//! - a header list over `max_head` (32 KiB): 431 on the stream, nothing to the backend;
//! - streams over `max_concurrent_streams`: RST_STREAM REFUSED_STREAM, the others served;
//! - SETTINGS and PING floods with the ACKs unread: the codec stops reading while an ACK
//!   cannot be sent (nothing piles up), and the connection is closed once its writes waited
//!   the listener's `send_timeout` (2 s here) with the client still not reading;
//! - a zero window on a 1 GiB answer: RST_STREAM by the `send_timeout`, the backend read only
//!   as far as the buffers on the way.
//!
//! `nginx_reference` runs the same attacks against real nginx 1.22 (`listen ... ssl http2`,
//! the same stream cap and `keepalive_requests`, a 2 s `send_timeout`) and prints its answers.

mod common;
#[path = "support/counting.rs"]
mod counting;

use common::h2::{make_cert, start_h2_proxy};
use common::nginx::{nginx_main, start_nginx_checked, wait_port};
use common::*;
use counting::Counting;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The stream cap of the listener under attack (`limits.max_concurrent_streams`).
const STREAMS: u32 = 8;
/// Growth of the proxy's RSS any one attack may cause.
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// CPU time any one attack may cost the proxy (generous: debug builds, 2 shared cores).
const CPU_BOUND_MS: u64 = 20_000;
/// Frames a flood may write: a server that neither closes nor stops reading before this
/// many took them all.
const FLOOD: u64 = 1_000_000;
/// The listeners' `send_timeout` (both servers).
const SEND_TIMEOUT: &str = "2s";
/// How long a flood's client keeps not reading after the server stopped reading, at most:
/// the server must end the connection by then (it is a bound, not a wait: the client stops
/// holding as soon as the connection ends). Well under tideway's other ends for a
/// connection without streams (`header_timeout`, 60 s, then two GOAWAY graces), so only
/// `send_timeout` can end it within this.
const HOLD: Duration = Duration::from_secs(10);

/// The server under attack: its h2 port, the process that pays, and the backend behind it.
struct Target {
    name: &'static str,
    port: u16,
    pid: u32,
    backend: Counting,
    /// The running server (and its files), stopped on drop.
    _proc: Box<dyn std::any::Any + Send>,
}

/// The name the attacks and the other client ask for (the test certificate's).
const NAME: &str = "a.test";

/// Streams one connection may carry (`limits.keepalive_requests`, nginx's
/// `keepalive_requests`) in the tests that pace their resets: then GOAWAY.
const KEEPALIVE_REQUESTS: usize = 100;

/// tideway with a TLS listener speaking h2, [`STREAMS`] streams at once and
/// [`KEEPALIVE_REQUESTS`] in all per connection, in front of a counting backend.
async fn tideway() -> Target {
    let backend = Counting::start().await;
    let limits = format!(
        "limits = {{ max_concurrent_streams = {STREAMS}, keepalive_requests = {KEEPALIVE_REQUESTS}, send_timeout = \"{SEND_TIMEOUT}\" }}"
    );
    let p = start_h2_proxy(backend.addr, true, "", &limits).await;
    Target {
        name: "tideway",
        port: p.http.port(),
        pid: p.child.id(),
        backend,
        _proc: Box::new(p),
    }
}

/// nginx 1.22 (Debian) with `listen ... ssl http2`, the same stream cap, and a 2 s
/// `send_timeout`, in front of a counting backend; the worker is the process measured.
async fn nginx() -> Target {
    let backend = Counting::start().await;
    let dir = tempfile::tempdir().unwrap();
    let c = make_cert(dir.path(), "a", &[NAME]);
    let port = free_port();
    let d = dir.path().display();
    let conf = format!(
        "{}http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  server {{\n    listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    http2_max_concurrent_streams {STREAMS};\n    send_timeout {SEND_TIMEOUT};\n    keepalive_requests {KEEPALIVE_REQUESTS};\n    location / {{ proxy_pass http://{}; }}\n  }}\n}}\n",
        nginx_main(dir.path()),
        c.cert.display(),
        c.key.display(),
        backend.addr
    );
    let file = dir.path().join("nginx.conf");
    std::fs::write(&file, conf).unwrap();
    let master = start_nginx_checked(dir.path(), &file);
    wait_port(port).await;
    let pid = worker_of(master.0.id());
    Target {
        name: "nginx",
        port,
        pid,
        backend,
        _proc: Box::new((master, dir)),
    }
}

/// The one worker of an nginx master.
fn worker_of(master: u32) -> u32 {
    let path = format!("/proc/{master}/task/{master}/children");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "nginx started no worker");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a process has cost so far: CPU time (user + system) and resident memory.
#[derive(Clone, Copy, Debug)]
struct Usage {
    cpu_ms: u64,
    rss_kib: u64,
}

fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Clock ticks are USER_HZ, 100 a second on Linux whatever the kernel's HZ.
    let cpu_ms = ticks * 10;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    Usage { cpu_ms, rss_kib }
}

/// Run `attack` of h2_frames.py against `port` with extra arguments; its JSON answer.
async fn attack(port: u16, attack: &str, args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/h2_frames.py");
    let out = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .args([attack, "127.0.0.1", &port.to_string(), "--authority", NAME])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("/usr/bin/python3 runs (scripts/test.sh installs python3-h2)");
    assert!(
        out.status.success(),
        "{attack}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{attack}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `curl --http2` fetches `/` over h2 and gets the backend's `ok`: another client is served.
async fn served(t: &Target) {
    let out = tokio::process::Command::new("curl")
        .args([
            "--http2",
            "-sk",
            "--max-time",
            "10",
            "-w",
            " %{http_version}",
        ])
        .arg("--resolve")
        .arg(format!("{NAME}:{}:127.0.0.1", t.port))
        .arg(format!("https://{NAME}:{}/", t.port))
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok 2",
        "{}: another client over h2 was not served",
        t.name
    );
}

/// How an attack ended, for the figures.
fn ending(r: &Value) -> String {
    let mut how = Vec::new();
    if let Some(statuses) = r["statuses"].as_object().filter(|m| !m.is_empty()) {
        let mut counts = std::collections::BTreeMap::new();
        for s in statuses.values() {
            *counts.entry(s.to_string()).or_insert(0) += 1;
        }
        how.push(format!("answered {counts:?}"));
    }
    if let Some(g) = r["goaway"].as_object() {
        how.push(format!("GOAWAY {}", g["code"].as_str().unwrap()));
    }
    if let Some(resets) = r["resets"].as_object().filter(|m| !m.is_empty()) {
        how.push(format!("RST_STREAM {}", Value::Object(resets.clone())));
    }
    if r["closed"].as_bool().unwrap() {
        how.push("closed".into());
    }
    if r["stalled"].as_bool().unwrap() {
        how.push("no longer read".into());
    }
    if let Some(held) = r["held"].as_f64() {
        how.push(format!("{held} s not read after that"));
    }
    if let Some(end) = r["end"].as_str() {
        how.push(format!("by a {end}"));
    }
    if how.is_empty() {
        how.push("not ended".into());
    }
    how.join(", ")
}

/// Print an attack's figures (`unit`: what `sent` counts) and assert its cost bounds.
fn cost(t: &Target, what: &str, unit: &str, before: Usage, r: &Value) {
    let after = usage(t.pid);
    let cpu = after.cpu_ms - before.cpu_ms;
    let rss = after.rss_kib.saturating_sub(before.rss_kib);
    println!(
        "{} {what}: {} {unit} sent in {} s, {} ACKs read, ended: {}; backend received {} requests ({} body bytes) so far; CPU {cpu} ms; RSS {} -> {} KiB (+{rss})",
        t.name,
        r["sent"],
        r["seconds"],
        r["acks"],
        ending(r),
        t.backend.received(),
        t.backend.body_sent(),
        before.rss_kib,
        after.rss_kib,
    );
    assert!(rss < RSS_BOUND_KIB, "{} {what}: RSS grew {rss} KiB", t.name);
    assert!(cpu < CPU_BOUND_MS, "{} {what}: {cpu} ms of CPU", t.name);
}

fn sent(r: &Value) -> u64 {
    r["sent"].as_u64().unwrap()
}

fn goaway(r: &Value) -> Option<&str> {
    r["goaway"]["code"].as_str()
}

fn closed(r: &Value) -> bool {
    r["closed"].as_bool().unwrap()
}

/// Rapid reset (CVE-2023-44487): HEADERS + RST_STREAM pairs end in a GOAWAY after a bounded
/// number, and few of them reach the backend.
async fn rapid_reset(t: &Target, goaways: &[&str]) {
    let before = usage(t.pid);
    let received = t.backend.received();
    let args = ["--count", "100000", "--seconds", "30"];
    let (r, ()) = tokio::join!(attack(t.port, "rapid-reset", &args), served(t));
    cost(t, "rapid reset", "HEADERS+RST_STREAM pairs", before, &r);
    let code = goaway(&r).unwrap_or_else(|| panic!("{}: no GOAWAY: {r}", t.name));
    assert!(goaways.contains(&code), "{}: GOAWAY {code}", t.name);
    assert!(sent(&r) < 20_000, "{}: {} pairs taken", t.name, sent(&r));
    let reached = t.backend.received() - received;
    assert!(reached <= 200, "{}: {reached} reached the backend", t.name);
    served(t).await;
}

/// Rapid reset, paced: each RST_STREAM comes 5 ms after its HEADERS, once the stream was
/// taken and its request sent on, so no limit on streams reset before they are taken sees
/// it. What bounds it is nginx's bound: `keepalive_requests` streams per connection, then
/// GOAWAY; each reached the backend at most once.
async fn paced_reset(t: &Target) {
    let before = usage(t.pid);
    let received = t.backend.received();
    let args = [
        "--paced",
        "5",
        "--count",
        "10000",
        "--seconds",
        "60",
        "--path",
        "/slow",
    ];
    let (r, ()) = tokio::join!(attack(t.port, "rapid-reset", &args), served(t));
    cost(t, "paced reset", "HEADERS, RST_STREAM pairs", before, &r);
    assert!(goaway(&r).is_some(), "{}: no GOAWAY: {r}", t.name);
    assert!(
        sent(&r) <= KEEPALIVE_REQUESTS as u64 + 1,
        "{}: {} pairs taken",
        t.name,
        sent(&r)
    );
    let reached = t.backend.received() - received;
    assert!(
        reached <= KEEPALIVE_REQUESTS + 1,
        "{}: {reached} reached the backend",
        t.name
    );
    served(t).await;
}

/// CONTINUATION flood (CVE-2024-27316): the connection ends once the header list passes the
/// limit, long before the flood does.
async fn continuation(t: &Target) {
    let before = usage(t.pid);
    let received = t.backend.received();
    let flood = attack(t.port, "continuation", &["--seconds", "30"]);
    let (r, ()) = tokio::join!(flood, served(t));
    cost(t, "CONTINUATION flood", "CONTINUATION frames", before, &r);
    assert!(
        goaway(&r).is_some() || closed(&r),
        "{}: not ended: {r}",
        t.name
    );
    // 4 KB a frame: 1,000 frames are 4 MB, over a hundred times the 32 KiB limit.
    assert!(sent(&r) < 1_000, "{}: {} frames taken", t.name, sent(&r));
    assert_eq!(
        t.backend.received() - received,
        1,
        "{}: only the other client's request reaches the backend",
        t.name
    );
    served(t).await;
}

/// A header list over 32 KiB is refused and nothing reaches the backend; the answer (a 431,
/// an RST_STREAM or a GOAWAY) is returned for the figures.
async fn oversized(t: &Target) -> Value {
    let before = usage(t.pid);
    let received = t.backend.received();
    let r = attack(t.port, "big-headers", &["--count", "40", "--seconds", "10"]).await;
    cost(t, "oversized headers", "frames", before, &r);
    assert!(r["header_block_bytes"].as_u64().unwrap() > 32 * 1024);
    let refused = r["statuses"]["1"] == 431
        || r["reset_streams"].as_array().unwrap().contains(&1.into())
        || goaway(&r).is_some();
    assert!(refused, "{}: not refused: {r}", t.name);
    assert_ne!(r["statuses"]["1"], 200, "{}: {r}", t.name);
    assert_eq!(
        t.backend.received(),
        received,
        "{}: reached the backend",
        t.name
    );
    served(t).await;
    r
}

/// More streams than the cap at once: the first [`STREAMS`] are served, the others refused.
async fn too_many_streams(t: &Target) {
    let before = usage(t.pid);
    let received = t.backend.received();
    t.backend.hold();
    let port = t.port;
    let opened = tokio::spawn(async move {
        attack(
            port,
            "streams",
            &["--count", "20", "--path", "/slow", "--seconds", "20"],
        )
        .await
    });
    // The first streams are held at the backend while the others arrive.
    wait_until(Duration::from_secs(10), || async {
        t.backend.received() - received >= STREAMS as usize
    })
    .await;
    served(t).await;
    t.backend.release();
    let r = opened.await.unwrap();
    cost(t, "too many streams", "HEADERS", before, &r);
    let statuses = r["statuses"].as_object().unwrap();
    let ok = statuses.values().filter(|s| **s == 200).count();
    assert_eq!(ok, STREAMS as usize, "{}: {r}", t.name);
    let refused: u64 = ["REFUSED_STREAM", "PROTOCOL_ERROR"]
        .iter()
        .filter_map(|c| r["resets"][c].as_u64())
        .sum();
    assert_eq!(refused, 20 - u64::from(STREAMS), "{}: {r}", t.name);
    // The held streams and the other client's request.
    assert_eq!(t.backend.received() - received, STREAMS as usize + 1);
    served(t).await;
}

/// A SETTINGS or PING flood whose ACKs are not read: the server closes or says GOAWAY before
/// it took them all, at a bounded cost. A server that stops reading first must end the
/// connection while the client keeps not reading (up to [`HOLD`]: tideway by its 2 s
/// `send_timeout`, a TCP reset as the client's frames are left unread).
async fn flood(t: &Target, which: &str) {
    let before = usage(t.pid);
    let count = FLOOD.to_string();
    let hold = HOLD.as_secs().to_string();
    let args = ["--count", &count, "--seconds", "30", "--hold", &hold];
    let (r, ()) = tokio::join!(attack(t.port, which, &args), served(t));
    cost(t, which, "frames", before, &r);
    assert!(
        goaway(&r).is_some() || closed(&r),
        "{}: {which} not ended: {r}",
        t.name
    );
    assert!(
        sent(&r) < FLOOD || goaway(&r).is_some(),
        "{}: all {FLOOD} frames taken",
        t.name
    );
    if t.name == "tideway" {
        // It closed with the flood unread (while the client still wrote, or while it held):
        // the client sees a reset.
        assert_eq!(r["end"], "reset", "{r}");
    }
    served(t).await;
}

/// A client that opens no window asks for a 1 GiB body: the stream (or connection) ends by
/// the send timeout, the backend is not read to the end, and nothing is buffered whole.
async fn zero_window(t: &Target, within: Duration) {
    let before = usage(t.pid);
    let seconds = within.as_secs().to_string();
    let port = t.port;
    let stalled = tokio::spawn(async move {
        attack(
            port,
            "zero-window",
            &["--path", "/big", "--seconds", &seconds],
        )
        .await
    });
    wait_until(Duration::from_secs(10), || async {
        t.backend.body_sent() > 0
    })
    .await;
    served(t).await;
    let r = stalled.await.unwrap();
    cost(t, "zero window", "request", before, &r);
    assert_eq!(r["data_bytes"], 0, "{}: DATA past a zero window", t.name);
    let ended = r["reset_streams"].as_array().unwrap().contains(&1.into())
        || goaway(&r).is_some()
        || closed(&r);
    assert!(ended, "{}: stream not ended within {within:?}: {r}", t.name);
    println!(
        "{} zero window: the backend's connection took {} of {} bytes",
        t.name,
        t.backend.body_sent(),
        counting::BIG_BODY
    );
    served(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_in_goaway() {
    let t = tideway().await;
    rapid_reset(&t, &["ENHANCE_YOUR_CALM", "PROTOCOL_ERROR"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_reset_ends_at_keepalive_requests() {
    let t = tideway().await;
    paced_reset(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_ends_at_the_header_limit() {
    let t = tideway().await;
    continuation(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_list_is_refused() {
    let t = tideway().await;
    oversized(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_cap_are_refused() {
    let t = tideway().await;
    too_many_streams(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_are_bounded() {
    let t = tideway().await;
    flood(&t, "settings-flood").await;
    flood(&t, "ping-flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_ends_by_the_send_timeout() {
    let t = tideway().await;
    zero_window(&t, Duration::from_secs(20)).await;
    assert!(
        t.backend.body_sent() < 64 << 20,
        "{} bytes of the body were read from the backend",
        t.backend.body_sent()
    );
}

/// The same attacks against nginx: its answers, printed beside tideway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_reference() {
    let t = nginx().await;
    rapid_reset(&t, &["NO_ERROR", "ENHANCE_YOUR_CALM", "PROTOCOL_ERROR"]).await;
    paced_reset(&t).await;
    continuation(&t).await;
    oversized(&t).await;
    too_many_streams(&t).await;
    flood(&t, "settings-flood").await;
    flood(&t, "ping-flood").await;
    zero_window(&t, Duration::from_secs(20)).await;
}
