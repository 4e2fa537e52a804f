//! A listener's `[listener.limits]`: the client-side limits and timeouts of its HTTP engine
//! (nginx's `client_header_timeout`, `send_timeout`, `keepalive_*`, `http2_max_concurrent_streams`
//! and the like), each defaulted, then checked.

use super::super::duration::Dur;
use super::super::error::ConfigError;
use super::super::types::HttpLimits;
use super::Ctx;
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsSection {
    max_request_line: Option<usize>,
    max_header_line: Option<usize>,
    max_head: Option<usize>,
    max_headers: Option<usize>,
    header_timeout: Option<Dur>,
    body_timeout: Option<Dur>,
    chunked_body_time: Option<Dur>,
    max_concurrent_streams: Option<u32>,
    send_timeout: Option<Dur>,
    keepalive_timeout: Option<Dur>,
    keepalive_requests: Option<u32>,
    max_connections: Option<usize>,
    max_chunked_body: Option<u64>,
}

pub(super) fn validate_limits(
    cx: &Ctx<'_>,
    sp: &Spanned<LimitsSection>,
) -> Result<HttpLimits, ConfigError> {
    let l = sp.get_ref();
    let d = HttpLimits::default();
    let limits = HttpLimits {
        max_request_line: l.max_request_line.unwrap_or(d.max_request_line),
        max_header_line: l.max_header_line.unwrap_or(d.max_header_line),
        max_head: l.max_head.unwrap_or(d.max_head),
        max_headers: l.max_headers.unwrap_or(d.max_headers),
        header_timeout: l.header_timeout.map_or(d.header_timeout, |v| v.0),
        body_timeout: l.body_timeout.map_or(d.body_timeout, |v| v.0),
        keepalive_timeout: l.keepalive_timeout.map_or(d.keepalive_timeout, |v| v.0),
        keepalive_requests: l.keepalive_requests.unwrap_or(d.keepalive_requests),
        max_connections: l.max_connections.unwrap_or(d.max_connections),
        max_chunked_body: l.max_chunked_body.unwrap_or(d.max_chunked_body),
        chunked_body_time: l.chunked_body_time.map_or(d.chunked_body_time, |v| v.0),
        max_concurrent_streams: l.max_concurrent_streams.unwrap_or(d.max_concurrent_streams),
        send_timeout: l.send_timeout.map_or(d.send_timeout, |v| v.0),
        per_client: Vec::new(),
    };
    let positive = [
        ("max_request_line", limits.max_request_line as u64),
        ("max_header_line", limits.max_header_line as u64),
        ("max_head", limits.max_head as u64),
        ("max_headers", limits.max_headers as u64),
        ("keepalive_requests", u64::from(limits.keepalive_requests)),
        (
            "max_concurrent_streams",
            u64::from(limits.max_concurrent_streams),
        ),
    ];
    for (name, v) in positive {
        if v == 0 {
            return Err(cx.err(sp.span(), format!("limits.{name} must be at least 1")));
        }
    }
    if limits.max_head < limits.max_request_line || limits.max_head < limits.max_header_line {
        return Err(cx.err(
            sp.span(),
            "limits.max_head must be at least max_request_line and max_header_line",
        ));
    }
    for (name, v) in [
        ("header_timeout", limits.header_timeout),
        ("body_timeout", limits.body_timeout),
        ("chunked_body_time", limits.chunked_body_time),
        ("keepalive_timeout", limits.keepalive_timeout),
        ("send_timeout", limits.send_timeout),
    ] {
        if v.is_zero() {
            return Err(cx.err(sp.span(), format!("limits.{name} must be more than 0")));
        }
    }
    Ok(limits)
}
