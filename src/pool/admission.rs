//! Upgrade admission: per backend, a token bucket for new upgrades, a count of handshakes
//! forwarded and not yet answered, and a FIFO of the clients waiting for either, each for at
//! most its deadline. This is data-plane state next to the backend's live counters
//! ([`super::Live`]); it survives snapshot swaps as they do, and the controller never writes
//! it (the pool table is not touched).
//!
//! The limits come from the upstream's policy at each call ([`Limits::share`]), so a reload
//! takes effect for the next client; with a fleet, each instance takes `1 / instances` of the
//! rate and the burst ([`Instances`]). Time is tokio's clock, so tests can pause it.
//!
//! Places go to the queue's clients in order, as many at a time as the limits allow (so a
//! slow wake-up of one task does not hold back the rate): the client at the head waits for
//! the next token on a timer and hands out what it finds, and an answered handshake
//! ([`Pending`]'s drop) hands out the place it frees. First come, first served: a newcomer
//! never passes a waiting client.

use super::backend::Live;
use crate::config::AdmissionConfig;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How many tideway instances share an upstream's admission limits: this one and the others
/// whose reports it read from etcd (every instance of the fleet, whether or not it serves
/// the upstream); 1 without etcd. The fleet's reader sets it; the data plane reads it. With
/// etcd it is unknown until the first read ([`Instances::unknown`]): a whole fleet that
/// restarts would otherwise admit its instances' count times the limits meanwhile.
#[derive(Debug)]
pub struct Instances {
    /// 0: unknown yet.
    count: AtomicUsize,
    known: Notify,
}

impl Default for Instances {
    fn default() -> Self {
        Instances {
            count: AtomicUsize::new(1),
            known: Notify::new(),
        }
    }
}

impl Instances {
    /// The count, None until the fleet's first read.
    pub fn get(&self) -> Option<usize> {
        match self.count.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// The count is unknown until the next [`Instances::set`] (a fleet about to be read).
    pub fn unknown(&self) {
        self.count.store(0, Ordering::Relaxed);
    }

    pub fn set(&self, n: usize) {
        self.count.store(n.max(1), Ordering::Relaxed);
        self.known.notify_waiters();
    }

    /// The count, once it is known.
    async fn known(&self) -> usize {
        loop {
            let set = self.known.notified();
            if let Some(n) = self.get() {
                return n;
            }
            set.await;
        }
    }
}

/// One instance's share of an upstream's admission limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Tokens a second (None: no rate limit).
    rate: Option<f64>,
    /// Most tokens the bucket holds.
    burst: f64,
    max_pending: Option<u32>,
    queue: usize,
    queue_timeout: Duration,
}

impl Limits {
    /// This instance's share of `cfg` in a fleet of `instances`: the rate and the burst are
    /// divided among them (a burst never below one token); `max_pending` and the queue are
    /// per instance.
    pub fn share(cfg: &AdmissionConfig, instances: usize) -> Limits {
        let n = instances.max(1) as f64;
        Limits {
            rate: cfg.per_second.map(|r| f64::from(r) / n),
            burst: (f64::from(cfg.burst) / n).max(1.0),
            max_pending: cfg.max_pending,
            queue: cfg.queue as usize,
            queue_timeout: cfg.queue_timeout,
        }
    }
}

/// Why a client was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The queue was full.
    Full,
    /// It waited `queue_timeout` in the queue.
    TimedOut,
}

/// One backend's admission state and counters.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<State>,
    admitted: AtomicU64,
    queued: AtomicU64,
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    tokens: f64,
    /// When the bucket was last filled up to now; None: never used (it starts empty, so a
    /// restart's storm is admitted at the rate from its first moment).
    refilled: Option<Instant>,
    /// Handshakes admitted and not yet answered.
    pending: u32,
    queue: VecDeque<Waiter>,
    /// The last ticket handed out.
    tickets: u64,
    /// The limits of the latest client, for places handed out on its behalf.
    limits: Option<Limits>,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    slot: Arc<Slot>,
}

/// A waiting client's side of the queue: woken when it is given a place (`granted`) or
/// reaches the head.
#[derive(Debug, Default)]
struct Slot {
    wake: Notify,
    granted: AtomicBool,
}

impl State {
    fn refill(&mut self, l: &Limits, now: Instant) {
        match (l.rate, self.refilled) {
            (Some(rate), Some(at)) => {
                let grown = rate * now.saturating_duration_since(at).as_secs_f64();
                self.tokens = (self.tokens + grown).min(l.burst);
            }
            (_, None) => self.tokens = 0.0,
            (None, Some(_)) => {}
        }
        self.refilled = Some(now);
    }

    fn can_take(&self, l: &Limits) -> bool {
        (l.rate.is_none() || self.tokens >= 1.0) && l.max_pending.is_none_or(|m| self.pending < m)
    }

    fn take(&mut self, l: &Limits) {
        if l.rate.is_some() {
            self.tokens -= 1.0;
        }
        self.pending += 1;
    }

    /// When the bucket holds a token again (None: it holds one, or there is no rate limit).
    fn next_token(&self, l: &Limits, now: Instant) -> Option<Instant> {
        let rate = l.rate?;
        (self.tokens < 1.0).then(|| now + Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }

    fn wake_front(&self) {
        if let Some(w) = self.queue.front() {
            w.slot.wake.notify_one();
        }
    }

    /// Give places to the clients at the head of the queue, in order, while the limits
    /// allow; then wake the new head, so that it waits for the next token.
    fn grant(&mut self, now: Instant) {
        let Some(l) = self.limits else {
            return;
        };
        self.refill(&l, now);
        let mut granted = false;
        while !self.queue.is_empty() && self.can_take(&l) {
            self.take(&l);
            if let Some(w) = self.queue.pop_front() {
                w.slot.granted.store(true, Ordering::Relaxed);
                w.slot.wake.notify_one();
                granted = true;
            }
        }
        if granted {
            self.wake_front();
        }
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Clients admitted, queued (each queued one is later admitted or refused as well) and
    /// refused so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.admitted.load(Ordering::Relaxed),
            self.queued.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    /// Handshakes admitted and not yet answered, and clients waiting, right now.
    pub fn load(&self) -> (u32, usize) {
        let s = self.lock();
        (s.pending, s.queue.len())
    }

    fn admitted(&self, live: &Arc<Live>) -> Pending {
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Pending(live.clone())
    }

    fn refuse(&self, why: Refusal) -> Refusal {
        self.refused.fetch_add(1, Ordering::Relaxed);
        why
    }
}

/// A handshake admitted to a backend and not yet answered: its place under `max_pending`,
/// given back on drop (which wakes the client at the head of the queue).
#[derive(Debug)]
pub struct Pending(Arc<Live>);

impl Drop for Pending {
    fn drop(&mut self) {
        let mut s = self.0.admission().lock();
        s.pending = s.pending.saturating_sub(1);
        s.grant(Instant::now());
    }
}

/// A client's place in a backend's queue, until it is settled (admitted or refused). Dropped
/// before (the client went away): it leaves the queue, waking the next client when it was at
/// the head, or hands on the place it was given and never used.
struct Place<'a> {
    gate: &'a Gate,
    ticket: u64,
    slot: &'a Slot,
    settled: bool,
}

impl Place<'_> {
    /// Leave the queue (under its lock `s`); the place given, if any, goes on, and so does
    /// its token (the bucket holding at most `burst`).
    fn leave(&mut self, s: &mut State) {
        self.settled = true;
        if self.slot.granted.load(Ordering::Relaxed) {
            s.pending = s.pending.saturating_sub(1);
            if let Some(l) = s.limits.filter(|l| l.rate.is_some()) {
                s.tokens = (s.tokens + 1.0).min(l.burst);
            }
            s.grant(Instant::now());
        } else if let Some(i) = s.queue.iter().position(|w| w.ticket == self.ticket) {
            s.queue.remove(i);
            if i == 0 {
                s.wake_front();
            }
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let gate = self.gate;
            self.leave(&mut gate.lock());
        }
    }
}

/// Admit a new upgrade to the backend whose counters are `live`, under `cfg` shared among
/// `instances` ([`Limits::share`]). While the count of instances is unknown (before the
/// fleet's first read) the client waits for it, within its `queue_timeout`, and counts as
/// queued; when the wait runs out first (etcd unreachable), it is judged as if this instance
/// were alone, admitted only if the bucket allows at once (an unreachable etcd must not
/// refuse every upgrade).
pub async fn admit_shared(
    live: &Arc<Live>,
    cfg: &AdmissionConfig,
    instances: &Instances,
) -> Result<Pending, Refusal> {
    let deadline = Instant::now() + cfg.queue_timeout;
    let (n, counted) = match instances.get() {
        Some(n) => (n, false),
        None => {
            let gate = live.admission();
            gate.queued.fetch_add(1, Ordering::Relaxed);
            let n = tokio::time::timeout_at(deadline, instances.known()).await;
            (n.unwrap_or(1), true)
        }
    };
    admit_until(live, Limits::share(cfg, n), deadline, counted).await
}

/// Admit a new upgrade to the backend whose counters are `live`, under `limits`: at once when
/// nobody waits and the bucket and `max_pending` allow, else after waiting in the queue (in
/// order) up to `queue_timeout`. Dropping the future leaves the queue.
pub async fn admit(live: &Arc<Live>, limits: Limits) -> Result<Pending, Refusal> {
    let deadline = Instant::now() + limits.queue_timeout;
    admit_until(live, limits, deadline, false).await
}

/// [`admit`], the wait ending at `deadline`; `counted`: the client was counted as queued.
async fn admit_until(
    live: &Arc<Live>,
    limits: Limits,
    deadline: Instant,
    counted: bool,
) -> Result<Pending, Refusal> {
    let gate = live.admission();
    let slot = Arc::new(Slot::default());
    let ticket = {
        let mut s = gate.lock();
        s.limits = Some(limits);
        s.refill(&limits, Instant::now());
        if s.queue.is_empty() && s.can_take(&limits) {
            s.take(&limits);
            drop(s);
            return Ok(gate.admitted(live));
        }
        if s.queue.len() >= limits.queue {
            drop(s);
            return Err(gate.refuse(Refusal::Full));
        }
        s.tickets += 1;
        let ticket = s.tickets;
        s.queue.push_back(Waiter {
            ticket,
            slot: slot.clone(),
        });
        ticket
    };
    if !counted {
        gate.queued.fetch_add(1, Ordering::Relaxed);
    }
    let mut place = Place {
        gate,
        ticket,
        slot: &slot,
        settled: false,
    };
    loop {
        let token_at = {
            let mut s = gate.lock();
            let now = Instant::now();
            if s.queue.front().is_some_and(|w| w.ticket == ticket) {
                s.grant(now);
            }
            if slot.granted.load(Ordering::Relaxed) {
                place.settled = true;
                drop(s);
                return Ok(gate.admitted(live));
            }
            let at_head = s.queue.front().is_some_and(|w| w.ticket == ticket);
            match s.limits {
                Some(l) if at_head => s.next_token(&l, now),
                _ => None,
            }
        };
        let until = token_at.map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            () = slot.wake.notified() => {}
            () = tokio::time::sleep_until(until) => {
                if Instant::now() >= deadline {
                    let mut s = gate.lock();
                    if slot.granted.load(Ordering::Relaxed) {
                        // Given a place just as the wait ran out: take it.
                        place.settled = true;
                        drop(s);
                        return Ok(gate.admitted(live));
                    }
                    place.leave(&mut s);
                    drop(s);
                    return Err(gate.refuse(Refusal::TimedOut));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::admission::DEFAULT_ADMISSION_RETRY_AFTER;

    fn cfg(per_second: Option<u32>, burst: u32, max_pending: Option<u32>, queue: u32) -> Limits {
        let cfg = AdmissionConfig {
            per_second,
            burst,
            max_pending,
            queue,
            queue_timeout: Duration::from_secs(5),
            retry_after: DEFAULT_ADMISSION_RETRY_AFTER,
            all_requests: false,
            handshake_timeout: crate::config::admission::DEFAULT_ADMISSION_HANDSHAKE_TIMEOUT,
        };
        Limits::share(&cfg, 1)
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_admits_its_burst_then_the_rate_in_order() {
        let live = Arc::new(Live::default());
        let limits = cfg(Some(10), 3, None, 100);
        // The bucket starts empty: a restart's first client waits for the first token.
        let first = Instant::now();
        let mut held = vec![admit(&live, limits).await.expect("the first token")];
        assert_eq!(first.elapsed(), Duration::from_millis(100));
        // Left alone, the bucket fills up to its burst.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        for _ in 0..3 {
            held.push(admit(&live, limits).await.expect("the burst"));
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the burst waits for nothing"
        );
        // Seven more queue up at once; they come out in order, one every 100 ms.
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiting: Vec<_> = (0..7)
            .map(|i| {
                let (live, order) = (live.clone(), order.clone());
                tokio::spawn(async move {
                    let p = admit(&live, limits).await.expect("admitted in time");
                    order.lock().unwrap().push((i, start.elapsed()));
                    p
                })
            })
            .collect();
        for w in waiting {
            held.push(w.await.unwrap());
        }
        let order = order.lock().unwrap().clone();
        let ids: Vec<_> = order.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, (0..7).collect::<Vec<_>>(), "first come, first served");
        let last = order.last().unwrap().1;
        assert!(
            last >= Duration::from_millis(700) && last < Duration::from_millis(720),
            "{last:?}"
        );
        assert_eq!(live.admission().counts(), (11, 8, 0));
        assert_eq!(live.admission().load(), (11, 0));
        drop(held);
        assert_eq!(
            live.admission().load(),
            (0, 0),
            "answered handshakes give back their places"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn max_pending_waits_for_an_answer_and_a_full_queue_refuses() {
        let live = Arc::new(Live::default());
        let limits = cfg(None, 1, Some(1), 1);
        let first = admit(&live, limits).await.expect("room");
        let second = tokio::spawn({
            let live = live.clone();
            async move { admit(&live, limits).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(live.admission().load(), (1, 1), "the second one waits");
        assert_eq!(
            admit(&live, limits).await.unwrap_err(),
            Refusal::Full,
            "the queue holds one"
        );
        drop(first);
        let second = second
            .await
            .unwrap()
            .expect("admitted once the first was answered");
        // Nobody answers this one: the next client waits out its deadline and is refused.
        let started = Instant::now();
        assert_eq!(admit(&live, limits).await.unwrap_err(), Refusal::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(live.admission().counts(), (2, 2, 2));
        drop(second);
        assert_eq!(live.admission().load(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_leaves_the_queue_lets_the_next_one_in() {
        let live = Arc::new(Live::default());
        let limits = cfg(None, 1, Some(1), 10);
        let first = admit(&live, limits).await.unwrap();
        let gone = tokio::spawn({
            let live = live.clone();
            async move { admit(&live, limits).await }
        });
        tokio::task::yield_now().await;
        let next = tokio::spawn({
            let live = live.clone();
            async move { admit(&live, limits).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(live.admission().load(), (1, 2));
        gone.abort();
        let _ = gone.await;
        assert_eq!(
            live.admission().load(),
            (1, 1),
            "the gone client left the queue"
        );
        drop(first);
        assert!(next.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_place_given_to_a_client_that_went_away_is_handed_on() {
        let live = Arc::new(Live::default());
        let limits = cfg(None, 1, Some(1), 10);
        let first = admit(&live, limits).await.unwrap();
        let gone = tokio::spawn({
            let live = live.clone();
            async move { admit(&live, limits).await }
        });
        tokio::task::yield_now().await;
        let next = tokio::spawn({
            let live = live.clone();
            async move { admit(&live, limits).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(live.admission().load(), (1, 2));
        // The answer frees the place and hands it to `gone`, which leaves before taking it.
        drop(first);
        assert_eq!(live.admission().load(), (1, 1));
        gone.abort();
        let _ = gone.await;
        let next = next
            .await
            .unwrap()
            .expect("the place went on to the next client");
        assert_eq!(live.admission().load(), (1, 0));
        assert_eq!(
            live.admission().counts(),
            (2, 2, 0),
            "the gone client was not admitted"
        );
        drop(next);
        assert_eq!(live.admission().load(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_of_a_place_never_taken_goes_back_to_the_bucket() {
        let live = Arc::new(Live::default());
        let limits = cfg(Some(1), 1, Some(1), 10);
        let first = admit(&live, limits).await.unwrap();
        // A second token comes while the first handshake is pending: `gone` waits for the
        // place, is given it with that token when the first is answered, and leaves unserved.
        let gone = tokio::spawn({
            let live = live.clone();
            async move { admit(&live, limits).await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(live.admission().load(), (1, 1));
        drop(first);
        assert_eq!(live.admission().load(), (1, 0), "given to `gone`");
        gone.abort();
        let _ = gone.await;
        // Its token was not spent: the next client needs no new one.
        let asked = Instant::now();
        let next = admit(&live, limits).await.unwrap();
        assert_eq!(asked.elapsed(), Duration::ZERO, "the token was refunded");
        assert_eq!(
            live.admission().counts(),
            (2, 2, 0),
            "the first waited for a token too"
        );
        drop(next);
    }

    fn fleet_cfg() -> AdmissionConfig {
        AdmissionConfig {
            per_second: Some(10),
            burst: 10,
            max_pending: None,
            queue: 10,
            queue_timeout: Duration::from_secs(5),
            retry_after: DEFAULT_ADMISSION_RETRY_AFTER,
            all_requests: false,
            handshake_timeout: crate::config::admission::DEFAULT_ADMISSION_HANDSHAKE_TIMEOUT,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn until_the_fleet_is_read_clients_wait_then_get_its_share() {
        let live = Arc::new(Live::default());
        let instances = Arc::new(Instances::default());
        instances.unknown();
        let start = Instant::now();
        let waiting = tokio::spawn({
            let (live, instances) = (live.clone(), instances.clone());
            async move { admit_shared(&live, &fleet_cfg(), &instances).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(live.admission().counts(), (0, 1, 0), "queued, not admitted");
        // Two instances: 5 a second here, the bucket empty; the first token 200 ms later.
        instances.set(2);
        waiting
            .await
            .unwrap()
            .expect("admitted once the fleet was read");
        assert_eq!(start.elapsed(), Duration::from_millis(700));
        assert_eq!(live.admission().counts(), (1, 1, 0));
        // etcd never answers: at the end of its wait a client is judged as if alone, and an
        // empty bucket refuses it rather than it being admitted at once.
        let alone = Arc::new(Live::default());
        instances.unknown();
        let started = Instant::now();
        let r = admit_shared(&alone, &fleet_cfg(), &instances).await;
        assert_eq!(r.unwrap_err(), Refusal::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(alone.admission().counts(), (0, 1, 1));
    }

    #[test]
    fn a_fleet_divides_the_rate_and_the_burst() {
        let c = AdmissionConfig {
            per_second: Some(500),
            burst: 50,
            max_pending: Some(8),
            queue: 10,
            queue_timeout: Duration::from_secs(1),
            retry_after: DEFAULT_ADMISSION_RETRY_AFTER,
            all_requests: false,
            handshake_timeout: crate::config::admission::DEFAULT_ADMISSION_HANDSHAKE_TIMEOUT,
        };
        let l = Limits::share(&c, 4);
        assert_eq!(
            (l.rate, l.burst, l.max_pending),
            (Some(125.0), 12.5, Some(8))
        );
        assert_eq!(Limits::share(&c, 100).burst, 1.0, "never below one token");
        assert_eq!(Limits::share(&c, 0), Limits::share(&c, 1));
    }
}
