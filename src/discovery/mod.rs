//! Sources that feed the pool from outside: etcd (v3) registrations and toggles, and the DNS
//! answers of backend names (`resolve`).
//!
//! Sources send diffs through a [`crate::pool::PoolHandle`]; they never touch the snapshot.
//! Imports: `config`, `pool`, `metrics`, `store` (all etcd access goes through it). Never
//! `proxy` or `admin`.

pub mod etcd;
pub mod fleet;
pub mod names;
