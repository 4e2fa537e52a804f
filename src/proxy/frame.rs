//! Just enough of RFC 6455 framing to know where frames end, so tideway can put its own close
//! and ping frames between two frames of a live stream, and to count data messages and their
//! payload bytes as they go by (a fragmented message counts once, at the end of its last frame;
//! control frames, even between fragments, are not messages). Payloads are never buffered or
//! inspected, with one exception: a direction whose sender tideway pings holds back each pong
//! whose payload has the length of tideway's own (at most 14 bytes) until it is complete, then
//! drops it if its payload is tideway's, or passes it on unchanged. Anything else (other pongs,
//! the application's pings, a control frame longer than 125 bytes or fragmented, which is the
//! peer's protocol error) goes by as it came.

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

/// Length of the payload of tideway's pings.
pub const PING_LEN: usize = 8;
/// First byte of a pong frame (FIN, opcode 0xA); a fragmented pong is not tideway's.
const PONG: u8 = 0x8A;

/// The payload of tideway's pings: random, drawn once per process, so a pong that carries it
/// answers one of them (RFC 6455 5.5.3: a pong repeats its ping's payload) and an
/// application's pong practically never does.
pub fn ping_payload() -> [u8; PING_LEN] {
    static PAYLOAD: std::sync::OnceLock<[u8; PING_LEN]> = std::sync::OnceLock::new();
    *PAYLOAD.get_or_init(rand::random)
}

/// tideway's unmasked ping (server to client).
pub fn ping_frame() -> [u8; 2 + PING_LEN] {
    let mut f = [0x89, PING_LEN as u8, 0, 0, 0, 0, 0, 0, 0, 0];
    f[2..].copy_from_slice(&ping_payload());
    f
}

/// tideway's ping masked with `mask` (client to server).
pub fn masked_ping_frame(mask: [u8; 4]) -> [u8; 6 + PING_LEN] {
    let mut f = [0; 6 + PING_LEN];
    f[..2].copy_from_slice(&[0x89, 0x80 | PING_LEN as u8]);
    f[2..6].copy_from_slice(&mask);
    for (i, b) in ping_payload().iter().enumerate() {
        f[6 + i] = b ^ mask[i % 4];
    }
    f
}

/// What [`FrameTracker::sift`] found at the start of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Sifted {
    /// Pass the first `n` bytes on.
    Pass(usize),
    /// The first `n` bytes are held back: they may be tideway's pong.
    Held(usize),
    /// The first `n` bytes ended tideway's pong: they and the bytes held are dropped.
    Ours(usize),
    /// The first `used` bytes showed that the frame held back is not tideway's pong: pass
    /// `held` on (those bytes included), then go on after them.
    Release { used: usize, held: Held },
}

/// The first bytes of a frame held back, up to a whole pong of tideway's length.
#[derive(Debug, PartialEq, Eq)]
pub struct Held {
    bytes: [u8; 14],
    len: u8,
}

impl Held {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// In `FrameTracker::close`, beside the close code's state (its two low bits): pongs of
/// tideway's pings are dropped from this direction.
const ABSORB: u8 = 0b100;
/// In `FrameTracker::close`: a pong of tideway's length is being held back (`have` bytes of
/// it, in `head`).
const HOLDING: u8 = 0b1000;

/// Tracks frame boundaries in one direction of a WebSocket stream, and the code of the first
/// close frame that goes by.
#[derive(Debug, Clone, Copy)]
pub struct FrameTracker {
    /// The current frame's header while it is read. A close frame's header is at most 6
    /// bytes (its payload is under 126 bytes), so `head[12..14]` holds its code: the first
    /// byte while the second is awaited, then both.
    head: [u8; 14],
    /// Header bytes seen of the current frame; 0 at a boundary or in a payload. While a pong
    /// is held back: the bytes held (header and payload), and `remaining` stays 0.
    have: u8,
    /// Two low bits, the close code: 0 none seen, 1 and 2 awaiting its first and second byte, 3
    /// read. Above them the flags [`ABSORB`] and [`HOLDING`].
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

    /// Is what was passed on between two frames? It is at a boundary, or holding back a pong
    /// (which starts at one): a frame of tideway's may go next.
    pub fn sent_at_boundary(&self) -> bool {
        self.at_boundary() || self.holding()
    }

    /// Drop tideway's pongs from this direction (see [`Self::sift`]).
    pub fn absorb_pongs(&mut self) {
        self.close |= ABSORB;
    }

    /// Does this direction drop tideway's pongs?
    pub fn absorbs(&self) -> bool {
        self.close & ABSORB != 0
    }

    fn holding(&self) -> bool {
        self.close & HOLDING != 0
    }

    fn close_state(&self) -> u8 {
        self.close & 0b11
    }

    /// How many bytes may be read without crossing the end of the current frame's header or
    /// payload; `None` at a boundary.
    pub fn until_boundary(&self) -> Option<u64> {
        if self.holding() {
            let whole = if self.have < 2 {
                2
            } else {
                header_len([self.head[0], self.head[1]]) + PING_LEN
            };
            Some((whole - usize::from(self.have)) as u64)
        } else if self.remaining > 0 {
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
        (self.close_state() == 3).then(|| u16::from_be_bytes([self.head[12], self.head[13]]))
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

    /// Account for bytes that went by (all passed on: none is held back or dropped); returns
    /// the data messages they completed and the data payload bytes among them.
    pub fn feed(&mut self, data: &[u8]) -> Flow {
        debug_assert!(!self.holding());
        let mut flow = Flow::default();
        self.scan(data, false, &mut flow);
        flow
    }

    /// Account for the bytes at the start of `data`, and say what to do with them: pass them
    /// on, or, in a direction that absorbs pongs, hold them back, drop them (tideway's pong)
    /// or pass them on with those held before. `data` is not empty. The data messages and
    /// payload bytes passed on are added to `flow` (held bytes are a pong's: never a message).
    pub fn sift(&mut self, data: &[u8], flow: &mut Flow) -> Sifted {
        if self.holding() {
            return self.hold(data);
        }
        if self.absorbs() && self.may_hold(data[0]) {
            self.close |= HOLDING;
            return self.hold(data);
        }
        Sifted::Pass(self.scan(data, self.absorbs(), flow))
    }

    /// Does a frame starting with `b0` here get held back (a pong at a boundary, before any
    /// close frame, whose close code keeps `head[12..14]`)?
    fn may_hold(&self, b0: u8) -> bool {
        b0 == PONG && self.at_boundary() && self.close_state() == 0
    }

    /// Take bytes of a held-back pong until it is whole, or until its length shows it is not
    /// tideway's.
    fn hold(&mut self, data: &[u8]) -> Sifted {
        for (i, &b) in data.iter().enumerate() {
            self.head[usize::from(self.have)] = b;
            self.have += 1;
            let used = i + 1;
            if self.have == 2 && usize::from(b & 0x7f) != PING_LEN {
                // Not tideway's: account for the two bytes as any frame's start.
                let held = self.release();
                self.scan(held.as_slice(), false, &mut Flow::default());
                return Sifted::Release { used, held };
            }
            let hl = if self.have >= 2 {
                header_len([self.head[0], self.head[1]])
            } else {
                continue;
            };
            if usize::from(self.have) < hl + PING_LEN {
                continue;
            }
            let mut payload = [0; PING_LEN];
            payload.copy_from_slice(&self.head[hl..hl + PING_LEN]);
            if self.head[1] & 0x80 != 0 {
                for (i, p) in payload.iter_mut().enumerate() {
                    *p ^= self.head[hl - 4 + i % 4];
                }
            }
            // The whole pong is read: the stream is at a boundary again.
            let held = self.release();
            return if payload == ping_payload() {
                Sifted::Ours(used)
            } else {
                Sifted::Release { used, held }
            };
        }
        Sifted::Held(data.len())
    }

    /// Stop holding; the bytes that were held.
    fn release(&mut self) -> Held {
        let held = Held {
            bytes: self.head,
            len: self.have,
        };
        self.have = 0;
        self.close &= !HOLDING;
        held
    }

    /// Account for bytes that went by; with `stop_at_pong`, stop at a boundary before a
    /// frame that [`Self::sift`] holds back. Returns the bytes accounted for; adds the data
    /// messages they completed and their data payload bytes to `flow`.
    fn scan(&mut self, all: &[u8], stop_at_pong: bool, flow: &mut Flow) -> usize {
        let mut data = all;
        while !data.is_empty() {
            if stop_at_pong && self.may_hold(data[0]) {
                break;
            }
            if self.remaining > 0 && matches!(self.close_state(), 1 | 2) {
                let at = usize::from(self.close_state() - 1);
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
            let keep = if self.close_state() == 0 { 14 } else { 12 };
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
                if self.head[0] & 0x0f == 0x8 && self.close_state() == 0 {
                    // A close frame's header longer than 12 bytes is a protocol error: its
                    // code is not read.
                    let short = header_len([self.head[0], self.head[1]]) <= 12;
                    if self.remaining >= 2 && short {
                        self.close |= 1;
                    } else {
                        self.head[12..14].copy_from_slice(&NO_STATUS.to_be_bytes());
                        self.close |= 3;
                    }
                }
            }
        }
        all.len() - data.len()
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

    /// A frame with `b0` (FIN and opcode), masked with [1, 2, 3, 4] or not.
    fn raw(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut f = vec![b0];
        let m = if masked { 0x80 } else { 0 };
        if payload.len() < 126 {
            f.push(m | payload.len() as u8);
        } else {
            f.push(m | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        if masked {
            let mask = [1, 2, 3, 4];
            f.extend_from_slice(&mask);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        f
    }

    /// tideway's pong, as a client (masked) or a backend would send it.
    fn our_pong(masked: bool) -> Vec<u8> {
        raw(0x8A, &ping_payload(), masked)
    }

    /// Sift `chunks` in order through an absorbing tracker: what is passed on, how many of
    /// tideway's pongs were dropped, the tracker, and the messages and bytes counted.
    fn sift_all(chunks: &[&[u8]]) -> (Vec<u8>, usize, FrameTracker, Flow) {
        let mut t = FrameTracker::new();
        t.absorb_pongs();
        let (mut out, mut ours, mut flow) = (Vec::new(), 0, Flow::default());
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                rest = match t.sift(rest, &mut flow) {
                    Sifted::Pass(n) => {
                        assert!(n > 0);
                        out.extend_from_slice(&rest[..n]);
                        &rest[n..]
                    }
                    Sifted::Held(n) => &rest[n..],
                    Sifted::Ours(n) => {
                        ours += 1;
                        &rest[n..]
                    }
                    Sifted::Release { used, held } => {
                        out.extend_from_slice(held.as_slice());
                        &rest[used..]
                    }
                };
            }
        }
        (out, ours, t, flow)
    }

    /// Every two-way split of `stream` gives `expect` and `ours`, and ends at a boundary.
    fn every_split(stream: &[u8], expect: &[u8], ours: usize) {
        for a in 0..=stream.len() {
            let (out, n, t, flow) = sift_all(&[&stream[..a], &stream[a..]]);
            assert_eq!(out, expect, "split {a}");
            assert_eq!(n, ours, "split {a}");
            // Messages count the same whether or not pongs are absorbed on the way.
            assert_eq!(flow, FrameTracker::new().feed(expect), "split {a}");
            assert!(t.at_boundary(), "split {a}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(sift_all(&bytes).0, expect, "byte by byte");
    }

    #[test]
    fn tideway_s_pong_is_dropped_in_any_split_masked_or_not() {
        for masked in [true, false] {
            let mut stream = raw(0x82, b"before", masked);
            stream.extend(our_pong(masked));
            stream.extend(raw(0x81, b"after", masked));
            let mut expect = raw(0x82, b"before", masked);
            expect.extend(raw(0x81, b"after", masked));
            every_split(&stream, &expect, 1);
        }
        // Alone, and two in a row.
        every_split(&our_pong(true), b"", 1);
        let mut two = our_pong(false);
        two.extend(our_pong(false));
        every_split(&two, b"", 2);
    }

    #[test]
    fn a_pong_between_fragments_of_a_message_is_dropped_and_the_message_kept() {
        // Text message in three fragments (FIN 0 text, FIN 0 continuation, FIN continuation),
        // tideway's pong and the application's ping between them.
        let mut stream = raw(0x01, b"frag-one", true);
        stream.extend(our_pong(true));
        stream.extend(raw(0x00, &[7u8; 200], true));
        stream.extend(raw(0x89, b"app-ping", true));
        stream.extend(raw(0x80, b"end", true));
        let mut expect = raw(0x01, b"frag-one", true);
        expect.extend(raw(0x00, &[7u8; 200], true));
        expect.extend(raw(0x89, b"app-ping", true));
        expect.extend(raw(0x80, b"end", true));
        every_split(&stream, &expect, 1);
    }

    #[test]
    fn other_pongs_pass_untouched() {
        let mut other = ping_payload();
        other[7] ^= 1;
        let cases = [
            raw(0x8A, &other, true),           // tideway's length, another payload
            raw(0x8A, &other, false),          //
            raw(0x8A, b"app", true),           // another length
            raw(0x8A, b"", false),             // empty
            raw(0x8A, &[1u8; 125], false),     // the longest a control frame may be
            raw(0x8A, &[1u8; 130], true),      // too long: the peer's protocol error
            raw(0x0A, &ping_payload(), true),  // a fragmented pong: also its error
            raw(0x89, &ping_payload(), false), // a ping with tideway's payload
        ];
        for pong in cases {
            let mut stream = pong.clone();
            stream.extend(raw(0x82, b"next", true));
            every_split(&stream, &stream, 0);
        }
    }

    #[test]
    fn pongs_after_a_close_frame_pass_and_the_close_code_stays() {
        let mut stream = masked_close_frame(4000, [9, 8, 7, 6]).to_vec();
        stream.extend(our_pong(true));
        let (out, ours, t, _) = sift_all(&[&stream]);
        assert_eq!((out, ours), (stream.clone(), 0));
        assert_eq!(t.close_code(), Some(4000));
        // Before the close: dropped, and the code read all the same.
        let mut stream = our_pong(true);
        stream.extend(masked_close_frame(1000, [9, 8, 7, 6]));
        for a in 0..=stream.len() {
            let (out, ours, t, _) = sift_all(&[&stream[..a], &stream[a..]]);
            assert_eq!((&out[..], ours), (&stream[14..], 1), "split {a}");
            assert_eq!(t.close_code(), Some(1000), "split {a}");
        }
    }

    #[test]
    fn a_held_pong_is_mid_frame_for_reads_but_a_boundary_for_tideway_s_frames() {
        let pong = our_pong(true);
        let mut t = FrameTracker::new();
        t.absorb_pongs();
        assert_eq!(t.sift(&pong[..5], &mut Flow::default()), Sifted::Held(5));
        assert!(!t.at_boundary());
        assert!(t.sent_at_boundary());
        assert_eq!(t.until_boundary(), Some(9));
        assert_eq!(t.sift(&pong[5..], &mut Flow::default()), Sifted::Ours(9));
        assert!(t.at_boundary());
        // Not absorbing: a pong is any frame.
        let mut t = FrameTracker::new();
        assert_eq!(t.sift(&pong, &mut Flow::default()), Sifted::Pass(14));
        assert_eq!(std::mem::size_of::<FrameTracker>(), 24);
    }

    #[test]
    fn tideway_s_pings_carry_its_payload() {
        let f = ping_frame();
        assert_eq!(&f[..2], &[0x89, 8]);
        assert_eq!(f[2..], ping_payload());
        let m = masked_ping_frame([1, 2, 3, 4]);
        assert_eq!(&m[..6], &[0x89, 0x88, 1, 2, 3, 4]);
        let unmasked: Vec<u8> = m[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
            .collect();
        assert_eq!(unmasked, ping_payload());
    }

    #[test]
    fn close_frames_encode_1001() {
        assert_eq!(close_frame(GOING_AWAY), [0x88, 0x02, 0x03, 0xE9]);
        let m = masked_close_frame(GOING_AWAY, [0, 0, 0, 0]);
        assert_eq!(&m[6..], &[0x03, 0xE9]);
    }
}
