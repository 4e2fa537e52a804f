//! The admin listener (loopback by default).
//!
//! Endpoints:
//! - `GET /healthz`: liveness, no token.
//! - `GET /readyz`: readiness, no token: 200 once the pool is loaded (etcd listed, or the
//!   local snapshot read; at once without etcd), 503 before.
//! - `GET /metrics`: Prometheus text, no token.
//! - `GET /v1/upstreams`, `GET /v1/upstreams/{u}`: the pool, admin token.
//! - `POST /v1/upstreams/{u}/backends`: register (register or admin token; the register token
//!   within the upstream's `registration` scope). A new registration's answer carries its
//!   secret.
//! - `PUT .../backends/{id}/heartbeat`, `DELETE .../backends/{id}`, `POST .../backends/{id}/drain`:
//!   register token with the registration's secret (`X-Registration-Secret`), or admin token.
//! - `POST .../backends/{id}/state`, `PATCH .../backends/{id}`: admin token.
//! - `GET /v1/upstreams/{u}/scale`: the autoscaling signal, admin token.
//! - `POST /v1/reload`: re-read the config file and apply it (as SIGHUP), admin token.
//! - `GET /v1/routes`: every HTTP listener's routes (servers and locations), admin token.
//! - `GET /v1/history`, `GET /v1/fleet`, `GET /v1/closes`: the dashboard's last minutes of the
//!   pool, the fleet's instances, and why connections ended ([`activity`]), admin token.
//!
//! Every change (register, deregister, state, weight, drain) is written to the audit log
//! ([`audit`]). Connections are served under their own timeouts, cap and descriptor reserve
//! ([`serve`]), so the admin port cannot starve the data plane. Errors are `{"error": "..."}`
//! with a 4xx status. Membership changes go through the [`crate::registry::Registry`], which
//! checks them and writes them to the pool or etcd; this layer reads requests, checks tokens
//! and maps its errors to statuses. Imports `registry`, `pool`, `config`, `metrics`, `net`,
//! `store`, `discovery`, `nginx` and the scale signal (`scale::signal`); never `proxy` or
//! `server`.

pub mod activity;
pub mod audit;
pub mod backends;
pub mod dashboard;
pub mod history;
pub mod openapi;
pub mod owners;
pub mod serve;
pub mod token;
pub mod view;

use crate::pool::{PoolHandle, Upstream};
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use std::sync::Arc;
use token::Token;

/// Largest request body accepted (larger ones get 413).
pub const MAX_BODY: usize = 64 * 1024;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    pub pool: PoolHandle,
    pub admin_token: Token,
    pub register_token: Token,
    /// Every membership change (register, heartbeat, deregister, toggles, drain).
    pub registry: Arc<crate::registry::Registry>,
    /// Set once the pool is loaded.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// With etcd: the fleet's connection counts.
    pub fleet: Option<Arc<crate::discovery::fleet::Fleet>>,
    /// Re-reads and applies the config file (`POST /v1/reload`), when there is one.
    pub reloader: Option<Arc<dyn Reload>>,
    /// The pool's last minutes (`GET /v1/history`), filled by [`history::sampler`].
    pub history: Arc<history::History>,
}

/// What `POST /v1/reload` and `GET /v1/routes` call (implemented by `server::reload`).
pub use crate::config::reload::Reload;

/// An API error: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

/// Every error's body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

/// Who is calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Register,
}

fn caller(state: &AdminState, headers: &HeaderMap) -> Result<Role, ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))?;
    if state.admin_token.matches(given) {
        Ok(Role::Admin)
    } else if state.register_token.matches(given) {
        Ok(Role::Register)
    } else {
        Err(ApiError(StatusCode::UNAUTHORIZED, "invalid token".into()))
    }
}

fn require_admin(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    match caller(state, headers)? {
        Role::Admin => Ok(()),
        Role::Register => Err(crate::registry::RegistryError::OperatorOnly.into()),
    }
}

/// The admin API router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/reload", post(reload))
        .route("/v1/routes", get(routes))
        .route("/v1/history", get(activity::history))
        .route("/v1/fleet", get(activity::fleet))
        .route("/v1/closes", get(activity::closes))
        .route("/v1/upstreams", get(list))
        .route("/v1/upstreams/{u}", get(show))
        .route("/v1/upstreams/{u}/scale", get(scale))
        .route("/v1/upstreams/{u}/backends", post(backends::register))
        .route(
            "/v1/upstreams/{u}/backends/{id}",
            axum::routing::delete(backends::deregister).patch(backends::set_weight),
        )
        .route(
            "/v1/upstreams/{u}/backends/{id}/heartbeat",
            put(backends::heartbeat),
        )
        .route(
            "/v1/upstreams/{u}/backends/{id}/state",
            post(backends::set_state),
        )
        .route(
            "/v1/upstreams/{u}/backends/{id}/drain",
            post(backends::drain),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(json_errors))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint".into(),
            )
        })
        .with_state(Arc::new(state))
}

/// Every error is `{"error": "..."}`: an extractor's refusal (a path that is not UTF-8, a
/// query string that does not parse, a body over [`MAX_BODY`]) is plain text from axum; its
/// text becomes the message.
async fn json_errors(r: Response) -> Response {
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(r.status().is_client_error() || r.status().is_server_error()) || json {
        return r;
    }
    let status = r.status();
    let text = axum::body::to_bytes(r.into_body(), MAX_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let text = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError(status, text).into_response()
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        let status = match e {
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Taken { .. } => StatusCode::CONFLICT,
            // Busy, not refused: the same request may pass on a later try.
            StoreError::Contended { .. } => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Full { .. } => StatusCode::FORBIDDEN,
        };
        ApiError(status, e.to_string())
    }
}

/// `GET /healthz`
#[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200, description = "`{\"status\": \"ok\"}`")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[utoipa::path(post, path = "/v1/reload", tag = "operators",
    responses((status = 200, description = "`{changed, warnings}`"), (status = 400, description = "the file is refused; the running config stays", body = ErrorBody),
        (status = 409, description = "this process has no config file to reload", body = ErrorBody)),
    security(("admin" = [])))]
async fn reload(
    State(s): State<Arc<AdminState>>,
    axum::extract::ConnectInfo(remote): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&s, &headers)?;
    let Some(r) = &s.reloader else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "this process has no config file to reload".into(),
        ));
    };
    let result = r.reload().await;
    let outcome = match &result {
        Ok(report) => format!("applied: {report}"),
        Err(why) => format!("refused: {why}"),
    };
    tracing::info!(target: "tideway::audit", role = "admin", %remote, action = "reload", outcome, "admin change");
    match result {
        Ok(report) => Ok(Json(report).into_response()),
        Err(why) => Err(ApiError(StatusCode::BAD_REQUEST, why)),
    }
}

/// `GET /v1/routes`
#[utoipa::path(get, path = "/v1/routes", tag = "operators",
    responses((status = 200, description = "`{\"listeners\": [{\"listen\", \"routes\": [{server, hosts, default_server, path, upstream | return, uri, timeouts, websocket, max_body, set_header?, add_header?, access?, client_limits?, at}]}]}`: every HTTP listener's routes, in the order they are matched within their kind")),
    security(("admin" = [])))]
async fn routes(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&s, &headers)?;
    let listeners = s
        .reloader
        .as_ref()
        .map_or(serde_json::Value::Array(Vec::new()), |r| r.routes());
    Ok(Json(serde_json::json!({ "listeners": listeners })))
}

#[utoipa::path(get, path = "/readyz", tag = "probes", responses((status = 200, description = "the pool is loaded"), (status = 503, description = "not yet", body = ErrorBody)))]
async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    if s.ready.load(std::sync::atomic::Ordering::Acquire) {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pool is not loaded yet (etcd not listed, no local snapshot)".into(),
        )
        .into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "probes", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    let text = view::prometheus_text(&s.pool.snapshot(), s.fleet.as_deref());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[utoipa::path(get, path = "/v1/upstreams", tag = "operators",
    responses((status = 200, description = "`{version, upstreams}`"), (status = 401, description = "no or wrong token", body = ErrorBody)),
    security(("admin" = [])))]
async fn list(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    require_admin(&s, &headers)?;
    let snap = s.pool.snapshot();
    let ups: Vec<view::UpstreamView<'_>> = snap
        .upstreams
        .values()
        .map(|u| view::UpstreamView::from(&**u))
        .collect();
    Ok(Json(serde_json::json!({ "version": snap.version, "upstreams": ups })).into_response())
}

#[utoipa::path(get, path = "/v1/upstreams/{u}/scale", tag = "operators",
    params(("u" = String, Path, description = "upstream")),
    responses((status = 200, description = "the autoscaling signal", body = view::ScaleView), (status = 404, description = "unknown upstream", body = ErrorBody)),
    security(("admin" = [])))]
async fn scale(
    State(s): State<Arc<AdminState>>,
    Path(u): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let up = admin_upstream(&s, &headers, &u)?;
    Ok(Json(view::ScaleView::of(&up, s.fleet.as_deref())).into_response())
}

/// Upstream `u` of the current snapshot, for an admin request: 401/403 without the admin
/// token, 404 when there is no such upstream.
fn admin_upstream(s: &AdminState, headers: &HeaderMap, u: &str) -> Result<Arc<Upstream>, ApiError> {
    require_admin(s, headers)?;
    s.pool
        .snapshot()
        .upstream(u)
        .cloned()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("unknown upstream {u:?}")))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ShowQuery {
    /// `json` (default), or `nginx`: an nginx upstream block.
    #[param(pattern = "^(json|nginx)$")]
    format: Option<String>,
}

#[utoipa::path(get, path = "/v1/upstreams/{u}", tag = "operators",
    params(("u" = String, Path, description = "upstream"), ShowQuery),
    responses((status = 200, description = "the upstream and its backends (JSON), or its nginx block (`format=nginx`)",
            content(("application/json"), ("text/plain"))),
        (status = 400, description = "unknown format", body = ErrorBody),
        (status = 404, description = "unknown upstream", body = ErrorBody)),
    security(("admin" = [])))]
async fn show(
    State(s): State<Arc<AdminState>>,
    Path(u): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ShowQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let up = admin_upstream(&s, &headers, &u)?;
    match q.format.as_deref() {
        None | Some("json") => {
            let mut body = serde_json::to_value(view::UpstreamView::from(&*up))
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            if let Some(f) = &s.fleet {
                let instances = f.upstream_counts(&u);
                let total: u64 = instances.iter().map(|i| i.active_connections).sum();
                body["fleet"] =
                    serde_json::json!({ "active_connections": total, "instances": instances });
            }
            Ok(Json(body).into_response())
        }
        Some("nginx") => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            crate::nginx::export::upstream_block(&up),
        )
            .into_response()),
        Some(other) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("unknown format {other:?}; expected json or nginx"),
        )),
    }
}
