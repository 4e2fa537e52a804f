//! Message bodies: how a body is delimited on the way in ([`Framing`]), how it is written on
//! the way out ([`Encoding`]), and relaying one from a reader to a writer. Chunked input is
//! decoded by [`super::chunked`] and, when the receiver gets it chunked, re-encoded by
//! tideway: no peer ever receives another peer's chunk framing.

use super::chunked::{push_chunk, BadChunk, ChunkDecoder, LAST_CHUNK};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (`HEAD`, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the sender closes.
    UntilClose,
}

/// How a body is written for its receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The bytes of the body as they are (delimited by a length, or by the close).
    Raw,
    /// Chunks written by tideway, then the last chunk.
    Chunked,
}

/// Where a body in progress stands.
#[derive(Debug)]
pub struct Progress {
    framing: Framing,
    encoding: Encoding,
    left: u64,
    chunks: ChunkDecoder,
    done: bool,
    /// Bytes [`relay`] has written to the receiver.
    sent: u64,
}

impl Progress {
    pub fn new(framing: Framing, encoding: Encoding) -> Self {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Progress {
            framing,
            encoding,
            left,
            chunks: ChunkDecoder::default(),
            done: matches!(framing, Framing::Empty | Framing::Length(0)),
            sent: 0,
        }
    }

    /// Are the body's bytes passed on as they came (no decoding, no encoding)?
    pub fn verbatim(&self) -> bool {
        self.encoding == Encoding::Raw && self.framing != Framing::Chunked
    }

    /// Bytes [`relay`] has written so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Has the body ended?
    pub fn done(&self) -> bool {
        self.done
    }

    /// Take the next received bytes: how many of them belong to the body. Unless the body is
    /// [`Self::verbatim`], its part, as the receiver gets it, is appended to `out`.
    pub fn take(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<usize, BadChunk> {
        if self.done {
            return Ok(0);
        }
        let used = match self.framing {
            Framing::Empty => 0,
            Framing::Length(_) => {
                let n = self.left.min(bytes.len() as u64);
                self.left -= n;
                self.done = self.left == 0;
                n as usize
            }
            Framing::Chunked => {
                let chunked = self.encoding == Encoding::Chunked;
                let d = self.chunks.decode(bytes, |data| {
                    if chunked {
                        push_chunk(out, data)
                    } else {
                        out.extend_from_slice(data)
                    }
                })?;
                self.done = d.done;
                if d.done && chunked {
                    out.extend_from_slice(LAST_CHUNK);
                }
                return Ok(d.used);
            }
            Framing::UntilClose => bytes.len(),
        };
        match self.encoding {
            _ if self.verbatim() => {}
            Encoding::Chunked => push_chunk(out, &bytes[..used]),
            Encoding::Raw => out.extend_from_slice(&bytes[..used]),
        }
        Ok(used)
    }

    /// The sender closed: does that end the body properly? If so, the end of a chunked
    /// encoding is appended to `out`.
    pub fn closed(&mut self, out: &mut Vec<u8>) -> bool {
        if self.framing == Framing::UntilClose && !self.done {
            self.done = true;
            if self.encoding == Encoding::Chunked {
                out.extend_from_slice(LAST_CHUNK);
            }
        }
        self.done
    }

    /// At most how many bytes to read next without reading past the body (`cap` if unknown).
    pub fn want(&self, cap: usize) -> usize {
        match self.framing {
            Framing::Length(_) => self.left.min(cap as u64) as usize,
            _ => cap,
        }
    }
}

/// Why relaying a body stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading: {0}")]
    Read(io::Error),
    #[error("the sender closed before the body ended")]
    Truncated,
    #[error("no bytes for {0:?}")]
    Timeout(Duration),
    #[error("writing: {0}")]
    Write(io::Error),
    #[error(transparent)]
    Chunk(#[from] BadChunk),
}

impl RelayError {
    /// Did the reading side fail (rather than the writing side)?
    pub fn on_read(&self) -> bool {
        !matches!(self, RelayError::Write(_))
    }

    /// Did the sender reset the connection? A peer resets when it closes with bytes it was
    /// sent still unread.
    pub fn reset(&self) -> bool {
        matches!(self, RelayError::Read(e) if e.kind() == io::ErrorKind::ConnectionReset)
    }
}

/// How to relay a body.
#[derive(Clone, Copy, Debug)]
pub struct Relay {
    /// Longest wait for the next bytes from the sender.
    pub read: Duration,
    /// Longest wait for the receiver to take bytes (nginx's `send_timeout`).
    pub write: Duration,
    /// A reset ends a body that ends at the close, as a close does: the sender is known to
    /// have stopped reading what it was sent (it answered a request it did not take whole).
    pub reset_ends: bool,
}

/// Write all of `bytes` and flush, each write and the flush within `limit` (nginx's
/// `send_timeout` and `proxy_send_timeout`: the wait between two successive writes, so a
/// receiver that takes bytes slowly but steadily is not cut).
pub async fn send<W>(dst: &mut W, mut bytes: &[u8], limit: Duration) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "send timed out");
    while !bytes.is_empty() {
        match tokio::time::timeout(limit, dst.write(bytes)).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timed_out()),
        }
    }
    tokio::time::timeout(limit, dst.flush())
        .await
        .map_err(|_| timed_out())?
}

/// Relay the rest of a body from `src` to `dst` through `buf` (its contents are discarded).
/// Bytes past the body are left unread where the framing allows (a length); for a chunked
/// body they may be read and are returned as `Ok(true)`: "extra bytes followed".
pub async fn relay<R, W>(
    src: &mut R,
    dst: &mut W,
    progress: &mut Progress,
    buf: &mut Vec<u8>,
    how: Relay,
) -> Result<bool, RelayError>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    const STEP: usize = 16 * 1024;
    let mut extra = false;
    let mut framed = Vec::new();
    while !progress.done() {
        buf.clear();
        buf.reserve(STEP);
        let want = progress.want(STEP);
        let n = match tokio::time::timeout(how.read, src.take(want as u64).read_buf(buf)).await {
            Err(_) => return Err(RelayError::Timeout(how.read)),
            // A body that ends at the close ends at a reset too when the sender is known to
            // have closed with bytes of ours unread (Workerman's 413 to an upload it stopped
            // reading); otherwise a reset is a cut, and the receiver must see it as one.
            Ok(Err(e))
                if how.reset_ends
                    && e.kind() == io::ErrorKind::ConnectionReset
                    && progress.framing == Framing::UntilClose =>
            {
                0
            }
            Ok(Err(e)) => return Err(RelayError::Read(e)),
            Ok(Ok(n)) => n,
        };
        framed.clear();
        if n == 0 {
            if progress.closed(&mut framed) {
                send(dst, &framed, how.write)
                    .await
                    .map_err(RelayError::Write)?;
                progress.sent += framed.len() as u64;
                break;
            }
            return Err(RelayError::Truncated);
        }
        let body = progress.take(&buf[..n], &mut framed)?;
        extra |= body < n;
        let out = if progress.verbatim() {
            &buf[..body]
        } else {
            &framed[..]
        };
        if !out.is_empty() {
            send(dst, out, how.write).await.map_err(RelayError::Write)?;
            progress.sent += out.len() as u64;
        }
    }
    Ok(extra)
}

#[cfg(test)]
mod tests {

    /// A receiver that takes a byte every 0.6 s gets 8 bytes (4.8 s in all) within a 1 s
    /// limit; one that takes nothing is given up after the limit (paused time).
    #[tokio::test(start_paused = true)]
    async fn send_waits_the_limit_between_writes_not_for_the_whole() {
        let (mut near, mut far) = tokio::io::duplex(1);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut b = [0u8; 1];
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(600)).await;
                tokio::io::AsyncReadExt::read_exact(&mut far, &mut b)
                    .await
                    .unwrap();
                got.push(b[0]);
            }
            (got, far)
        });
        let began = tokio::time::Instant::now();
        send(&mut near, b"abcdefgh", Duration::from_secs(1))
            .await
            .unwrap();
        assert!(began.elapsed() >= Duration::from_secs(4));
        let (got, _far) = reader.await.unwrap();
        assert_eq!(got, b"abcdefgh");
        let err = send(&mut near, b"xy", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    use super::*;

    const HOW: Relay = Relay {
        read: Duration::from_secs(5),
        write: Duration::from_secs(5),
        reset_ends: false,
    };

    #[test]
    fn progress_counts_lengths_and_closes() {
        let mut out = Vec::new();
        let mut p = Progress::new(Framing::Length(5), Encoding::Raw);
        assert!(p.verbatim());
        assert_eq!(p.take(b"abc", &mut out).unwrap(), 3);
        assert_eq!(p.want(100), 2);
        assert_eq!(p.take(b"defgh", &mut out).unwrap(), 2);
        assert!(p.done());
        assert!(out.is_empty(), "a verbatim body is not copied");
        let mut c = Progress::new(Framing::UntilClose, Encoding::Raw);
        assert_eq!(c.take(b"abc", &mut out).unwrap(), 3);
        assert!(c.closed(&mut out));
        let mut l = Progress::new(Framing::Length(3), Encoding::Raw);
        assert!(
            !l.closed(&mut out),
            "a short length body is truncated, not ended"
        );
        assert!(Progress::new(Framing::Empty, Encoding::Raw).done());
    }

    #[test]
    fn chunked_input_is_decoded_or_re_encoded() {
        let body = b"3;ext=x\r\nabc\r\n2\r\nde\r\n0\r\nt: 1\r\n\r\nNEXT";
        let mut raw = Vec::new();
        let mut p = Progress::new(Framing::Chunked, Encoding::Raw);
        assert_eq!(p.take(body, &mut raw).unwrap(), body.len() - 4);
        assert_eq!(raw, b"abcde");
        let mut chunked = Vec::new();
        let mut p = Progress::new(Framing::Chunked, Encoding::Chunked);
        p.take(body, &mut chunked).unwrap();
        assert_eq!(
            chunked, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            "extensions and trailers go"
        );
    }

    #[tokio::test]
    async fn relays_a_chunked_body_and_reports_extra_bytes() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            a.write_all(b"3\r\nabc\r\n").await.unwrap();
            a.write_all(b"0\r\n\r\nHTTP/1.1 200").await.unwrap();
        });
        let mut out = Vec::new();
        let mut p = Progress::new(Framing::Chunked, Encoding::Chunked);
        let mut buf = Vec::new();
        let extra = relay(&mut b, &mut out, &mut p, &mut buf, HOW)
            .await
            .unwrap();
        assert_eq!(out, b"3\r\nabc\r\n0\r\n\r\n");
        assert!(p.done());
        // The terminator and the next bytes came in one write, so one read saw both.
        assert!(extra);
    }

    #[tokio::test]
    async fn a_body_ending_at_close_is_rechunked() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"hello").await.unwrap();
        drop(a);
        let mut p = Progress::new(Framing::UntilClose, Encoding::Chunked);
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        relay(&mut b, &mut out, &mut p, &mut buf, HOW)
            .await
            .unwrap();
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");
    }

    #[tokio::test]
    async fn a_short_body_is_truncated() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"abc").await.unwrap();
        drop(a);
        let mut p = Progress::new(Framing::Length(10), Encoding::Raw);
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        let r = relay(&mut b, &mut out, &mut p, &mut buf, HOW).await;
        assert!(matches!(r, Err(RelayError::Truncated)), "{r:?}");
        assert_eq!(out, b"abc");
    }
}
