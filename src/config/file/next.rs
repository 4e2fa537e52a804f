//! The upstream keys of nginx's upstream semantics: `next_upstream`, `next_upstream_tries`,
//! `next_upstream_timeout`, `hash_consistent`, and a backend's `backup`.
//!
//! `retries` (tideway's older key) and `next_upstream_tries` say the same thing; only one may
//! be given. `next_upstream_tries = 0` is nginx's "no limit": every backend may be tried once.

use super::{Ctx, UpstreamSection};
use crate::config::{Balance, ConfigError, NextUpstream, UpstreamPolicy};
use toml::Spanned;

/// Read the retry and hash-mode keys of `up` into `policy`.
pub(super) fn retries(
    cx: &Ctx<'_>,
    up: &UpstreamSection,
    policy: &mut UpstreamPolicy,
) -> Result<(), ConfigError> {
    if let Some(list) = &up.next_upstream {
        policy.next_upstream = NextUpstream::parse(list.get_ref().iter().map(String::as_str))
            .map_err(|m| cx.err(list.span(), m))?;
    }
    if let Some(t) = &up.next_upstream_tries {
        if up.retries.is_some() {
            return Err(cx.err(
                t.span(),
                "next_upstream_tries and retries say the same thing; give one (retries = tries - 1)",
            ));
        }
        policy.retries = t.get_ref().checked_sub(1).unwrap_or(u32::MAX);
    }
    policy.next_upstream_timeout = up
        .next_upstream_timeout
        .map(|d| d.0)
        .filter(|d| !d.is_zero());
    if let Some(c) = up.hash_consistent {
        if policy.balance != Balance::Hash {
            let span = up.balance.as_ref().map_or(0..0, |b| b.span());
            return Err(cx.err(span, "hash_consistent needs balance = \"hash\""));
        }
        policy.hash_consistent = c;
    }
    Ok(())
}

/// A backend's `backup` flag; refused under `hash`, as nginx refuses `backup` with `hash` and
/// `ip_hash` (a key's backend must not depend on whether others are up).
pub(super) fn backup(
    cx: &Ctx<'_>,
    policy: &UpstreamPolicy,
    flag: &Option<Spanned<bool>>,
) -> Result<bool, ConfigError> {
    match flag {
        Some(b) if *b.get_ref() && policy.balance == Balance::Hash => Err(cx.err(
            b.span(),
            "backup is not allowed with balance = \"hash\" (nginx: invalid parameter \"backup\")",
        )),
        Some(b) => Ok(*b.get_ref()),
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, NextUpstream};
    use std::path::Path;
    use std::time::Duration;

    fn load(upstream: &str) -> Result<crate::config::Config, String> {
        let text = format!("[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"u\"\n\n[upstream.u]\n{upstream}\n");
        parse(&text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn retry_keys_and_backup_load_as_nginx_means_them() {
        let c = load("next_upstream = [\"error\", \"http_502\", \"non_idempotent\"]\nnext_upstream_tries = 0\nnext_upstream_timeout = \"5s\"\nbackends = [{ addr = \"127.0.0.1:2\", backup = true, max_fails = 3, fail_timeout = \"30s\" }, { addr = \"127.0.0.1:3\" }]").unwrap();
        let u = &c.upstreams[0];
        let nu = u.policy.next_upstream;
        assert!(nu.has(NextUpstream::ERROR) && nu.on_status(502) && !nu.on_status(503));
        assert!(nu.has(NextUpstream::NON_IDEMPOTENT) && !nu.has(NextUpstream::TIMEOUT));
        assert_eq!(nu.names(), ["error", "http_502", "non_idempotent"]);
        assert_eq!(u.policy.retries, u32::MAX, "0 tries: no limit");
        assert_eq!(u.policy.next_upstream_timeout, Some(Duration::from_secs(5)));
        let b = &u.backends[0];
        assert!(b.backup && !u.backends[1].backup);
        assert_eq!(
            (b.max_fails, b.fail_timeout),
            (Some(3), Some(Duration::from_secs(30)))
        );
        let c = load("next_upstream_tries = 3\nbackends = []").unwrap();
        assert_eq!(c.upstreams[0].policy.retries, 2);
        let c = load("next_upstream = [\"off\"]\nbackends = []").unwrap();
        assert_eq!(c.upstreams[0].policy.next_upstream, NextUpstream::OFF);
        // Without the keys: tideway's default, which keeps `fail_on_5xx` configs as they were.
        let c = load("fail_on_5xx = true\nbackends = []").unwrap();
        let p = &c.upstreams[0].policy;
        assert!(crate::config::status_fails(p, 500) && !crate::config::status_fails(p, 404));
        assert!(
            p.next_upstream.has(NextUpstream::CONNECT_TIMEOUT)
                && !p.next_upstream.has(NextUpstream::TIMEOUT)
        );
    }

    #[test]
    fn refused_with_the_line_and_why() {
        let cases = [
            (
                "balance = \"hash\"\nbackends = [{ addr = \"127.0.0.1:2\", backup = true }]",
                "t.toml:7",
                "backup is not allowed",
            ),
            (
                "next_upstream = [\"error\", \"http_418\"]",
                "t.toml:6",
                "unknown next_upstream condition \"http_418\"",
            ),
            (
                "next_upstream = [\"off\", \"error\"]",
                "t.toml:6",
                "cannot be combined",
            ),
            (
                "retries = 1\nnext_upstream_tries = 2",
                "t.toml:7",
                "say the same thing",
            ),
            (
                "hash_consistent = false",
                "t.toml",
                "needs balance = \"hash\"",
            ),
            (
                "balance = \"hash\"\nhash_key = \"$uri\"",
                "t.toml:7",
                "$uri is not supported",
            ),
        ];
        for (up, at, why) in cases {
            let e = load(up).unwrap_err();
            assert!(e.contains(at) && e.contains(why), "{up}: {e}");
        }
    }
}
