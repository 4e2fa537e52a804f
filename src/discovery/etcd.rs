//! The etcd (v3) source. It lists `{prefix}/upstreams/`, sends the pool what differs from
//! what it knew (an `Upsert` per new or changed backend, a `Retire` per one gone), then watches
//! from the listed revision + 1, so no change between list and watch is lost. A watched put
//! is an `Upsert` of that one backend; a delete (a revoked or expired lease, or `etcdctl del`)
//! retires it: it drains, then leaves. So a change costs the pool what changed, whatever the
//! pool's size. On any error — etcd down, the watch cut, or a compacted revision — it backs
//! off, says so in a log line and a metric, and lists again. A malformed value is logged,
//! counted and ignored: the backend keeps what it had.
//!
//! While etcd is unreachable the pool keeps what it had. The known set is saved in
//! `data_dir/etcd-pool.json` (by its [`SavedFile`] writer, at most once per [`SAVE_GAP`]), so
//! a restart during an outage starts from it.

use crate::pool::saved::SavedFile;
use crate::pool::{BackendSpec, Diff, PoolHandle, Source, State};
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
/// The known set is written to [`SNAPSHOT_FILE`] at most this often, so a burst of puts costs
/// one write (the set is O(pool) bytes).
pub const SAVE_GAP: Duration = Duration::from_secs(1);

/// One upstream's etcd backends by id: persistent, so the writer gets a copy in O(1).
type Set = imbl::OrdMap<String, BackendValue>;
/// The etcd backends of the upstreams this proxy serves.
type Pool = BTreeMap<String, Set>;

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

/// The etcd source, until `stop` is cancelled (the server owns it and stops it at shutdown):
/// then the saved file's writer writes what is pending and is joined. `ready` is set once the
/// pool is loaded (the saved snapshot read, or etcd listed).
pub async fn watch(
    pool: PoolHandle,
    store: Arc<Store>,
    upstreams: Vec<String>,
    data_dir: PathBuf,
    ready: Arc<AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
) {
    let file = SavedFile::spawn(data_dir.join(SNAPSHOT_FILE), SAVE_GAP);
    tokio::select! {
        never = run(pool, store, upstreams, data_dir, ready, &file) => match never {},
        () = stop.cancelled() => {}
    }
    file.close().await;
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
    file: &SavedFile,
) -> std::convert::Infallible {
    let path = data_dir.join(SNAPSHOT_FILE);
    let mut known: Pool = upstreams.iter().map(|u| (u.clone(), Set::new())).collect();
    if let Some(saved) = load_snapshot(&path) {
        tracing::info!(path = %path.display(), "starting from the saved etcd pool");
        reconcile(&pool, &mut known, saved).await;
        ready.store(true, Ordering::Release);
    }
    let mut backoff = MIN_BACKOFF;
    loop {
        let err = session(&pool, &store, &mut known, file, &mut backoff, &ready).await;
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
    known: &mut Pool,
    file: &SavedFile,
    backoff: &mut Duration,
    ready: &AtomicBool,
) -> SessionError {
    match session_inner(pool, store, known, file, backoff, ready).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn session_inner(
    pool: &PoolHandle,
    store: &Store,
    known: &mut Pool,
    file: &SavedFile,
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
    let mut now: Pool = known.keys().map(|u| (u.clone(), Set::new())).collect();
    let mut toggles = Vec::new();
    for kv in listed.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match parse_key(prefix, &key) {
            Some(Key::Backend { upstream, id }) => {
                match (now.get_mut(upstream), parse_backend(kv.value())) {
                    (Some(set), Ok(v)) => {
                        set.insert(id.to_string(), v);
                    }
                    (None, _) => {
                        tracing::debug!(%key, "backend of an upstream this proxy does not serve")
                    }
                    (Some(set), Err(why)) => {
                        malformed(&key, &why);
                        // Ignored: the backend keeps what it had, as for a watched put.
                        if let Some(v) = known.get(upstream).and_then(|k| k.get(id)) {
                            set.insert(id.to_string(), *v);
                        }
                    }
                }
            }
            Some(Key::State { upstream, id }) => {
                toggles.push((upstream.to_string(), id.to_string(), kv.value().to_vec()))
            }
            None => malformed(&key, "not an upstreams/{u}/backends|state/{id} key"),
        }
    }
    reconcile(pool, known, now).await;
    for (upstream, id, value) in toggles {
        apply_toggle(pool, &upstream, &id, &value).await;
    }
    save_snapshot(file, known);
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
                        Ok(v) if set.get(id) == Some(&v) => {}
                        Ok(v) => {
                            set.insert(id.to_string(), v);
                            upsert(pool, upstream, id, v).await;
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
                        retire(pool, upstream, id).await;
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
            save_snapshot(file, known);
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

/// Send the pool what differs between `known` and `now` (an `Upsert` per new or changed
/// backend, a `Retire` per one gone), for the upstreams this proxy serves; `known` becomes
/// `now`. Costs the pool what changed.
async fn reconcile(pool: &PoolHandle, known: &mut Pool, mut now: Pool) {
    for (upstream, set) in known.iter_mut() {
        let next = now.remove(upstream).unwrap_or_default();
        for id in set.keys().filter(|id| !next.contains_key(*id)) {
            retire(pool, upstream, id).await;
        }
        for (id, v) in next.iter().filter(|(id, v)| set.get(*id) != Some(*v)) {
            upsert(pool, upstream, id, *v).await;
        }
        *set = next;
    }
}

/// Add or update one etcd backend.
async fn upsert(pool: &PoolHandle, upstream: &str, id: &str, v: BackendValue) {
    let backend = BackendSpec {
        id: id.into(),
        addr: v.addr,
        weight: v.weight,
        max_conns: 0,
        source: Source::Etcd,
        server: Default::default(),
    };
    if let Err(e) = pool
        .apply(Diff::Upsert {
            upstream: upstream.to_string(),
            backend,
        })
        .await
    {
        tracing::warn!(upstream, backend = id, error = %e, "etcd backend refused by the pool");
    }
}

/// Drain, then remove, one etcd backend; a later re-list does not cut the drain short.
async fn retire(pool: &PoolHandle, upstream: &str, id: &str) {
    let _ = pool
        .apply(Diff::Retire {
            upstream: upstream.to_string(),
            id: id.into(),
        })
        .await;
}

async fn apply_toggle(pool: &PoolHandle, upstream: &str, id: &str, value: &[u8]) {
    let t = match parse_toggle(value) {
        Ok(t) => t,
        Err(why) => return malformed(&format!("{upstream}/state/{id}"), &why),
    };
    if let Some(state) = t.state {
        let (upstream, id) = (upstream.into(), id.into());
        // A drain's own close spread goes with it (records without one: the upstream's).
        let diff = match state {
            State::Draining => Diff::Drain {
                upstream,
                id,
                spread: t.spread,
                operator: false,
            },
            state => Diff::SetState {
                upstream,
                id,
                state,
            },
        };
        let _ = pool.apply(diff).await;
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

/// The saved set, as `{upstream: {id: [addr, weight]}}` (the format since the first release).
type Saved = BTreeMap<String, BTreeMap<String, (std::net::SocketAddr, u32)>>;

fn load_snapshot(path: &Path) -> Option<Pool> {
    let text = std::fs::read_to_string(path).ok()?;
    let raw: Saved = serde_json::from_str(&text)
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

/// The file's contents for `known`, written straight from its maps (no copy on the way).
fn render(known: &Pool) -> serde_json::Result<Vec<u8>> {
    struct Upstreams<'a>(&'a Pool);
    struct Backends<'a>(&'a Set);
    impl serde::Serialize for Upstreams<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(u, set)| (u, Backends(set))))
        }
    }
    impl serde::Serialize for Backends<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(id, v)| (id, (v.addr, v.weight))))
        }
    }
    serde_json::to_vec(&Upstreams(known))
}

/// Hand the writer a copy of `known` (O(upstreams)); it renders and writes it off the runtime.
fn save_snapshot(file: &SavedFile, known: &Pool) {
    let known = known.clone();
    file.save(move || render(&known).map_err(|e| e.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_saved_by_the_previous_release_loads_and_is_saved_the_same_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SNAPSHOT_FILE);
        // As the previous release wrote it.
        let old = r#"{"app":{"a":["127.0.0.1:8081",1],"b":["[::1]:8082",3]},"other":{}}"#;
        std::fs::write(&path, old).unwrap();
        let pool = load_snapshot(&path).expect("loads");
        assert_eq!(
            pool["app"].get("b"),
            Some(&BackendValue {
                addr: "[::1]:8082".parse().unwrap(),
                weight: 3
            })
        );
        assert_eq!(render(&pool).unwrap(), old.as_bytes());
    }

    #[test]
    fn an_unreadable_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SNAPSHOT_FILE);
        std::fs::write(&path, "{\"app\":{\"a\":\"not an address\"}}").unwrap();
        assert_eq!(load_snapshot(&path), None);
        assert_eq!(load_snapshot(&dir.path().join("missing.json")), None);
    }
}
