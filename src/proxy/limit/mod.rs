//! Per-client limits, as nginx's `limit_req` and `limit_conn`: what one client address may ask
//! of a listener. Off unless a listener names zones (`client_limits`).
//!
//! - [`rate`]: requests per second per address, a leaky bucket with `burst` and `delay` /
//!   `nodelay` (`limit_req`). Within the burst a request waits until the rate allows it (or
//!   passes at once with `nodelay`); beyond it, it is refused.
//! - [`conn`]: connections in progress per address (`limit_conn`): an HTTP request until it
//!   ends, a WebSocket until its tunnel closes, a TCP socket while it is open.
//! - [`zone`]: zones are named and shared by every listener that names them; [`lru`] bounds
//!   each one's memory.
//!
//! An HTTP request is checked once its head is whole and valid, against the rate limits first,
//! then (after any delay) the connection limits, the order nginx's preaccess phase runs them.
//! A refusal is answered with the limit's status (503 unless set) and a JSON error, and counted
//! in `tideway_limit_refused_total{zone, reason}`; a TCP socket is closed.
//!
//! The key is [`client_key`] of the client address the gateway has for the connection.
//!
//! Imports: `config`, `metrics`.

pub mod conn;
pub mod lru;
pub mod rate;
pub mod zone;

use crate::config::{ClientLimit, LimitRule};
use conn::{ConnSlot, ConnZone};
use prometheus::{IntCounter, IntCounterVec, Opts};
use rate::{RateZone, Verdict};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use zone::Zone;

/// The answer body of a request refused by a rate limit.
pub const RATE_REFUSED: &str = "too many requests from this address";
/// The answer body of a request refused by a connection limit.
pub const CONN_REFUSED: &str = "too many connections from this address";

/// The key a client is counted under in every zone: its address, IPv4-mapped IPv6 as IPv4.
/// None (no address): the client is not limited, as nginx skips an empty key.
pub fn client_key(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.map(|ip| ip.to_canonical())
}

/// `tideway_limit_refused_total`, registered in the process registry on first use.
fn refused_total() -> &'static IntCounterVec {
    static REFUSED: OnceLock<IntCounterVec> = OnceLock::new();
    REFUSED.get_or_init(|| {
        let c = IntCounterVec::new(
            Opts::new(
                "tideway_limit_refused_total",
                "Requests and connections refused by a per-client limit, by zone and reason (conn, rate)",
            ),
            &["zone", "reason"],
        )
        .expect("valid metric");
        let _ = crate::metrics::global().registry.register(Box::new(c.clone()));
        c
    })
}

struct RateUse {
    zone: Arc<RateZone>,
    /// Thousandths of a request.
    burst: u64,
    /// Thousandths of a request that pass undelayed (u64::MAX: nodelay).
    delay: u64,
    status: u16,
    refused: IntCounter,
}

struct ConnUse {
    zone: Arc<ConnZone>,
    max: u32,
    status: u16,
    refused: IntCounter,
}

/// A refused request or connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub message: &'static str,
}

/// The connections a request or tunnel is counted as; dropping it gives them back.
#[derive(Default)]
pub struct Held {
    _slots: Vec<ConnSlot>,
}

/// The limits one listener applies, with their zones.
#[derive(Default)]
pub struct ClientLimits {
    rates: Vec<RateUse>,
    conns: Vec<ConnUse>,
}

impl ClientLimits {
    /// Resolve a listener's `client_limits` to the running zones.
    pub fn new(limits: &[ClientLimit]) -> Self {
        let mut out = ClientLimits::default();
        for l in limits {
            match (zone::zone(&l.zone), l.rule) {
                (Zone::Rate(zone), LimitRule::Rate { burst, delay }) => {
                    let refused = refused_total().with_label_values(&[&l.zone.name, "rate"]);
                    out.rates.push(RateUse {
                        zone,
                        burst: u64::from(burst) * 1000,
                        delay: if delay == u32::MAX {
                            u64::MAX
                        } else {
                            u64::from(delay) * 1000
                        },
                        status: l.status,
                        refused,
                    });
                }
                (Zone::Conn(zone), LimitRule::Conn { max }) => {
                    let refused = refused_total().with_label_values(&[&l.zone.name, "conn"]);
                    out.conns.push(ConnUse {
                        zone,
                        max,
                        status: l.status,
                        refused,
                    });
                }
                // The config layer pairs every rule with a zone of its kind.
                _ => {
                    tracing::error!(zone = %l.zone.name, "limit rule and zone kind differ; ignored")
                }
            }
        }
        out
    }

    /// No limit configured.
    pub fn is_off(&self) -> bool {
        self.rates.is_empty() && self.conns.is_empty()
    }

    /// Charge a request to every rate limit: how long it must wait, or why it is refused. As
    /// nginx: every limit is looked up in order; the first one over its burst refuses the
    /// request and nothing is charged; otherwise each is charged and the longest delay wins.
    pub fn rate(&self, ip: Option<IpAddr>) -> Result<Duration, Refused> {
        let Some(key) = client_key(ip).filter(|_| !self.rates.is_empty()) else {
            return Ok(Duration::ZERO);
        };
        let last = self.rates.len() - 1;
        let mut wait_ms = 0;
        for (i, r) in self.rates.iter().enumerate() {
            match r.zone.lookup(key, r.burst, i == last, r.zone.now()) {
                Verdict::Busy(_) => {
                    r.refused.inc();
                    return Err(Refused {
                        status: r.status,
                        message: RATE_REFUSED,
                    });
                }
                Verdict::Pass(excess) if i == last => wait_ms = wait_ms.max(r.delay_ms(excess)),
                Verdict::Pass(_) => {}
            }
        }
        for r in &self.rates[..last] {
            let excess = r.zone.account(key, r.zone.now());
            wait_ms = wait_ms.max(r.delay_ms(excess));
        }
        Ok(Duration::from_millis(wait_ms))
    }

    /// Count a connection (an HTTP request, a tunnel, a TCP socket) in every connection limit,
    /// or refuse it (and give back what was counted).
    pub fn conn(&self, ip: Option<IpAddr>) -> Result<Held, Refused> {
        let Some(key) = client_key(ip).filter(|_| !self.conns.is_empty()) else {
            return Ok(Held::default());
        };
        let mut held = Vec::with_capacity(self.conns.len());
        for c in &self.conns {
            match c.zone.acquire(key, c.max) {
                Ok(slot) => held.push(slot),
                Err(_) => {
                    c.refused.inc();
                    return Err(Refused {
                        status: c.status,
                        message: CONN_REFUSED,
                    });
                }
            }
        }
        Ok(Held { _slots: held })
    }
}

impl RateUse {
    /// How long a request that brought the bucket to `excess` waits: the excess beyond the
    /// undelayed part, drained at the rate.
    fn delay_ms(&self, excess: u64) -> u64 {
        if excess <= self.delay {
            return 0;
        }
        (excess - self.delay).saturating_mul(1000) / self.zone.milli_per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LimitZone, ZoneKind};

    fn limit(zone: &str, kind: ZoneKind, rule: LimitRule) -> ClientLimit {
        ClientLimit {
            zone: LimitZone {
                name: zone.into(),
                kind,
                entries: 1000,
            },
            rule,
            status: 503,
        }
    }

    const ONE_PER_MIN: ZoneKind = ZoneKind::Rate { milli_per_sec: 16 };
    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));

    #[test]
    fn without_nodelay_the_burst_waits_and_with_it_passes_at_once() {
        let delayed = ClientLimits::new(&[limit(
            "t-delayed",
            ONE_PER_MIN,
            LimitRule::Rate { burst: 2, delay: 0 },
        )]);
        let got: Vec<_> = (0..4).map(|_| delayed.rate(A)).collect();
        assert_eq!(got[0], Ok(Duration::ZERO));
        // 1000 thousandths at 16 a second: 62.5 s, in nginx's integer math.
        assert_eq!(got[1], Ok(Duration::from_millis(62_500)));
        assert_eq!(got[2], Ok(Duration::from_millis(125_000)));
        assert_eq!(got[3].unwrap_err().status, 503);

        let nodelay = ClientLimits::new(&[limit(
            "t-nodelay",
            ONE_PER_MIN,
            LimitRule::Rate {
                burst: 2,
                delay: u32::MAX,
            },
        )]);
        let got: Vec<_> = (0..4).map(|_| nodelay.rate(A).is_ok()).collect();
        assert_eq!(got, [true, true, true, false]);
        // No address, no limit (nginx skips an empty key).
        assert!((0..10).all(|_| nodelay.rate(None).is_ok()));
    }

    #[test]
    fn a_refusal_by_a_later_limit_charges_no_earlier_one() {
        let both = ClientLimits::new(&[
            limit(
                "t-wide",
                ONE_PER_MIN,
                LimitRule::Rate {
                    burst: 5,
                    delay: u32::MAX,
                },
            ),
            limit(
                "t-narrow",
                ONE_PER_MIN,
                LimitRule::Rate {
                    burst: 0,
                    delay: u32::MAX,
                },
            ),
        ]);
        assert!(both.rate(A).is_ok());
        for _ in 0..10 {
            assert!(both.rate(A).is_err());
        }
        // The wide zone was charged once (the first request) and only then: 4 more fit.
        let wide = ClientLimits::new(&[limit(
            "t-wide",
            ONE_PER_MIN,
            LimitRule::Rate {
                burst: 5,
                delay: u32::MAX,
            },
        )]);
        let passed = (0..10).filter(|_| wide.rate(A).is_ok()).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn connections_are_counted_until_dropped_and_a_refusal_gives_back_the_rest() {
        let limits = ClientLimits::new(&[
            limit("t-c1", ZoneKind::Conn, LimitRule::Conn { max: 5 }),
            limit("t-c2", ZoneKind::Conn, LimitRule::Conn { max: 1 }),
        ]);
        let first = limits.conn(A).unwrap();
        assert_eq!(limits.conn(A).err().map(|r| r.message), Some(CONN_REFUSED));
        assert_eq!(limits.conns[0].zone.held(A.unwrap()), 1);
        drop(first);
        assert!(limits.conns.iter().all(|c| c.zone.is_empty()));
        assert!(limits.conn(A).is_ok());
    }
}
