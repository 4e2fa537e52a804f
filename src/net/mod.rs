//! The process's sockets, below everything that serves on them: the one accept loop with its
//! backoff ([`accept`]) and the client connections it accepts ([`inbound`]), connections to
//! backends, plain or TLS ([`backend`]), the file-descriptor budget ([`fds`]) and HTTP/1
//! message heads on the wire ([`wire`]). Shared by the data plane (`proxy`), the health
//! checks (`health`), the admin listener (`admin`) and the server wiring (`server`).
//!
//! Imports: nothing else in tideway.

pub mod accept;
pub mod backend;
pub mod fds;
pub mod inbound;
pub mod wire;

/// The pingora IO traits a stream of tideway's answers alike: shutdown is its `AsyncWrite`
/// shutdown, and it has nothing for the rest (no TLS of pingora's, no timing or proxy digest,
/// nothing to peek: pingora's HTTP engine asks them; tideway's does not).
macro_rules! io_without_extras {
    ($t:ty) => {
        #[async_trait::async_trait]
        impl pingora::protocols::Shutdown for $t {
            async fn shutdown(&mut self) {
                let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
            }
        }

        impl pingora::protocols::Ssl for $t {}

        impl pingora::protocols::GetTimingDigest for $t {
            fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
                Vec::new()
            }
        }

        impl pingora::protocols::GetProxyDigest for $t {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora::protocols::raw_connect::ProxyDigest>> {
                None
            }
        }

        impl pingora::protocols::Peek for $t {}
    };
}
pub(crate) use io_without_extras;
