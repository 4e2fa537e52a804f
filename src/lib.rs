//! tideway: a load-balancing proxy for services that scale in and out all day.
//!
//! Module graph: floors, each importing only floors below it (no cycles, no arrow back up):
//!
//! 0. `config`, `metrics`, `net` (`accept`, `backend`, `fds`, `wire`): nothing else in tideway.
//! 1. `routing` (which route a request takes), `balance` (which backend a selector picks, of
//!    any [`balance::Candidate`]): `config` only.
//! 2. `pool`: typed diffs in, one snapshot out. Only its controller calls `store()` on the
//!    snapshot.
//! 3. `store` (etcd's keys), `nginx` (nginx files into the config, the pool back out).
//! 4. `discovery` and `health` (the pool's sources), `proxy` (the data plane). `proxy` never
//!    imports `discovery`, `health` or `admin`, and they never import `proxy`.
//! 5. `scale`: rebalancing, the autoscale hook, and the scale signal the admin API shows;
//!    `registry`: membership changes, every check in one place, then the local pool or etcd.
//! 6. `admin`: the admin API. It asks for reloads through [`config::reload::Reload`], which
//!    `server::reload` implements.
//! 7. `server`: wiring (`app`), listeners added by reloads, reload, signals, memory, and the
//!    background tasks it owns (`tasks`).
//! 8. `cli`: the command line (`ctl` and its admin TLS, the demo backend and client, the tour,
//!    completions and man pages), then `main.rs` and `src/bin/tideway-demo-client.rs`.

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
pub mod registry;
pub mod routing;
pub mod scale;
pub mod server;
pub mod store;
