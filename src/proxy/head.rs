//! Reading a client's request head under the listener's limits, before anything parses it.
//!
//! The reader only finds where the head ends and enforces sizes as bytes arrive: a request
//! line over its limit is refused with 414, a header line, a head or a header count over
//! theirs with 431, and a bare CR (a CR not followed by LF) with 400, each as soon as the
//! offending byte is read, never after waiting for the end of a line that may never come.
//! A line ends in CRLF or a bare LF, by [`crate::net::wire::HeadLines`], the rule the parser reads
//! the head by. Parsing is [`super::request`]'s alone.

use super::request::Refusal;
use crate::config::HttpLimits;
use crate::net::wire::{HeadLine, HeadLines};

/// Outcome of reading a request head.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadRead {
    /// The head ends at this offset of the buffer (bytes after it are the body or pipelined).
    Complete(usize),
    /// The head broke a limit or a line rule: answer with this and close.
    Refused(Refusal),
    /// The peer closed before a complete head.
    Eof,
}

/// Where scanning a head stands; kept across reads so every byte is looked at once.
#[derive(Debug, Default)]
pub struct HeadScan {
    lines: HeadLines,
    /// Lines seen so far, not counting empty lines before the request line.
    count: usize,
}

impl HeadScan {
    /// Scan what `buf` holds beyond the last call: `Some` once the head ends or breaks a rule.
    pub fn scan(&mut self, buf: &[u8], limits: &HttpLimits) -> Option<HeadRead> {
        loop {
            let len = match self.lines.next(buf) {
                HeadLine::More => break,
                HeadLine::BareCr => {
                    return Some(HeadRead::Refused(Refusal::new(
                        400,
                        "a CR in the request head is not followed by LF",
                    )))
                }
                HeadLine::End(end) if end > limits.max_head => return Some(too_large()),
                HeadLine::End(end) => return Some(HeadRead::Complete(end)),
                HeadLine::Line(len) => len,
            };
            if self.lines.line_start() > limits.max_head {
                return Some(too_large());
            }
            if let Some(refused) = self.line_too_long(len, limits) {
                return Some(refused);
            }
            self.count += 1;
            if self.count > limits.max_headers + 1 {
                return Some(HeadRead::Refused(Refusal::new(
                    431,
                    "too many header fields",
                )));
            }
        }
        // The line still arriving may already be too long, and so may the head. A CR at the
        // end of what arrived may be the line's end: it is not counted.
        let partial = buf.len() - self.lines.line_start() - usize::from(buf.ends_with(b"\r"));
        if let Some(refused) = self.line_too_long(partial, limits) {
            return Some(refused);
        }
        if buf.len() > limits.max_head {
            return Some(too_large());
        }
        None
    }

    fn line_too_long(&self, len: usize, limits: &HttpLimits) -> Option<HeadRead> {
        if self.count == 0 && len > limits.max_request_line {
            Some(HeadRead::Refused(Refusal::new(
                414,
                "the request line is too long",
            )))
        } else if self.count > 0 && len > limits.max_header_line {
            Some(HeadRead::Refused(Refusal::new(
                431,
                "a header field line is too long",
            )))
        } else {
            None
        }
    }
}

/// The refusal of a head over `max_head`.
fn too_large() -> HeadRead {
    HeadRead::Refused(Refusal::new(431, "the request head is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(bytes: &[u8], limits: &HttpLimits) -> Option<HeadRead> {
        HeadScan::default().scan(bytes, limits)
    }

    fn status(r: Option<HeadRead>) -> Option<u16> {
        match r {
            Some(HeadRead::Refused(r)) => Some(r.status),
            _ => None,
        }
    }

    #[test]
    fn finds_the_end_of_a_head() {
        let l = HttpLimits::default();
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        assert_eq!(scan_all(head, &l), Some(HeadRead::Complete(head.len() - 4)));
        assert_eq!(scan_all(b"GET / HTTP/1.1\r\nHost: x\r\n", &l), None);
        let leading = b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            scan_all(leading, &l),
            Some(HeadRead::Complete(leading.len()))
        );
    }

    #[test]
    fn a_line_at_the_limit_is_taken_however_it_is_split() {
        let l = HttpLimits {
            max_request_line: 20,
            ..HttpLimits::default()
        };
        let head = b"GET /aaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(b"GET /aaaaaaaaaa HTTP/1.1".len(), 24);
        let l = HttpLimits {
            max_request_line: 24,
            ..l
        };
        for cut in 1..head.len() {
            let mut scan = HeadScan::default();
            let first = scan.scan(&head[..cut], &l);
            assert!(first.is_none(), "cut at {cut}: {first:?}");
            assert_eq!(scan.scan(head, &l), Some(HeadRead::Complete(head.len())));
        }
    }

    #[test]
    fn the_end_is_found_byte_by_byte_too() {
        let l = HttpLimits::default();
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut scan = HeadScan::default();
        for n in 1..head.len() {
            assert_eq!(scan.scan(&head[..n], &l), None, "at {n}");
        }
        assert_eq!(scan.scan(head, &l), Some(HeadRead::Complete(head.len())));
    }

    #[test]
    fn takes_bare_lf_line_ends_and_refuses_bare_cr_at_once() {
        let l = HttpLimits::default();
        for head in [
            &b"GET / HTTP/1.1\nHost: x\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\nHost: x\r\n\n",
            b"\n\r\nGET / HTTP/1.1\nHost: x\n\n",
        ] {
            assert_eq!(scan_all(head, &l), Some(HeadRead::Complete(head.len())));
            let mut scan = HeadScan::default();
            for n in 1..head.len() {
                assert_eq!(scan.scan(&head[..n], &l), None, "at {n}");
            }
            assert_eq!(scan.scan(head, &l), Some(HeadRead::Complete(head.len())));
        }
        // A bare CR is refused as soon as the byte after it shows it is not a line end.
        assert_eq!(status(scan_all(b"GET / HTTP/1.1\rHost", &l)), Some(400));
        assert_eq!(
            status(scan_all(b"GET / HTTP/1.1\r\nA: b\r\r\n", &l)),
            Some(400)
        );
        assert_eq!(scan_all(b"GET / HTTP/1.1\r\nA: b\r", &l), None);
    }

    #[test]
    fn refuses_oversized_lines_at_once() {
        let l = HttpLimits {
            max_request_line: 20,
            max_header_line: 10,
            max_head: 64,
            max_headers: 2,
            ..HttpLimits::default()
        };
        // A line ended by a bare LF has the same limit as one ended by CRLF.
        assert_eq!(
            status(scan_all(b"GET / HTTP/1.1\nX: aaaaaaaaa\n", &l)),
            Some(431)
        );
        assert_eq!(scan_all(b"GET / HTTP/1.1\nX: aaaaaaa\n", &l), None);
        // A line that never ends is refused once it is over the limit, not at its end.
        assert_eq!(
            status(scan_all(b"GET /aaaaaaaaaaaaaaaaaaaaaa", &l)),
            Some(414)
        );
        assert_eq!(
            status(scan_all(b"GET / HTTP/1.1\r\nX: aaaaaaaaa", &l)),
            Some(431)
        );
        assert_eq!(
            status(scan_all(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n", &l)),
            Some(431)
        );
        let big = [b"GET / HTTP/1.1\r\n".as_slice(), &[b'x'; 60]].concat();
        assert_eq!(status(scan_all(&big, &l)), Some(431));
        // A whole head over the limit arriving in one read is refused too, not completed.
        let whole =
            b"GET / HTTP/1.1\r\nA: 123456\r\nB: 123456\r\nC: 123456\r\nD: 123456\r\nE: 1\r\n\r\n";
        let l = HttpLimits {
            max_head: 64,
            ..HttpLimits::default()
        };
        assert!(whole.len() > 64);
        assert_eq!(status(scan_all(whole, &l)), Some(431));
        assert_eq!(
            scan_all(b"GET / HTTP/1.1\r\nA: 1\r\n\r\n", &l),
            Some(HeadRead::Complete(24))
        );
    }
}
