//! Operator toggles (state, weight) persisted in `data_dir/toggles.json`, so a restart keeps
//! what operators set. A state set with the admin token is an operator's decision: it stays
//! with the id when the backend leaves and registers again, until an operator enables it or
//! deletes it, and the register token may not bring its address back under another id. Changed by the controller only; the file is written outside its apply
//! step ([`Toggles::take_unsaved`] hands the bytes to the run loop, whose [`super::saved`] writer
//! writes them).

use super::backend::State;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// File name inside `data_dir`.
pub const TOGGLES_FILE: &str = "toggles.json";

/// One backend's toggles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Toggle {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// `state` is an operator's decision (admin token): it outlives the registration.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub operator: bool,
    /// The backend's address when the operator decided: the register token may not register
    /// it again under another id while the decision stands ([`Toggles::decided_at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
}

impl Toggle {
    /// The state an operator decided, if one did.
    pub fn decided(&self) -> Option<State> {
        self.state.filter(|_| self.operator)
    }
}

/// All toggles, by upstream then backend id.
#[derive(Debug, Default)]
pub struct Toggles {
    path: Option<PathBuf>,
    map: BTreeMap<String, BTreeMap<String, Toggle>>,
    /// Changed since the last [`Toggles::take_unsaved`].
    unsaved: bool,
}

impl Toggles {
    /// Toggles kept in memory only (tests).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Load from `data_dir` (a missing or unreadable file starts empty, with a warning).
    pub fn load(data_dir: &Path) -> Self {
        let path = data_dir.join(TOGGLES_FILE);
        let map = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable toggles file");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Toggles {
            path: Some(path),
            map,
            unsaved: false,
        }
    }
}

/// One spelling per address: an IPv4-mapped IPv6 address (`[::ffff:10.0.0.5]:80`) is the
/// IPv4 address it maps, so it cannot stand for another backend than the one it reaches.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

impl Toggles {
    /// The toggles of one backend.
    pub fn get(&self, upstream: &str, id: &str) -> Option<&Toggle> {
        self.map.get(upstream)?.get(id)
    }

    /// Change one backend's toggles.
    pub fn update(&mut self, upstream: &str, id: &str, f: impl FnOnce(&mut Toggle)) {
        let t = self
            .map
            .entry(upstream.to_string())
            .or_default()
            .entry(id.to_string())
            .or_default();
        f(t);
        self.unsaved = true;
    }

    /// Forget a backend that left, or one that registers anew: its toggles go, except an
    /// operator's state decision, which stays with the id (see [`Toggle::operator`]).
    pub fn forget(&mut self, upstream: &str, id: &str) {
        let Some(u) = self.map.get_mut(upstream) else {
            return;
        };
        match u.get_mut(id) {
            Some(t) if t.operator => self.unsaved |= t.weight.take().is_some(),
            Some(_) => {
                u.remove(id);
                self.unsaved = true;
            }
            None => {}
        }
    }

    /// The operator's state decision for an id, if one stuck.
    pub fn decided(&self, upstream: &str, id: &str) -> Option<State> {
        self.get(upstream, id).and_then(Toggle::decided)
    }

    /// An id other than `except` (and its decided state) whose standing operator decision
    /// covers `addr` in `upstream`, if one does. Looks at that upstream's toggles only.
    pub fn decided_at(
        &self,
        upstream: &str,
        addr: SocketAddr,
        except: &str,
    ) -> Option<(&str, State)> {
        let addr = canonical(addr);
        self.map.get(upstream)?.iter().find_map(|(id, t)| {
            let state = t
                .decided()
                .filter(|_| t.addr.map(canonical) == Some(addr) && id != except)?;
            Some((id.as_str(), state))
        })
    }

    /// The file and its new contents, if anything changed since the last call.
    pub fn take_unsaved(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        if !std::mem::take(&mut self.unsaved) {
            return None;
        }
        let path = self.path.clone()?;
        match serde_json::to_vec_pretty(&self.map) {
            Ok(json) => Some((path, json)),
            Err(e) => {
                tracing::error!(error = %e, "could not serialize toggles");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decided_address_is_held_under_any_spelling() {
        let mut t = Toggles::in_memory();
        t.update("u", "a", |t| {
            t.state = Some(State::Disabled);
            t.operator = true;
            t.addr = Some("127.0.0.3:8081".parse().unwrap());
        });
        for other in ["127.0.0.3:8081", "[::ffff:127.0.0.3]:8081"] {
            let addr: SocketAddr = other.parse().unwrap();
            assert_eq!(
                t.decided_at("u", addr, "b"),
                Some(("a", State::Disabled)),
                "{other}"
            );
        }
        assert_eq!(
            t.decided_at("u", "127.0.0.3:8082".parse().unwrap(), "b"),
            None
        );
        assert_eq!(
            t.decided_at("u", "127.0.0.3:8081".parse().unwrap(), "a"),
            None
        );
    }
}
