//! What the dashboard draws besides the pool itself: the last minutes of the pool
//! (`GET /v1/history`, kept by [`super::history`]), the fleet's instances with their counts
//! (`GET /v1/fleet`), and why connections ended (`GET /v1/closes`, read from the process's
//! Prometheus registry by metric name, so a family another part of tideway adds shows up as
//! soon as it exists). Admin token for all three.

use super::{require_admin, AdminState, ApiError};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

/// The families `GET /v1/closes` lists, each under its own key.
fn close_families() -> [(&'static str, &'static prometheus::IntCounterVec); 2] {
    let m = crate::metrics::global();
    [
        ("websocket_closes", &m.websocket.closes),
        ("tunnels_ended", &m.tunnels_ended),
    ]
}

#[utoipa::path(get, path = "/v1/history", tag = "operators",
    responses((status = 200, description = "`{interval_ms, points_kept, backends_per_upstream, times, upstreams: [{name, backends_total, total, backends: [{id, ...}]}]}`: the last minutes, sampled every `interval_ms`; `total` and each backend hold `connections`, `requests_per_second` and `errors_per_second`, arrays aligned with `times` (milliseconds since the epoch; null: not sampled then). Per-backend series only for the busiest `backends_per_upstream` of each upstream at each sample, draining ones first")),
    security(("admin" = [])))]
pub async fn history(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &headers)?;
    Ok(Json(s.history.view()))
}

#[utoipa::path(get, path = "/v1/fleet", tag = "operators",
    responses((status = 200, description = "`{etcd, instances: [{instance, this, active_connections, clients?, websockets?, upstreams: {name: active_connections}}]}`: this instance first (counted now), then every other instance on the same etcd as it last reported (about every second); without etcd, this instance alone (`instance` is null). `active_connections`: requests in flight and tunnels to backends; `clients`: client connections on its listeners; `websockets`: open WebSockets (when the instance exports `tideway_websocket_open`)")),
    security(("admin" = [])))]
pub async fn fleet(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &headers)?;
    let reports = match &s.fleet {
        Some(f) => f
            .reports()
            .into_iter()
            .map(|(name, r)| (Some(name), r))
            .collect(),
        None => vec![(
            None,
            crate::discovery::fleet::Report::of(&s.pool.snapshot()),
        )],
    };
    let instances: Vec<Value> = reports
        .into_iter()
        .enumerate()
        .map(|(i, (name, r))| {
            let upstreams: serde_json::Map<String, Value> = r
                .upstreams
                .iter()
                .map(|(u, c)| (u.clone(), json!(c.active)))
                .collect();
            let mut v = json!({
                "instance": name,
                "this": i == 0,
                "active_connections": r.upstreams.values().map(|c| c.active).fold(0, u64::saturating_add),
                "upstreams": upstreams,
            });
            if let Some(n) = r.clients {
                v["clients"] = json!(n);
            }
            if let Some(n) = r.websockets {
                v["websockets"] = json!(n);
            }
            v
        })
        .collect();
    Ok(Json(
        json!({ "etcd": s.fleet.is_some(), "instances": instances }),
    ))
}

#[utoipa::path(get, path = "/v1/closes", tag = "operators",
    responses((status = 200, description = "`{websocket_closes: [{upstream, by, code, count}], tunnels_ended: [{upstream, reason, count}]}`: this instance's counts since it started, from `tideway_websocket_closes_total` and `tideway_tunnels_ended_total` (each entry has its series' labels; a family the process does not export yet is an empty list). Entries at 0 are left out")),
    security(("admin" = [])))]
pub async fn closes(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &headers)?;
    let mut out = serde_json::Map::new();
    for (key, family) in close_families() {
        let entries: Vec<Value> = crate::metrics::series_of(family)
            .into_iter()
            .filter(|(_, n)| *n > 0.0)
            .map(|(labels, n)| {
                let mut v: serde_json::Map<String, Value> =
                    labels.into_iter().map(|(k, v)| (k, json!(v))).collect();
                v.insert("count".into(), json!(n as u64));
                Value::Object(v)
            })
            .collect();
        out.insert(key.into(), Value::Array(entries));
    }
    Ok(Json(Value::Object(out)))
}
