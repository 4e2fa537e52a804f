//! The PROXY protocol (HAProxy's v1 text and v2 binary headers), both ways: [`send`] writes
//! the header tideway puts in front of a backend connection (`proxy_protocol = "v1"|"v2"` on
//! an upstream), [`receive`] reads and strictly checks the one a load balancer puts in front
//! of a client connection (`proxy_protocol = true` on a listener).
//!
//! Imports: `config` only.

pub mod receive;
pub mod send;

pub use send::header;

/// The 12 bytes every v2 header starts with.
pub(crate) const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
