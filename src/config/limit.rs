//! Per-client limits as written and as validated: `[limit_zone.NAME]` tables (nginx's
//! `limit_conn_zone` / `limit_req_zone`) and a listener's `client_limits` (nginx's
//! `limit_conn` / `limit_req`). A zone's state is shared by every listener that names it.
//!
//! A zone's `size` is nginx's shared-memory size and is turned into a number of client entries
//! the way nginx's documentation counts them on 64-bit systems: a `limit_req` state takes
//! 128 bytes, a `limit_conn` state 64 (so "1m" holds 8192 rate entries or 16384 connection
//! entries). Sizes below nginx's minimum (8 pages, 32k) are refused as nginx refuses them.
//!
//! Imports: the rest of `config` only.

use super::file::Ctx;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// Bytes nginx's documentation counts for one `limit_req` state (64-bit).
pub const RATE_ENTRY_BYTES: u64 = 128;
/// Bytes nginx's documentation counts for one `limit_conn` state (64-bit).
pub const CONN_ENTRY_BYTES: u64 = 64;
/// Smallest zone nginx accepts: 8 pages of 4 KiB.
pub const MIN_ZONE_BYTES: u64 = 32 * 1024;
/// Default zone size when `size` is left out (nginx requires one; "10m" is its documented example).
pub const DEFAULT_ZONE_SIZE: &str = "10m";
/// Default status of a refusal (nginx's `limit_conn_status` / `limit_req_status`).
pub const DEFAULT_LIMIT_STATUS: u16 = 503;

/// What a zone counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneKind {
    /// Connections in progress per client (nginx's `limit_conn_zone`).
    Conn,
    /// Requests per client, a leaky bucket draining at `milli_per_sec` thousandths of a request
    /// a second (nginx's `limit_req_zone ... rate=`; "1r/m" is 16, as nginx's integer math has it).
    Rate { milli_per_sec: u64 },
}

/// `[limit_zone.NAME]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitZone {
    pub name: String,
    pub kind: ZoneKind,
    /// Client entries the zone holds at most.
    pub entries: usize,
}

/// One limit a listener applies, with its zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLimit {
    pub zone: LimitZone,
    pub rule: LimitRule,
    /// The answer to a refused request (nginx's `limit_conn_status` / `limit_req_status`).
    pub status: u16,
}

/// How a listener uses a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitRule {
    /// At most `max` requests in progress and tunnels open per client (TCP: sockets).
    Conn { max: u32 },
    /// `burst` requests over the rate are held; the first `delay` of them pass at once (0: each
    /// is delayed to the rate; `nodelay` is `u32::MAX`); more than `burst` are refused.
    Rate { burst: u32, delay: u32 },
}

/// The client entries a zone of `bytes` holds, as nginx's documentation counts them.
pub fn zone_entries(kind: ZoneKind, bytes: u64) -> usize {
    let per_entry = match kind {
        ZoneKind::Conn => CONN_ENTRY_BYTES,
        ZoneKind::Rate { .. } => RATE_ENTRY_BYTES,
    };
    usize::try_from(bytes / per_entry).unwrap_or(usize::MAX)
}

/// `[limit_zone.NAME]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ZoneSection {
    kind: Spanned<String>,
    key: Option<Spanned<String>>,
    size: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
}

/// One entry of a listener's `client_limits` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UseSection {
    zone: Spanned<String>,
    conn: Option<u32>,
    burst: Option<u32>,
    delay: Option<u32>,
    nodelay: Option<bool>,
    status: Option<Spanned<u16>>,
}

/// nginx's size syntax: bytes, or a number with `k`, `m` or `g` (either case).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid size {s:?}; expected bytes or a number with k, m or g, e.g. \"10m\"");
    let (num, unit) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(bad)
}

/// nginx's rate syntax: `Nr/s` or `Nr/m`, as thousandths of a request a second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid rate {s:?}; expected requests a second or a minute, e.g. \"10r/s\" or \"30r/m\"")
    };
    let (num, scale) = if let Some(n) = s.strip_suffix("r/s") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix("r/m") {
        (n, 60)
    } else {
        return Err(bad());
    };
    let n: u64 = num.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    // nginx: rate * 1000 / scale, in integers.
    n.checked_mul(1000)
        .map(|m| m / scale)
        .filter(|m| *m > 0)
        .ok_or_else(bad)
}

/// Validate every `[limit_zone.NAME]`.
pub(super) fn zones(
    cx: &Ctx<'_>,
    raw: &BTreeMap<String, Spanned<ZoneSection>>,
) -> Result<BTreeMap<String, LimitZone>, crate::config::ConfigError> {
    let mut out = BTreeMap::new();
    for (name, z) in raw {
        let span = z.span();
        let z = z.get_ref();
        if !super::file::valid_name(name) {
            return Err(cx.err(
                span,
                format!("invalid zone name {name:?}; expected letters, digits, '-', '_' or '.'"),
            ));
        }
        if let Some(k) = &z.key {
            if k.get_ref() != "ip" {
                return Err(cx.err(
                    k.span(),
                    format!(
                        "unknown zone key {:?}; expected \"ip\" (the client address)",
                        k.get_ref()
                    ),
                ));
            }
        }
        let bytes = match &z.size {
            None => parse_size(DEFAULT_ZONE_SIZE).expect("valid default"),
            Some(s) => {
                let b = parse_size(s.get_ref()).map_err(|m| cx.err(s.span(), m))?;
                if b < MIN_ZONE_BYTES {
                    return Err(cx.err(
                        s.span(),
                        format!("zone {name:?} is too small; at least \"32k\", as nginx"),
                    ));
                }
                b
            }
        };
        let kind = match (z.kind.get_ref().as_str(), &z.rate) {
            ("conn", None) => ZoneKind::Conn,
            ("conn", Some(r)) => {
                return Err(cx.err(r.span(), "rate is for kind = \"rate\" zones"));
            }
            ("rate", Some(r)) => {
                let milli = parse_rate(r.get_ref()).map_err(|m| cx.err(r.span(), m))?;
                ZoneKind::Rate {
                    milli_per_sec: milli,
                }
            }
            ("rate", None) => {
                return Err(cx.err(span, "a rate zone needs rate = \"Nr/s\" or \"Nr/m\""));
            }
            (other, _) => {
                return Err(cx.err(
                    z.kind.span(),
                    format!("unknown zone kind {other:?}; expected conn or rate"),
                ));
            }
        };
        let entries = zone_entries(kind, bytes);
        out.insert(
            name.clone(),
            LimitZone {
                name: name.clone(),
                kind,
                entries,
            },
        );
    }
    Ok(out)
}

/// Validate a listener's `client_limits` against the zones; `tcp` listeners take `conn` zones only.
pub(super) fn uses(
    cx: &Ctx<'_>,
    raw: &[Spanned<UseSection>],
    zones: &BTreeMap<String, LimitZone>,
    tcp: bool,
) -> Result<Vec<ClientLimit>, crate::config::ConfigError> {
    let mut out: Vec<ClientLimit> = Vec::new();
    for u in raw {
        let span = u.span();
        let u = u.get_ref();
        let name = u.zone.get_ref();
        let Some(zone) = zones.get(name) else {
            let known: Vec<&str> = zones.keys().map(String::as_str).collect();
            return Err(cx.err(
                u.zone.span(),
                format!(
                    "unknown limit zone {name:?}; defined zones: [{}]",
                    known.join(", ")
                ),
            ));
        };
        if out.iter().any(|c| &c.zone.name == name) {
            return Err(cx.err(
                span,
                format!("zone {name:?} is named twice on this listener"),
            ));
        }
        let status = match &u.status {
            None => DEFAULT_LIMIT_STATUS,
            Some(s) if (400..=599).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                return Err(cx.err(s.span(), "status must be between 400 and 599, as nginx's"))
            }
        };
        let rule = match zone.kind {
            ZoneKind::Conn => {
                if u.burst.is_some() || u.delay.is_some() || u.nodelay.is_some() {
                    return Err(cx.err(span, format!("zone {name:?} counts connections: burst, delay and nodelay are for rate zones")));
                }
                match u.conn {
                    Some(max) if max > 0 => LimitRule::Conn { max },
                    _ => {
                        return Err(cx.err(
                            span,
                            format!("zone {name:?} counts connections: give conn = N (at least 1)"),
                        ))
                    }
                }
            }
            ZoneKind::Rate { .. } if tcp => {
                return Err(cx.err(
                    span,
                    format!(
                        "zone {name:?} limits a request rate; a tcp listener takes conn zones only"
                    ),
                ));
            }
            ZoneKind::Rate { .. } => {
                if u.conn.is_some() {
                    return Err(cx.err(
                        span,
                        format!("zone {name:?} limits a request rate: conn is for conn zones"),
                    ));
                }
                let burst = u.burst.unwrap_or(0);
                let delay = match (u.nodelay, u.delay) {
                    (Some(true), Some(_)) => {
                        return Err(cx.err(span, "nodelay and delay exclude each other"));
                    }
                    (Some(true), None) => u32::MAX,
                    (_, d) => d.unwrap_or(0),
                };
                LimitRule::Rate { burst, delay }
            }
        };
        out.push(ClientLimit {
            zone: zone.clone(),
            rule,
            status,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates_read_as_nginx_reads_them() {
        assert_eq!(parse_size("10m"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("32K"), Ok(32 * 1024));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "m", "1t", "-1k", "1.5m", "99999999999999999999m"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_rate("10r/s"), Ok(10_000));
        assert_eq!(parse_rate("1r/m"), Ok(16));
        assert_eq!(parse_rate("30r/m"), Ok(500));
        for bad in ["0r/s", "10", "r/s", "1r/h", "-1r/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
