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
