//! Durations as operators write them: "2s", "500ms", "1h", "1m30s".

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Longest duration a config may give (ten years): every timeout, TTL and expiry is added to
/// the clock somewhere, and a longer one would overflow it.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parse a human duration such as "2s" or "1h 30m", at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?} ({e}); expected something like \"2s\", \"500ms\" or \"1h\"")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration {s:?} is too long (at most 10 years, \"3650d\")"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_duration_past_ten_years_is_refused() {
        assert!(super::parse_duration("3650d").is_ok());
        let e = super::parse_duration("18446744073709551615s").unwrap_err();
        assert!(e.contains("too long"), "{e}");
    }
}

/// A duration read from TOML, written as a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}
