//! chromedriver and, through it, headless Chromium for a test: W3C WebDriver over HTTP, with
//! reqwest. [`Chromedriver::start`] starts both; dropping it, even when the test panics,
//! closes the session and kills the process group. Uses `free_port` of the test's `common`.

#![allow(dead_code)]

use crate::common::free_port;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the page gets to show something (Chromium on a busy machine is slow to start).
pub const PAGE_WAIT: Duration = Duration::from_secs(20);

/// chromedriver (and, through it, Chromium) for one test: on drop, even when the test panics,
/// the session is closed and the process group is killed.
pub struct Chromedriver {
    child: Child,
    port: u16,
    session: Option<String>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Chromedriver {
    /// chromedriver and a Chromium session with the usual headless flags.
    pub async fn start() -> (Chromedriver, WebDriver) {
        Chromedriver::start_with(&[]).await
    }

    /// The same, with Chromium's command line `extra` flags too.
    pub async fn start_with(extra: &[&str]) -> (Chromedriver, WebDriver) {
        for bin in ["chromium", "chromedriver"] {
            assert!(
                on_path(bin).is_some(),
                "{bin} not found: scripts/test.sh installs it (Debian packages chromium and \
                 chromium-driver)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group, so the browser it starts can be killed with it.
                .process_group(0)
                .spawn()
                .expect("chromedriver runs")
        };
        let mut driver = Chromedriver {
            child,
            port,
            session: None,
            log,
            dir,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                driver.child.try_wait().unwrap().is_none(),
                "chromedriver exited"
            );
            assert!(Instant::now() < deadline, "chromedriver did not get ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = driver.dir.path().join("profile");
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-extensions".into(),
            "--no-proxy-server".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "args": args
                    }
                }
            }
        });
        let r = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers");
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session ({status}): {v}"))
            .to_string();
        driver.session = Some(id.clone());
        let wd = WebDriver {
            http,
            base: format!("{base}/session/{id}"),
        };
        (driver, wd)
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            delete_session(self.port, &id);
        }
        let pid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            print_tail(&self.log);
        }
    }
}

/// `DELETE /session/{id}` (closes the browser), blocking: it runs in `drop`.
fn delete_session(port: u16, id: &str) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(request.as_bytes()).is_ok() {
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
    }
}

fn print_tail(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    eprintln!("--- chromedriver log (tail) ---\n{tail}");
}

/// A W3C WebDriver session.
pub struct WebDriver {
    http: reqwest::Client,
    /// `http://127.0.0.1:{port}/session/{id}`
    base: String,
}

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl WebDriver {
    /// A command: `Ok(value)`, or `Err((error code, message))`.
    pub async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (String, String)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("chromedriver answers");
        let ok = r.status().is_success();
        let v: Value = r.json().await.expect("a JSON answer");
        if ok {
            Ok(v["value"].clone())
        } else {
            Err((
                v["value"]["error"].as_str().unwrap_or("?").to_string(),
                v["value"]["message"].as_str().unwrap_or("").to_string(),
            ))
        }
    }

    pub async fn must(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.command(method, path, body).await {
            Ok(v) => v,
            Err((code, msg)) => panic!("WebDriver {path}: {code}: {msg}"),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.must(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The element matching `css` now, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let body = json!({ "using": "css selector", "value": css });
        match self
            .command(reqwest::Method::POST, "/element", Some(body))
            .await
        {
            Ok(v) => Some(
                v[ELEMENT]
                    .as_str()
                    .expect("an element reference")
                    .to_string(),
            ),
            Err((code, _)) if code == "no such element" => None,
            Err((code, msg)) => panic!("find {css}: {code}: {msg}"),
        }
    }

    /// Poll until an element matches `css`.
    pub async fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(Instant::now() < deadline, "no {css} within {PAGE_WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The rendered text of the element matching `css`, if there is one (and it did not go
    /// away in between).
    pub async fn text(&self, css: &str) -> Option<String> {
        let e = self.find(css).await?;
        match self
            .command(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
        {
            Ok(v) => Some(v.as_str().unwrap_or_default().to_string()),
            Err((code, _)) if code == "stale element reference" => None,
            Err((code, msg)) => panic!("text of {css}: {code}: {msg}"),
        }
    }

    /// Poll until the text of `css` satisfies `ok`; returns it.
    pub async fn wait_until_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PAGE_WAIT;
        let mut last = None;
        loop {
            last = self.text(css).await.or(last);
            if let Some(t) = &last {
                if ok(t) {
                    return t.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{css} not as expected within {PAGE_WAIT:?}; last text: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_text(&self, css: &str, want: &str) {
        self.wait_until_text(css, |t| t == want).await;
    }

    pub async fn click(&self, element: &str) {
        self.must(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, element: &str, text: &str) {
        self.must(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn execute(&self, script: &str) -> Value {
        self.must(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }
}
