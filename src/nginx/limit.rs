//! nginx's per-client limits -> tideway's: `limit_req_zone` / `limit_conn_zone` become
//! `[limit_zone.NAME]`; `limit_req`, `limit_conn`, `limit_req_status` and `limit_conn_status`
//! become a listener's `client_limits` (a location's: its route's), inherited as nginx inherits them (a level that sets any
//! `limit_req` replaces the `limit_req`s above it; likewise `limit_conn` and each status).
//!
//! Only the client address can be a key (`$binary_remote_addr`, `$remote_addr`); any other
//! key, an unknown zone or a malformed parameter is an error with file:line, as nginx would
//! refuse the file too.

use super::parse::Directive;
use crate::config::limit::{parse_rate, parse_size, zone_entries, DEFAULT_LIMIT_STATUS};
use crate::config::{ClientLimit, LimitRule, LimitZone, ZoneKind};
use std::collections::BTreeMap;
use std::fmt::Write;

/// A zone as nginx defines it.
#[derive(Debug, Clone)]
pub struct Zone {
    /// `Some(rate)` for `limit_req_zone`, None for `limit_conn_zone`.
    rate: Option<String>,
    size: String,
}

/// One `limit_req` or `limit_conn`.
#[derive(Debug, Clone)]
enum Use {
    Req {
        zone: String,
        burst: u32,
        delay: Option<u32>,
        nodelay: bool,
    },
    Conn {
        zone: String,
        max: u32,
    },
}

/// The limit directives of one level (http, server or location); None: not set there.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    req: Option<Vec<Use>>,
    conn: Option<Vec<Use>>,
    req_status: Option<u16>,
    conn_status: Option<u16>,
}

impl Scope {
    /// This level's settings, with what it does not set taken from `parent`.
    pub fn under(&self, parent: &Scope) -> Scope {
        Scope {
            req: self.req.clone().or_else(|| parent.req.clone()),
            conn: self.conn.clone().or_else(|| parent.conn.clone()),
            req_status: self.req_status.or(parent.req_status),
            conn_status: self.conn_status.or(parent.conn_status),
        }
    }

    /// Sets anything at all.
    pub fn is_set(&self) -> bool {
        self.req.is_some()
            || self.conn.is_some()
            || self.req_status.is_some()
            || self.conn_status.is_some()
    }

    /// Read `d` if it is a limit directive: Some(Err) when it is one but malformed.
    pub fn read(&mut self, d: &Directive) -> Option<Result<(), String>> {
        let r = match d.name.as_str() {
            "limit_req" => req(d).map(|u| self.req.get_or_insert_with(Vec::new).push(u)),
            "limit_conn" => conn(d).map(|u| self.conn.get_or_insert_with(Vec::new).push(u)),
            "limit_req_status" => status(d).map(|s| self.req_status = Some(s)),
            "limit_conn_status" => status(d).map(|s| self.conn_status = Some(s)),
            _ => return None,
        };
        Some(r.map_err(|m| format!("{}: \"{}\" {m}", d.at(), d.name)))
    }

    /// The `client_limits = [...]` line of a listener (empty when there are none); every zone
    /// named must be in `zones` and of the right kind.
    pub fn render(&self, zones: &BTreeMap<String, Zone>, tcp: bool) -> Result<String, String> {
        let limits = self.resolve(zones, tcp)?;
        Ok(if limits.is_empty() {
            String::new()
        } else {
            format!("client_limits = {}\n", render_limits(&limits))
        })
    }

    /// The limits as tideway's config holds them; every zone named must be in `zones` and of
    /// the right kind.
    pub fn resolve(
        &self,
        zones: &BTreeMap<String, Zone>,
        tcp: bool,
    ) -> Result<Vec<ClientLimit>, String> {
        let mut out = Vec::new();
        for u in self.req.iter().flatten().chain(self.conn.iter().flatten()) {
            let (name, rule, status) = match u {
                Use::Req {
                    zone,
                    burst,
                    delay,
                    nodelay,
                } => {
                    if tcp {
                        return Err(format!(
                            "limit_req zone={zone} has no meaning in a stream server"
                        ));
                    }
                    let delay = if *nodelay {
                        u32::MAX
                    } else {
                        delay.unwrap_or(0)
                    };
                    let rule = LimitRule::Rate {
                        burst: *burst,
                        delay,
                    };
                    (zone, rule, self.req_status)
                }
                Use::Conn { zone, max } => (zone, LimitRule::Conn { max: *max }, self.conn_status),
            };
            let rate = matches!(rule, LimitRule::Rate { .. });
            out.push(ClientLimit {
                zone: check_zone(zones, name, rate)?,
                rule,
                status: status.unwrap_or(DEFAULT_LIMIT_STATUS),
            });
        }
        Ok(out)
    }
}

/// Limits as a TOML array: `[{ zone = "z", burst = 5 }, ...]`.
pub fn render_limits(limits: &[ClientLimit]) -> String {
    let items: Vec<String> = limits
        .iter()
        .map(|l| {
            let mut s = format!("{{ zone = {:?}", l.zone.name);
            match l.rule {
                LimitRule::Rate { burst, delay } => {
                    if burst > 0 {
                        let _ = write!(s, ", burst = {burst}");
                    }
                    match delay {
                        u32::MAX => s.push_str(", nodelay = true"),
                        0 => {}
                        d => {
                            let _ = write!(s, ", delay = {d}");
                        }
                    }
                }
                LimitRule::Conn { max } => {
                    let _ = write!(s, ", conn = {max}");
                }
            }
            if l.status != DEFAULT_LIMIT_STATUS {
                let _ = write!(s, ", status = {}", l.status);
            }
            s + " }"
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// The zone `name`, which must be in `zones` and count requests (`rate`) or connections.
fn check_zone(zones: &BTreeMap<String, Zone>, name: &str, rate: bool) -> Result<LimitZone, String> {
    let what = if rate {
        "limit_req_zone"
    } else {
        "limit_conn_zone"
    };
    let unknown = || format!("unknown {what} \"{name}\"");
    let z = zones
        .get(name)
        .filter(|z| z.rate.is_some() == rate)
        .ok_or_else(unknown)?;
    let kind = match &z.rate {
        Some(r) => ZoneKind::Rate {
            milli_per_sec: parse_rate(r)?,
        },
        None => ZoneKind::Conn,
    };
    Ok(LimitZone {
        name: name.to_string(),
        kind,
        entries: zone_entries(kind, parse_size(&z.size)?),
    })
}

/// `limit_req_zone KEY zone=NAME:SIZE rate=RATE` or `limit_conn_zone KEY zone=NAME:SIZE`:
/// the zone's name and definition.
pub fn zone(d: &Directive) -> Result<(String, Zone), String> {
    let at = |m: String| format!("{}: \"{}\" {m}", d.at(), d.name);
    let rate_zone = d.name == "limit_req_zone";
    let key = d.args.first().ok_or_else(|| at("has no key".into()))?;
    if key != "$binary_remote_addr" && key != "$remote_addr" {
        return Err(at(format!(
            "uses the key {key:?}; tideway limits by client address only ($binary_remote_addr or $remote_addr)"
        )));
    }
    let (mut name, mut size, mut rate) = (None, None, None);
    for a in &d.args[1..] {
        if let Some(z) = a.strip_prefix("zone=") {
            let (n, s) = z.split_once(':').ok_or_else(|| {
                at(format!(
                    "has an invalid zone {a:?} (expected zone=NAME:SIZE)"
                ))
            })?;
            let valid = !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid {
                return Err(at(format!(
                    "names zone {n:?}; tideway takes letters, digits, '-', '_' and '.'"
                )));
            }
            crate::config::limit::parse_size(s).map_err(at)?;
            (name, size) = (Some(n.to_string()), Some(s.to_string()));
        } else if let Some(r) = a.strip_prefix("rate=").filter(|_| rate_zone) {
            // nginx reads a bare number as requests a second.
            let r = if r.bytes().all(|b| b.is_ascii_digit()) {
                format!("{r}r/s")
            } else {
                r.to_string()
            };
            crate::config::limit::parse_rate(&r).map_err(at)?;
            rate = Some(r);
        } else {
            return Err(at(format!("has an invalid parameter {a:?}")));
        }
    }
    let (Some(name), Some(size)) = (name, size) else {
        return Err(at("must have a zone=NAME:SIZE parameter".into()));
    };
    let rate = match (rate_zone, rate) {
        (true, None) => Some("1r/s".to_string()), // nginx's default rate
        (_, r) => r,
    };
    Ok((name, Zone { rate, size }))
}

fn number(v: &str, what: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .ok()
        .filter(|n| *n > 0 || what == "delay")
        .ok_or_else(|| format!("has an invalid {what} {v:?}"))
}

fn req(d: &Directive) -> Result<Use, String> {
    let (mut zone, mut burst, mut delay, mut nodelay) = (None, 0, None, false);
    for a in &d.args {
        if let Some(z) = a.strip_prefix("zone=") {
            zone = Some(z.to_string());
        } else if let Some(b) = a.strip_prefix("burst=") {
            burst = number(b, "burst")?;
        } else if let Some(v) = a.strip_prefix("delay=") {
            delay = Some(number(v, "delay")?);
        } else if a == "nodelay" {
            nodelay = true;
        } else {
            return Err(format!("has an invalid parameter {a:?}"));
        }
    }
    let zone = zone.ok_or("must have a zone= parameter")?;
    Ok(Use::Req {
        zone,
        burst,
        delay,
        nodelay,
    })
}

fn conn(d: &Directive) -> Result<Use, String> {
    match d.args.as_slice() {
        [zone, n] => Ok(Use::Conn {
            zone: zone.clone(),
            max: number(n, "number of connections")?,
        }),
        _ => Err("expects a zone and a number".into()),
    }
}

fn status(d: &Directive) -> Result<u16, String> {
    d.args
        .first()
        .filter(|_| d.args.len() == 1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (400..=599).contains(s))
        .ok_or_else(|| "expects a status between 400 and 599".into())
}

/// Give every route in `locations` without limits of its own the limits `own` (a server's,
/// on a listen whose `client_limits` are another server's).
pub fn carry(locations: &mut [crate::config::LocationConfig], own: &[crate::config::ClientLimit]) {
    for l in locations {
        l.settings.client_limits.get_or_insert_with(|| own.to_vec());
        carry(&mut l.nested, own);
    }
}

/// The `[limit_zone.NAME]` tables.
pub fn render_zones(zones: &BTreeMap<String, Zone>) -> String {
    let mut out = String::new();
    for (name, z) in zones {
        let _ = write!(out, "\n[limit_zone.{name}]\n");
        match &z.rate {
            Some(r) => {
                let _ = write!(out, "kind = \"rate\"\nrate = {r:?}\n");
            }
            None => out.push_str("kind = \"conn\"\n"),
        }
        let _ = writeln!(out, "key = \"ip\"\nsize = {:?}", z.size);
    }
    out
}
