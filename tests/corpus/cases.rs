//! The corpus as data: each case is the raw bytes of one or more client connections, the answer
//! tideway must give (per the HTTP engine's spec), exactly what tideway's backend must frame,
//! and a fixed sentence on why nginx behaves differently. [`all`] adds, behind every
//! single-connection case that allows it, a well-formed `GET /next`: after a refusal the backend
//! must never see it, after an accepted request it must see it as a request of its own.
//!
//! Imports the client's types and the recording backend's; nothing here runs anything.

use super::client::{masked_frame, End, Outcome};
use super::workerman::{Mode, Options, Recorded, Upgrade};

/// One client connection of a case; clients of a case run one after the other, and each stays
/// open until the case ends.
#[derive(Clone, Debug)]
pub struct Client {
    /// Written in order; between two parts the client waits (bounded) for one answer.
    pub parts: Vec<Vec<u8>>,
    /// How many requests the bytes hold (answers to wait for).
    pub requests: usize,
    /// Text the last answer's body must contain to be this client's own answer.
    pub own: Option<&'static str>,
    /// What tideway answers: statuses in order (interim ones included), ...
    pub statuses: Vec<u16>,
    /// ... bytes received after a 101, ...
    pub tunnel: usize,
    /// ... and how the connection ends.
    pub end: End,
}

/// A request tideway's backend must frame, rebuilt by tideway.
#[derive(Clone, Debug)]
pub struct Want {
    /// `METHOD TARGET HTTP/1.1`.
    pub line: String,
    pub body: Vec<u8>,
    /// Lower-case `name: value` lines the head must hold.
    pub headers: Vec<String>,
}

impl Want {
    pub fn with(mut self, header: &str) -> Want {
        self.headers.push(header.to_string());
        self
    }

    /// The head and body tideway would send, as the backend would record them (only what the
    /// summaries look at: request line, framing header, X-Real-IP, body).
    pub fn recorded(&self) -> Recorded {
        let method = self.line.split(' ').next().unwrap_or_default();
        let mut head = format!("{}\r\nhost: x\r\nx-real-ip: 127.0.0.1\r\n", self.line);
        if !self.body.is_empty() || ["POST", "PUT", "PATCH"].contains(&method) {
            head.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&self.body);
        Recorded { conn: 0, raw }
    }
}

/// A request tideway forwards: `line` with `body` (and the framing the spec gives it).
pub fn fwd(line: &str, body: &[u8]) -> Want {
    Want {
        line: line.to_string(),
        body: body.to_vec(),
        headers: Vec::new(),
    }
}

/// Everything a case produced, for the checks.
pub struct Run {
    pub outcomes: Vec<Outcome>,
    pub requests: Vec<Recorded>,
    pub upgrades: Vec<Upgrade>,
    pub store: Vec<u8>,
    /// Bytes the backend received and did not frame as a request.
    pub unframed: usize,
}

/// An extra check on what tideway did, beyond statuses and framed requests.
pub type Check = fn(&Run) -> Result<(), String>;

#[derive(Clone)]
pub struct Case {
    pub name: String,
    pub backend: Options,
    pub clients: Vec<Client>,
    /// Every request tideway's backend must frame, in order.
    pub want: Vec<Want>,
    /// Every upgrade tideway's backend must see: (its answer, early bytes, bytes after 101).
    pub ws: Vec<(u16, usize, usize)>,
    pub check: Option<Check>,
    /// Why nginx differs (shown only when it does).
    pub why: &'static str,
    /// Add the `+ GET /next` variant.
    pub pipeline: bool,
}

impl Case {
    fn mode(mut self, mode: Mode) -> Case {
        self.backend.mode = mode;
        self
    }

    fn accept_ws(mut self) -> Case {
        self.backend.accept_ws = true;
        self
    }

    /// Upgrades tideway's backend must see: (its answer, early bytes, bytes after 101).
    fn ws(mut self, ws: &[(u16, usize, usize)]) -> Case {
        self.ws = ws.to_vec();
        self
    }

    fn check(mut self, check: Check) -> Case {
        self.check = Some(check);
        self
    }

    fn single(mut self) -> Case {
        self.pipeline = false;
        self
    }
}

pub const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
/// The smuggled head: 53 bytes, a `/store` whose 200-byte body is whatever comes next.
pub const SMUGGLED: &[u8] = b"POST /store HTTP/1.1\r\nHost:x\r\nContent-Length: 200\r\n\r\n";
pub const WS_HEAD: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const SPOOF: &[u8] = b"GET /second HTTP/1.1\r\nHost: x\r\nX-Real-IP: 6.6.6.6\r\n\r\n";
const HELLO_CHUNKED: &str = "5\r\nhello\r\n0\r\n\r\n";

const WHY_CAPTURE_41: &str = "\
    nginx forwards a GET body with its Content-Length; Workerman <= 4.1.0 reads none, so \
    the body's POST /store takes the next request on the pooled connection (the victim's \
    cookie) and the victim gets /store's answer";
const WHY_BODY_41: &str = "\
    nginx forwards the body with its Content-Length; Workerman <= 4.1.0 reads no body for \
    this method, so the body stays on the pooled connection and prefixes the next request \
    (`helloGET /next`)";
const WHY_BIG_LINE: &str = "\
    nginx answers 400 (its 494, sent as 400) once the line outgrows \
    large_client_header_buffers (8k); tideway 431";
const WHY_CHUNK_ZEROS: &str = "\
    nginx allows leading zeros in a chunk size (it limits the value, not the digits); \
    tideway refuses more than 15 hex digits";
const WHY_CONNECT: &str = "\
    nginx refuses CONNECT with 400, tideway with 501 Not Implemented";
const WHY_ABSOLUTE: &str = "\
    nginx takes the host from an absolute-form target and ignores Host (RFC 9112 3.2.2); \
    tideway refuses the mismatch";
const WHY_CL0: &str = "\
    nginx forwards `Content-Length: 0`; tideway sends no framing header for a GET without \
    a body";
const WHY_XRI: &str = "\
    nginx passes the client's X-Real-IP on unless the config sets it (`proxy_set_header \
    X-Real-IP $remote_addr`; the seed config does not)";

fn client(bytes: impl Into<Vec<u8>>, requests: usize, statuses: &[u16], end: End) -> Client {
    Client {
        parts: vec![bytes.into()],
        requests,
        own: None,
        statuses: statuses.to_vec(),
        tunnel: 0,
        end,
    }
}

fn case(name: &str, clients: Vec<Client>, want: Vec<Want>, why: &'static str) -> Case {
    Case {
        name: name.to_string(),
        backend: Options {
            mode: Mode::Lenient42,
            accept_ws: false,
            ..Options::default()
        },
        clients,
        want,
        ws: Vec::new(),
        check: None,
        why,
        pipeline: true,
    }
}

/// Refused with `status` and closed; the backend gets nothing.
fn refused(name: &str, bytes: impl Into<Vec<u8>>, status: u16, why: &'static str) -> Case {
    case(
        name,
        vec![client(bytes, 1, &[status], End::Closed)],
        vec![],
        why,
    )
}

/// Answered 200 on a connection that stays open; the backend frames exactly `want`.
fn accepted(name: &str, bytes: impl Into<Vec<u8>>, want: Want, why: &'static str) -> Case {
    case(
        name,
        vec![client(bytes, 1, &[200], End::Open)],
        vec![want],
        why,
    )
}

/// `POST /a` with extra header lines (each ending CRLF) and a body.
fn post(headers: &str, body: &str) -> String {
    format!("POST /a HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}")
}

/// `POST /a` with a chunked body whose framing is `chunks`.
fn chunked(chunks: &str) -> String {
    post("Transfer-Encoding: chunked\r\n", chunks)
}

/// A victim on its own connection: a cookie early in a head long enough to fill a 200-byte body.
fn victim() -> Client {
    let head = format!(
        "GET /private HTTP/1.1\r\nHost: x\r\nCookie: session=VICTIM\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(300)
    );
    Client {
        own: Some("GET /private"),
        ..client(head, 1, &[200], End::Open)
    }
}

fn victim_not_captured(run: &Run) -> Result<(), String> {
    let store = String::from_utf8_lossy(&run.store);
    if store.contains("VICTIM") {
        return Err(format!("/stored holds the victim's request: {store:?}"));
    }
    Ok(())
}

fn quick(run: &Run) -> Result<(), String> {
    let took = run.outcomes[0].elapsed;
    if took > std::time::Duration::from_secs(1) {
        return Err(format!("answered after {took:?}, not at once"));
    }
    Ok(())
}

fn plain_body_for_http10(run: &Run) -> Result<(), String> {
    let r = run.outcomes[0].responses.last().ok_or("no answer")?;
    if r.head.contains("transfer-encoding") || r.body != b"hello world" {
        return Err(format!(
            "{} / {:?}",
            r.head,
            String::from_utf8_lossy(&r.body)
        ));
    }
    Ok(())
}

fn echoed(run: &Run) -> Result<(), String> {
    let want = super::workerman::frame(0x81, b"hello");
    if run.outcomes[0].tunnel != want {
        return Err(format!("tunnel got {:?}", run.outcomes[0].tunnel));
    }
    Ok(())
}

/// The base cases (without the `+ GET /next` variants).
pub fn base() -> Vec<Case> {
    assert_eq!(SMUGGLED.len(), 53);
    let capture = |method: &str, cl: &str| {
        let mut head =
            format!("{method} /a HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\n\r\n").into_bytes();
        head.extend_from_slice(SMUGGLED);
        head
    };
    let frame = masked_frame(0x81, b"hello");
    let mut pipelined_ws = WS_HEAD.to_vec();
    pipelined_ws.extend_from_slice(&frame);
    let mut refused_then_spoof = WS_HEAD.to_vec();
    refused_then_spoof.extend_from_slice(SPOOF);
    let upgrade = fwd("GET /ws HTTP/1.1", b"")
        .with("upgrade: websocket")
        .with("connection: upgrade");
    let second = fwd("GET /second HTTP/1.1", b"").with("x-real-ip: 127.0.0.1");
    let big_line = format!(
        "GET /a HTTP/1.1\r\nHost: x\r\nX-Big: {}",
        "a".repeat(17 * 1024)
    );
    let get_body =
        |m: &str| format!("{m} /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    vec![
        case(
            "capture: CL 000000000053 (4.2.1 reads 0)",
            vec![
                client(capture("POST", "000000000053"), 1, &[200], End::Open),
                victim(),
            ],
            vec![
                fwd("POST /a HTTP/1.1", SMUGGLED),
                fwd("GET /private HTTP/1.1", b""),
            ],
            "",
        )
        .check(victim_not_captured)
        .single(),
        case(
            "capture: GET with CL 53 (4.1.0 reads no body)",
            vec![
                client(capture("GET", "53"), 1, &[400], End::Closed),
                victim(),
            ],
            vec![fwd("GET /private HTTP/1.1", b"")],
            WHY_CAPTURE_41,
        )
        .mode(Mode::Lenient41)
        .check(victim_not_captured)
        .single(),
        case(
            "refused upgrade, then X-Real-IP: 6.6.6.6",
            vec![Client {
                parts: vec![WS_HEAD.to_vec(), SPOOF.to_vec()],
                ..client(vec![], 2, &[200, 200], End::Open)
            }],
            vec![upgrade.clone(), second.clone()],
            WHY_XRI,
        )
        .ws(&[(200, 0, 0)])
        .single(),
        case(
            "refused upgrade, X-Real-IP: 6.6.6.6 pipelined",
            vec![client(refused_then_spoof, 2, &[200, 200], End::Open)],
            vec![upgrade.clone(), second],
            WHY_XRI,
        )
        .ws(&[(200, 0, 0)])
        .single(),
        case(
            "handshake pipelined (frame behind the head)",
            vec![Client {
                tunnel: 7,
                ..client(pipelined_ws, 1, &[101], End::Open)
            }],
            vec![upgrade],
            "",
        )
        .ws(&[(101, 0, frame.len())])
        .accept_ws()
        .check(echoed)
        .single(),
        refused(
            "CL + TE",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                HELLO_CHUNKED,
            ),
            400,
            "",
        ),
        refused(
            "Host twice",
            "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            400,
            "",
        ),
        refused(
            "17 KiB header line, never ends",
            big_line,
            431,
            WHY_BIG_LINE,
        )
        .check(quick)
        .single(),
        case(
            "HTTP/1.0 client, chunked backend answer",
            vec![client(
                "GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n",
                1,
                &[200],
                End::Closed,
            )],
            vec![fwd("GET /chunked HTTP/1.1", b"")],
            "",
        )
        .check(plain_body_for_http10)
        .single(),
        refused(
            "TE: chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", HELLO_CHUNKED),
            501,
            "",
        ),
        refused(
            "TE: xchunked",
            post("Transfer-Encoding: xchunked\r\n", HELLO_CHUNKED),
            501,
            "",
        ),
        refused(
            "TE obs-fold",
            post("Transfer-Encoding:\r\n chunked\r\n", HELLO_CHUNKED),
            400,
            "",
        ),
        refused(
            "TE space before colon",
            post("Transfer-Encoding : chunked\r\n", HELLO_CHUNKED),
            400,
            "",
        ),
        accepted(
            "TRANSFER-ENCODING: CHUNKED",
            post("TRANSFER-ENCODING: CHUNKED\r\n", HELLO_CHUNKED),
            fwd("POST /a HTTP/1.1", b"hello"),
            "",
        ),
        refused(
            "CL twice (equal)",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            400,
            "",
        ),
        refused("CL +5", post("Content-Length: +5\r\n", "hello"), 400, ""),
        refused(
            "CL '5 5'",
            post("Content-Length: 5 5\r\n", "hello"),
            400,
            "",
        ),
        refused("CL 0x5", post("Content-Length: 0x5\r\n", "hello"), 400, ""),
        refused(
            "chunk size zz",
            chunked("zz\r\nhello\r\n0\r\n\r\n"),
            400,
            "",
        ),
        refused(
            "chunk size 16 hex digits",
            chunked("0000000000000005\r\nhello\r\n0\r\n\r\n"),
            400,
            WHY_CHUNK_ZEROS,
        ),
        refused(
            "chunk size empty",
            chunked("\r\nhello\r\n0\r\n\r\n"),
            400,
            "",
        ),
        accepted(
            "chunk framing with bare LF",
            chunked("5\nhello\n0\n\n"),
            fwd("POST /a HTTP/1.1", b"hello"),
            "",
        ),
        accepted(
            "chunk framing, mixed CRLF and LF, trailer",
            chunked("5\r\nhello\n6;e=1\n world\r\n0\nX-Trailer: 1\n\r\n"),
            fwd("POST /a HTTP/1.1", b"hello world"),
            "",
        ),
        refused(
            "chunk framing with bare CR",
            chunked("5\rhello\r\n0\r\n\r\n"),
            400,
            "",
        ),
        accepted(
            "chunked body",
            chunked("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            fwd("POST /a HTTP/1.1", b"hello world"),
            "",
        ),
        accepted(
            "chunked body with trailer",
            chunked("5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
            fwd("POST /a HTTP/1.1", b"hello"),
            "",
        ),
        case(
            "Expect: 100-continue",
            vec![Client {
                parts: vec![
                    post("Content-Length: 4\r\nExpect: 100-continue\r\n", "").into_bytes(),
                    b"abcd".to_vec(),
                ],
                ..client(vec![], 1, &[100, 200], End::Open)
            }],
            vec![fwd("POST /a HTTP/1.1", b"abcd")],
            "",
        ),
        accepted(
            "bare-LF head",
            "GET /a HTTP/1.1\nHost: x\n\n",
            fwd("GET /a HTTP/1.1", b""),
            "",
        ),
        accepted(
            "head ending LF CRLF",
            "POST /a HTTP/1.1\r\nHost: x\nContent-Length: 5\n\r\nhello",
            fwd("POST /a HTTP/1.1", b"hello"),
            "",
        ),
        accepted(
            "head ending CRLF LF",
            "POST /a HTTP/1.1\nHost: x\r\nContent-Length: 5\r\n\nhello",
            fwd("POST /a HTTP/1.1", b"hello"),
            "",
        ),
        refused(
            "bare CR ending the request line",
            "GET /a HTTP/1.1\rHost: x\r\n\r\n",
            400,
            "",
        ),
        refused(
            "bare CR ending a header line",
            "GET /a HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
            400,
            "",
        ),
        refused(
            "TE obs-fold, bare LF",
            "POST /a HTTP/1.1\nHost: x\nTransfer-Encoding:\n chunked\n\n5\nhello\n0\n\n",
            400,
            "",
        ),
        refused(
            "HTTP/2.0 version",
            "GET /a HTTP/2.0\r\nHost: x\r\n\r\n",
            505,
            "",
        ),
        refused(
            "CONNECT",
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            501,
            WHY_CONNECT,
        ),
        accepted(
            "absolute-form, same host",
            "GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
            fwd("GET /a HTTP/1.1", b""),
            "",
        ),
        refused(
            "absolute-form, other host",
            "GET http://evil/a HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            WHY_ABSOLUTE,
        ),
        refused("body on GET", get_body("GET"), 400, WHY_BODY_41).mode(Mode::Lenient41),
        refused("body on DELETE", get_body("DELETE"), 400, WHY_BODY_41).mode(Mode::Lenient41),
        refused("body on OPTIONS", get_body("OPTIONS"), 400, WHY_BODY_41).mode(Mode::Lenient41),
        accepted(
            "GET with Content-Length: 0",
            "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            fwd("GET /a HTTP/1.1", b""),
            WHY_CL0,
        )
        .mode(Mode::Lenient41),
    ]
}

/// Every case: each base case, then its `+ GET /next` variant if it has one.
pub fn all() -> Vec<Case> {
    let mut out = Vec::new();
    for c in base() {
        let next = c.pipeline.then(|| behind(&c));
        out.push(c);
        out.extend(next);
    }
    out
}

/// `c` with a well-formed `GET /next` right behind its bytes.
fn behind(c: &Case) -> Case {
    let mut n = c.clone();
    n.name = format!("{} + GET /next", c.name);
    let last = n.clients.last_mut().expect("a client");
    last.parts
        .last_mut()
        .expect("a part")
        .extend_from_slice(NEXT);
    last.requests += 1;
    if last.end != End::Closed {
        last.statuses.push(200);
        n.want.push(fwd("GET /next HTTP/1.1", b""));
    }
    n
}
