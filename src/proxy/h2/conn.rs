//! One HTTP/2 connection: the codec's limits (at nginx's defaults or stricter), the accept
//! loop, and how the connection ends.
//!
//! - Each accepted stream runs as a task of its own ([`stream`]): streams proceed in
//!   parallel on the runtime's threads, a slow one never delays the connection's own I/O
//!   (which the codec drives from this task), and a stream's large future is not kept inside
//!   the connection's. At most `max_concurrent_streams` of them run at once: past that,
//!   the codec is driven but no stream is taken, so streams a client opens and resets
//!   (rapid reset, CVE-2023-44487) pile up as pending-accept resets, and past
//!   [`DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS`] the connection gets GOAWAY.
//! - Limits: [`builder`] lists them with why. The client's preface and the first request
//!   come within `header_timeout`; a connection without open streams for `keepalive_timeout`
//!   is sent GOAWAY, as is one that has carried `keepalive_requests` streams (nginx applies
//!   `keepalive_requests` to HTTP/2 too). GOAWAY goes also on server shutdown and when a
//!   reload turns the listener away; streams in flight finish, and a client that does not
//!   close after GOAWAY is cut [`GOAWAY_GRACE`] after its last stream ended.
//! - A client that takes no bytes of the connection for `send_timeout` (it floods SETTINGS or
//!   PINGs and never reads their ACKs, or stops reading) is closed ([`super::stall`]).
//! - Per-client limits are the engine's, per stream: `limit_conn` counts each stream as a
//!   connection (as nginx does), `limit_req` each request.

use super::stream::H2Io;
use crate::config::HttpLimits;
use crate::proxy::exchange::Peers;
use crate::proxy::gateway::{Gateway, Places};
use crate::proxy::tls::Identity;
use bytes::Bytes;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Most streams a client may reset before tideway accepted them, at once
/// (`max_pending_accept_reset_streams`): past it the connection gets GOAWAY
/// (ENHANCE_YOUR_CALM). Rapid reset (CVE-2023-44487) opens and resets streams faster than
/// they are served; the h2 crate's default, as hyper's.
pub const DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Most streams tideway may reset for the client's errors over a connection's life
/// (`max_local_error_reset_streams`) before it sends GOAWAY: a client that keeps making
/// malformed streams is cut (the second half of the rapid-reset fix).
pub const DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 128;

/// Most bytes of response DATA buffered per stream before a write waits
/// (`max_send_buffer_size`): 128 streams hold at most 8 MiB for a client that does not read.
pub const DEFAULT_MAX_SEND_BUFFER: usize = 64 * 1024;

/// The HPACK dynamic table the client's encoder may use (`SETTINGS_HEADER_TABLE_SIZE`, the
/// protocol's default): decoding state per connection is bounded by it.
pub const DEFAULT_HEADER_TABLE_SIZE: u32 = 4096;

/// A stream's flow-control window (the protocol's default, 65,535 bytes).
const STREAM_WINDOW: u32 = 65_535;

/// The largest flow-control window HTTP/2 allows (2^31 - 1).
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// After GOAWAY, how long a connection without streams waits for its client to close before
/// it is closed.
pub const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// How often a connection looks whether a reload turned its listener away.
const TURNED_AWAY_CHECK: Duration = Duration::from_secs(1);

/// The codec's settings for a listener with `limits`.
pub fn builder(limits: &HttpLimits) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(limits.max_concurrent_streams)
        // A header list as large as an HTTP/1 head may be (nginx's
        // large_client_header_buffers, 4 x 8k); CONTINUATION frames count toward it
        // (CVE-2024-27316).
        .max_header_list_size(u32::try_from(limits.max_head).unwrap_or(u32::MAX))
        .header_table_size(DEFAULT_HEADER_TABLE_SIZE)
        .max_pending_accept_reset_streams(DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(Some(DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS))
        .max_send_buffer_size(DEFAULT_MAX_SEND_BUFFER)
        // Room on the connection for every stream's own window (64 KiB each, the protocol's
        // default), so one upload tideway is not reading yet (queued, delayed, or streaming
        // to a slow backend) cannot stall the others: memory stays bounded by the streams'
        // windows, as before.
        .initial_connection_window_size(
            limits
                .max_concurrent_streams
                .saturating_mul(STREAM_WINDOW)
                .min(MAX_WINDOW),
        );
    if super::websocket::ANNOUNCE {
        b.enable_connect_protocol();
    }
    b
}

/// What every stream of one connection shares.
pub struct Shared {
    pub gateway: Arc<Gateway>,
    pub peers: Peers,
    pub identity: Option<Identity>,
    pub shutdown: ShutdownWatch,
    /// Streams being served.
    live: AtomicUsize,
    /// Told when a stream ends.
    ended: Notify,
    /// Streams refused at the cap or reset at work ([`super::reset`]).
    pub(super) strikes: super::reset::Strikes,
}

/// A stream's place among the connection's live ones, given back when its task ends.
struct Live(Arc<Shared>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_one();
    }
}

/// Serve one connection that negotiated `h2`: every stream on it. `places`: what the
/// connection holds under the process's and the listener's caps, until it ends.
pub async fn serve(
    gateway: Arc<Gateway>,
    io: Stream,
    (peers, identity): (Peers, Option<Identity>),
    shutdown: ShutdownWatch,
    places: Places,
) {
    let _places = places;
    let limits = gateway.limits().clone();
    let stall = super::stall::Stall::new();
    let io = super::stall::Watched::new(io, stall.clone());
    let handshake = builder(&limits).handshake::<_, Bytes>(io);
    let mut conn = match tokio::time::timeout(limits.header_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    let shared = Arc::new(Shared {
        gateway,
        peers,
        identity,
        shutdown: shutdown.clone(),
        live: AtomicUsize::new(0),
        ended: Notify::new(),
        strikes: Default::default(),
    });
    let mut stop = std::pin::pin!(stopped(shutdown));
    let mut check = tokio::time::interval(TURNED_AWAY_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the writes will have waited `send_timeout`, if they still wait then (None: no
    // write waits).
    let mut stall_at: Option<Instant> = None;
    // The first request comes within the header timeout; later, the connection may be idle
    // for the keep-alive timeout.
    let mut deadline = Instant::now() + limits.header_timeout;
    let mut accepted: u64 = 0;
    let mut going_away = false;
    // When GOAWAY went out.
    let mut going_since: Option<Instant> = None;
    let mut aborted = false;
    let most = limits.max_concurrent_streams as usize;
    loop {
        let live = shared.live.load(Ordering::Acquire);
        let idle = live == 0;
        // With as many streams being served as a client may open, no more are taken from
        // the codec (it is still driven, for the streams' I/O): streams a client opens and
        // resets meanwhile count toward `max_pending_accept_reset_streams`, and a rapid reset
        // can never start more work than `max_concurrent_streams` at once.
        let full = live >= most;
        let next = std::future::poll_fn(|cx| {
            if full {
                conn.poll_closed(cx).map(|r| r.err().map(Err))
            } else {
                conn.poll_accept(cx)
            }
        });
        tokio::select! {
            biased;
            _ = &mut stop, if !going_away => {
                conn.graceful_shutdown();
                going_away = true;
                going_since = Some(Instant::now());
                deadline = Instant::now() + GOAWAY_GRACE;
            }
            next = next => match next {
                Some(Ok((req, mut respond))) => {
                    // A client that ignores the GOAWAY (it never acknowledges the PING that
                    // goes with it, so the codec never names the last stream) gets no new
                    // stream past the grace: `keepalive_requests`, shutdown and a removed
                    // listener hold for it too.
                    // Each such stream is a strike; past the strikes, the connection is cut.
                    if going_since.is_some_and(|t| t.elapsed() > GOAWAY_GRACE) {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        shared.strikes.strike();
                        let most = super::reset::STRIKES_PER_STREAM.saturating_mul(most);
                        if shared.strikes.count() > most {
                            conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                        }
                        continue;
                    }
                    accepted += 1;
                    let live = (
                        shared.live.load(Ordering::Acquire),
                        limits.max_concurrent_streams,
                        accepted,
                    );
                    if !shared.strikes.admitted(live, &mut respond, &mut conn) {
                        continue;
                    }
                    shared.live.fetch_add(1, Ordering::AcqRel);
                    let live = Live(shared.clone());
                    tokio::spawn(async move {
                        stream(&live.0, req, respond).await;
                        drop(live);
                    });
                    if accepted >= u64::from(limits.keepalive_requests) && !going_away {
                        conn.graceful_shutdown();
                        going_away = true;
                        going_since = Some(Instant::now());
                        deadline = Instant::now() + GOAWAY_GRACE;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "HTTP/2 connection error");
                    break;
                }
                None => break,
            },
            _ = shared.ended.notified() => {
                if shared.live.load(Ordering::Acquire) == 0 {
                    deadline = Instant::now()
                        + if going_away { GOAWAY_GRACE } else { limits.keepalive_timeout };
                }
            }
            _ = tokio::time::sleep_until(deadline), if idle => {
                if !going_away {
                    conn.graceful_shutdown();
                    going_away = true;
                    going_since = Some(Instant::now());
                    deadline = Instant::now() + GOAWAY_GRACE;
                } else if !aborted {
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    aborted = true;
                    deadline = Instant::now() + GOAWAY_GRACE;
                } else {
                    break;
                }
            }
            _ = stall.started() => {
                stall_at = stall.ends(limits.send_timeout);
            }
            _ = tokio::time::sleep_until(stall_at.unwrap_or_else(Instant::now)), if stall_at.is_some() => {
                stall_at = stall.ends(limits.send_timeout);
                if stall_at.is_some_and(|t| t <= Instant::now()) {
                    tracing::info!(
                        peer = ?shared.peers.client,
                        "HTTP/2 client took no bytes for send_timeout: connection closed"
                    );
                    break;
                }
            }
            _ = check.tick(), if !going_away => {
                if shared.gateway.is_turned_away() {
                    conn.graceful_shutdown();
                    going_away = true;
                    going_since = Some(Instant::now());
                    deadline = Instant::now() + GOAWAY_GRACE;
                }
            }
        }
    }
}

/// Resolves once the server is shutting down.
async fn stopped(mut watch: ShutdownWatch) {
    while !*watch.borrow_and_update() {
        if watch.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Serve one stream: an extended CONNECT goes to [`super::websocket`]; any other request's
/// head becomes the classifier's parts and goes through the engine.
async fn stream(
    conn: &Shared,
    req: http::Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
) {
    let (head, body) = req.into_parts();
    let open = !body.is_end_stream();
    let head_only = head.method == http::Method::HEAD;
    let h2 = H2Io::new(body, respond, head_only);
    let reset = h2.reset_watch();
    let mut io: Stream = Box::new(h2);
    // The engine's futures are large (the request's is kilobytes, an extended CONNECT's
    // holds one and its tunnel): each is boxed where it starts, so this task stays small. A
    // spawned task's future is copied whole into its cell, and again as it completes;
    // unboxed, the task was 34 KB, and memmove fell from 9.1% to 4.8% of tideway's CPU
    // samples under h2load once boxed (docs/benchmarks.md).
    if let Some(protocol) = head.extensions.get::<h2::ext::Protocol>() {
        Box::pin(super::websocket::serve(conn, (&head, protocol), io, reset)).await;
        return;
    }
    let limits = conn.gateway.limits();
    let mut cookie = Vec::new();
    let decoded = super::head::fields(&head, &mut cookie, limits).and_then(|fields| {
        let target = super::head::target(&head)?;
        super::head::line(&head, target, limits)?;
        Ok((target, fields))
    });
    let (target, fields) = match decoded {
        Ok(d) => d,
        Err(r) => {
            // What of the head the log shows: its method and path.
            let path = head.uri.path_and_query().map_or("", |p| p.as_str());
            let known = super::head::parts(&head, path, &[], open);
            let peers = (conn.peers, conn.identity.as_ref());
            return Box::pin(conn.gateway.h2_refused(&mut io, &known, r, peers)).await;
        }
    };
    let parts = super::head::parts(&head, target, &fields, open);
    let on = (conn.peers, conn.identity.as_ref(), &conn.shutdown);
    let served = Box::pin(conn.gateway.h2_request(&mut io, &parts, on));
    if super::reset::unless_reset(reset, &conn.strikes, served).await == Some(true) {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
    }
}
