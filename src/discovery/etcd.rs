//! The etcd (v3) source. It lists `{prefix}/upstreams/`, publishes that set with a `Reset` per
//! upstream, then watches from the listed revision + 1, so no change between list and watch is
//! lost. A delete (a revoked or expired lease, or `etcdctl del`) retires the backend: it
//! drains, then leaves. On any error — etcd down, the watch cut, or a compacted revision — it
//! backs off, says so in a log line and a metric, and lists again.
//!
//! While etcd is unreachable the pool keeps what it had. The last listed set is saved in
//! `data_dir/etcd-pool.json`, so a restart during an outage starts from it.

use crate::pool::{BackendSpec, Diff, PoolHandle, Source};
use crate::store::keys::{
    parse_backend, parse_key, parse_toggle, upstreams_root, BackendValue, Key,
};
use crate::store::{Store, StoreError};
use etcd_client::{EventType, GetOptions, WatchOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// File in `data_dir` with the last known etcd backends.
pub const SNAPSHOT_FILE: &str = "etcd-pool.json";
/// First retry delay after a lost session; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

type Pool = BTreeMap<String, BTreeMap<String, BackendValue>>;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Etcd(#[from] etcd_client::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("watch cancelled by etcd ({0}); listing again")]
    Cancelled(String),
    #[error("watch stream ended")]
    Ended,
}

/// The etcd source, until dropped (the server owns it and stops it at shutdown); `ready` is
/// set once the pool is loaded (the saved snapshot read, or etcd listed).
pub async fn watch(
    pool: PoolHandle,
    store: Arc<Store>,
    upstreams: Vec<String>,
    data_dir: PathBuf,
    ready: Arc<AtomicBool>,
) {
    run(pool, store, upstreams, data_dir, ready).await
}

fn metrics() -> &'static crate::metrics::Metrics {
    crate::metrics::global()
}

async fn run(
    pool: PoolHandle,
    store: Arc<Store>,
    upstreams: Vec<String>,
    data_dir: PathBuf,
    ready: Arc<AtomicBool>,
) {
    let snapshot = data_dir.join(SNAPSHOT_FILE);
    if let Some(saved) = load_snapshot(&snapshot) {
        tracing::info!(path = %snapshot.display(), "starting from the saved etcd pool");
        publish(&pool, &upstreams, &saved).await;
        ready.store(true, Ordering::Release);
    }
    let mut backoff = MIN_BACKOFF;
    loop {
        let err = session(&pool, &store, &upstreams, &snapshot, &mut backoff, &ready).await;
        metrics().etcd_up.set(0);
        metrics().etcd_sessions_lost.inc();
        tracing::warn!(error = %err, retry_in = ?backoff, "etcd session lost; serving the last known pool");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(
    pool: &PoolHandle,
    store: &Store,
    upstreams: &[String],
    snapshot: &Path,
    backoff: &mut Duration,
    ready: &AtomicBool,
) -> SessionError {
    match session_inner(pool, store, upstreams, snapshot, backoff, ready).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn session_inner(
    pool: &PoolHandle,
    store: &Store,
    upstreams: &[String],
    snapshot: &Path,
    backoff: &mut Duration,
    ready: &AtomicBool,
) -> Result<std::convert::Infallible, SessionError> {
    let mut client = store.client().await?;
    let prefix = store.settings().prefix.as_str();
    let root = upstreams_root(prefix);
    let listed = client
        .get(root.clone(), Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = listed.header().map_or(0, |h| h.revision());
    let mut known: Pool = upstreams
        .iter()
        .map(|u| (u.clone(), BTreeMap::new()))
        .collect();
    let mut toggles = Vec::new();
    for kv in listed.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match parse_key(prefix, &key) {
            Some(Key::Backend { upstream, id }) => {
                match (known.get_mut(upstream), parse_backend(kv.value())) {
                    (Some(set), Ok(v)) => {
                        set.insert(id.to_string(), v);
                    }
                    (None, _) => {
                        tracing::debug!(%key, "backend of an upstream this proxy does not serve")
                    }
                    (_, Err(why)) => malformed(&key, &why),
                }
            }
            Some(Key::State { upstream, id }) => {
                toggles.push((upstream.to_string(), id.to_string(), kv.value().to_vec()))
            }
            None => malformed(&key, "not an upstreams/{u}/backends|state/{id} key"),
        }
    }
    publish(pool, upstreams, &known).await;
    for (upstream, id, value) in toggles {
        apply_toggle(pool, &upstream, &id, &value).await;
    }
    save_snapshot(snapshot, &known);
    store.applied(revision);
    ready.store(true, Ordering::Release);
    metrics().etcd_up.set(1);
    *backoff = MIN_BACKOFF;
    tracing::info!(revision, "etcd listed; watching");

    let mut stream = client
        .watch(
            root,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await?;
    while let Some(resp) = stream.message().await? {
        if resp.canceled() || resp.compact_revision() > 0 {
            return Err(SessionError::Cancelled(format!(
                "{}; compacted at {}",
                resp.cancel_reason(),
                resp.compact_revision()
            )));
        }
        let mut changed = false;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match (parse_key(prefix, &key), ev.event_type()) {
                (Some(Key::Backend { upstream, id }), EventType::Put) => {
                    let Some(set) = known.get_mut(upstream) else {
                        continue;
                    };
                    match parse_backend(kv.value()) {
                        Ok(v) => {
                            set.insert(id.to_string(), v);
                            publish_one(pool, upstream, set).await;
                            changed = true;
                        }
                        Err(why) => malformed(&key, &why),
                    }
                }
                (Some(Key::Backend { upstream, id }), EventType::Delete) => {
                    let Some(set) = known.get_mut(upstream) else {
                        continue;
                    };
                    if set.remove(id).is_some() {
                        changed = true;
                        // Drain, then leave; a later Reset does not cut the drain short.
                        let _ = pool
                            .apply(Diff::Retire {
                                upstream: upstream.to_string(),
                                id: id.into(),
                            })
                            .await;
                    }
                }
                (Some(Key::State { upstream, id }), EventType::Put) => {
                    apply_toggle(pool, upstream, id, kv.value()).await;
                }
                (Some(Key::State { upstream, id }), EventType::Delete) => {
                    let _ = pool
                        .apply(Diff::SetState {
                            upstream: upstream.to_string(),
                            id: id.into(),
                            state: crate::pool::State::Active,
                        })
                        .await;
                }
                (None, _) => malformed(&key, "not an upstreams/{u}/backends|state/{id} key"),
            }
        }
        if changed {
            save_snapshot(snapshot, &known);
        }
        // Every event of this response is in the pool: writers waiting for it may answer.
        let last = resp
            .events()
            .iter()
            .filter_map(|ev| ev.kv())
            .map(|kv| kv.mod_revision());
        store.applied(last.max().unwrap_or(0));
    }
    Err(SessionError::Ended)
}

fn malformed(key: &str, why: &str) {
    metrics().etcd_malformed.inc();
    tracing::warn!(%key, %why, "ignoring a malformed etcd entry");
}

fn specs(set: &BTreeMap<String, BackendValue>) -> Vec<BackendSpec> {
    set.iter()
        .map(|(id, v)| BackendSpec {
            id: id.as_str().into(),
            addr: v.addr,
            weight: v.weight,
            max_conns: 0,
            source: Source::Etcd,
            server: Default::default(),
        })
        .collect()
}

async fn publish_one(pool: &PoolHandle, upstream: &str, set: &BTreeMap<String, BackendValue>) {
    if let Err(e) = pool
        .apply(Diff::Reset {
            upstream: upstream.to_string(),
            source: Source::Etcd,
            backends: specs(set),
        })
        .await
    {
        tracing::warn!(upstream, error = %e, "etcd backends refused by the pool");
    }
}

async fn publish(pool: &PoolHandle, upstreams: &[String], known: &Pool) {
    for u in upstreams {
        let empty = BTreeMap::new();
        publish_one(pool, u, known.get(u).unwrap_or(&empty)).await;
    }
}

async fn apply_toggle(pool: &PoolHandle, upstream: &str, id: &str, value: &[u8]) {
    let t = match parse_toggle(value) {
        Ok(t) => t,
        Err(why) => return malformed(&format!("{upstream}/state/{id}"), &why),
    };
    if let Some(state) = t.state {
        let _ = pool
            .apply(Diff::SetState {
                upstream: upstream.into(),
                id: id.into(),
                state,
            })
            .await;
    }
    if let Some(weight) = t.weight {
        let _ = pool
            .apply(Diff::SetWeight {
                upstream: upstream.into(),
                id: id.into(),
                weight,
            })
            .await;
    }
}

fn load_snapshot(path: &Path) -> Option<Pool> {
    let text = std::fs::read_to_string(path).ok()?;
    let raw: BTreeMap<String, BTreeMap<String, (std::net::SocketAddr, u32)>> = serde_json::from_str(&text)
        .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable etcd snapshot"))
        .ok()?;
    Some(
        raw.into_iter()
            .map(|(u, set)| {
                let set = set
                    .into_iter()
                    .map(|(id, (addr, weight))| (id, BackendValue { addr, weight }))
                    .collect();
                (u, set)
            })
            .collect(),
    )
}

fn save_snapshot(path: &Path, known: &Pool) {
    let raw: BTreeMap<&String, BTreeMap<&String, (std::net::SocketAddr, u32)>> = known
        .iter()
        .map(|(u, set)| {
            (
                u,
                set.iter().map(|(id, v)| (id, (v.addr, v.weight))).collect(),
            )
        })
        .collect();
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&raw)?)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "could not save the etcd snapshot");
    }
}
