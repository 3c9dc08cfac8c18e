//! The verified-envelope cache: what does not depend on the clock or the request is
//! checked once per passport and remembered until the passport expires.
//!
//! A passport has one identity, its `passport_id` (SHA-256 of its JCS form): both
//! signatures cover the canonical form, so every serialization of one passport verifies
//! alike. The cache holds each verified passport once, under its `passport_id`, bounded
//! in bytes; a second, count-bounded map remembers which received byte strings (by
//! SHA-256) are serializations of which `passport_id`, so that the common case, an agent
//! reusing the same header, skips the parse as well. Entries are added only after a whole
//! request verified (both signatures and the scope), so a request that fails any check
//! leaves nothing behind.

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

#[derive(Clone, Copy)]
struct Alias {
    passport_id: [u8; 32],
    ttl: Duration,
}

struct UntilExpiry;

impl Expiry<[u8; 32], Entry> for UntilExpiry {
    fn expire_after_create(&self, _: &[u8; 32], entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl Expiry<[u8; 32], Alias> for UntilExpiry {
    fn expire_after_create(&self, _: &[u8; 32], alias: &Alias, _: Instant) -> Option<Duration> {
        Some(alias.ttl)
    }
}

struct Maps {
    by_id: Cache<[u8; 32], Entry>,
    by_raw: Cache<[u8; 32], Alias>,
}

/// Verified passports keyed by `passport_id`, and the serializations seen of each.
#[derive(Clone)]
pub struct EnvelopeCache {
    /// `None` when the cache is turned off (capacity 0).
    inner: Option<Arc<Maps>>,
}

/// Where [`EnvelopeCache`] found a passport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// This exact serialization was seen before.
    Serialization,
    /// Another serialization of the same passport was verified before.
    PassportId,
    /// Not in the cache: the envelope was verified for this request.
    Nowhere,
}

impl EnvelopeCache {
    /// A cache remembering at most `capacity` serializations and `max_bytes` of
    /// verified passports; a `capacity` of 0 turns it off.
    pub fn new(capacity: u64, max_bytes: u64) -> EnvelopeCache {
        EnvelopeCache {
            inner: (capacity > 0).then(|| {
                Arc::new(Maps {
                    by_id: Cache::builder()
                        .max_capacity(max_bytes)
                        .weigher(|_, e: &Entry| {
                            u32::try_from(e.envelope.heap_bytes()).unwrap_or(u32::MAX)
                        })
                        .expire_after(UntilExpiry)
                        .build(),
                    by_raw: Cache::builder()
                        .max_capacity(capacity)
                        .expire_after(UntilExpiry)
                        .build(),
                })
            }),
        }
    }

    /// The verified passport whose received bytes hash to `raw_sha256`.
    pub(crate) fn get_serialization(&self, raw_sha256: &[u8; 32]) -> Option<Arc<VerifiedEnvelope>> {
        let maps = self.inner.as_ref()?;
        let alias = maps.by_raw.get(raw_sha256)?;
        maps.by_id.get(&alias.passport_id).map(|e| e.envelope)
    }

    /// The verified passport with this `passport_id`.
    pub(crate) fn get_passport(&self, passport_id: &[u8; 32]) -> Option<Arc<VerifiedEnvelope>> {
        self.inner
            .as_ref()?
            .by_id
            .get(passport_id)
            .map(|e| e.envelope)
    }

    /// Remembers, after a whole request verified, the passport and this serialization of
    /// it, for `ttl` (the time left until it expires). A zero `ttl` is not stored.
    pub(crate) fn remember(
        &self,
        raw_sha256: [u8; 32],
        envelope: &Arc<VerifiedEnvelope>,
        found: Found,
        ttl: Duration,
    ) {
        let Some(maps) = &self.inner else { return };
        if ttl.is_zero() || found == Found::Serialization {
            return;
        }
        let passport_id = envelope.envelope.passport_id();
        if found == Found::Nowhere {
            maps.by_id.insert(
                passport_id,
                Entry {
                    envelope: Arc::clone(envelope),
                    ttl,
                },
            );
        }
        maps.by_raw.insert(raw_sha256, Alias { passport_id, ttl });
    }

    /// How many passports are held (approximate while evictions are pending).
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |m| {
            m.by_id.run_pending_tasks();
            m.by_id.entry_count()
        })
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
