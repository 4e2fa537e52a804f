//! The backend pool: typed diffs in, one immutable snapshot out.
//!
//! ```text
//! sources --Diff--> controller (one task, owns state) --ArcSwap::store--> Snapshot <--load-- data plane
//! health  --Verdict (coalesced per backend)--^   effects (toggles file) --> writer task (`saved`)
//! ```
//!
//! Imports: `config` and `balance`. Never `proxy`, `admin` or the discovery sources.

pub mod admission;
pub mod backend;
pub mod controller;
pub mod deadlines;
pub mod diff;
pub mod handle;
pub mod inbox;
pub mod own;
pub mod saved;
pub mod sessions;
pub mod snapshot;
pub mod spread;
pub mod sticky;
pub mod table;
pub mod toggles;

pub use backend::{Backend, BackendId, BackendSpec, Live, ServerParams, Source, State};
pub use controller::Controller;
pub use diff::{Diff, PoolError};
pub use handle::{ControllerTask, PoolHandle};
pub use inbox::Verdict;
pub use sessions::{Session, SessionGuard, Sessions};
pub use snapshot::{Snapshot, Upstream};
pub use table::Backends;

#[cfg(test)]
mod selection_tests;
