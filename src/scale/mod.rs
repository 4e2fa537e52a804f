//! Acting on scale events: moving WebSockets after the pool changes ([`rebalance`]) and the
//! autoscale hook that runs a command or webhook when the recommended count moves
//! ([`autoscale`]). The recommended count itself is [`signal`].
//!
//! Imports: `config`, `balance`, `pool`, `discovery`, `metrics`; never `admin`, `proxy` or
//! `server` (the admin API reads the signal from here).

pub mod autoscale;
pub mod rebalance;
pub mod signal;
