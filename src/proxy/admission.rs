//! Upgrade admission in the data plane: after the retry loop picked a backend and before the
//! handshake is forwarded ([`super::route::Route::attempts`]), a WebSocket upgrade (every
//! request with `all_requests`) to an upstream with `admission` waits for its place at that
//! backend ([`crate::pool::admission`]). A client over the limits waits in the backend's queue,
//! watched meanwhile ([`super::route::Attempt::queued`]: one that goes away leaves it); one
//! refused gets 503 with a jittered `Retry-After` and a short JSON body. A refused or queued
//! client is never the backend's failure: nothing is counted against it (passive health, the
//! failure metric), and the request goes to no other backend.
//!
//! Off, it costs one branch per request ([`gated`]).

use super::access::Outcome;
use super::body::send;
use super::error::{Failure, BUSY};
use super::exchange::{Next, DEFAULT_SEND_TIMEOUT};
use super::route::{error_body, Attempt};
use crate::config::{AdmissionConfig, UpstreamPolicy};
use crate::pool::admission::{admit_shared, Pending};
use crate::pool::{Live, PoolHandle};
use pingora::protocols::Stream;
use std::sync::Arc;

/// The admission settings that judge a request to `policy`'s upstream (`websocket`: it is
/// an upgrade); None: it goes straight on.
pub fn gated(policy: &UpstreamPolicy, websocket: bool) -> Option<&AdmissionConfig> {
    policy
        .admission
        .as_ref()
        .filter(|a| websocket || a.all_requests)
}

/// Wait for a place at the backend whose counters are `live`, under `cfg` shared among the
/// fleet's instances, while `attempt` watches its client. A refusal is
/// [`Failure::Busy`] with its `Retry-After`; a client that left is [`Failure::Gone`].
pub(super) async fn wait<A: Attempt>(
    pool: &PoolHandle,
    live: &Arc<Live>,
    cfg: &AdmissionConfig,
    attempt: &mut A,
) -> Result<Pending, Failure> {
    match attempt
        .queued(admit_shared(live, cfg, pool.instances()))
        .await
    {
        Some(Ok(pending)) => Ok(pending),
        Some(Err(_)) => Err(Failure::Busy(cfg.retry_after_secs(rand::random()))),
        None => Err(Failure::Gone),
    }
}

/// The answer to a refused client: 503, `Retry-After: secs`, a JSON body (its length only,
/// to `HEAD`); the connection closes (a refused upgrade's client opens a new one to try
/// again).
pub fn busy_response(secs: u64, head_method: bool) -> String {
    let body = error_body(BUSY);
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: {secs}\r\nconnection: close\r\n\r\n{}",
        body.len(),
        if head_method { "" } else { &body }
    )
}

/// Send [`busy_response`] to the client, and say so in `out`.
pub(super) async fn refuse(
    client: &mut Stream,
    secs: u64,
    head_method: bool,
    out: &mut Outcome,
) -> Next {
    if super::h2::stream::H2Io::of(client).is_some() {
        let body = error_body(BUSY);
        let mut digits = [0u8; 20];
        let after = super::response::decimal(secs, &mut digits);
        let fields: [(&[u8], &[u8]); 2] = [
            (b"content-type", b"application/json"),
            (b"retry-after", after),
        ];
        super::h2::answer::own(client, 503, &fields, &[], body.len());
        let body = if head_method { "" } else { &body };
        if send(client, body.as_bytes(), DEFAULT_SEND_TIMEOUT)
            .await
            .is_err()
        {
            return Next::Abort;
        }
        out.status = 503;
        out.sent = body.len() as u64;
        return Next::Close;
    }
    let resp = busy_response(secs, head_method);
    if send(client, resp.as_bytes(), DEFAULT_SEND_TIMEOUT)
        .await
        .is_err()
    {
        return Next::Abort;
    }
    out.status = 503;
    out.sent = resp.len() as u64;
    out.head = resp.find("\r\n\r\n").map_or(out.sent, |i| i as u64 + 4);
    Next::Close
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_is_framed_and_says_when_to_come_back() {
        let text = super::busy_response(3, false);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains("\r\nretry-after: 3\r\n"));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], super::BUSY);
        assert_eq!(super::Failure::Busy(3).to_string(), super::BUSY);
        let to_head = super::busy_response(3, true);
        assert_eq!(to_head, format!("{head}\r\n\r\n"), "no body to HEAD");
    }

    #[test]
    fn only_upgrades_are_judged_unless_all_requests() {
        let mut policy = crate::config::UpstreamPolicy::default();
        assert!(super::gated(&policy, true).is_none(), "off by default");
        let cfg = crate::config::AdmissionConfig {
            per_second: Some(1),
            burst: 1,
            max_pending: None,
            queue: 0,
            queue_timeout: std::time::Duration::ZERO,
            retry_after: std::time::Duration::from_secs(1),
            all_requests: false,
            handshake_timeout: crate::config::admission::DEFAULT_ADMISSION_HANDSHAKE_TIMEOUT,
        };
        policy.admission = Some(cfg.clone());
        assert!(super::gated(&policy, true).is_some());
        assert!(super::gated(&policy, false).is_none());
        policy.admission = Some(crate::config::AdmissionConfig {
            all_requests: true,
            ..cfg
        });
        assert!(super::gated(&policy, false).is_some());
    }
}
