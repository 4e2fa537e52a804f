//! An HTTP/2 stream's typed head becomes the classifier's [`Parts`]: the method, the target
//! (`:path`), and the header fields as `httparse::Header`s borrowed from the codec's map, never
//! written as HTTP/1 text and parsed again. One `host` field stands for `:authority` (a `Host`
//! that differs from it is refused with 400; without `:authority`, the `Host` fields go as
//! they are), and the `cookie` fields HTTP/2 splits are joined with `; ` (RFC 9113 §8.2.3), as
//! an HTTP/1.1 backend expects one. The listener's head limits apply as on HTTP/1: header
//! count (431), one field line's length (431; the joined `cookie` line's too), the request
//! line's (414).
//!
//! The codec already refused what HTTP/2 forbids (connection-specific fields, `te` other than
//! `trailers`, uppercase or invalid names, values with CR, LF or NUL, a `content-length` its
//! DATA does not match); the classifier then applies every HTTP/1 rule (one Content-Length,
//! dot segments, forwarding headers...).

use crate::config::HttpLimits;
use crate::proxy::request::{Parts, Refusal, Version};

/// The header fields of `head` for the classifier, with `cookie` (cleared first) holding the
/// joined cookies they borrow. Refused as the HTTP/1 head reader would refuse it.
pub fn fields<'a>(
    head: &'a http::request::Parts,
    cookie: &'a mut Vec<u8>,
    limits: &HttpLimits,
) -> Result<Vec<httparse::Header<'a>>, Refusal> {
    let authority = head.uri.authority().map(|a| a.as_str());
    cookie.clear();
    let mut cookies = 0;
    for v in head.headers.get_all(http::header::COOKIE) {
        if cookies > 0 {
            cookie.extend_from_slice(b"; ");
        }
        cookie.extend_from_slice(v.as_bytes());
        cookies += 1;
    }
    // The joined line is what the backend gets: held to the limit of one line, as on HTTP/1.
    if cookies > 0 && "cookie: ".len() + cookie.len() > limits.max_header_line {
        return Err(Refusal::new(431, "a header field line is too long"));
    }
    let cookie: &'a [u8] = cookie;
    let mut out = Vec::with_capacity(head.headers.len() + 1);
    if let Some(a) = authority {
        out.push(httparse::Header {
            name: "host",
            value: a.as_bytes(),
        });
    }
    if cookies > 0 {
        out.push(httparse::Header {
            name: "cookie",
            value: cookie,
        });
    }
    for (name, value) in &head.headers {
        let (name, value) = (name.as_str(), value.as_bytes());
        if name.len() + value.len() + 2 > limits.max_header_line {
            return Err(Refusal::new(431, "a header field line is too long"));
        }
        match name {
            "cookie" => continue,
            "host" => match authority {
                Some(a) if !a.as_bytes().eq_ignore_ascii_case(value.trim_ascii()) => {
                    return Err(Refusal::new(400, "Host differs from :authority"));
                }
                Some(_) => continue,
                None => {}
            },
            _ => {}
        }
        out.push(httparse::Header { name, value });
    }
    if out.len() > limits.max_headers {
        return Err(Refusal::new(431, "too many header fields"));
    }
    Ok(out)
}

/// The target of `head` (`:path`), refused unless it is visible ASCII.
pub fn target(head: &http::request::Parts) -> Result<&str, Refusal> {
    let target = head.uri.path_and_query().map_or("", |p| p.as_str());
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::new(400, "invalid request target"));
    }
    Ok(target)
}

/// Refuse with 414 a request line (as the backend gets it, `METHOD TARGET HTTP/1.1`) over
/// the listener's limit.
pub fn line(head: &http::request::Parts, target: &str, limits: &HttpLimits) -> Result<(), Refusal> {
    if head.method.as_str().len() + target.len() + 10 > limits.max_request_line {
        return Err(Refusal::new(414, "the request line is too long"));
    }
    Ok(())
}

/// The classifier's parts of `head`, its `fields` ([`fields`]) and `target` ([`target`]);
/// `open`: the stream did not end with its head.
pub fn parts<'a, 'f>(
    head: &'a http::request::Parts,
    target: &'a str,
    fields: &'f [httparse::Header<'a>],
    open: bool,
) -> Parts<'a, 'f> {
    Parts {
        method: head.method.as_str(),
        target,
        version: Version::H2,
        headers: fields,
        open,
        accept: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(uri: &str, fields: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        for (n, v) in fields {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn names<'a>(f: &'a [httparse::Header<'a>]) -> Vec<(&'a str, &'a [u8])> {
        f.iter().map(|h| (h.name, h.value)).collect()
    }

    #[test]
    fn one_host_from_the_authority_and_cookies_joined() {
        let l = HttpLimits::default();
        let h = head(
            "https://a.test/x?y",
            &[
                ("cookie", "a=1"),
                ("host", "A.test"),
                ("cookie", "b=2"),
                ("x-k", "v"),
            ],
        );
        let mut c = Vec::new();
        let f = fields(&h, &mut c, &l).unwrap();
        assert_eq!(
            names(&f),
            [
                ("host", &b"a.test"[..]),
                ("cookie", b"a=1; b=2"),
                ("x-k", b"v")
            ]
        );
        assert_eq!(target(&h).unwrap(), "/x?y");
    }

    #[test]
    fn a_host_that_differs_from_the_authority_is_refused() {
        let h = head("https://a.test/", &[("host", "b.test")]);
        let r = fields(&h, &mut Vec::new(), &HttpLimits::default()).unwrap_err();
        assert_eq!(r.status, 400);
        // Without :authority the Host fields go as sent (two are the classifier's 400).
        let h = head("/", &[("host", "b.test")]);
        let mut c = Vec::new();
        let f = fields(&h, &mut c, &HttpLimits::default()).unwrap();
        assert_eq!(names(&f), [("host", &b"b.test"[..])]);
    }

    #[test]
    fn head_limits_apply_as_on_http1() {
        let l = HttpLimits {
            max_headers: 2,
            max_header_line: 20,
            max_request_line: 20,
            ..HttpLimits::default()
        };
        let h = head("https://a/", &[("x-a", "1"), ("x-b", "2")]);
        assert_eq!(fields(&h, &mut Vec::new(), &l).unwrap_err().status, 431);
        let h = head("https://a/", &[("x-a", "a-long-value-over-20")]);
        assert_eq!(fields(&h, &mut Vec::new(), &l).unwrap_err().status, 431);
        // Cookies short one by one, but one line too long once joined.
        let h = head("https://a/", &[("cookie", "a=123"), ("cookie", "b=123")]);
        assert!(fields(&h, &mut Vec::new(), &l).is_ok());
        let h = head(
            "https://a/",
            &[("cookie", "a=12345"), ("cookie", "b=12345")],
        );
        assert_eq!(fields(&h, &mut Vec::new(), &l).unwrap_err().status, 431);
        let h = head("https://a/a-long-path-over-the-line", &[]);
        let t = target(&h).unwrap();
        assert_eq!(line(&h, t, &l).unwrap_err().status, 414);
    }
}
