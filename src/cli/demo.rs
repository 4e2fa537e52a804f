//! `tideway demo-backend`: the stand-in for a Workerman server in the quick start, the tests
//! and the benchmarks. It answers HTTP with its id, echoes WebSocket messages, and serves
//! `/health`.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;

/// Knobs that make a demo backend misbehave, for health-check tests.
#[derive(Debug, Default)]
pub struct Faults {
    /// Answer every HTTP request (including `/health`) with this status; 0 = behave.
    pub http_status: AtomicU16,
    /// Refuse WebSocket upgrades with 403 (plain HTTP still works).
    pub refuse_websocket: AtomicBool,
}

/// The demo backend's identity.
#[derive(Clone)]
struct Demo {
    id: Arc<str>,
    faults: Arc<Faults>,
}

/// Serve on an already bound listener until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, id: String) -> std::io::Result<()> {
    serve_with(listener, id, Arc::default()).await
}

/// [`serve`], with fault knobs.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    id: String,
    faults: Arc<Faults>,
) -> std::io::Result<()> {
    let demo = Demo {
        id: id.into(),
        faults,
    };
    let app = Router::new()
        .route("/health", get(health))
        .fallback(handle)
        .with_state(demo);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

async fn health(State(demo): State<Demo>) -> Response {
    match demo.faults.http_status.load(Ordering::Relaxed) {
        0 => "ok".into_response(),
        s => StatusCode::from_u16(s)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
    }
}

/// Largest request body the demo backend reads.
const MAX_DEMO_BODY: usize = 16 * 1024 * 1024;
/// The header a registration's secret travels in.
const SECRET: &str = crate::admin::owners::SECRET_HEADER;

async fn handle(State(demo): State<Demo>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let id = demo.id.clone();
    let is_upgrade = parts.headers.contains_key("upgrade");
    if is_upgrade && demo.faults.refuse_websocket.load(Ordering::Relaxed) {
        return StatusCode::FORBIDDEN.into_response();
    }
    if let s @ 1.. = demo.faults.http_status.load(Ordering::Relaxed) {
        return StatusCode::from_u16(s)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    if let Ok(ws) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        let mut resp = ws
            .on_upgrade(move |socket| echo(socket, id))
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&demo.id) {
            resp.headers_mut().insert("x-backend-id", v);
        }
        return resp;
    }
    let h = |headers: &HeaderMap, n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // Read (and count) the request body, as an echo server would.
    let Ok(received) = axum::body::to_bytes(body, MAX_DEMO_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let body = serde_json::json!({
        "id": &*demo.id,
        "body_len": received.len(),
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "x_forwarded_for": h(&parts.headers, "x-forwarded-for"),
        "x_real_ip": h(&parts.headers, "x-real-ip"),
        "x_forwarded_proto": h(&parts.headers, "x-forwarded-proto"),
        "x_request_id": h(&parts.headers, "x-request-id"),
    });
    let mut resp = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&demo.id) {
        resp.headers_mut().insert("x-backend-id", v);
    }
    resp
}

/// Echo every message; answer the text "id" with the backend id.
async fn echo(mut socket: WebSocket, id: Arc<str>) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) if t.as_str() == "id" => Message::Text(id.to_string().into()),
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

/// Self-registration of a demo backend with a tideway admin API.
pub struct Registration {
    pub admin: String,
    pub upstream: String,
    pub token: String,
    pub id: String,
    pub addr: SocketAddr,
    /// Where to keep the registration's secret (mode 0600), for `tideway ctl --secret-file`.
    pub secret_file: Option<std::path::PathBuf>,
}

/// Registration TTL the demo backend asks for; it heartbeats at a third of it.
pub const DEMO_TTL: std::time::Duration = std::time::Duration::from_secs(10);

impl Registration {
    fn url(&self, tail: &str) -> String {
        format!(
            "{}/v1/upstreams/{}/backends{tail}",
            self.admin.trim_end_matches('/'),
            self.upstream
        )
    }

    /// Write the secret to `secret_file`, readable by this user only: into a new file (never
    /// an existing one or a symlink's target) created 0600 beside it, then renamed over it.
    fn keep_secret(&self, secret: &str) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let Some(path) = &self.secret_file else {
            return;
        };
        let tmp = path.with_extension(format!(
            "tmp.{}.{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(secret.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "cannot write the registration secret");
        }
    }

    /// Register; returns the registration's secret.
    pub async fn register(&self, client: &reqwest::Client) -> Result<String, reqwest::Error> {
        let answer: serde_json::Value = client
            .post(self.url(""))
            .bearer_auth(&self.token)
            .json(&self.body())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let secret = answer["secret"].as_str().unwrap_or_default().to_string();
        self.keep_secret(&secret);
        tracing::info!(id = %self.id, "registered");
        Ok(secret)
    }

    fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "addr": self.addr.to_string(), "id": self.id, "ttl": DEMO_TTL.as_secs(),
        })
    }

    /// Heartbeat at a third of the TTL until `stop` completes; a lapsed registration (404) is
    /// renewed by registering again. Returns the secret in force at the end.
    pub async fn keep_alive(
        &self,
        client: &reqwest::Client,
        mut secret: String,
        stop: impl std::future::Future<Output = ()>,
    ) -> String {
        let mut stop = std::pin::pin!(stop);
        let mut beat = tokio::time::interval(DEMO_TTL / 3);
        loop {
            tokio::select! {
                () = &mut stop => return secret,
                _ = beat.tick() => {
                    let hb = client.put(self.url(&format!("/{}/heartbeat", self.id))).bearer_auth(&self.token).header(SECRET, &secret).send().await;
                    if !hb.is_ok_and(|r| r.status().is_success()) {
                        let again = client.post(self.url("")).bearer_auth(&self.token).header(SECRET, &secret).json(&self.body()).send().await;
                        // Gone for good meanwhile: a new registration, with a new secret.
                        if let Ok(r) = again {
                            if let Ok(v) = r.json::<serde_json::Value>().await {
                                if let Some(s) = v["secret"].as_str() {
                                    secret = s.to_string();
                                    self.keep_secret(&secret);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Drain (waiting up to 30 s for connections to end), then deregister.
    pub async fn leave(&self, client: &reqwest::Client, secret: &str) {
        tracing::info!(id = %self.id, "draining before exit");
        let _ = client
            .post(self.url(&format!("/{}/drain?wait=30s", self.id)))
            .bearer_auth(&self.token)
            .header(SECRET, secret)
            .send()
            .await;
        let _ = client
            .delete(self.url(&format!("/{}", self.id)))
            .bearer_auth(&self.token)
            .header(SECRET, secret)
            .send()
            .await;
        tracing::info!(id = %self.id, "deregistered");
    }

    /// Register, heartbeat until SIGTERM/SIGINT, then drain (waiting) and deregister.
    pub async fn run_until_sigterm(&self) -> Result<(), reqwest::Error> {
        use tokio::signal::unix::{signal, SignalKind};
        let client = reqwest::Client::new();
        let secret = self.register(&client).await?;
        let mut term = signal(SignalKind::terminate()).expect("signal handler");
        let mut int = signal(SignalKind::interrupt()).expect("signal handler");
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        let secret = self.keep_alive(&client, secret, stop).await;
        self.leave(&client, &secret).await;
        Ok(())
    }
}

/// Raw TCP mode: greet each connection with `{id}\n`, then echo every byte.
pub async fn serve_tcp(listener: tokio::net::TcpListener, id: String) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let greeting: Arc<[u8]> = format!("{id}\n").into_bytes().into();
    loop {
        let (mut conn, _) = listener.accept().await?;
        let greeting = greeting.clone();
        tokio::spawn(async move {
            if conn.write_all(&greeting).await.is_ok() {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
    }
}
