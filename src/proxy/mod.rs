//! The data plane. Each listener gets a [`gateway::Gateway`] that reads a request head,
//! serves WebSocket upgrades through tideway's own [`tunnel::Tunnel`], forwards ordinary
//! requests itself ([`exchange`]), and hands anything unusual to pingora's HTTP proxy
//! ([`http::Router`]).
//!
//! Readers only: the data plane loads the pool snapshot once per request or connection and
//! never locks. Imports `config` and `pool`; never `admin`.

pub mod body;
pub mod exchange;
pub mod frame;
pub mod gateway;
pub mod head;
pub mod http;
pub mod keepalive;
pub mod key;
pub mod message;
pub mod proxy_protocol;
pub mod route;
pub mod tcp;
pub mod tls;
pub mod tunnel;
pub mod websocket;

pub use gateway::Gateway;
pub use route::Route;
