//! The tunnel's relay on in-memory pipes: who closed first, where tideway's ping goes, which
//! pongs it drops, and the ping and send timeouts.

use super::*;
use crate::config::Liveness;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// A WebSocket tunnel kept as `live` says, running: its task, and the far ends of the
/// client's pipe (which holds `client_room` bytes) and the backend's.
fn running(
    live: Liveness,
    client_room: usize,
) -> (
    tokio::task::JoinHandle<TunnelEnd>,
    DuplexStream,
    DuplexStream,
) {
    let (client, c) = tokio::io::duplex(client_room);
    let (backend, b) = tokio::io::duplex(1 << 16);
    let idle = Duration::from_secs(60);
    let t = Tunnel::new(client, backend, idle, CancellationToken::new(), true).keeping(&live);
    (tokio::spawn(t), c, b)
}

/// Pings every `ping` ms, `pong` ms to answer, no send timeout.
fn pinging(ping: u64, pong: u64) -> Liveness {
    Liveness {
        ping_interval: Some(Duration::from_millis(ping)),
        pong_timeout: Duration::from_millis(pong),
        ping_backend: false,
        send_timeout: None,
    }
}

#[tokio::test]
async fn a_close_frame_sent_behind_the_handshake_is_the_client_s() {
    let (client, _c) = tokio::io::duplex(64);
    let (backend, _b) = tokio::io::duplex(64);
    let idle = Duration::from_secs(60);
    let mut t = Tunnel::new(client, backend, idle, CancellationToken::new(), true);
    t.send_first(masked_close_frame(1000, [1, 2, 3, 4]).to_vec());
    // The backend's answering close comes after.
    t.already_sent_down(&close_frame(1000));
    assert_eq!(t.closed(), Some((1000, Closer::Client)));
}

/// A masked frame from the client.
fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [5, 6, 7, 8];
    let mut f = vec![b0, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test]
async fn the_ping_waits_for_the_frame_in_flight_and_only_its_pong_is_dropped() {
    use crate::proxy::frame::ping_payload;
    let (task, mut c, mut b) = running(pinging(50, 30_000), 1 << 16);
    // The backend starts a 10-byte frame and stops halfway.
    b.write_all(&[0x82, 10, 1, 2, 3]).await.unwrap();
    let mut got = [0; 5];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got, [0x82, 10, 1, 2, 3]);
    // Needed: the ping comes due (50 ms) while the frame is unfinished.
    tokio::time::sleep(Duration::from_millis(150)).await;
    b.write_all(&[4, 5, 6, 7, 8, 9, 10]).await.unwrap();
    let mut got = [0; 7 + 10];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(
        got[..7],
        [4, 5, 6, 7, 8, 9, 10],
        "the frame is finished first"
    );
    assert_eq!(got[7..], ping_frame(), "then the ping");
    // The client answers it, split over two writes, between an application pong and text.
    let app_pong = masked(0x8A, b"app");
    let text = masked(0x81, b"hi");
    let ours = masked(0x8A, &ping_payload());
    let mut stream = app_pong.clone();
    stream.extend_from_slice(&ours);
    stream.extend_from_slice(&text);
    let split = app_pong.len() + 5;
    c.write_all(&stream[..split]).await.unwrap();
    c.write_all(&stream[split..]).await.unwrap();
    let mut got = vec![0; app_pong.len() + text.len()];
    b.read_exact(&mut got).await.unwrap();
    assert_eq!(got, [app_pong, text].concat());
    task.abort();
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_pong_timeout_with_1001_both_ways() {
    let (task, mut c, mut b) = running(pinging(30, 30), 1 << 16);
    let mut got = [0; 10 + 4];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got[..10], ping_frame());
    assert_eq!(got[10..], close_frame(GOING_AWAY));
    let mut got = [0; 8];
    b.read_exact(&mut got).await.unwrap();
    assert_eq!(got[..2], [0x88, 0x82], "a masked close");
    let code = [got[6] ^ got[2], got[7] ^ got[3]];
    assert_eq!(u16::from_be_bytes(code), GOING_AWAY);
    drop(c); // the client goes: no lingering to wait out
    let end = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(end, TunnelEnd::PingTimeout), "{end:?}");
}

#[tokio::test]
async fn a_client_that_takes_nothing_is_cut_after_the_send_timeout() {
    let live = Liveness {
        send_timeout: Some(Duration::from_millis(50)),
        ..Liveness::default()
    };
    // The client's pipe holds 64 bytes, and it never reads them.
    let (task, _c, mut b) = running(live, 64);
    let mut frame = vec![0x82, 126, 0x01, 0x00];
    frame.extend_from_slice(&[9; 256]);
    b.write_all(&frame).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(end, TunnelEnd::SendTimeout), "{end:?}");
    let mut got = [0; 8];
    b.read_exact(&mut got).await.unwrap();
    assert_eq!(got[..2], [0x88, 0x82], "the backend gets a masked close");
}
