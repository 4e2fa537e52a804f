//! HTTP/2 to clients. [`websocket`]: WebSockets over HTTP/2 (RFC 8441), an extended CONNECT
//! made into the HTTP/1.1 handshake its backend expects.

pub mod websocket;
