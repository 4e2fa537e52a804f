//! Who made a registration. Each new registration gets a secret, returned once in the
//! registration's answer; tideway keeps only its SHA-256 (in etcd's value with etcd
//! configured, so every instance can check it; in memory otherwise). A register-token holder
//! must send the secret (the admin API reads it from `X-Registration-Secret`) to heartbeat,
//! re-register, drain or delete a registration: it manages only its own. The admin token
//! needs no secret.

use rand::RngCore;
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

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

/// Who made a registration, as a ledger read it: the owner's fingerprint, and which
/// registration of the id it is (etcd's create revision of the key; 0 without etcd), so a
/// write can insist on the very registration whose owner was proven.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub fingerprint: Option<String>,
    pub created: i64,
}

/// Does `secret` match the fingerprint `owner`? Never without both (a registration made
/// without a secret is the operator's to manage).
pub fn proves(secret: Option<&str>, owner: Option<&str>) -> bool {
    let (Some(secret), Some(owner)) = (secret, owner) else {
        return false;
    };
    fingerprint(secret)
        .as_bytes()
        .ct_eq(owner.as_bytes())
        .into()
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
        assert!(!proves(None, Some(&owner)));
        assert!(proves(Some(&secret), Some(&owner)));
        assert!(
            !proves(Some(&secret), None),
            "no owner recorded: nobody proves it"
        );
        assert!(!proves(Some(&new_secret()), Some(&owner)));
        assert!(!proves(Some(""), Some(&owner)));
    }
}
