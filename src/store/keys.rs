//! The etcd key schema, both ways (written and read here only), as DESIGN.md fixes it:
//! - `{prefix}/upstreams/{u}/backends/{id}` -> `{"addr":"10.0.0.5:2346","weight":1}` or
//!   `10.0.0.5:2346` (tideway's own registrations add `"owner"`: the SHA-256 of their secret)
//! - `{prefix}/upstreams/{u}/state/{id}` -> `{"state":"disabled"}` and/or `{"weight":3}`; a
//!   drain given its own close spread adds it: `{"state":"draining","close_spread_ms":0}`
//!   (records without it, as earlier releases wrote them, read as the upstream's spread)
//! - `{prefix}/instances/{instance}` -> one instance's connection counts

use crate::pool::State;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// Where the backends and toggles of every upstream live.
pub fn upstreams_root(prefix: &str) -> String {
    format!("{prefix}/upstreams/")
}

/// Where every instance's counts live.
pub fn instances_root(prefix: &str) -> String {
    format!("{prefix}/instances/")
}

/// Where the registrations of one upstream live.
pub fn backends_root(prefix: &str, upstream: &str) -> String {
    format!("{prefix}/upstreams/{upstream}/backends/")
}

pub fn backend_key(prefix: &str, upstream: &str, id: &str) -> String {
    format!("{prefix}/upstreams/{upstream}/backends/{id}")
}

pub fn state_key(prefix: &str, upstream: &str, id: &str) -> String {
    format!("{prefix}/upstreams/{upstream}/state/{id}")
}

/// A registration's value.
pub fn backend_value(addr: SocketAddr, weight: u32, owner: Option<&str>) -> String {
    let mut value = serde_json::json!({ "addr": addr.to_string(), "weight": weight });
    if let Some(owner) = owner {
        value["owner"] = owner.into();
    }
    value.to_string()
}

/// The owner fingerprint of a registration's value, if it has one.
pub fn owner(value: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    v.get("owner")?.as_str().map(str::to_string)
}

/// A toggle value: the current one (if any) with `state` and `weight` set. A state set
/// replaces the drain's close spread too: `spread` with `Draining`, none otherwise; but a
/// drain under way (draining before and after) set draining again without one keeps its own,
/// as the instances running it do. A drain without a spread of its own writes no spread
/// field: the record is then exactly what the release before wrote.
pub fn toggle_value(
    current: Option<&[u8]>,
    state: Option<State>,
    spread: Option<Duration>,
    weight: Option<u32>,
) -> String {
    let mut v = current
        .and_then(|c| serde_json::from_slice::<serde_json::Value>(c).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(st) = state {
        let under_way = st == State::Draining && v["state"] == "draining";
        v["state"] = serde_json::to_value(st).expect("serializable");
        let obj = v.as_object_mut().expect("an object");
        match spread.filter(|_| st == State::Draining) {
            Some(s) => obj.insert(SPREAD_FIELD.into(), (s.as_millis() as u64).into()),
            None if under_way => None,
            None => obj.remove(SPREAD_FIELD),
        };
    }
    if let Some(w) = weight {
        v["weight"] = w.into();
    }
    v.to_string()
}

/// What a key names.
#[derive(Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Backend { upstream: &'a str, id: &'a str },
    State { upstream: &'a str, id: &'a str },
}

/// Split a key under `{prefix}/upstreams/`.
pub fn parse_key<'a>(prefix: &str, key: &'a str) -> Option<Key<'a>> {
    let rest = key.strip_prefix(prefix)?.strip_prefix("/upstreams/")?;
    let mut parts = rest.splitn(3, '/');
    let (upstream, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
    // Ids that hash on the ring like another id (`NAME:`, `unix:NAME` ~ `NAME`) are refused,
    // as the admin API refuses them.
    if upstream.is_empty()
        || id.is_empty()
        || id.contains('/')
        || crate::config::hashes_like_another(id)
    {
        return None;
    }
    match kind {
        "backends" => Some(Key::Backend { upstream, id }),
        "state" => Some(Key::State { upstream, id }),
        _ => None,
    }
}

/// A backend value.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct BackendValue {
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendJson {
    addr: String,
    weight: Option<u32>,
    /// Fingerprint of the registration's secret (read by the admin API, not the pool).
    #[serde(rename = "owner")]
    _owner: Option<String>,
}

/// Parse `{"addr":..,"weight":..}` or a plain `ip:port`.
pub fn parse_backend(value: &[u8]) -> Result<BackendValue, String> {
    let text = std::str::from_utf8(value)
        .map_err(|_| "value is not UTF-8".to_string())?
        .trim();
    let (addr, weight) = if text.starts_with('{') {
        let j: BackendJson =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        (j.addr, j.weight.unwrap_or(crate::config::DEFAULT_WEIGHT))
    } else {
        (text.to_string(), crate::config::DEFAULT_WEIGHT)
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("invalid address {addr:?}; expected ip:port"))?;
    if !(1..=crate::config::MAX_WEIGHT).contains(&weight) {
        return Err(format!("weight {weight} out of range"));
    }
    Ok(BackendValue { addr, weight })
}

/// The toggle field of a drain's own close spread, in milliseconds.
const SPREAD_FIELD: &str = "close_spread_ms";

/// An admin toggle value.
#[derive(Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    pub state: Option<State>,
    pub weight: Option<u32>,
    /// With `state` draining: the drain's own close spread (absent: the upstream's).
    #[serde(default, rename = "close_spread_ms", with = "millis")]
    pub spread: Option<Duration>,
}

/// An optional duration as whole milliseconds.
mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Parse `{"state":"disabled"}` and/or `{"weight":3}`.
pub fn parse_toggle(value: &[u8]) -> Result<Toggle, String> {
    let t: Toggle = serde_json::from_slice(value).map_err(|e| format!("invalid toggle: {e}"))?;
    if t.state.is_none() && t.weight.is_none() {
        return Err("toggle sets neither state nor weight".into());
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert_eq!(
            parse_key("/tw", "/tw/upstreams/chat/backends/b1"),
            Some(Key::Backend {
                upstream: "chat",
                id: "b1"
            })
        );
        assert_eq!(
            parse_key("/tw", "/tw/upstreams/chat/state/b1"),
            Some(Key::State {
                upstream: "chat",
                id: "b1"
            })
        );
        assert_eq!(parse_key("/tw", "/tw/upstreams/chat/other/b1"), None);
        assert_eq!(parse_key("/tw", "/tw/upstreams/chat/backends/b1:"), None);
        assert_eq!(
            parse_key("/tw", "/tw/upstreams/chat/backends/unix:b1"),
            None
        );
        assert_eq!(parse_key("/tw", "/other/upstreams/chat/backends/b1"), None);
        let plain = parse_backend(b"10.0.0.5:2346").unwrap();
        assert_eq!((plain.addr.port(), plain.weight), (2346, 1));
        let json = parse_backend(br#"{"addr":"10.0.0.5:2346","weight":3}"#).unwrap();
        assert_eq!(json.weight, 3);
        assert!(parse_backend(b"garbage").is_err());
        assert!(parse_backend(br#"{"addr":"10.0.0.5:2346","weight":0}"#).is_err());
        assert_eq!(
            parse_toggle(br#"{"state":"disabled"}"#).unwrap().state,
            Some(State::Disabled)
        );
        // What tideway writes, it reads back.
        let addr: SocketAddr = "10.0.0.5:2346".parse().unwrap();
        let written = backend_value(addr, 4, Some("f00d"));
        assert_eq!(
            parse_backend(written.as_bytes()).unwrap(),
            BackendValue { addr, weight: 4 }
        );
        assert_eq!(owner(written.as_bytes()).as_deref(), Some("f00d"));
        let key = backend_key("/tw", "chat", "b1");
        assert_eq!(
            parse_key("/tw", &key),
            Some(Key::Backend {
                upstream: "chat",
                id: "b1"
            })
        );
        let t = toggle_value(Some(br#"{"weight":3}"#), Some(State::Draining), None, None);
        let t = parse_toggle(t.as_bytes()).unwrap();
        assert_eq!((t.state, t.weight), (Some(State::Draining), Some(3)));
        assert!(parse_toggle(b"{}").is_err());
    }

    #[test]
    fn a_drain_record_carries_its_spread_and_old_records_still_load() {
        let zero = Some(Duration::ZERO);
        let t = toggle_value(Some(br#"{"weight":3}"#), Some(State::Draining), zero, None);
        assert_eq!(
            parse_toggle(t.as_bytes()).unwrap(),
            Toggle {
                state: Some(State::Draining),
                weight: Some(3),
                spread: zero
            }
        );
        // A weight change keeps the drain's spread, and so does setting it draining again
        // without one (the drain under way keeps it); a new state replaces it.
        let w = toggle_value(Some(t.as_bytes()), None, None, Some(4));
        assert_eq!(parse_toggle(w.as_bytes()).unwrap().spread, zero);
        let again = toggle_value(Some(w.as_bytes()), Some(State::Draining), None, None);
        assert_eq!(parse_toggle(again.as_bytes()).unwrap().spread, zero);
        let active = toggle_value(Some(t.as_bytes()), Some(State::Active), zero, None);
        assert_eq!(active, r#"{"state":"active","weight":3}"#);
        // A drain without a spread of its own, first or again: no spread field, the record
        // the release before wrote (its parser refuses unknown fields).
        let plain = toggle_value(Some(br#"{"weight":3}"#), Some(State::Draining), None, None);
        let again = toggle_value(Some(plain.as_bytes()), Some(State::Draining), None, None);
        for t in [plain, again] {
            let t: serde_json::Value = serde_json::from_str(&t).unwrap();
            assert_eq!(t, serde_json::json!({"state": "draining", "weight": 3}));
        }
        // Written by the release before drains had their own spread.
        let old = parse_toggle(br#"{"state":"draining","weight":2}"#).unwrap();
        assert_eq!(
            (old.state, old.weight, old.spread),
            (Some(State::Draining), Some(2), None)
        );
        let spread = parse_toggle(br#"{"state":"draining","close_spread_ms":1500}"#).unwrap();
        assert_eq!(spread.spread, Some(Duration::from_millis(1500)));
        assert!(parse_toggle(br#"{"state":"draining","close_spread_ms":-1}"#).is_err());
    }
}
