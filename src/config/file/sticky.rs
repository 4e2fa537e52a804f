//! An upstream's `sticky = { cookie = "NAME", expires = "1h", domain = "...", path = "/",
//! httponly = true, secure = true, samesite = "lax" }`
//! (NGINX Plus's `sticky cookie`). Stickiness is a balancing method of its own, as in nginx:
//! it is refused with `balance = "hash"`, whose key already decides the backend, and with
//! `rebalance`, which would move sessions that the cookie brings straight back.

use super::Ctx;
use crate::config::{Balance, ConfigError, StickyCookie, UpstreamPolicy};
use serde::Deserialize;
use toml::Spanned;

/// `sticky = { ... }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StickySection {
    cookie: String,
    expires: Option<String>,
    domain: Option<String>,
    path: Option<String>,
    #[serde(default)]
    httponly: bool,
    #[serde(default)]
    secure: bool,
    samesite: Option<String>,
}

/// Read `sticky` into `policy` (after `balance` and `rebalance`).
pub(super) fn sticky(
    cx: &Ctx<'_>,
    section: &Option<Spanned<StickySection>>,
    policy: &mut UpstreamPolicy,
) -> Result<(), ConfigError> {
    let Some(s) = section else {
        return Ok(());
    };
    let (span, st) = (s.span(), s.get_ref());
    if policy.balance == Balance::Hash {
        return Err(cx.err(
            span,
            "sticky cannot be combined with balance = \"hash\": each decides the backend (nginx: sticky is a balancing method of its own); use round_robin, least_conn or p2c",
        ));
    }
    if policy.rebalance.is_some() {
        return Err(cx.err(
            span,
            "sticky cannot be combined with rebalance: a closed session's cookie would bring it back to the same backend",
        ));
    }
    let cookie = StickyCookie::new(
        &st.cookie,
        st.expires.as_deref(),
        st.domain.as_deref(),
        st.path.as_deref(),
    )
    .and_then(|c| match &st.samesite {
        Some(v) => c.with_samesite(v),
        None => Ok(c),
    })
    .map_err(|m| cx.err(span, m))?;
    policy.sticky = Some(StickyCookie {
        httponly: st.httponly,
        secure: st.secure,
        ..cookie
    });
    Ok(())
}
