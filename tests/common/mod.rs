//! Test harness: real demo backends on port 0 (in-process), and a real tideway process on free
//! loopback ports with its own temp data dir. Readiness is polled, never slept on.

#![allow(dead_code)]

pub mod etcd;
pub mod h2;
#[path = "../support/heads.rs"]
pub mod heads;
pub mod nginx;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const REGISTER_TOKEN: &str = "test-register-token";

/// A free loopback port for a process a test starts, which binds it a moment later.
///
/// Not a port the kernel picked with bind(0): Linux hands a port freed that way to the next
/// bind(0) or outgoing connection soon enough (a demo backend of a test running alongside
/// took one before the tideway it was meant for, and that test's request reached the
/// backend instead). Ports here come from below the kernel's ephemeral range, where bind(0)
/// and outgoing connections never land, checked free, and never handed out twice in one
/// test binary (cargo runs test binaries one at a time).
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000u16, ephemeral_start);
    assert!(
        hi > lo + 1000,
        "ephemeral range starts at {hi}: no room below it"
    );
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    let span = u32::from(hi - lo);
    let start = rand::random::<u32>() % span;
    (0..span)
        .map(|i| lo + ((start + i) % span) as u16)
        .find(|&port| {
            !handed.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        })
        .inspect(|&port| {
            handed.insert(port);
        })
        .expect("a free port below the ephemeral range")
}

/// A demo backend serving on a real socket until dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start a demo backend with `id` on port 0.
pub async fn backend(id: &str) -> Backend {
    faulty_backend(id).await.0
}

/// Start a demo backend whose faults the test controls.
pub async fn faulty_backend(id: &str) -> (Backend, std::sync::Arc<tideway::cli::demo::Faults>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let faults = std::sync::Arc::new(tideway::cli::demo::Faults::default());
    let (id2, f2) = (id.to_string(), faults.clone());
    let task = tokio::spawn(async move {
        let _ = tideway::cli::demo::serve_with(listener, id2, f2).await;
    });
    (
        Backend {
            addr,
            id: id.to_string(),
            task,
        },
        faults,
    )
}

/// For in-process tests (on paused time): the config of one listener on `listen` in front of
/// upstream "app" plus `upstreams` (TOML), and the pool controller of its upstreams, running on
/// the current runtime with its toggles in memory.
pub fn in_process_pool(
    listen: SocketAddr,
    upstreams: &str,
) -> (tideway::config::Config, tideway::pool::PoolHandle) {
    let text = format!("[[listener]]\nlisten = \"{listen}\"\nupstream = \"app\"\n\n{upstreams}\n");
    let config = tideway::config::parse(&text, std::path::Path::new("inline.toml")).unwrap();
    let pool = tideway::pool::Controller::new(
        &config.upstreams,
        tokio_util::sync::CancellationToken::new(),
        tideway::pool::toggles::Toggles::in_memory(),
    )
    .spawn();
    (config, pool)
}

/// A value from the admin /metrics text (sum of the lines that start with `prefix`).
pub async fn metric(p: &Proxy, prefix: &str) -> f64 {
    let text = reqwest::get(p.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A running tideway process.
pub struct Proxy {
    pub child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: std::path::PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.http, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }
}

/// The `[[listener]]` + `[admin]` + `[store]` head of a config; `upstreams` is appended.
/// The upstream must be called `app`.
pub async fn start_proxy(upstreams: &str) -> Proxy {
    start_proxy_with("", upstreams).await
}

/// Like [`start_proxy`], with extra keys for the `[[listener]]` table (e.g. `protocol = "tcp"`).
pub async fn start_proxy_with(listener_extra: &str, upstreams: &str) -> Proxy {
    start_proxy_full("", listener_extra, upstreams).await
}

/// Like [`start_proxy_with`], with extra keys for the `[store]` table too (e.g. `etcd = ...`).
pub async fn start_proxy_full(store_extra: &str, listener_extra: &str, upstreams: &str) -> Proxy {
    start_proxy_opts("", store_extra, listener_extra, upstreams, &[]).await
}

/// The most general start: extra keys for `[server]`, `[store]` and the listener, and extra
/// `run` arguments (e.g. `--log-format json`).
pub async fn start_proxy_opts(
    server_extra: &str,
    store_extra: &str,
    listener_extra: &str,
    upstreams: &str,
    args: &[&str],
) -> Proxy {
    start_proxy_env(
        server_extra,
        store_extra,
        listener_extra,
        upstreams,
        args,
        &[],
    )
    .await
}

/// Like [`start_proxy_opts`], with variables added to tideway's environment.
pub async fn start_proxy_env(
    server_extra: &str,
    store_extra: &str,
    listener_extra: &str,
    upstreams: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Proxy {
    start_written_env(args, env, |http, admin, dir| {
        format!(
            "[server]\nthreads = 2\nshutdown_grace = \"1s\"\n{server_extra}\n\n[admin]\nlisten = \"{admin}\"\n\n[store]\ndata_dir = \"{}\"\n{store_extra}\n\n[[listener]]\nlisten = \"{http}\"\nupstream = \"app\"\n{listener_extra}\n\n{upstreams}\n",
            dir.join("data").display()
        )
    })
    .await
}

/// Start tideway on the config `write` makes of its traffic and admin addresses and its
/// directory (free ports, a new temporary directory), with extra `run` arguments.
pub async fn start_written(
    args: &[&str],
    write: impl FnOnce(SocketAddr, SocketAddr, &std::path::Path) -> String,
) -> Proxy {
    start_written_env(args, &[], write).await
}

/// Like [`start_written`], with variables added to tideway's environment.
pub async fn start_written_env(
    args: &[&str],
    env: &[(&str, &str)],
    write: impl FnOnce(SocketAddr, SocketAddr, &std::path::Path) -> String,
) -> Proxy {
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("tideway.toml");
    std::fs::write(&config_path, write(http, admin, dir.path())).unwrap();
    let child = spawn_tideway_env(&config_path, dir.path(), args, env);
    let proxy = Proxy {
        child,
        http,
        admin,
        dir,
        config_path,
    };
    wait_ready(&proxy).await;
    proxy
}

fn spawn_tideway(config: &std::path::Path, dir: &std::path::Path) -> Child {
    spawn_tideway_with(config, dir, &[])
}

/// Start tideway on `config` with extra `run` arguments (e.g. `--upgrade`), logging to
/// `dir/tideway.log`.
pub fn spawn_tideway_with(
    config: &std::path::Path,
    dir: &std::path::Path,
    extra: &[&str],
) -> Child {
    spawn_tideway_env(config, dir, extra, &[])
}

/// The binary a `run` with `extra` arguments starts: this build's, except that with
/// `TIDEWAY_UPGRADE_FROM` set to an earlier release's binary, processes started without
/// `--upgrade` run that one. `TIDEWAY_UPGRADE_FROM=/path/to/old/tideway cargo test --test
/// upgrade` then checks a hand-over from that release to this build (by hand: CI has no
/// earlier binary, and runs the same tests with this build on both sides).
fn tideway_bin(extra: &[&str]) -> std::ffi::OsString {
    match std::env::var_os("TIDEWAY_UPGRADE_FROM") {
        Some(earlier) if !extra.contains(&"--upgrade") => earlier,
        _ => env!("CARGO_BIN_EXE_tideway").into(),
    }
}

/// Like [`spawn_tideway_with`], with variables added to tideway's environment.
pub fn spawn_tideway_env(
    config: &std::path::Path,
    dir: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tideway.log"))
        .unwrap();
    Command::new(tideway_bin(extra))
        .args(["run", "--config"])
        .arg(config)
        .args(extra)
        .env("TIDEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TIDEWAY_REGISTER_TOKEN", REGISTER_TOKEN)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("tideway binary runs")
}

impl Proxy {
    /// Kill the process and start it again on the same config and data dir.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_tideway(&self.config_path, self.dir.path());
        wait_ready(self).await;
    }

    /// An authenticated admin request.
    pub fn admin_req(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, self.admin_url(path))
            .bearer_auth(token)
    }

    /// Register `id` at `addr` in upstream `app` with the register token (TTL 1 h); asserts 201.
    pub async fn register(&self, id: &str, addr: &str) {
        let r = self
            .admin_req(
                reqwest::Method::POST,
                "/v1/upstreams/app/backends",
                REGISTER_TOKEN,
            )
            .json(&serde_json::json!({"addr": addr, "id": id, "ttl": 3600}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    /// DELETE backend `id` of upstream `app` with the admin token (drain, then remove);
    /// asserts 202.
    pub async fn deregister(&self, id: &str) {
        let r = self
            .admin_req(
                reqwest::Method::DELETE,
                &format!("/v1/upstreams/app/backends/{id}"),
                ADMIN_TOKEN,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }

    /// `POST /v1/reload` with the admin token; asserts 200 and returns the report.
    pub async fn reload(&self) -> serde_json::Value {
        let r = self
            .admin_req(reqwest::Method::POST, "/v1/reload", ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// `GET path` on the admin API with the admin token, as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        get_json(&self.admin_url(path), ADMIN_TOKEN).await
    }

    /// `GET /v1/upstreams/app` as JSON.
    pub async fn upstream_json(&self) -> serde_json::Value {
        self.admin_json("/v1/upstreams/app").await
    }

    /// Health of each backend of upstream `app`, by id.
    pub async fn health(&self) -> std::collections::BTreeMap<String, bool> {
        let v = self.upstream_json().await;
        v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["id"].as_str().unwrap().to_string(),
                    b["healthy"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    /// The pool's backends of upstream `app` as (id, addr, state, weight), sorted by id.
    pub async fn backends(&self) -> Vec<(String, String, String, u64)> {
        let v = self.upstream_json().await;
        let mut out: Vec<_> = v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["id"].as_str().unwrap().to_string(),
                    b["addr"].as_str().unwrap().to_string(),
                    b["state"].as_str().unwrap().to_string(),
                    b["weight"].as_u64().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// Poll until both the admin API and the HTTP listener accept connections.
pub async fn wait_ready(p: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = reqwest::Client::new();
    loop {
        let admin_ok = client
            .get(p.admin_url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        let http_ok = tokio::net::TcpStream::connect(p.http).await.is_ok();
        if admin_ok && http_ok {
            return;
        }
        let log = std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "tideway did not become ready; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `backends = [...]` TOML for some demo backends, with weights.
pub fn backends_toml(backends: &[(&Backend, u32)]) -> String {
    let items: Vec<String> = backends
        .iter()
        .map(|(b, w)| {
            format!(
                "{{ addr = \"{}\", weight = {w}, id = \"{}\" }}",
                b.addr, b.id
            )
        })
        .collect();
    format!("backends = [{}]", items.join(", "))
}

/// GET a URL through the proxy and return the backend id that answered.
pub async fn backend_id(client: &reqwest::Client, url: &str) -> String {
    let r = client
        .get(url)
        .send()
        .await
        .expect("request through tideway");
    assert!(r.status().is_success(), "status {}", r.status());
    let v: serde_json::Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// POST every registration of `bodies` to upstream `app` with the register token, all at once
/// (each on its own task), through `proxies` in turn; each answer's status and JSON body, in
/// the order of `bodies`.
pub async fn register_at_once(
    proxies: &[&Proxy],
    bodies: Vec<serde_json::Value>,
) -> Vec<(u16, serde_json::Value)> {
    let racing: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let req = proxies[i % proxies.len()]
                .admin_req(
                    reqwest::Method::POST,
                    "/v1/upstreams/app/backends",
                    REGISTER_TOKEN,
                )
                .json(&body);
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(serde_json::Value::Null))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for r in racing {
        answers.push(r.await.unwrap());
    }
    answers
}

/// How many racing registrations were made (`201`); asserts that each other one was refused
/// (`403`) or lost its race (`409`).
pub fn made(statuses: &[u16]) -> usize {
    assert!(
        statuses.iter().all(|s| [201, 403, 409].contains(s)),
        "{statuses:?}"
    );
    statuses.iter().filter(|s| **s == 201).count()
}

/// Wait until `child` exits, for at most `limit`, without blocking the runtime: its status,
/// or `None` if it still ran (it is then killed, so a failed test leaves no process behind).
pub async fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll `f` every 20 ms until it holds; panics after `limit`. Returns the time it took.
pub async fn wait_until<F, Fut>(limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Keep-alive HTTP load: `clients` clients each sending GETs to `url` one after another until
/// stopped, counting answered (200, whole body) and failed requests; failures are printed.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: &str, clients: usize) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.to_string());
                tokio::spawn(async move {
                    let c = reqwest::Client::new();
                    while !stop.load(Ordering::Relaxed) {
                        let served = match c.get(&url).send().await {
                            Ok(r) => {
                                let status = r.status();
                                match r.bytes().await {
                                    Ok(_) if status == 200 => true,
                                    other => {
                                        eprintln!("request failed: {status} {other:?}");
                                        false
                                    }
                                }
                            }
                            Err(e) => {
                                eprintln!("request failed: {e:?}");
                                false
                            }
                        };
                        let count = if served { &ok } else { &failed };
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Requests answered so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stop the clients; (answered, failed).
    pub async fn stop(self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The next message on `ws` must arrive within `limit` and be a close frame with code 1001
/// (going away); `what` says what was waited for.
pub async fn expect_going_away<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    limit: Duration,
    what: &str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};
    let msg = tokio::time::timeout(limit, ws.next())
        .await
        .unwrap_or_else(|_| panic!("not closed: {what}"))
        .expect("a frame, not end of stream")
        .expect("a close frame, not a reset");
    match msg {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away, "{what}"),
        other => panic!("expected close 1001 ({what}), got {other:?}"),
    }
}

/// A child process killed (and reaped) on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tideway demo` on free ports with its own data dir and no token in the environment; the
/// process and its stdout (where it prints the tour).
pub fn spawn_demo(
    dir: &std::path::Path,
    listen: u16,
    admin: u16,
) -> (Killed, std::process::ChildStdout) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .env_remove("TIDEWAY_ADMIN_TOKEN")
        .env_remove("TIDEWAY_REGISTER_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    (Killed(child), stdout)
}

/// GET `url` with a bearer token, as JSON.
pub async fn get_json(url: &str, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
