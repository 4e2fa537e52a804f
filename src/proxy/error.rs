//! Why an attempt on a backend failed, and whose fault it was.
//!
//! Every failure of an exchange with a backend is one [`Error`]: what went wrong ([`Kind`]),
//! the [`Side`] that caused it, the [`Retry`] it allows, and the status the client gets. The
//! retry loop ([`super::route::Route::attempts`]), passive health and the failure metric read
//! these fields and nothing else; no reason is ever guessed from a status code. What the
//! retry loop gives up with is one [`Failure`]: no backend to pick ([`NoBackend`]), none left,
//! or the last attempt's [`Error`]; the status and message the client gets, the access log's
//! status and the metric's reason are its methods.
//!
//! Invariant: only [`Side::Backend`] failures count toward passive health, and only they send
//! a request on to another backend. The backends tideway fronts parse leniently (Workerman
//! answers 101 to any GET whose head contains `Sec-WebSocket-Key:`, and 413 plus a close to a
//! body over its limit), so a client can provoke a backend into answers that look broken; those
//! are the client's failures, and a client must never be able to get a backend ejected.
//!
//! Imports nothing else in tideway.

use std::fmt;

/// Who caused a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The request provoked it (a lenient backend misread what the client sent).
    Client,
    /// The backend: refused, reset, timed out, or answered nonsense to a plain request.
    Backend,
    /// tideway itself (its configuration: a backend that is one of its own listeners).
    Proxy,
}

/// What a failure allows the retry loop to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The backend got none of the request: another backend may get it.
    Anywhere,
    /// The backend may have acted on the request: only an idempotent one goes on.
    IfIdempotent,
    /// The request stays failed.
    Never,
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The backend refused the connection.
    Connect,
    /// The backend did not take the connection in time.
    ConnectTimeout,
    /// Sending the request failed before all of it went out.
    Send,
    /// The backend closed without a byte of answer.
    Unanswered,
    /// The backend did not answer in time.
    Timeout,
    /// The backend's answer cannot be forwarded.
    BadResponse,
    /// A `101` to a handshake whose key tideway made (a WebSocket over HTTP/2), with another
    /// `Sec-WebSocket-Accept` than that key's.
    WrongAccept,
    /// A `101 Switching Protocols` to a request that was not a WebSocket handshake.
    UnaskedUpgrade,
    /// The backend stopped taking a request body (and said nothing tideway could relay).
    CutBody,
    /// The backend's address is one of tideway's own listeners.
    Loop,
    /// tideway ran out of something of its own (descriptors, memory, local ports) before the
    /// backend could take part.
    Local,
    /// The backend answered with a status `next_upstream` lists (its head not yet sent to the
    /// client), and another backend may be tried.
    Status,
}

/// One failed attempt on a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: Kind,
    side: Side,
    why: String,
    /// For [`Kind::Status`]: the status the backend answered.
    code: u16,
}

impl Error {
    fn new(kind: Kind, side: Side, why: impl Into<String>) -> Self {
        Error {
            kind,
            side,
            why: why.into(),
            code: 0,
        }
    }

    /// Connecting failed (refused, unreachable).
    pub fn connect(why: impl Into<String>) -> Self {
        Error::new(Kind::Connect, Side::Backend, why)
    }

    /// Connecting timed out.
    pub fn connect_timeout() -> Self {
        Error::new(Kind::ConnectTimeout, Side::Backend, "connect timed out")
    }

    /// The backend answered `code`, a status `next_upstream` sends on to the next backend.
    pub fn answered(code: u16) -> Self {
        Error {
            code,
            ..Error::new(Kind::Status, Side::Backend, format!("answered {code}"))
        }
    }

    /// Writing the request failed before all of it was sent.
    pub fn unsent(why: impl Into<String>) -> Self {
        Error::new(Kind::Send, Side::Backend, why)
    }

    /// The backend closed (or reset) without answering a request it got whole.
    pub fn unanswered(why: impl Into<String>) -> Self {
        Error::new(Kind::Unanswered, Side::Backend, why)
    }

    /// No answer within the upstream's timeout, to a request the backend got whole.
    pub fn timeout() -> Self {
        Error::new(Kind::Timeout, Side::Backend, "the backend timed out")
    }

    /// An answer that cannot be forwarded. `misreadable`: the request carried something a
    /// lenient backend may misread (see [`super::request::Request::misreadable`]), so the
    /// client is to blame.
    pub fn bad_response(why: impl Into<String>, misreadable: bool) -> Self {
        let side = if misreadable {
            Side::Client
        } else {
            Side::Backend
        };
        Error::new(Kind::BadResponse, side, why)
    }

    /// The backend switched to WebSocket with a wrong `Sec-WebSocket-Accept` for tideway's own
    /// key. The client chose no part of that key, so the backend is broken and counted (as
    /// a 502 that `invalid_header` may send on), unless `misreadable`: the head it got held a
    /// second `Sec-WebSocket-Key:` the client wrote (see [`super::h2::websocket::misread`]).
    pub fn wrong_accept(misreadable: bool) -> Self {
        let side = if misreadable {
            Side::Client
        } else {
            Side::Backend
        };
        Error::new(
            Kind::WrongAccept,
            side,
            "the backend answered tideway's WebSocket key with a wrong Sec-WebSocket-Accept",
        )
    }

    /// The backend switched protocols on a request that asked for no such thing: a lenient
    /// backend misread the client's head. The connection is closed, the backend not blamed.
    pub fn unasked_upgrade() -> Self {
        Error::new(
            Kind::UnaskedUpgrade,
            Side::Client,
            "the backend switched protocols without a WebSocket handshake",
        )
    }

    /// The backend stopped taking the request body and sent no answer to relay (a backend
    /// refusing an upload closes mid-body). The request was not sent whole, so nothing says
    /// the backend is broken.
    pub fn cut_body(why: impl Into<String>) -> Self {
        Error::new(Kind::CutBody, Side::Client, why)
    }

    /// Connecting failed for want of tideway's own resources (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM, EADDRNOTAVAIL): no backend is to blame, and no other would fare better.
    pub fn local(why: impl Into<String>) -> Self {
        Error::new(Kind::Local, Side::Proxy, why)
    }

    /// The connect error `e`, typed by who ran out: tideway or the backend.
    pub fn connecting(e: &std::io::Error) -> Self {
        let local = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
        );
        if local {
            Error::local(format!("connect: {e}"))
        } else {
            Error::connect(format!("connect: {e}"))
        }
    }

    /// The backend's address is one of tideway's own: the request would come back.
    pub fn looped(why: impl Into<String>) -> Self {
        Error::new(Kind::Loop, Side::Proxy, why)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn side(&self) -> Side {
        self.side
    }

    /// What the retry loop may do with the request after this failure, when the upstream's
    /// `next_upstream` lists it (see [`super::route`]).
    pub fn retry(&self) -> Retry {
        match (self.side, self.kind) {
            (Side::Backend, Kind::Connect | Kind::ConnectTimeout | Kind::Send) => Retry::Anywhere,
            (
                Side::Backend,
                Kind::Unanswered
                | Kind::Timeout
                | Kind::BadResponse
                | Kind::WrongAccept
                | Kind::Status,
            ) => Retry::IfIdempotent,
            _ => Retry::Never,
        }
    }

    /// Does this failure count toward the backend's passive health? A 403 or 404 never does,
    /// as with nginx. Nor does an answer that cannot be forwarded (nginx counts it): a backend
    /// that copies a request value into a response header lets the client write that head
    /// (a second Content-Length, a bare CR), and a client must never get a backend ejected.
    /// Such an answer still gets 502 and, when `proxy_next_upstream` lists `invalid_header`,
    /// goes to the next backend; active health checks still find a backend that is broken.
    pub fn counts(&self) -> bool {
        self.side == Side::Backend
            && self.kind != Kind::BadResponse
            && !(self.kind == Kind::Status && matches!(self.code, 403 | 404))
    }

    /// The status the client gets.
    pub fn status(&self) -> u16 {
        match self.kind {
            Kind::Timeout | Kind::ConnectTimeout => 504,
            Kind::Loop => 508,
            Kind::Local => 503,
            Kind::Status => self.code,
            _ => 502,
        }
    }

    /// The `reason` label of `tideway_upstream_failures_total`; a client-caused failure's
    /// label starts with `client_` and never names a backend fault.
    pub fn label(&self) -> &'static str {
        match (self.side, self.kind) {
            (Side::Client, Kind::UnaskedUpgrade) => "client_upgrade",
            (Side::Client, Kind::CutBody) => "client_body",
            (Side::Client, _) => "client_misread",
            (Side::Proxy, Kind::Local) => "local",
            (Side::Proxy, _) => "loop",
            (Side::Backend, Kind::Connect | Kind::ConnectTimeout) => "connect",
            (Side::Backend, Kind::Status) => "status",
            (Side::Backend, Kind::Send) => "send",
            (Side::Backend, Kind::Unanswered) => "unanswered",
            (Side::Backend, Kind::Timeout) => "timeout",
            (Side::Backend, _) => "bad_response",
        }
    }

    /// May the same request go again on a fresh connection to the same backend, after a
    /// pooled connection turned out stale (closed by the backend while idle)?
    pub fn stale_retry(&self, idempotent: bool) -> bool {
        match (self.side, self.kind) {
            (Side::Backend, Kind::Connect | Kind::Send) => true,
            (Side::Backend, Kind::Unanswered) => idempotent,
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for Error {}

/// What a client refused by upgrade admission is told ([`Failure::Busy`]).
pub const BUSY: &str = "the backend takes no more new connections right now; retry later";

/// Why no backend could be chosen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoBackend {
    #[error("no upstream named {0:?}")]
    UnknownUpstream(String),
    #[error("no available backend in upstream {0:?}")]
    NoneAvailable(String),
}

/// Why the retry loop gave a request up: no backend served it. Its `Display` is the message
/// the client gets in the JSON error body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No backend could be picked for the first attempt.
    #[error("{0}")]
    NoBackend(NoBackend),
    /// Backends were tried and failed, and no other can be picked (each failed attempt was
    /// counted as it happened).
    #[error("no backend could be reached")]
    Exhausted,
    /// The last attempt failed, and the request goes no further.
    #[error("backend failed: {0}")]
    Attempt(Error),
    /// Upgrade admission refused the client (the picked backend's queue was full, or its wait
    /// ran out): 503 with `Retry-After` of this many seconds. No backend's failure.
    #[error("{}", BUSY)]
    Busy(u64),
    /// The client went away while it waited for admission: nothing to answer.
    #[error("the client went away while queued")]
    Gone,
}

impl Failure {
    /// The status the client gets (and the access log shows).
    pub fn status(&self) -> u16 {
        match self {
            Failure::NoBackend(_) => 503,
            Failure::Exhausted => 502,
            Failure::Attempt(e) => e.status(),
            Failure::Busy(_) => 503,
            // nginx's "client closed request".
            Failure::Gone => 499,
        }
    }

    /// The `reason` label of `tideway_upstream_failures_total` this failure is counted under
    /// when it happens; None for [`Failure::Exhausted`], whose attempts were each counted,
    /// and for the refusals of upgrade admission, which are no failure of the upstream.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Failure::NoBackend(_) => Some("no_backend"),
            Failure::Exhausted | Failure::Busy(_) | Failure::Gone => None,
            Failure::Attempt(e) => Some(e.label()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backend_failures_count_or_retry() {
        let provoked = [
            Error::unasked_upgrade(),
            Error::bad_response("x", true),
            Error::wrong_accept(true),
            Error::cut_body("x"),
            Error::looped("x"),
        ];
        for e in provoked {
            assert!(!e.counts(), "{e:?}");
            assert_eq!(e.retry(), Retry::Never, "{e:?}");
            assert!(!e.stale_retry(true), "{e:?}");
        }
        assert!(!Error::bad_response("x", false).counts());
        // A wrong Accept to tideway's own key: the backend's doing, counted, a 502 that
        // `invalid_header` may send on.
        let accept = Error::wrong_accept(false);
        assert!(accept.counts() && accept.status() == 502 && accept.label() == "bad_response");
        assert_eq!(accept.retry(), Retry::IfIdempotent);
        assert_eq!(accept.side(), Side::Backend);
        assert!(
            !Error::timeout().stale_retry(true),
            "a timeout is not a stale connection"
        );
        assert!(Error::answered(502).counts() && !Error::answered(404).counts());
        assert_eq!(Error::answered(503).status(), 503);
        assert_eq!(Error::connect("x").retry(), Retry::Anywhere);
        assert_eq!(Error::unanswered("x").retry(), Retry::IfIdempotent);
        assert!(!Error::unanswered("x").stale_retry(false));
        assert_eq!(Error::timeout().status(), 504);
        assert_eq!(Error::looped("x").status(), 508);
        assert_eq!(Error::unasked_upgrade().label(), "client_upgrade");
        let emfile = Error::connecting(&std::io::Error::from_raw_os_error(libc::EMFILE));
        assert!(!emfile.counts() && emfile.status() == 503 && emfile.label() == "local");
        let refused = Error::connecting(&std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert!(refused.counts() && refused.retry() == Retry::Anywhere);
    }

    #[test]
    fn a_failure_says_what_the_client_gets_and_how_it_is_counted() {
        let none = Failure::NoBackend(NoBackend::NoneAvailable("app".into()));
        assert_eq!((none.status(), none.label()), (503, Some("no_backend")));
        assert_eq!(none.to_string(), "no available backend in upstream \"app\"");
        assert_eq!(
            (Failure::Exhausted.status(), Failure::Exhausted.label()),
            (502, None)
        );
        assert_eq!(
            Failure::Exhausted.to_string(),
            "no backend could be reached"
        );
        let timed_out = Failure::Attempt(Error::timeout());
        assert_eq!(
            (timed_out.status(), timed_out.label()),
            (504, Some("timeout"))
        );
        assert_eq!(
            timed_out.to_string(),
            "backend failed: the backend timed out"
        );
        // Every label is one the metric knows (and forgets with its upstream).
        let every = [
            Error::connect("x"),
            Error::connect_timeout(),
            Error::answered(502),
            Error::unsent("x"),
            Error::unanswered("x"),
            Error::timeout(),
            Error::bad_response("x", false),
            Error::bad_response("x", true),
            Error::wrong_accept(false),
            Error::wrong_accept(true),
            Error::unasked_upgrade(),
            Error::cut_body("x"),
            Error::local("x"),
            Error::looped("x"),
        ];
        let labels = every
            .into_iter()
            .map(Failure::Attempt)
            .chain([none])
            .filter_map(|f| f.label());
        for label in labels {
            assert!(crate::metrics::FAILURE_REASONS.contains(&label), "{label}");
        }
    }
}
