//! A `limit_conn` zone: how many connections each client address has in progress, as nginx's
//! `ngx_http_limit_conn_module` counts them: on HTTP listeners a request from its complete head
//! to its end, or a WebSocket until its tunnel closes; on TCP listeners a socket. A count is
//! taken with [`ConnZone::acquire`] and given back when its [`ConnSlot`] is dropped.
//!
//! Bounded: an address has an entry only while it holds a connection, and the zone holds at
//! most `entries` addresses. Every entry is in use, so nothing can be evicted: a new address
//! finding the zone full is refused, as nginx refuses when its zone has no room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was not counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// The address already holds its limit.
    Limit,
    /// The zone holds as many addresses as it can.
    Full,
}

/// A named connection zone, shared by every listener that names it.
pub struct ConnZone {
    pub name: Arc<str>,
    entries: usize,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

/// One counted connection; dropping it gives the count back.
pub struct ConnSlot {
    zone: Arc<ConnZone>,
    key: IpAddr,
}

impl ConnZone {
    pub fn new(name: &str, entries: usize) -> Self {
        ConnZone {
            name: name.into(),
            entries: entries.max(1),
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one more connection of `key`, unless it holds `max` already or the zone is full.
    pub fn acquire(self: &Arc<Self>, key: IpAddr, max: u32) -> Result<ConnSlot, Over> {
        let mut counts = self.counts();
        let full = counts.len() >= self.entries;
        match counts.get_mut(&key) {
            Some(n) if *n >= max => return Err(Over::Limit),
            Some(n) => *n += 1,
            None if full => return Err(Over::Full),
            None => {
                counts.insert(key, 1);
            }
        }
        Ok(ConnSlot {
            zone: self.clone(),
            key,
        })
    }

    /// Connections `key` holds now.
    pub fn held(&self, key: IpAddr) -> u32 {
        self.counts().get(&key).copied().unwrap_or(0)
    }

    /// Addresses holding a connection now.
    pub fn len(&self) -> usize {
        self.counts().len()
    }

    /// True when no address holds a connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut counts = self.zone.counts();
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn counts_up_to_the_limit_and_back_down_on_drop() {
        let z = Arc::new(ConnZone::new("addr", 100));
        let a = z.acquire(ip(1), 2).unwrap();
        let b = z.acquire(ip(1), 2).unwrap();
        assert_eq!(z.acquire(ip(1), 2).err(), Some(Over::Limit));
        let other = z.acquire(ip(2), 2).unwrap();
        drop(a);
        let c = z.acquire(ip(1), 2).unwrap();
        drop((b, c, other));
        assert!(z.is_empty());
    }

    #[test]
    fn a_flood_of_addresses_stays_within_the_zone() {
        let z = Arc::new(ConnZone::new("addr", 1000));
        let mut held = Vec::new();
        let mut refused = 0;
        for n in 0..100_000 {
            match z.acquire(ip(n), 1) {
                Ok(s) => held.push(s),
                Err(e) => {
                    assert_eq!(e, Over::Full);
                    refused += 1;
                }
            }
        }
        assert_eq!((held.len(), refused, z.len()), (1000, 99_000, 1000));
        // An address already in holds its own count.
        assert_eq!(z.acquire(ip(0), 1).err(), Some(Over::Limit));
        drop(held);
        assert!(z.is_empty());
    }
}
