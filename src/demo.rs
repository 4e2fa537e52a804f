//! `tideway demo-backend`: the stand-in for a Workerman server in the quick start, the tests
//! and the benchmarks. It answers HTTP with its id, echoes WebSocket messages, and serves
//! `/health`.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;

/// The demo backend's identity.
#[derive(Clone)]
struct Demo {
    id: Arc<str>,
}

/// Serve on an already bound listener until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, id: String) -> std::io::Result<()> {
    let demo = Demo { id: id.into() };
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback(handle)
        .with_state(demo);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

async fn handle(State(demo): State<Demo>, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    let id = demo.id.clone();
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
    let body = serde_json::json!({
        "id": &*demo.id,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "x_forwarded_for": h(&parts.headers, "x-forwarded-for"),
        "x_real_ip": h(&parts.headers, "x-real-ip"),
        "x_forwarded_proto": h(&parts.headers, "x-forwarded-proto"),
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

    /// Register, heartbeat until SIGTERM/SIGINT, then drain (waiting) and deregister.
    pub async fn run_until_sigterm(&self) -> Result<(), reqwest::Error> {
        use tokio::signal::unix::{signal, SignalKind};
        let client = reqwest::Client::new();
        let body = serde_json::json!({
            "addr": self.addr.to_string(), "id": self.id, "ttl": DEMO_TTL.as_secs(),
        });
        client
            .post(self.url(""))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        tracing::info!(id = %self.id, "registered");
        let mut term = signal(SignalKind::terminate()).expect("signal handler");
        let mut int = signal(SignalKind::interrupt()).expect("signal handler");
        let mut beat = tokio::time::interval(DEMO_TTL / 3);
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = beat.tick() => {
                    // A lapsed registration (404) is renewed by registering again.
                    let hb = client.put(self.url(&format!("/{}/heartbeat", self.id))).bearer_auth(&self.token).send().await;
                    if !hb.is_ok_and(|r| r.status().is_success()) {
                        let _ = client.post(self.url("")).bearer_auth(&self.token).json(&body).send().await;
                    }
                }
            }
        }
        tracing::info!(id = %self.id, "draining before exit");
        let _ = client
            .post(self.url(&format!("/{}/drain?wait=30s", self.id)))
            .bearer_auth(&self.token)
            .send()
            .await;
        let _ = client
            .delete(self.url(&format!("/{}", self.id)))
            .bearer_auth(&self.token)
            .send()
            .await;
        tracing::info!(id = %self.id, "deregistered");
        Ok(())
    }
}
