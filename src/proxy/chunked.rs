//! The chunked transfer coding (RFC 9112 §7.1): a strict decoder, the one place tideway reads
//! chunk framing, and the encoder it writes chunks with. Decoded data is always re-encoded
//! by tideway (or sent with a Content-Length), so no peer ever gets another peer's framing.
//!
//! Strict means: a chunk size is 1 to 15 hex digits, an extension is visible ASCII, spaces
//! and tabs only, a size or trailer line is at most [`MAX_LINE`] bytes, and a line ends in
//! CRLF or a bare LF (RFC 9112 §2.2 lets a recipient take one, and nginx does), while a CR
//! not followed by LF is refused. Taking a bare LF cannot split one message in two for a
//! lenient peer: the framing read here is never passed on.

/// A malformed chunked body.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

/// Longest chunk-size line (size plus extensions) or trailer line.
pub const MAX_LINE: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` so far.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: extensions until the line end.
    Extension {
        value: u64,
    },
    /// LF ending the size line.
    SizeLf {
        value: u64,
    },
    /// Chunk data still to pass.
    Data(u64),
    /// The line end after chunk data (CRLF or LF), then the LF of a CRLF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// LF ending a trailer field line.
    TrailerLf,
    /// LF of the final empty line (after its CR).
    EndLf,
    Done,
}

/// What one [`ChunkDecoder::decode`] call did.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes that belong to the body (the rest follows it).
    pub used: usize,
    /// The body has ended.
    pub done: bool,
}

/// Decodes a chunked body as its bytes arrive, in any split.
#[derive(Clone, Debug)]
pub struct ChunkDecoder {
    state: State,
    line: u32,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        ChunkDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line: 0,
        }
    }
}

impl ChunkDecoder {
    /// Decode the next bytes of the body, handing each run of chunk data to `data`.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Decoded, BadChunk> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data(left) = self.state {
                let take = left.min((input.len() - i) as u64) as usize;
                data(&input[i..i + take]);
                i += take;
                self.state = if take as u64 == left {
                    State::DataCr
                } else {
                    State::Data(left - take as u64)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(BadChunk);
            }
            // Each line ends in CRLF or LF: a CR moves to a state that takes only LF.
            self.state = match self.state {
                State::Size { value, digits } => match (b as char).to_digit(16) {
                    Some(d) if digits < 15 => State::Size {
                        value: value << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(BadChunk),
                    None if digits == 0 => return Err(BadChunk),
                    None if b == b'\r' => State::SizeLf { value },
                    None if b == b'\n' => self.size_line_end(value),
                    None if b == b';' || b == b' ' || b == b'\t' => State::Extension { value },
                    None => return Err(BadChunk),
                },
                State::Extension { value } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' => self.size_line_end(value),
                    b' ' | b'\t' | 0x21..=0x7e => State::Extension { value },
                    _ => return Err(BadChunk),
                },
                State::SizeLf { value } if b == b'\n' => self.size_line_end(value),
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataCr | State::DataLf if b == b'\n' => {
                    self.line = 0;
                    State::Size {
                        value: 0,
                        digits: 0,
                    }
                }
                State::TrailerStart if b == b'\r' => State::EndLf,
                State::TrailerLine if b == b'\r' => State::TrailerLf,
                State::TrailerLine | State::TrailerLf if b == b'\n' => {
                    self.line = 0;
                    State::TrailerStart
                }
                State::TrailerStart | State::TrailerLine if b != b'\n' => State::TrailerLine,
                State::TrailerStart | State::EndLf if b == b'\n' => {
                    self.state = State::Done;
                    return Ok(Decoded {
                        used: i,
                        done: true,
                    });
                }
                _ => return Err(BadChunk),
            };
        }
        Ok(Decoded {
            used: i,
            done: self.state == State::Done,
        })
    }

    /// The size line of a chunk of `value` bytes has ended.
    fn size_line_end(&mut self, value: u64) -> State {
        self.line = 0;
        if value == 0 {
            State::TrailerStart
        } else {
            State::Data(value)
        }
    }
}

/// The last chunk of a chunked body (tideway sends no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Append `data` to `out` as one chunk (nothing for empty data: that would end the body).
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if !data.is_empty() {
        use std::io::Write;
        let _ = write!(out, "{:x}\r\n", data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode all of `body` in one call: (data, used, done).
    fn decode_all(body: &[u8]) -> Result<(Vec<u8>, usize, bool), BadChunk> {
        let mut data = Vec::new();
        let d = ChunkDecoder::default().decode(body, |b| data.extend_from_slice(b))?;
        Ok((data, d.used, d.done))
    }

    #[test]
    fn decodes_chunked_bodies() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        let (data, used, done) = decode_all(body).unwrap();
        assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz");
        assert_eq!((used, done), (body.len() - 4, true));
        let trailers = b"3\r\nabc\r\n0\r\nx-sum: 1\r\ny: 2\r\n\r\n";
        assert_eq!(
            decode_all(trailers).unwrap(),
            (b"abc".to_vec(), trailers.len(), true)
        );
        assert_eq!(decode_all(b"0\r\n\r\n").unwrap(), (vec![], 5, true));
        let open = b"A\r\n0123456789\r\n";
        assert_eq!(
            decode_all(open).unwrap(),
            (b"0123456789".to_vec(), open.len(), false)
        );
    }

    #[test]
    fn byte_by_byte_gives_the_same_data() {
        let body = b"4\r\nwiki\r\n5 ; a=b\r\npedia\r\n0\r\nt: v\r\n\r\n";
        let mut d = ChunkDecoder::default();
        let mut data = Vec::new();
        for (i, b) in body.iter().enumerate() {
            let r = d
                .decode(std::slice::from_ref(b), |x| data.extend_from_slice(x))
                .unwrap();
            assert_eq!(r.done, i == body.len() - 1, "at byte {i}");
        }
        assert_eq!(data, b"wikipedia");
    }

    #[test]
    fn rejects_malformed_chunks() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\rhello",
            b"5\r\nhello\rX",
            b"5\r\nhello\n\r",
            b"1234567890abcdef0\r\n",
            b"3;ext\rx",
            b"3\r\nabc\n\n",
            b"3;e\x00t\r\n",
            b"3;\x7f\r\n",
            b"+3\r\n",
            b"0x3\r\n",
            b"0\r\nx: y\rz",
            b"0\r\nx: y\r\r\n",
            b"0\r\n\rx",
            b"0\n\r\r",
        ] {
            assert_eq!(
                decode_all(bad),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b'a'; 5000];
        let mut d = ChunkDecoder::default();
        assert!(d.decode(b"1;", |_| {}).is_ok());
        assert_eq!(d.decode(&long, |_| {}), Err(BadChunk));
    }

    #[test]
    fn takes_bare_lf_line_ends() {
        for body in [
            &b"5\nhello\n0\n\nNEXT"[..],
            b"5\r\nhello\n0\r\n\nNEXT",
            b"5;e=1\nhello\r\n0\nT: 1\n\r\nNEXT",
            b"5 \nhello\n0\r\nT: 1\r\nU: 2\n\nNEXT",
        ] {
            let (data, used, done) = decode_all(body).unwrap();
            assert_eq!(
                (data.as_slice(), used, done),
                (&b"hello"[..], body.len() - 4, true)
            );
            let mut d = ChunkDecoder::default();
            let mut data = Vec::new();
            for (i, b) in body[..body.len() - 4].iter().enumerate() {
                let r = d.decode(std::slice::from_ref(b), |x| data.extend_from_slice(x));
                assert_eq!(r.unwrap().done, i == body.len() - 5, "{body:?} at {i}");
            }
            assert_eq!(data, b"hello");
        }
    }

    #[test]
    fn push_chunk_round_trips() {
        let mut out = Vec::new();
        push_chunk(&mut out, b"hello");
        push_chunk(&mut out, b"");
        push_chunk(&mut out, &[b'x'; 300]);
        out.extend_from_slice(LAST_CHUNK);
        let (data, used, done) = decode_all(&out).unwrap();
        assert_eq!(data.len(), 305);
        assert_eq!((used, done), (out.len(), true));
    }
}
