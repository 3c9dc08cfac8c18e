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

//!
//! The cache needs the `cache` feature (moka). Without it [`EnvelopeCache::new`] builds a
//! cache that holds nothing, and [`crate::Config::validate`] refuses any other
//! `envelope_cache_capacity` than 0, so no configuration asks for a cache it does not get.

use super::VerifiedEnvelope;
use std::sync::Arc;
use std::time::Duration;

/// Verified passports keyed by `passport_id`, and the serializations seen of each.
#[derive(Clone)]
pub struct EnvelopeCache {
    /// `None` when the cache is turned off (capacity 0).
    inner: Option<Arc<maps::Maps>>,
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

/// Whether this build has the envelope cache (the `cache` feature).
pub const CACHE_AVAILABLE: bool = cfg!(feature = "cache");

impl EnvelopeCache {
    /// A cache remembering at most `capacity` serializations and `max_bytes` of
    /// verified passports; a `capacity` of 0 (or a build without the `cache` feature)
    /// turns it off.
    pub fn new(capacity: u64, max_bytes: u64) -> EnvelopeCache {
        EnvelopeCache {
            inner: maps::Maps::new(capacity, max_bytes).map(Arc::new),
        }
    }

    /// The verified passport whose received bytes hash to `raw_sha256`.
    pub(crate) fn get_serialization(&self, raw_sha256: &[u8; 32]) -> Option<Arc<VerifiedEnvelope>> {
        let maps = self.inner.as_ref()?;
        let passport_id = maps.alias(raw_sha256)?;
        maps.passport(&passport_id)
    }

    /// The verified passport with this `passport_id`.
    pub(crate) fn get_passport(&self, passport_id: &[u8; 32]) -> Option<Arc<VerifiedEnvelope>> {
        self.inner.as_ref()?.passport(passport_id)
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
            maps.insert_passport(passport_id, envelope, ttl);
        }
        maps.insert_alias(raw_sha256, passport_id, ttl);
    }

    /// How many passports are held (approximate while evictions are pending).
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |m| m.len())
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(feature = "cache")]
mod maps {
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

    pub(super) struct Maps {
        by_id: Cache<[u8; 32], Entry>,
        by_raw: Cache<[u8; 32], Alias>,
    }

    impl Maps {
        pub(super) fn new(capacity: u64, max_bytes: u64) -> Option<Maps> {
            (capacity > 0).then(|| Maps {
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
        }

        pub(super) fn alias(&self, raw_sha256: &[u8; 32]) -> Option<[u8; 32]> {
            self.by_raw.get(raw_sha256).map(|a| a.passport_id)
        }

        pub(super) fn passport(&self, passport_id: &[u8; 32]) -> Option<Arc<VerifiedEnvelope>> {
            self.by_id.get(passport_id).map(|e| e.envelope)
        }

        pub(super) fn insert_passport(
            &self,
            passport_id: [u8; 32],
            envelope: &Arc<VerifiedEnvelope>,
            ttl: Duration,
        ) {
            let envelope = Arc::clone(envelope);
            self.by_id.insert(passport_id, Entry { envelope, ttl });
        }

        pub(super) fn insert_alias(
            &self,
            raw_sha256: [u8; 32],
            passport_id: [u8; 32],
            ttl: Duration,
        ) {
            self.by_raw.insert(raw_sha256, Alias { passport_id, ttl });
        }

        pub(super) fn len(&self) -> u64 {
            self.by_id.run_pending_tasks();
            self.by_id.entry_count()
        }
    }
}

/// Without the `cache` feature there is no cache: `Maps` has no value, so every lookup
/// misses and nothing is stored.
#[cfg(not(feature = "cache"))]
mod maps {
    use super::VerifiedEnvelope;
    use std::sync::Arc;
    use std::time::Duration;

    pub(super) enum Maps {}

    impl Maps {
        pub(super) fn new(_capacity: u64, _max_bytes: u64) -> Option<Maps> {
            None
        }
        pub(super) fn alias(&self, _: &[u8; 32]) -> Option<[u8; 32]> {
            match *self {}
        }
        pub(super) fn passport(&self, _: &[u8; 32]) -> Option<Arc<VerifiedEnvelope>> {
            match *self {}
        }
        pub(super) fn insert_passport(&self, _: [u8; 32], _: &Arc<VerifiedEnvelope>, _: Duration) {
            match *self {}
        }
        pub(super) fn insert_alias(&self, _: [u8; 32], _: [u8; 32], _: Duration) {
            match *self {}
        }
        pub(super) fn len(&self) -> u64 {
            match *self {}
        }
    }
}
