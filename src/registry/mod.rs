//! The registry: every change the admin API makes to the pool's membership (register,
//! heartbeat, deregister, state and weight toggles, drain) goes through one [`Registry`],
//! which checks it and hands it to one of two [`Ledger`]s:
//! - [`local::Local`] (no etcd): diffs to the controller, answered once the controller has
//!   published the change (the reply of [`PoolHandle::apply`]);
//! - [`etcd::Etcd`]: writes to etcd, answered once the etcd source has applied the write's
//!   revision to this process's pool (a `watch` channel, [`crate::store::Store::watch_applied`]),
//!   within [`DEFAULT_APPLY_WAIT`].
//!
//! Every check lives here, before anything is written, so a refused request changes nothing:
//! the weight range, tideway's own addresses, the registration token's scope (address ranges,
//! weight limit, registration count), ownership (a registrar manages only registrations it
//! made, proven by the registration's secret, [`owners`]), and conflicts (the same id at
//! another address or from another source, [`crate::pool::Backend::admits`], which the
//! controller asks too). Without etcd, an operator's decision (a state set with the admin token)
//! sticks against registrars; the controller keeps those ([`crate::pool::Diff::Decide`]).
//! With etcd it does not yet (see docs/limits.md).
//!
//! Imports: `pool`, `config`, `store`, `discovery` (the fleet's counts). Never `admin` or
//! `proxy`: HTTP is the admin layer's, which maps [`RegistryError`] to statuses.

pub mod etcd;
pub mod local;
pub mod owners;

use crate::pool::{PoolError, PoolHandle, Source, State};
use crate::store::StoreError;
use owners::Owner;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Registration TTL when none is given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Longest drain wait.
pub const MAX_DRAIN_WAIT: Duration = Duration::from_secs(3600);
/// How long a write through etcd waits to see its own change in this instance's pool.
pub const DEFAULT_APPLY_WAIT: Duration = Duration::from_secs(5);
/// How often a drain wait reads the connection counts.
pub const DEFAULT_DRAIN_POLL: Duration = Duration::from_millis(50);

/// Why the registry refused a change. A refused change leaves the pool (and etcd) as it was.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the register token may not do this")]
    OperatorOnly,
    #[error("the register token may only manage backends registered over HTTP")]
    NotRegistered,
    #[error(
        "registration {id:?} in upstream {upstream:?} was not made with this secret; \
         send the secret its registration returned in X-Registration-Secret"
    )]
    NotYours { upstream: String, id: String },
    #[error("{0} is one of tideway's own addresses (a listener, the admin API or etcd)")]
    OwnAddress(SocketAddr),
    #[error("{ip} is outside the ranges upstream {upstream:?} takes registrations from")]
    OutOfScope {
        ip: std::net::IpAddr,
        upstream: String,
    },
    #[error("weight {weight} is over upstream {upstream:?}'s limit of {max} for registrations")]
    OverWeight {
        weight: u32,
        upstream: String,
        max: u32,
    },
    #[error("upstream {upstream:?} has reached its limit of {max} registrations")]
    Full { upstream: String, max: usize },
    #[error("backend {id:?} is unknown or expired in upstream {upstream:?}; register again")]
    Lapsed { upstream: String, id: String },
    #[error("wait must be at most 1h")]
    WaitTooLong,
    #[error(
        "backend {id:?} is already draining with a close spread of {}; a drain under way \
         keeps its spread (set it active first to start another)",
        humantime::format_duration(*current)
    )]
    OtherSpread { id: String, current: Duration },
    #[error("written to etcd but not seen back from the watch yet")]
    NotSeen,
}

/// Who asks for a change. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin token: any backend, and its state decisions stick.
    Operator,
    /// The register token, with the registration's secret if it sent one: only registrations
    /// it made, within the upstream's registration scope.
    Registrar { secret: Option<String> },
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Operator => f.write_str("Operator"),
            Caller::Registrar { secret } => {
                write!(
                    f,
                    "Registrar {{ secret: {} }}",
                    secret.as_ref().map_or("none", |_| "…")
                )
            }
        }
    }
}

/// Leave to change one backend, given by [`Registry::grant`] (the only way to make one), so
/// no change runs unchecked.
#[derive(Debug)]
pub struct Grant {
    upstream: String,
    id: String,
    operator: bool,
    /// A registrar's: the registration whose owner it proved to be (a write insists on it).
    proven: Option<Owner>,
}

impl Grant {
    /// A registrar's: etcd's create revision of the registration it proved to own.
    fn created(&self) -> Option<i64> {
        self.proven.as_ref().map(|o| o.created)
    }
}

/// Leave to toggle state and weight: the admin token's ([`Registry::operator`]).
#[derive(Debug)]
pub struct Operator(());

/// A registration as asked (parsed; the registry checks it).
#[derive(Clone, Debug)]
pub struct Registration {
    pub id: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub ttl: Duration,
}

/// A registration that passed every check, as a ledger writes it.
#[derive(Clone, Debug)]
pub struct Admitted {
    pub upstream: String,
    pub registration: Registration,
    /// Fingerprint of the owner's secret (None: a refresh of one made without a secret).
    pub owner: Option<String>,
    /// New, not a refresh of the same id.
    pub fresh: bool,
    /// A refresh's: etcd's create revision of the registration refreshed (0 without etcd).
    pub created: i64,
    /// Made with the admin token.
    pub operator: bool,
    /// A registrar's new registration: its upstream's `max_backends`, which etcd's write
    /// checks again (registrations racing through several instances).
    pub max_backends: Option<usize>,
}

/// A registration made: `secret` only for a new one (returned once). Its `Debug` never
/// shows the secret.
pub struct Registered {
    pub fresh: bool,
    pub secret: Option<String>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("fresh", &self.fresh)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .finish()
    }
}

/// A drain's outcome: the connections still held (None: unknown, an instance of the fleet
/// has not reported since the drain began) and this instance's own, and the close spread
/// its drain has here (None: no longer draining).
#[derive(Debug)]
pub struct Drained {
    pub held: Option<u64>,
    pub own: u64,
    pub spread: Option<Duration>,
}

/// Where registrations and toggles are written: the local pool, or etcd. Callers are
/// checked by the [`Registry`] before a ledger is asked.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync {
    /// The source a registration's backend gets in the pool.
    fn source(&self) -> Source;
    /// Does the ledger itself refuse a second creation of one id (etcd's transaction, which
    /// also holds a registrar's new one to `max_backends`)? If not, the registry runs one
    /// registration at a time.
    fn creates_once(&self) -> bool;
    /// Who made a registration.
    async fn owner(&self, upstream: &str, id: &str) -> Result<Owner, RegistryError>;
    /// Write a registration; answered once this instance's pool has it.
    async fn register(&self, r: &Admitted) -> Result<(), RegistryError>;
    /// Refresh a registration's TTL (`ttl`, or the one it had); the TTL now running, when
    /// this ledger keeps it.
    async fn heartbeat(
        &self,
        upstream: &str,
        id: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Duration>, RegistryError>;
    /// Drain, then remove; an operator's delete also ends its decision on the id. With
    /// `created`, only the registration made then.
    async fn deregister(
        &self,
        upstream: &str,
        id: &str,
        operator: bool,
        created: Option<i64>,
    ) -> Result<(), RegistryError>;
    /// Set the state (an operator's is a decision that sticks), a drain with its own close
    /// `spread` if given (the registry checked it); returns the etcd revision of the write (0
    /// without etcd).
    async fn set_state(
        &self,
        upstream: &str,
        id: &str,
        state: State,
        spread: Option<Duration>,
        operator: bool,
        created: Option<i64>,
    ) -> Result<i64, RegistryError>;
    /// Set the weight (in range: the registry checked it).
    async fn set_weight(&self, upstream: &str, id: &str, weight: u32) -> Result<(), RegistryError>;
    /// The other instances whose connections a drain waits for.
    fn instances(&self) -> Vec<String>;
    /// Connections still held to a backend, counting reports after revision `since`; `own`
    /// is this instance's count.
    fn held(
        &self,
        upstream: &str,
        id: &str,
        since: i64,
        expected: &[String],
        own: u64,
    ) -> Option<u64>;
}

/// The one way the admin API changes membership.
pub struct Registry {
    pool: PoolHandle,
    /// Never a registration's, besides tideway's listeners ([`PoolHandle::own`]): the admin
    /// API and the etcd endpoints.
    reserved: Vec<SocketAddr>,
    ledger: Box<dyn Ledger>,
    /// Held across a local registration's checks and write, so two racing registrations of
    /// one new id cannot both get a secret (etcd's transaction does that with etcd).
    registering: tokio::sync::Mutex<()>,
}

impl Registry {
    /// Registrations kept in this process's pool.
    pub fn local(pool: PoolHandle, reserved: Vec<SocketAddr>) -> Self {
        let ledger = Box::new(local::Local::new(pool.clone()));
        Registry::with(pool, reserved, ledger)
    }

    /// Registrations and toggles written to etcd (static backends stay local).
    pub fn etcd(
        pool: PoolHandle,
        reserved: Vec<SocketAddr>,
        store: Arc<crate::store::Store>,
        fleet: Arc<crate::discovery::fleet::Fleet>,
    ) -> Self {
        let ledger = Box::new(etcd::Etcd::new(pool.clone(), store, fleet));
        Registry::with(pool, reserved, ledger)
    }

    fn with(pool: PoolHandle, reserved: Vec<SocketAddr>, ledger: Box<dyn Ledger>) -> Self {
        Registry {
            pool,
            reserved,
            ledger,
            registering: tokio::sync::Mutex::new(()),
        }
    }

    /// Is `addr` one of tideway's own: a listener (those a reload added too; one on 0.0.0.0
    /// or :: covers every local address on its port), the admin API or an etcd endpoint?
    pub fn is_reserved(&self, addr: SocketAddr) -> bool {
        if self.pool.own().reaches(addr).is_some() {
            return true;
        }
        let ip = addr.ip().to_canonical();
        self.reserved.iter().any(|r| {
            r.port() == addr.port()
                && (r.ip().to_canonical() == ip || r.ip().is_unspecified() || ip.is_loopback())
        })
    }

    /// Leave for `who` to change backend `id` of `upstream`: an operator always; a registrar
    /// only for a registration it made (not a static backend), with its secret.
    pub async fn grant(
        &self,
        who: &Caller,
        upstream: &str,
        id: &str,
    ) -> Result<Grant, RegistryError> {
        let mut proven = None;
        if let Caller::Registrar { secret } = who {
            let source = {
                let snap = self.pool.snapshot();
                let up = snap
                    .upstream(upstream)
                    .ok_or_else(|| PoolError::UnknownUpstream(upstream.into()))?;
                up.backend(id).map(|b| b.source)
            };
            match source {
                Some(Source::Static) => return Err(RegistryError::NotRegistered),
                Some(_) => proven = Some(self.prove(secret.as_deref(), upstream, id).await?),
                None => {
                    return Err(PoolError::UnknownBackend {
                        upstream: upstream.into(),
                        id: id.into(),
                    }
                    .into())
                }
            }
        }
        Ok(Grant {
            upstream: upstream.into(),
            id: id.into(),
            operator: *who == Caller::Operator,
            proven,
        })
    }

    /// Leave to toggle state and weight: the operator's only.
    pub fn operator(&self, who: &Caller) -> Result<Operator, RegistryError> {
        match who {
            Caller::Operator => Ok(Operator(())),
            Caller::Registrar { .. } => Err(RegistryError::OperatorOnly),
        }
    }

    /// Does `secret` prove ownership of the registration? Returns the owner it proved.
    async fn prove(
        &self,
        secret: Option<&str>,
        upstream: &str,
        id: &str,
    ) -> Result<Owner, RegistryError> {
        let owner = self.ledger.owner(upstream, id).await?;
        if owners::proves(secret, owner.fingerprint.as_deref()) {
            Ok(owner)
        } else {
            Err(RegistryError::NotYours {
                upstream: upstream.into(),
                id: id.into(),
            })
        }
    }

    /// Register a backend, or refresh a registration (same id, same address).
    pub async fn register(
        &self,
        who: &Caller,
        upstream: &str,
        r: Registration,
    ) -> Result<Registered, RegistryError> {
        let _one_at_a_time = self.one_at_a_time().await;
        let (admitted, secret) = self.admit(who, upstream, r).await?;
        self.ledger.register(&admitted).await?;
        Ok(Registered {
            fresh: admitted.fresh,
            secret,
        })
    }

    /// Without a ledger that refuses a second creation itself: hold the registry's writes one
    /// at a time, so a check and the write it allows are not split by another's write.
    async fn one_at_a_time(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.ledger.creates_once() {
            false => Some(self.registering.lock().await),
            true => None,
        }
    }

    /// A registrar's grant still holds: the registration is the one it proved to own (with
    /// etcd the write insists on it again).
    async fn still(&self, g: &Grant) -> Result<(), RegistryError> {
        match &g.proven {
            Some(owner) if self.ledger.owner(&g.upstream, &g.id).await? != *owner => {
                Err(RegistryError::NotYours {
                    upstream: g.upstream.clone(),
                    id: g.id.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Every check of a registration, in order; nothing is written here.
    async fn admit(
        &self,
        who: &Caller,
        upstream: &str,
        r: Registration,
    ) -> Result<(Admitted, Option<String>), RegistryError> {
        check_weight(r.weight)?;
        let (existing, registered, scope) = {
            let snap = self.pool.snapshot();
            let up = snap
                .upstream(upstream)
                .ok_or_else(|| PoolError::UnknownUpstream(upstream.into()))?;
            let existing = up
                .backend(&r.id)
                .map(|b| (b.source, b.admits(r.addr, self.ledger.source())));
            let registration = up.policy.registration.clone();
            (existing, up.backends.registered(), registration)
        };
        // Not even the admin token's: tideway would proxy to itself.
        if self.is_reserved(r.addr) {
            return Err(RegistryError::OwnAddress(r.addr));
        }
        let mut proven = None;
        if let Caller::Registrar { secret } = who {
            if !scope.allows(r.addr.ip()) {
                return Err(RegistryError::OutOfScope {
                    ip: r.addr.ip(),
                    upstream: upstream.into(),
                });
            }
            if r.weight > scope.max_weight {
                return Err(RegistryError::OverWeight {
                    weight: r.weight,
                    upstream: upstream.into(),
                    max: scope.max_weight,
                });
            }
            match existing {
                Some((Source::Static, _)) => return Err(RegistryError::NotRegistered),
                Some(_) => proven = Some(self.prove(secret.as_deref(), upstream, &r.id).await?),
                None if registered >= scope.max_backends => {
                    return Err(RegistryError::Full {
                        upstream: upstream.into(),
                        max: scope.max_backends,
                    })
                }
                None => {}
            }
        }
        // The same id elsewhere: only a refresh (same address, same source) is taken.
        if let Some((_, admits)) = &existing {
            admits.clone()?;
        }
        // A new registration gets a secret; a refresh keeps its owner (the one proven, read
        // once: the write insists on that registration).
        let secret = existing.is_none().then(owners::new_secret);
        let owner = match (&secret, proven) {
            (Some(s), _) => Owner {
                fingerprint: Some(owners::fingerprint(s)),
                created: 0,
            },
            (None, Some(proven)) => proven,
            (None, None) => self.ledger.owner(upstream, &r.id).await?,
        };
        let admitted = Admitted {
            upstream: upstream.into(),
            registration: r,
            owner: owner.fingerprint,
            created: owner.created,
            fresh: secret.is_some(),
            operator: *who == Caller::Operator,
            max_backends: (*who != Caller::Operator && secret.is_some())
                .then_some(scope.max_backends),
        };
        Ok((admitted, secret))
    }

    /// Refresh a registration's TTL; the TTL now running, when this instance keeps it (etcd
    /// keeps its own: the lease).
    pub async fn heartbeat(
        &self,
        g: &Grant,
        ttl: Option<Duration>,
    ) -> Result<Option<Duration>, RegistryError> {
        let _one_at_a_time = self.one_at_a_time().await;
        self.still(g).await?;
        self.ledger.heartbeat(&g.upstream, &g.id, ttl).await
    }

    /// Drain, then remove.
    pub async fn deregister(&self, g: &Grant) -> Result<(), RegistryError> {
        let _one_at_a_time = self.one_at_a_time().await;
        self.still(g).await?;
        self.ledger
            .deregister(&g.upstream, &g.id, g.operator, g.created())
            .await
    }

    /// Set an operator state: a decision that sticks to the id (see [`Registry`]).
    pub async fn set_state(
        &self,
        _: &Operator,
        upstream: &str,
        id: &str,
        state: State,
    ) -> Result<(), RegistryError> {
        self.ledger
            .set_state(upstream, id, state, None, true, None)
            .await?;
        Ok(())
    }

    /// Set the weight (1 to [`crate::config::MAX_WEIGHT`]).
    pub async fn set_weight(
        &self,
        _: &Operator,
        upstream: &str,
        id: &str,
        weight: u32,
    ) -> Result<(), RegistryError> {
        let weight = check_weight(weight)?;
        self.ledger.set_weight(upstream, id, weight).await
    }

    /// Drain a backend, and wait (at most `wait`) until no instance holds a connection to it.
    /// With etcd the drain is a toggle there, so every instance drains; the wait is over when
    /// every instance, in its first report after the drain began, holds none. `spread`: the
    /// drain's own close spread (None: the upstream's `close_spread`), which goes with the
    /// drain's record, so every instance spreads alike ([`Registry::drain_spread`]).
    pub async fn drain(
        &self,
        g: &Grant,
        wait: Duration,
        spread: Option<Duration>,
    ) -> Result<Drained, RegistryError> {
        if wait > MAX_DRAIN_WAIT {
            return Err(RegistryError::WaitTooLong);
        }
        let (u, id) = (g.upstream.as_str(), g.id.as_str());
        let expected = self.ledger.instances();
        let since = {
            let _one_at_a_time = self.one_at_a_time().await;
            // The grant first: a stale one learns nothing of the registration now under its id.
            self.still(g).await?;
            let spread = self.drain_spread(u, id, spread)?;
            self.ledger
                .set_state(u, id, State::Draining, spread, g.operator, g.created())
                .await?
        };
        let live = self
            .pool
            .snapshot()
            .upstream(u)
            .and_then(|up| up.backend(id))
            .map(|b| b.live.clone());
        let own = || live.as_ref().map_or(0, |l| l.active());
        // Connection counts have no change signal: they are read every DEFAULT_DRAIN_POLL.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let held = self.ledger.held(u, id, since, &expected, own());
            if held == Some(0) || tokio::time::Instant::now() >= deadline {
                let spread = live.as_ref().and_then(|l| l.drain_spread());
                return Ok(Drained {
                    held,
                    own: own(),
                    spread,
                });
            }
            tokio::time::sleep(DEFAULT_DRAIN_POLL).await;
        }
    }

    /// The close spread a drain of `id` writes with its record: `asked`, cut to the
    /// upstream's `drain_timeout` (the spread ends at it, as a configured `close_spread` is
    /// cut) and to whole milliseconds (as the record and the drain keep it), and checked
    /// against a drain already under way, which keeps its spread: the same one is taken,
    /// another refused. Asked for none: none, so a drain on the upstream's spread writes its
    /// record as the release before did (a drain under way with a spread of its own keeps it
    /// in the record: [`crate::store::keys::toggle_value`]).
    fn drain_spread(
        &self,
        upstream: &str,
        id: &str,
        asked: Option<Duration>,
    ) -> Result<Option<Duration>, RegistryError> {
        let snap = self.pool.snapshot();
        let up = snap
            .upstream(upstream)
            .ok_or_else(|| PoolError::UnknownUpstream(upstream.into()))?;
        // As the controller cuts it, in the whole milliseconds the drain keeps: what the drain
        // will show.
        let asked = asked.map(|s| {
            let cut = crate::pool::spread::length(Some(s), up.policy.drain_timeout);
            Duration::from_millis(cut.as_millis() as u64)
        });
        let current = up
            .backend(id)
            .filter(|b| b.state == State::Draining)
            .and_then(|b| b.live.drain_spread());
        match (current, asked) {
            (Some(current), Some(asked)) if current != asked => Err(RegistryError::OtherSpread {
                id: id.into(),
                current,
            }),
            (_, asked) => Ok(asked),
        }
    }
}

/// A weight in the pool's range: every weight the registry writes passed here.
fn check_weight(weight: u32) -> Result<u32, RegistryError> {
    if (1..=crate::config::MAX_WEIGHT).contains(&weight) {
        Ok(weight)
    } else {
        Err(PoolError::InvalidWeight.into())
    }
}

#[cfg(test)]
mod tests;
