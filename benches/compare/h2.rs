//! CPU per HTTP/2 request: h2load (Debian `nghttp2-client`), 100 clients with 10 streams each
//! (`-c100 -m10`), `GET /` over TLS, through nginx (`listen ... ssl http2`, one worker),
//! HAProxy (`bind ... ssl crt ... alpn h2,http/1.1`, one thread) and tideway (a TLS listener
//! with `http2 = true`, one worker thread), the same certificate and demo backend for all. The
//! figure is the proxy process tree's user+sys CPU time from /proc ([`crate::proc`]) over the
//! requests h2load completed.
//!
//! The three run side by side; one load runs at a time. A round measures each proxy once,
//! starting with another proxy each round, so a noisy moment of this small, shared machine
//! falls on one round. h2load's summary is checked: a run with a failed, errored or timed-out
//! request, a non-2xx status or another protocol than h2 is refused (printed, and left out of
//! the medians). tideway is measured only when a probe finds it speaking h2; otherwise the
//! report says why (h2load's own words).
//!
//! `COMPARE_ONLY=h2 cargo bench --bench compare` (`H2_ROUNDS` sets the rounds, `H2_REQUESTS`
//! the requests per run).

use crate::newws::{spread, Cert};
use crate::{free_port, launch, proc, Proxy};
use std::path::Path;
use std::process::Command;

/// h2load's clients and streams per client (the issue's `-c100 -m10`).
const CLIENTS: usize = 100;
const STREAMS: usize = 10;
/// Requests per run: a few seconds of load per proxy on this machine.
const REQUESTS: usize = 50_000;
/// Rounds, each measuring every proxy once.
const ROUNDS: usize = 5;

/// The location every proxy serves: the demo backend, with the headers the HTTP/1 rows send
/// (nginx's Upgrade mapping, so the same config also carries wss://).
fn nginx_config(dir: &Path, backend: u16, port: u16, cert: &Cert) -> String {
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nworker_rlimit_nofile 20000;\nevents {{ worker_connections 19000; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  keepalive_requests 10000000;\n  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n  upstream b {{ server 127.0.0.1:{backend}; keepalive 64; }}\n  server {{\n    listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate {c};\n    ssl_certificate_key {k};\n    location / {{\n      proxy_pass http://b;\n      proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Real-IP $remote_addr;\n      proxy_read_timeout 1h;\n    }}\n  }}\n}}\n",
        d = dir.display(),
        c = cert.cert.display(),
        k = cert.key.display(),
    )
}

/// nginx 1.22 with one `ssl http2` listener. `keepalive_requests` is raised from its 1,000 (in
/// 1.22 it also caps the requests of one HTTP/2 connection, after which nginx sends GOAWAY and
/// h2load, which does not reconnect, would count the rest as failed).
pub(crate) fn start_nginx(dir: &Path, backend: u16, cert: &Cert) -> Proxy {
    let port = free_port();
    let prefix = dir.display().to_string();
    launch(
        "nginx",
        port,
        dir,
        "nginx-h2.conf",
        nginx_config(dir, backend, port, cert),
        "nginx",
        &["-p", &prefix, "-c"],
    )
}

/// HAProxy 2.6 with one TLS bind offering h2 then http/1.1 (it announces RFC 8441 to h2
/// clients by default; `h2-workaround-bogus-websocket-clients` would turn that off).
pub(crate) fn start_haproxy(dir: &Path, backend: u16, cert: &Cert) -> Proxy {
    let port = free_port();
    let config = format!(
        "global\n  nbthread 1\n  maxconn 9000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n  timeout tunnel 1h\n  option http-keep-alive\n  option forwardfor\nfrontend f\n  bind 127.0.0.1:{port} ssl crt {} alpn h2,http/1.1\n  default_backend b\nbackend b\n  http-reuse always\n  server s1 127.0.0.1:{backend}\n",
        cert.combined.display()
    );
    launch(
        "haproxy",
        port,
        dir,
        "haproxy-h2.cfg",
        config,
        "haproxy",
        &["-db", "-f"],
    )
}

/// tideway (one worker thread) with one TLS listener, `http2 = true`.
pub(crate) fn start_tideway(dir: &Path, backend: u16, cert: &Cert) -> Proxy {
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        "[server]\nthreads = 1\nmax_connections = 9000\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[store]\ndata_dir = \"{}\"\n[[listener]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"b\"\nhttp2 = true\ntls = {{ cert = {:?}, key = {:?} }}\n[upstream.b]\nbackends = [{{ addr = \"127.0.0.1:{backend}\" }}]\n",
        dir.join("data").display(),
        cert.cert,
        cert.key,
    );
    launch(
        "tideway",
        port,
        dir,
        "tideway-h2.toml",
        config,
        &crate::tideway_bin(),
        &["run", "--config"],
    )
}

/// What h2load reported for one run.
struct Run {
    requests: u64,
    req_per_s: f64,
    /// h2load's "TLS Protocol" and "Cipher" lines.
    tls: String,
}

/// The number before `word` in `line` ("100 succeeded" -> 100).
fn count(line: &str, word: &str) -> Option<u64> {
    let words: Vec<&str> = line
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    let i = words.iter().position(|w| *w == word)?;
    words.get(i.checked_sub(1)?)?.parse().ok()
}

/// Check h2load's summary: every request done and succeeded with a 2xx, none failed, errored
/// or timed out, over h2. Err carries the lines that say otherwise (or the whole output).
fn check(text: &str, expected: usize) -> Result<Run, String> {
    let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix));
    let (Some(req), Some(status)) = (line("requests:"), line("status codes:")) else {
        return Err(format!("no summary in h2load's output:\n{text}"));
    };
    let protocol = line("Application protocol:").unwrap_or("Application protocol: none");
    let n = |l: &str, w: &str| count(l, w).unwrap_or(u64::MAX);
    let expected = expected as u64;
    let clean = n(req, "total") == expected
        && n(req, "succeeded") == expected
        && n(req, "failed") == 0
        && n(req, "errored") == 0
        && n(req, "timeout") == 0
        && n(status, "2xx") == expected
        && protocol.ends_with(" h2");
    if !clean {
        let first: Vec<&str> = text.lines().take(6).collect();
        return Err(format!(
            "{req}\n{status}\n{protocol}\n(h2load's first lines: {})",
            first.join(" | ")
        ));
    }
    let req_per_s = line("finished in")
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let tls = ["TLS Protocol:", "Cipher:"]
        .map(|p| line(p).map_or("?", |l| l[p.len()..].trim()))
        .join(" ");
    Ok(Run {
        requests: expected,
        req_per_s,
        tls,
    })
}

/// h2load with `requests` requests over `clients` clients against `p`: (CPU µs per request,
/// requests per second, the TLS version and cipher), or the reason the run is refused.
fn h2load(p: &Proxy, requests: usize, clients: usize) -> Result<(f64, f64, String), String> {
    let pid = p.child.id();
    let cpu0 = proc::cpu_seconds(pid);
    let out = Command::new("h2load")
        .args([
            &format!("-n{requests}"),
            &format!("-c{clients}"),
            &format!("-m{STREAMS}"),
            "-t1",
        ])
        .arg(format!("https://localhost:{}/", p.port))
        .output()
        .expect("h2load runs (Debian nghttp2-client)");
    let cpu = proc::cpu_seconds(pid) - cpu0;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = check(&text, requests)?;
    Ok((cpu / run.requests as f64 * 1e6, run.req_per_s, run.tls))
}

/// The 1-minute load average, from /proc/loadavg.
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// A positive number from the environment variable `name`, else `default`.
pub(crate) fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// Median and range of `v` as "m (lo-hi)", or "-" when empty.
pub(crate) fn median_range(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut v = v.to_vec();
    let (m, lo, hi) = spread(&mut v);
    format!("{m:.digits$} ({lo:.digits$}-{hi:.digits$})")
}

/// Measure, print and return the report.
pub fn run(dir: &Path, backend: u16) -> String {
    let rounds = env_count("H2_ROUNDS", ROUNDS);
    let requests = env_count("H2_REQUESTS", REQUESTS);
    let cert = crate::newws::make_cert(dir);
    let mk = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let mut proxies = vec![
        start_nginx(&mk("h2-nginx"), backend, &cert),
        start_haproxy(&mk("h2-haproxy"), backend, &cert),
    ];
    // tideway only if it answers h2: a short probe (which also warms it up).
    let tideway = start_tideway(&mk("h2-tideway"), backend, &cert);
    let mut notes = String::new();
    match h2load(&tideway, 1000, 10) {
        Ok(_) => proxies.push(tideway),
        Err(e) => {
            eprintln!("h2: tideway not measured, its probe failed:\n{e}");
            notes.push_str(&format!(
                "\ntideway was not measured: `h2load -n1000 -c10 -m{STREAMS}` against its `http2 = true` listener was refused:\n\n```\n{e}\n```\n"
            ));
        }
    }
    for p in &proxies {
        eprintln!("h2: {} pid {}, port {}", p.name, p.child.id(), p.port);
        // Warm-up: code pages, allocator arenas, the backend connections.
        match h2load(p, requests / 10, CLIENTS) {
            Ok((_, _, tls)) => notes.push_str(&format!("\n{}: {tls}\n", p.name)),
            Err(e) => eprintln!("h2: {} warm-up refused:\n{e}", p.name),
        }
    }
    let names: Vec<&str> = proxies.iter().map(|p| p.name).collect();
    // us[proxy][round]: None when the run was refused.
    let mut us = vec![vec![None; rounds]; proxies.len()];
    let mut out = format!(
        "| round | {} | req/s ({}) | load average |\n|---|{}---|---|\n",
        names
            .iter()
            .map(|n| format!("{n} µs/req"))
            .collect::<Vec<_>>()
            .join(" | "),
        names.join(" / "),
        "---|".repeat(names.len()),
    );
    for round in 0..rounds {
        let mut rates = vec![0.0; proxies.len()];
        let load = load_average();
        for k in 0..proxies.len() {
            let i = (round + k) % proxies.len();
            match h2load(&proxies[i], requests, CLIENTS) {
                Ok((cpu, rate, _)) => {
                    us[i][round] = Some(cpu);
                    rates[i] = rate;
                }
                Err(e) => {
                    eprintln!("h2: round {round}, {} refused:\n{e}", proxies[i].name);
                    notes.push_str(&format!(
                        "\nround {round}, {}: refused (h2load reported errors):\n\n```\n{e}\n```\n",
                        proxies[i].name
                    ));
                }
            }
        }
        let cell = |v: Option<f64>| v.map_or("refused".to_string(), |v| format!("{v:.2}"));
        let line = format!(
            "| {round} | {} | {} | {load:.1} |\n",
            us.iter()
                .map(|p| cell(p[round]))
                .collect::<Vec<_>>()
                .join(" | "),
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" / "),
        );
        eprint!("{line}");
        out.push_str(&line);
    }
    // Ratios per round (both runs clean), then median and range.
    let ratios = |a: usize, b: usize| -> Vec<f64> {
        (0..rounds)
            .filter_map(|r| Some(us[a][r]? / us[b][r]?))
            .collect()
    };
    out.push_str(&format!(
        "\nCPU µs per HTTP/2 request (h2load -n{requests} -c{CLIENTS} -m{STREAMS}), median (range) over the clean runs of {rounds} interleaved rounds:\n\n| proxy | clean runs | CPU µs/req | vs nginx (per round) |\n|---|---|---|---|\n"
    ));
    for (i, name) in names.iter().enumerate() {
        let clean: Vec<f64> = us[i].iter().flatten().copied().collect();
        out.push_str(&format!(
            "| {name} | {} of {rounds} | {} | {} |\n",
            clean.len(),
            median_range(&clean, 2),
            median_range(&ratios(i, 0), 3),
        ));
    }
    out.push_str(&notes);
    out
}
