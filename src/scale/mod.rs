//! Acting on scale events: moving WebSockets after the pool changes ([`rebalance`]) and the
//! autoscale hook that runs a command or webhook when the recommended count moves
//! ([`autoscale`]).

pub mod autoscale;
pub mod rebalance;
