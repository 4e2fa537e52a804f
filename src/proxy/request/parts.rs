//! A request head's typed parts, as either front door gives them to the classifier's typed
//! step ([`super::classify_parts`]): HTTP/1's parse, or an HTTP/2 stream's decoded head
//! ([`crate::proxy::h2::head`]); and the protocol a request came in with.

/// The protocol a request came in with (in [`crate::metrics::PROTOCOLS`] order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    H2,
}

impl Version {
    /// The metric label: `http/1.0`, `http/1.1` or `h2`.
    pub fn label(self) -> &'static str {
        match self {
            Version::Http10 => "http/1.0",
            Version::Http11 => "http/1.1",
            Version::H2 => "h2",
        }
    }

    /// As the access log writes it (`$server_protocol`).
    pub fn server_protocol(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
            Version::H2 => "HTTP/2.0",
        }
    }
}

/// A request head as a front door decoded it: the request line's parts and the header fields
/// (for HTTP/2, built from the stream's typed head by [`crate::proxy::h2::head`], with one `host`).
#[derive(Clone, Copy, Debug)]
pub struct Parts<'h, 'f> {
    pub method: &'h str,
    pub target: &'h str,
    pub version: Version,
    pub headers: &'f [httparse::Header<'h>],
    /// HTTP/2: the stream did not end with its head, so a body may follow without a length.
    pub open: bool,
}
