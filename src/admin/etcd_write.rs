//! With etcd configured, registrations and toggles are written to etcd rather than applied
//! locally, so every tideway instance watching the same prefix applies them. A registration is
//! a key under a lease whose TTL is the registration's; a heartbeat keeps that lease alive
//! (the lease is read from the key, so any instance can take the heartbeat).

use super::ApiError;
use crate::config::EtcdSettings;
use crate::pool::{PoolHandle, State};
use axum::http::StatusCode;
use etcd_client::{Client, ConnectOptions, PutOptions};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a write waits to see its own change applied to this instance's pool.
pub const DEFAULT_APPLY_WAIT: Duration = Duration::from_secs(5);

/// Writes to etcd on behalf of the admin API.
#[derive(Clone)]
pub struct EtcdWriter {
    settings: EtcdSettings,
}

fn unavailable(e: etcd_client::Error) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("etcd: {e}"))
}

impl EtcdWriter {
    pub fn new(settings: EtcdSettings) -> Self {
        EtcdWriter { settings }
    }

    async fn client(&self) -> Result<Client, ApiError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        Client::connect(&self.settings.endpoints, Some(options))
            .await
            .map_err(unavailable)
    }

    fn backend_key(&self, upstream: &str, id: &str) -> String {
        format!(
            "{}/upstreams/{upstream}/backends/{id}",
            self.settings.prefix
        )
    }

    fn state_key(&self, upstream: &str, id: &str) -> String {
        format!("{}/upstreams/{upstream}/state/{id}", self.settings.prefix)
    }

    /// Register (or refresh) a backend under a lease of `ttl`.
    pub async fn register(
        &self,
        upstream: &str,
        id: &str,
        addr: SocketAddr,
        weight: u32,
        ttl: Duration,
        owner: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut c = self.client().await?;
        let key = self.backend_key(upstream, id);
        // A fresh lease each time; a replaced one simply runs out.
        let lease = c
            .lease_grant(ttl.as_secs().max(1) as i64, None)
            .await
            .map_err(unavailable)?
            .id();
        let mut value = serde_json::json!({ "addr": addr.to_string(), "weight": weight });
        if let Some(owner) = owner {
            value["owner"] = owner.into();
        }
        let value = value.to_string();
        c.put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The owner fingerprint stored with a registration, if any.
    pub async fn owner(&self, upstream: &str, id: &str) -> Result<Option<String>, ApiError> {
        let mut c = self.client().await?;
        let got = c
            .get(self.backend_key(upstream, id), None)
            .await
            .map_err(unavailable)?;
        Ok(got.kvs().first().and_then(|kv| {
            let v: serde_json::Value = serde_json::from_slice(kv.value()).ok()?;
            v.get("owner")?.as_str().map(str::to_string)
        }))
    }

    /// Keep a registration's lease alive; `false` if the key is gone.
    pub async fn heartbeat(&self, upstream: &str, id: &str) -> Result<bool, ApiError> {
        let mut c = self.client().await?;
        let got = c
            .get(self.backend_key(upstream, id), None)
            .await
            .map_err(unavailable)?;
        let Some(kv) = got.kvs().first() else {
            return Ok(false);
        };
        if kv.lease() != 0 {
            let (mut keeper, mut stream) =
                c.lease_keep_alive(kv.lease()).await.map_err(unavailable)?;
            keeper.keep_alive().await.map_err(unavailable)?;
            let _ = stream.message().await;
        }
        Ok(true)
    }

    /// Delete a registration; every instance drains, then removes it.
    pub async fn deregister(&self, upstream: &str, id: &str) -> Result<bool, ApiError> {
        let mut c = self.client().await?;
        let deleted = c
            .delete(self.backend_key(upstream, id), None)
            .await
            .map_err(unavailable)?;
        Ok(deleted.deleted() > 0)
    }

    /// Write an admin toggle (merged with the one already there); returns the etcd revision
    /// it was written at.
    pub async fn toggle(
        &self,
        upstream: &str,
        id: &str,
        state: Option<State>,
        weight: Option<u32>,
    ) -> Result<i64, ApiError> {
        let mut c = self.client().await?;
        let key = self.state_key(upstream, id);
        let mut current = c
            .get(key.clone(), None)
            .await
            .map_err(unavailable)?
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<serde_json::Value>(kv.value()).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        if let Some(st) = state {
            current["state"] = serde_json::to_value(st).expect("serializable");
        }
        if let Some(w) = weight {
            current["weight"] = w.into();
        }
        let put = c
            .put(key, current.to_string(), None)
            .await
            .map_err(unavailable)?;
        Ok(put.header().map_or(0, |h| h.revision()))
    }
}

/// Wait until `f` holds for this instance's pool (the watch applied our own write).
pub async fn until_applied(
    pool: &PoolHandle,
    f: impl Fn(&crate::pool::Snapshot) -> bool,
) -> Result<(), ApiError> {
    let deadline = Instant::now() + DEFAULT_APPLY_WAIT;
    while !f(&pool.snapshot()) {
        if Instant::now() >= deadline {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "written to etcd but not seen back from the watch yet".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
