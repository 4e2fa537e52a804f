//! The audit log: every change made through the admin API, with the caller's role, its remote
//! address, and the backend as it was before and after, as `tracing` events with the target
//! `tideway::audit` (filter on it to keep them apart). Tokens and secrets never appear.

use super::{AdminState, ApiError, Role};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;
use std::net::SocketAddr;

/// A backend as the audit log shows it (None: not in this instance's pool).
pub fn backend(s: &AdminState, upstream: &str, id: &str) -> Option<Value> {
    let snap = s.pool.snapshot();
    let b = snap.upstream(upstream)?.backend(id)?;
    Some(serde_json::json!({
        "addr": b.addr.to_string(),
        "weight": b.weight,
        "state": b.state,
        "source": b.source,
    }))
}

/// One change: who, from where, what, and the backend before and after.
pub struct Change<'a> {
    pub role: Role,
    pub remote: SocketAddr,
    pub action: &'static str,
    pub upstream: &'a str,
    pub id: &'a str,
    pub before: Option<Value>,
}

impl<'a> Change<'a> {
    /// Check the caller's token (the one check of it; a refusal is logged) and record the
    /// backend as it is before the change.
    pub fn begin(
        s: &AdminState,
        headers: &HeaderMap,
        remote: SocketAddr,
        action: &'static str,
        upstream: &'a str,
        id: &'a str,
    ) -> Result<Self, ApiError> {
        let role = match super::caller(s, headers) {
            Ok(role) => role,
            Err(e) => {
                tracing::info!(target: "tideway::audit", %remote, action, upstream, backend = id, outcome = %format!("refused: {}", e.1), "admin change");
                return Err(e);
            }
        };
        Ok(Change {
            role,
            remote,
            action,
            upstream,
            id,
            before: backend(s, upstream, id),
        })
    }

    /// Log the change's outcome, and pass it on.
    pub fn finish(
        self,
        s: &AdminState,
        result: Result<Response, ApiError>,
    ) -> Result<Response, ApiError> {
        self.log(s, result.as_ref().err().map(|e| e.1.as_str()));
        result
    }

    /// Log the change once it was made (`refused`: why it was not).
    fn log(self, s: &AdminState, refused: Option<&str>) {
        let after = backend(s, self.upstream, self.id);
        let show = |v: &Option<Value>| v.as_ref().map_or("absent".to_string(), Value::to_string);
        let role = match self.role {
            Role::Admin => "admin",
            Role::Register => "register",
        };
        tracing::info!(
            target: "tideway::audit",
            role,
            remote = %self.remote,
            action = self.action,
            upstream = self.upstream,
            backend = self.id,
            before = %show(&self.before),
            after = %show(&after),
            outcome = refused.map_or("applied".to_string(), |why| format!("refused: {why}")),
            "admin change"
        );
    }
}
