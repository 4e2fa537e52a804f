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

#[tokio::test(start_paused = true)]
async fn the_ping_waits_for_the_frame_in_flight_and_only_its_pong_is_dropped() {
    use crate::proxy::frame::ping_payload;
    let (task, mut c, mut b) = running(pinging(50, 30_000), 1 << 16);
    // The backend starts a 10-byte frame and stops halfway.
    b.write_all(&[0x82, 10, 1, 2, 3]).await.unwrap();
    let mut got = [0; 5];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got, [0x82, 10, 1, 2, 3]);
    // Needed (tokio's clock, paused): the ping comes due (50 ms) while the frame is unfinished.
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

/// A meter for tunnels whose counts no test reads.
fn meter() -> Arc<TunnelMeter> {
    crate::metrics::UpstreamMetrics::of("t-spread").tunnel
}

/// The spread's phase and reasons fit in the two bytes the phase took before (a tag and a
/// reason): an idle tunnel is no bigger for them.
#[test]
fn the_phase_is_two_bytes() {
    assert_eq!(std::mem::size_of::<Phase>(), 2);
}

/// A drain's close waits for a time within the drain's window, relaying meanwhile; a close
/// with no window (the rebalancer's) goes at once.
#[tokio::test(start_paused = true)]
async fn a_drain_close_is_spread_within_its_window_and_a_rebalance_is_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let live = Arc::new(Live::default());
    let (client, mut c) = tokio::io::duplex(64);
    let (backend, mut b) = tokio::io::duplex(64);
    let close = CancellationToken::new();
    let idle = Duration::from_secs(3600);
    let mut t = Box::pin(
        Tunnel::new(client, backend, idle, close.clone(), false).counting(live.clone(), meter()),
    );
    let window = Duration::from_secs(10);
    live.set_closing(Some((Instant::now(), Instant::now() + window)));
    close.cancel();
    let started = Instant::now();
    // Told to close, it still relays until its close time.
    tokio::select! {
        _ = &mut t => panic!("ended before relaying"),
        _ = async {
            c.write_all(b"hi").await.unwrap();
            let mut got = [0u8; 2];
            b.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hi");
        } => {}
    }
    let end = (&mut t).await;
    assert!(matches!(end, TunnelEnd::Drain), "{end:?}");
    assert!(started.elapsed() <= window, "{:?}", started.elapsed());

    let (client, _c) = tokio::io::duplex(64);
    let (backend, _b) = tokio::io::duplex(64);
    let close = CancellationToken::new();
    let t = Tunnel::new(client, backend, idle, close.clone(), false)
        .counting(Arc::new(Live::default()), meter());
    close.cancel();
    let started = Instant::now();
    assert!(matches!(t.await, TunnelEnd::Rebalance));
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[test]
fn counting_leaves_the_tunnel_task_as_large_as_it_was() {
    // Before WebSocket metrics: a tunnel of 272 bytes and its Ending of 104. The upstream's
    // meter replaced the Ending's histogram; the cut fits in the tunnel's padding. The access
    // log's record (40 bytes) is held in the Ending since, where a box of it took 8: 32 more,
    // and one heap block less per tunnel with the log on.
    type T = Tunnel<tokio::net::TcpStream, tokio::net::TcpStream>;
    let both = std::mem::size_of::<T>() + std::mem::size_of::<Ending>();
    assert!(both <= 272 + 104 + 32, "{both}");
}

/// A WebSocket tunnel between two in-memory pipes, counted under `upstream`; returns it
/// with the far ends (client, backend) and the backend's counters.
fn metered(
    upstream: &str,
    idle: Duration,
) -> (
    Tunnel<tokio::io::DuplexStream, tokio::io::DuplexStream>,
    tokio::io::DuplexStream,
    tokio::io::DuplexStream,
    Arc<Live>,
) {
    let (client, c) = tokio::io::duplex(1024);
    let (backend, b) = tokio::io::duplex(1024);
    let live = Arc::new(Live::default());
    let meter = crate::metrics::UpstreamMetrics::of(upstream).tunnel;
    let t = Tunnel::new(client, backend, idle, CancellationToken::new(), true)
        .counting(live.clone(), meter);
    (t, c, b, live)
}

fn counted(upstream: &str, direction: &str) -> (u64, u64) {
    let ws = &crate::metrics::global().websocket;
    let l = [upstream, direction];
    (
        ws.messages.with_label_values(&l).get(),
        ws.bytes.with_label_values(&l).get(),
    )
}

#[tokio::test]
async fn a_backend_that_hangs_up_without_a_close_frame_ends_it_abruptly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut t, mut c, mut b, live) = metered("t-cut", Duration::from_secs(60));
    assert_eq!(live.websockets(), 1);
    let relay = tokio::spawn(async move {
        let end = (&mut t).await;
        (end, t.finish())
    });
    // A ping (not a message) and a fragmented text of 3 + 2 bytes, then the answer.
    let mut up = Vec::new();
    for (first, payload) in [(0x89u8, &b"p"[..]), (0x01, b"abc"), (0x80, b"de")] {
        up.extend([first, 0x80 | payload.len() as u8, 0, 0, 0, 0]);
        up.extend_from_slice(payload);
    }
    c.write_all(&up).await.unwrap();
    let mut got = vec![0; up.len()];
    b.read_exact(&mut got).await.unwrap();
    b.write_all(&[0x82, 0x01, 7]).await.unwrap();
    let mut echo = [0; 3];
    c.read_exact(&mut echo).await.unwrap();
    drop(b);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    drop(c);
    let (end, finished) = relay.await.unwrap();
    assert!(matches!(end, TunnelEnd::Closed), "{end:?}");
    assert_eq!(finished.closed_by(("closed", false)), ("backend", None));
    assert_eq!(live.websockets(), 0);
    assert_eq!(counted("t-cut", "client_to_backend"), (1, 5));
    assert_eq!(counted("t-cut", "backend_to_client"), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn an_idle_websocket_is_closed_by_idle_with_1001() {
    let (mut t, _c, _b, live) = metered("t-idle", Duration::from_secs(1));
    let end = (&mut t).await;
    assert!(matches!(end, TunnelEnd::Idle), "{end:?}");
    let finished = t.finish();
    assert_eq!(finished.closed_by(("idle", true)), ("idle", Some(1001)));
    assert_eq!(live.websockets(), 0);
}

/// A drain taken back after its spread started (the registration renewed, the backend
/// set active): the tunnel waiting for its close time stays open past the window, on the
/// backend's renewed close signal, which a later drain fires.
#[tokio::test(start_paused = true)]
async fn a_drain_taken_back_while_spreading_keeps_the_tunnel_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let live = Arc::new(Live::default());
    let (client, mut c) = tokio::io::duplex(64);
    let (backend, mut b) = tokio::io::duplex(64);
    let close = CancellationToken::new();
    let idle = Duration::from_secs(3600);
    let mut t = Box::pin(
        Tunnel::new(client, backend, idle, close.clone(), false).counting(live.clone(), meter()),
    );
    let window = Duration::from_secs(10);
    live.set_closing(Some((Instant::now(), Instant::now() + window)));
    close.cancel();
    let echo = async |c: &mut tokio::io::DuplexStream, b: &mut tokio::io::DuplexStream| {
        c.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
    };
    tokio::select! {
        _ = &mut t => panic!("ended before relaying"),
        _ = echo(&mut c, &mut b) => {}
    }
    assert!(matches!(t.as_ref().phase, Phase::Spreading(Reason::Drain)));
    // Taken back, as the controller does: a renewed signal, then no window.
    let renewed = CancellationToken::new();
    live.renew_close(renewed.clone());
    live.set_closing(None);
    tokio::select! {
        end = &mut t => panic!("ended after the drain was taken back: {end:?}"),
        _ = tokio::time::sleep(2 * window) => {}
    }
    assert!(matches!(t.as_ref().phase, Phase::Open));
    tokio::select! {
        _ = &mut t => panic!("ended"),
        _ = echo(&mut c, &mut b) => {}
    }
    // A later drain closes it, within its window.
    let started = Instant::now();
    live.set_closing(Some((started, started + window)));
    renewed.cancel();
    let end = (&mut t).await;
    assert!(matches!(end, TunnelEnd::Drain), "{end:?}");
    assert!(started.elapsed() <= window, "{:?}", started.elapsed());
}

/// Once a close frame went by, tideway pings no more: the backend's close reaches the client
/// alone, with no ping behind it (a ping after a close frame is a protocol error to some
/// peers).
#[tokio::test(start_paused = true)]
async fn no_ping_follows_a_close_frame() {
    let (task, mut c, mut b) = running(pinging(30, 30_000), 1 << 16);
    b.write_all(&close_frame(1000)).await.unwrap();
    let mut got = [0; 4];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got, close_frame(1000));
    // Needed (tokio's clock, paused): several ping intervals pass with the client quiet.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut more = [0; 1];
    let read = tokio::time::timeout(Duration::from_millis(50), c.read(&mut more)).await;
    assert!(
        read.is_err(),
        "nothing after the close frame: {read:?} {more:?}"
    );
    task.abort();
}

/// A WebSocket tunnel between two in-memory pipes taken for `plain` TCP sockets (or not),
/// running: its task, and the far ends of the client's pipe and the backend's.
fn between_sockets(
    plain: bool,
) -> (
    tokio::task::JoinHandle<TunnelEnd>,
    DuplexStream,
    DuplexStream,
) {
    let (client, c) = tokio::io::duplex(1 << 16);
    let (backend, b) = tokio::io::duplex(1 << 16);
    let idle = Duration::from_secs(60);
    let t =
        Tunnel::new(client, backend, idle, CancellationToken::new(), true).plain_tcp(plain, plain);
    (tokio::spawn(t), c, b)
}

#[tokio::test(start_paused = true)]
async fn a_backend_ending_after_the_client_s_close_frame_ends_the_tunnel_on_plain_tcp() {
    for plain in [true, false] {
        let (mut task, mut c, mut b) = between_sockets(plain);
        let close = masked(0x88, &1000u16.to_be_bytes());
        c.write_all(&close).await.unwrap();
        let mut got = vec![0; close.len()];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, close);
        // The backend answers and hangs up; the client keeps its side open.
        b.write_all(&close_frame(1000)).await.unwrap();
        drop(b);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, close_frame(1000), "plain: {plain}");
        // Paused clock: the wait below ends at once if the tunnel has nothing left to do.
        let ended = tokio::time::timeout(Duration::from_secs(1), &mut task).await;
        if plain {
            let end = ended.expect("ended without the client's end").unwrap();
            assert!(matches!(end, TunnelEnd::Closed), "{end:?}");
        } else {
            // A TLS or HTTP/2 peer gets its half-close passed on, and the tunnel waits for its
            // end, as before.
            assert!(ended.is_err(), "waits for the client's end");
            drop(c);
            let end = task.await.unwrap();
            assert!(matches!(end, TunnelEnd::Closed), "{end:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_backend_ending_without_a_close_frame_still_passes_its_half_close_on() {
    let (mut task, mut c, b) = between_sockets(true);
    drop(b);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    let ended = tokio::time::timeout(Duration::from_secs(1), &mut task).await;
    assert!(
        ended.is_err(),
        "no close frame went by: it waits for the client's end"
    );
    drop(c);
    assert!(matches!(task.await.unwrap(), TunnelEnd::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_close_frame_not_yet_whole_keeps_the_tunnel_open() {
    let (mut task, mut c, mut b) = between_sockets(true);
    // The client's close, 1000 and "bye", stops before its last byte.
    let close = masked(0x88, &[0x03, 0xe8, b'b', b'y', b'e']);
    c.write_all(&close[..close.len() - 1]).await.unwrap();
    let mut got = vec![0; close.len() - 1];
    b.read_exact(&mut got).await.unwrap();
    drop(b);
    let ended = tokio::time::timeout(Duration::from_secs(1), &mut task).await;
    assert!(ended.is_err(), "the rest of the close frame may still come");
    // Its last byte has nowhere to go (the backend hung up): the write fails, and that ends
    // it.
    c.write_all(&close[close.len() - 1..]).await.unwrap();
    let end = task.await.unwrap();
    assert!(matches!(end, TunnelEnd::Error(_)), "{end:?}");
}
