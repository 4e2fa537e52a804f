//! Reading HTTP/1.1 request heads off a raw backend connection, for the tests' recording
//! backends: each reads the head, then answers as its test needs.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The next request head on `io` as text (what follows it stays in `buf`), or None once the
/// connection ends first.
pub async fn next<R: AsyncRead + Unpin>(io: &mut R, buf: &mut Vec<u8>) -> Option<String> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    Some(head)
}
