//! tideway: a load-balancing proxy for services that scale in and out all day.
//!
//! Module graph (imports flow one way): `config`, `metrics`, `wire`, `fds`, `accept` <- `routing`,
//! `pool` <- `store`
//! (etcd) <- `balance`, `discovery`, `health`, `admin`, `proxy` <- `app`, `reload`,
//! `signals`, `rebalance`, `autoscale`, `demo`, `ctl` <- `tour` <- `main` (with `cli` and
//! `demo_client`, which import no other module). `proxy` never imports `admin`, `discovery` or
//! `health`, and they never import `proxy`. Only the pool's controller calls `store()` on the
//! snapshot.

pub mod admin;
pub mod balance;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod health;
pub mod metrics;
pub mod net;
pub mod nginx;
pub mod pool;
pub mod proxy;
pub mod routing;
pub mod scale;
pub mod server;
pub mod store;
