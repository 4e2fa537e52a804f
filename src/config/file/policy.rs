//! An upstream's policy: its base settings ([`base`]), then the sections that stand on their
//! own (`health`, `scale`, `rebalance`, `registration`), each read and checked into its
//! internal type.

use super::{
    parse_status_range, Ctx, HealthSection, RebalanceSection, RegistrationSection, ScaleSection,
    UpstreamSection,
};
use crate::config::scope::RegistrationScope;
use crate::config::upstream_tls::{UpstreamTls, UpstreamTlsSettings};
use crate::config::{
    Balance, ConfigError, HealthConfig, HealthKind, Liveness, RebalanceConfig, ScaleConfig,
    UpstreamPolicy, DEFAULT_PONG_TIMEOUT, DEFAULT_REBALANCE_FACTOR, DEFAULT_REBALANCE_SETTLE,
    MAX_WEIGHT,
};
use std::time::Duration;
use toml::Spanned;

/// `health = { ... }`: active checks.
pub(super) fn health(
    cx: &Ctx<'_>,
    h: &Spanned<HealthSection>,
) -> Result<HealthConfig, ConfigError> {
    let hs = h.get_ref();
    let kind: HealthKind = cx.parse(&hs.kind)?;
    let rise = hs.rise.unwrap_or(2);
    let fall = hs.fall.unwrap_or(3);
    if rise == 0 || fall == 0 {
        return Err(cx.err(h.span(), "health rise and fall must be at least 1"));
    }
    let expect = match &hs.expect {
        None => (200, 399),
        Some(e) => parse_status_range(e.get_ref()).map_err(|m| cx.err(e.span(), m))?,
    };
    let path = hs.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        return Err(cx.err(
            h.span(),
            format!("health path {path:?} must start with '/'"),
        ));
    }
    Ok(HealthConfig {
        kind,
        path,
        expect,
        interval: hs.interval.map_or(Duration::from_secs(2), |d| d.0),
        timeout: hs.timeout.map_or(Duration::from_secs(1), |d| d.0),
        rise,
        fall,
    })
}

/// `scale = { ... }`: the autoscaling signal's settings.
pub(super) fn scale(cx: &Ctx<'_>, s: &Spanned<ScaleSection>) -> Result<ScaleConfig, ConfigError> {
    let ss = s.get_ref();
    let min = ss.min.unwrap_or(1);
    let max = ss.max.unwrap_or(u32::MAX);
    if ss.target_per_backend == 0 || min > max {
        return Err(cx.err(
            s.span(),
            "scale needs target_per_backend > 0 and min <= max",
        ));
    }
    Ok(ScaleConfig {
        target_per_backend: ss.target_per_backend,
        min,
        max,
    })
}

/// `rebalance = { ... }`: moving WebSockets after scale events.
pub(super) fn rebalance(
    cx: &Ctx<'_>,
    r: &Spanned<RebalanceSection>,
) -> Result<RebalanceConfig, ConfigError> {
    let rs = r.get_ref();
    let factor = rs.factor.unwrap_or(DEFAULT_REBALANCE_FACTOR);
    if rs.per_second == 0 || !(factor >= 1.0 && factor.is_finite()) {
        return Err(cx.err(
            r.span(),
            "rebalance needs per_second >= 1 and factor >= 1.0 (e.g. { per_second = 50 })",
        ));
    }
    Ok(RebalanceConfig {
        per_second: rs.per_second,
        factor,
        settle: rs.settle.map_or(DEFAULT_REBALANCE_SETTLE, |d| d.0),
    })
}

/// `registration = { ... }`: what self-registration may do in this upstream.
pub(super) fn registration(
    cx: &Ctx<'_>,
    r: &Spanned<RegistrationSection>,
) -> Result<RegistrationScope, ConfigError> {
    let rs = r.get_ref();
    let d = RegistrationScope::default();
    let allow = match &rs.allow {
        None => d.allow,
        Some(list) => list
            .iter()
            .map(|n| {
                n.parse::<ipnet::IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        cx.err(
                            r.span(),
                            format!("registration.allow: {n:?} is not an address or CIDR range (e.g. \"10.0.0.0/8\")"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let max_weight = rs.max_weight.unwrap_or(d.max_weight);
    if max_weight == 0 || max_weight > MAX_WEIGHT {
        return Err(cx.err(
            r.span(),
            format!("registration.max_weight must be between 1 and {MAX_WEIGHT}"),
        ));
    }
    Ok(RegistrationScope {
        allow,
        max_backends: rs.max_backends.unwrap_or(d.max_backends),
        max_weight,
    })
}

/// Balancing, timeouts, retries, passive health, slow start and PROXY protocol: the policy
/// the other sections add to.
pub(super) fn base(cx: &Ctx<'_>, up: &UpstreamSection) -> Result<UpstreamPolicy, ConfigError> {
    let mut policy = UpstreamPolicy::default();
    if let Some(b) = &up.balance {
        policy.balance = cx.parse(b)?;
    }
    if let Some(k) = &up.hash_key {
        policy.hash_key = cx.parse(k)?;
        if policy.balance != Balance::Hash {
            return Err(cx.err(k.span(), "hash_key needs balance = \"hash\""));
        }
    }
    if let Some(f) = &up.hash_balance_factor {
        let f2 = *f.get_ref();
        if f2 != 0 && f2 < 100 {
            return Err(cx.err(f.span(), "hash_balance_factor is a percentage of the average load and must be 0 (off) or at least 100"));
        }
        policy.hash_balance_factor = f2;
    }
    if let Some(d) = up.drain_timeout {
        policy.drain_timeout = d.0;
    }
    if let Some(d) = up.close_spread {
        policy.close_spread = Some(d.0);
    }
    if let Some(d) = up.idle_timeout {
        policy.idle_timeout = d.0;
    }
    if let Some(d) = up.connect_timeout {
        policy.connect_timeout = d.0;
    }
    if let Some(r) = up.retries {
        policy.retries = r;
    }
    super::next::retries(cx, up, &mut policy)?;
    if let Some(m) = up.max_fails {
        policy.passive.max_fails = m;
    }
    if let Some(d) = up.fail_timeout {
        policy.passive.fail_timeout = d.0;
    }
    if let Some(f) = up.fail_on_5xx {
        policy.passive.fail_on_5xx = f;
    }
    if let Some(p) = &up.max_ejection_percent {
        let pct = *p.get_ref();
        if pct > 100 {
            return Err(cx.err(
                p.span(),
                "max_ejection_percent is a share of the upstream's backends, 0 to 100",
            ));
        }
        policy.passive.max_ejection_percent = pct;
    }
    policy.slow_start = up.slow_start.map(|d| d.0).filter(|d| !d.is_zero());
    if let Some(pp) = &up.proxy_protocol {
        policy.proxy_protocol = Some(cx.parse(pp)?);
    }
    if let Some(t) = &up.tls {
        policy.tls = Some(tls(cx, t)?);
    }
    policy.liveness = liveness(cx, up)?;
    Ok(policy)
}

/// `ping_interval`, `pong_timeout`, `ping_backend`, `send_timeout`: finding dead peers of
/// tunnels ("0s" turns pings or the send timeout off).
fn liveness(cx: &Ctx<'_>, up: &UpstreamSection) -> Result<Liveness, ConfigError> {
    let mut l = Liveness {
        ping_interval: up.ping_interval.map(|d| d.0).filter(|d| !d.is_zero()),
        pong_timeout: cx.positive_dur(&up.pong_timeout, "pong_timeout", DEFAULT_PONG_TIMEOUT)?,
        ..Liveness::default()
    };
    if let Some(b) = &up.ping_backend {
        if *b.get_ref() && l.ping_interval.is_none() {
            return Err(cx.err(
                b.span(),
                "ping_backend needs ping_interval (e.g. ping_interval = \"30s\")",
            ));
        }
        l.ping_backend = *b.get_ref();
    }
    if let Some(d) = up.send_timeout {
        l.send_timeout = Some(d.0).filter(|d| !d.is_zero());
    }
    Ok(l)
}

/// `tls = { verify, ca, server_name, sni }`: TLS to the backends.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct UpstreamTlsSection {
    verify: Option<bool>,
    ca: Option<std::path::PathBuf>,
    server_name: Option<String>,
    sni: Option<bool>,
}

/// Default of `tls.verify` in TOML: check backends' certificates (nginx's own default is
/// off, which an nginx import keeps).
pub const DEFAULT_UPSTREAM_TLS_VERIFY: bool = true;

/// Default of `tls.sni` in TOML: send `server_name` by SNI when there is one.
pub const DEFAULT_UPSTREAM_TLS_SNI: bool = true;

fn tls(
    cx: &Ctx<'_>,
    t: &Spanned<UpstreamTlsSection>,
) -> Result<std::sync::Arc<UpstreamTls>, ConfigError> {
    let ts = t.get_ref();
    let settings = UpstreamTlsSettings {
        verify: ts.verify.unwrap_or(DEFAULT_UPSTREAM_TLS_VERIFY),
        ca: ts.ca.clone(),
        server_name: ts.server_name.clone(),
        sni: ts.sni.unwrap_or(DEFAULT_UPSTREAM_TLS_SNI),
    };
    if !settings.verify && ts.ca.is_some() {
        return Err(cx.err(t.span(), "tls.ca is used only with tls.verify = true"));
    }
    UpstreamTls::new(settings)
        .map(std::sync::Arc::new)
        .map_err(|m| cx.err(t.span(), m))
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Liveness, DEFAULT_PONG_TIMEOUT, DEFAULT_TUNNEL_SEND_TIMEOUT};
    use std::path::Path;
    use std::time::Duration;

    fn liveness(keys: &str) -> Result<Liveness, String> {
        let text = format!("[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"u\"\n\n[upstream.u]\n{keys}\nbackends = [{{ addr = \"127.0.0.1:2\" }}]\n");
        let c = parse(&text, Path::new("t.toml")).map_err(|e| e.to_string())?;
        Ok(c.upstreams[0].policy.liveness)
    }

    #[test]
    fn pings_are_off_and_sends_bounded_by_default_and_keys_set_them() {
        let l = liveness("").unwrap();
        assert_eq!(l.ping_interval, None);
        assert_eq!(l.pong_timeout, DEFAULT_PONG_TIMEOUT);
        assert_eq!(l.send_timeout, Some(DEFAULT_TUNNEL_SEND_TIMEOUT));
        let keys = "ping_interval = \"30s\"\npong_timeout = \"5s\"\nping_backend = true\nsend_timeout = \"0s\"";
        let l = liveness(keys).unwrap();
        assert_eq!(l.ping_interval, Some(Duration::from_secs(30)));
        assert_eq!(l.pong_timeout, Duration::from_secs(5));
        assert!(l.ping_backend);
        assert_eq!(l.send_timeout, None, "0s: never");
        assert_eq!(
            liveness("ping_interval = \"0s\"").unwrap().ping_interval,
            None
        );
    }

    #[test]
    fn bad_liveness_keys_are_refused_with_the_line() {
        for (keys, at, why) in [
            (
                "ping_backend = true",
                "t.toml:6",
                "ping_backend needs ping_interval",
            ),
            (
                "pong_timeout = \"0s\"",
                "t.toml:6",
                "pong_timeout must be more than 0",
            ),
            ("send_timeout = \"soon\"", "t.toml:6", "invalid duration"),
        ] {
            let e = liveness(keys).unwrap_err();
            assert!(e.contains(at) && e.contains(why), "{keys}: {e}");
        }
    }
}
