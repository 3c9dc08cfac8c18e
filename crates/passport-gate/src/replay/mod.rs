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
/// upstream). Such an answer releases the request's replay record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotForwarded;

/// Whether an answer shows that the request was not processed, so that its replay record
/// is released and the same signed request may be sent again (spec section 7.1): the
/// service marked it [`NotForwarded`], or it answered 429 or 503 in its response head.
/// Every other answer, a timeout included, may follow processing and keeps the record.
pub fn releases_record<B>(response: &http::Response<B>) -> bool {
    response.extensions().get::<NotForwarded>().is_some()
        || matches!(response.status().as_u16(), 429 | 503)
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

struct Records {
    live: HashMap<[u8; 32], (Timestamp, Arc<str>)>,
    by_expiry: BinaryHeap<Reverse<(Timestamp, [u8; 32])>>,
    per_principal: HashMap<Arc<str>, u64>,
}

/// An in-process store with a fixed capacity and a per-principal quota.
///
/// The rule when full: expired records are purged first; if every record is still
/// live, the new request is refused with `replay_store_full` (503). A live record is
/// never evicted, because forgetting it would let that request be replayed. The quota
/// keeps one passport holder from filling the store for everyone else: its requests
/// beyond the quota are refused with `replay_quota_exceeded` (429), others go on.
pub struct MemoryReplayStore {
    capacity: usize,
    per_principal: u64,
    records: Mutex<Records>,
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
    /// them for one principal.
    pub fn new(capacity: usize, per_principal: u64) -> MemoryReplayStore {
        MemoryReplayStore {
            capacity,
            per_principal,
            records: Mutex::new(Records {
                live: HashMap::new(),
                by_expiry: BinaryHeap::new(),
                per_principal: HashMap::new(),
            }),
        }
    }

    /// Live records held (after purging those expired at `now`).
    pub fn len(&self, now: Timestamp) -> usize {
        match self.records.lock() {
            Ok(mut r) => {
                purge(&mut r, now);
                r.live.len()
            }
            Err(_) => 0,
        }
    }

    /// Whether no live record is held at `now`.
    pub fn is_empty(&self, now: Timestamp) -> bool {
        self.len(now) == 0
    }

    fn decide(&self, record: &ReplayRecord<'_>) -> Result<ReplayVerdict, ReplayError> {
        let mut r = self
            .records
            .lock()
            .map_err(|_| ReplayError::Unavailable("replay store lock poisoned".into()))?;
        purge(&mut r, record.now);
        if r.live.contains_key(record.key) {
            return Ok(ReplayVerdict::Replayed);
        }
        let held = r.per_principal.get(record.principal).copied().unwrap_or(0);
        if held >= self.per_principal {
            return Err(ReplayError::QuotaExceeded);
        }
        if r.live.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        let principal: Arc<str> = match r.per_principal.get_key_value(record.principal) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(record.principal),
        };
        *r.per_principal.entry(Arc::clone(&principal)).or_insert(0) += 1;
        r.live.insert(*record.key, (record.until, principal));
        r.by_expiry.push(Reverse((record.until, *record.key)));
        Ok(ReplayVerdict::Fresh)
    }
}

/// Removes `key`'s live record and its count in its principal's quota.
fn forget(r: &mut Records, key: &[u8; 32]) {
    if let Some((_, principal)) = r.live.remove(key) {
        if let Some(n) = r.per_principal.get_mut(&principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                r.per_principal.remove(&principal);
            }
        }
    }
}

fn purge(r: &mut Records, now: Timestamp) {
    while let Some(Reverse((t, key))) = r.by_expiry.peek().copied() {
        if t > now {
            break;
        }
        r.by_expiry.pop();
        if r.live.get(&key).is_some_and(|(until, _)| *until == t) {
            forget(r, &key);
        }
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
            .map(|mut r| {
                forget(&mut r, key);
                // A released record leaves its deadline in the heap until it passes;
                // rebuilt once stale entries outnumber live ones, so the heap stays
                // within twice the live records however often requests are released.
                if r.by_expiry.len() > 2 * r.live.len() + 64 {
                    r.by_expiry = r
                        .live
                        .iter()
                        .map(|(key, (until, _))| Reverse((*until, *key)))
                        .collect();
                }
            })
            .map_err(|_| ReplayError::Unavailable("replay store lock poisoned".into()));
        Box::pin(std::future::ready(released))
    }
}

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
        let s = MemoryReplayStore::new(10, 10);
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
            decide(&s, 3, ALICE, T0, T0.plus_seconds(60)),
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
            decide(&s, 3, ALICE, T0.plus_seconds(31), T0.plus_seconds(60)),
            Ok(ReplayVerdict::Fresh)
        );
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
    fn only_not_forwarded_429_and_503_answers_release_the_record() {
        let answer = |status: u16| http::Response::builder().status(status).body(()).unwrap();
        for status in [200, 400, 401, 404, 500, 502, 504] {
            assert!(!releases_record(&answer(status)), "{status}");
        }
        assert!(releases_record(&answer(429)));
        assert!(releases_record(&answer(503)));
        let mut unreached = answer(502);
        unreached.extensions_mut().insert(NotForwarded);
        assert!(releases_record(&unreached));
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
