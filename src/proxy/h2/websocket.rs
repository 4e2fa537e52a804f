//! WebSockets over HTTP/2 (RFC 8441): an extended CONNECT stream (`:method = CONNECT` with
//! `:protocol`) arrives here from [`super::conn`], never through the classifier. The helper
//! building RFC 8441 owns this module: it turns the stream into an HTTP/1.1 upgrade to the
//! backend. Until then, such a stream is answered 501 with a JSON error, and the connection
//! does not announce `SETTINGS_ENABLE_CONNECT_PROTOCOL` ([`ANNOUNCE`]).

use super::conn::Shared;
use crate::proxy::exchange::reply_error;
use pingora::protocols::Stream;

/// Announce `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441 §3) on every HTTP/2 connection.
pub const ANNOUNCE: bool = false;

/// Serve one extended CONNECT stream (`head`, asking for `protocol`) on `stream`.
pub async fn serve(
    _conn: &Shared,
    _head: &http::request::Parts,
    _protocol: &h2::ext::Protocol,
    stream: &mut Stream,
) {
    let why = "WebSockets over HTTP/2 are not supported yet";
    let _ = reply_error(stream, 501, why, true).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(stream).await;
}
