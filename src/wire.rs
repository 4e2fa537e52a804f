//! HTTP/1 message heads on the wire: reading one off a stream and reading a response status.
//! Shared by the data plane and the health checks.
//!
//! Imports: nothing else in tideway.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest response head tideway reads (request heads have the listener's limits,
/// `proxy::head`); larger ones are refused.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers inspected in one head.
pub const MAX_HEADERS: usize = 96;

/// Outcome of reading a head.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadRead {
    /// The head ends at this offset of the buffer (bytes after it are already the body).
    Complete(usize),
    /// [`MAX_HEAD`] bytes and still no end.
    TooLarge,
    /// The peer closed before a complete head.
    Eof,
}

/// Read from `s` into `buf` until the end of a head (`\r\n\r\n`).
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<HeadRead> {
    loop {
        if let Some(end) = head_end(buf) {
            return Ok(HeadRead::Complete(end));
        }
        if buf.len() >= MAX_HEAD {
            return Ok(HeadRead::TooLarge);
        }
        buf.reserve(2048.min(MAX_HEAD - buf.len()));
        if s.read_buf(buf).await? == 0 {
            return Ok(HeadRead::Eof);
        }
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The status code of a complete response head.
pub fn response_status(head: &[u8]) -> Option<u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(head) {
        Ok(httparse::Status::Complete(_)) => res.code,
        _ => None,
    }
}
