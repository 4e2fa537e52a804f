//! Reloading the config, as nginx users expect from `nginx -s reload`: on SIGHUP or
//! `POST /v1/reload`, re-read the TOML or nginx file the process started from and apply it.
//!
//! - Upstreams, their policies and their static backends are applied as one change to the
//!   pool ([`crate::pool::PoolHandle::reconfigure`]): new upstreams appear, removed ones go,
//!   static backends are re-listed (registrations and etcd backends stay), and no open
//!   connection is touched.
//! - TLS certificates are re-read.
//! - Backend names are resolved again with the file, and the `resolve` names followed from
//!   there ([`crate::discovery::names`]).
//! - Listeners are added and removed ([`crate::server::listeners`]); an unchanged one keeps its socket.
//!   `[server]`, `[admin]` and `[store]` are what the process started with.
//! - All or nothing: the file is validated, new listeners bound and every certificate read
//!   before anything changes. A refusal (an invalid file, a port taken, an unreadable
//!   certificate) is logged and returned by the API, and the pool, the listeners and the
//!   certificates stay exactly as they were.

use crate::config::reload::Reload;
use crate::config::Config;
use crate::pool::PoolHandle;
use crate::proxy::tls::SniResolver;
use crate::server::listeners::Listeners;
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the running config came from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    Toml(PathBuf),
    /// An nginx config, read with these options on every reload.
    Nginx(PathBuf, crate::nginx::Options),
    /// The built-in config, as TOML text (a reload reads it again: nothing changes).
    BuiltIn(String),
}

impl ConfigSource {
    /// Read and validate the file (and, for nginx, the warnings of the conversion).
    pub fn load(&self) -> Result<(Config, Vec<String>), String> {
        match self {
            ConfigSource::Toml(p) => crate::config::load(p)
                .map(|c| (c, Vec::new()))
                .map_err(|e| e.to_string()),
            ConfigSource::Nginx(p, o) => crate::nginx::load_with(p, *o).map_err(|e| e.to_string()),
            ConfigSource::BuiltIn(text) => {
                crate::config::parse(text, std::path::Path::new(crate::config::default::BUILT_IN))
                    .map(|c| (c, Vec::new()))
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Applies a re-read config to the running process.
pub struct Reloader {
    pub source: ConfigSource,
    pub pool: PoolHandle,
    /// The listeners: those pingora started, and those reloads added.
    pub listeners: Arc<Listeners>,
    /// Certificate sets of the TLS listeners.
    pub resolvers: Vec<Arc<SniResolver>>,
    /// The active health checkers, started for upstreams that gain checks.
    pub checkers: Arc<crate::health::Checkers>,
    /// One reload at a time.
    pub running: tokio::sync::Mutex<()>,
    /// The re-resolution of `resolve` backend names, restarted with each applied config.
    pub names: Arc<crate::discovery::names::Names>,
}

#[async_trait]
impl Reload for Reloader {
    async fn reload(&self) -> Result<serde_json::Value, String> {
        let _one = self.running.lock().await;
        let result = self.apply().await;
        let m = crate::metrics::global();
        match &result {
            Ok(_) => {
                m.reloads.with_label_values(&["ok"]).inc();
                m.last_reload.set(now_secs());
            }
            Err(_) => m.reloads.with_label_values(&["failed"]).inc(),
        }
        result
    }

    fn routes(&self) -> serde_json::Value {
        let listeners = self
            .listeners
            .current_routes()
            .into_iter()
            .map(|(addr, r)| serde_json::json!({ "listen": addr.to_string(), "routes": r.table.view() }))
            .collect();
        serde_json::Value::Array(listeners)
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Reloader {
    /// Read the config again and apply it, all or nothing: everything that can fail is done
    /// first (the file read and validated, new listeners bound, every certificate read), and
    /// only then the switch, which cannot fail: the pool, the listeners and the certificates
    /// change together. A refusal changes nothing and says why.
    async fn apply(&self) -> Result<serde_json::Value, String> {
        let source = self.source.clone();
        let (config, mut warnings) = tokio::task::spawn_blocking(move || source.load())
            .await
            .map_err(|e| format!("reading the config: {e}"))??;
        let mut plan = self.listeners.prepare(&config.listeners)?;
        // The certificates of the started TLS listeners that stay (a removed one serves none),
        // as their new config names them (each server's own, and the listener's).
        let certs = self
            .resolvers
            .iter()
            .filter_map(|r| {
                let l = config
                    .listeners
                    .iter()
                    .find(|l| l.listen.to_string() == r.listener() && l.tls.is_some())?;
                Some(r.read(l).map(|c| (r, c)))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificates: {e}"))?;

        // The switch. Upstreams first, so an added listener finds its upstream.
        let changed = self
            .pool
            .reconfigure(config.upstreams.clone())
            .await
            .map_err(|e| e.to_string())?;
        self.names.follow(&config);
        warnings.extend(std::mem::take(&mut plan.warnings));
        self.listeners.commit(plan);
        for (r, c) in certs {
            r.install(c);
        }
        // Every upstream series whose upstream is gone (connections left on a removed one may
        // have counted after an earlier reload pruned it).
        let after = self.pool.snapshot();
        for gone in crate::metrics::upstreams_seen()
            .iter()
            .filter(|u| after.upstream(u).is_none())
        {
            crate::metrics::forget_upstream(gone);
        }
        self.checkers.ensure();
        for w in &warnings {
            tracing::warn!("reload: {w}");
        }
        tracing::info!(changed, "config reloaded");
        Ok(serde_json::json!({ "changed": changed, "warnings": warnings }))
    }
}
