//! CPU per WebSocket opened over HTTP/2 (RFC 8441, extended CONNECT) against one opened over
//! HTTP/1.1 wss://: each open is the upgrade, one echo and a close (the client's close answered
//! by the server's), 8,000 of them from 64 client tasks, as in the `newws` row. Three ways:
//! - `wss://`: HTTP/1.1 over a new TLS connection each, with TLS resumption (the `newws` row's
//!   wss path, [`crate::newws::load`]);
//! - `h2, held`: each task opens one HTTP/2 connection and opens its 125 WebSockets one after
//!   another as streams on it (the reconnect RFC 8441 makes cheap: no new TCP or TLS
//!   handshake); the 64 connections' setup is inside the measured time;
//! - `h2, new`: a new TLS (resumed) and HTTP/2 connection for each WebSocket.
//!
//! The client is [`crate::h2client`] (the `h2` crate). nginx, HAProxy and tideway are those of
//! the `h2` row ([`crate::h2`]), side by side, one load at a time, each round starting with
//! another proxy. nginx does not implement RFC 8441 (its `wss://` figure is given for
//! reference); tideway is measured over h2 only when a probe opens a WebSocket through it,
//! otherwise the report says why.
//!
//! `COMPARE_ONLY=h2ws cargo bench --bench compare` (`H2WS_ROUNDS` sets the rounds).

use crate::h2::{env_count, load_average, median_range};
use crate::newws::{client_tls, load, make_cert, Scheme};
use crate::{h2client, proc, Proxy};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// WebSockets per measurement, and how many client tasks open them (the `newws` row's).
const CLIENTS: usize = 8000;
const CONCURRENCY: usize = 64;
const ROUNDS: usize = 5;

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Wss,
    H2Held,
    H2New,
}

const WAYS: [Way; 3] = [Way::Wss, Way::H2Held, Way::H2New];

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Wss => "wss:// (HTTP/1.1, resumed TLS each)",
            Way::H2Held => "h2, streams on 64 held connections",
            Way::H2New => "h2, a new (resumed) connection each",
        }
    }
}

/// The h2 load against `port`: (proxy CPU µs per WebSocket, WebSockets per second).
async fn load_h2(
    pid: u32,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    held: bool,
) -> Result<(f64, f64), String> {
    let cpu0 = proc::cpu_seconds(pid);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut conn = None;
                for _ in 0..CLIENTS / CONCURRENCY {
                    let send = match (&conn, held) {
                        (Some(send), true) => send,
                        _ => conn.insert(h2client::connect(port, tls.clone()).await?),
                    };
                    h2client::websocket(send, port).await?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap()?;
    }
    let secs = start.elapsed().as_secs_f64();
    let done = (CLIENTS / CONCURRENCY * CONCURRENCY) as f64;
    let cpu = proc::cpu_seconds(pid) - cpu0;
    Ok((cpu / done * 1e6, done / secs))
}

/// Measure, print and return the report.
#[allow(clippy::needless_range_loop)] // `round` indexes the innermost of three levels
pub fn run(dir: &Path, backend: u16) -> String {
    let rounds = env_count("H2WS_ROUNDS", ROUNDS);
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
    let proxies: [Proxy; 3] = [
        crate::h2::start_nginx(&mk("h2ws-nginx"), backend, &cert),
        crate::h2::start_haproxy(&mk("h2ws-haproxy"), backend, &cert),
        crate::h2::start_tideway(&mk("h2ws-tideway"), backend, &cert),
    ];
    let wss = client_tls(Scheme::WssResumed, &cert).unwrap();
    let h2 = h2client::h2_tls(&wss);
    // Which (way, proxy) pairs run: nginx has no RFC 8441; tideway over h2 if a probe passes.
    let mut notes = String::new();
    let mut runs = vec![[true; 3]; WAYS.len()];
    for (w, way) in WAYS.iter().enumerate() {
        if *way == Way::Wss {
            continue;
        }
        runs[w][0] = false;
        for (i, p) in proxies.iter().enumerate().skip(1) {
            let probe = rt.block_on(async {
                let send = h2client::connect(p.port, h2.clone()).await?;
                h2client::websocket(&send, p.port).await
            });
            if let Err(e) = probe {
                runs[w][i] = false;
                if *way == Way::H2Held {
                    eprintln!("h2ws: {} not measured over h2: {e}", p.name);
                    notes.push_str(&format!(
                        "\n{} was not measured over h2: a probe WebSocket (extended CONNECT) failed: {e}\n",
                        p.name
                    ));
                }
            }
        }
    }
    // nginx's absence is expected (no RFC 8441); say what it answers when asked.
    let nginx = rt.block_on(h2client::connect(proxies[0].port, h2.clone()));
    notes.push_str(&format!(
        "\nnginx over h2 (not measured): {}\n",
        nginx
            .err()
            .unwrap_or_else(|| "announces extended CONNECT".into())
    ));
    let measure = |w: usize, p: &Proxy| -> Result<(f64, f64), String> {
        let pid = p.child.id();
        match WAYS[w] {
            Way::Wss => {
                let (us, rate, _) = rt.block_on(load(pid, p.port, Some(wss.clone())));
                Ok((us, rate))
            }
            Way::H2Held => rt.block_on(load_h2(pid, p.port, h2.clone(), true)),
            Way::H2New => rt.block_on(load_h2(pid, p.port, h2.clone(), false)),
        }
    };
    for (i, p) in proxies.iter().enumerate() {
        eprintln!("h2ws: {} pid {}, port {}", p.name, p.child.id(), p.port);
        for w in 0..WAYS.len() {
            if runs[w][i] {
                if let Err(e) = measure(w, p) {
                    eprintln!("h2ws: {} warm-up, {}: {e}", p.name, WAYS[w].label());
                }
            }
        }
    }
    // us[way][proxy][round]
    let mut us = vec![vec![vec![None; rounds]; 3]; WAYS.len()];
    let mut out = String::from(
        "| round | way | nginx µs/WS | HAProxy µs/WS | tideway µs/WS | WS/s (n / h / t) | load average |\n|---|---|---|---|---|---|---|\n",
    );
    for round in 0..rounds {
        for (w, way) in WAYS.iter().enumerate() {
            let mut rates = [0.0; 3];
            let load = load_average();
            for k in 0..proxies.len() {
                let i = (round + k) % proxies.len();
                if !runs[w][i] {
                    continue;
                }
                match measure(w, &proxies[i]) {
                    Ok((cpu, rate)) => {
                        us[w][i][round] = Some(cpu);
                        rates[i] = rate;
                    }
                    Err(e) => {
                        eprintln!(
                            "h2ws: round {round}, {}, {}: {e}",
                            proxies[i].name,
                            way.label()
                        );
                        notes.push_str(&format!(
                            "\nround {round}, {}, {}: refused: {e}\n",
                            proxies[i].name,
                            way.label()
                        ));
                    }
                }
            }
            let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            let line = format!(
                "| {round} | {} | {} | {} | {} | {:.0} / {:.0} / {:.0} | {load:.1} |\n",
                way.label(),
                cell(us[w][0][round]),
                cell(us[w][1][round]),
                cell(us[w][2][round]),
                rates[0],
                rates[1],
                rates[2],
            );
            eprint!("{line}");
            out.push_str(&line);
        }
    }
    out.push_str(&format!(
        "\nCPU µs per WebSocket open (upgrade, one echo, close; {CLIENTS} from {CONCURRENCY} tasks), median (range) over {rounds} interleaved rounds; per-round ratios to the same proxy's wss:// open:\n\n| way | nginx µs | HAProxy µs | tideway µs | HAProxy / its wss:// | tideway / its wss:// | tideway / HAProxy |\n|---|---|---|---|---|---|---|\n"
    ));
    let clean = |w: usize, i: usize| -> Vec<f64> { us[w][i].iter().flatten().copied().collect() };
    let ratios = |wa: usize, ia: usize, wb: usize, ib: usize| -> Vec<f64> {
        (0..rounds)
            .filter_map(|r| Some(us[wa][ia][r]? / us[wb][ib][r]?))
            .collect()
    };
    for (w, way) in WAYS.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            way.label(),
            median_range(&clean(w, 0), 1),
            median_range(&clean(w, 1), 1),
            median_range(&clean(w, 2), 1),
            median_range(&ratios(w, 1, 0, 1), 3),
            median_range(&ratios(w, 2, 0, 2), 3),
            median_range(&ratios(w, 2, w, 1), 3),
        ));
    }
    out.push_str(&notes);
    out
}
