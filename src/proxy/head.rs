//! Reading and recognising HTTP/1 message heads before anything else sees them.

pub use crate::wire::{read_head, response_status, HeadRead, MAX_HEAD, MAX_HEADERS};

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Is this request head a WebSocket upgrade (`Connection: upgrade` + `Upgrade: websocket`)?
pub fn is_websocket_upgrade(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    let mut connection = false;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            connection |= has_token(h.value, "upgrade");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(h.value, "websocket");
        }
    }
    connection && upgrade
}

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
        let mut xff: Option<Vec<u8>> = None;
        for (name, value) in &self.headers {
            match name.as_str() {
                "x-forwarded-for" => xff = Some(value.clone()),
                "x-real-ip" | "x-forwarded-proto" => {}
                _ => {
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        if let Some(ip) = client {
            let ip = ip.to_string();
            let chain = match xff {
                Some(prev) if !prev.is_empty() => {
                    format!("{}, {ip}", String::from_utf8_lossy(&prev))
                }
                _ => ip.clone(),
            };
            out.extend_from_slice(
                format!("x-forwarded-for: {chain}\r\nx-real-ip: {ip}\r\n").as_bytes(),
            );
        }
        out.extend_from_slice(format!("x-forwarded-proto: {proto}\r\n\r\n").as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /chat?uid=7 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n";

    #[test]
    fn recognises_upgrades() {
        assert!(is_websocket_upgrade(UPGRADE));
        assert!(!is_websocket_upgrade(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!is_websocket_upgrade(
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        ));
    }

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
