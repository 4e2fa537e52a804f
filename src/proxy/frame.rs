//! Just enough of RFC 6455 framing to know where frames end, so tideway can put its own close
//! frame between two frames of a live stream, and to count data messages and their payload
//! bytes as they go by (a fragmented message counts once, at the end of its last frame;
//! control frames, even between fragments, are not messages). Payloads are never buffered or
//! inspected.

use crate::metrics::websocket::Flow;

/// Close code 1001, "going away".
pub const GOING_AWAY: u16 = 1001;

/// An unmasked close frame (server to client) with `code`.
pub fn close_frame(code: u16) -> [u8; 4] {
    let c = code.to_be_bytes();
    [0x88, 0x02, c[0], c[1]]
}

/// A masked close frame (client to server) with `code` and `mask`.
pub fn masked_close_frame(code: u16, mask: [u8; 4]) -> [u8; 8] {
    let c = code.to_be_bytes();
    [
        0x88,
        0x82,
        mask[0],
        mask[1],
        mask[2],
        mask[3],
        c[0] ^ mask[0],
        c[1] ^ mask[1],
    ]
}

/// Close code reported for a close frame without one (RFC 6455 7.1.5: "no status received").
pub const NO_STATUS: u16 = 1005;

/// Tracks frame boundaries in one direction of a WebSocket stream, and the code of the first
/// close frame that goes by.
#[derive(Debug, Clone, Copy)]
pub struct FrameTracker {
    /// The current frame's header while it is read. A close frame's header is at most 6
    /// bytes (its payload is under 126 bytes), so `head[12..14]` holds its code: the first
    /// byte while the second is awaited, then both.
    head: [u8; 14],
    /// Header bytes seen of the current frame; 0 at a boundary or in a payload.
    have: u8,
    /// The close code: 0 none seen, 1 and 2 awaiting its first and second byte, 3 read.
    close: u8,
    /// Payload bytes still to come of the current frame.
    remaining: u64,
}

impl Default for FrameTracker {
    fn default() -> Self {
        Self::new()
    }
}

fn header_len(b0_b1: [u8; 2]) -> usize {
    let len7 = b0_b1[1] & 0x7f;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b0_b1[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

impl FrameTracker {
    pub const fn new() -> Self {
        FrameTracker {
            head: [0; 14],
            have: 0,
            close: 0,
            remaining: 0,
        }
    }

    /// Is the stream between two frames?
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// How many bytes may be read without crossing the end of the current frame's header or
    /// payload; `None` at a boundary.
    pub fn until_boundary(&self) -> Option<u64> {
        if self.remaining > 0 {
            Some(self.remaining)
        } else if self.have == 0 {
            None
        } else if self.have < 2 {
            Some(2 - u64::from(self.have))
        } else {
            Some((header_len([self.head[0], self.head[1]]) - usize::from(self.have)) as u64)
        }
    }

    /// The code of the first close frame that went by (1005 for one without a code).
    pub fn close_code(&self) -> Option<u16> {
        (self.close == 3).then(|| u16::from_be_bytes([self.head[12], self.head[13]]))
    }

    /// The close code's next payload byte, unmasked (`at`: its index in the payload).
    fn take_code_byte(&mut self, b: u8, at: usize) {
        let len = header_len([self.head[0], self.head[1]]);
        let masked = self.head[1] & 0x80 != 0;
        let b = if masked {
            b ^ self.head[len - 4 + at]
        } else {
            b
        };
        self.head[12 + at] = b;
        self.close += 1;
    }

    /// Is the current frame a data frame (text, binary or continuation; not control)?
    fn data(&self) -> bool {
        self.head[0] & 0x08 == 0
    }

    /// Does the current frame end its message (FIN)?
    fn fin(&self) -> bool {
        self.head[0] & 0x80 != 0
    }

    /// Account for bytes that went by; returns the data messages they completed and the data
    /// payload bytes among them.
    pub fn feed(&mut self, mut data: &[u8]) -> Flow {
        let mut flow = Flow::default();
        while !data.is_empty() {
            if self.remaining > 0 && matches!(self.close, 1 | 2) {
                let at = usize::from(self.close - 1);
                self.take_code_byte(data[0], at);
                self.remaining -= 1;
                data = &data[1..];
                continue;
            }
            if self.remaining > 0 {
                let n = (data.len() as u64).min(self.remaining);
                self.remaining -= n;
                data = &data[n as usize..];
                if self.data() {
                    flow.bytes += n;
                    flow.messages += u64::from(self.remaining == 0 && self.fin());
                }
                continue;
            }
            let full = if self.have < 2 {
                2
            } else {
                header_len([self.head[0], self.head[1]])
            };
            let start = usize::from(self.have);
            let take = (full - start).min(data.len());
            // Once a close frame went by, `head[12..14]` is its code: a later 14-byte header
            // keeps only the 12 bytes its length needs (its masking key is never used).
            let keep = if self.close == 0 { 14 } else { 12 };
            let end = (start + take).min(keep);
            if end > start {
                self.head[start..end].copy_from_slice(&data[..end - start]);
            }
            self.have += take as u8;
            data = &data[take..];
            if self.have >= 2 && usize::from(self.have) == header_len([self.head[0], self.head[1]])
            {
                self.remaining = self.payload_len();
                self.have = 0;
                if self.remaining == 0 && self.data() && self.fin() {
                    flow.messages += 1;
                }
                if self.head[0] & 0x0f == 0x8 && self.close == 0 {
                    // A close frame's header longer than 12 bytes is a protocol error: its
                    // code is not read.
                    let short = header_len([self.head[0], self.head[1]]) <= 12;
                    if self.remaining >= 2 && short {
                        self.close = 1;
                    } else {
                        self.head[12..14].copy_from_slice(&NO_STATUS.to_be_bytes());
                        self.close = 3;
                    }
                }
            }
        }
        flow
    }

    fn payload_len(&self) -> u64 {
        match self.head[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes")),
            n => u64::from(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload_len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let m = if masked { 0x80 } else { 0 };
        if payload_len < 126 {
            f.push(m | payload_len as u8);
        } else if payload_len < 65536 {
            f.push(m | 126);
            f.extend_from_slice(&(payload_len as u16).to_be_bytes());
        } else {
            f.push(m | 127);
            f.extend_from_slice(&(payload_len as u64).to_be_bytes());
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(7u8, payload_len));
        f
    }

    #[test]
    fn boundaries_hold_for_every_split() {
        for (len, masked) in [
            (0, false),
            (5, true),
            (125, false),
            (300, true),
            (70_000, false),
        ] {
            let f = frame(len, masked);
            for split in 0..f.len().min(20) {
                let mut t = FrameTracker::new();
                t.feed(&f[..split]);
                assert_eq!(t.at_boundary(), split == 0, "len {len} split {split}");
                t.feed(&f[split..]);
                assert!(t.at_boundary(), "len {len} split {split}");
            }
        }
    }

    #[test]
    fn until_boundary_never_crosses_a_frame() {
        let mut stream = frame(130, false);
        stream.extend(frame(3, false));
        let mut t = FrameTracker::new();
        t.feed(&stream[..1]);
        let mut pos = 1;
        while let Some(n) = t.until_boundary() {
            let n = n as usize;
            t.feed(&stream[pos..pos + n]);
            pos += n;
        }
        assert_eq!(pos, 2 + 2 + 130);
    }

    #[test]
    fn the_first_close_code_is_read_masked_or_not_in_any_split() {
        let mut stream = frame(3, true);
        stream.extend(masked_close_frame(4000, [9, 8, 7, 6]));
        stream.extend(close_frame(1000));
        for split in 0..stream.len() {
            let mut t = FrameTracker::new();
            t.feed(&stream[..split]);
            t.feed(&stream[split..]);
            assert_eq!(t.close_code(), Some(4000), "split {split}");
            assert!(t.at_boundary());
        }
        let mut t = FrameTracker::new();
        t.feed(&close_frame(GOING_AWAY));
        assert_eq!(t.close_code(), Some(1001));
        let mut t = FrameTracker::new();
        t.feed(&[0x88, 0x00]);
        assert_eq!(t.close_code(), Some(NO_STATUS));
        let mut t = FrameTracker::new();
        t.feed(&frame(300, false));
        assert_eq!(t.close_code(), None);
        assert_eq!(std::mem::size_of::<FrameTracker>(), 24);
    }

    #[test]
    fn a_later_frame_s_long_header_leaves_the_close_code_alone() {
        let mut stream = close_frame(1000).to_vec();
        stream.extend(frame(70_000, true)); // 127 length, masked: a 14-byte header
        for split in [stream.len(), 4, 10, 17] {
            let mut t = FrameTracker::new();
            t.feed(&stream[..split]);
            t.feed(&stream[split..]);
            assert_eq!(t.close_code(), Some(1000), "split {split}");
            assert!(t.at_boundary());
        }
        let mut stream = masked_close_frame(4001, [1, 2, 3, 4]).to_vec();
        stream.extend(frame(70_000, true));
        let mut t = FrameTracker::new();
        t.feed(&stream);
        assert_eq!(t.close_code(), Some(4001));
    }

    /// A frame with `first` as its first byte (FIN and opcode), masked, of `len` payload bytes.
    fn framed(first: u8, len: usize) -> Vec<u8> {
        let mut f = frame(len, true);
        f[0] = first;
        f
    }

    #[test]
    fn a_fragmented_message_counts_once_and_control_frames_never() {
        let mut stream = Vec::new();
        stream.extend(framed(0x81, 5)); // text, whole: 1 message, 5 bytes
        stream.extend(framed(0x01, 3)); // text, first fragment
        stream.extend(framed(0x89, 2)); // ping between fragments: not a message
        stream.extend(framed(0x00, 4)); // continuation
        stream.extend(framed(0x8A, 0)); // pong between fragments
        stream.extend(framed(0x80, 2)); // last fragment: the second message, 9 bytes
        stream.extend(framed(0x82, 0)); // empty binary: a message of 0 bytes
        stream.extend(framed(0x82, 300)); // 16-bit length
        stream.extend(framed(0x89, 125)); // a ping with the longest control payload
        stream.extend(masked_close_frame(1000, [1, 2, 3, 4]));
        let whole = Flow {
            messages: 4,
            bytes: 5 + 9 + 300,
        };
        for split in 0..=stream.len() {
            let mut t = FrameTracker::new();
            let mut flow = t.feed(&stream[..split]);
            flow += t.feed(&stream[split..]);
            assert_eq!(flow, whole, "split {split}");
            assert_eq!(t.close_code(), Some(1000));
        }
        let mut t = FrameTracker::new();
        let mut flow = Flow::default();
        for b in &stream {
            flow += t.feed(std::slice::from_ref(b));
        }
        assert_eq!(flow, whole, "a byte at a time");
        // A message counts when its last payload byte goes by, not at its header.
        let f = framed(0x82, 10);
        let mut t = FrameTracker::new();
        let first = t.feed(&f[..f.len() - 1]);
        assert_eq!(
            first,
            Flow {
                messages: 0,
                bytes: 9
            }
        );
        assert_eq!(
            t.feed(&f[f.len() - 1..]),
            Flow {
                messages: 1,
                bytes: 1
            }
        );
    }

    #[test]
    fn close_frames_encode_1001() {
        assert_eq!(close_frame(GOING_AWAY), [0x88, 0x02, 0x03, 0xE9]);
        let m = masked_close_frame(GOING_AWAY, [0, 0, 0, 0]);
        assert_eq!(&m[6..], &[0x03, 0xE9]);
    }
}
