//! An upstream's `admission = { ... }` as written, read and checked into
//! [`AdmissionConfig`].

use super::Ctx;
use crate::config::admission::{
    AdmissionConfig, DEFAULT_ADMISSION_HANDSHAKE_TIMEOUT, DEFAULT_ADMISSION_QUEUE,
    DEFAULT_ADMISSION_QUEUE_TIMEOUT, DEFAULT_ADMISSION_RETRY_AFTER,
};
use crate::config::duration::Dur;
use crate::config::ConfigError;
use serde::Deserialize;
use toml::Spanned;

/// `admission = { ... }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdmissionSection {
    per_second: Option<u32>,
    burst: Option<u32>,
    max_pending: Option<u32>,
    queue: Option<u32>,
    queue_timeout: Option<Dur>,
    retry_after: Option<Dur>,
    #[serde(default)]
    all_requests: bool,
    handshake_timeout: Option<Dur>,
}

/// Read and check `admission`.
pub(super) fn admission(
    cx: &Ctx<'_>,
    section: &Spanned<AdmissionSection>,
) -> Result<AdmissionConfig, ConfigError> {
    let (span, a) = (section.span(), section.get_ref());
    if a.per_second.is_none() && a.max_pending.is_none() {
        return Err(cx.err(
            span,
            "admission needs per_second or max_pending (e.g. { per_second = 500 })",
        ));
    }
    if a.per_second == Some(0) || a.max_pending == Some(0) || a.burst == Some(0) {
        return Err(cx.err(
            span,
            "admission: per_second, burst and max_pending must be at least 1 (leave one out for no limit)",
        ));
    }
    if a.handshake_timeout.as_ref().is_some_and(|d| d.0.is_zero()) {
        return Err(cx.err(span, "admission: handshake_timeout must be more than 0"));
    }
    if a.burst.is_some() && a.per_second.is_none() {
        return Err(cx.err(span, "admission: burst needs per_second"));
    }
    let queue_timeout = a
        .queue_timeout
        .map_or(DEFAULT_ADMISSION_QUEUE_TIMEOUT, |d| d.0);
    Ok(AdmissionConfig {
        per_second: a.per_second,
        burst: a
            .burst
            .unwrap_or_else(|| a.per_second.map_or(1, AdmissionConfig::default_burst)),
        max_pending: a.max_pending,
        queue: a.queue.unwrap_or(DEFAULT_ADMISSION_QUEUE),
        queue_timeout,
        retry_after: a.retry_after.map_or(DEFAULT_ADMISSION_RETRY_AFTER, |d| d.0),
        all_requests: a.all_requests,
        handshake_timeout: a
            .handshake_timeout
            .map_or(DEFAULT_ADMISSION_HANDSHAKE_TIMEOUT, |d| d.0),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::admission::DEFAULT_ADMISSION_QUEUE;

    fn read(admission: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\nupstream = \"app\"\n\n[upstream.app]\nbackends = [{{ addr = \"127.0.0.1:9000\" }}]\n{admission}\n"
        );
        crate::config::parse(&text, std::path::Path::new("t.toml")).map_err(|e| e.to_string())
    }

    fn policy(c: &crate::config::Config) -> &crate::config::UpstreamPolicy {
        &c.upstreams[0].policy
    }

    #[test]
    fn admission_is_off_unless_configured_and_takes_its_defaults() {
        assert_eq!(policy(&read("").unwrap()).admission, None);
        let c = read("admission = { per_second = 500 }").unwrap();
        let a = policy(&c).admission.clone().unwrap();
        assert_eq!(
            (a.per_second, a.burst, a.max_pending),
            (Some(500), 50, None)
        );
        assert_eq!(a.queue, DEFAULT_ADMISSION_QUEUE);
        assert!(!a.all_requests);
        assert_eq!(
            a.handshake_timeout,
            crate::config::admission::DEFAULT_ADMISSION_HANDSHAKE_TIMEOUT
        );
        let c = read("admission = { max_pending = 8, queue = 0, queue_timeout = \"1s\", retry_after = \"5s\", all_requests = true }").unwrap();
        let a = policy(&c).admission.clone().unwrap();
        assert_eq!((a.per_second, a.max_pending, a.queue), (None, Some(8), 0));
        assert_eq!(a.retry_after, std::time::Duration::from_secs(5));
        assert!(a.all_requests);
        let c = read("admission = { max_pending = 8, handshake_timeout = \"3s\" }").unwrap();
        let a = policy(&c).admission.clone().unwrap();
        assert_eq!(a.handshake_timeout, std::time::Duration::from_secs(3));
    }

    #[test]
    fn a_bad_admission_says_where_and_what_was_expected() {
        for (bad, says) in [
            (
                "admission = { queue = 3 }",
                "needs per_second or max_pending",
            ),
            ("admission = { per_second = 0 }", "at least 1"),
            (
                "admission = { max_pending = 1, handshake_timeout = \"0s\" }",
                "handshake_timeout must be more than 0",
            ),
            (
                "admission = { max_pending = 1, burst = 4 }",
                "burst needs per_second",
            ),
            (
                "admission = { per_second = 1, rate = 4 }",
                "unknown field `rate`",
            ),
        ] {
            let e = read(bad).unwrap_err();
            assert!(e.contains("t.toml:7"), "{bad}: {e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
