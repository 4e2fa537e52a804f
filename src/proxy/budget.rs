//! The memory budget of chunked request bodies, which tideway reads whole before sending
//! them on with a length: one budget for the process, and shares no client can overdraw.
//!
//! - A client address holds at most [`CLIENT_SHARE_DIVISOR`]th of the budget: past it, its
//!   next body is refused while other clients still have room.
//! - When the budget is full, a newcomer whose address holds less than the heaviest holder
//!   takes the place of that holder's largest body, which is evicted (its reader answers 503
//!   and closes); a newcomer whose address holds as much or more is refused.
//!
//! So clients that trickle bodies to hold memory (1 MiB each, then a byte a minute) can hold
//! one share, not everyone's uploads. Invariant: `total` is the sum of every held body's size,
//! and a body is counted under exactly one address until it is dropped or evicted.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, OnceLock};
use tokio_util::sync::CancellationToken;

/// Bytes of chunked request bodies all connections may hold in memory at once.
pub const CHUNKED_BUDGET: u64 = 64 * 1024 * 1024;

/// A client address may hold at most this fraction (1/N) of the budget.
pub const CLIENT_SHARE_DIVISOR: u64 = 8;

/// Why a body may not grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this client holds its whole share of the chunked-body memory; try again")]
    ShareFull,
    #[error("too many chunked bodies in memory; try again")]
    Full,
    #[error("the chunked body was evicted for a client holding less memory; try again")]
    Evicted,
}

impl Refused {
    /// The `reason` label of `tideway_chunked_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refused::ShareFull => "share",
            Refused::Full => "full",
            Refused::Evicted => "evicted",
        }
    }
}

/// One budget and its holders.
#[derive(Debug)]
pub struct Budget {
    cap: u64,
    share: u64,
    inner: Mutex<Holdings>,
}

#[derive(Debug, Default)]
struct Holdings {
    total: u64,
    next: u64,
    by_client: HashMap<IpAddr, Holder>,
}

/// What one client address holds: its bodies by number.
#[derive(Debug, Default)]
struct Holder {
    total: u64,
    bodies: HashMap<u64, Body>,
}

/// One held body: its size, its eviction signal, and whether it is complete (a body read
/// whole is being sent to a backend and is no longer evicted; it goes when its exchange ends).
#[derive(Debug)]
struct Body {
    size: u64,
    evicted: CancellationToken,
    sealed: bool,
}

impl Budget {
    pub fn new(cap: u64, share_divisor: u64) -> Self {
        Budget {
            cap,
            share: cap / share_divisor.max(1),
            inner: Mutex::new(Holdings::default()),
        }
    }

    /// The process-wide budget.
    pub fn global() -> &'static Arc<Budget> {
        static GLOBAL: OnceLock<Arc<Budget>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(Budget::new(CHUNKED_BUDGET, CLIENT_SHARE_DIVISOR)))
    }

    /// A new body of `client` (None: no address, counted as one anonymous client), holding
    /// nothing yet.
    pub fn hold(self: &Arc<Self>, client: Option<IpAddr>) -> Hold {
        let client = holder_key(client);
        let mut h = self.inner.lock().expect("budget lock");
        let id = h.next;
        h.next += 1;
        let evicted = CancellationToken::new();
        h.by_client.entry(client).or_default().bodies.insert(
            id,
            Body {
                size: 0,
                evicted: evicted.clone(),
                sealed: false,
            },
        );
        Hold {
            budget: self.clone(),
            client,
            id,
            evicted,
        }
    }

    /// Bytes held now, over all clients.
    pub fn held(&self) -> u64 {
        self.inner.lock().expect("budget lock").total
    }

    /// Grow body `id` of `client` to `len` bytes, evicting others' bodies if it must and may.
    fn grow(&self, client: IpAddr, id: u64, len: u64) -> Result<(), Refused> {
        let mut h = self.inner.lock().expect("budget lock");
        let Some(holder) = h.by_client.get(&client) else {
            return Err(Refused::Evicted);
        };
        let Some(size) = holder.bodies.get(&id).map(|b| b.size) else {
            return Err(Refused::Evicted);
        };
        let more = len.saturating_sub(size);
        if holder.total + more > self.share {
            return Err(Refused::ShareFull);
        }
        let mine = holder.total;
        while h.total + more > self.cap {
            let heaviest = h
                .by_client
                .iter()
                .filter(|(ip, holder)| **ip != client && holder.bodies.values().any(|b| !b.sealed))
                .max_by_key(|(_, holder)| holder.total)
                .map(|(ip, holder)| (*ip, holder.total));
            match heaviest {
                Some((ip, held)) if held > mine => h.evict_largest(ip),
                _ => return Err(Refused::Full),
            }
        }
        h.total += more;
        let holder = h.by_client.get_mut(&client).expect("checked above");
        holder.total += more;
        holder.bodies.get_mut(&id).expect("checked above").size = len.max(size);
        Ok(())
    }

    /// Body `id` of `client` is complete: no longer evicted.
    fn seal(&self, client: IpAddr, id: u64) {
        let mut h = self.inner.lock().expect("budget lock");
        if let Some(b) = h
            .by_client
            .get_mut(&client)
            .and_then(|holder| holder.bodies.get_mut(&id))
        {
            b.sealed = true;
        }
    }

    /// Body `id` of `client` is done with (read whole, refused, or its connection gone).
    fn release(&self, client: IpAddr, id: u64) {
        let mut h = self.inner.lock().expect("budget lock");
        let Some(holder) = h.by_client.get_mut(&client) else {
            return;
        };
        let Some(Body { size, .. }) = holder.bodies.remove(&id) else {
            return; // evicted: already given back
        };
        holder.total -= size;
        let empty = holder.bodies.is_empty();
        h.total -= size;
        if empty {
            h.by_client.remove(&client);
        }
    }
}

impl Holdings {
    /// Evict the largest body of `client` still arriving: its bytes are given back now, and
    /// its reader is told to give up.
    fn evict_largest(&mut self, client: IpAddr) {
        let Some(holder) = self.by_client.get_mut(&client) else {
            return;
        };
        let Some((&id, _)) = holder
            .bodies
            .iter()
            .filter(|(_, b)| !b.sealed)
            .max_by_key(|(_, b)| b.size)
        else {
            return;
        };
        let body = holder.bodies.remove(&id).expect("just found");
        holder.total -= body.size;
        let empty = holder.bodies.is_empty();
        self.total -= body.size;
        if empty {
            self.by_client.remove(&client);
        }
        body.evicted.cancel();
        tracing::info!(%client, bytes = body.size, "chunked body evicted for a client holding less");
    }
}

/// Whose share a body counts in: an IPv4 address, or an IPv6 address's /64 (one host's
/// usual allocation: it could otherwise take a share per address).
fn holder_key(client: Option<IpAddr>) -> IpAddr {
    match client {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
        Some(v4) => v4,
    }
}

/// One chunked body's hold on the budget, given back when dropped.
#[derive(Debug)]
pub struct Hold {
    budget: Arc<Budget>,
    client: IpAddr,
    id: u64,
    evicted: CancellationToken,
}

impl Hold {
    /// Grow to `len` bytes.
    pub fn grow(&mut self, len: u64) -> Result<(), Refused> {
        self.budget.grow(self.client, self.id, len)
    }

    /// The body is complete: it stays counted until dropped, but is no longer evicted.
    pub fn seal(&self) {
        self.budget.seal(self.client, self.id);
    }

    /// Cancelled when this body has been evicted.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget.release(self.client, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)))
    }

    #[test]
    fn a_client_holds_at_most_its_share() {
        let b = Arc::new(Budget::new(800, 8)); // share 100
        let mut one = b.hold(ip(1));
        assert_eq!(one.grow(60), Ok(()));
        let mut two = b.hold(ip(1));
        assert_eq!(two.grow(41), Err(Refused::ShareFull));
        assert_eq!(two.grow(40), Ok(()));
        let mut other = b.hold(ip(2));
        assert_eq!(other.grow(100), Ok(()), "another client has its own share");
        drop(one);
        assert_eq!(two.grow(100), Ok(()), "given back when dropped");
        assert_eq!(b.held(), 200);
    }

    #[test]
    fn a_full_budget_evicts_the_heaviest_holders_largest_body_for_a_lighter_newcomer() {
        let b = Arc::new(Budget::new(300, 2)); // share 150
        let mut a1 = b.hold(ip(1));
        let mut a2 = b.hold(ip(1));
        a1.grow(100).unwrap();
        a2.grow(50).unwrap();
        let mut c = b.hold(ip(3));
        c.grow(120).unwrap();
        assert_eq!(b.held(), 270);
        // Client 2 holds nothing, less than client 1 (150): a1 (the largest) makes room.
        let mut newcomer = b.hold(ip(2));
        assert_eq!(newcomer.grow(60), Ok(()));
        assert!(a1.evicted().is_cancelled());
        assert!(!a2.evicted().is_cancelled() && !c.evicted().is_cancelled());
        assert_eq!(
            a1.grow(101),
            Err(Refused::Evicted),
            "an evicted body stays out"
        );
        assert_eq!(b.held(), 50 + 120 + 60);
        drop(a1);
        assert_eq!(b.held(), 230, "an evicted body is not given back twice");
        // Client 3 (120) now holds the most; client 2 (60) holds less: c makes room.
        let mut more = b.hold(ip(2));
        assert_eq!(more.grow(80), Ok(()));
        assert!(c.evicted().is_cancelled());
        assert_eq!(b.held(), 50 + 60 + 80);
        // The heaviest holder itself gets no room from lighter ones.
        let mut d = b.hold(ip(4));
        d.grow(105).unwrap();
        let mut greedy = b.hold(ip(2));
        assert_eq!(
            greedy.grow(10),
            Err(Refused::Full),
            "client 2 (140) is the heaviest"
        );
        assert!(!d.evicted().is_cancelled() && !a2.evicted().is_cancelled());
    }

    #[test]
    fn sealed_bodies_are_not_evicted_and_evictions_leave_no_holder_behind() {
        let b = Arc::new(Budget::new(200, 1));
        let mut sealed = b.hold(ip(1));
        sealed.grow(150).unwrap();
        sealed.seal();
        let mut newcomer = b.hold(ip(2));
        assert_eq!(
            newcomer.grow(100),
            Err(Refused::Full),
            "a complete body stays"
        );
        let mut open = b.hold(ip(3));
        drop(sealed);
        open.grow(150).unwrap();
        assert_eq!(newcomer.grow(100), Ok(()), "the open one goes");
        assert!(open.evicted().is_cancelled());
        assert!(!b
            .inner
            .lock()
            .unwrap()
            .by_client
            .contains_key(&ip(3).unwrap()));
    }

    #[test]
    fn an_ipv6_64_is_one_client() {
        let b = Arc::new(Budget::new(800, 8)); // share 100
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let c: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let mut one = b.hold(Some(a));
        one.grow(100).unwrap();
        let mut two = b.hold(Some(c));
        assert_eq!(two.grow(1), Err(Refused::ShareFull));
    }

    #[test]
    fn state_stays_bounded_as_bodies_come_and_go() {
        let b = Arc::new(Budget::new(1 << 20, 8));
        for n in 0..10_000u32 {
            let client = Some(IpAddr::V4(Ipv4Addr::from(n)));
            let mut h = b.hold(client);
            h.grow(100).unwrap();
        }
        assert_eq!(b.held(), 0);
        assert!(b.inner.lock().unwrap().by_client.is_empty());
    }
}
