//! CPU per new WebSocket: connect, upgrade, one echo and close, 8,000 clients 64 at a time,
//! through tideway, nginx (one worker) and HAProxy (one thread) in front of the same demo
//! backend, over ws://, wss:// with TLS session resumption, and wss:// without. The figure is
//! the proxy process tree's user+sys CPU time ([`crate::proc`]) over the WebSockets done.
//!
//! All three proxies run side by side, each with a plain and a TLS listener; one load runs at a
//! time. A round measures every (scheme, proxy) pair once, starting with a different proxy each
//! round, so a noisy moment of this small, shared machine falls on one round; the report gives
//! each round's figures, then per ratio the median and the range over the rounds.
//!
//! The load generator is this process: a two-thread runtime, 64 tasks each opening WebSockets
//! one after another (rustls for wss://, one client configuration per scheme: its session
//! cache gives resumption, or resumption is switched off). The same generator and backend serve
//! every proxy; the WebSockets per second of each run are printed so a bottleneck would show.
//!
//! The TLS version and suite each proxy negotiates with the client is printed and reported:
//! nginx 1.22 speaks TLS 1.2 by default, tideway and HAProxy TLS 1.3, and resumption costs
//! and succeeds differently in each. `NEWWS_NGINX_PROTOCOLS` sets nginx's `ssl_protocols`.
//!
//! `COMPARE_ONLY=newws cargo bench --bench compare`.

use crate::{free_port, launch, proc, Proxy};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// WebSockets per measurement, and how many are open at a time.
const CLIENTS: usize = 8000;
const CONCURRENCY: usize = 64;
/// Rounds, each measuring every proxy once per scheme (`NEWWS_ROUNDS` overrides it, for a
/// quick look or a profile).
const ROUNDS: usize = 5;

/// How the client connects.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Scheme {
    Ws,
    WssResumed,
    WssFull,
}

const SCHEMES: [Scheme; 3] = [Scheme::Ws, Scheme::WssResumed, Scheme::WssFull];

impl Scheme {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Scheme::Ws => "ws://",
            Scheme::WssResumed => "wss:// with resumption",
            Scheme::WssFull => "wss:// without resumption",
        }
    }
}

/// A proxy with its plain and its TLS port.
struct Side {
    proxy: Proxy,
    tls_port: u16,
}

/// The certificate every proxy serves (for "localhost"): its PEM files and DER.
pub(crate) struct Cert {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// Certificate then key, for HAProxy's `crt`.
    pub(crate) combined: PathBuf,
    pub(crate) der: CertificateDer<'static>,
}

pub(crate) fn make_cert(dir: &Path) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key, combined) = (
        dir.join("ws-cert.pem"),
        dir.join("ws-key.pem"),
        dir.join("ws-both.pem"),
    );
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    std::fs::write(
        &combined,
        format!("{}{}", ck.cert.pem(), ck.key_pair.serialize_pem()),
    )
    .unwrap();
    Cert {
        cert,
        key,
        combined,
        der: ck.cert.der().clone(),
    }
}

fn start_tideway(dir: &Path, backend: u16, cert: &Cert) -> Side {
    let (port, tls_port, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        "[server]\nthreads = 1\nmax_connections = 9000\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[store]\ndata_dir = \"{}\"\n[[listener]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"b\"\n[[listener]]\nlisten = \"127.0.0.1:{tls_port}\"\nupstream = \"b\"\ntls = {{ cert = {:?}, key = {:?} }}\n[upstream.b]\nbackends = [{{ addr = \"127.0.0.1:{backend}\" }}]\n",
        dir.join("data").display(),
        cert.cert,
        cert.key,
    );
    let bin = crate::tideway_bin();
    let proxy = launch(
        "tideway",
        port,
        dir,
        "tideway-newws.toml",
        config,
        &bin,
        &["run", "--config"],
    );
    crate::wait_port(tls_port);
    Side { proxy, tls_port }
}

/// nginx as in the other rows, plus an `ssl` listener (session tickets on, nginx's default).
/// nginx 1.22's default `ssl_protocols` has no TLSv1.3 (1.23.4 added it), so its handshakes
/// are TLS 1.2; `NEWWS_NGINX_PROTOCOLS` (e.g. "TLSv1.2 TLSv1.3") sets its `ssl_protocols`.
fn start_nginx(dir: &Path, backend: u16, cert: &Cert) -> Side {
    let (port, tls_port) = (free_port(), free_port());
    let protocols = std::env::var("NEWWS_NGINX_PROTOCOLS")
        .map(|p| format!("\n    ssl_protocols {p};"))
        .unwrap_or_default();
    let config = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nworker_rlimit_nofile 20000;\nevents {{ worker_connections 19000; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n  upstream b {{ server 127.0.0.1:{backend}; keepalive 64; }}\n  server {{\n    listen 127.0.0.1:{port};\n    listen 127.0.0.1:{tls_port} ssl;{protocols}\n    ssl_certificate {c};\n    ssl_certificate_key {k};\n    location / {{\n      proxy_pass http://b;\n      proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Real-IP $remote_addr;\n      proxy_read_timeout 1h;\n    }}\n  }}\n}}\n",
        d = dir.display(),
        c = cert.cert.display(),
        k = cert.key.display(),
    );
    let prefix = dir.display().to_string();
    let proxy = launch(
        "nginx",
        port,
        dir,
        "nginx-newws.conf",
        config,
        "nginx",
        &["-p", &prefix, "-c"],
    );
    crate::wait_port(tls_port);
    Side { proxy, tls_port }
}

/// HAProxy as in the other rows, plus an `ssl` bind (session tickets on, its default).
fn start_haproxy(dir: &Path, backend: u16, cert: &Cert) -> Side {
    let (port, tls_port) = (free_port(), free_port());
    let config = format!(
        "global\n  nbthread 1\n  maxconn 9000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n  timeout tunnel 1h\n  option http-keep-alive\n  option forwardfor\nfrontend f\n  bind 127.0.0.1:{port}\n  bind 127.0.0.1:{tls_port} ssl crt {}\n  default_backend b\nbackend b\n  http-reuse always\n  server s1 127.0.0.1:{backend}\n",
        cert.combined.display()
    );
    let proxy = launch(
        "haproxy",
        port,
        dir,
        "haproxy-newws.cfg",
        config,
        "haproxy",
        &["-db", "-f"],
    );
    crate::wait_port(tls_port);
    Side { proxy, tls_port }
}

/// The client's TLS configuration for `scheme` (None for ws://), trusting `cert` only.
pub(crate) fn client_tls(scheme: Scheme, cert: &Cert) -> Option<Arc<rustls::ClientConfig>> {
    if scheme == Scheme::Ws {
        return None;
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    if scheme == Scheme::WssFull {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Some(Arc::new(config))
}

/// The TLS version and cipher suite a proxy's TLS port negotiates with the bench's client
/// (`tls`), from one handshake.
async fn negotiated(port: u16, tls: Arc<rustls::ClientConfig>) -> String {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let c = s.get_ref().1;
    format!(
        "{:?} {:?}",
        c.protocol_version().unwrap(),
        c.negotiated_cipher_suite().unwrap().suite()
    )
}

/// One WebSocket on `stream`: upgrade, one echo, close (the client's close, answered).
async fn one<S>(stream: S, url: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("WebSocket handshake");
    ws.send(Message::text("hi")).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo, Message::text("hi"));
    ws.close(None).await.unwrap();
    while let Some(m) = ws.next().await {
        if m.is_err() {
            break;
        }
    }
}

/// Run the load against `port`: (proxy CPU µs per WebSocket, WebSockets per second, the share
/// of TLS handshakes that resumed).
pub(crate) async fn load(
    pid: u32,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> (f64, f64, f64) {
    let cpu0 = proc::cpu_seconds(pid);
    let start = Instant::now();
    let resumed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let tls = tls.clone();
            let resumed = resumed.clone();
            tokio::spawn(async move {
                let connector = tls.map(tokio_rustls::TlsConnector::from);
                for _ in 0..CLIENTS / CONCURRENCY {
                    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                    tcp.set_nodelay(true).unwrap();
                    match &connector {
                        None => one(tcp, &format!("ws://127.0.0.1:{port}/echo")).await,
                        Some(c) => {
                            let name = ServerName::try_from("localhost").unwrap();
                            let s = c.connect(name, tcp).await.expect("TLS handshake");
                            if s.get_ref().1.handshake_kind()
                                == Some(rustls::HandshakeKind::Resumed)
                            {
                                resumed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            one(s, &format!("wss://localhost:{port}/echo")).await
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let done = (CLIENTS / CONCURRENCY * CONCURRENCY) as f64;
    let cpu = proc::cpu_seconds(pid) - cpu0;
    let resumed = resumed.load(std::sync::atomic::Ordering::Relaxed) as f64 / done;
    (cpu / done * 1e6, done / secs, resumed)
}

/// Median and range of `v` (sorted in place).
pub(crate) fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Measure, print and return the report.
#[allow(clippy::needless_range_loop)] // `round` indexes the innermost of three levels
pub fn run(dir: &Path, backend: u16) -> String {
    let rounds = std::env::var("NEWWS_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROUNDS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cert = make_cert(dir);
    let mk = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    // Order: tideway, nginx, HAProxy.
    let sides = [
        start_tideway(&mk("newws-tideway"), backend, &cert),
        start_nginx(&mk("newws-nginx"), backend, &cert),
        start_haproxy(&mk("newws-haproxy"), backend, &cert),
    ];
    for side in &sides {
        eprintln!(
            "newws: {} pid {}, ws:// port {}, wss:// port {}",
            side.proxy.name,
            side.proxy.child.id(),
            side.proxy.port,
            side.tls_port
        );
    }
    let configs: Vec<_> = SCHEMES.iter().map(|s| client_tls(*s, &cert)).collect();
    // `NEWWS_SCHEMES` (e.g. "ws://"): only the schemes whose label it names.
    let only = std::env::var("NEWWS_SCHEMES").unwrap_or_default();
    let chosen: Vec<usize> = (0..SCHEMES.len())
        .filter(|&si| only.is_empty() || only.contains(SCHEMES[si].label()))
        .collect();
    // What each proxy negotiates with the client: a TLS 1.2 session resumes without a key
    // exchange and its ticket can be reused; a TLS 1.3 one does X25519 again and each ticket
    // is used once (the client keeps at most 8 per server name).
    let tls = configs[2].clone().unwrap();
    let versions: Vec<String> = sides
        .iter()
        .map(|side| {
            let v = rt.block_on(negotiated(side.tls_port, tls.clone()));
            format!("{} {v}", side.proxy.name)
        })
        .collect();
    eprintln!("newws: negotiated: {}", versions.join("; "));
    // Warm every proxy and scheme once (code pages, allocator arenas, a first TLS session).
    for side in &sides {
        for &si in &chosen {
            let (s, tls) = (&SCHEMES[si], &configs[si]);
            let port = if *s == Scheme::Ws {
                side.proxy.port
            } else {
                side.tls_port
            };
            rt.block_on(load(side.proxy.child.id(), port, tls.clone()));
        }
    }
    // figures[scheme][proxy][round] = µs per WebSocket.
    let mut figures = vec![vec![vec![0.0; rounds]; sides.len()]; SCHEMES.len()];
    let mut out = String::from(
        "| round | scheme | tideway µs/WS | nginx µs/WS | HAProxy µs/WS | tideway / nginx | tideway / HAProxy | WS/s (t / n / h) | resumed (t / n / h) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for round in 0..rounds {
        for &si in &chosen {
            let (scheme, tls) = (&SCHEMES[si], &configs[si]);
            let mut rates = [0.0; 3];
            let mut resumed = [0.0; 3];
            for k in 0..sides.len() {
                let pi = (round + k) % sides.len();
                let side = &sides[pi];
                let port = if *scheme == Scheme::Ws {
                    side.proxy.port
                } else {
                    side.tls_port
                };
                let (us, rate, res) = rt.block_on(load(side.proxy.child.id(), port, tls.clone()));
                figures[si][pi][round] = us;
                rates[pi] = rate;
                resumed[pi] = res;
            }
            let f = |p: usize| figures[si][p][round];
            let line = format!(
                "| {round} | {} | {:.1} | {:.1} | {:.1} | {:.3}x | {:.3}x | {:.0} / {:.0} / {:.0} | {:.2} / {:.2} / {:.2} |\n",
                scheme.label(),
                f(0),
                f(1),
                f(2),
                f(0) / f(1),
                f(0) / f(2),
                rates[0],
                rates[1],
                rates[2],
                resumed[0],
                resumed[1],
                resumed[2],
            );
            eprint!("{line}");
            out.push_str(&line);
        }
    }
    out.push_str(&format!(
        "\nNegotiated with the client: {}.\n",
        versions.join("; ")
    ));
    out.push_str(&format!(
        "\nCPU per new WebSocket ({CLIENTS} clients, {CONCURRENCY} at a time), median (range) over {rounds} interleaved rounds:\n\n| scheme | tideway µs | nginx µs | HAProxy µs | tideway / nginx | tideway / HAProxy | tideway / cheaper of the two |\n|---|---|---|---|---|---|---|\n"
    ));
    for &si in &chosen {
        let scheme = &SCHEMES[si];
        let per = |p: usize| {
            let mut v = figures[si][p].clone();
            spread(&mut v)
        };
        let ratio = |by: &dyn Fn(usize) -> f64| {
            let mut v: Vec<f64> = (0..rounds).map(|r| figures[si][0][r] / by(r)).collect();
            let (m, lo, hi) = spread(&mut v);
            format!("{m:.3}x ({lo:.3}-{hi:.3})")
        };
        let (t, n, h) = (per(0), per(1), per(2));
        out.push_str(&format!(
            "| {} | {:.1} ({:.1}-{:.1}) | {:.1} ({:.1}-{:.1}) | {:.1} ({:.1}-{:.1}) | {} | {} | {} |\n",
            scheme.label(),
            t.0,
            t.1,
            t.2,
            n.0,
            n.1,
            n.2,
            h.0,
            h.1,
            h.2,
            ratio(&|r| figures[si][1][r]),
            ratio(&|r| figures[si][2][r]),
            ratio(&|r| figures[si][1][r].min(figures[si][2][r])),
        ));
    }
    out
}
