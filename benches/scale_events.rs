//! Scale events with live WebSockets: tideway against nginx reloads, same machine, same run.
//! Run with `cargo bench --bench scale_events`.
//!
//! 600 WebSockets keyed by uid (1 message a second each, `tideway::cli::demo_client`) go through a
//! proxy hashing on the uid over 2 demo backends. Then 6 scale events, 3 s apart: 4 backends
//! join one by one, then 2 leave. nginx gets each as a config edit and `nginx -s reload`
//! (`hash $arg_uid consistent`), once as is and once with `worker_shutdown_timeout 10s`; tideway
//! gets registrations and DELETEs (drain) with `rebalance = { per_second = 100 }`. Reported per
//! proxy: processes and RSS at the start and the end, sessions on the backend the hash names
//! at the end, and what the clients saw (1001 closes, abrupt closes, lost messages).

#[path = "compare/proc.rs"]
mod proc;
#[path = "support.rs"]
mod support;

use support::{free_port, wait_port};

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tideway::balance::key_hash;
use tideway::balance::ring::Ring;
use tideway::cli::demo_client::{Client, Options, Report};

const SESSIONS: usize = 600;
const GAP: Duration = Duration::from_secs(3);
/// Backends in the pool after each event: +1 four times, then -1 twice.
const STEPS: [usize; 6] = [3, 4, 5, 6, 5, 4];

struct Backends {
    addrs: Vec<SocketAddr>,
    ids: Vec<String>,
}

async fn backends() -> Backends {
    let mut addrs = Vec::new();
    let mut ids = Vec::new();
    for i in 1..=6 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        let id = format!("b{i}");
        ids.push(id.clone());
        tokio::spawn(tideway::cli::demo::serve(l, id));
    }
    Backends { addrs, ids }
}

/// For each uid, whether its session sits on the backend a weight-1 ring over `ring_ids` names;
/// `shown` maps the ring's ids to the ids the backends report.
fn on_owner(client: &Client, ring_ids: &[String], shown: &[String]) -> usize {
    let ring = Ring::build(
        ring_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), 1, i as u32)),
    );
    client
        .placement()
        .iter()
        .enumerate()
        .filter(|(i, got)| {
            let owner = ring
                .walk(key_hash((i + 1).to_string().as_bytes()))
                .next()
                .unwrap();
            got.as_deref() == Some(shown[owner as usize].as_str())
        })
        .count()
}

struct Outcome {
    name: String,
    procs: (usize, usize),
    rss_mib: (f64, f64),
    placed: usize,
    report: Report,
}

fn client(port: u16) -> Client {
    Client::start(Options {
        url: format!("ws://127.0.0.1:{port}/chat"),
        connections: SESSIONS,
        key: "uid".into(),
        first_uid: 1,
        rate: 1.0,
    })
}

async fn all_open(c: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.report().open < SESSIONS {
        assert!(Instant::now() < deadline, "sessions did not open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn nginx_conf(dir: &Path, port: u16, servers: &[SocketAddr], shutdown_timeout: bool) -> String {
    let servers: String = servers
        .iter()
        .map(|a| format!("    server {a};\n"))
        .collect();
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nworker_rlimit_nofile 20000;\n{timeout}events {{ worker_connections 19000; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n  upstream chat {{\n    hash $arg_uid consistent;\n{servers}  }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://chat;\n      proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n      proxy_read_timeout 1h;\n    }}\n  }}\n}}\n",
        d = dir.display(),
        timeout = if shutdown_timeout {
            "worker_shutdown_timeout 10s;\n"
        } else {
            ""
        }
    )
}

async fn nginx(b: &Backends, shutdown_timeout: bool) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let conf = d.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(d, port, &b.addrs[..2], shutdown_timeout)).unwrap();
    let prefix = d.display().to_string();
    let mut master: Child = Command::new("nginx")
        .args(["-p", &prefix, "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx installed");
    wait_port(port);
    let c = client(port);
    all_open(&c).await;
    let pid = master.id();
    let start = (proc::processes(pid), proc::rss_kib(pid) as f64 / 1024.0);
    let mut n = 2;
    for want in STEPS {
        n = want;
        std::fs::write(&conf, nginx_conf(d, port, &b.addrs[..n], shutdown_timeout)).unwrap();
        let ok = Command::new("nginx")
            .args(["-p", &prefix, "-c"])
            .arg(&conf)
            .args(["-s", "reload"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "nginx reload");
        tokio::time::sleep(GAP).await;
    }
    if shutdown_timeout {
        // Let the last old worker reach its timeout and the clients come back.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let end = (proc::processes(pid), proc::rss_kib(pid) as f64 / 1024.0);
    let addrs: Vec<String> = b.addrs[..n].iter().map(|a| a.to_string()).collect();
    let placed = on_owner(&c, &addrs, &b.ids[..n]);
    let report = c.stop().await;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = master.wait();
    Outcome {
        name: if shutdown_timeout {
            "nginx, worker_shutdown_timeout 10s".into()
        } else {
            "nginx reload".into()
        },
        procs: (start.0, end.0),
        rss_mib: (start.1, end.1),
        placed,
        report,
    }
}

async fn tideway(b: &Backends) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, admin) = (free_port(), free_port());
    let conf = d.join("tideway.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[store]\ndata_dir = \"{}\"\n[[listener]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"chat\"\n[upstream.chat]\nbalance = \"hash\"\nhash_key = \"query:uid\"\ndrain_timeout = \"2s\"\nrebalance = {{ per_second = 100 }}\n",
            d.join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["run", "--config"])
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .env("TIDEWAY_ADMIN_TOKEN", "bench-admin")
        .env("TIDEWAY_REGISTER_TOKEN", "bench-register")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    wait_port(admin);
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{admin}/v1/upstreams/chat/backends");
    let register = |i: usize| {
        http.post(&url)
            .bearer_auth("bench-register")
            .json(&serde_json::json!({"addr": b.addrs[i].to_string(), "id": b.ids[i], "ttl": 3600}))
            .send()
    };
    for i in 0..2 {
        assert!(register(i).await.unwrap().status().is_success());
    }
    let c = client(port);
    all_open(&c).await;
    let pid = child.id();
    let start = (proc::processes(pid), proc::rss_kib(pid) as f64 / 1024.0);
    let mut n = 2;
    for want in STEPS {
        if want > n {
            assert!(register(n).await.unwrap().status().is_success());
        } else {
            let gone = http
                .delete(format!("{url}/{}", b.ids[want]))
                .bearer_auth("bench-admin")
                .send()
                .await
                .unwrap();
            assert!(gone.status().is_success());
        }
        n = want;
        tokio::time::sleep(GAP).await;
    }
    // Until every session sits where the ring says (or 20 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    while on_owner(&c, &b.ids[..n], &b.ids[..n]) < SESSIONS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = (proc::processes(pid), proc::rss_kib(pid) as f64 / 1024.0);
    let placed = on_owner(&c, &b.ids[..n], &b.ids[..n]);
    let report = c.stop().await;
    let _ = child.kill();
    let _ = child.wait();
    Outcome {
        name: "tideway, rebalance 100/s".into(),
        procs: (start.0, end.0),
        rss_mib: (start.1, end.1),
        placed,
        report,
    }
}

/// Keys the ring moves over the 6 events (tideway's ids): the fewest moves a proxy that keeps
/// every session where the hash names can make.
fn ideal_moves(ids: &[String]) -> usize {
    let owners = |n: usize| -> Vec<u32> {
        let ring = Ring::build(
            ids[..n]
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), 1, i as u32)),
        );
        (1..=SESSIONS)
            .map(|uid| {
                ring.walk(key_hash(uid.to_string().as_bytes()))
                    .next()
                    .unwrap()
            })
            .collect()
    };
    let mut n = 2;
    let mut moved = 0;
    for want in STEPS {
        let (a, b) = (owners(n), owners(want));
        moved += a.iter().zip(&b).filter(|(x, y)| x != y).count();
        n = want;
    }
    moved
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let b = backends().await;
    let rows = vec![
        nginx(&b, false).await,
        nginx(&b, true).await,
        tideway(&b).await,
    ];
    println!(
        "\n{SESSIONS} live WebSockets, 6 scale events (2 -> 6 -> 4 backends), {}s apart:\n",
        GAP.as_secs()
    );
    println!("| proxy | processes, start -> end | RSS MiB, start -> end | sessions on the backend the hash names | 1001 closes | abrupt closes | messages lost |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} -> {} | {:.1} -> {:.1} | {} of {SESSIONS} | {} | {} | {} |",
            r.name,
            r.procs.0,
            r.procs.1,
            r.rss_mib.0,
            r.rss_mib.1,
            r.placed,
            r.report.going_away_closes,
            r.report.abrupt_closes,
            r.report.lost
        );
    }
    println!(
        "\nThe ring moves {} keys over the 6 events: the fewest 1001 closes that put every session where the hash names.",
        ideal_moves(&b.ids)
    );
}
