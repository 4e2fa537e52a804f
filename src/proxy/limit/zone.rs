//! The process's named zones. Listeners that name the same zone get the same state, including
//! listeners a reload adds; a zone whose definition a reload keeps keeps its state (nginx keeps
//! a zone's shared memory across reloads too). A changed definition starts a new zone under the
//! name; listeners still serving the old one keep it until they go. A zone no listener holds is
//! freed.

use super::conn::ConnZone;
use super::rate::RateZone;
use crate::config::{LimitZone, ZoneKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// A zone's state, of either kind.
#[derive(Clone)]
pub enum Zone {
    Conn(Arc<ConnZone>),
    Rate(Arc<RateZone>),
}

enum Held {
    Conn(Weak<ConnZone>),
    Rate(Weak<RateZone>),
}

impl Held {
    fn upgrade(&self) -> Option<Zone> {
        match self {
            Held::Conn(w) => w.upgrade().map(Zone::Conn),
            Held::Rate(w) => w.upgrade().map(Zone::Rate),
        }
    }
}

type Registry = Mutex<HashMap<String, (LimitZone, Held)>>;

fn registry() -> &'static Registry {
    static ZONES: OnceLock<Registry> = OnceLock::new();
    ZONES.get_or_init(Registry::default)
}

/// The zone `spec` defines: the one already running under its name if defined the same way,
/// else a new one.
pub fn zone(spec: &LimitZone) -> Zone {
    let mut zones = registry().lock().unwrap_or_else(|e| e.into_inner());
    zones.retain(|_, (_, held)| held.upgrade().is_some());
    if let Some((running, held)) = zones.get(&spec.name) {
        if running == spec {
            if let Some(z) = held.upgrade() {
                return z;
            }
        }
    }
    let (zone, held) = match spec.kind {
        ZoneKind::Conn => {
            let z = Arc::new(ConnZone::new(&spec.name, spec.entries));
            let w = Arc::downgrade(&z);
            (Zone::Conn(z), Held::Conn(w))
        }
        ZoneKind::Rate { milli_per_sec } => {
            let z = Arc::new(RateZone::new(&spec.name, milli_per_sec, spec.entries));
            let w = Arc::downgrade(&z);
            (Zone::Rate(z), Held::Rate(w))
        }
    };
    zones.insert(spec.name.clone(), (spec.clone(), held));
    zone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, entries: usize) -> LimitZone {
        LimitZone {
            name: name.into(),
            kind: ZoneKind::Conn,
            entries,
        }
    }

    #[test]
    fn the_same_definition_shares_state_and_a_new_one_starts_afresh() {
        let (Zone::Conn(a), Zone::Conn(b)) =
            (zone(&spec("z-share", 10)), zone(&spec("z-share", 10)))
        else {
            panic!("conn zones");
        };
        assert!(Arc::ptr_eq(&a, &b));
        let Zone::Conn(c) = zone(&spec("z-share", 20)) else {
            panic!("conn zone");
        };
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
