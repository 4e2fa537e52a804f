//! The data plane: one HTTP engine and one tunnel. Each HTTP listener gets a
//! [`gateway::Gateway`] that reads request heads under the listener's limits ([`head`]),
//! classifies them ([`request`]), and forwards them itself ([`exchange`], [`attempt`], [`response`],
//! [`body`], [`chunked`]); a WebSocket the backend switched to runs through tideway's own
//! [`tunnel::Tunnel`], as does every TCP connection ([`tcp`]). One retry loop
//! ([`route::Route::attempts`]), one idle pool ([`keepalive`]) and one forwarding-header
//! writer (in [`request`]) serve HTTP and tunnels alike. pingora is the server framework only
//! (services, runtimes, signals, graceful shutdown); connections arrive through
//! [`crate::net::accept`]. [`access`] writes the access log. Every client connection takes a place
//! under the process-wide cap ([`crate::net::fds::proxied`]) first. [`client`] works out the real
//! client address ([`proxy_protocol`] reads the inbound PROXY header and writes the outbound
//! one).
//! [`listener`] counts each listener's connections (and refuses those over its
//! `max_connections`); [`limit`] applies per-client limits (nginx's `limit_req` and `limit_conn`); [`sticky`]
//! sets an upstream's sticky cookie on the answer. [`admission`] bounds the new upgrades each
//! backend gets (an upstream's `admission`).
//!
//! Readers only: the data plane loads the pool snapshot once per request or connection and
//! never locks. Imports `config`, `pool`, `balance`, `routing`, `metrics` and `net`; never
//! `admin`, `discovery` or `health`.

pub mod access;
pub mod admission;
pub mod attempt;
pub mod body;
pub mod budget;
pub mod chunked;
pub mod client;
pub mod dispatch;
pub mod error;
pub mod exchange;
pub mod frame;
pub mod gateway;
pub mod h2;
pub mod head;
pub mod headers;
pub mod keepalive;
pub mod key;
pub mod limit;
pub mod listener;
pub mod liveness;
pub mod proxy_protocol;
pub mod request;
pub mod request_id;
pub mod response;
pub mod route;
pub mod sticky;
pub mod tcp;
pub mod tls;
pub mod tunnel;
pub mod websocket;

pub use gateway::Gateway;
pub use route::Route;
