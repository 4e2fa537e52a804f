//! Connection counts across the fleet, through etcd. Every tideway instance on one etcd
//! publishes its own counts about once a second at `{prefix}/instances/{instance}`, under a
//! lease of its own (so an instance that dies drops out within [`LEASE_TTL`]), and reads
//! everyone's. The scale signal, `GET /v1/upstreams/{u}` and `drain?wait` then speak for the
//! whole fleet, not one instance.
//!
//! A report holds, per upstream, the instance's active connections (requests in flight and
//! tunnels) and, per backend, those of every backend that has any or is draining: what a
//! fleet-wide drain waits on. It also holds the instance's client connections (every
//! listener's) and its open WebSockets (the sum of its backends' counts, as
//! `tideway_websocket_open` shows them), for the dashboard's view of the fleet; an older instance
//! that does not say leaves them out.

use crate::pool::{PoolHandle, Snapshot, State};
use crate::store::{keys, Store, StoreError};
use etcd_client::{GetOptions, PutOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often an instance publishes its counts and reads the others'.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// Lease of an instance's report: it is gone this long after the instance stops.
pub const LEASE_TTL: i64 = 3;

/// One upstream's counts on one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamCount {
    pub active: u64,
    /// Active connections per backend: every backend with any, and every draining one (0 too).
    #[serde(default)]
    pub backends: BTreeMap<String, u64>,
}

/// One instance's counts (when it was written is etcd's revision of it, not a clock).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub upstreams: BTreeMap<String, UpstreamCount>,
    /// Client connections the instance holds on its listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<u64>,
    /// WebSockets open on the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websockets: Option<u64>,
}

impl Report {
    /// This instance's counts in `snap`, now.
    pub fn of(snap: &Snapshot) -> Report {
        let upstreams = snap
            .upstreams
            .iter()
            .map(|(name, u)| {
                let count = UpstreamCount {
                    active: u.backends.iter().map(|b| b.live.active()).sum(),
                    backends: u
                        .backends
                        .iter()
                        .filter(|b| b.state == State::Draining || b.live.active() > 0)
                        .map(|b| (b.id.to_string(), b.live.active()))
                        .collect(),
                };
                (name.clone(), count)
            })
            .collect();
        Report {
            upstreams,
            clients: Some(crate::net::fds::proxied().open() as u64),
            websockets: Some(
                snap.upstreams
                    .values()
                    .flat_map(|u| u.backends.iter())
                    .map(|b| b.live.websockets())
                    .fold(0, u64::saturating_add),
            ),
        }
    }
}

/// The fleet as this instance last read it.
pub struct Fleet {
    /// This instance's name in the fleet.
    pub instance: String,
    pool: PoolHandle,
    /// The other instances' reports, with the etcd revision each was written at.
    others: RwLock<BTreeMap<String, (i64, Report)>>,
}

/// One instance's share of an upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InstanceCount {
    pub instance: String,
    pub active_connections: u64,
}

impl Fleet {
    pub fn new(instance: String, pool: PoolHandle) -> Self {
        // Upgrade admission waits for the fleet's size (see `Instances`).
        pool.instances().unknown();
        Fleet {
            instance,
            pool,
            others: RwLock::new(BTreeMap::new()),
        }
    }

    fn others(&self) -> BTreeMap<String, (i64, Report)> {
        self.others
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Active connections to `upstream` on every instance (this one counted now, the others
    /// as last reported), by instance.
    pub fn upstream_counts(&self, upstream: &str) -> Vec<InstanceCount> {
        let own = self
            .pool
            .snapshot()
            .upstream(upstream)
            .map_or(0, |u| u.backends.iter().map(|b| b.live.active()).sum());
        let mut all = vec![InstanceCount {
            instance: self.instance.clone(),
            active_connections: own,
        }];
        for (instance, (_, r)) in self.others() {
            all.push(InstanceCount {
                instance,
                active_connections: r.upstreams.get(upstream).map_or(0, |c| c.active),
            });
        }
        all
    }

    /// Every instance's report: this one's now (first), the others' as last read.
    pub fn reports(&self) -> Vec<(String, Report)> {
        let mut all = vec![(self.instance.clone(), Report::of(&self.pool.snapshot()))];
        all.extend(self.others().into_iter().map(|(name, (_, r))| (name, r)));
        all
    }

    /// The other instances, as last read.
    pub fn instances(&self) -> Vec<String> {
        self.others().into_keys().collect()
    }

    /// Connections the fleet still holds to a backend, counting only reports written to etcd
    /// after revision `since` (etcd's order, not the instances' clocks): `None` while an
    /// instance has not reported since, or while one of `expected` (the instances seen when
    /// the drain began) is missing, since its connections are then unknown.
    pub fn held(&self, upstream: &str, id: &str, since: i64, expected: &[String]) -> Option<u64> {
        let own = self
            .pool
            .snapshot()
            .upstream(upstream)
            .and_then(|u| u.backend(id))
            .map_or(0, |b| b.live.active());
        let others = self.others();
        if expected.iter().any(|name| !others.contains_key(name)) {
            return None;
        }
        let mut total = own;
        for (revision, r) in others.values() {
            if *revision <= since {
                return None;
            }
            total += r
                .upstreams
                .get(upstream)
                .and_then(|c| c.backends.get(id))
                .copied()
                .unwrap_or(0);
        }
        Some(total)
    }

    fn set_others(&self, others: BTreeMap<String, (i64, Report)>) {
        // Upgrade admission shares its rate as rebalancing does: among 1 + the others.
        self.pool.instances().set(1 + others.len());
        *self.others.write().unwrap_or_else(|e| e.into_inner()) = others;
    }
}

/// Publish this instance's counts and read the fleet's until dropped (the server owns it and
/// stops it at shutdown); an etcd outage keeps the last known counts and retries.
pub async fn publisher(fleet: Arc<Fleet>, store: Arc<Store>) {
    loop {
        if let Err(e) = session(&fleet, &store).await {
            tracing::warn!(error = %e, "fleet counts: etcd session lost; retrying");
        }
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
}

async fn session(fleet: &Fleet, store: &Store) -> Result<(), StoreError> {
    let mut client = store.client().await?;
    let lease = client.lease_grant(LEASE_TTL, None).await?.id();
    let (mut keeper, mut acks) = client.lease_keep_alive(lease).await?;
    let root = keys::instances_root(&store.settings().prefix);
    let key = format!("{root}{}", fleet.instance);
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    loop {
        tick.tick().await;
        keeper.keep_alive().await?;
        if acks.message().await?.is_none_or(|a| a.ttl() <= 0) {
            return Err(StoreError::Unavailable(
                etcd_client::Error::LeaseKeepAliveError("the instance lease expired".into()),
            ));
        }
        let report = Report::of(&fleet.pool.snapshot());
        let value = serde_json::to_vec(&report).unwrap_or_default();
        client
            .put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        let listed = client
            .get(root.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        let others = listed
            .kvs()
            .iter()
            .filter_map(|kv| {
                let name = String::from_utf8_lossy(kv.key())
                    .strip_prefix(&root)?
                    .to_string();
                let report: Report = serde_json::from_slice(kv.value()).ok()?;
                (name != fleet.instance).then_some((name, (kv.mod_revision(), report)))
            })
            .collect();
        fleet.set_others(others);
    }
}
