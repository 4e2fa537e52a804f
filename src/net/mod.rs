//! The process's sockets, below everything that serves on them: the one accept loop with its
//! backoff ([`accept`]), connections to backends, plain or TLS ([`backend`]), the file-descriptor budget ([`fds`]) and HTTP/1 message heads on the
//! wire ([`wire`]). Shared by the data plane (`proxy`), the health checks (`health`), the admin
//! listener (`admin`) and the server wiring (`server`).
//!
//! Imports: nothing else in tideway.

pub mod accept;
pub mod backend;
pub mod fds;
pub mod wire;
