//! `tideway-demo-client`: a WebSocket load client for demos and tests of scale events. A
//! binary of its own (`src/bin/tideway-demo-client.rs`), so the proxy's binary does not carry
//! a WebSocket client it never uses.
//!
//! It opens N WebSockets, each keyed by its own uid (`?uid=N`), sends numbered messages at a
//! set rate, and expects each back from an echo backend. A close with 1001 (going away) makes
//! it reconnect, as a well-behaved chat client does, and send again whatever was not echoed
//! yet, so no message is lost across a move. It counts abrupt closes (no close frame), 1001
//! closes, reconnects and lost messages, and knows which backend holds each uid (from the
//! `x-backend-id` header of the handshake answer, which the demo backend sets).

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// A client WebSocket.
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The `tideway-demo-client` command line.
#[derive(clap::Parser, Debug)]
#[command(
    name = "tideway-demo-client",
    version,
    about = "A WebSocket load client: N connections keyed by uid, messages at a set rate, \
             reconnecting on 1001; prints progress and a final JSON report."
)]
pub struct Args {
    /// WebSocket URL of the proxy; `?KEY=UID` is appended per connection.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    pub url: String,
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Query argument that carries the uid.
    #[arg(long, default_value = "uid")]
    pub key: String,
    /// uid of the first connection.
    #[arg(long, default_value_t = 1)]
    pub first_uid: u64,
    /// Messages per second per connection.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// How long to run (e.g. 30s, 5m); until Ctrl-C without it.
    #[arg(long)]
    pub duration: Option<String>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    pub every: u64,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// `ws://host:port/path`; `?KEY=UID` (or `&KEY=UID`) is appended per connection.
    pub url: String,
    pub connections: usize,
    /// The query argument carrying the uid.
    pub key: String,
    /// The uid of connection 0; connection i has `first_uid + i`.
    pub first_uid: u64,
    /// Messages per second per connection (0: send none).
    pub rate: f64,
}

/// Counters, live while the client runs.
#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    reconnects: AtomicU64,
    failed_connects: AtomicU64,
    abrupt_closes: AtomicU64,
    going_away_closes: AtomicU64,
    other_closes: AtomicU64,
    sent: AtomicU64,
    echoed: AtomicU64,
    duplicates: AtomicU64,
    lost: AtomicU64,
}

/// What a run saw.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    /// WebSockets opened, first connections and reconnections.
    pub opened: u64,
    pub reconnects: u64,
    /// Handshakes that failed (and were retried).
    pub failed_connects: u64,
    /// Connections that ended without a close frame (reset or plain EOF).
    pub abrupt_closes: u64,
    /// Close frames with 1001 (going away): the proxy moved the session.
    pub going_away_closes: u64,
    /// Close frames with any other code.
    pub other_closes: u64,
    pub sent: u64,
    pub echoed: u64,
    /// Echoes of messages already echoed (resent after a move, answered twice).
    pub duplicates: u64,
    /// Messages never echoed by the end.
    pub lost: u64,
    /// Connections open now (in the report of [`Client::stop`]: when it was called).
    pub open: usize,
    /// Open connections per backend id (likewise).
    pub spread: BTreeMap<String, usize>,
}

/// A running client.
pub struct Client {
    counters: Arc<Counters>,
    /// The backend holding each connection now (None while it reconnects).
    placement: Arc<Mutex<Vec<Option<String>>>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Client {
    /// Start every connection; they run until [`Client::stop`].
    pub fn start(opts: Options) -> Client {
        let counters = Arc::new(Counters::default());
        let placement = Arc::new(Mutex::new(vec![None; opts.connections]));
        let stop = CancellationToken::new();
        let tasks = (0..opts.connections)
            .map(|i| {
                let conn = Conn {
                    index: i,
                    url: uid_url(&opts.url, &opts.key, opts.first_uid + i as u64),
                    uid: opts.first_uid + i as u64,
                    rate: opts.rate,
                    counters: counters.clone(),
                    placement: placement.clone(),
                    stop: stop.clone(),
                };
                tokio::spawn(conn.run())
            })
            .collect();
        Client {
            counters,
            placement,
            stop,
            tasks,
        }
    }

    /// The backend of each connection (by index), None while one is not connected.
    pub fn placement(&self) -> Vec<Option<String>> {
        self.placement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The counts so far.
    pub fn report(&self) -> Report {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let placement = self.placement();
        let mut spread = BTreeMap::new();
        for b in placement.iter().flatten() {
            *spread.entry(b.clone()).or_insert(0) += 1;
        }
        Report {
            opened: get(&c.opened),
            reconnects: get(&c.reconnects),
            failed_connects: get(&c.failed_connects),
            abrupt_closes: get(&c.abrupt_closes),
            going_away_closes: get(&c.going_away_closes),
            other_closes: get(&c.other_closes),
            sent: get(&c.sent),
            echoed: get(&c.echoed),
            duplicates: get(&c.duplicates),
            lost: get(&c.lost),
            open: placement.iter().flatten().count(),
            spread,
        }
    }

    /// Stop sending, wait a few seconds for the echoes still due, close every connection
    /// normally, and report. Messages not echoed by then count as lost.
    pub async fn stop(mut self) -> Report {
        let at_stop = self.report();
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + STOP_GRACE + Duration::from_secs(2);
        for t in self.tasks.iter_mut() {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                break;
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        Report {
            open: at_stop.open,
            spread: at_stop.spread,
            ..self.report()
        }
    }
}

/// `url` with `key=uid` added to its query.
fn uid_url(url: &str, key: &str, uid: u64) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={uid}")
}

/// One connection slot: connects, reconnects, sends and counts.
struct Conn {
    index: usize,
    url: String,
    uid: u64,
    rate: f64,
    counters: Arc<Counters>,
    placement: Arc<Mutex<Vec<Option<String>>>>,
    stop: CancellationToken,
}

/// Longest pause between two failed handshakes.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long the end of a run waits for the echoes still due.
const STOP_GRACE: Duration = Duration::from_secs(3);

impl Conn {
    fn place(&self, backend: Option<String>) {
        self.placement.lock().unwrap_or_else(|e| e.into_inner())[self.index] = backend;
    }

    async fn run(self) {
        let c = self.counters.clone();
        // Sent and not yet echoed, by sequence number: sent again after a reconnect.
        let mut pending: BTreeSet<u64> = BTreeSet::new();
        let mut next_seq = 0u64;
        let mut first = true;
        let mut backoff = Duration::from_millis(50);
        let period = (self.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / self.rate));
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            let connected = tokio::select! {
                r = tokio_tungstenite::connect_async(self.url.as_str()) => r,
                _ = self.stop.cancelled() => break,
            };
            let (mut ws, answer) = match connected {
                Ok(ok) => ok,
                Err(_) => {
                    c.failed_connects.fetch_add(1, Ordering::Relaxed);
                    let jitter = Duration::from_millis(rand::random_range(0..50));
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_millis(50);
            let backend = answer
                .headers()
                .get("x-backend-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_string();
            self.place(Some(backend));
            c.opened.fetch_add(1, Ordering::Relaxed);
            if !first {
                c.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            first = false;
            let end = self
                .session(&mut ws, &mut pending, &mut next_seq, period)
                .await;
            self.place(None);
            if self.finish(&mut ws, end).await {
                break;
            }
        }
        c.lost.fetch_add(pending.len() as u64, Ordering::Relaxed);
    }

    /// One connection's life: send again what was not echoed, then send at the rate and
    /// count echoes until the connection ends or the client stops.
    async fn session(
        &self,
        ws: &mut Ws,
        pending: &mut BTreeSet<u64>,
        next_seq: &mut u64,
        period: Option<Duration>,
    ) -> End {
        let c = &self.counters;
        let mut broken = false;
        for seq in pending.iter() {
            if ws
                .send(Message::text(format!("{}:{seq}", self.uid)))
                .await
                .is_err()
            {
                broken = true;
                break;
            }
        }
        let mut ticker = period.map(|p| {
            let offset = p.mul_f64(rand::random::<f64>());
            tokio::time::interval_at(tokio::time::Instant::now() + offset, p)
        });
        let mut stopping: Option<tokio::time::Instant> = None;
        loop {
            if broken {
                break End::Abrupt;
            }
            if let Some(at) = stopping {
                if pending.is_empty() || tokio::time::Instant::now() >= at {
                    break End::Stopped;
                }
            }
            let tick = async {
                match (&mut ticker, stopping) {
                    (Some(t), None) => {
                        t.tick().await;
                    }
                    _ => std::future::pending().await,
                }
            };
            let stop_wait = async {
                match stopping {
                    None => self.stop.cancelled().await,
                    Some(at) => tokio::time::sleep_until(at).await,
                }
            };
            tokio::select! {
                () = stop_wait => {
                    stopping.get_or_insert(tokio::time::Instant::now() + STOP_GRACE);
                }
                () = tick => {
                    let seq = *next_seq;
                    *next_seq += 1;
                    pending.insert(seq);
                    c.sent.fetch_add(1, Ordering::Relaxed);
                    broken = ws.send(Message::text(format!("{}:{seq}", self.uid))).await.is_err();
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let seq = t.as_str().rsplit(':').next().and_then(|s| s.parse::<u64>().ok());
                        match seq {
                            Some(s) if pending.remove(&s) => c.echoed.fetch_add(1, Ordering::Relaxed),
                            _ => c.duplicates.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break match frame {
                            Some(f) if f.code == CloseCode::Away => End::GoingAway,
                            _ => End::OtherClose,
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break End::Abrupt,
                },
            }
        }
    }

    /// Count how a connection ended and close it; true when the client is done.
    async fn finish(&self, ws: &mut Ws, end: End) -> bool {
        let c = &self.counters;
        match end {
            End::Stopped => {
                let _ = ws.close(None).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while ws.next().await.is_some() {}
                })
                .await;
                return true;
            }
            End::GoingAway => {
                c.going_away_closes.fetch_add(1, Ordering::Relaxed);
                // Finish the closing handshake, then come back after a short jitter.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while ws.next().await.is_some() {}
                })
                .await;
                tokio::time::sleep(Duration::from_millis(rand::random_range(0..100))).await;
            }
            End::OtherClose => {
                c.other_closes.fetch_add(1, Ordering::Relaxed);
            }
            End::Abrupt => {
                c.abrupt_closes.fetch_add(1, Ordering::Relaxed);
            }
        }
        false
    }
}

enum End {
    Stopped,
    GoingAway,
    OtherClose,
    Abrupt,
}
