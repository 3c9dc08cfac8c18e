//! Replay protection: an exact replay of a signed request (the same agent signature)
//! while its passport is valid is refused.
//!
//! Ed25519 signatures are deterministic and verified strictly (no malleable twins), so
//! one request has exactly one valid signature, and the signature identifies the request.
//! A record lives until the passport's `expires_at` plus the clock skew: after that the
//! passport itself is refused, so the record is no longer needed.

use crate::redis::Redis;
use crate::time::Timestamp;
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
    /// The in-process store holds `capacity` live records and refuses to forget any.
    Full,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Unavailable(e) => write!(f, "replay store unavailable: {e}"),
            ReplayError::Full => f.write_str("replay store full of live records"),
        }
    }
}

/// What a store returns.
pub type ReplayFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ReplayVerdict, ReplayError>> + Send + 'a>>;

/// Remembers request keys until a deadline. `check_and_record` must be atomic: two
/// concurrent calls with one key yield exactly one `Fresh`.
pub trait ReplayStore: Send + Sync + 'static {
    /// Records `key` until `until` unless a live record exists.
    fn check_and_record<'a>(
        &'a self,
        key: &'a [u8; 32],
        now: Timestamp,
        until: Timestamp,
    ) -> ReplayFuture<'a>;
}

struct Records {
    live: HashMap<[u8; 32], Timestamp>,
    by_expiry: BinaryHeap<Reverse<(Timestamp, [u8; 32])>>,
}

/// An in-process store with a fixed capacity.
///
/// The rule when full: expired records are purged first; if every record is still
/// live, the new request is refused with `replay_store_full` (503). A live record is
/// never evicted, because forgetting it would let that request be replayed.
pub struct MemoryReplayStore {
    capacity: usize,
    records: Mutex<Records>,
}

impl fmt::Debug for MemoryReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayStore")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl MemoryReplayStore {
    /// A store holding at most `capacity` live records.
    pub fn new(capacity: usize) -> MemoryReplayStore {
        MemoryReplayStore {
            capacity,
            records: Mutex::new(Records {
                live: HashMap::new(),
                by_expiry: BinaryHeap::new(),
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

    fn decide(
        &self,
        key: &[u8; 32],
        now: Timestamp,
        until: Timestamp,
    ) -> Result<ReplayVerdict, ReplayError> {
        let mut r = self
            .records
            .lock()
            .map_err(|_| ReplayError::Unavailable("replay store lock poisoned".into()))?;
        purge(&mut r, now);
        if r.live.get(key).is_some_and(|t| *t > now) {
            return Ok(ReplayVerdict::Replayed);
        }
        if r.live.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        r.live.insert(*key, until);
        r.by_expiry.push(Reverse((until, *key)));
        Ok(ReplayVerdict::Fresh)
    }
}

fn purge(r: &mut Records, now: Timestamp) {
    while let Some(Reverse((t, key))) = r.by_expiry.peek().copied() {
        if t > now {
            break;
        }
        r.by_expiry.pop();
        if r.live.get(&key) == Some(&t) {
            r.live.remove(&key);
        }
    }
}

impl ReplayStore for MemoryReplayStore {
    fn check_and_record<'a>(
        &'a self,
        key: &'a [u8; 32],
        now: Timestamp,
        until: Timestamp,
    ) -> ReplayFuture<'a> {
        Box::pin(std::future::ready(self.decide(key, now, until)))
    }
}

/// A store shared by every replica: `SET <prefix>replay:<hex key> 1 NX PX <ttl>`.
#[derive(Clone, Debug)]
pub struct RedisReplayStore {
    redis: Arc<Redis>,
    prefix: String,
}

impl RedisReplayStore {
    /// Keys are `<prefix>replay:<hex>`.
    pub fn new(redis: Arc<Redis>, prefix: &str) -> RedisReplayStore {
        RedisReplayStore {
            redis,
            prefix: prefix.to_owned(),
        }
    }
}

impl ReplayStore for RedisReplayStore {
    fn check_and_record<'a>(
        &'a self,
        key: &'a [u8; 32],
        now: Timestamp,
        until: Timestamp,
    ) -> ReplayFuture<'a> {
        Box::pin(async move {
            let ttl_ms = u64::try_from(until.nanos_since(now) / 1_000_000)
                .unwrap_or(0)
                .max(1);
            let name = format!("{}replay:{}", self.prefix, hex::encode(key));
            match self.redis.set_nx_px(&name, ttl_ms).await {
                Ok(true) => Ok(ReplayVerdict::Fresh),
                Ok(false) => Ok(ReplayVerdict::Replayed),
                Err(e) => Err(ReplayError::Unavailable(e.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_seconds(1_779_364_800);

    #[test]
    fn a_second_sighting_of_a_live_key_is_a_replay() {
        let s = MemoryReplayStore::new(10);
        assert_eq!(
            s.decide(&[1; 32], T0, T0.plus_seconds(60)),
            Ok(ReplayVerdict::Fresh)
        );
        assert_eq!(
            s.decide(&[1; 32], T0.plus_seconds(59), T0.plus_seconds(60)),
            Ok(ReplayVerdict::Replayed)
        );
        assert_eq!(
            s.decide(&[2; 32], T0, T0.plus_seconds(60)),
            Ok(ReplayVerdict::Fresh)
        );
    }

    #[test]
    fn a_record_lives_until_its_deadline_only() {
        let s = MemoryReplayStore::new(10);
        s.decide(&[1; 32], T0, T0.plus_seconds(60)).unwrap();
        assert_eq!(s.len(T0.plus_seconds(59)), 1);
        assert_eq!(s.len(T0.plus_seconds(60)), 0);
        assert_eq!(
            s.decide(&[1; 32], T0.plus_seconds(61), T0.plus_seconds(120)),
            Ok(ReplayVerdict::Fresh)
        );
    }

    #[test]
    fn when_full_of_live_records_new_requests_are_refused_not_forgotten() {
        let s = MemoryReplayStore::new(2);
        s.decide(&[1; 32], T0, T0.plus_seconds(60)).unwrap();
        s.decide(&[2; 32], T0, T0.plus_seconds(30)).unwrap();
        assert_eq!(
            s.decide(&[3; 32], T0, T0.plus_seconds(60)),
            Err(ReplayError::Full)
        );
        // The live records are all still there.
        assert_eq!(
            s.decide(&[1; 32], T0, T0.plus_seconds(60)),
            Ok(ReplayVerdict::Replayed)
        );
        assert_eq!(
            s.decide(&[2; 32], T0, T0.plus_seconds(30)),
            Ok(ReplayVerdict::Replayed)
        );
        // Once one expires, there is room again.
        assert_eq!(
            s.decide(&[3; 32], T0.plus_seconds(31), T0.plus_seconds(60)),
            Ok(ReplayVerdict::Fresh)
        );
    }
}
