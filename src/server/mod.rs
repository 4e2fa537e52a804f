//! The running process: wiring the config into a pingora server ([`app`]), the listeners a
//! reload adds or removes ([`listeners`]), reloading ([`reload`]), process signals
//! ([`signals`]), giving memory back ([`memory`]) and the background tasks it owns
//! ([`tasks`]).
//!
//! Imports anything below it; only `cli` and `main` import it.

pub mod app;
pub mod listeners;
pub mod memory;
pub mod reload;
pub mod signals;
pub mod tasks;

#[cfg(test)]
mod shutdown_tests;
