//! Reading HTTP/1 message heads before anything else sees them, and the WebSocket upgrade head.

use super::message::end_with_forwarding;
pub use crate::wire::{read_head, response_status, HeadRead, MAX_HEAD, MAX_HEADERS};

/// A parsed upgrade request, owning what the WebSocket path needs.
#[derive(Debug)]
pub struct UpgradeHead {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl UpgradeHead {
    /// Parse a complete request head.
    pub fn parse(head: &[u8]) -> Option<Self> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return None,
        }
        Some(UpgradeHead {
            method: req.method?.to_string(),
            target: req.path?.to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect(),
        })
    }

    /// A header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The query string of the target, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The head to send to the backend, with X-Forwarded-For (appended), X-Real-IP and
    /// X-Forwarded-Proto set for `client`.
    pub fn to_backend(&self, client: Option<std::net::IpAddr>, proto: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", self.method, self.target).as_bytes());
        let mut xff: Vec<&[u8]> = Vec::new();
        for (name, value) in &self.headers {
            match name.as_str() {
                "x-forwarded-for" => xff.push(value),
                "x-real-ip" | "x-forwarded-proto" => {}
                _ => {
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        end_with_forwarding(&mut out, &xff, client, proto);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /chat?uid=7 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n";

    #[test]
    fn rewrites_forwarding_headers() {
        let h = UpgradeHead::parse(UPGRADE).unwrap();
        assert_eq!(h.query(), Some("uid=7"));
        let out =
            String::from_utf8(h.to_backend(Some("10.0.0.9".parse().unwrap()), "http")).unwrap();
        assert!(out.starts_with("GET /chat?uid=7 HTTP/1.1\r\n"));
        assert!(out.contains("x-forwarded-for: 1.1.1.1, 10.0.0.9\r\n"));
        assert!(out.contains("x-real-ip: 10.0.0.9\r\n"));
        assert!(out.ends_with("x-forwarded-proto: http\r\n\r\n"));
    }

    #[tokio::test]
    async fn reads_a_head_split_over_reads() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            a.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
            a.write_all(b"st: x\r\n\r\nBODY").await.unwrap();
        });
        let mut buf = Vec::new();
        let r = read_head(&mut b, &mut buf).await.unwrap();
        assert_eq!(r, HeadRead::Complete(buf.len() - 4));
    }
}
