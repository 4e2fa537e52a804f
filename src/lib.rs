//! tideway: a load-balancing proxy for services that scale in and out all day.
//!
//! Module graph (imports flow one way): `config`, `metrics`, `wire`, `fds`, `accept` <- `routing`,
//! `pool` <- `store`
//! (etcd) <- `balance`, `discovery`, `health`, `proxy` <- `registry` (membership changes:
//! checks, then the local pool or etcd; imports `config`, `pool`, `store`, `discovery`, never
//! `proxy`) <- `admin` <- `app`, `reload`,
//! `signals`, `rebalance`, `autoscale`, `demo`, `ctl` <- `tour` <- `main` (with `cli` and
//! `demo_client`, which import no other module). `proxy` never imports `admin`, `discovery` or
//! `health`, and they never import `proxy`. Only the pool's controller calls `store()` on the
//! snapshot.

pub mod accept;
pub mod admin;
pub mod app;
pub mod autoscale;
pub mod balance;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod demo_client;
pub mod discovery;
pub mod fds;
pub mod health;
pub mod listeners;
pub mod memory;
pub mod metrics;
pub mod nginx;
pub mod pool;
pub mod proxy;
pub mod rebalance;
pub mod registry;
pub mod reload;
pub mod routing;
pub mod signals;
pub mod store;
pub mod tour;
pub mod wire;
