//! Sources that feed the pool from outside: etcd (v3) registrations and toggles.
//!
//! Sources send diffs through a [`crate::pool::PoolHandle`]; they never touch the snapshot.
//! Imports: `config`, `pool`, `metrics`. Never `proxy` or `admin`.

pub mod etcd;
pub mod fleet;
pub mod keys;
