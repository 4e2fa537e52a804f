//! Typed changes to the pool. Sources (static config, registration, etcd, health checks, admin
//! toggles) express what they learned as a [`Diff`]; only the controller applies them.

use super::backend::{BackendId, BackendSpec, Source, State};
use std::time::Duration;

/// A change to the pool.
#[derive(Clone, Debug, PartialEq)]
pub enum Diff {
    /// Add a backend, or refresh it if the same id with the same address is already there
    /// (a repeat registration is a heartbeat). The same id with another address is a conflict.
    Add {
        upstream: String,
        backend: BackendSpec,
        /// Registration TTL; `None` never expires.
        ttl: Option<Duration>,
        /// Sent with the admin token: a new registration is not refused for an address an
        /// operator's decision covers under another id ([`PoolError::Decided`]).
        operator: bool,
    },
    /// Remove a backend from the snapshot. Its open tunnels are not touched.
    Remove { upstream: String, id: BackendId },
    /// Change the operator state.
    SetState {
        upstream: String,
        id: BackendId,
        state: State,
    },
    /// An operator's state decision (the admin token): as `SetState`, and a disable or drain
    /// sticks to the id when the backend leaves and registers again, until an operator sets
    /// it `Active` or deletes it. Applies to an id no longer in the pool whose decision stuck.
    Decide {
        upstream: String,
        id: BackendId,
        state: State,
    },
    /// Drain with a close spread of its own (the admin API's `drain?spread=`): as `SetState`
    /// to `Draining` (`Decide`, with `operator`), its 1001 closes spread over the last
    /// `spread` of `drain_timeout` (None: the upstream's `close_spread`; never longer than
    /// `drain_timeout`). A backend already draining keeps its drain, spread included.
    Drain {
        upstream: String,
        id: BackendId,
        spread: Option<Duration>,
        operator: bool,
    },
    /// Drain, then remove: no new connections; removed once its connections are gone, or at
    /// the drain deadline after its tunnels got their 1001 close.
    Retire { upstream: String, id: BackendId },
    /// Change the weight.
    SetWeight {
        upstream: String,
        id: BackendId,
        weight: u32,
    },
    /// Record an active health check verdict (`reason` is logged with the transition).
    SetHealth {
        upstream: String,
        id: BackendId,
        healthy: bool,
        reason: String,
    },
    /// Passive health: the data plane saw `max_fails` failures. The backend is out
    /// for `fail_timeout`, then readmitted (or left to the active checks, when configured).
    Eject {
        upstream: String,
        id: BackendId,
        reason: String,
    },
    /// Refresh a registration's TTL. Publishes nothing: expiry is a live value.
    Heartbeat {
        upstream: String,
        id: BackendId,
        ttl: Duration,
    },
    /// Make the backend with `backend.id` exactly `backend`: added if missing, updated if it
    /// differs, taken back if it was leaving (one backend's share of a `Reset`; an etcd put).
    /// An operator's weight toggle outlives it. Publishes only when something changed.
    Upsert {
        upstream: String,
        backend: BackendSpec,
    },
    /// Replace every backend of `source` in `upstream` with `backends` (a re-list).
    Reset {
        upstream: String,
        source: Source,
        backends: Vec<BackendSpec>,
    },
    /// A backend name (`resolve`) now resolves to `addrs` (ascending): its backends in
    /// `upstream` become one per address, in the name's place, as the config describes them
    /// (`config::names`). A name the upstream's config no longer resolves is ignored.
    Resolved {
        upstream: String,
        host: String,
        addrs: Vec<std::net::IpAddr>,
    },
}

impl Diff {
    /// The upstream this diff touches.
    pub fn upstream(&self) -> &str {
        match self {
            Diff::Add { upstream, .. }
            | Diff::Remove { upstream, .. }
            | Diff::Retire { upstream, .. }
            | Diff::SetState { upstream, .. }
            | Diff::Decide { upstream, .. }
            | Diff::Drain { upstream, .. }
            | Diff::SetWeight { upstream, .. }
            | Diff::SetHealth { upstream, .. }
            | Diff::Eject { upstream, .. }
            | Diff::Heartbeat { upstream, .. }
            | Diff::Upsert { upstream, .. }
            | Diff::Reset { upstream, .. }
            | Diff::Resolved { upstream, .. } => upstream,
        }
    }
}

/// Why a diff was refused. A refused diff changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("unknown upstream {0:?}")]
    UnknownUpstream(String),
    #[error("unknown backend {id:?} in upstream {upstream:?}")]
    UnknownBackend { upstream: String, id: String },
    #[error("backend {id:?} is already registered with address {existing}")]
    Conflict { id: String, existing: String },
    #[error("backend {id:?} comes from {origin:?}, not from a registration, so it has no TTL to refresh")]
    OtherSource {
        id: String,
        origin: super::backend::Source,
    },
    #[error("address {addr} is held out by an operator's decision on backend {id:?} ({state:?}); only the admin token may register it under another id until an operator enables or deletes {id:?}")]
    Decided {
        addr: std::net::SocketAddr,
        id: String,
        state: super::backend::State,
    },
    #[error("weight must be between 1 and {max}", max = crate::config::MAX_WEIGHT)]
    InvalidWeight,
    #[error("the pool controller has stopped")]
    Stopped,
    #[error("applied, but the toggles could not be saved: {0}")]
    NotSaved(String),
}
