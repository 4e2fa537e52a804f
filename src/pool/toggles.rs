//! Operator toggles (state, weight) persisted in `data_dir/toggles.json`, so a restart keeps
//! what operators set. Written by the controller only, after each change.

use super::backend::State;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
}

/// All toggles, by upstream then backend id.
#[derive(Debug, Default)]
pub struct Toggles {
    path: Option<PathBuf>,
    map: BTreeMap<String, BTreeMap<String, Toggle>>,
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
        }
    }

    /// The toggles of one backend.
    pub fn get(&self, upstream: &str, id: &str) -> Option<&Toggle> {
        self.map.get(upstream)?.get(id)
    }

    /// Change one backend's toggles and save.
    pub fn update(&mut self, upstream: &str, id: &str, f: impl FnOnce(&mut Toggle)) {
        let t = self
            .map
            .entry(upstream.to_string())
            .or_default()
            .entry(id.to_string())
            .or_default();
        f(t);
        self.save();
    }

    /// Forget a backend that left for good, and save.
    pub fn forget(&mut self, upstream: &str, id: &str) {
        if let Some(u) = self.map.get_mut(upstream) {
            if u.remove(id).is_some() {
                self.save();
            }
        }
    }

    fn save(&self) {
        let Some(path) = &self.path else { return };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&self.map)?)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::error!(path = %path.display(), error = %e, "could not save toggles");
        }
    }
}
