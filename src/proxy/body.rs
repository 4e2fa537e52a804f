//! Message bodies on tideway's own HTTP path: how a body is delimited, where a chunked body
//! ends (scanned as it passes, never re-encoded), and relaying one from a reader to a writer.

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

/// A malformed chunked body.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

/// Longest chunk-size line (size plus extensions) tideway accepts.
const MAX_SIZE_LINE: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` so far.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: extensions until CR.
    Extension {
        value: u64,
    },
    /// LF ending the size line.
    SizeLf {
        value: u64,
    },
    /// Chunk data still to pass.
    Data(u64),
    /// CR then LF after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// LF ending a trailer field line.
    TrailerLf,
    /// LF of the final empty line.
    EndLf,
    Done,
}

/// Finds the end of a chunked body as its bytes go by.
#[derive(Clone, Debug)]
pub struct ChunkScanner {
    state: State,
    line: u32,
}

impl Default for ChunkScanner {
    fn default() -> Self {
        ChunkScanner {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line: 0,
        }
    }
}

impl ChunkScanner {
    /// Scan the next bytes of the body. `Some(n)`: the body ends after `bytes[..n]`.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data(left) = self.state {
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data(left - take)
                };
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.line += 1;
            if self.line > MAX_SIZE_LINE {
                return Err(BadChunk);
            }
            self.state = match self.state {
                State::Size { value, digits } => match (b as char).to_digit(16) {
                    Some(d) if digits < 15 => State::Size {
                        value: value << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(BadChunk),
                    None if digits == 0 => return Err(BadChunk),
                    None if b == b'\r' => State::SizeLf { value },
                    None if b == b';' || b == b' ' || b == b'\t' => State::Extension { value },
                    None => return Err(BadChunk),
                },
                State::Extension { value } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' => return Err(BadChunk),
                    _ => State::Extension { value },
                },
                State::SizeLf { value } if b == b'\n' => {
                    self.line = 0;
                    if value == 0 {
                        State::TrailerStart
                    } else {
                        State::Data(value)
                    }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => {
                    self.line = 0;
                    State::Size {
                        value: 0,
                        digits: 0,
                    }
                }
                // Every line ends in CRLF: a bare LF could end the body early for a lenient
                // reader and let what follows pass as a second message.
                State::TrailerStart if b == b'\r' => State::EndLf,
                State::TrailerStart | State::TrailerLine if b == b'\n' => return Err(BadChunk),
                State::TrailerStart | State::TrailerLine if b == b'\r' => State::TrailerLf,
                State::TrailerStart | State::TrailerLine => State::TrailerLine,
                State::TrailerLf if b == b'\n' => {
                    self.line = 0;
                    State::TrailerStart
                }
                State::EndLf if b == b'\n' => {
                    self.state = State::Done;
                    return Ok(Some(i));
                }
                _ => return Err(BadChunk),
            };
        }
        Ok(None)
    }

    /// Has the whole body gone by?
    pub fn done(&self) -> bool {
        self.state == State::Done
    }
}

/// Where a body in progress stands.
#[derive(Debug)]
pub struct Progress {
    framing: Framing,
    left: u64,
    chunks: ChunkScanner,
    done: bool,
}

impl Progress {
    pub fn new(framing: Framing) -> Self {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Progress {
            framing,
            left,
            chunks: ChunkScanner::default(),
            done: matches!(framing, Framing::Empty | Framing::Length(0)),
        }
    }

    /// Has the body ended?
    pub fn done(&self) -> bool {
        self.done
    }

    /// Take the next received bytes: how many of them belong to the body.
    pub fn take(&mut self, bytes: &[u8]) -> Result<usize, BadChunk> {
        if self.done {
            return Ok(0);
        }
        match self.framing {
            Framing::Empty => Ok(0),
            Framing::Length(_) => {
                let n = self.left.min(bytes.len() as u64);
                self.left -= n;
                self.done = self.left == 0;
                Ok(n as usize)
            }
            Framing::Chunked => match self.chunks.feed(bytes)? {
                Some(end) => {
                    self.done = true;
                    Ok(end)
                }
                None => Ok(bytes.len()),
            },
            Framing::UntilClose => Ok(bytes.len()),
        }
    }

    /// The sender closed: does that end the body properly?
    pub fn closed(&mut self) -> bool {
        if self.framing == Framing::UntilClose {
            self.done = true;
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
}

/// How to relay a body.
#[derive(Clone, Copy, Debug)]
pub struct Relay {
    /// Longest wait for the next bytes from the sender.
    pub read: Duration,
    /// Longest wait for the receiver to take bytes (nginx's `send_timeout`).
    pub write: Duration,
    /// Pass the body on chunked (for a body that ends at close).
    pub rechunk: bool,
}

/// The last chunk of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Append `data` to `out` as one chunk of a chunked body.
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if !data.is_empty() {
        use std::io::Write;
        let _ = write!(out, "{:x}\r\n", data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// Write all of `bytes` and flush, within `limit`.
pub async fn send<W>(dst: &mut W, bytes: &[u8], limit: Duration) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let write = async {
        dst.write_all(bytes).await?;
        dst.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out")),
    }
}

/// Relay the rest of a body from `src` to `dst` through `buf` (its contents are discarded).
/// Bytes past the body are left unread where the framing allows (a length); for a chunked body
/// they may be read and are returned as `Ok(true)`: "extra bytes followed".
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
            Ok(Err(e)) => return Err(RelayError::Read(e)),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            if progress.closed() {
                if how.rechunk {
                    send(dst, LAST_CHUNK, how.write)
                        .await
                        .map_err(RelayError::Write)?;
                }
                break;
            }
            return Err(RelayError::Truncated);
        }
        let body = progress.take(&buf[..n])?;
        extra |= body < n;
        let out = if how.rechunk {
            framed.clear();
            push_chunk(&mut framed, &buf[..body]);
            &framed[..]
        } else {
            &buf[..body]
        };
        send(dst, out, how.write).await.map_err(RelayError::Write)?;
    }
    Ok(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(body: &[u8]) -> Result<Option<usize>, BadChunk> {
        ChunkScanner::default().feed(body)
    }

    const HOW: Relay = Relay {
        read: Duration::from_secs(5),
        write: Duration::from_secs(5),
        rechunk: false,
    };

    #[test]
    fn finds_the_end_of_chunked_bodies() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        assert_eq!(scan_all(body), Ok(Some(body.len() - 4)));
        let trailers = b"3\r\nabc\r\n0\r\nx-sum: 1\r\ny: 2\r\n\r\n";
        assert_eq!(scan_all(trailers), Ok(Some(trailers.len())));
        assert_eq!(scan_all(b"0\r\n\r\n"), Ok(Some(5)));
        assert_eq!(scan_all(b"A\r\n0123456789\r\n"), Ok(None));
    }

    #[test]
    fn the_end_is_found_byte_by_byte_too() {
        let body = b"4\r\nwiki\r\n5 ; a=b\r\npedia\r\n0\r\nt: v\r\n\r\n";
        let mut s = ChunkScanner::default();
        for (i, b) in body.iter().enumerate() {
            let r = s.feed(std::slice::from_ref(b)).unwrap();
            assert_eq!(r.is_some(), i == body.len() - 1, "at byte {i}");
        }
        assert!(s.done());
    }

    #[test]
    fn rejects_malformed_chunks() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\nhello",
            b"1234567890abcdef0\r\n",
            b"3;ext\n",
            b"0\r\nx: y\n\r\n",
            b"0\r\n\n",
        ] {
            assert_eq!(
                scan_all(bad),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b'a'; 5000];
        let mut s = ChunkScanner::default();
        assert!(s.feed(b"1;").is_ok());
        assert_eq!(s.feed(&long), Err(BadChunk));
    }

    #[test]
    fn progress_counts_lengths_and_closes() {
        let mut p = Progress::new(Framing::Length(5));
        assert_eq!(p.take(b"abc").unwrap(), 3);
        assert_eq!(p.want(100), 2);
        assert_eq!(p.take(b"defgh").unwrap(), 2);
        assert!(p.done());
        let mut c = Progress::new(Framing::UntilClose);
        assert_eq!(c.take(b"abc").unwrap(), 3);
        assert!(c.closed());
        let mut l = Progress::new(Framing::Length(3));
        assert!(!l.closed(), "a short length body is truncated, not ended");
        assert!(Progress::new(Framing::Empty).done());
    }

    #[tokio::test]
    async fn relays_a_chunked_body_and_reports_extra_bytes() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            a.write_all(b"3\r\nabc\r\n").await.unwrap();
            a.write_all(b"0\r\n\r\nHTTP/1.1 200").await.unwrap();
        });
        let mut out = Vec::new();
        let mut p = Progress::new(Framing::Chunked);
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
        let mut p = Progress::new(Framing::UntilClose);
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        let how = Relay {
            rechunk: true,
            ..HOW
        };
        relay(&mut b, &mut out, &mut p, &mut buf, how)
            .await
            .unwrap();
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");
        let mut check = ChunkScanner::default();
        assert_eq!(check.feed(&out), Ok(Some(out.len())));
    }

    #[tokio::test]
    async fn a_short_body_is_truncated() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"abc").await.unwrap();
        drop(a);
        let mut p = Progress::new(Framing::Length(10));
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        let r = relay(&mut b, &mut out, &mut p, &mut buf, HOW).await;
        assert!(matches!(r, Err(RelayError::Truncated)), "{r:?}");
        assert_eq!(out, b"abc");
    }
}
