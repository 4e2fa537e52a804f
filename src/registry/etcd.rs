//! The etcd ledger: registrations and toggles are written to etcd (the key schema is
//! [`crate::store::keys`]), so every instance applies them through its etcd source. A write
//! is answered once this instance's etcd source has applied the write's revision to the pool
//! (it publishes that revision on a `watch` channel, [`Store::watch_applied`]), and the pool
//! shows the change; [`DEFAULT_APPLY_WAIT`] bounds the wait (then 503: written, not seen
//! yet). Static backends are not in etcd: deleting one retires it locally ([`Local`]).
//! Owners are the `owner` field of the registration's etcd value. A registrar's new
//! registration is held to its upstream's `max_backends` again by the write itself
//! ([`Registering::New`]), so registrations racing through several instances cannot pass it.

use super::local::Local;
use super::owners::Owner;
use super::{Admitted, Ledger, RegistryError, DEFAULT_APPLY_WAIT};
use crate::discovery::fleet::Fleet;
use crate::pool::{Backend, PoolError, PoolHandle, Source, State};
use crate::store::{Registering, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// Registrations and toggles in etcd.
pub struct Etcd {
    pool: PoolHandle,
    store: Arc<Store>,
    fleet: Arc<Fleet>,
    /// Where static backends are retired.
    local: Local,
}

impl Etcd {
    pub fn new(pool: PoolHandle, store: Arc<Store>, fleet: Arc<Fleet>) -> Self {
        Etcd {
            local: Local::new(pool.clone()),
            pool,
            store,
            fleet,
        }
    }

    /// Wait until the etcd source has applied `revision`, then check that the pool shows
    /// the change (`shows`, on the backend as this instance has it).
    async fn seen(
        &self,
        revision: i64,
        upstream: &str,
        id: &str,
        shows: impl Fn(&Backend) -> bool,
    ) -> Result<(), RegistryError> {
        let mut applied = self.store.watch_applied();
        let waited = tokio::time::timeout(DEFAULT_APPLY_WAIT, applied.wait_for(|r| *r >= revision));
        if !matches!(waited.await, Ok(Ok(_))) {
            return Err(RegistryError::NotSeen);
        }
        let snap = self.pool.snapshot();
        match snap.upstream(upstream).and_then(|up| up.backend(id)) {
            Some(b) if shows(b) => Ok(()),
            _ => Err(RegistryError::NotSeen),
        }
    }

    /// 404 unless the backend exists in this instance's pool.
    fn known(&self, upstream: &str, id: &str) -> Result<(), RegistryError> {
        let snap = self.pool.snapshot();
        let up = snap
            .upstream(upstream)
            .ok_or_else(|| PoolError::UnknownUpstream(upstream.into()))?;
        match up.backend(id) {
            Some(_) => Ok(()),
            None => Err(PoolError::UnknownBackend {
                upstream: upstream.into(),
                id: id.into(),
            }
            .into()),
        }
    }

    /// Write a toggle (after the backend is known here; with `created`, only on that
    /// registration) and wait to see it applied. A state goes with a drain's own spread.
    async fn toggle(
        &self,
        upstream: &str,
        id: &str,
        state: Option<(State, Option<Duration>)>,
        weight: Option<u32>,
        created: Option<i64>,
    ) -> Result<i64, RegistryError> {
        self.known(upstream, id)?;
        let revision = self
            .store
            .toggle(upstream, id, state, weight, created)
            .await?;
        self.seen(revision, upstream, id, |b| {
            state.is_none_or(|(st, _)| b.state == st) && weight.is_none_or(|w| b.weight == w)
        })
        .await?;
        Ok(revision)
    }
}

#[async_trait::async_trait]
impl Ledger for Etcd {
    fn source(&self) -> Source {
        Source::Etcd
    }

    fn creates_once(&self) -> bool {
        true
    }

    async fn owner(&self, upstream: &str, id: &str) -> Result<Owner, RegistryError> {
        let (fingerprint, created) = self.store.owner(upstream, id).await?;
        Ok(Owner {
            fingerprint,
            created,
        })
    }

    async fn register(&self, r: &Admitted) -> Result<(), RegistryError> {
        let (u, reg) = (r.upstream.as_str(), &r.registration);
        let write = match r.fresh {
            true => Registering::New {
                max: r.max_backends,
            },
            false => Registering::Refresh(r.created),
        };
        let revision = self
            .store
            .register(
                u,
                &reg.id,
                reg.addr,
                reg.weight,
                reg.ttl,
                r.owner.as_deref(),
                write,
            )
            .await
            .map_err(|e| match e {
                // The same refusal as the pool's count, counted in etcd at the write.
                StoreError::Full { upstream, max } => RegistryError::Full { upstream, max },
                e => e.into(),
            })?;
        // Seen by address: an operator's weight toggle may stand in for the weight.
        self.seen(revision, u, &reg.id, |b| b.addr == reg.addr)
            .await
    }

    async fn heartbeat(
        &self,
        upstream: &str,
        id: &str,
        _ttl: Option<Duration>,
    ) -> Result<Option<Duration>, RegistryError> {
        if !self.store.heartbeat(upstream, id).await? {
            return Err(RegistryError::Lapsed {
                upstream: upstream.into(),
                id: id.into(),
            });
        }
        Ok(None)
    }

    async fn deregister(
        &self,
        upstream: &str,
        id: &str,
        operator: bool,
        created: Option<i64>,
    ) -> Result<(), RegistryError> {
        let from_etcd = self
            .pool
            .snapshot()
            .upstream(upstream)
            .and_then(|up| up.backend(id))
            .is_some_and(|b| b.source == Source::Etcd);
        if !from_etcd {
            return self.local.deregister(upstream, id, operator, created).await;
        }
        // Every instance drains it, then removes it, as the delete reaches its watch.
        self.store.deregister(upstream, id, created).await?;
        Ok(())
    }

    async fn set_state(
        &self,
        upstream: &str,
        id: &str,
        state: State,
        spread: Option<Duration>,
        _operator: bool,
        created: Option<i64>,
    ) -> Result<i64, RegistryError> {
        self.toggle(upstream, id, Some((state, spread)), None, created)
            .await
    }

    async fn set_weight(&self, upstream: &str, id: &str, weight: u32) -> Result<(), RegistryError> {
        self.toggle(upstream, id, None, Some(weight), None).await?;
        Ok(())
    }

    fn instances(&self) -> Vec<String> {
        self.fleet.instances()
    }

    fn held(
        &self,
        upstream: &str,
        id: &str,
        since: i64,
        expected: &[String],
        _: u64,
    ) -> Option<u64> {
        self.fleet.held(upstream, id, since, expected)
    }
}
