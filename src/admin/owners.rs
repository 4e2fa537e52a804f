//! Who made a registration. Each new registration gets a secret, returned once in the
//! registration's answer; tideway keeps only its SHA-256 (in etcd's value with etcd
//! configured, so every instance can check it; in memory otherwise). A register-token holder
//! must send the secret in `X-Registration-Secret` to heartbeat, re-register, drain or delete
//! a registration: it manages only its own. The admin token needs no secret.

use super::ApiError;
use crate::store::Store;
use axum::http::{HeaderMap, StatusCode};
use rand::RngCore;
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// The header carrying a registration's secret.
pub const SECRET_HEADER: &str = "x-registration-secret";

/// A fresh secret: 128 random bits, hex.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// What tideway keeps of a secret.
pub fn fingerprint(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Registration fingerprints kept in memory (without etcd), by (upstream, id).
#[derive(Default)]
pub struct LocalOwners(Mutex<HashMap<(String, String), String>>);

impl LocalOwners {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, upstream: &str, id: &str, fingerprint: String) {
        self.lock()
            .insert((upstream.to_string(), id.to_string()), fingerprint);
    }

    pub fn get(&self, upstream: &str, id: &str) -> Option<String> {
        self.lock()
            .get(&(upstream.to_string(), id.to_string()))
            .cloned()
    }
}

/// The fingerprint of a registration's owner, from etcd or memory.
pub async fn owner_of(
    etcd: Option<&Store>,
    local: &LocalOwners,
    upstream: &str,
    id: &str,
) -> Result<Option<String>, ApiError> {
    match etcd {
        Some(w) => Ok(w.owner(upstream, id).await?),
        None => Ok(local.get(upstream, id)),
    }
}

/// Does the request carry the secret whose fingerprint is `owner`?
pub fn proves(headers: &HeaderMap, owner: Option<&str>) -> bool {
    let Some(owner) = owner else { return false };
    let Some(secret) = headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    fingerprint(secret)
        .as_bytes()
        .ct_eq(owner.as_bytes())
        .into()
}

/// The refusal for a register-token request without the registration's secret.
pub fn not_yours(upstream: &str, id: &str) -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        format!(
            "registration {id:?} in upstream {upstream:?} was not made with this secret; \
             send the secret its registration returned in X-Registration-Secret"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_proves_ownership() {
        let secret = new_secret();
        assert_eq!(secret.len(), 32);
        assert_ne!(secret, new_secret());
        let owner = fingerprint(&secret);
        let mut h = HeaderMap::new();
        assert!(!proves(&h, Some(&owner)));
        h.insert(SECRET_HEADER, secret.parse().unwrap());
        assert!(proves(&h, Some(&owner)));
        assert!(!proves(&h, None), "no owner recorded: nobody proves it");
        h.insert(SECRET_HEADER, new_secret().parse().unwrap());
        assert!(!proves(&h, Some(&owner)));
    }
}
