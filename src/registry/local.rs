//! The local ledger (no etcd): registrations and toggles are diffs to this process's
//! controller, and each is answered when the controller replies, after it published the
//! change. Registration owners are kept in memory ([`LocalOwners`]).

use super::owners::{LocalOwners, Owner};
use super::{Admitted, Ledger, RegistryError, DEFAULT_TTL};
use crate::pool::{BackendSpec, Diff, PoolHandle, Source, State};
use std::time::Duration;

/// Registrations in this process's pool.
pub struct Local {
    pool: PoolHandle,
    owners: LocalOwners,
}

impl Local {
    pub fn new(pool: PoolHandle) -> Self {
        Local {
            pool,
            owners: LocalOwners::default(),
        }
    }
}

#[async_trait::async_trait]
impl Ledger for Local {
    fn source(&self) -> Source {
        Source::Http
    }

    fn creates_once(&self) -> bool {
        false
    }

    async fn owner(&self, upstream: &str, id: &str) -> Result<Owner, RegistryError> {
        Ok(Owner {
            fingerprint: self.owners.get(upstream, id),
            created: 0,
        })
    }

    async fn register(&self, r: &Admitted) -> Result<(), RegistryError> {
        let reg = &r.registration;
        self.pool
            .apply(Diff::Add {
                upstream: r.upstream.clone(),
                backend: BackendSpec {
                    id: reg.id.as_str().into(),
                    addr: reg.addr,
                    weight: reg.weight,
                    max_conns: 0,
                    source: Source::Http,
                    server: Default::default(),
                },
                ttl: Some(reg.ttl),
                operator: r.operator,
            })
            .await?;
        if let Some(owner) = &r.owner {
            self.owners.set(&r.upstream, &reg.id, owner.clone());
        }
        Ok(())
    }

    async fn heartbeat(
        &self,
        upstream: &str,
        id: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Duration>, RegistryError> {
        let live = self
            .pool
            .snapshot()
            .upstream(upstream)
            .and_then(|up| up.backend(id))
            .map(|b| b.live.clone())
            .filter(|l| l.expires_in_ms() != Some(0));
        let Some(live) = live else {
            return Err(RegistryError::Lapsed {
                upstream: upstream.into(),
                id: id.into(),
            });
        };
        let ttl = ttl.or(live.ttl()).unwrap_or(DEFAULT_TTL);
        self.pool
            .apply(Diff::Heartbeat {
                upstream: upstream.into(),
                id: id.into(),
                ttl,
            })
            .await?;
        Ok(Some(ttl))
    }

    async fn deregister(
        &self,
        upstream: &str,
        id: &str,
        operator: bool,
        _created: Option<i64>,
    ) -> Result<(), RegistryError> {
        self.pool
            .apply(Diff::Retire {
                upstream: upstream.into(),
                id: id.into(),
            })
            .await?;
        if operator {
            // An operator's delete ends the operator's decision on the id.
            self.pool
                .apply(Diff::Decide {
                    upstream: upstream.into(),
                    id: id.into(),
                    state: State::Active,
                })
                .await?;
        }
        Ok(())
    }

    async fn set_state(
        &self,
        upstream: &str,
        id: &str,
        state: State,
        spread: Option<Duration>,
        operator: bool,
        _created: Option<i64>,
    ) -> Result<i64, RegistryError> {
        let (upstream, id) = (upstream.into(), id.into());
        self.pool
            .apply(match (state, operator) {
                (State::Draining, _) => Diff::Drain {
                    upstream,
                    id,
                    spread,
                    operator,
                },
                (_, true) => Diff::Decide {
                    upstream,
                    id,
                    state,
                },
                (_, false) => Diff::SetState {
                    upstream,
                    id,
                    state,
                },
            })
            .await?;
        Ok(0)
    }

    async fn set_weight(&self, upstream: &str, id: &str, weight: u32) -> Result<(), RegistryError> {
        self.pool
            .apply(Diff::SetWeight {
                upstream: upstream.into(),
                id: id.into(),
                weight,
            })
            .await?;
        Ok(())
    }

    fn instances(&self) -> Vec<String> {
        Vec::new()
    }

    fn held(&self, _: &str, _: &str, _: i64, _: &[String], own: u64) -> Option<u64> {
        Some(own)
    }
}
