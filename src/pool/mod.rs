//! The backend pool: typed diffs in, one immutable snapshot out.
//!
//! ```text
//! sources --Diff--> controller (one task, owns state) --ArcSwap::store--> Snapshot <--load-- data plane
//! ```
//!
//! Imports: `config` and `balance`. Never `proxy`, `admin` or the discovery sources.

pub mod backend;
pub mod controller;
pub mod diff;
pub mod snapshot;
pub mod toggles;

pub use backend::{Backend, BackendId, BackendSpec, Live, Source, State};
pub use controller::{Controller, ControllerTask, PoolHandle};
pub use diff::{Diff, PoolError};
pub use snapshot::{Snapshot, Upstream};
