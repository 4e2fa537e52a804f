//! The live dashboard: `GET /` on the admin listener serves one self-contained HTML page
//! (inline CSS and JS, nothing loaded from elsewhere) that polls `GET /v1/upstreams` every 2 s
//! and toggles backends through the admin API.
//!
//! The page itself needs no token; its API calls carry the admin token, which the operator types
//! in or passes as the URL fragment (`/#token=...`). The page keeps the token in a JS variable
//! only (never in storage or cookies) and removes the fragment from the address bar.
//!
//! The content security policy allows exactly the page's one inline `<script>` and one inline
//! `<style>` (by their SHA-256 hashes, computed once from the embedded page), fetches to this
//! origin, and nothing else: injected markup could neither run script nor load anything.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;

/// The page, embedded at build time.
pub const PAGE: &str = include_str!("dashboard.html");

/// The `content-security-policy` of the page.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    HeaderValue::from_str(&content_security_policy(PAGE))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// `GET /`: the dashboard page, with headers that keep it from being cached, framed, sniffed
/// or leaking its URL (and so a `#token=` fragment would not leak either: fragments are never
/// sent, and `no-referrer` covers the rest).
pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::CONTENT_SECURITY_POLICY, CSP.clone()),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        PAGE,
    )
        .into_response()
}

/// The policy for `page`: its inline `<script>` and `<style>` blocks allowed by hash.
fn content_security_policy(page: &str) -> String {
    let hashes = |tag: &str| -> String {
        inline_blocks(page, tag)
            .iter()
            .map(|b| format!(" 'sha256-{}'", sha256_base64(b)))
            .collect()
    };
    format!(
        "default-src 'none'; script-src{}; style-src{}; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        or_none(hashes("script")),
        or_none(hashes("style")),
    )
}

fn or_none(sources: String) -> String {
    if sources.is_empty() {
        " 'none'".into()
    } else {
        sources
    }
}

/// The contents of every `<tag>...</tag>` block (written exactly so, without attributes).
fn inline_blocks<'a>(page: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else { break };
        out.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    out
}

fn sha256_base64(text: &str) -> String {
    base64(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// Standard base64 with padding (what CSP hash sources use).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(
            sha256_base64(""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn page_has_one_script_and_one_style_allowed_by_hash() {
        // Exactly one of each, written without attributes, so the policy covers all of the
        // page's code and styles (a second or an attributed block would be refused by the
        // browser).
        assert_eq!(inline_blocks(PAGE, "script").len(), 1);
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(inline_blocks(PAGE, "style").len(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        let csp = content_security_policy(PAGE);
        assert!(
            csp.starts_with("default-src 'none'; script-src 'sha256-"),
            "{csp}"
        );
        assert!(csp.contains("; style-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(HeaderValue::from_str(&csp).is_ok());
    }

    #[test]
    fn page_loads_nothing_from_elsewhere_and_never_uses_inner_html() {
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
        assert!(!PAGE.contains("//cdn") && !PAGE.contains("src="));
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!PAGE.contains(sink), "the page uses {sink}");
        }
        for store in [
            "localStorage",
            "sessionStorage",
            "document.cookie",
            "indexedDB",
        ] {
            assert!(!PAGE.contains(store), "the page uses {store}");
        }
    }
}
