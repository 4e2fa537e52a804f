//! Which cipher suite a TLS listener agrees on.
//!
//! Most clients (OpenSSL's and rustls' among them) list AES-256-GCM first. Its TLS 1.3 suite
//! hashes with SHA-384, which ring computes in generic code (x86 servers' SHA extensions cover
//! SHA-256 only), and that cost a new WebSocket's handshake about five times what SHA-256 does
//! with them (docs/benchmarks.md: 4.9% of a round's samples against 0.97%). AES-128-GCM is
//! as safe a choice (TLS 1.3's mandatory suite, first in Mozilla's recommended order), so a
//! listener takes the AES-GCM suites in its own order, AES-128 first, as Go's TLS server does.
//! A client that lists ChaCha20-Poly1305 before any AES-GCM suite most likely has no AES
//! instructions, and keeps its own order: ChaCha20 is the fast suite for it.

use rustls::crypto::CryptoProvider;
use rustls::server::ClientHello;
use rustls::{CipherSuite, ServerConfig, SupportedCipherSuite};
use std::sync::Arc;

/// A listener's two server configurations, alike but for whose suite order wins.
#[derive(Clone)]
pub struct Suites {
    /// AES-128-GCM first, whatever the client's order.
    aes_first: Arc<ServerConfig>,
    /// The client's order, for clients that put ChaCha20 first.
    client_order: Arc<ServerConfig>,
}

impl Suites {
    /// `build` makes a configuration from a provider; both share whatever it puts in them.
    pub fn new(
        provider: CryptoProvider,
        build: impl Fn(Arc<CryptoProvider>) -> ServerConfig,
    ) -> Self {
        let client_order = build(Arc::new(provider.clone()));
        let mut ordered = provider;
        ordered.cipher_suites.sort_by_key(|s| rank(s.suite()));
        let mut aes_first = build(Arc::new(ordered));
        aes_first.ignore_client_order = true;
        Suites {
            aes_first: Arc::new(aes_first),
            client_order: Arc::new(client_order),
        }
    }

    /// The configuration to finish `hello`'s handshake with.
    pub fn pick(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        let ours = &self.client_order.crypto_provider().cipher_suites;
        if prefers_chacha(hello.cipher_suites(), ours) {
            self.client_order.clone()
        } else {
            self.aes_first.clone()
        }
    }
}

fn is_chacha(s: CipherSuite) -> bool {
    matches!(
        s,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// The server's order: AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305 (a stable sort,
/// so ECDSA before RSA within each, as the provider lists them).
fn rank(s: CipherSuite) -> u8 {
    match s {
        CipherSuite::TLS13_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        s if is_chacha(s) => 2,
        _ => 1,
    }
}

/// Whether the first suite the client offers that the listener supports is a ChaCha20 one.
fn prefers_chacha(offered: &[CipherSuite], ours: &[SupportedCipherSuite]) -> bool {
    offered
        .iter()
        .find(|s| ours.iter().any(|o| o.suite() == **s))
        .is_some_and(|s| is_chacha(*s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::ring::default_provider;

    #[test]
    fn the_server_order_puts_aes_128_first_and_chacha_last() {
        let mut p = default_provider();
        p.cipher_suites.sort_by_key(|s| rank(s.suite()));
        let names: Vec<CipherSuite> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        let at = |s| names.iter().position(|n| *n == s).unwrap();
        use CipherSuite as C;
        assert!(at(C::TLS13_AES_128_GCM_SHA256) < at(C::TLS13_AES_256_GCM_SHA384));
        assert!(at(C::TLS13_AES_256_GCM_SHA384) < at(C::TLS13_CHACHA20_POLY1305_SHA256));
        assert!(
            at(C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
                < at(C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
        );
        assert_eq!(names.len(), default_provider().cipher_suites.len());
    }

    #[test]
    fn a_client_keeps_its_order_only_when_chacha_comes_first_of_what_we_support() {
        let ours = default_provider().cipher_suites;
        use CipherSuite as C;
        let chacha_first = [
            C::TLS13_CHACHA20_POLY1305_SHA256,
            C::TLS13_AES_128_GCM_SHA256,
        ];
        assert!(prefers_chacha(&chacha_first, &ours));
        let aes_first = [
            C::TLS13_AES_256_GCM_SHA384,
            C::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        assert!(!prefers_chacha(&aes_first, &ours));
        // Suites we do not support do not decide.
        let unknown_first = [
            C::TLS_RSA_WITH_AES_128_CBC_SHA,
            C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ];
        assert!(prefers_chacha(&unknown_first, &ours));
        assert!(!prefers_chacha(&[], &ours));
    }
}
