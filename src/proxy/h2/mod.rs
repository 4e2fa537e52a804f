//! The second front door: HTTP/2 on TLS listeners with `http2 = true`, offered by ALPN (`h2`,
//! then `http/1.1`). The `h2` crate decodes and encodes (no HPACK or frame code of tideway's
//! own); everything else is the one HTTP engine's.
//!
//! - [`conn`]: one connection: the codec's limits, the accept loop (each stream a task of
//!   its own), the idle and header timeouts, GOAWAY on shutdown and when a reload turns the
//!   listener away.
//! - [`head`]: a stream's typed head becomes the classifier's [`super::request::Parts`]
//!   (method, target, fields with one `host` from `:authority`), never HTTP/1 text parsed
//!   again; the same `classify` rules, routes, limits, retry loop and passive health follow.
//! - [`stream`]: [`stream::H2Io`], one stream as a pingora IO: the request's DATA to read,
//!   the response's DATA to write under flow control, END_STREAM at shutdown.
//! - [`answer`]: the response head for the stream, typed ([`answer::H2Head`]), as
//!   [`super::response`] and tideway's own answers write it.
//! - [`reset`]: rapid reset (CVE-2023-44487): the stream cap on tideway's own work, each
//!   stream's work raced against the client's reset, GOAWAY(ENHANCE_YOUR_CALM) past a count.
//! - [`stall`]: a client that stops reading the connection is closed after `send_timeout`.
//! - [`websocket`]: extended CONNECT (RFC 8441): the hook for WebSockets over HTTP/2.
//!
//! Imports only `proxy`'s own modules, `config` and `metrics`.

pub mod answer;
pub mod conn;
pub mod head;
pub mod reset;
pub mod stall;
pub mod stream;
pub mod websocket;

pub use conn::serve;
