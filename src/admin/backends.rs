//! Membership endpoints: registration with TTL and heartbeats, deregistration (drain, then
//! remove), state and weight toggles, and drain-and-wait.
//!
//! Every write goes to the controller as a diff and is answered only after the resulting
//! snapshot is published. A refused request changes nothing.

use super::{caller, etcd_write, require_admin, AdminState, ApiError, Role};
use crate::config::{parse_duration, validate_id, DEFAULT_WEIGHT};
use crate::pool::{BackendSpec, Diff, PoolError, Source, State};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Registration TTL when none is given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Longest `drain?wait=`.
pub const MAX_DRAIN_WAIT: Duration = Duration::from_secs(3600);

type St = AxState<Arc<AdminState>>;

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        let status = match e {
            PoolError::UnknownUpstream(_) | PoolError::UnknownBackend { .. } => {
                StatusCode::NOT_FOUND
            }
            PoolError::Conflict { .. } | PoolError::OtherSource { .. } => StatusCode::CONFLICT,
            PoolError::InvalidWeight => StatusCode::BAD_REQUEST,
            PoolError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| ApiError(e.status(), format!("cannot read body: {}", e.body_text())))
}

fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    serde_json::from_slice(&body_bytes(body)?).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Ttl {
    Seconds(u64),
    Text(String),
}

impl Ttl {
    fn duration(&self) -> Result<Duration, ApiError> {
        let d = match self {
            Ttl::Seconds(s) => Duration::from_secs(*s),
            Ttl::Text(t) => parse_duration(t).map_err(bad)?,
        };
        if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) {
            return Err(bad("ttl must be between 1s and 24h"));
        }
        Ok(d)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    addr: String,
    weight: Option<u32>,
    id: Option<String>,
    ttl: Option<Ttl>,
}

/// The register token may only touch backends registered over HTTP.
fn check_own(s: &AdminState, role: Role, upstream: &str, id: &str) -> Result<(), ApiError> {
    if role == Role::Admin {
        return Ok(());
    }
    let snap = s.pool.snapshot();
    let up = snap
        .upstream(upstream)
        .ok_or_else(|| ApiError::from(PoolError::UnknownUpstream(upstream.into())))?;
    match up.backend(id) {
        Some(b) if b.source != Source::Static => Ok(()),
        Some(_) => Err(ApiError(
            StatusCode::FORBIDDEN,
            "the register token may only manage backends registered over HTTP".into(),
        )),
        None => Err(PoolError::UnknownBackend {
            upstream: upstream.into(),
            id: id.into(),
        }
        .into()),
    }
}

/// 404 unless the backend exists in this instance's pool.
fn known(s: &AdminState, upstream: &str, id: &str) -> Result<(), ApiError> {
    let snap = s.pool.snapshot();
    let up = snap
        .upstream(upstream)
        .ok_or_else(|| ApiError::from(PoolError::UnknownUpstream(upstream.into())))?;
    match up.backend(id) {
        Some(_) => Ok(()),
        None => Err(PoolError::UnknownBackend {
            upstream: upstream.into(),
            id: id.into(),
        }
        .into()),
    }
}

/// `POST /v1/upstreams/{u}/backends`
pub async fn register(
    AxState(s): St,
    Path(u): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let role = caller(&s, &headers)?;
    let req: Register = json_body(body)?;
    let addr: SocketAddr = req
        .addr
        .parse()
        .map_err(|_| bad(format!("invalid addr {:?}; expected ip:port", req.addr)))?;
    let id = req.id.unwrap_or_else(|| addr.to_string());
    validate_id(&id).map_err(bad)?;
    let ttl = req.ttl.as_ref().map_or(Ok(DEFAULT_TTL), Ttl::duration)?;
    let weight = req.weight.unwrap_or(DEFAULT_WEIGHT);
    let existed = s
        .pool
        .snapshot()
        .upstream(&u)
        .and_then(|up| up.backend(&id).map(|b| b.source));
    if role == Role::Register && existed.is_some_and(|src| src == Source::Static) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "the register token may only manage backends registered over HTTP".into(),
        ));
    }
    if let Some(w) = &s.etcd {
        let snap = s.pool.snapshot();
        let up = snap
            .upstream(&u)
            .ok_or_else(|| ApiError::from(PoolError::UnknownUpstream(u.clone())))?;
        match up.backend(&id) {
            Some(b) if b.addr != addr => {
                return Err(PoolError::Conflict {
                    id: id.clone(),
                    existing: b.addr.to_string(),
                }
                .into())
            }
            Some(b) if b.source == Source::Static => {
                return Err(PoolError::OtherSource {
                    id: id.clone(),
                    origin: b.source,
                }
                .into())
            }
            _ => {}
        }
        w.register(&u, &id, addr, weight, ttl).await?;
        etcd_write::until_applied(&s.pool, |snap| {
            snap.upstream(&u)
                .and_then(|up| up.backend(&id))
                .is_some_and(|b| b.addr == addr && b.weight == weight)
        })
        .await?;
    } else {
        s.pool
            .apply(Diff::Add {
                upstream: u.clone(),
                backend: BackendSpec {
                    id: id.as_str().into(),
                    addr,
                    weight,
                    max_conns: 0,
                    source: Source::Http,
                },
                ttl: Some(ttl),
            })
            .await?;
    }
    let status = if existed.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = serde_json::json!({
        "id": id, "upstream": u, "addr": addr.to_string(), "weight": weight,
        "ttl_ms": ttl.as_millis() as u64,
    });
    Ok((status, Json(body)).into_response())
}

/// `PUT /v1/upstreams/{u}/backends/{id}/heartbeat`
pub async fn heartbeat(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let role = caller(&s, &headers)?;
    check_own(&s, role, &u, &id)?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Hb {
        ttl: Option<Ttl>,
    }
    let bytes = body_bytes(body)?;
    let ttl = if bytes.is_empty() {
        None
    } else {
        let hb: Hb = json_body(Ok(bytes))?;
        hb.ttl.as_ref().map(Ttl::duration).transpose()?
    };
    if let Some(w) = &s.etcd {
        if !w.heartbeat(&u, &id).await? {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("backend {id:?} is unknown or expired in upstream {u:?}; register again"),
            ));
        }
        return Ok(Json(serde_json::json!({ "id": id })).into_response());
    }
    let snap = s.pool.snapshot();
    let live = snap
        .upstream(&u)
        .and_then(|up| up.backend(&id))
        .map(|b| b.live.clone())
        .filter(|l| l.expires_in_ms() != Some(0));
    let Some(live) = live else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("backend {id:?} is unknown or expired in upstream {u:?}; register again"),
        ));
    };
    let ttl = ttl.or(live.ttl()).unwrap_or(DEFAULT_TTL);
    s.pool
        .apply(Diff::Heartbeat {
            upstream: u,
            id: id.as_str().into(),
            ttl,
        })
        .await?;
    Ok(Json(serde_json::json!({ "id": id, "ttl_ms": ttl.as_millis() as u64 })).into_response())
}

/// `DELETE /v1/upstreams/{u}/backends/{id}`: drain, then remove.
pub async fn deregister(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let role = caller(&s, &headers)?;
    check_own(&s, role, &u, &id)?;
    let from_etcd = s
        .pool
        .snapshot()
        .upstream(&u)
        .and_then(|up| up.backend(&id))
        .is_some_and(|b| b.source == Source::Etcd);
    if let (Some(w), true) = (&s.etcd, from_etcd) {
        w.deregister(&u, &id).await?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "id": id, "state": "draining" })),
        )
            .into_response());
    }
    s.pool
        .apply(Diff::Retire {
            upstream: u,
            id: id.as_str().into(),
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id, "state": "draining" })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetState {
    state: String,
}

/// `POST /v1/upstreams/{u}/backends/{id}/state`
pub async fn set_state(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&s, &headers)?;
    let req: SetState = json_body(body)?;
    let state: State = req.state.parse().map_err(bad)?;
    toggle(&s, &u, &id, Some(state), None).await?;
    Ok(Json(serde_json::json!({ "id": id, "state": state })).into_response())
}

/// Apply an operator toggle: through etcd when configured (every instance applies it; answered
/// once this one has), else to the local pool.
async fn toggle(
    s: &AdminState,
    u: &str,
    id: &str,
    state: Option<State>,
    weight: Option<u32>,
) -> Result<(), ApiError> {
    if weight.is_some_and(|w| !(1..=crate::config::MAX_WEIGHT).contains(&w)) {
        return Err(PoolError::InvalidWeight.into());
    }
    if let Some(w) = &s.etcd {
        known(s, u, id)?;
        w.toggle(u, id, state, weight).await?;
        return etcd_write::until_applied(&s.pool, |snap| {
            snap.upstream(u)
                .and_then(|up| up.backend(id))
                .is_some_and(|b| {
                    state.is_none_or(|st| b.state == st) && weight.is_none_or(|w| b.weight == w)
                })
        })
        .await;
    }
    if let Some(state) = state {
        s.pool
            .apply(Diff::SetState {
                upstream: u.into(),
                id: id.into(),
                state,
            })
            .await?;
    }
    if let Some(weight) = weight {
        s.pool
            .apply(Diff::SetWeight {
                upstream: u.into(),
                id: id.into(),
                weight,
            })
            .await?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetWeight {
    weight: u32,
}

/// `PATCH /v1/upstreams/{u}/backends/{id}`
pub async fn set_weight(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&s, &headers)?;
    let req: SetWeight = json_body(body)?;
    toggle(&s, &u, &id, None, Some(req.weight)).await?;
    Ok(Json(serde_json::json!({ "id": id, "weight": req.weight })).into_response())
}

#[derive(Deserialize)]
pub struct DrainQuery {
    wait: Option<String>,
}

/// `POST /v1/upstreams/{u}/backends/{id}/drain?wait=30s`: drain, and wait until the backend
/// has no connections or the wait ends.
pub async fn drain(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    Query(q): Query<DrainQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let role = caller(&s, &headers)?;
    check_own(&s, role, &u, &id)?;
    let wait = match &q.wait {
        Some(w) => parse_duration(w).map_err(bad)?,
        None => Duration::ZERO,
    };
    if wait > MAX_DRAIN_WAIT {
        return Err(bad("wait must be at most 1h"));
    }
    s.pool
        .apply(Diff::SetState {
            upstream: u.clone(),
            id: id.as_str().into(),
            state: State::Draining,
        })
        .await?;
    let live = s
        .pool
        .snapshot()
        .upstream(&u)
        .and_then(|up| up.backend(&id))
        .map(|b| b.live.clone());
    let deadline = Instant::now() + wait;
    let active = loop {
        let active = live.as_ref().map_or(0, |l| l.active());
        if active == 0 || Instant::now() >= deadline {
            break active;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok(
        Json(serde_json::json!({ "active_connections": active, "drained": active == 0 }))
            .into_response(),
    )
}
