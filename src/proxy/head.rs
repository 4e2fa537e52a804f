//! Reading a client's request head under the listener's limits, before anything parses it.
//!
//! The reader only finds where the head ends and enforces sizes as bytes arrive: a request
//! line over its limit is refused with 414, a header line, a head or a header count over
//! theirs with 431, and a bare LF (a line not ended by CRLF) with 400, each as soon as the
//! offending byte is read, never after waiting for the end of a line that may never come.
//! Parsing is [`super::request`]'s alone.

use super::request::Refusal;
use crate::config::HttpLimits;

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
    /// Bytes of the buffer already scanned.
    scanned: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// Lines seen so far, not counting empty lines before the request line.
    lines: usize,
}

impl HeadScan {
    /// Scan what `buf` holds beyond the last call: `Some` once the head ends or breaks a rule.
    pub fn scan(&mut self, buf: &[u8], limits: &HttpLimits) -> Option<HeadRead> {
        while self.scanned < buf.len() {
            let i = self.scanned;
            self.scanned += 1;
            if buf[i] != b'\n' {
                continue;
            }
            if i == 0 || buf[i - 1] != b'\r' {
                return Some(HeadRead::Refused(Refusal::new(
                    400,
                    "a line of the request head does not end with CRLF",
                )));
            }
            let len = i - 1 - self.line_start;
            self.line_start = i + 1;
            if self.line_start > limits.max_head {
                return Some(HeadRead::Refused(Refusal::new(
                    431,
                    "the request head is too large",
                )));
            }
            if len == 0 {
                if self.lines == 0 {
                    // Empty lines before the request line are skipped (RFC 9112 §2.2).
                    continue;
                }
                return Some(HeadRead::Complete(i + 1));
            }
            if let Some(refused) = self.line_too_long(len, limits) {
                return Some(refused);
            }
            self.lines += 1;
            if self.lines > limits.max_headers + 1 {
                return Some(HeadRead::Refused(Refusal::new(
                    431,
                    "too many header fields",
                )));
            }
        }
        // The line still arriving may already be too long, and so may the head. A CR at the
        // end of what arrived may be the line's end: it is not counted.
        let partial = buf.len() - self.line_start - usize::from(buf.ends_with(b"\r"));
        if let Some(refused) = self.line_too_long(partial, limits) {
            return Some(refused);
        }
        if buf.len() > limits.max_head {
            return Some(HeadRead::Refused(Refusal::new(
                431,
                "the request head is too large",
            )));
        }
        None
    }

    fn line_too_long(&self, len: usize, limits: &HttpLimits) -> Option<HeadRead> {
        if self.lines == 0 && len > limits.max_request_line {
            Some(HeadRead::Refused(Refusal::new(
                414,
                "the request line is too long",
            )))
        } else if self.lines > 0 && len > limits.max_header_line {
            Some(HeadRead::Refused(Refusal::new(
                431,
                "a header field line is too long",
            )))
        } else {
            None
        }
    }
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
    fn refuses_bare_lf_and_oversized_lines_at_once() {
        let l = HttpLimits {
            max_request_line: 20,
            max_header_line: 10,
            max_head: 64,
            max_headers: 2,
            ..HttpLimits::default()
        };
        assert_eq!(
            status(scan_all(b"GET / HTTP/1.1\nHost: x\n\n", &l)),
            Some(400)
        );
        assert_eq!(
            status(scan_all(b"GET / HTTP/1.1\r\nHost: x\n", &l)),
            Some(400)
        );
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
