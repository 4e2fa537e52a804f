//! Where a listener learns its clients' real addresses: the inbound PROXY protocol
//! (`proxy_protocol = true`) and the trusted proxies whose forwarding header is believed
//! (`real_ip = { from, header, recursive }`, nginx's `set_real_ip_from`, `real_ip_header` and
//! `real_ip_recursive`). This module holds the validated settings and the one place a trusted
//! range is matched; `proxy::client` applies them to connections and requests.
//!
//! Imports: nothing else in tideway.

use ipnet::IpNet;
use std::net::IpAddr;

/// `[[listener]] real_ip.header`: where a trusted peer names the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealIpHeader {
    /// `X-Real-IP` (nginx's default).
    XRealIp,
    /// `X-Forwarded-For`: its last address, or with `recursive` the rightmost untrusted one.
    XForwardedFor,
    /// The PROXY protocol header's source address (needs `proxy_protocol = true`).
    ProxyProtocol,
}

impl RealIpHeader {
    /// The name as written in TOML and nginx (`X-Real-IP`, `X-Forwarded-For`,
    /// `proxy_protocol`); header names match case-insensitively.
    pub fn parse(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("x-real-ip") {
            Some(RealIpHeader::XRealIp)
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            Some(RealIpHeader::XForwardedFor)
        } else if name == "proxy_protocol" {
            Some(RealIpHeader::ProxyProtocol)
        } else {
            None
        }
    }
}

/// `[[listener]] real_ip = { from, header, recursive }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealIp {
    /// Peers whose `header` is believed.
    pub from: Vec<IpNet>,
    pub header: RealIpHeader,
    /// Walk the address list from the right past every trusted address (nginx's
    /// `real_ip_recursive on`); otherwise take the last address.
    pub recursive: bool,
}

impl RealIp {
    /// Is `ip` one of the trusted proxies? An IPv4-mapped IPv6 address matches as IPv4.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.from.iter().any(|net| net.contains(&ip))
    }
}

/// One `from` entry: a CIDR range or a single address (as `set_real_ip_from` takes them).
pub fn parse_range(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!(
                "invalid address range {s:?}; expected an address or CIDR such as \"10.0.0.0/8\""
            )
        })
}

/// Check `real_ip = { from, header, recursive }` on a listener (`tcp`: a tcp listener) with or
/// without `proxy_protocol`; the error says what was expected.
pub fn validate(
    from: &[String],
    header: Option<&str>,
    recursive: Option<bool>,
    tcp: bool,
    proxy_protocol: bool,
) -> Result<RealIp, String> {
    let header = match header {
        None => RealIpHeader::XRealIp,
        Some(h) => RealIpHeader::parse(h).ok_or_else(|| {
            format!("real_ip.header {h:?}: expected \"X-Real-IP\", \"X-Forwarded-For\" or \"proxy_protocol\"")
        })?,
    };
    let from = from
        .iter()
        .map(|s| parse_range(s).map_err(|e| format!("real_ip.from: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if header == RealIpHeader::ProxyProtocol && !proxy_protocol {
        return Err(
            "real_ip.header = \"proxy_protocol\" needs proxy_protocol = true on the listener"
                .into(),
        );
    }
    if header != RealIpHeader::ProxyProtocol && tcp {
        return Err(
            "a tcp listener has no headers: real_ip.header must be \"proxy_protocol\"".into(),
        );
    }
    Ok(RealIp {
        from,
        header,
        recursive: recursive.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_single_addresses_match() {
        let r = RealIp {
            from: vec![
                parse_range("10.0.0.0/8").unwrap(),
                parse_range("192.168.1.7").unwrap(),
                parse_range("2001:db8::/32").unwrap(),
            ],
            header: RealIpHeader::XForwardedFor,
            recursive: false,
        };
        for yes in ["10.1.2.3", "192.168.1.7", "::ffff:10.9.9.9", "2001:db8::1"] {
            assert!(r.trusts(yes.parse().unwrap()), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.1.8", "2001:db9::1", "::1"] {
            assert!(!r.trusts(no.parse().unwrap()), "{no}");
        }
        assert!(parse_range("10.0.0.0/33").is_err());
        assert!(parse_range("example.com").is_err());
        // Low bits of a range are ignored, as nginx does (it warns).
        assert_eq!(parse_range("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
    }

    #[test]
    fn header_names() {
        assert_eq!(
            RealIpHeader::parse("x-forwarded-for"),
            Some(RealIpHeader::XForwardedFor)
        );
        assert_eq!(
            RealIpHeader::parse("X-Real-IP"),
            Some(RealIpHeader::XRealIp)
        );
        assert_eq!(
            RealIpHeader::parse("proxy_protocol"),
            Some(RealIpHeader::ProxyProtocol)
        );
        assert_eq!(RealIpHeader::parse("CF-Connecting-IP"), None);
    }
}
