//! [`LookupCache`]: the bounded cache in front of chain queries, shared by grant and
//! account lookups. Concurrent misses for one key wait on a single query; a failed query
//! is remembered as a failure for `failure_ttl`; answers are bounded in bytes (keys
//! included); at most `max_concurrent_queries` queries are in flight, and a miss beyond
//! that fails at once instead of queueing on the chain node.

use super::{GrantCacheSettings, GrantQueryError};
use moka::future::Cache;
use moka::Expiry;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bytes a key or an answer costs in a [`LookupCache`], roughly (heap bytes plus
/// its own size).
pub trait Weigh {
    /// Approximate bytes.
    fn weigh(&self) -> usize;
}

impl Weigh for String {
    fn weigh(&self) -> usize {
        self.len() + std::mem::size_of::<String>()
    }
}

impl<A: Weigh, B: Weigh, C: Weigh> Weigh for (A, B, C) {
    fn weigh(&self) -> usize {
        self.0.weigh() + self.1.weigh() + self.2.weigh()
    }
}

#[derive(Clone, Debug)]
struct Entry<V> {
    /// `Err`: a failed query, remembered briefly as a failure (never as an answer) so
    /// that a down or slow chain node is not asked again by every request.
    answer: Result<V, GrantQueryError>,
    ttl: Duration,
}

struct EntryTtl;

impl<K, V> Expiry<K, Entry<V>> for EntryTtl {
    fn expire_after_create(&self, _: &K, e: &Entry<V>, _: Instant) -> Option<Duration> {
        Some(e.ttl)
    }
}

/// A cached answer to a chain query: the value, and whether it came from the cache.
pub(crate) type Lookup<V> = Result<(V, bool), GrantQueryError>;

/// Cached answers to one kind of chain query, keyed by `K`. The loader of a miss returns
/// the answer and how long it may be trusted; the cache adds the bounds of
/// [`GrantCacheSettings`] (bytes, query timeout, queries in flight, failure TTL).
#[derive(Clone)]
pub struct LookupCache<K, V> {
    cache: Cache<K, Entry<V>>,
    settings: GrantCacheSettings,
    in_flight: Arc<tokio::sync::Semaphore>,
    what: &'static str,
}

impl<K, V> fmt::Debug for LookupCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupCache")
            .field("what", &self.what)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<K, V> LookupCache<K, V>
where
    K: Hash + Eq + Weigh + Clone + Send + Sync + 'static,
    V: Weigh + Clone + Send + Sync + 'static,
{
    /// A cache for queries about `what` (for error messages: "grant", "account").
    pub fn new(settings: GrantCacheSettings, what: &'static str) -> Self {
        const OVERHEAD: usize = 160;
        LookupCache {
            cache: Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(|k: &K, e: &Entry<V>| {
                    let answer = match &e.answer {
                        Ok(v) => v.weigh(),
                        Err(err) => err.0.len(),
                    };
                    let bytes = k.weigh() + std::mem::size_of::<Entry<V>>() + answer + OVERHEAD;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .expire_after(EntryTtl)
                .build(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent_queries)),
            settings,
            what,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &GrantCacheSettings {
        &self.settings
    }

    /// The answer for `key`, from the cache or from `load` (an answer and its TTL). The
    /// boolean says whether it came from the cache.
    pub(crate) async fn get<F>(&self, key: K, load: F) -> Lookup<V>
    where
        F: Future<Output = Result<(V, Duration), GrantQueryError>>,
    {
        let mut loaded = false;
        let entry = self
            .cache
            .get_with(key, async {
                loaded = true;
                match self.bounded(load).await {
                    Ok((v, ttl)) => Entry { answer: Ok(v), ttl },
                    Err(e) => Entry {
                        answer: Err(e),
                        ttl: self.settings.failure_ttl,
                    },
                }
            })
            .await;
        entry.answer.map(|v| (v, !loaded))
    }

    async fn bounded<F>(&self, load: F) -> Result<(V, Duration), GrantQueryError>
    where
        F: Future<Output = Result<(V, Duration), GrantQueryError>>,
    {
        let _slot = self.in_flight.try_acquire().map_err(|_| {
            GrantQueryError(format!(
                "{} {} queries already in flight",
                self.settings.max_concurrent_queries, self.what
            ))
        })?;
        tokio::time::timeout(self.settings.query_timeout, load)
            .await
            .map_err(|_| {
                GrantQueryError(format!(
                    "{} query timed out after {:?}",
                    self.what, self.settings.query_timeout
                ))
            })?
    }

    #[cfg(test)]
    pub(crate) async fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.weighted_size()
    }
}
