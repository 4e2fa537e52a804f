//! A minimal RFC 8441 WebSocket client for the `h2ws` row: an HTTP/2 connection over TLS
//! (ALPN `h2`, the `h2` crate's client) that opens WebSockets as extended CONNECT streams
//! (`:method CONNECT`, `:protocol websocket`), once the server has announced
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`; and the few RFC 6455 frames one open needs: a masked
//! text frame and a masked close written, the server's unmasked frames read back.

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::RecvStream;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
/// How long a new connection may take to announce extended CONNECT.
const SETTINGS_WAIT: Duration = Duration::from_secs(5);

/// `base` offering ALPN `h2` only.
pub(crate) fn h2_tls(base: &rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    let mut config = base.clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Open an HTTP/2 connection to loopback `port` over TLS (SNI `localhost`, `tls` offering
/// `h2`), and wait until the server's SETTINGS have enabled extended CONNECT.
pub(crate) async fn connect(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
) -> Result<SendRequest<Bytes>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("the server did not choose h2 by ALPN".into());
    }
    let (send, conn) = h2::client::handshake(stream)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let send = send
        .ready()
        .await
        .map_err(|e| format!("HTTP/2 connection: {e}"))?;
    // The server's SETTINGS is its first frame; the connection task reads it meanwhile.
    let deadline = Instant::now() + SETTINGS_WAIT;
    while !send.is_extended_connect_protocol_enabled() {
        if Instant::now() > deadline {
            return Err(format!(
                "no SETTINGS_ENABLE_CONNECT_PROTOCOL from the server within {SETTINGS_WAIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(send)
}

/// One WebSocket on `send`'s connection: extended CONNECT to `/echo` (200 expected), one text
/// message echoed, the client's close, then the stream ended both ways. The server's close
/// frame is read if it comes; the demo backend drops the connection on a close without always
/// flushing its own (through nginx, the `newws` row's client sees the same), so the end of
/// the stream also ends the WebSocket.
pub(crate) async fn websocket(send: &SendRequest<Bytes>, port: u16) -> Result<(), String> {
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://localhost:{port}/echo"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let mut send = send
        .clone()
        .ready()
        .await
        .map_err(|e| format!("HTTP/2 connection: {e}"))?;
    let (response, mut stream) = send
        .send_request(req, false)
        .map_err(|e| format!("extended CONNECT: {e}"))?;
    let response = response
        .await
        .map_err(|e| format!("extended CONNECT: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("extended CONNECT answered {}", response.status()));
    }
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    let h2e = |e: h2::Error| format!("stream: {e}");
    stream
        .send_data(frame(OP_TEXT, b"hi"), false)
        .map_err(h2e)?;
    let (op, payload) = read_frame(&mut body, &mut buf)
        .await?
        .ok_or("the stream ended before the echo")?;
    if op != OP_TEXT || payload.as_ref() != b"hi" {
        return Err(format!("echo: opcode {op}, payload {payload:?}"));
    }
    stream
        .send_data(frame(OP_CLOSE, &1000u16.to_be_bytes()), false)
        .map_err(h2e)?;
    if let Some((op, _)) = read_frame(&mut body, &mut buf).await? {
        if op != OP_CLOSE {
            return Err(format!("expected the server's close, got opcode {op}"));
        }
    }
    // End our side; the server may have ended (or reset) the stream already.
    let _ = stream.send_data(Bytes::new(), true);
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
    }
    Ok(())
}

/// A masked client frame (FIN set) of `op` carrying `payload` (under 126 bytes).
fn frame(op: u8, payload: &[u8]) -> Bytes {
    assert!(payload.len() < 126, "short frames only");
    let mask: [u8; 4] = rand::random();
    let mut f = Vec::with_capacity(6 + payload.len());
    f.push(0x80 | op);
    f.push(0x80 | payload.len() as u8);
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f.into()
}

/// Read the stream until `buf` holds a whole server frame: (opcode, payload); None if the
/// stream ends cleanly between frames.
async fn read_frame(
    body: &mut RecvStream,
    buf: &mut BytesMut,
) -> Result<Option<(u8, Bytes)>, String> {
    loop {
        if let Some(frame) = parse(buf)? {
            return Ok(Some(frame));
        }
        match body.data().await {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                buf.extend_from_slice(&data);
            }
            Some(Err(e)) => return Err(format!("stream: {e}")),
            None if buf.is_empty() => return Ok(None),
            None => return Err("the stream ended inside a WebSocket frame".into()),
        }
    }
}

/// One whole unmasked frame off the front of `buf`, if there is one.
fn parse(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err("a masked frame from the server".into());
    }
    let (len, head) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(n) as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if buf.len() < head + len {
        return Ok(None);
    }
    let op = buf[0] & 0x0f;
    buf.advance(head);
    Ok(Some((op, buf.split_to(len).freeze())))
}
