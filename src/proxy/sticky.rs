//! The answer side of cookie-insert stickiness (an upstream's `sticky`, NGINX Plus's `sticky
//! cookie`): a response from a backend other than the one the request's cookie named (or to
//! a request without one) gets `Set-Cookie` naming the backend that answered. The request side
//! is in [`super::request`] (reading the cookie) and [`super::route::Route::pick`] (honouring
//! it).

use super::request::Request;
use super::response::add_field;
use crate::config::UpstreamPolicy;
use crate::pool::sticky::StickyId;

/// Add the sticky cookie to the response head in `head` (as [`super::response`] wrote it),
/// when the upstream is sticky and `req`'s cookie did not name `backend` already.
pub fn stamp(head: &mut Vec<u8>, policy: &UpstreamPolicy, req: &Request, backend: &str) {
    let Some(cookie) = &policy.sticky else {
        return;
    };
    let value = StickyId::of(backend);
    if req.sticky == Some(value) {
        return;
    }
    let line = cookie.set_cookie(&value.to_string(), std::time::SystemTime::now());
    add_field(head, b"set-cookie", line.as_bytes());
}
