//! HTTP/1 message heads on the wire: where a head's lines end, reading a head off a stream,
//! and reading a response status. Shared by the data plane and the health checks.
//!
//! A head's lines end by the rule httparse parses them by (RFC 9112 §2.2, as nginx): a line
//! ends at LF, and a CR right before that LF is part of the line end, not of the line. Every
//! other CR (a bare CR) is refused. Empty lines before the first line are skipped, and the
//! first empty line after it ends the head. [`HeadLines`] is the one place that rule is
//! written: the request reader (`proxy::head`) and [`read_head`] both scan with it, so where
//! tideway finds a head's end is where its parser ends it, byte for byte.
//!
//! Imports: nothing else in tideway.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest response head tideway reads (request heads have the listener's limits,
/// `proxy::head`); larger ones are refused.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers inspected in one head.
pub const MAX_HEADERS: usize = 96;

/// What [`HeadLines::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadLine {
    /// A complete non-empty line of this many bytes (its line end not counted).
    Line(usize),
    /// The empty line ending the head: the head ends at this offset of the buffer.
    End(usize),
    /// A CR not followed by LF.
    BareCr,
    /// The buffer ends inside a line: scan again once more bytes have arrived.
    More,
}

/// Where scanning a head's lines stands; kept across reads so every byte is looked at once.
#[derive(Debug, Default)]
pub struct HeadLines {
    /// Bytes of the buffer already scanned.
    scanned: usize,
    /// Start of the line being scanned.
    start: usize,
    /// A non-empty line has been seen: the next empty one ends the head.
    begun: bool,
}

impl HeadLines {
    /// The next line of the head in `buf` (the same buffer, grown, on every call).
    pub fn next(&mut self, buf: &[u8]) -> HeadLine {
        loop {
            let Some(p) = buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
            else {
                self.scanned = buf.len();
                return HeadLine::More;
            };
            let at = self.scanned + p;
            let end = match (buf[at], buf.get(at + 1)) {
                (b'\n', _) | (_, Some(b'\n')) => at + 1 + usize::from(buf[at] == b'\r'),
                (_, Some(_)) => return HeadLine::BareCr,
                // A CR last: its LF may be on the way. It is looked at again.
                (_, None) => {
                    self.scanned = at;
                    return HeadLine::More;
                }
            };
            let len = at - self.start;
            self.start = end;
            self.scanned = end;
            match (len, self.begun) {
                (0, true) => return HeadLine::End(end),
                // Empty lines before the first line are skipped (RFC 9112 §2.2).
                (0, false) => {}
                _ => {
                    self.begun = true;
                    return HeadLine::Line(len);
                }
            }
        }
    }

    /// Where the line being scanned starts (the end of the last complete one).
    pub fn line_start(&self) -> usize {
        self.start
    }
}

/// Outcome of reading a head.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadRead {
    /// The head ends at this offset of the buffer (bytes after it are already the body).
    Complete(usize),
    /// [`MAX_HEAD`] bytes and still no end.
    TooLarge,
    /// A CR not followed by LF: the head is malformed.
    BareCr,
    /// The peer closed before a complete head.
    Eof,
}

/// Read from `s` into `buf` until the end of a head (its first empty line, [`HeadLines`]).
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<HeadRead> {
    let mut lines = HeadLines::default();
    loop {
        loop {
            match lines.next(buf) {
                HeadLine::Line(_) => {}
                HeadLine::End(end) => return Ok(HeadRead::Complete(end)),
                HeadLine::BareCr => return Ok(HeadRead::BareCr),
                HeadLine::More => break,
            }
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

/// The status code of a complete response head.
pub fn response_status(head: &[u8]) -> Option<u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(head) {
        Ok(httparse::Status::Complete(_)) => res.code,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scan all of `buf`, optionally in two reads split at `cut`.
    fn scan(buf: &[u8], cut: Option<usize>) -> HeadLine {
        let mut lines = HeadLines::default();
        if let Some(cut) = cut {
            loop {
                match lines.next(&buf[..cut]) {
                    HeadLine::Line(_) => {}
                    HeadLine::More => break,
                    other => return other,
                }
            }
        }
        loop {
            match lines.next(buf) {
                HeadLine::Line(_) => {}
                other => return other,
            }
        }
    }

    #[test]
    fn ends_heads_at_the_first_empty_line_with_either_line_end() {
        for (head, end) in [
            (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY"[..], 27),
            (b"GET / HTTP/1.1\nHost: x\n\nBODY", 24),
            (b"GET / HTTP/1.1\r\nHost: x\n\r\nBODY", 26),
            (b"GET / HTTP/1.1\nHost: x\r\n\nBODY", 25),
            (b"\r\n\nGET / HTTP/1.1\n\n", 19),
            (b"HTTP/1.1 200 OK\nA: b\n\n", 22),
        ] {
            assert_eq!(scan(head, None), HeadLine::End(end), "{head:?}");
        }
        assert_eq!(
            scan(b"GET / HTTP/1.1\rHost: x\r\n\r\n", None),
            HeadLine::BareCr
        );
        assert_eq!(scan(b"GET / HTTP/1.1\r\n\r\r\n", None), HeadLine::BareCr);
        assert_eq!(scan(b"GET / HTTP/1.1\r\nA: b\r", None), HeadLine::More);
    }

    /// Every string of up to `n` bytes over `alphabet`.
    fn strings(alphabet: &[u8], n: usize) -> Vec<Vec<u8>> {
        let mut all = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..n {
            last = last
                .iter()
                .flat_map(|s: &Vec<u8>| {
                    alphabet.iter().map(move |&b| [s.as_slice(), &[b]].concat())
                })
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    /// What httparse makes of `buf`: `Some(Ok(n))` complete at n, `Some(Err)` refused, `None`
    /// partial.
    fn httparse_end(buf: &[u8], response: bool) -> Option<Result<usize, ()>> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let r = if response {
            httparse::Response::new(&mut headers).parse(buf)
        } else {
            httparse::Request::new(&mut headers).parse(buf)
        };
        match r {
            Ok(httparse::Status::Complete(n)) => Some(Ok(n)),
            Ok(httparse::Status::Partial) => None,
            Err(_) => Some(Err(())),
        }
    }

    /// The scanner and httparse agree on every head built from line ends, CRs, spaces,
    /// colons and letters around a request or status line: where httparse ends a head, the
    /// scanner ends it too, and wherever the scanner ends one (or finds a bare CR), httparse
    /// ends it there or refuses it. Split in two reads anywhere, the scan is the same.
    #[test]
    fn agrees_with_httparse_on_every_small_head() {
        let tails = strings(b"\r\nx: ", 7);
        for (first, response) in [(&b"GET / HTTP/1.1"[..], false), (b"HTTP/1.1 200 OK", true)] {
            let mut heads: Vec<Vec<u8>> = tails
                .iter()
                .map(|t| [first, t.as_slice()].concat())
                .collect();
            heads.extend(
                strings(b"\r\nx", 5)
                    .iter()
                    .map(|t| [t.as_slice(), first, b"\r\n\n"].concat()),
            );
            for head in &heads {
                let ours = scan(head, None);
                let theirs = httparse_end(head, response);
                let agree = match (&ours, theirs) {
                    (HeadLine::End(n), Some(Ok(m))) => *n == m,
                    (_, Some(Ok(_))) => false,
                    (HeadLine::End(_) | HeadLine::BareCr, r) => r.is_some(),
                    (HeadLine::More, _) => true,
                    (HeadLine::Line(_), _) => false,
                };
                assert!(agree, "{head:?}: scanner {ours:?}, httparse {theirs:?}");
                for cut in 0..head.len() {
                    assert_eq!(scan(head, Some(cut)), ours, "{head:?} cut at {cut}");
                }
            }
        }
    }
}
