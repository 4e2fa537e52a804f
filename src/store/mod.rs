//! The etcd store: the one module that talks to etcd. It owns the key schema in both
//! directions ([`keys`]), keeps one client per process (connected on first use and shared by
//! the discovery watch, the fleet counts and the admin API's writes), and reports typed errors
//! ([`StoreError`]) that the admin layer maps to HTTP.
//!
//! Writes: a registration is a key under a lease whose TTL is the registration's; a heartbeat
//! keeps that lease alive (the lease is read from the key, so any instance can take it). A new
//! registration is written in a transaction that only succeeds while the key does not exist,
//! so two racing registrations of one id cannot both win; it clears the id's old toggles in
//! the same transaction. Under a count limit (a registrar's `max_backends`) it counts the
//! upstream's registrations first, and the transaction also insists that none was created
//! since that count, so registrations racing through any instances cannot pass the limit
//! together. Deregistering deletes the key and its toggles. A refresh, and a
//! registrar's deregistration, insist on the registration whose owner was proven: their
//! transaction compares the key's create revision, so a registration made meanwhile under
//! the same id is never touched ([`StoreError::Taken`]).
//!
//! Writes return the etcd revision they were made at. The etcd source reports the revision
//! whose changes this process's pool has applied ([`Store::applied`]); a writer that wants to
//! see its own change waits on [`Store::watch_applied`], a `watch` channel, for its revision.
//!
//! Imports: `config` and `pool` (for [`State`]); never `admin` or `proxy`.

pub mod keys;

use crate::config::EtcdSettings;
use crate::pool::State;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::Mutex;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Unavailable(#[from] etcd_client::Error),
    #[error("backend {id:?} was registered meanwhile by someone else")]
    Taken { id: String },
    #[error("upstream {upstream:?} has reached its limit of {max} registrations")]
    Full { upstream: String, max: usize },
    #[error("other registrations of upstream {upstream:?} kept landing meanwhile; try again")]
    Contended { upstream: String },
}

/// How long a new registration under a count limit keeps counting and trying while other
/// registrations of its upstream land between its count and its write (then
/// [`StoreError::Contended`]). Each failed try means another registration was written, so a
/// burst of N new registrations needs at most N rounds of two etcd calls each.
pub const DEFAULT_CREATE_WAIT: Duration = Duration::from_secs(3);
/// The most a try waits before the next (a random share of it), so racers spread out.
const CREATE_JITTER: Duration = Duration::from_millis(5);

/// Which registration [`Store::register`] writes.
#[derive(Clone, Copy, Debug)]
pub enum Registering {
    /// A new one: only while its key does not exist and, with `max`, while its upstream holds
    /// fewer than `max` registrations.
    New { max: Option<usize> },
    /// A refresh of the registration whose key was created at this revision.
    Refresh(i64),
}

/// The etcd store of one process.
pub struct Store {
    settings: EtcdSettings,
    client: Mutex<Option<Client>>,
    /// The revision up to which the etcd source has applied etcd's changes to the pool.
    applied: tokio::sync::watch::Sender<i64>,
}

impl Store {
    pub fn new(settings: EtcdSettings) -> Self {
        Store {
            settings,
            client: Mutex::new(None),
            applied: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The etcd source has applied every change up to `revision` to the pool (revisions only
    /// move forward).
    pub fn applied(&self, revision: i64) {
        self.applied.send_if_modified(|r| {
            let newer = revision > *r;
            if newer {
                *r = revision;
            }
            newer
        });
    }

    /// The revision applied to the pool so far, as a `watch` channel.
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<i64> {
        self.applied.subscribe()
    }

    pub fn settings(&self) -> &EtcdSettings {
        &self.settings
    }

    /// The process's client (a cheap clone of one connection to the cluster), connected on
    /// first use; a failed connect is retried on the next call.
    pub async fn client(&self) -> Result<Client, StoreError> {
        let mut cached = self.client.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(10));
        let options = self.secured(options);
        let c = Client::connect(&self.settings.endpoints, Some(options)).await?;
        *cached = Some(c.clone());
        Ok(c)
    }

    fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// `options` with the settings' TLS (CA, client certificate, server name) and user. The
    /// password goes to etcd-client here and nowhere else; its token is renewed when etcd
    /// says it expired.
    fn secured(&self, mut options: ConnectOptions) -> ConnectOptions {
        if let Some(t) = &self.settings.tls {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(&t.ca_pem));
            if let Some((cert, key)) = &t.identity {
                tls = tls.identity(Identity::from_pem(cert, key.expose()));
            }
            if let Some(name) = &t.server_name {
                tls = tls.domain_name(name.clone());
            }
            options = options.with_tls(tls);
        }
        if let Some(a) = &self.settings.auth {
            options = options
                .with_user(a.user.clone(), a.password.expose().clone())
                .with_auto_token_refresh(true);
        }
        options
    }

    /// Register a backend, or refresh a registration ([`Registering`]), under a lease of
    /// `ttl`; returns the etcd revision it was written at. Either fails with
    /// [`StoreError::Taken`] if the key is not (or no longer) the one expected: it appeared
    /// meanwhile, or was replaced; a new one under a limit fails with [`StoreError::Full`].
    #[allow(clippy::too_many_arguments)]
    pub async fn register(
        &self,
        upstream: &str,
        id: &str,
        addr: SocketAddr,
        weight: u32,
        ttl: Duration,
        owner: Option<&str>,
        write: Registering,
    ) -> Result<i64, StoreError> {
        let mut c = self.client().await?;
        let key = keys::backend_key(self.prefix(), upstream, id);
        // A fresh lease each time; a replaced one simply runs out.
        let lease = c.lease_grant(ttl.as_secs().max(1) as i64, None).await?.id();
        let value = keys::backend_value(addr, weight, owner);
        let put = TxnOp::put(
            key.clone(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        );
        let written = match write {
            Registering::Refresh(created) => {
                let txn = Txn::new()
                    .when([Compare::create_revision(key, CompareOp::Equal, created)])
                    .and_then([put]);
                match c.txn(txn).await {
                    Ok(done) if done.succeeded() => Ok(done.header().map_or(0, |h| h.revision())),
                    Ok(_) => Err(StoreError::Taken { id: id.to_string() }),
                    // The lease is revoked below on this error too.
                    Err(e) => Err(e.into()),
                }
            }
            Registering::New { max } => self.create(&mut c, upstream, id, put, max).await,
        };
        if written.is_err() {
            let _ = c.lease_revoke(lease).await;
        }
        written
    }

    /// Write a new registration (`put`) and clear the id's old toggles, only while its key
    /// does not exist. With `max`: count the upstream's registrations (every key under its
    /// `backends/`) at some revision, refuse at `max`, else write only if no key there was
    /// created after that revision; when one was, count again, for up to
    /// [`DEFAULT_CREATE_WAIT`].
    async fn create(
        &self,
        c: &mut Client,
        upstream: &str,
        id: &str,
        put: TxnOp,
        max: Option<usize>,
    ) -> Result<i64, StoreError> {
        let key = keys::backend_key(self.prefix(), upstream, id);
        let state = keys::state_key(self.prefix(), upstream, id);
        let registrations = keys::backends_root(self.prefix(), upstream);
        let until = tokio::time::Instant::now() + DEFAULT_CREATE_WAIT;
        while tokio::time::Instant::now() < until {
            let mut when = vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)];
            if let Some(max) = max {
                let counted = c
                    .get(
                        registrations.clone(),
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    )
                    .await?;
                if counted.count() >= max as i64 {
                    return Err(StoreError::Full {
                        upstream: upstream.into(),
                        max,
                    });
                }
                let at = counted.header().map_or(0, |h| h.revision());
                when.push(
                    Compare::create_revision(registrations.clone(), CompareOp::Less, at + 1)
                        .with_prefix(),
                );
            }
            let txn = Txn::new()
                .when(when)
                .and_then([TxnOp::delete(state.clone(), None), put.clone()])
                .or_else([TxnOp::get(
                    key.clone(),
                    Some(GetOptions::new().with_count_only()),
                )]);
            let done = c.txn(txn).await?;
            if done.succeeded() {
                return Ok(done.header().map_or(0, |h| h.revision()));
            }
            let taken = done
                .op_responses()
                .into_iter()
                .any(|r| matches!(r, TxnOpResponse::Get(g) if g.count() > 0));
            if taken {
                return Err(StoreError::Taken { id: id.to_string() });
            }
            // Another registration landed between the count and the write: count again, a
            // little later, so the racers do not all try in step.
            let jitter = CREATE_JITTER.mul_f64(rand::random::<f64>());
            tokio::time::sleep(jitter).await;
        }
        Err(StoreError::Contended {
            upstream: upstream.into(),
        })
    }

    /// The owner fingerprint stored with a registration, if any, and the revision its key
    /// was created at (0: no such key).
    pub async fn owner(
        &self,
        upstream: &str,
        id: &str,
    ) -> Result<(Option<String>, i64), StoreError> {
        let mut c = self.client().await?;
        let got = c
            .get(keys::backend_key(self.prefix(), upstream, id), None)
            .await?;
        let kv = got.kvs().first();
        Ok((
            kv.and_then(|kv| keys::owner(kv.value())),
            kv.map_or(0, |kv| kv.create_revision()),
        ))
    }

    /// Keep a registration's lease alive; `false` if the key is gone.
    pub async fn heartbeat(&self, upstream: &str, id: &str) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let got = c
            .get(keys::backend_key(self.prefix(), upstream, id), None)
            .await?;
        let Some(kv) = got.kvs().first() else {
            return Ok(false);
        };
        if kv.lease() != 0 {
            let (mut keeper, mut stream) = c.lease_keep_alive(kv.lease()).await?;
            keeper.keep_alive().await?;
            let _ = stream.message().await;
        }
        Ok(true)
    }

    /// Delete a registration and its toggles; every instance drains, then removes it. With
    /// `created`, only the registration whose key was created at that revision
    /// ([`StoreError::Taken`] if it was replaced).
    pub async fn deregister(
        &self,
        upstream: &str,
        id: &str,
        created: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let key = keys::backend_key(self.prefix(), upstream, id);
        let mut txn = Txn::new();
        if let Some(created) = created {
            txn = txn.when([Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                created,
            )]);
        }
        let txn = txn.and_then([
            TxnOp::delete(key, None),
            TxnOp::delete(keys::state_key(self.prefix(), upstream, id), None),
        ]);
        let done = c.txn(txn).await?;
        if !done.succeeded() {
            return Err(StoreError::Taken { id: id.to_string() });
        }
        let deleted = done
            .op_responses()
            .into_iter()
            .next()
            .is_some_and(|r| matches!(r, TxnOpResponse::Delete(d) if d.deleted() > 0));
        Ok(deleted)
    }

    /// Write a toggle (merged with the one already there; a drain's own close `spread` goes
    /// with its state); returns the etcd revision it was written at. With `created`, only
    /// while the registration is the one whose key was created at that revision
    /// ([`StoreError::Taken`] if it was replaced).
    pub async fn toggle(
        &self,
        upstream: &str,
        id: &str,
        state: Option<(State, Option<Duration>)>,
        weight: Option<u32>,
        created: Option<i64>,
    ) -> Result<i64, StoreError> {
        let mut c = self.client().await?;
        let key = keys::state_key(self.prefix(), upstream, id);
        let current = c.get(key.clone(), None).await?;
        let value = keys::toggle_value(
            current.kvs().first().map(|kv| kv.value()),
            state.map(|(s, _)| s),
            state.and_then(|(_, spread)| spread),
            weight,
        );
        let mut txn = Txn::new();
        if let Some(created) = created {
            let registration = keys::backend_key(self.prefix(), upstream, id);
            txn = txn.when([Compare::create_revision(
                registration,
                CompareOp::Equal,
                created,
            )]);
        }
        let done = c.txn(txn.and_then([TxnOp::put(key, value, None)])).await?;
        if !done.succeeded() {
            return Err(StoreError::Taken { id: id.to_string() });
        }
        Ok(done.header().map_or(0, |h| h.revision()))
    }
}
