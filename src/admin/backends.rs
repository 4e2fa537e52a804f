//! Membership endpoints: registration with TTL and heartbeats, deregistration (drain, then
//! remove), state and weight toggles, and drain-and-wait.
//!
//! One handler per endpoint: it reads the request, checks the caller's token once (the
//! audit record starts there, [`audit::Change::begin`]), and asks the [`crate::registry::Registry`], which
//! makes every other check and answers once the change is in this instance's pool. A
//! refused request changes nothing.

use super::{audit, owners, AdminState, ApiError, Role};
use crate::config::{parse_duration, validate_id, DEFAULT_WEIGHT};
use crate::pool::{PoolError, State};
use crate::registry::{Caller, Registration, RegistryError, DEFAULT_TTL};
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
use std::time::Duration;

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

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match e {
            RegistryError::Pool(e) => return e.into(),
            RegistryError::Store(e) => return e.into(),
            RegistryError::OperatorOnly
            | RegistryError::NotRegistered
            | RegistryError::NotYours { .. }
            | RegistryError::OwnAddress(_)
            | RegistryError::OutOfScope { .. }
            | RegistryError::Full { .. } => StatusCode::FORBIDDEN,
            RegistryError::OverWeight { .. } | RegistryError::WaitTooLong => {
                StatusCode::BAD_REQUEST
            }
            RegistryError::OtherSpread { .. } => StatusCode::CONFLICT,
            RegistryError::Lapsed { .. } => StatusCode::NOT_FOUND,
            RegistryError::NotSeen => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

/// The caller as the registry knows it: the register token brings the secret it sent.
fn who(role: Role, headers: &HeaderMap) -> Caller {
    match role {
        Role::Admin => Caller::Operator,
        Role::Register => Caller::Registrar {
            secret: owners::secret(headers),
        },
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

/// A whole number, written as JSON Schema's `integer` allows: `3` or `3.0`.
fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    let v = match (n.as_u64(), n.as_f64()) {
        (Some(v), _) => Some(v),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => {
            Some(f as u64)
        }
        _ => None,
    };
    v.and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| D::Error::custom(format!("invalid number {n}; expected a whole number")))
}

/// [`whole`], for an optional field (`null` is no value).
fn some_whole<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    struct W<T: TryFrom<u64>>(#[serde(deserialize_with = "whole")] T);
    Ok(Option::<W<T>>::deserialize(d)?.map(|w| w.0))
}

/// A TTL: seconds, or a duration such as `"10s"` (1 s to 24 h). Its schema is in
/// [`super::openapi`].
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Ttl {
    Seconds(#[serde(deserialize_with = "whole")] u64),
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
    /// The backend's address, `ip:port` (IPv6 as `[ip]:port`; the pattern shows IPv4).
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]):([0-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    )]
    addr: String,
    /// 1-1000 (default 1; the upstream's `registration.max_weight` caps the register token).
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "some_whole")]
    weight: Option<u32>,
    /// 1-128 letters, digits or `-_.:@`, not ending in `:` nor starting with `unix:` (default:
    /// the address).
    #[schema(pattern = "^[A-Za-z0-9_.:@-]{0,127}[A-Za-z0-9_.@-]$")]
    id: Option<String>,
    #[schema(schema_with = super::openapi::ttl_schema)]
    ttl: Option<Ttl>,
}

/// A registration's id when none is given: `ip:port` (no brackets for IPv6, which ids may not
/// hold).
fn default_id(addr: SocketAddr) -> String {
    format!("{}:{}", addr.ip(), addr.port())
}

/// The path of a backend's endpoints.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BackendPath {
    /// The upstream.
    u: String,
    /// The backend id.
    id: String,
}

/// A heartbeat's optional body (none, `null` or `{}`: the TTL stays).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hb {
    #[schema(schema_with = super::openapi::ttl_schema)]
    ttl: Option<Ttl>,
}

/// A new operator state.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetState {
    #[schema(pattern = "^(active|disabled|draining)$")]
    state: String,
}

/// A new weight.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetWeight {
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "whole")]
    weight: u32,
}

/// How long `drain` waits for the backend's connections to end, and over how long it
/// spreads their 1001 closes.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct DrainQuery {
    /// At most 1h, e.g. `30s` (default: answer at once). The pattern shows the common forms;
    /// any duration up to 1h is read.
    #[param(pattern = "^(0|[0-9]{1,4}ms|[0-9]{1,3}s|[1-5]?[0-9]m|60m|1h)$")]
    wait: Option<String>,
    /// This drain's close spread: its WebSockets' 1001 closes go out over the last `spread`
    /// of the upstream's `drain_timeout` (a longer one is cut to all of it); `0s` closes them
    /// all at once at the deadline (default: the upstream's `close_spread`). The pattern
    /// shows the common forms; any duration is read.
    #[param(pattern = "^(0|[0-9]{1,4}ms|[0-9]{1,3}s|[1-5]?[0-9]m|60m|1h)$")]
    spread: Option<String>,
}

/// The id a registration's body names, for the audit record, as the handler reads it (a bad
/// body is refused there).
fn audit_id(body: &Result<Bytes, BytesRejection>) -> String {
    body.as_ref()
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| match v.get("id").and_then(|i| i.as_str()) {
            Some(id) => Some(id.to_string()),
            None => v["addr"].as_str()?.parse().ok().map(default_id),
        })
        .unwrap_or_default()
}

/// A registration's body, checked for form (the registry checks the rest).
fn registration(body: Result<Bytes, BytesRejection>) -> Result<Registration, ApiError> {
    let req: Register = json_body(body)?;
    let addr: SocketAddr = req
        .addr
        .parse()
        .map_err(|_| bad(format!("invalid addr {:?}; expected ip:port", req.addr)))?;
    let id = req.id.unwrap_or_else(|| default_id(addr));
    validate_id(&id).map_err(bad)?;
    let ttl = req.ttl.as_ref().map_or(Ok(DEFAULT_TTL), Ttl::duration)?;
    let weight = req.weight.unwrap_or(DEFAULT_WEIGHT);
    Ok(Registration {
        id,
        addr,
        weight,
        ttl,
    })
}

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
    let id = audit_id(&body);
    let change = audit::Change::begin(&s, &headers, remote, "register", &u, &id)?;
    let result = async {
        let r = registration(body)?;
        let done = s
            .registry
            .register(&who(change.role, &headers), &u, r.clone())
            .await?;
        let status = match done.fresh {
            true => StatusCode::CREATED,
            false => StatusCode::OK,
        };
        let mut body = serde_json::json!({
            "id": r.id, "upstream": u, "addr": r.addr.to_string(), "weight": r.weight,
            "ttl_ms": r.ttl.as_millis() as u64,
        });
        if let Some(secret) = done.secret {
            // Returned once: the register token needs it to manage this registration.
            body["secret"] = secret.into();
        }
        Ok((status, Json(body)).into_response())
    }
    .await;
    change.finish(&s, result)
}

#[utoipa::path(put, path = "/v1/upstreams/{u}/backends/{id}/heartbeat", tag = "registration",
    params(BackendPath),
    request_body(content = Option<Hb>, description = "optional new TTL"),
    responses((status = 200, description = "TTL refreshed"), (status = 404, description = "unknown or lapsed", body = super::ErrorBody)),
    security(("admin" = []), ("register" = [])))]
pub async fn heartbeat(
    AxState(s): St,
    Path(BackendPath { u, id }): Path<BackendPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let role = super::caller(&s, &headers)?;
    let grant = s.registry.grant(&who(role, &headers), &u, &id).await?;
    let bytes = body_bytes(body)?;
    let ttl = if bytes.is_empty() {
        None
    } else {
        // `null` reads as no body: nothing in it to refuse.
        let hb: Option<Hb> = json_body(Ok(bytes))?;
        hb.and_then(|hb| hb.ttl)
            .as_ref()
            .map(Ttl::duration)
            .transpose()?
    };
    let body = match s.registry.heartbeat(&grant, ttl).await? {
        Some(ttl) => serde_json::json!({ "id": id, "ttl_ms": ttl.as_millis() as u64 }),
        None => serde_json::json!({ "id": id }),
    };
    Ok(Json(body).into_response())
}

#[utoipa::path(delete, path = "/v1/upstreams/{u}/backends/{id}", tag = "registration",
    params(BackendPath),
    responses((status = 202, description = "draining, removed when it has no connections"), (status = 404, description = "unknown", body = super::ErrorBody)),
    security(("admin" = []), ("register" = [])))]
pub async fn deregister(
    AxState(s): St,
    Path(BackendPath { u, id }): Path<BackendPath>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let change = audit::Change::begin(&s, &headers, remote, "deregister", &u, &id)?;
    let result = async {
        let grant = s
            .registry
            .grant(&who(change.role, &headers), &u, &id)
            .await?;
        s.registry.deregister(&grant).await?;
        Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "id": id, "state": "draining" })),
        )
            .into_response())
    }
    .await;
    change.finish(&s, result)
}

#[utoipa::path(post, path = "/v1/upstreams/{u}/backends/{id}/state", tag = "operators",
    params(BackendPath),
    request_body = SetState,
    responses((status = 200, description = "state set (persisted)"), (status = 400, description = "unknown state", body = super::ErrorBody)),
    security(("admin" = [])))]
pub async fn set_state(
    AxState(s): St,
    Path(BackendPath { u, id }): Path<BackendPath>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let change = audit::Change::begin(&s, &headers, remote, "set_state", &u, &id)?;
    let result = async {
        let operator = s.registry.operator(&who(change.role, &headers))?;
        let req: SetState = json_body(body)?;
        let state: State = req.state.parse().map_err(bad)?;
        s.registry.set_state(&operator, &u, &id, state).await?;
        Ok(Json(serde_json::json!({ "id": id, "state": state })).into_response())
    }
    .await;
    change.finish(&s, result)
}

#[utoipa::path(patch, path = "/v1/upstreams/{u}/backends/{id}", tag = "operators",
    params(BackendPath),
    request_body = SetWeight,
    responses((status = 200, description = "weight set (persisted)"), (status = 400, description = "out of range", body = super::ErrorBody)),
    security(("admin" = [])))]
pub async fn set_weight(
    AxState(s): St,
    Path(BackendPath { u, id }): Path<BackendPath>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let change = audit::Change::begin(&s, &headers, remote, "set_weight", &u, &id)?;
    let result = async {
        let operator = s.registry.operator(&who(change.role, &headers))?;
        let req: SetWeight = json_body(body)?;
        s.registry
            .set_weight(&operator, &u, &id, req.weight)
            .await?;
        Ok(Json(serde_json::json!({ "id": id, "weight": req.weight })).into_response())
    }
    .await;
    change.finish(&s, result)
}

#[utoipa::path(post, path = "/v1/upstreams/{u}/backends/{id}/drain", tag = "operators",
    params(BackendPath, DrainQuery),
    responses((status = 200, description = "`{active_connections, drained, close_spread_ms}` once drained or the wait ended"),
        (status = 400, description = "`wait` is not a duration up to 1h, or `spread` not a duration", body = super::ErrorBody),
        (status = 409, description = "the backend is already draining with another close spread", body = super::ErrorBody)),
    security(("admin" = []), ("register" = [])))]
pub async fn drain(
    AxState(s): St,
    Path(BackendPath { u, id }): Path<BackendPath>,
    Query(q): Query<DrainQuery>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let change = audit::Change::begin(&s, &headers, remote, "drain", &u, &id)?;
    let result = async {
        let grant = s
            .registry
            .grant(&who(change.role, &headers), &u, &id)
            .await?;
        let wait = match &q.wait {
            Some(w) => parse_duration(w).map_err(bad)?,
            None => Duration::ZERO,
        };
        let spread = q
            .spread
            .as_deref()
            .map(|d| parse_duration(d).map_err(|e| bad(format!("spread: {e}"))))
            .transpose()?;
        let drained = s.registry.drain(&grant, wait, spread).await?;
        // Unknown (an instance has not reported since the drain, or went missing): this
        // instance's own count, and not drained.
        let mut body = match drained.held {
            Some(n) => serde_json::json!({ "active_connections": n, "drained": n == 0 }),
            None => serde_json::json!({
                "active_connections": drained.own,
                "drained": false,
                "unknown_instances": true,
            }),
        };
        if let Some(spread) = drained.spread {
            body["close_spread_ms"] = (spread.as_millis() as u64).into();
        }
        Ok(Json(body).into_response())
    }
    .await;
    change.finish(&s, result)
}
