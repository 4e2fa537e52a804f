//! nginx's `$request_id`: 16 random bytes as 32 hex digits, one per request, made only when
//! something reads it (the access log, or a header template such as
//! `proxy_set_header X-Request-Id $request_id`), and then the same for both. A WebSocket's
//! tunnel line carries its handshake's id.
//!
//! Imports: nothing else in tideway.

use std::sync::OnceLock;

/// A request's id, made on first read.
#[derive(Default)]
pub struct RequestId(OnceLock<[u8; 32]>);

impl RequestId {
    /// The id, made now if it was not yet.
    pub fn get(&self) -> &str {
        let hex = self.0.get_or_init(fresh);
        std::str::from_utf8(hex).expect("hex digits")
    }

    /// The id if something has read it already.
    #[cfg(test)]
    pub fn made(&self) -> Option<&str> {
        self.0
            .get()
            .map(|h| std::str::from_utf8(h).expect("hex digits"))
    }
}

/// 32 lowercase hex digits of 16 random bytes.
fn fresh() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 16] = rand::random();
    let mut out = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_per_request_made_once_32_hex_digits() {
        let a = RequestId::default();
        assert_eq!(a.made(), None);
        let first = a.get().to_string();
        assert_eq!(first.len(), 32);
        assert!(first
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(a.get(), first);
        assert_eq!(a.made(), Some(first.as_str()));
        assert_ne!(RequestId::default().get(), first);
    }
}
