//! WebSocket metrics answer "why did my users disconnect?" (issue 24, Must show 4): after 100
//! WebSockets that each send 1,000 messages and read the backend's 1,000 echoes, 50 closed by
//! their client with 1000 and 50 killed (the socket dropped without a close frame), `/metrics`
//! shows exactly those messages and bytes both ways, 50 closes with code 1000 by the client, 50
//! abrupt ends (1006) of the client, 100 sessions and none open. A handshake the backend refuses
//! is counted too. Real sockets: the tideway binary, demo echo backends and tungstenite clients.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const SOCKETS: usize = 100;
const MESSAGES: usize = 1000;
/// Payload bytes of each message.
const SIZE: usize = 32;

/// `/metrics` sample `series` (its full label set, as Prometheus prints it), or the sum of a
/// metric's series when `series` ends with `{`; 0 when absent.
async fn value(p: &Proxy, series: &str) -> f64 {
    let exact = if series.ends_with('{') {
        series.to_string()
    } else {
        format!("{series} ")
    };
    metric(p, &exact).await
}

/// Wait (bounded) until `series` reads `want`.
async fn until(p: &Proxy, series: &str, want: f64) {
    wait_until(Duration::from_secs(30), || async {
        value(p, series).await == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closes_by_code_and_closer_messages_both_ways_and_none_left_open() {
    let (b1, b1_faults) = faulty_backend("b1").await;
    let (b2, b2_faults) = faulty_backend("b2").await;
    let p = start_proxy("[upstream.app]\nbalance = \"round_robin\"\nmax_fails = 0\n").await;
    p.register("b1", &b1.addr.to_string()).await;
    p.register("b2", &b2.addr.to_string()).await;

    // 100 WebSockets, each sending 1,000 messages and reading the 1,000 echoes.
    let mut open = Vec::new();
    for _ in 0..SOCKETS {
        let (ws, _) = tokio_tungstenite::connect_async(p.ws_url("/ws"))
            .await
            .unwrap();
        open.push(ws);
    }
    until(&p, "tideway_websocket_open{", SOCKETS as f64).await;
    for b in ["b1", "b2"] {
        let series = format!("tideway_websocket_open{{backend=\"{b}\",upstream=\"app\"}}");
        assert_eq!(value(&p, &series).await, (SOCKETS / 2) as f64, "{series}");
    }
    let talk = open.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                ws.feed(Message::binary(vec![i as u8; SIZE])).await.unwrap();
            }
            ws.flush().await.unwrap();
            for _ in 0..MESSAGES {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => assert_eq!(b.len(), SIZE),
                    other => panic!("not an echo: {other:?}"),
                }
            }
            ws
        })
    });
    let mut talked = Vec::new();
    for t in talk {
        talked.push(t.await.unwrap());
    }

    // Half close with 1000; the other half are killed: dropped without a close frame.
    let mut ends = Vec::new();
    for (i, mut ws) in talked.into_iter().enumerate() {
        if i % 2 == 1 {
            drop(ws);
            continue;
        }
        ends.push(tokio::spawn(async move {
            ws.close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await
            .unwrap();
            while let Some(Ok(_)) = ws.next().await {}
        }));
    }
    for e in ends {
        e.await.unwrap();
    }

    // Each WebSocket is counted when its tunnel ends, a moment after the client is done.
    until(&p, "tideway_websocket_closes_total{", SOCKETS as f64).await;
    until(&p, "tideway_websocket_open{", 0.0).await;
    let half = (SOCKETS / 2) as f64;
    let closes = |by: &'static str, code: &'static str| {
        format!("tideway_websocket_closes_total{{by=\"{by}\",code=\"{code}\",upstream=\"app\"}}")
    };
    assert_eq!(value(&p, &closes("client", "1000")).await, half);
    assert_eq!(value(&p, &closes("client", "1006")).await, half);
    let sent = (SOCKETS * MESSAGES) as f64;
    for direction in ["client_to_backend", "backend_to_client"] {
        let l = format!("{{direction=\"{direction}\",upstream=\"app\"}}");
        let messages = value(&p, &format!("tideway_websocket_messages_total{l}")).await;
        assert_eq!(messages, sent, "{direction}");
        let bytes = value(&p, &format!("tideway_websocket_message_bytes_total{l}")).await;
        assert_eq!(
            bytes,
            sent * SIZE as f64,
            "{direction}: payload bytes of data frames only"
        );
    }
    let sessions = "tideway_websocket_session_seconds_count{upstream=\"app\"}";
    assert_eq!(value(&p, sessions).await, SOCKETS as f64);
    let failed = "tideway_websocket_handshake_failures_total{";
    assert_eq!(value(&p, failed).await, 0.0);
    let opened = |protocol: &str| {
        format!("tideway_websocket_opened_total{{protocol=\"{protocol}\",upstream=\"app\"}}")
    };
    assert_eq!(value(&p, &opened("http/1.1")).await, SOCKETS as f64);
    assert_eq!(value(&p, &opened("h2")).await, 0.0);

    // A backend that refuses the upgrade: a failed handshake, no WebSocket.
    for f in [&b1_faults, &b2_faults] {
        f.refuse_websocket.store(true, Ordering::Relaxed);
    }
    let refused = tokio_tungstenite::connect_async(p.ws_url("/ws")).await;
    assert!(refused.is_err(), "the backend refused the upgrade");
    let series = "tideway_websocket_handshake_failures_total{reason=\"refused\",upstream=\"app\"}";
    until(&p, series, 1.0).await;
    assert_eq!(value(&p, failed).await, 1.0);
    assert_eq!(value(&p, &opened("http/1.1")).await, SOCKETS as f64);
    assert_eq!(
        value(&p, "tideway_websocket_closes_total{").await,
        SOCKETS as f64
    );
}

/// A WebSocket backend on raw sockets: answers one handshake with 101, reads the client's
/// close frame (6 header bytes and a 2-byte code), answers with its own and hangs up. Sends
/// what it read after the handshake.
async fn closing_backend() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Receiver<Vec<u8>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let head = common::nginx::read_head(&mut s).await.unwrap();
        assert!(head.starts_with(b"GET /ws HTTP/1.1\r\n"));
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n").await.unwrap();
        let mut close = [0u8; 8];
        s.read_exact(&mut close).await.unwrap();
        s.write_all(&[0x88, 2, 0x03, 0xe8]).await.unwrap();
        let _ = tx.send(close.to_vec());
    });
    (addr, rx)
}

#[tokio::test]
async fn a_backend_hanging_up_after_the_client_s_close_ends_the_websocket_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, got) = closing_backend().await;
    let p = start_proxy("[upstream.app]\nbalance = \"round_robin\"\n").await;
    p.register("b", &addr.to_string()).await;
    let mut c = tokio::net::TcpStream::connect(p.http).await.unwrap();
    c.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let head = common::nginx::read_head(&mut c).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    until(&p, "tideway_websocket_open{", 1.0).await;
    // The client's close (1000), masked with the key 1, 2, 3, 4.
    let close = [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2];
    c.write_all(&close).await.unwrap();
    assert_eq!(
        got.await.unwrap(),
        close,
        "the backend got the close as sent"
    );
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert_eq!(
        rest,
        [0x88, 2, 0x03, 0xe8],
        "the backend's close, then the end"
    );
    // The client still holds its socket open (no FIN sent): the WebSocket ended all the same,
    // both sockets closed, as nginx does (before, tideway passed the backend's end on and
    // waited for the client's).
    until(&p, "tideway_websocket_open{", 0.0).await;
    let closes = "tideway_websocket_closes_total{by=\"client\",code=\"1000\",upstream=\"app\"}";
    assert_eq!(value(&p, closes).await, 1.0);
    drop(c);
}
