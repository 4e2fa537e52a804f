//! Side-by-side benchmark: tideway vs nginx vs HAProxy, one worker each, same demo backend,
//! same run. Run with `cargo bench --bench compare`. Installs nginx-light, haproxy, wrk and
//! nghttp2-client (h2load) from Debian when missing.
//!
//! Reports, for each proxy: proxy CPU time per HTTP keep-alive request (wrk, 64 connections),
//! its requests per second, the p50/p99 latency of an open-loop load at half of nginx's
//! requests per second (the same rate for every proxy), proxy CPU per WebSocket echo round
//! trip (64 connections, 64-byte messages), RSS per idle proxied WebSocket at 8,000
//! connections, and RSS after they close relative to before. A last row sends the same loads
//! straight to the backend: the limit no proxy can beat. Each figure is also given as a ratio
//! to nginx and to HAProxy, since absolute numbers drift on a small, noisy machine.
//! `COMPARE_ONLY=limits` compares tideway with per-client limits on and off instead ([`limits`]);
//! `COMPARE_ONLY=routes`, 100 routes against one ([`routes`]); `COMPARE_ONLY=newws`, CPU per
//! new WebSocket (connect, upgrade, one echo, close) over ws:// and wss:// ([`newws`]);
//! `COMPARE_ONLY=echo`, CPU and context switches per WebSocket echo in interleaved rounds
//! ([`echo`]); `COMPARE_ONLY=h2`, CPU per HTTP/2 request under h2load ([`h2`]);
//! `COMPARE_ONLY=h2ws`, CPU per WebSocket opened over HTTP/2 (RFC 8441) against wss:// ([`h2ws`]).

mod echo;
mod h2;
mod h2client;
mod h2ws;
mod interleave;
mod latency;
mod limits;
mod newws;
mod proc;
mod routes;
#[path = "../support.rs"]
mod support;
mod tcp;

pub(crate) use support::{free_port, wait_port};

use futures_util::{SinkExt, StreamExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const HTTP_SECONDS: u64 = 10;
const WS_SECONDS: u64 = 10;
const WS_CONNS: usize = 64;
const IDLE_CONNS: usize = 8000;
/// WebSockets opened and closed before the idle figure's "before" is read.
const WARM_CONNS: usize = 200;
const TAIL_SECONDS: u64 = 4;
/// Tail-latency rounds, taken in turn over every proxy and the backend direct (each round
/// visits each once), so a noisy moment of this small machine falls on one round of one
/// proxy, not on one proxy's whole figure; each figure is the median of its rounds.
const TAIL_ROUNDS: usize = 5;

fn ensure_tools() {
    let mut missing: Vec<&str> = [
        ("nginx", "nginx-light"),
        ("haproxy", "haproxy"),
        ("wrk", "wrk"),
        ("h2load", "nghttp2-client"),
    ]
    .into_iter()
    .filter(|(bin, _)| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .map_or(true, |o| !o.status.success())
    })
    .map(|(_, pkg)| pkg)
    .collect();
    if !std::path::Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").exists() {
        missing.push("libnginx-mod-stream");
    }
    if !missing.is_empty() {
        eprintln!("installing {missing:?}");
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "could not install {missing:?}");
    }
}

pub(crate) struct Proxy {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Drop for Proxy {
    /// SIGTERM, so an nginx master stops its workers too (SIGKILL would orphan them).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Write `config` to `dir/file`, start `program ARGS... dir/file` quietly (with `RUST_LOG=warn`
/// for tideway), and wait until it listens on `port`.
pub(crate) fn launch(
    name: &'static str,
    port: u16,
    dir: &Path,
    file: &str,
    config: String,
    program: &str,
    args: &[&str],
) -> Proxy {
    let cfg = dir.join(file);
    std::fs::write(&cfg, config).unwrap();
    let child = Command::new(program)
        .args(args)
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    wait_port(port);
    Proxy { name, child, port }
}

/// Start tideway (one worker thread) with one listener of `protocol` ("http" or "tcp") in
/// front of the demo backend on `backend`.
pub(crate) fn launch_tideway(dir: &Path, backend: u16, protocol: &str) -> Proxy {
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        "[server]\nthreads = 1\nmax_connections = 9000\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[store]\ndata_dir = \"{}\"\n[[listener]]\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"{protocol}\"\nupstream = \"b\"\n[upstream.b]\nbackends = [{{ addr = \"127.0.0.1:{backend}\" }}]\n",
        dir.join("data").display()
    );
    let file = format!("tideway-{protocol}.toml");
    launch(
        "tideway",
        port,
        dir,
        &file,
        config,
        &tideway_bin(),
        &["run", "--config"],
    )
}

/// The tideway binary the rows run: this build's, or `COMPARE_TIDEWAY_BIN` (another build,
/// for a before/after pair run by the same bench).
pub(crate) fn tideway_bin() -> String {
    std::env::var("COMPARE_TIDEWAY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tideway").to_string())
}

fn start_tideway(dir: &Path, backend: u16) -> Proxy {
    launch_tideway(dir, backend, "http")
}

/// tideway with its access log on, written to a file (as nginx would write its own).
fn start_tideway_logged(dir: &Path, backend: u16) -> Proxy {
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        "[server]\nthreads = 1\nmax_connections = 9000\naccess_log = true\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[store]\ndata_dir = \"{}\"\n[[listener]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"b\"\n[upstream.b]\nbackends = [{{ addr = \"127.0.0.1:{backend}\" }}]\n",
        dir.join("data").display()
    );
    let cfg = dir.join("tideway-logged.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::create(dir.join("access.log")).unwrap();
    let child = Command::new(tideway_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn,tideway::access=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_port(port);
    Proxy {
        name: "tideway, access log on",
        child,
        port,
    }
}

/// Start the demo backend (`--tcp`: its TCP echo) on a free port; returns it and the port.
fn spawn_backend(tcp: bool) -> (Child, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["demo-backend", "--listen", &listen, "--id", "bench"];
    if tcp {
        args.push("--tcp");
    }
    let child = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    (child, port)
}

fn start_nginx(dir: &Path, backend: u16) -> Proxy {
    let port = free_port();
    let config = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nworker_rlimit_nofile 20000;\nevents {{ worker_connections 19000; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n  upstream b {{ server 127.0.0.1:{backend}; keepalive 64; }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://b;\n      proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Real-IP $remote_addr;\n      proxy_read_timeout 1h;\n    }}\n  }}\n}}\n",
            d = dir.display()
        );
    let prefix = dir.display().to_string();
    launch(
        "nginx",
        port,
        dir,
        "nginx.conf",
        config,
        "nginx",
        &["-p", &prefix, "-c"],
    )
}

fn start_haproxy(dir: &Path, backend: u16) -> Proxy {
    let port = free_port();
    let config = format!(
            "global\n  nbthread 1\n  maxconn 9000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n  timeout tunnel 1h\n  option http-keep-alive\n  option forwardfor\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  http-reuse always\n  server s1 127.0.0.1:{backend}\n"
        );
    launch(
        "haproxy",
        port,
        dir,
        "haproxy.cfg",
        config,
        "haproxy",
        &["-db", "-f"],
    )
}

#[derive(Default, Clone, Copy)]
struct Row {
    us_per_req: f64,
    rps: f64,
    tail: latency::Tail,
    us_per_echo: f64,
    kib_per_idle_ws: f64,
    rss_before_kib: f64,
    rss_after_close_kib: f64,
}

fn http_bench(p: &Proxy) -> (f64, f64) {
    let (cpu, requests) = wrk(p.child.id(), p.port, p.name);
    (cpu / requests * 1e6, requests / HTTP_SECONDS as f64)
}

/// wrk against `port` for `HTTP_SECONDS`: CPU seconds `pid` used meanwhile, and requests done.
fn wrk(pid: u32, port: u16, name: &str) -> (f64, f64) {
    wrk_load(pid, port, name, interleave::ROOT)
}

/// [`wrk`] sending `load`'s target and Host.
fn wrk_load(pid: u32, port: u16, name: &str, load: interleave::Load<'_>) -> (f64, f64) {
    let cpu0 = proc::cpu_seconds(pid);
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c64", &format!("-d{HTTP_SECONDS}s")]);
    if let Some(host) = load.host {
        cmd.args(["-H", &format!("Host: {host}")]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{}", load.target))
        .output()
        .expect("wrk runs");
    let cpu = proc::cpu_seconds(pid) - cpu0;
    let text = String::from_utf8_lossy(&out.stdout);
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("wrk output: {text}"));
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    if let Some(e) = errors {
        eprintln!("{name}: wrk reported: {e}");
    }
    (cpu, requests)
}

async fn ws_echo_bench(p: &Proxy) -> f64 {
    ws_echoes(p).await.0
}

/// Echo round trips over `WS_CONNS` WebSockets for `WS_SECONDS`: the proxy's CPU µs per echo,
/// and the echoes done.
pub(crate) async fn ws_echoes(p: &Proxy) -> (f64, u64) {
    let url = format!("ws://127.0.0.1:{}/echo", p.port);
    let mut conns = Vec::new();
    for _ in 0..WS_CONNS {
        conns.push(
            tokio_tungstenite::connect_async(&url)
                .await
                .expect("ws connect")
                .0,
        );
    }
    let cpu0 = proc::cpu_seconds(p.child.id());
    let end = Instant::now() + Duration::from_secs(WS_SECONDS);
    let msg = Message::binary(vec![42u8; 64]);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            let msg = msg.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < end {
                    ws.send(msg.clone()).await.unwrap();
                    ws.next().await.unwrap().unwrap();
                    n += 1;
                }
                let _ = ws.close(None).await;
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let cpu = proc::cpu_seconds(p.child.id()) - cpu0;
    (cpu / total as f64 * 1e6, total)
}

/// Open `n` WebSockets to `url`, each with one echo done.
async fn open_idle(
    url: &str,
    n: usize,
) -> Vec<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>
{
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        ws.send(Message::text("hi")).await.unwrap();
        ws.next().await.unwrap().unwrap();
        conns.push(ws);
    }
    conns
}

async fn idle_bench(p: &Proxy) -> (f64, f64, f64) {
    let url = format!("ws://127.0.0.1:{}/idle", p.port);
    // Warm up first: the code pages, thread caches and allocator arenas the first WebSockets
    // touch are paid once per process, not per connection, so they stay out of the figure.
    for mut ws in open_idle(&url, WARM_CONNS).await {
        let _ = ws.close(None).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = proc::rss_kib(p.child.id()) as f64;
    let conns = open_idle(&url, IDLE_CONNS).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = proc::rss_kib(p.child.id()) as f64;
    for mut ws in conns {
        let _ = ws.close(None).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = proc::rss_kib(p.child.id()) as f64;
    ((held - before) / IDLE_CONNS as f64, before, after)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("compare: run with `cargo bench --bench compare`; skipped under cargo test");
        return;
    }
    ensure_tools();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (mut backend, backend_port) = spawn_backend(false);

    // COMPARE_ONLY=limits measures only tideway with per-client limits on against off;
    // COMPARE_ONLY=routes, 100 routes against one; COMPARE_ONLY=newws, CPU per new WebSocket;
    // COMPARE_ONLY=echo, CPU and context switches per WebSocket echo; COMPARE_ONLY=h2, CPU per
    // HTTP/2 request; COMPARE_ONLY=h2ws, CPU per WebSocket opened over HTTP/2.
    let only = std::env::var("COMPARE_ONLY").unwrap_or_default();
    if ["limits", "routes", "newws", "echo", "h2", "h2ws"].contains(&only.as_str()) {
        let out = match only.as_str() {
            "limits" => limits::run(dir.path(), backend_port),
            "routes" => routes::run(dir.path(), backend_port),
            "echo" => rt.block_on(echo::run(dir.path(), backend_port)),
            "h2" => h2::run(dir.path(), backend_port),
            "h2ws" => h2ws::run(dir.path(), backend_port),
            _ => newws::run(dir.path(), backend_port),
        };
        println!("{out}");
        let _ = backend.kill();
        let _ = backend.wait();
        return;
    }
    // COMPARE_ONLY=tcp skips the HTTP/WebSocket part (for quick TCP runs); COMPARE_ONLY=idle
    // measures only idle WebSocket memory.
    let only_tcp = std::env::var("COMPARE_ONLY").is_ok_and(|v| v == "tcp");
    let only_idle = std::env::var("COMPARE_ONLY").is_ok_and(|v| v == "idle");
    let mut rows: Vec<(&str, Row)> = Vec::new();
    // The fixed rate of the tail-latency load: half of nginx's requests per second.
    let mut tail_rate = 0.0;
    let http_proxies: &[fn(&Path, u16) -> Proxy] = if only_tcp {
        &[]
    } else {
        &[
            start_nginx,
            start_haproxy,
            start_tideway,
            start_tideway_logged,
        ]
    };
    for start in http_proxies {
        let sub = dir.path().join(format!("p{}", rows.len()));
        std::fs::create_dir_all(&sub).unwrap();
        let p = start(&sub, backend_port);
        eprintln!("measuring {}", p.name);
        let (idle, before, after) = rt.block_on(idle_bench(&p));
        if only_idle {
            eprintln!(
                "{}: {idle:.2} KiB per idle WebSocket ({before} -> {after} KiB after)",
                p.name
            );
            continue;
        }
        let (us_req, rps) = http_bench(&p);
        if tail_rate == 0.0 {
            tail_rate = rps / 2.0;
        }
        let us_echo = rt.block_on(ws_echo_bench(&p));
        rows.push((
            p.name,
            Row {
                us_per_req: us_req,
                rps,
                tail: latency::Tail::default(),
                us_per_echo: us_echo,
                kib_per_idle_ws: idle,
                rss_before_kib: before,
                rss_after_close_kib: after,
            },
        ));
    }
    if !only_idle && !rows.is_empty() {
        // The limit: the same loads straight to the backend (no proxy CPU to count).
        eprintln!("measuring direct to the backend");
        let (_, requests) = wrk(backend.id(), backend_port, "direct");
        rows.push((
            "direct to the backend",
            Row {
                rps: requests / HTTP_SECONDS as f64,
                ..Row::default()
            },
        ));
        // Each proxy measured alone above (the others stopped); for the tail rounds, all of
        // them anew, side by side and idle but for the one under load.
        let alive: Vec<Proxy> = http_proxies
            .iter()
            .enumerate()
            .map(|(i, start)| {
                let sub = dir.path().join(format!("tail{i}"));
                std::fs::create_dir_all(&sub).unwrap();
                start(&sub, backend_port)
            })
            .collect();
        let ports: Vec<u16> = alive.iter().map(|p| p.port).chain([backend_port]).collect();
        let tails = rt.block_on(latency::rounds(
            &ports,
            tail_rate,
            TAIL_SECONDS,
            TAIL_ROUNDS,
        ));
        for ((name, row), (tail, p99s)) in rows.iter_mut().zip(tails) {
            eprintln!("{name}: p99 by round {p99s:.0?} us, median {:.0}", tail.p99);
            row.tail = tail;
        }
    }
    let _ = backend.kill();
    let _ = backend.wait();
    if only_idle {
        return;
    }

    // TCP tunnels.
    let (mut tcp_backend, tcp_port) = spawn_backend(true);
    let mut tcp_rows = Vec::new();
    for start in [tcp::start_nginx, tcp::start_haproxy, tcp::start_tideway] {
        let sub = dir.path().join(format!("t{}", tcp_rows.len()));
        std::fs::create_dir_all(&sub).unwrap();
        let p = start(&sub, tcp_port);
        eprintln!("measuring {} (tcp)", p.name);
        let (mbps, cpu_ms) = rt.block_on(tcp::throughput(&p));
        tcp_rows.push((p.name, mbps, cpu_ms));
    }
    let _ = tcp_backend.kill();
    let _ = tcp_backend.wait();
    let mut out = String::new();
    if !rows.is_empty() {
        let nginx = rows[0].1;
        let haproxy = rows[1].1;
        out.push_str(&format!("| proxy | CPU µs/HTTP req | vs nginx | vs HAProxy | req/s | p50 / p99 µs at {tail_rate:.0} req/s (median of {TAIL_ROUNDS}) | p99 vs nginx | CPU µs/WS echo | vs nginx | vs HAProxy | KiB/idle WS ({IDLE_CONNS}) | vs nginx | vs HAProxy | RSS after close / before |\n"));
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        // Columns a row has no figure for (the direct row has no proxy) show a dash.
        let fig = |v: f64, digits: usize| {
            if v > 0.0 {
                format!("{v:.digits$}")
            } else {
                "-".into()
            }
        };
        let rat = |a: f64, b: f64| if a > 0.0 { ratio(a, b) } else { "-".into() };
        for (name, r) in &rows {
            let rss = if r.rss_before_kib > 0.0 {
                format!(
                    "{:.2} ({:.1} / {:.1} MiB)",
                    r.rss_after_close_kib / r.rss_before_kib,
                    r.rss_after_close_kib / 1024.0,
                    r.rss_before_kib / 1024.0
                )
            } else {
                "-".into()
            };
            let failed = if r.tail.failed > 0 {
                format!(" ({} failed)", r.tail.failed)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "| {name} | {} | {} | {} | {:.0} | {:.0} / {:.0}{failed} | {} | {} | {} | {} | {} | {} | {} | {rss} |\n",
                fig(r.us_per_req, 1),
                rat(r.us_per_req, nginx.us_per_req),
                rat(r.us_per_req, haproxy.us_per_req),
                r.rps,
                r.tail.p50,
                r.tail.p99,
                ratio(r.tail.p99, nginx.tail.p99),
                fig(r.us_per_echo, 1),
                rat(r.us_per_echo, nginx.us_per_echo),
                rat(r.us_per_echo, haproxy.us_per_echo),
                fig(r.kib_per_idle_ws, 2),
                rat(r.kib_per_idle_ws, nginx.kib_per_idle_ws),
                rat(r.kib_per_idle_ws, haproxy.kib_per_idle_ws),
            ));
        }
    }
    let (n_mbps, n_cpu) = (tcp_rows[0].1, tcp_rows[0].2);
    let (h_mbps, h_cpu) = (tcp_rows[1].1, tcp_rows[1].2);
    out.push_str("\n| proxy (tcp) | MB/s | vs nginx | vs HAProxy | CPU ms/MB | vs nginx | vs HAProxy |\n|---|---|---|---|---|---|---|\n");
    for (name, mbps, cpu) in &tcp_rows {
        out.push_str(&format!(
            "| {name} | {mbps:.0} | {} | {} | {cpu:.3} | {} | {} |\n",
            ratio(*mbps, n_mbps),
            ratio(*mbps, h_mbps),
            ratio(*cpu, n_cpu),
            ratio(*cpu, h_cpu)
        ));
    }
    println!("{out}");
    let _ = std::fs::write(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-compare.md"),
        &out,
    );
}
