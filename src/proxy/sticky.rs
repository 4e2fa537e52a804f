//! The answer side of cookie-insert stickiness (an upstream's `sticky`, NGINX Plus's `sticky
//! cookie`): a response from a backend other than the one the request's cookie named (or to
//! a request without one) gets `Set-Cookie` naming the backend that answered. The request side
//! is in [`super::request`] (reading the cookie) and [`super::route::Route::pick`] (honouring
//! it).

use super::request::Request;
use super::response::ClientHead;
use crate::config::UpstreamPolicy;
use crate::pool::sticky::StickyId;

/// Add the sticky cookie to the response head in `head` (as [`super::response`] wrote it),
/// when the upstream is sticky and `req`'s cookie did not name `backend` already.
pub fn stamp<H: ClientHead>(head: &mut H, policy: &UpstreamPolicy, req: &Request, backend: &str) {
    let Some(cookie) = &policy.sticky else {
        return;
    };
    let value = StickyId::of(backend);
    if req.sticky == Some(value) {
        return;
    }
    let line = cookie.set_cookie(&value.to_string(), std::time::SystemTime::now());
    head.add(b"set-cookie", line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StickyCookie;
    use crate::proxy::request::RequestBody;

    fn req(sticky: Option<StickyId>) -> Request {
        Request {
            body: RequestBody::None,
            close: false,
            http10: false,
            version: crate::proxy::request::Version::Http11,
            head_method: false,
            idempotent: true,
            websocket: false,
            expect_continue: false,
            length_always: false,
            key: Default::default(),
            misreadable: false,
            client: None,
            sticky,
            added: None,
            accept: None,
        }
    }

    #[test]
    fn stamps_the_head_unless_the_cookie_named_the_backend() {
        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let policy = UpstreamPolicy {
            sticky: Some(StickyCookie::new("srv", None, None, Some("/")).unwrap()),
            ..UpstreamPolicy::default()
        };
        let mut head = HEAD.to_vec();
        stamp(&mut head, &policy, &req(None), "b1");
        let want = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nset-cookie: srv={}; path=/\r\n\r\n",
            StickyId::of("b1")
        );
        assert_eq!(String::from_utf8(head).unwrap(), want);
        // The cookie named another backend: a new one.
        let mut head = HEAD.to_vec();
        stamp(&mut head, &policy, &req(Some(StickyId::of("b2"))), "b1");
        assert_eq!(String::from_utf8(head).unwrap(), want);
        // It named this one, or the upstream is not sticky: nothing added.
        for (p, r) in [
            (&policy, req(Some(StickyId::of("b1")))),
            (&UpstreamPolicy::default(), req(None)),
        ] {
            let mut head = HEAD.to_vec();
            stamp(&mut head, p, &r, "b1");
            assert_eq!(head, HEAD);
        }
    }
}
