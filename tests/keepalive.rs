//! Dead peers (issue 24, keepalive by the proxy), end to end with the tideway binary, real
//! sockets and real WebSocket clients: a client that stops answering tideway's pings is
//! closed and its backend gets 1001; a client that answers outlives `idle_timeout`; a
//! backend's own pings and its clients' pongs pass untouched; a client that stops reading is
//! cut after `send_timeout` while another client of the same backend keeps getting its
//! messages.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;
/// What a backend read, by connection: the name its client sent first, and each message.
type Seen = Arc<Mutex<Vec<(String, Message)>>>;

/// A WebSocket backend on port 0 that hands each connection to `serve`.
async fn ws_backend<F, Fut>(serve: F) -> (SocketAddr, Seen)
where
    F: Fn(Ws, Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let (serve, s) = (Arc::new(serve), seen.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (serve, s) = (serve.clone(), s.clone());
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    serve(ws, s).await;
                }
            });
        }
    });
    (addr, seen)
}

/// Record every message read (tungstenite answers pings by itself), and echo text.
async fn record(mut ws: Ws, seen: Seen) {
    while let Some(Ok(m)) = ws.next().await {
        let echo = m.is_text().then(|| m.clone());
        seen.lock().unwrap().push((String::new(), m));
        if let Some(e) = echo {
            if ws.send(e).await.is_err() {
                break;
            }
        }
    }
}

fn upstream(backend: SocketAddr, extra: &str) -> String {
    format!("[upstream.app]\n{extra}\nbackends = [{{ addr = \"{backend}\" }}]\n")
}

/// `tideway_tunnels_ended_total` of upstream app for `reason`.
async fn ended(proxy: &Proxy, reason: &str) -> f64 {
    let series = format!("tideway_tunnels_ended_total{{reason=\"{reason}\",upstream=\"app\"}}");
    metric(proxy, &series).await
}

/// A WebSocket handshake on a raw socket, read up to the end of the 101's head.
async fn raw_client(proxy: &Proxy) -> TcpStream {
    let mut s = TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// One unmasked frame from tideway: its first byte and payload.
async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let b0 = s.read_u8().await.unwrap();
    let len = s.read_u8().await.unwrap();
    assert!(len < 126, "a short frame, got length byte {len}");
    let mut payload = vec![0; usize::from(len)];
    s.read_exact(&mut payload).await.unwrap();
    (b0, payload)
}

fn is_going_away(m: &Message) -> bool {
    matches!(m, Message::Close(Some(f)) if f.code == CloseCode::Away)
}

/// Must show 3a: a raw client that reads tideway's ping and never answers is closed with
/// 1001 within ping_interval + pong_timeout, and its backend gets 1001 too.
#[tokio::test]
async fn a_client_that_stops_answering_is_closed_and_its_backend_gets_1001() {
    let (addr, seen) = ws_backend(record).await;
    let keys = "ping_interval = \"500ms\"\npong_timeout = \"500ms\"";
    let proxy = start_proxy(&upstream(addr, keys)).await;
    let mut client = raw_client(&proxy).await;
    // The tunnel started before the 101 reached us: times from here are at most that late.
    let start = Instant::now();
    // ping_interval + pong_timeout, and a margin for scheduling on a busy machine.
    let limit = Duration::from_millis(500 + 500 + 500);
    let (b0, payload) = tokio::time::timeout(limit, read_frame(&mut client))
        .await
        .expect("tideway's ping");
    assert_eq!((b0, payload.len()), (0x89, 8), "an unmasked ping, 8 bytes");
    let pinged = start.elapsed();
    assert!(
        pinged >= Duration::from_millis(450),
        "pinged after {pinged:?}"
    );
    let (b0, payload) = tokio::time::timeout(limit, read_frame(&mut client))
        .await
        .expect("a close frame");
    let closed = start.elapsed();
    assert_eq!((b0, payload), (0x88, 1001u16.to_be_bytes().to_vec()));
    assert!(
        closed >= Duration::from_millis(950) && closed < limit,
        "closed after {closed:?}"
    );
    // The backend's close arrives with the client's; polled, within the same limit.
    wait_until(limit.saturating_sub(start.elapsed()), || async {
        seen.lock().unwrap().iter().any(|(_, m)| is_going_away(m))
    })
    .await;
    drop(client);
    wait_until(Duration::from_secs(5), || async {
        ended(&proxy, "ping_timeout").await == 1.0
    })
    .await;
    assert_eq!(ended(&proxy, "idle").await, 0.0);
}

/// Must show 3b: a client that answers tideway's pings outlives idle_timeout many times
/// over, though nothing else moves; its pongs never reach the backend.
#[tokio::test]
async fn a_client_that_answers_outlives_idle_timeout() {
    let (addr, seen) = ws_backend(record).await;
    let keys = "idle_timeout = \"1s\"\nping_interval = \"200ms\"\npong_timeout = \"400ms\"";
    let proxy = start_proxy(&upstream(addr, keys)).await;
    let (ws, _) = tokio_tungstenite::connect_async(proxy.ws_url("/chat"))
        .await
        .unwrap();
    let (mut tx, mut rx) = ws.split();
    let (got, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    // Reading answers pings (tungstenite sends the pong).
    tokio::spawn(async move {
        while let Some(m) = rx.next().await {
            if got.send(m).is_err() {
                break;
            }
        }
    });
    // The scenario itself: 3 x idle_timeout with no data either way. What is asserted is
    // that nothing ends the WebSocket meanwhile, so there is no condition to poll for.
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.send(Message::text("still here")).await.unwrap();
    let mut pings = 0;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .expect("the echo")
            .expect("the reader runs")
            .expect("no error");
        match m {
            Message::Ping(p) => {
                assert_eq!(p.len(), 8, "tideway's ping");
                pings += 1;
            }
            Message::Text(t) => {
                assert_eq!(t.as_str(), "still here");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 3, "pinged {pings} times in 3 s");
    let backend_read: Vec<Message> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(
        backend_read,
        vec![Message::text("still here")],
        "no pong reached the backend"
    );
    assert_eq!(
        ended(&proxy, "idle").await + ended(&proxy, "ping_timeout").await,
        0.0
    );
}

/// Must show 3c: a backend that pings its own clients gets their pongs, and the client sees
/// the backend's pings as well as tideway's, whose pongs the backend never sees.
#[tokio::test]
async fn a_backend_s_own_pings_and_their_pongs_pass() {
    let (addr, seen) = ws_backend(|mut ws: Ws, seen: Seen| async move {
        let mut n = 0u32;
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if ws.send(Message::Ping(format!("app-{n}").into())).await.is_err() {
                        break;
                    }
                    n += 1;
                }
                m = ws.next() => match m {
                    Some(Ok(m)) => seen.lock().unwrap().push((String::new(), m)),
                    _ => break,
                },
            }
        }
    })
    .await;
    // tideway pings a client silent for 100 ms: between the backend's pings.
    let keys = "ping_interval = \"100ms\"\npong_timeout = \"2s\"";
    let proxy = start_proxy(&upstream(addr, keys)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(proxy.ws_url("/chat"))
        .await
        .unwrap();
    let (mut app, mut ours) = (Vec::new(), 0);
    // Read (which answers every ping) until the backend has three pongs; bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 3 {
        let m = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .expect("the backend's pongs within 10 s")
            .unwrap()
            .unwrap();
        match m {
            Message::Ping(p) if p.starts_with(b"app-") => app.push(p),
            Message::Ping(p) if p.len() == 8 => ours += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(app.len() >= 3, "the backend's pings: {app:?}");
    assert!(ours >= 1, "tideway's pings reached the client too");
    for (_, m) in seen.lock().unwrap().iter() {
        match m {
            Message::Pong(p) => assert!(p.starts_with(b"app-"), "a pong of tideway's ping: {p:?}"),
            other => panic!("the backend read {other:?}"),
        }
    }
}

/// Must show 3d: a client that stops reading while the backend floods it is cut after
/// send_timeout (its backend connection gets 1001), while another client of the same backend
/// keeps getting its messages, before the cut and after.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_and_others_go_on() {
    let (addr, seen) = ws_backend(|ws: Ws, seen: Seen| async move {
        let (mut tx, mut rx) = ws.split();
        let name = match rx.next().await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            _ => return,
        };
        // 16 KiB a millisecond: fills a client's socket buffers within a second.
        tokio::spawn(async move {
            let chunk = vec![7u8; 16 * 1024];
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            loop {
                tick.tick().await;
                if tx.send(Message::binary(chunk.clone())).await.is_err() {
                    break;
                }
            }
        });
        while let Some(Ok(m)) = rx.next().await {
            seen.lock().unwrap().push((name.clone(), m));
        }
    })
    .await;
    let proxy = start_proxy(&upstream(addr, "send_timeout = \"1s\"")).await;
    let (mut stalled, _) = tokio_tungstenite::connect_async(proxy.ws_url("/chat"))
        .await
        .unwrap();
    stalled.send(Message::text("stalled")).await.unwrap();
    let since = Instant::now();
    let (mut reader, _) = tokio_tungstenite::connect_async(proxy.ws_url("/chat"))
        .await
        .unwrap();
    reader.send(Message::text("reader")).await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    tokio::spawn(async move {
        while let Some(Ok(m)) = reader.next().await {
            if m.is_binary() {
                r.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    // `stalled` is never read from here on: its buffers fill, then tideway's copy waits.
    wait_until(Duration::from_secs(15), || async {
        ended(&proxy, "send_timeout").await == 1.0
    })
    .await;
    assert!(
        since.elapsed() >= Duration::from_secs(1),
        "not before send_timeout"
    );
    let at_cut = received.load(Ordering::Relaxed);
    assert!(at_cut >= 100, "the reader got {at_cut} messages meanwhile");
    wait_until(Duration::from_secs(5), || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(name, m)| name == "stalled" && is_going_away(m))
    })
    .await;
    // The other client still gets its messages, and its tunnel lives.
    wait_until(Duration::from_secs(5), || async {
        received.load(Ordering::Relaxed) >= at_cut + 100
    })
    .await;
    assert_eq!(metric(&proxy, "tideway_tunnels_ended_total").await, 1.0);
    // The stalled client, reading at last, finds what its buffers held, then the end.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.next().await {
                Some(Ok(m)) if m.is_binary() => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stalled client's connection ends");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
}
