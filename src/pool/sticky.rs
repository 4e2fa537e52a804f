//! The value of a sticky cookie ([`crate::config::StickyCookie`]): an opaque, stable name for
//! a backend. It is the first 128 bits of the SHA-256 of the backend's id, written as 32
//! lower-case hex digits, so it shows no address in clear (NGINX Plus writes an MD5 of the
//! server's address; both are unkeyed, so an id that can be guessed, `IP:PORT`, can be found
//! by hashing candidates) and every tideway instance that sees the same pool gives a backend the
//! same value, with no shared secret or state. The backend table indexes backends by it
//! ([`super::Backends::by_sticky`]).
//!
//! Reading one is strict: exactly 32 hex digits or nothing, so a forged or oversized cookie
//! costs a failed comparison, never an allocation.

use std::fmt;

/// A backend's sticky value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StickyId([u8; 16]);

impl StickyId {
    /// The value of backend `id`.
    pub fn of(id: &str) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
        let mut v = [0u8; 16];
        v.copy_from_slice(&d.as_ref()[..16]);
        StickyId(v)
    }

    /// Read a cookie value: 32 hex digits (either case), else None.
    pub fn parse(text: &[u8]) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut v = [0u8; 16];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            v[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(StickyId(v))
    }
}

impl fmt::Display for StickyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_stable_opaque_and_read_back() {
        let v = StickyId::of("127.0.0.1:8081");
        let text = v.to_string();
        assert_eq!(text.len(), 32);
        assert!(!text.contains("127"));
        // SHA-256("127.0.0.1:8081"), first 16 bytes: the same on every instance.
        assert_eq!(text, {
            let d = ring::digest::digest(&ring::digest::SHA256, b"127.0.0.1:8081");
            d.as_ref()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
        assert_eq!(StickyId::parse(text.as_bytes()), Some(v));
        assert_eq!(StickyId::parse(text.to_uppercase().as_bytes()), Some(v));
        assert_ne!(StickyId::of("127.0.0.1:8082"), v);
        for bad in [
            &b""[..],
            b"abc",
            &text.as_bytes()[..31],
            format!("{text}0").as_bytes(),
            b"zz000000000000000000000000000000",
            b"+f000000000000000000000000000000",
            &[b'a'; 4096],
        ] {
            assert_eq!(
                StickyId::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
