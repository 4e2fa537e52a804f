//! The PHP registration helper for Workerman apps (examples/workerman/TidewayRegistration.php),
//! driven by a plain PHP HTTP server (tests/php/worker.php) against a real tideway: it
//! registers, is kept alive by heartbeats past its TTL, renews a registration that lapsed or
//! was removed behind its back (adopting the new secret), and on SIGTERM drains, deregisters
//! and exits 0; on a reload signal (SIGUSR1, SIGUSR2: Workerman's) it ends nothing, and the
//! next process refreshes the same registration with the kept secret. Every step is observed (tideway's admin API, requests through tideway, the PHP
//! side's progress lines); nothing is slept on. The helper's own guards are driven by
//! `php -r`: a call's `timeout` bounds the whole call against an admin that trickles its answer,
//! and a secret file that is a symlink or another user's is refused.

mod common;

use common::*;
use serde_json::Value;
use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const UPSTREAM: &str = "[upstream.app]\nbalance = \"round_robin\"\n";
const ID: &str = "php-1";
/// Registration TTL the worker asks for (seconds), and its heartbeat period.
const TTL: u64 = 3;
const EVERY: &str = "1";

/// The PHP worker process and what it printed so far.
struct Php {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Drop for Php {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Php {
    /// `php tests/php/worker.php` registering with `p` as [`ID`] (any free port, advertised as
    /// bound), TTL [`TTL`], heartbeat every [`EVERY`] s, the default drain wait (30s).
    fn start(p: &Proxy) -> Php {
        Php::start_with(p, &[])
    }

    /// Like [`Php::start`], with more (or overriding) environment variables.
    fn start_with(p: &Proxy, env: &[(&str, &str)]) -> Php {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/php/worker.php");
        let mut cmd = Command::new("php");
        cmd.arg(script)
            .env("WORKER_ID", ID)
            .env("WORKER_PORT", "0")
            .env("TIDEWAY_ADMIN", format!("http://{}", p.admin))
            .env("TIDEWAY_REGISTER_TOKEN", REGISTER_TOKEN)
            .env("TIDEWAY_UPSTREAM", "app")
            .env("TIDEWAY_TTL", TTL.to_string())
            .env("TIDEWAY_HEARTBEAT_EVERY", EVERY)
            .env_remove("TIDEWAY_ADVERTISE")
            .env_remove("TIDEWAY_ID")
            .env_remove("TIDEWAY_WEIGHT")
            .env_remove("TIDEWAY_DRAIN_WAIT")
            .env_remove("TIDEWAY_TIMEOUT")
            .env_remove("TIDEWAY_SECRET_FILE")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = cmd.spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`php` not found: this test runs the PHP registration helper with php-cli \
                 (scripts/test.sh installs php-cli)"
            ),
            Err(e) => panic!("cannot run php: {e}"),
        };
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Php { child, out, err }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    /// Everything the worker printed, for failure messages.
    fn transcript(&self) -> String {
        format!(
            "php stdout:\n{}\nphp stderr:\n{}",
            self.lines().join("\n"),
            self.err.lock().unwrap().join("\n")
        )
    }

    /// Wait for the first line at index `from` or later that `pred` accepts; its index and text.
    async fn line_from(
        &self,
        from: usize,
        limit: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> (usize, String) {
        let start = Instant::now();
        loop {
            let found = self
                .lines()
                .into_iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| pred(l));
            if let Some(hit) = found {
                return hit;
            }
            assert!(
                start.elapsed() < limit,
                "PHP worker did not print {what} within {limit:?}\n{}",
                self.transcript()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait for the worker to exit; its exit code.
    async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < limit,
                "PHP worker did not exit within {limit:?}\n{}",
                self.transcript()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The worker's bound (and advertised) address, once it listens and said how it stops.
    async fn listening(&self) -> String {
        let (_, l) = self
            .line_from(0, Duration::from_secs(10), "listening", |l| {
                l.starts_with("listening ")
            })
            .await;
        let (_, how) = self
            .line_from(0, Duration::from_secs(10), "stop-on", |l| {
                l.starts_with("stop-on ")
            })
            .await;
        assert_eq!(
            how,
            "stop-on sigterm",
            "the PHP worker needs the pcntl extension to stop on SIGTERM (Debian's php-cli has \
             it built in)\n{}",
            self.transcript()
        );
        l["listening ".len()..].to_string()
    }
}

fn signal(pid: &str, sig: &str) {
    let status = Command::new("kill").args([sig, pid]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// Backend [`ID`] of upstream `app` as tideway shows it, if present.
async fn php_backend(p: &Proxy) -> Option<Value> {
    p.upstream_json().await["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == ID)
        .cloned()
}

/// After lines `mark`: a heartbeat answered 404 within `wait`, then a new registration (201,
/// a new secret), the backend active again at `addr`, and heartbeats answered 200 with the
/// new secret.
async fn renewed(p: &Proxy, php: &Php, addr: &str, mark: usize, wait: Duration, what: &str) {
    let (at, _) = php
        .line_from(mark, wait, "heartbeat 404", heartbeat(404))
        .await;
    let (at, again) = php
        .line_from(at, Duration::from_secs(5), "registered again", |l| {
            l.starts_with("registered ")
        })
        .await;
    assert_eq!(again, format!("registered {ID} 201 new-secret"));
    until_active(p, php, addr, &format!("{what} backend active")).await;
    php.line_from(at, Duration::from_secs(5), "heartbeat 200", heartbeat(200))
        .await;
}

/// Poll (every 20 ms) until `f` holds; panics after `limit` with `what` and the transcripts.
async fn until<F, Fut>(p: &Proxy, php: &Php, limit: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        if start.elapsed() >= limit {
            let log = std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap_or_default();
            panic!(
                "{what}: not within {limit:?}\ntideway: {}\n{}\ntideway log:\n{log}",
                p.upstream_json().await,
                php.transcript()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Poll until backend [`ID`] is in the pool, active, at `addr`.
async fn until_active(p: &Proxy, php: &Php, addr: &str, what: &str) -> Duration {
    until(p, php, Duration::from_secs(10), what, || async {
        php_backend(p)
            .await
            .is_some_and(|b| b["addr"] == addr && b["state"] == "active")
    })
    .await
}

/// Poll until upstream `app` has no backends at all.
async fn until_empty(p: &Proxy, php: &Php, limit: Duration, what: &str) -> Duration {
    until(p, php, limit, what, || async {
        p.upstream_json().await["backends"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await
}

/// A GET through tideway answered by the PHP worker.
async fn served_by_php(p: &Proxy) {
    let r = reqwest::get(p.url("/"))
        .await
        .expect("request through tideway");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], ID, "{body}");
}

/// Is this a `heartbeat <status>` line with that status?
fn heartbeat(status: u16) -> impl Fn(&str) -> bool {
    move |l| l == format!("heartbeat {status}")
}

#[tokio::test]
async fn registers_heartbeats_then_drains_and_deregisters_on_sigterm() {
    let p = start_proxy(UPSTREAM).await;
    assert!(p.upstream_json().await["backends"]
        .as_array()
        .unwrap()
        .is_empty());
    let mut php = Php::start(&p);
    let addr = php.listening().await;

    // 1. Registered: in the pool, active, at the advertised address, and serving through tideway.
    let (_, reg) = php
        .line_from(0, Duration::from_secs(10), "registered", |l| {
            l.starts_with("registered ")
        })
        .await;
    assert_eq!(reg, format!("registered {ID} 201"), "{}", php.transcript());
    let registered_at = Instant::now();
    until_active(&p, &php, &addr, "registered backend active").await;
    let b = php_backend(&p).await.unwrap();
    let first_expiry = b["expires_in_ms"].as_u64().unwrap();
    assert!(first_expiry <= TTL * 1000, "{b}");
    served_by_php(&p).await;

    // 2. Heartbeats: the expiry goes back up, and the backend outlives its TTL (with room to
    // spare), present and active at every look.
    let last = Cell::new(first_expiry);
    let rose = until(
        &p,
        &php,
        Duration::from_secs(5),
        "expires_in_ms rose",
        || async {
            let b = php_backend(&p)
                .await
                .expect("registered backend still present");
            let e = b["expires_in_ms"].as_u64().unwrap();
            e > last.replace(e)
        },
    )
    .await;
    let (looks, lowest) = (Cell::new(0u32), Cell::new(u64::MAX));
    let outlived = Duration::from_millis(TTL * 1000 + 1500);
    until(
        &p,
        &php,
        outlived + Duration::from_secs(5),
        "outlived its TTL",
        || async {
            let b = php_backend(&p)
                .await
                .expect("kept alive by heartbeats, the backend never leaves the pool");
            assert_eq!(b["state"], "active", "{b}");
            lowest.set(lowest.get().min(b["expires_in_ms"].as_u64().unwrap()));
            looks.set(looks.get() + 1);
            registered_at.elapsed() > outlived
        },
    )
    .await;
    let (looks, lowest) = (looks.get(), lowest.get());
    assert!(
        lowest > 0,
        "the registration came close to lapsing: {lowest} ms"
    );
    let beats = php.lines().iter().filter(|l| heartbeat(200)(l)).count();
    assert!(
        beats >= 3,
        "heartbeats answered 200: {beats}\n{}",
        php.transcript()
    );
    assert!(
        !php.lines().iter().any(|l| l.starts_with("lapsed")),
        "{}",
        php.transcript()
    );
    served_by_php(&p).await;
    println!(
        "registered; expiry rose after {rose:?}; present at all {looks} looks over {:?} \
         (TTL {TTL}s), lowest expires_in_ms {lowest}; {beats} heartbeats answered 200",
        registered_at.elapsed()
    );

    // 3. SIGTERM: drain (nothing held, so no waiting out the 30s), deregister, exit 0, gone.
    let before = php.lines().len();
    let term = Instant::now();
    signal(&php.pid(), "-TERM");
    let (_, drained) = php
        .line_from(before, Duration::from_secs(10), "drained", |l| {
            l.starts_with("drained ") || l.starts_with("drain_failed")
        })
        .await;
    let answer: Value = serde_json::from_str(drained.trim_start_matches("drained "))
        .unwrap_or_else(|e| panic!("{drained:?}: {e}\n{}", php.transcript()));
    assert_eq!(answer["drained"], true, "{answer}");
    assert_eq!(answer["active_connections"], 0, "{answer}");
    php.line_from(before, Duration::from_secs(10), "deregistered 202", |l| {
        l == "deregistered 202"
    })
    .await;
    assert_eq!(php.exit_code(Duration::from_secs(10)).await, Some(0));
    let exited = term.elapsed();
    let gone = until_empty(
        &p,
        &php,
        Duration::from_secs(10),
        "deregistered backend gone",
    )
    .await;
    let r = reqwest::get(p.url("/")).await.expect("tideway answers");
    assert!(
        !r.status().is_success(),
        "no backend left, yet {}",
        r.status()
    );
    println!(
        "SIGTERM: {drained}; exited 0 after {exited:?}; pool empty {gone:?} later; \
         request now {}",
        r.status()
    );
}

#[tokio::test]
async fn a_lapsed_or_removed_registration_is_renewed() {
    let p = start_proxy(UPSTREAM).await;
    let mut php = Php::start(&p);
    let addr = php.listening().await;
    php.line_from(0, Duration::from_secs(10), "registered", |l| {
        l == format!("registered {ID} 201")
    })
    .await;
    until_active(&p, &php, &addr, "registered backend active").await;

    // Removed behind its back (admin token): the next heartbeat is answered 404, and the helper
    // registers again with the same id and address, adopting the new secret.
    let mark = php.lines().len();
    p.deregister(ID).await;
    let deleted = Instant::now();
    renewed(
        &p,
        &php,
        &addr,
        mark,
        Duration::from_secs(10),
        "re-registered",
    )
    .await;
    let back = deleted.elapsed();
    served_by_php(&p).await;
    println!("removed by the admin: registered again {back:?} later");

    // Lapsed: the worker freezes (SIGSTOP) past its TTL, tideway drops the registration; once it
    // runs again its heartbeat is answered 404 and it registers again.
    let mark = php.lines().len();
    signal(&php.pid(), "-STOP");
    let stopped = Instant::now();
    let lapsed = until_empty(
        &p,
        &php,
        Duration::from_secs(TTL + 10),
        "lapsed backend gone",
    )
    .await;
    signal(&php.pid(), "-CONT");
    renewed(&p, &php, &addr, mark, Duration::from_secs(5), "renewed").await;
    served_by_php(&p).await;
    println!(
        "frozen: registration lapsed and removed {lapsed:?} after SIGSTOP; renewed {:?} after it",
        stopped.elapsed()
    );

    // And the renewed registration is the worker's to end: drain and deregister with its secret.
    let before = php.lines().len();
    signal(&php.pid(), "-TERM");
    php.line_from(before, Duration::from_secs(10), "deregistered 202", |l| {
        l == "deregistered 202"
    })
    .await;
    assert!(
        php.lines()[before..]
            .iter()
            .any(|l| l.starts_with("drained ") && l.contains("\"drained\":true")),
        "{}",
        php.transcript()
    );
    assert_eq!(php.exit_code(Duration::from_secs(10)).await, Some(0));
    until_empty(
        &p,
        &php,
        Duration::from_secs(10),
        "deregistered backend gone",
    )
    .await;
}

#[tokio::test]
async fn a_replacement_process_takes_the_registration_over_with_the_secret_file() {
    let p = start_proxy(UPSTREAM).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("php-1.secret");
    let file_env = file.to_str().unwrap();
    let mut first = Php::start_with(&p, &[("TIDEWAY_SECRET_FILE", file_env)]);
    let addr = first.listening().await;
    first
        .line_from(0, Duration::from_secs(10), "registered", |l| {
            l == format!("registered {ID} 201")
        })
        .await;
    until_active(&p, &first, &addr, "registered backend active").await;

    // The secret is kept for the next process, readable by this user only, and printed nowhere.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "secret file mode {mode:o}");
    let secret = std::fs::read_to_string(&file).unwrap();
    assert_eq!(secret.trim().len(), 32, "a 128-bit hex secret");
    let said = first.transcript();
    assert!(
        !said.contains(secret.trim()),
        "the secret was printed:\n{said}"
    );
    assert!(
        !said.contains(REGISTER_TOKEN),
        "the token was printed:\n{said}"
    );

    // The process dies without deregistering; a new one on the same address takes over at once
    // (200: the same registration, proven by the kept secret), well before the TTL would end.
    signal(&first.pid(), "-KILL");
    first.exit_code(Duration::from_secs(5)).await;
    let port = addr.rsplit(':').next().unwrap().to_string();
    let second = Php::start_with(
        &p,
        &[("TIDEWAY_SECRET_FILE", file_env), ("WORKER_PORT", &port)],
    );
    assert_eq!(second.listening().await, addr);
    second
        .line_from(0, Duration::from_secs(10), "took over", |l| {
            l.starts_with("registered") || l.starts_with("register_failed")
        })
        .await;
    assert_eq!(
        second.lines().iter().find(|l| l.starts_with("regist")),
        Some(&format!("registered {ID} 200")),
        "{}",
        second.transcript()
    );
    until_active(&p, &second, &addr, "taken-over backend active").await;
    second
        .line_from(0, Duration::from_secs(5), "heartbeat 200", heartbeat(200))
        .await;
    served_by_php(&p).await;

    // It ends the registration as its own; a clean deregistration removes the secret file.
    signal(&second.pid(), "-TERM");
    second
        .line_from(0, Duration::from_secs(10), "deregistered 202", |l| {
            l == "deregistered 202"
        })
        .await;
    let mut second = second;
    assert_eq!(second.exit_code(Duration::from_secs(10)).await, Some(0));
    until_empty(
        &p,
        &second,
        Duration::from_secs(10),
        "deregistered backend gone",
    )
    .await;
    assert!(!file.exists(), "secret file left after deregistration");
}

/// Workerman's `reload` (SIGUSR1) and `reload -g` (SIGUSR2), as the helper sees them in a
/// worker process: onWorkerReload, then onWorkerStop. The registration is neither drained nor
/// deregistered, the secret file stays, and the next process on the address refreshes the same
/// registration (200; the bug was a 403, "not made with this secret"). Only a stop drains.
async fn a_reload_keeps_the_registration(sig: &str) {
    let p = start_proxy(UPSTREAM).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("php-1.secret");
    let file_env = file.to_str().unwrap();
    let mut old = Php::start_with(&p, &[("TIDEWAY_SECRET_FILE", file_env)]);
    let addr = old.listening().await;
    old.line_from(0, Duration::from_secs(10), "registered", |l| {
        l == format!("registered {ID} 201")
    })
    .await;
    until_active(&p, &old, &addr, "registered backend active").await;
    let secret = std::fs::read_to_string(&file).unwrap();

    signal(&old.pid(), sig);
    old.line_from(0, Duration::from_secs(10), "reload", |l| {
        l == format!("reload {ID} kept for the next process")
    })
    .await;
    assert_eq!(old.exit_code(Duration::from_secs(10)).await, Some(0));
    let said = old.lines();
    assert!(
        !said
            .iter()
            .any(|l| l.starts_with("drain") || l.starts_with("deregister")),
        "{sig}: a reload drained or deregistered\n{}",
        old.transcript()
    );
    let kept = php_backend(&p).await.expect("still registered");
    assert_eq!(kept["state"], "active", "{kept}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), secret);

    let port = addr.rsplit(':').next().unwrap().to_string();
    let mut new = Php::start_with(
        &p,
        &[("TIDEWAY_SECRET_FILE", file_env), ("WORKER_PORT", &port)],
    );
    assert_eq!(new.listening().await, addr);
    new.line_from(0, Duration::from_secs(10), "registered", |l| {
        l.starts_with("registered") || l.starts_with("register_failed")
    })
    .await;
    assert_eq!(
        new.lines().iter().find(|l| l.starts_with("regist")),
        Some(&format!("registered {ID} 200")),
        "{}",
        new.transcript()
    );
    new.line_from(0, Duration::from_secs(5), "heartbeat 200", heartbeat(200))
        .await;
    served_by_php(&p).await;

    // A stop drains and deregisters.
    signal(&new.pid(), "-TERM");
    new.line_from(0, Duration::from_secs(10), "deregistered 202", |l| {
        l == "deregistered 202"
    })
    .await;
    assert!(
        new.lines().iter().any(|l| l.starts_with("drained ")),
        "{}",
        new.transcript()
    );
    assert_eq!(new.exit_code(Duration::from_secs(10)).await, Some(0));
    until_empty(
        &p,
        &new,
        Duration::from_secs(10),
        "deregistered backend gone",
    )
    .await;
    assert!(!file.exists(), "secret file left after deregistration");
}

#[tokio::test]
async fn a_reload_keeps_the_registration_for_the_next_process() {
    a_reload_keeps_the_registration("-USR1").await;
}

#[tokio::test]
async fn a_graceful_reload_keeps_the_registration_for_the_next_process() {
    a_reload_keeps_the_registration("-USR2").await;
}

/// Run `code` (after the helper is required) with `php -r` and `env`; its stdout, once it
/// exited (killed and failed after 60 s), and how long it ran.
fn php_snippet(code: &str, env: &[(&str, &str)]) -> (String, Duration) {
    let helper = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/workerman/TidewayRegistration.php"
    );
    let started = Instant::now();
    let mut child = Command::new("php")
        .arg("-r")
        .arg(format!("require '{helper}';\n{code}"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("php-cli runs (scripts/test.sh installs it)");
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("php -r still running after 60 s: {:?}", out.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ran = started.elapsed();
    // The readers end at EOF, right after the exit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&out) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let text = out.lock().unwrap().join("\n");
    (format!("{text}\n{}", err.lock().unwrap().join("\n")), ran)
}

#[test]
fn the_timeout_bounds_the_whole_call_against_a_trickling_admin() {
    // A fake admin: reads the request head, then answers one byte a second.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = listener.local_addr().unwrap();
    let head = Arc::new(Mutex::new(String::new()));
    let seen = head.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(n @ 1..) => got.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        *seen.lock().unwrap() = String::from_utf8_lossy(&got).into_owned();
        let answer =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        for byte in answer {
            if conn.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let (out, ran) = php_snippet(
        r#"$r = new TidewayRegistration([
            'admin' => getenv('ADMIN'), 'token' => 'tok', 'addr' => '127.0.0.1:1', 'timeout' => 2,
            'log' => function ($e, $d) { echo "$e $d\n"; },
        ]);
        echo $r->register() ? "result ok\n" : "result failed\n";"#,
        &[("ADMIN", &format!("http://{admin}"))],
    );
    assert!(
        head.lock()
            .unwrap()
            .starts_with("POST /v1/upstreams/app/backends HTTP/1.1\r\n"),
        "the admin got the call: {:?}",
        head.lock().unwrap()
    );
    assert!(out.contains("register_failed 0 timed out"), "{out}");
    assert!(out.contains("result failed"), "{out}");
    // A correctness bound: the deadline is 2 s (a timeout per read let this call run ~70 s).
    assert!(ran < Duration::from_secs(5), "the call ran {ran:?}\n{out}");
}

#[test]
fn a_secret_file_that_is_a_symlink_or_another_users_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.secret");
    let secret = "0123456789abcdef0123456789abcdef";
    let write_0600 = |path: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, secret).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    write_0600(&good);
    let link = dir.path().join("link.secret");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let other = dir.path().join("other.secret");
    write_0600(&other);
    std::os::unix::fs::chown(&other, Some(65534), Some(65534))
        .expect("chown to uid 65534 (this test runs as root)");
    let construct = r#"try {
            new TidewayRegistration([
                'admin' => 'http://127.0.0.1:1', 'token' => 'tok', 'addr' => '127.0.0.1:1',
                'secret_file' => getenv('SECRET_FILE'),
            ]);
            echo "accepted\n";
        } catch (InvalidArgumentException $e) {
            echo 'refused: ', $e->getMessage(), "\n";
        }"#;
    let run = |path: &std::path::Path| {
        php_snippet(construct, &[("SECRET_FILE", path.to_str().unwrap())]).0
    };

    // The file itself, this user's and 0600: taken.
    let out = run(&good);
    assert!(out.starts_with("accepted"), "{out}");
    let out = run(&link);
    assert!(
        out.starts_with(&format!(
            "refused: TidewayRegistration: secret_file '{}' is a symlink; refusing it",
            link.display()
        )),
        "{out}"
    );
    let out = run(&other);
    assert!(
        out.starts_with(&format!(
            "refused: TidewayRegistration: secret_file '{}' is owned by uid 65534, not by this \
             process's user",
            other.display()
        )),
        "{out}"
    );
    for out in [run(&link), run(&other)] {
        assert!(!out.contains(secret), "the secret was printed: {out}");
    }
}
