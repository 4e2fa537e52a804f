//! The etcd store: the one module that talks to etcd. It owns the key schema in both
//! directions ([`keys`]), keeps one client per process (connected on first use and shared by
//! the discovery watch, the fleet counts and the admin API's writes), and reports typed errors
//! ([`StoreError`]) that the admin layer maps to HTTP.
//!
//! Writes: a registration is a key under a lease whose TTL is the registration's; a heartbeat
//! keeps that lease alive (the lease is read from the key, so any instance can take it). A new
//! registration is written in a transaction that only succeeds while the key does not exist,
//! so two racing registrations of one id cannot both win; it clears the id's old toggles in
//! the same transaction. Deregistering deletes the key and its toggles. A refresh, and a
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
    Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
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
        let c = Client::connect(&self.settings.endpoints, Some(options)).await?;
        *cached = Some(c.clone());
        Ok(c)
    }

    fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// Register a backend (`refreshes` None), or refresh the registration whose key was
    /// created at revision `refreshes`, under a lease of `ttl`; returns the etcd revision it
    /// was written at. Either fails with [`StoreError::Taken`] if the key is not (or no longer)
    /// the one expected: it appeared meanwhile, or was replaced.
    #[allow(clippy::too_many_arguments)]
    pub async fn register(
        &self,
        upstream: &str,
        id: &str,
        addr: SocketAddr,
        weight: u32,
        ttl: Duration,
        owner: Option<&str>,
        refreshes: Option<i64>,
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
        let state = keys::state_key(self.prefix(), upstream, id);
        let txn = match refreshes {
            Some(created) => Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, created)])
                .and_then([put]),
            None => Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::delete(state, None), put]),
        };
        let done = c.txn(txn).await?;
        if done.succeeded() {
            Ok(done.header().map_or(0, |h| h.revision()))
        } else {
            let _ = c.lease_revoke(lease).await;
            Err(StoreError::Taken { id: id.to_string() })
        }
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

    /// Write a toggle (merged with the one already there); returns the etcd revision it was
    /// written at. With `created`, only while the registration is the one whose key was
    /// created at that revision ([`StoreError::Taken`] if it was replaced).
    pub async fn toggle(
        &self,
        upstream: &str,
        id: &str,
        state: Option<State>,
        weight: Option<u32>,
        created: Option<i64>,
    ) -> Result<i64, StoreError> {
        let mut c = self.client().await?;
        let key = keys::state_key(self.prefix(), upstream, id);
        let current = c.get(key.clone(), None).await?;
        let value = keys::toggle_value(current.kvs().first().map(|kv| kv.value()), state, weight);
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
