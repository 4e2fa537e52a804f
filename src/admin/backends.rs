//! Membership endpoints: registration with TTL and heartbeats, deregistration (drain, then
//! remove), state and weight toggles, and drain-and-wait.
//!
//! Every write goes to the controller as a diff and is answered only after the resulting
//! snapshot is published. A refused request changes nothing.

use super::{audit, caller, owners, require_admin, until_applied, AdminState, ApiError, Role};
use crate::config::{parse_duration, validate_id, DEFAULT_WEIGHT};
use crate::pool::{BackendSpec, Diff, PoolError, Source, State};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, Query, State as AxState};
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
            PoolError::Conflict { .. }
            | PoolError::OtherSource { .. }
            | PoolError::Decided { .. } => StatusCode::CONFLICT,
            PoolError::InvalidWeight => StatusCode::BAD_REQUEST,
            PoolError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            PoolError::NotSaved(_) => StatusCode::INTERNAL_SERVER_ERROR,
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

/// A TTL: seconds, or a duration such as `"10s"` (1 s to 24 h).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum Ttl {
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

/// A registration.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Register {
    addr: String,
    weight: Option<u32>,
    id: Option<String>,
    ttl: Option<Ttl>,
}

/// A registration's id when none is given: `ip:port` (no brackets for IPv6, which ids may not
/// hold).
fn default_id(addr: SocketAddr) -> String {
    format!("{}:{}", addr.ip(), addr.port())
}

/// The register token may only touch registrations it made: not static backends, and only
/// with the registration's secret.
async fn check_own(
    s: &AdminState,
    role: Role,
    headers: &HeaderMap,
    upstream: &str,
    id: &str,
) -> Result<(), ApiError> {
    if role == Role::Admin {
        return Ok(());
    }
    let source = {
        let snap = s.pool.snapshot();
        let up = snap
            .upstream(upstream)
            .ok_or_else(|| ApiError::from(PoolError::UnknownUpstream(upstream.into())))?;
        up.backend(id).map(|b| b.source)
    };
    match source {
        Some(Source::Static) => Err(ApiError(
            StatusCode::FORBIDDEN,
            "the register token may only manage backends registered over HTTP".into(),
        )),
        Some(_) => {
            let owner = owners::owner_of(s.etcd.as_deref(), &s.owners, upstream, id).await?;
            if owners::proves(headers, owner.as_deref()) {
                Ok(())
            } else {
                Err(owners::not_yours(upstream, id))
            }
        }
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
async fn register_inner(
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
    let id = req.id.unwrap_or_else(|| default_id(addr));
    validate_id(&id).map_err(bad)?;
    let ttl = req.ttl.as_ref().map_or(Ok(DEFAULT_TTL), Ttl::duration)?;
    let weight = req.weight.unwrap_or(DEFAULT_WEIGHT);
    // Checked before anything is written (to etcd too).
    if !(1..=crate::config::MAX_WEIGHT).contains(&weight) {
        return Err(PoolError::InvalidWeight.into());
    }
    let (existed, registered, scope) = {
        let snap = s.pool.snapshot();
        let up = snap
            .upstream(&u)
            .ok_or_else(|| ApiError::from(PoolError::UnknownUpstream(u.clone())))?;
        let registered = up.backends.registered();
        let existed = up.backend(&id).map(|b| b.source);
        (existed, registered, up.policy.registration.clone())
    };
    // Not even the admin token's: tideway would proxy to itself.
    if s.is_reserved(addr) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{addr} is one of tideway's own addresses (a listener, the admin API or etcd)"),
        ));
    }
    if role == Role::Register {
        if !scope.allows(addr.ip()) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "{} is outside the ranges upstream {u:?} takes registrations from",
                    addr.ip()
                ),
            ));
        }
        if weight > scope.max_weight {
            return Err(bad(format!(
                "weight {weight} is over upstream {u:?}'s limit of {} for registrations",
                scope.max_weight
            )));
        }
        match existed {
            Some(Source::Static) => {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    "the register token may only manage backends registered over HTTP".into(),
                ))
            }
            Some(_) => check_own(&s, role, &headers, &u, &id).await?,
            None if registered >= scope.max_backends => {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    format!(
                        "upstream {u:?} has reached its limit of {} registrations",
                        scope.max_backends
                    ),
                ))
            }
            None => {}
        }
    }
    // A new registration gets a secret; a refresh keeps its owner.
    let secret = existed.is_none().then(owners::new_secret);
    let owner = match &secret {
        Some(sec) => Some(owners::fingerprint(sec)),
        None => owners::owner_of(s.etcd.as_deref(), &s.owners, &u, &id).await?,
    };
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
        let fresh = existed.is_none();
        w.register(&u, &id, addr, weight, ttl, owner.as_deref(), fresh)
            .await?;
        // Seen back by address: an operator's weight toggle may stand in for the weight.
        until_applied(&s.pool, |snap| {
            snap.upstream(&u)
                .and_then(|up| up.backend(&id))
                .is_some_and(|b| b.addr == addr)
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
                    server: Default::default(),
                },
                ttl: Some(ttl),
                operator: role == Role::Admin,
            })
            .await?;
        if let Some(owner) = owner {
            s.owners.set(&u, &id, owner);
        }
    }
    let status = if existed.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut body = serde_json::json!({
        "id": id, "upstream": u, "addr": addr.to_string(), "weight": weight,
        "ttl_ms": ttl.as_millis() as u64,
    });
    if let Some(secret) = secret {
        // Returned once: the register token needs it to manage this registration.
        body["secret"] = secret.into();
    }
    Ok((status, Json(body)).into_response())
}

/// The path of a backend's endpoints (for the API document).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by utoipa only; the handlers take `Path<(String, String)>`
pub(crate) struct BackendPath {
    /// The upstream.
    u: String,
    /// The backend id.
    id: String,
}

/// A heartbeat's optional body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hb {
    ttl: Option<Ttl>,
}

/// `PUT /v1/upstreams/{u}/backends/{id}/heartbeat`
#[utoipa::path(put, path = "/v1/upstreams/{u}/backends/{id}/heartbeat", tag = "registration",
    params(BackendPath),
    request_body(content = Option<Hb>, description = "optional new TTL"),
    responses((status = 200, description = "TTL refreshed"), (status = 404, description = "unknown or lapsed", body = super::ErrorBody)),
    security(("admin" = []), ("register" = [])))]
pub async fn heartbeat(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let role = caller(&s, &headers)?;
    check_own(&s, role, &headers, &u, &id).await?;
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
async fn deregister_inner(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let role = caller(&s, &headers)?;
    check_own(&s, role, &headers, &u, &id).await?;
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
            upstream: u.clone(),
            id: id.as_str().into(),
        })
        .await?;
    if role == Role::Admin {
        // An operator's delete ends the operator's decision on the id.
        s.pool
            .apply(Diff::Decide {
                upstream: u,
                id: id.as_str().into(),
                state: State::Active,
            })
            .await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id, "state": "draining" })),
    )
        .into_response())
}

/// A new operator state: `active`, `disabled` or `draining`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetState {
    state: String,
}

/// `POST /v1/upstreams/{u}/backends/{id}/state`
async fn set_state_inner(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&s, &headers)?;
    let req: SetState = json_body(body)?;
    let state: State = req.state.parse().map_err(bad)?;
    toggle(&s, &u, &id, Some(state), None, true).await?;
    Ok(Json(serde_json::json!({ "id": id, "state": state })).into_response())
}

/// Apply an operator toggle: through etcd when configured (every instance applies it; answered
/// once this one has; returns the etcd revision of the write), else to the local pool (0).
/// Without etcd, a state set by the admin token (`operator`) is a decision that sticks to the
/// id across deregistration and registration ([`Diff::Decide`]).
async fn toggle(
    s: &AdminState,
    u: &str,
    id: &str,
    state: Option<State>,
    weight: Option<u32>,
    operator: bool,
) -> Result<i64, ApiError> {
    if weight.is_some_and(|w| !(1..=crate::config::MAX_WEIGHT).contains(&w)) {
        return Err(PoolError::InvalidWeight.into());
    }
    if let Some(w) = &s.etcd {
        known(s, u, id)?;
        let revision = w.toggle(u, id, state, weight).await?;
        until_applied(&s.pool, |snap| {
            snap.upstream(u)
                .and_then(|up| up.backend(id))
                .is_some_and(|b| {
                    state.is_none_or(|st| b.state == st) && weight.is_none_or(|w| b.weight == w)
                })
        })
        .await?;
        return Ok(revision);
    }
    if let Some(state) = state {
        let (upstream, id) = (u.into(), id.into());
        s.pool
            .apply(if operator {
                Diff::Decide {
                    upstream,
                    id,
                    state,
                }
            } else {
                Diff::SetState {
                    upstream,
                    id,
                    state,
                }
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
    Ok(0)
}

/// A new weight, 1-1000.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetWeight {
    weight: u32,
}

/// `PATCH /v1/upstreams/{u}/backends/{id}`
async fn set_weight_inner(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&s, &headers)?;
    let req: SetWeight = json_body(body)?;
    toggle(&s, &u, &id, None, Some(req.weight), true).await?;
    Ok(Json(serde_json::json!({ "id": id, "weight": req.weight })).into_response())
}

/// How long `drain` waits for the backend's connections to end (e.g. `30s`).
#[derive(Deserialize, utoipa::IntoParams)]
pub struct DrainQuery {
    wait: Option<String>,
}

/// `POST /v1/upstreams/{u}/backends/{id}/drain?wait=30s`: drain, and wait until the backend
/// has no connections or the wait ends.
async fn drain_inner(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    Query(q): Query<DrainQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let role = caller(&s, &headers)?;
    check_own(&s, role, &headers, &u, &id).await?;
    let wait = match &q.wait {
        Some(w) => parse_duration(w).map_err(bad)?,
        None => Duration::ZERO,
    };
    if wait > MAX_DRAIN_WAIT {
        return Err(bad("wait must be at most 1h"));
    }
    // With etcd the drain is a toggle there, so every instance drains; the wait is over when
    // no instance holds a connection to the backend (as each reports it, draining, after the
    // drain began).
    let expected = s.fleet.as_ref().map(|f| f.instances()).unwrap_or_default();
    let since = toggle(
        &s,
        &u,
        &id,
        Some(State::Draining),
        None,
        role == Role::Admin,
    )
    .await?;
    let live = s
        .pool
        .snapshot()
        .upstream(&u)
        .and_then(|up| up.backend(&id))
        .map(|b| b.live.clone());
    let own = || live.as_ref().map_or(0, |l| l.active());
    let held = || match &s.fleet {
        Some(f) => f.held(&u, &id, since, &expected),
        None => Some(own()),
    };
    let deadline = Instant::now() + wait;
    let held = loop {
        let held = held();
        if held == Some(0) || Instant::now() >= deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Unknown (an instance has not reported since the drain, or went missing): this
    // instance's own count, and not drained.
    let body = match held {
        Some(n) => serde_json::json!({ "active_connections": n, "drained": n == 0 }),
        None => serde_json::json!({
            "active_connections": own(),
            "drained": false,
            "unknown_instances": true,
        }),
    };
    Ok(Json(body).into_response())
}

/// Run a change handler and write its audit record.
async fn audited(
    s: &AdminState,
    headers: &HeaderMap,
    remote: SocketAddr,
    action: &'static str,
    (u, id): (&str, &str),
    change: impl std::future::Future<Output = Result<Response, ApiError>>,
) -> Result<Response, ApiError> {
    let role = match caller(s, headers) {
        Ok(role) => role,
        Err(e) => {
            tracing::info!(target: "tideway::audit", %remote, action, upstream = u, backend = id, outcome = %format!("refused: {}", e.1), "admin change");
            return Err(e);
        }
    };
    let record = audit::Change {
        role,
        remote,
        action,
        upstream: u,
        id,
        before: audit::backend(s, u, id),
    };
    let result = change.await;
    record.log(s, result.as_ref().err().map(|e| e.1.as_str()));
    result
}

/// `POST /v1/upstreams/{u}/backends`
#[utoipa::path(post, path = "/v1/upstreams/{u}/backends", tag = "registration",
    params(("u" = String, Path, description = "upstream")),
    request_body = Register,
    responses((status = 201, description = "registered; a new registration's answer carries its `secret`"),
        (status = 200, description = "a repeat: acts as a heartbeat"),
        (status = 400, description = "bad body or address", body = super::ErrorBody),
        (status = 403, description = "outside the registration scope", body = super::ErrorBody),
        (status = 409, description = "the id has another address, or (register token) an operator's disable or drain holds the address out under another id", body = super::ErrorBody)),
    security(("admin" = []), ("register" = [])))]
pub async fn register(
    AxState(s): St,
    Path(u): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // The id, for the audit record, as the handler will read it (a bad body is refused there).
    let id = body
        .as_ref()
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| match v.get("id").and_then(|i| i.as_str()) {
            Some(id) => Some(id.to_string()),
            None => v["addr"].as_str()?.parse().ok().map(default_id),
        })
        .unwrap_or_default();
    let change = register_inner(AxState(s.clone()), Path(u.clone()), headers.clone(), body);
    audited(&s, &headers, remote, "register", (&u, &id), change).await
}

/// `DELETE /v1/upstreams/{u}/backends/{id}`: drain, then remove.
#[utoipa::path(delete, path = "/v1/upstreams/{u}/backends/{id}", tag = "registration",
    params(BackendPath),
    responses((status = 202, description = "draining, removed when it has no connections"), (status = 404, description = "unknown", body = super::ErrorBody)),
    security(("admin" = []), ("register" = [])))]
pub async fn deregister(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let change = deregister_inner(
        AxState(s.clone()),
        Path((u.clone(), id.clone())),
        headers.clone(),
    );
    audited(&s, &headers, remote, "deregister", (&u, &id), change).await
}

/// `POST /v1/upstreams/{u}/backends/{id}/state`
#[utoipa::path(post, path = "/v1/upstreams/{u}/backends/{id}/state", tag = "operators",
    params(BackendPath),
    request_body = SetState,
    responses((status = 200, description = "state set (persisted)"), (status = 400, description = "unknown state", body = super::ErrorBody)),
    security(("admin" = [])))]
pub async fn set_state(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let change = set_state_inner(
        AxState(s.clone()),
        Path((u.clone(), id.clone())),
        headers.clone(),
        body,
    );
    audited(&s, &headers, remote, "set_state", (&u, &id), change).await
}

/// `PATCH /v1/upstreams/{u}/backends/{id}`
#[utoipa::path(patch, path = "/v1/upstreams/{u}/backends/{id}", tag = "operators",
    params(BackendPath),
    request_body = SetWeight,
    responses((status = 200, description = "weight set (persisted)"), (status = 400, description = "out of range", body = super::ErrorBody)),
    security(("admin" = [])))]
pub async fn set_weight(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let change = set_weight_inner(
        AxState(s.clone()),
        Path((u.clone(), id.clone())),
        headers.clone(),
        body,
    );
    audited(&s, &headers, remote, "set_weight", (&u, &id), change).await
}

/// `POST /v1/upstreams/{u}/backends/{id}/drain?wait=30s`
#[utoipa::path(post, path = "/v1/upstreams/{u}/backends/{id}/drain", tag = "operators",
    params(BackendPath, DrainQuery),
    responses((status = 200, description = "`{active_connections, drained}` once drained or the wait ended")),
    security(("admin" = []), ("register" = [])))]
pub async fn drain(
    AxState(s): St,
    Path((u, id)): Path<(String, String)>,
    Query(q): Query<DrainQuery>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let change = drain_inner(
        AxState(s.clone()),
        Path((u.clone(), id.clone())),
        Query(q),
        headers.clone(),
    );
    audited(&s, &headers, remote, "drain", (&u, &id), change).await
}
