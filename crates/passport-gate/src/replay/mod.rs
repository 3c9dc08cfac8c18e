//! Replay protection: an exact replay of a signed request (the same agent signature)
//! while its passport is valid is refused.
//!
//! Ed25519 signatures are deterministic and verified strictly (no malleable twins), so
//! one request has exactly one valid signature, and the signature identifies the request.
//! A record lives until the passport's `expires_at` plus the clock skew: after that the
//! passport itself is refused, so the record is no longer needed.
//!
//! A retry is not a replay: the record is reserved when the request is accepted (so a
//! concurrent copy is refused at once) and released only when the answer shows that
//! nothing behind the verifier processed the request ([`releases_record`]). A crash
//! between the two leaves the record in place: the request stays refused, never
//! accepted twice.

use passport_core::time::Timestamp;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// What the store says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// First time seen; now recorded.
    Fresh,
    /// Seen before, and the record is live.
    Replayed,
}

/// Why the store gave no verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// The store could not be asked (Redis down, slow, or answering errors).
    Unavailable(String),
    /// The store is one that can silently forget records (Redis with eviction, without
    /// persistence, or not saying), and the operator did not accept that. Always
    /// refused, whatever `fail_open` says: a forgetful store is not a slow one.
    Untrusted(String),
    /// The store refuses to forget a live record to make room: the in-process store
    /// holds `capacity` live records, or Redis is at `maxmemory` (with `noeviction`).
    /// Always refused (503 `replay_store_full`), whatever `fail_open` says.
    Full,
    /// This principal already holds its quota of live records.
    QuotaExceeded,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Unavailable(e) => write!(f, "replay store unavailable: {e}"),
            ReplayError::Untrusted(e) => write!(f, "replay store refused: {e}"),
            ReplayError::Full => f.write_str("replay store full of live records"),
            ReplayError::QuotaExceeded => {
                f.write_str("the principal holds its quota of live replay records")
            }
        }
    }
}

/// What a store returns.
pub type ReplayFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ReplayVerdict, ReplayError>> + Send + 'a>>;

/// What [`ReplayStore::release`] returns.
pub type ReleaseFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ReplayError>> + Send + 'a>>;

/// A response extension by which the service behind the verifier says that the request
/// never reached the server that would process it (the gateway could not connect to its
/// upstream). With [`ReleasePolicy::on_retryable`], such an answer releases the request's
/// replay record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotForwarded;

/// A response extension by which the service behind the verifier says that it did not
/// forward the request because its own capacity was taken (the gateway's 503
/// `upstream_busy`). Anyone able to send requests can take that capacity on purpose, so
/// such an answer releases the record only with [`ReleasePolicy::on_upstream_busy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShedForCapacity;

/// Which answers release a request's replay record (spec section 7.1).
///
/// Releasing lets an automatic retry of the same signed request through, but a released
/// record goes to whoever sends the request first: someone who captured it and can cause
/// the releasing answer (load makes an upstream answer 429 or 503; slow requests fill the
/// gateway's upstream slots) replays it, gets the answer, and the client's own retry is
/// refused `request_replayed` while the audit log charges the client. The default
/// releases nothing: a retry is refused and the client signs a new request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReleasePolicy {
    /// Release after an answer that shows the request was not processed: the upstream
    /// could not be reached ([`NotForwarded`]) or answered 429 or 503.
    pub on_retryable: bool,
    /// Also release after the gateway's own refusal for lack of upstream capacity
    /// ([`ShedForCapacity`]); only with `on_retryable`.
    pub on_upstream_busy: bool,
}

/// Whether an answer releases the request's replay record under `policy`, so that the
/// same signed request may be sent again (spec section 7.1). With `on_retryable`: the
/// service marked it [`NotForwarded`], or the upstream answered 429 or 503 in its
/// response head; an answer marked [`ShedForCapacity`] (a 503 too) only with
/// `on_upstream_busy`. Every other answer, a timeout included, may follow processing and
/// keeps the record.
pub fn releases_record<B>(response: &http::Response<B>, policy: ReleasePolicy) -> bool {
    if !policy.on_retryable {
        return false;
    }
    if response.extensions().get::<ShedForCapacity>().is_some() {
        return policy.on_upstream_busy;
    }
    response.extensions().get::<NotForwarded>().is_some()
        || matches!(response.status().as_u16(), 429 | 503)
}

/// The largest share of a bounded store's capacity one principal may hold: its quota is
/// at most a tenth of the capacity (and at least one record), whatever
/// `replay_records_per_principal` says, so one passport holder never fills the store.
pub const PRINCIPAL_SHARE_OF_CAPACITY: u64 = 10;

/// The per-principal quota a bounded store of `capacity` records applies: `configured`,
/// cut to a tenth of the capacity ([`PRINCIPAL_SHARE_OF_CAPACITY`]), at least one.
pub fn effective_quota(capacity: usize, configured: u64) -> u64 {
    let share = (capacity as u64 / PRINCIPAL_SHARE_OF_CAPACITY).max(1);
    configured.min(share)
}

pub use passport_core::config::DEFAULT_RECORDS_PER_PRINCIPAL;

/// One request to remember.
#[derive(Clone, Copy, Debug)]
pub struct ReplayRecord<'a> {
    /// SHA-256 of the agent signature: the request's identity.
    pub key: &'a [u8; 32],
    /// The passport's principal address (canonical), whose quota the record counts on.
    pub principal: &'a str,
    /// The verification instant.
    pub now: Timestamp,
    /// When the record may be forgotten (the passport's expiry plus the skew).
    pub until: Timestamp,
}

/// Remembers request keys until a deadline, at most a quota of live records per
/// principal. `check_and_record` must be atomic: two concurrent calls with one key
/// yield exactly one `Fresh`.
pub trait ReplayStore: Send + Sync + 'static {
    /// Records `record.key` until `record.until` unless a live record exists; refuses
    /// with `QuotaExceeded` when the principal already holds its quota.
    fn check_and_record<'a>(&'a self, record: ReplayRecord<'a>) -> ReplayFuture<'a>;

    /// Forgets the record of `key` (and its place in `principal`'s quota). Called only by
    /// the one request that got `Fresh` for it, once its answer [`releases_record`].
    fn release<'a>(&'a self, key: &'a [u8; 32], principal: &'a str) -> ReleaseFuture<'a>;
}

/// The live records of a bounded store, in memory: each record's deadline and
/// principal, the deadlines in order (to purge expired records), and each principal's
/// count. The in-process store is this alone; the disk store keeps its copy on disk.
struct Index {
    live: HashMap<[u8; 32], (Timestamp, Arc<str>)>,
    by_expiry: BinaryHeap<Reverse<(Timestamp, [u8; 32])>>,
    per_principal: HashMap<Arc<str>, u64>,
}

impl Index {
    fn new() -> Index {
        Index {
            live: HashMap::new(),
            by_expiry: BinaryHeap::new(),
            per_principal: HashMap::new(),
        }
    }

    /// Live records held after purging those expired at `now`.
    fn live_at(&mut self, now: Timestamp) -> usize {
        self.purge(now);
        self.live.len()
    }

    /// The atomic check of [`ReplayStore::check_and_record`] for a store of `capacity`
    /// records with a per-principal `quota`.
    fn decide(
        &mut self,
        record: &ReplayRecord<'_>,
        capacity: usize,
        quota: u64,
    ) -> Result<ReplayVerdict, ReplayError> {
        self.purge(record.now);
        if self.live.contains_key(record.key) {
            return Ok(ReplayVerdict::Replayed);
        }
        let held = self
            .per_principal
            .get(record.principal)
            .copied()
            .unwrap_or(0);
        if held >= quota {
            return Err(ReplayError::QuotaExceeded);
        }
        if self.live.len() >= capacity {
            return Err(ReplayError::Full);
        }
        self.insert(*record.key, record.until, record.principal);
        Ok(ReplayVerdict::Fresh)
    }

    /// Holds `key` until `until`, counted on `principal`.
    fn insert(&mut self, key: [u8; 32], until: Timestamp, principal: &str) {
        self.forget(&key);
        let principal: Arc<str> = match self.per_principal.get_key_value(principal) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(principal),
        };
        *self
            .per_principal
            .entry(Arc::clone(&principal))
            .or_insert(0) += 1;
        self.live.insert(key, (until, principal));
        self.by_expiry.push(Reverse((until, key)));
    }

    /// Removes `key`'s live record and its count in its principal's quota.
    fn forget(&mut self, key: &[u8; 32]) {
        if let Some((_, principal)) = self.live.remove(key) {
            if let Some(n) = self.per_principal.get_mut(&principal) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_principal.remove(&principal);
                }
            }
        }
    }

    /// Forgets a released record. Its deadline stays in the heap until it passes; the
    /// heap is rebuilt once stale entries outnumber live ones, so it stays within twice
    /// the live records however often requests are released.
    fn release(&mut self, key: &[u8; 32]) {
        self.forget(key);
        if self.by_expiry.len() > 2 * self.live.len() + 64 {
            self.by_expiry = self
                .live
                .iter()
                .map(|(key, (until, _))| Reverse((*until, *key)))
                .collect();
        }
    }

    fn purge(&mut self, now: Timestamp) {
        while let Some(Reverse((t, key))) = self.by_expiry.peek().copied() {
            if t > now {
                break;
            }
            self.by_expiry.pop();
            if self.live.get(&key).is_some_and(|(until, _)| *until == t) {
                self.forget(&key);
            }
        }
    }
}

/// An in-process store with a fixed capacity and a per-principal quota. It forgets every
/// record when the process ends (see the gateway's disk store for one that does not).
///
/// The rule when full: expired records are purged first; if every record is still
/// live, the new request is refused with `replay_store_full` (503). A live record is
/// never evicted, because forgetting it would let that request be replayed. The quota
/// keeps one passport holder from filling the store for everyone else: its requests
/// beyond the quota are refused with `replay_quota_exceeded` (429), others go on. The
/// quota is at most a tenth of the capacity ([`effective_quota`]).
pub struct MemoryReplayStore {
    capacity: usize,
    per_principal: u64,
    records: Mutex<Index>,
}

impl fmt::Debug for MemoryReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayStore")
            .field("capacity", &self.capacity)
            .field("per_principal", &self.per_principal)
            .finish_non_exhaustive()
    }
}

impl MemoryReplayStore {
    /// A store holding at most `capacity` live records, at most `per_principal` of
    /// them for one principal, and never more than a tenth of the capacity
    /// ([`effective_quota`]).
    pub fn new(capacity: usize, per_principal: u64) -> MemoryReplayStore {
        MemoryReplayStore {
            capacity,
            per_principal: effective_quota(capacity, per_principal),
            records: Mutex::new(Index::new()),
        }
    }

    /// The quota each principal gets in this store.
    pub fn records_per_principal(&self) -> u64 {
        self.per_principal
    }

    /// Live records held (after purging those expired at `now`).
    pub fn len(&self, now: Timestamp) -> usize {
        match self.records.lock() {
            Ok(mut r) => r.live_at(now),
            Err(_) => 0,
        }
    }

    /// Whether no live record is held at `now`.
    pub fn is_empty(&self, now: Timestamp) -> bool {
        self.len(now) == 0
    }

    fn decide(&self, record: &ReplayRecord<'_>) -> Result<ReplayVerdict, ReplayError> {
        self.records
            .lock()
            .map_err(|_| ReplayError::Unavailable("replay store lock poisoned".into()))?
            .decide(record, self.capacity, self.per_principal)
    }
}

impl ReplayStore for MemoryReplayStore {
    fn check_and_record<'a>(&'a self, record: ReplayRecord<'a>) -> ReplayFuture<'a> {
        Box::pin(std::future::ready(self.decide(&record)))
    }

    fn release<'a>(&'a self, key: &'a [u8; 32], _principal: &'a str) -> ReleaseFuture<'a> {
        let released = self
            .records
            .lock()
            .map(|mut r| r.release(key))
            .map_err(|_| ReplayError::Unavailable("replay store lock poisoned".into()));
        Box::pin(std::future::ready(released))
    }
}

#[cfg(feature = "disk")]
mod disk;
#[cfg(feature = "disk")]
pub use disk::{DiskReplayStore, DiskStoreError};

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use redis::RedisReplayStore;

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_seconds(1_779_364_800);
    const ALICE: &str = "gonka1alice";
    const BOB: &str = "gonka1bob";
    const CAROL: &str = "gonka1carol";

    fn decide(
        s: &MemoryReplayStore,
        key: u8,
        principal: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<ReplayVerdict, ReplayError> {
        s.decide(&ReplayRecord {
            key: &[key; 32],
            principal,
            now,
            until,
        })
    }

    #[test]
    fn a_second_sighting_of_a_live_key_is_a_replay() {
        let s = MemoryReplayStore::new(100, 10);
        let until = T0.plus_seconds(60);
        assert_eq!(decide(&s, 1, ALICE, T0, until), Ok(ReplayVerdict::Fresh));
        assert_eq!(
            decide(&s, 1, ALICE, T0.plus_seconds(59), until),
            Ok(ReplayVerdict::Replayed)
        );
        assert_eq!(decide(&s, 2, ALICE, T0, until), Ok(ReplayVerdict::Fresh));
    }

    #[test]
    fn a_record_lives_until_its_deadline_only() {
        let s = MemoryReplayStore::new(10, 10);
        decide(&s, 1, ALICE, T0, T0.plus_seconds(60)).unwrap();
        assert_eq!(s.len(T0.plus_seconds(59)), 1);
        assert_eq!(s.len(T0.plus_seconds(60)), 0);
        assert_eq!(
            decide(&s, 1, ALICE, T0.plus_seconds(61), T0.plus_seconds(120)),
            Ok(ReplayVerdict::Fresh)
        );
    }

    #[test]
    fn when_full_of_live_records_new_requests_are_refused_not_forgotten() {
        let s = MemoryReplayStore::new(2, 10);
        decide(&s, 1, ALICE, T0, T0.plus_seconds(60)).unwrap();
        decide(&s, 2, BOB, T0, T0.plus_seconds(30)).unwrap();
        assert_eq!(
            decide(&s, 3, CAROL, T0, T0.plus_seconds(60)),
            Err(ReplayError::Full)
        );
        // The live records are all still there.
        assert_eq!(
            decide(&s, 1, ALICE, T0, T0.plus_seconds(60)),
            Ok(ReplayVerdict::Replayed)
        );
        assert_eq!(
            decide(&s, 2, BOB, T0, T0.plus_seconds(30)),
            Ok(ReplayVerdict::Replayed)
        );
        // Once one expires, there is room again.
        assert_eq!(
            decide(&s, 3, CAROL, T0.plus_seconds(31), T0.plus_seconds(60)),
            Ok(ReplayVerdict::Fresh)
        );
    }

    #[test]
    fn one_principal_never_holds_more_than_a_tenth_of_the_capacity() {
        // The configured quota (10,000) is larger than the store: a tenth of it applies.
        let s = MemoryReplayStore::new(200, 10_000);
        assert_eq!(s.records_per_principal(), 20);
        let until = T0.plus_seconds(60);
        for key in 0..20 {
            assert_eq!(decide(&s, key, ALICE, T0, until), Ok(ReplayVerdict::Fresh));
        }
        assert_eq!(
            decide(&s, 20, ALICE, T0, until),
            Err(ReplayError::QuotaExceeded)
        );
        assert_eq!(decide(&s, 21, BOB, T0, until), Ok(ReplayVerdict::Fresh));
        // A smaller configured quota is kept; a tiny store still gives one record each.
        assert_eq!(MemoryReplayStore::new(200, 3).records_per_principal(), 3);
        assert_eq!(MemoryReplayStore::new(5, 3).records_per_principal(), 1);
    }

    #[test]
    fn a_released_record_lets_the_same_request_in_again_and_frees_its_quota() {
        let s = MemoryReplayStore::new(10, 1);
        let until = T0.plus_seconds(60);
        assert_eq!(decide(&s, 1, ALICE, T0, until), Ok(ReplayVerdict::Fresh));
        assert_eq!(decide(&s, 1, ALICE, T0, until), Ok(ReplayVerdict::Replayed));
        futures_block_on(s.release(&[1; 32], ALICE)).unwrap();
        assert!(s.is_empty(T0));
        assert_eq!(decide(&s, 1, ALICE, T0, until), Ok(ReplayVerdict::Fresh));
        // The quota of one was freed by the release, and is taken again.
        assert_eq!(
            decide(&s, 2, ALICE, T0, until),
            Err(ReplayError::QuotaExceeded)
        );
        // The stale deadline left in the heap does not forget the new record early.
        assert_eq!(s.len(T0.plus_seconds(59)), 1);
    }

    #[test]
    fn releasing_the_same_request_again_and_again_keeps_the_store_bounded() {
        let s = MemoryReplayStore::new(10, 10);
        let until = T0.plus_seconds(3600);
        for _ in 0..10_000 {
            assert_eq!(decide(&s, 1, ALICE, T0, until), Ok(ReplayVerdict::Fresh));
            futures_block_on(s.release(&[1; 32], ALICE)).unwrap();
        }
        let r = s.records.lock().unwrap();
        assert!(r.live.is_empty() && r.per_principal.is_empty());
        assert!(r.by_expiry.len() <= 64 + 1, "{}", r.by_expiry.len());
    }

    #[test]
    fn only_not_forwarded_429_and_503_answers_release_the_record_and_only_when_asked() {
        let answer = |status: u16| http::Response::builder().status(status).body(()).unwrap();
        let retryable = ReleasePolicy {
            on_retryable: true,
            on_upstream_busy: false,
        };
        let busy_too = ReleasePolicy {
            on_retryable: true,
            on_upstream_busy: true,
        };
        for status in [200, 400, 401, 404, 500, 502, 504] {
            assert!(!releases_record(&answer(status), busy_too), "{status}");
        }
        let mut unreached = answer(502);
        unreached.extensions_mut().insert(NotForwarded);
        let mut shed = answer(503);
        shed.extensions_mut().insert(ShedForCapacity);
        for r in [&answer(429), &answer(503), &unreached] {
            assert!(releases_record(r, retryable));
            assert!(!releases_record(r, ReleasePolicy::default()));
        }
        // The gateway's own upstream_busy (a 503) only where the mode says so.
        assert!(!releases_record(&shed, retryable));
        assert!(releases_record(&shed, busy_too));
        assert!(!releases_record(&shed, ReleasePolicy::default()));
    }

    fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_principal_over_its_quota_is_refused_and_others_are_not() {
        let s = MemoryReplayStore::new(100, 2);
        decide(&s, 1, ALICE, T0, T0.plus_seconds(30)).unwrap();
        decide(&s, 2, ALICE, T0, T0.plus_seconds(60)).unwrap();
        assert_eq!(
            decide(&s, 3, ALICE, T0, T0.plus_seconds(60)),
            Err(ReplayError::QuotaExceeded)
        );
        // A replay is still named a replay, not a quota matter.
        assert_eq!(
            decide(&s, 1, ALICE, T0, T0.plus_seconds(30)),
            Ok(ReplayVerdict::Replayed)
        );
        assert_eq!(
            decide(&s, 4, BOB, T0, T0.plus_seconds(60)),
            Ok(ReplayVerdict::Fresh)
        );
        // The quota frees as records expire.
        assert_eq!(
            decide(&s, 3, ALICE, T0.plus_seconds(31), T0.plus_seconds(60)),
            Ok(ReplayVerdict::Fresh)
        );
    }
}
