//! tideway: a load-balancing proxy for services that scale in and out all day.
//!
//! Module graph (imports flow one way): `config`, `metrics` <- `pool` <- `balance`, `admin`,
//! `proxy` <- `app` <- `main`. `proxy` never imports `admin`, and `admin` never imports `proxy`.

pub mod admin;
pub mod app;
pub mod balance;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod discovery;
pub mod health;
pub mod memory;
pub mod metrics;
pub mod nginx;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod signals;
pub mod wire;
