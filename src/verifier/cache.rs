//! The verified-envelope cache: what does not depend on the clock or the request is
//! checked once per passport and remembered until the passport expires.

use super::VerifiedEnvelope;
use moka::sync::Cache;
use moka::Expiry;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Entry {
    envelope: Arc<VerifiedEnvelope>,
    ttl: Duration,
}

struct UntilExpiry;

impl Expiry<[u8; 32], Entry> for UntilExpiry {
    fn expire_after_create(&self, _: &[u8; 32], entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// Verified envelopes keyed by SHA-256 of the decoded header bytes. Only envelopes whose
/// principal signature verified are ever inserted, and each leaves no later than its
/// `expires_at`.
#[derive(Clone)]
pub struct EnvelopeCache {
    /// `None` when the cache is turned off (capacity 0).
    inner: Option<Cache<[u8; 32], Entry>>,
}

impl EnvelopeCache {
    /// A cache holding at most `capacity` envelopes; 0 turns it off.
    pub fn new(capacity: u64) -> EnvelopeCache {
        EnvelopeCache {
            inner: (capacity > 0).then(|| {
                Cache::builder()
                    .max_capacity(capacity)
                    .expire_after(UntilExpiry)
                    .build()
            }),
        }
    }

    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<Arc<VerifiedEnvelope>> {
        self.inner.as_ref()?.get(key).map(|e| e.envelope)
    }

    /// Remembers `envelope` for `ttl` (the time left until it expires). A zero `ttl` is
    /// not stored.
    pub(crate) fn insert(&self, key: [u8; 32], envelope: Arc<VerifiedEnvelope>, ttl: Duration) {
        if let (Some(cache), false) = (&self.inner, ttl.is_zero()) {
            cache.insert(key, Entry { envelope, ttl });
        }
    }

    /// How many envelopes are held (approximate while evictions are pending).
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
