//! Durations as operators write them: "2s", "500ms", "1h", "1m30s".

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Parse a human duration such as "2s" or "1h 30m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?} ({e}); expected something like \"2s\", \"500ms\" or \"1h\"")
    })
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
