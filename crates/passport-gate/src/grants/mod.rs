//! Requester binding: is the principal the requester, or has it granted the requester an
//! x/authz authorization for `MsgStartInference` (or the configured message type)?
//! Answers come from a [`GrantSource`] (a static list, or a chain node's REST API)
//! through the [`GrantCache`]; accounts and their keys from an [`AccountSource`] through
//! the [`AccountCache`]; both caches are a [`LookupCache`]. With a
//! [`RequesterSignature`], the requester must prove itself with Gonka's native request
//! signature.

#[cfg(feature = "lcd")]
mod lcd;

#[cfg(feature = "lcd")]
pub use lcd::LcdGrantSource;

mod accounts;
mod cache;
mod native;

pub use accounts::{Account, AccountCache, AccountFuture, AccountSource, StaticAccounts};
pub use cache::{LookupCache, Weigh};
pub use native::{
    RequesterSignature, RequesterSignatureProblem, RequesterSignatureSettings, Seen, SeenSignatures,
};

use passport_core::crypto::{check_address, AddressProblem};
use passport_core::time::Timestamp;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The message type a principal must have granted for inference (the default: x/authz's
/// own meaning, on every chain version).
pub const START_INFERENCE_MSG: &str = "/inference.inference.MsgStartInference";

/// The legacy warm-key marker: the newest inference keeper answers a
/// `GranteesByMessageType` query for `MsgStartInference` from grants of this type (spec
/// section 11). Set it as [`Binding::msg_type_url`](crate::layer::Binding) to follow
/// that keeper.
pub const CLAIM_REWARDS_MSG: &str = "/inference.inference.MsgClaimRewards";

/// Checks the requester value before anything is looked up or cached for it: it must be
/// a canonical account address (at most 90 characters, lowercase bech32, not bech32m,
/// 20-byte payload) with the principal's prefix, which the verifier already held to
/// this chain's. The requester header is not signed, so without this an arbitrary value
/// would size the cache keys and the chain queries.
pub fn check_requester(principal: &str, requester: &str) -> Result<(), AddressProblem> {
    let prefix = principal.rsplit_once('1').map_or("", |(hrp, _)| hrp);
    check_address(prefix, requester)
}

/// One x/authz grant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Grant {
    /// Who granted.
    pub granter: String,
    /// Who may act.
    pub grantee: String,
    /// For which message type.
    pub msg_type_url: String,
    /// When the grant ends, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Timestamp>,
}

/// Whether two message type URLs name one message: one leading `/` is trimmed from each
/// before comparing, as newer chain versions do, so a grant stored as
/// `inference.inference.MsgStartInference` counts for `/inference.inference.MsgStartInference`.
pub fn same_msg_type(a: &str, b: &str) -> bool {
    a.strip_prefix('/').unwrap_or(a) == b.strip_prefix('/').unwrap_or(b)
}

/// Whether a grant with `expiration` still counts at `now`. On chain, x/authz drops a
/// grant only when its expiration is strictly before the block time, so a grant
/// expiring exactly now still authorizes.
pub fn grant_is_live(expiration: Option<Timestamp>, now: Timestamp) -> bool {
    expiration.is_none_or(|t| now <= t)
}

/// A grant query that did not produce an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantQueryError(pub String);

impl fmt::Display for GrantQueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GrantQueryError {}

/// What a grant source returns.
pub type GrantFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Grant>, GrantQueryError>> + Send + 'a>>;

/// Where grants come from. An empty list means "no grant"; an error means the source
/// could not be asked, and is never taken as "no grant".
pub trait GrantSource: Send + Sync + 'static {
    /// The grants from `granter` to `grantee` for `msg_type_url`.
    fn grants<'a>(
        &'a self,
        granter: &'a str,
        grantee: &'a str,
        msg_type_url: &'a str,
    ) -> GrantFuture<'a>;
}

/// A fixed list of grants, from configuration or a test vector.
#[derive(Clone, Debug, Default)]
pub struct StaticGrants(pub Vec<Grant>);

impl GrantSource for StaticGrants {
    fn grants<'a>(
        &'a self,
        granter: &'a str,
        grantee: &'a str,
        msg_type_url: &'a str,
    ) -> GrantFuture<'a> {
        let found = self
            .0
            .iter()
            .filter(|g| {
                g.granter == granter
                    && g.grantee == grantee
                    && same_msg_type(&g.msg_type_url, msg_type_url)
            })
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }
}

#[derive(Clone, Debug)]
enum Decision {
    Granted { expiration: Option<Timestamp> },
    NotGranted,
}

impl Weigh for Decision {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Decision>()
    }
}

/// How the grant cache behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantCacheSettings {
    /// How long a found grant is trusted (the reference keeps grants 2 minutes).
    pub ttl: Duration,
    /// How long "no grant" is remembered; shorter, so a new grant takes effect quickly.
    pub negative_ttl: Duration,
    /// The longest a query may take before it counts as failed.
    pub query_timeout: Duration,
    /// How long a failed query is remembered as a failure (answered 503 without asking
    /// the chain again).
    pub failure_ttl: Duration,
    /// The most bytes cached answers may take (keys included).
    pub max_bytes: u64,
    /// The most grant queries in flight at once; a miss beyond it fails at once (503,
    /// remembered for `failure_ttl`) instead of queueing on the chain node. Anyone can
    /// make a passport for a key of their own and name a new requester per request, so
    /// without this bound one client could hold a chain-node connection per request.
    pub max_concurrent_queries: usize,
}

impl Default for GrantCacheSettings {
    fn default() -> Self {
        GrantCacheSettings {
            ttl: Duration::from_secs(120),
            negative_ttl: Duration::from_secs(10),
            query_timeout: Duration::from_secs(15),
            failure_ttl: Duration::from_secs(1),
            max_bytes: 16 << 20,
            max_concurrent_queries: 32,
        }
    }
}

/// Outcome counts of the grant cache, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantLookup {
    /// The answer came from the cache.
    pub hit: bool,
}

/// Cached answers to "may `grantee` act for `granter`?". Concurrent misses for one key
/// wait on a single query; a failed query is cached as a failure for `failure_ttl`.
/// The cache is bounded in bytes, not entries, so long keys cannot inflate it.
#[derive(Clone)]
pub struct GrantCache {
    source: Arc<dyn GrantSource>,
    cache: LookupCache<(String, String, String), Decision>,
}

impl fmt::Debug for GrantCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantCache")
            .field("settings", self.cache.settings())
            .finish_non_exhaustive()
    }
}

impl GrantCache {
    /// A cache in front of `source`.
    pub fn new(source: Arc<dyn GrantSource>, settings: GrantCacheSettings) -> GrantCache {
        GrantCache {
            source,
            cache: LookupCache::new(settings, "grant"),
        }
    }

    /// Whether `principal` is `requester`, or has granted `requester` `msg_type_url`
    /// with a grant that has not expired at `now`. The second value says whether the
    /// answer came from the cache.
    pub async fn is_authorized(
        &self,
        principal: &str,
        requester: &str,
        msg_type_url: &str,
        now: Timestamp,
    ) -> Result<(bool, GrantLookup), GrantQueryError> {
        if principal == requester {
            return Ok((true, GrantLookup { hit: true }));
        }
        let key = (
            principal.to_owned(),
            requester.to_owned(),
            msg_type_url.to_owned(),
        );
        let (decision, hit) = self
            .cache
            .get(key, self.load(principal, requester, msg_type_url, now))
            .await?;
        let granted = match decision {
            Decision::Granted { expiration } => grant_is_live(expiration, now),
            Decision::NotGranted => false,
        };
        Ok((granted, GrantLookup { hit }))
    }

    async fn load(
        &self,
        granter: &str,
        grantee: &str,
        msg: &str,
        now: Timestamp,
    ) -> Result<(Decision, Duration), GrantQueryError> {
        let settings = self.cache.settings();
        let grants = self.source.grants(granter, grantee, msg).await?;
        // Among live matching grants, one without expiry wins, else the latest expiry.
        let live: Vec<Option<Timestamp>> = grants
            .iter()
            .filter(|g| {
                g.granter == granter && g.grantee == grantee && same_msg_type(&g.msg_type_url, msg)
            })
            .map(|g| g.expiration)
            .filter(|e| grant_is_live(*e, now))
            .collect();
        let best = if live.contains(&None) {
            Some(None)
        } else {
            live.into_iter().max()
        };
        Ok(match best {
            Some(expiration) => {
                let until_expiry = expiration
                    .map(|t| {
                        Duration::from_secs(
                            u64::try_from(t.unix_seconds() - now.unix_seconds()).unwrap_or(0),
                        )
                    })
                    .unwrap_or(settings.ttl);
                (
                    Decision::Granted { expiration },
                    settings.ttl.min(until_expiry).max(Duration::from_secs(1)),
                )
            }
            None => (Decision::NotGranted, settings.negative_ttl),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        calls: AtomicUsize,
        inner: StaticGrants,
        fail: bool,
        delay: Duration,
    }

    impl GrantSource for Counting {
        fn grants<'a>(&'a self, a: &'a str, b: &'a str, m: &'a str) -> GrantFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                if self.fail {
                    Err(GrantQueryError("down".into()))
                } else {
                    self.inner.grants(a, b, m).await
                }
            })
        }
    }

    fn grant(expiration: Option<Timestamp>) -> Grant {
        Grant {
            granter: "gonka1p".into(),
            grantee: "gonka1r".into(),
            msg_type_url: START_INFERENCE_MSG.into(),
            expiration,
        }
    }

    fn counting(grants: Vec<Grant>, fail: bool, delay: Duration) -> Arc<Counting> {
        Arc::new(Counting {
            calls: AtomicUsize::new(0),
            inner: StaticGrants(grants),
            fail,
            delay,
        })
    }

    const NOW: Timestamp = Timestamp::from_unix_seconds(1_779_364_800);

    #[tokio::test]
    async fn the_principal_itself_needs_no_grant() {
        let src = counting(vec![], false, Duration::ZERO);
        let cache = GrantCache::new(src.clone(), GrantCacheSettings::default());
        assert!(
            cache
                .is_authorized("gonka1p", "gonka1p", START_INFERENCE_MSG, NOW)
                .await
                .unwrap()
                .0
        );
        assert_eq!(src.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_exact_grant_authorizes_and_is_cached() {
        let src = counting(vec![grant(None)], false, Duration::ZERO);
        let cache = GrantCache::new(src.clone(), GrantCacheSettings::default());
        let (ok, lookup) = cache
            .is_authorized("gonka1p", "gonka1r", START_INFERENCE_MSG, NOW)
            .await
            .unwrap();
        assert!(ok && !lookup.hit);
        let (ok, lookup) = cache
            .is_authorized("gonka1p", "gonka1r", START_INFERENCE_MSG, NOW)
            .await
            .unwrap();
        assert!(ok && lookup.hit);
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
        assert!(
            !cache
                .is_authorized("gonka1p", "gonka1r", "/other.Msg", NOW)
                .await
                .unwrap()
                .0
        );
        assert!(
            !cache
                .is_authorized("gonka1x", "gonka1r", START_INFERENCE_MSG, NOW)
                .await
                .unwrap()
                .0
        );
    }

    #[tokio::test]
    async fn an_expired_grant_does_not_authorize() {
        let src = counting(
            vec![grant(Some(NOW.plus_seconds(-1)))],
            false,
            Duration::ZERO,
        );
        let cache = GrantCache::new(src, GrantCacheSettings::default());
        assert!(
            !cache
                .is_authorized("gonka1p", "gonka1r", START_INFERENCE_MSG, NOW)
                .await
                .unwrap()
                .0
        );
        let src = counting(
            vec![grant(Some(NOW.plus_seconds(60)))],
            false,
            Duration::ZERO,
        );
        let cache = GrantCache::new(src, GrantCacheSettings::default());
        assert!(
            cache
                .is_authorized("gonka1p", "gonka1r", START_INFERENCE_MSG, NOW)
                .await
                .unwrap()
                .0
        );
        assert!(
            !cache
                .is_authorized(
                    "gonka1p",
                    "gonka1r",
                    START_INFERENCE_MSG,
                    NOW.plus_seconds(61)
                )
                .await
                .unwrap()
                .0
        );
    }

    #[tokio::test]
    async fn a_grant_expiring_exactly_now_still_authorizes() {
        let src = counting(vec![grant(Some(NOW))], false, Duration::ZERO);
        let cache = GrantCache::new(src, GrantCacheSettings::default());
        assert!(
            cache
                .is_authorized("gonka1p", "gonka1r", START_INFERENCE_MSG, NOW)
                .await
                .unwrap()
                .0
        );
    }

    #[tokio::test]
    async fn a_msg_type_is_compared_without_one_leading_slash() {
        let mut g = grant(None);
        g.msg_type_url = START_INFERENCE_MSG.trim_start_matches('/').to_owned();
        let cache = GrantCache::new(
            Arc::new(StaticGrants(vec![g])),
            GrantCacheSettings::default(),
        );
        assert!(
            cache
                .is_authorized("gonka1p", "gonka1r", START_INFERENCE_MSG, NOW)
                .await
                .unwrap()
                .0
        );
        assert!(same_msg_type("/a.B", "a.B"));
        assert!(!same_msg_type("//a.B", "a.B"));
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_query() {
        let src = counting(vec![grant(None)], false, Duration::from_millis(50));
        let cache = GrantCache::new(src.clone(), GrantCacheSettings::default());
        let lookups =
            (0..16).map(|_| cache.is_authorized("gonka1p", "gonka1r", START_INFERENCE_MSG, NOW));
        for r in futures_join_all(lookups).await {
            assert!(r.unwrap().0);
        }
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn queries_in_flight_are_bounded_and_the_excess_fails_at_once() {
        let src = counting(vec![], false, Duration::from_millis(300));
        let settings = GrantCacheSettings {
            max_concurrent_queries: 4,
            ..GrantCacheSettings::default()
        };
        let cache = GrantCache::new(src.clone(), settings);
        let requesters: Vec<String> = (0..6).map(|i| format!("gonka1r{i}")).collect();
        let started = std::time::Instant::now();
        let lookups = requesters
            .iter()
            .map(|r| cache.is_authorized("gonka1p", r, START_INFERENCE_MSG, NOW));
        let results = futures_join_all(lookups).await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 2);
        assert_eq!(src.calls.load(Ordering::SeqCst), 4);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn failures_are_cached_briefly_as_failures_never_as_no_grant() {
        let src = counting(vec![grant(None)], true, Duration::ZERO);
        let settings = GrantCacheSettings {
            failure_ttl: Duration::from_millis(200),
            ..GrantCacheSettings::default()
        };
        let cache = GrantCache::new(src.clone(), settings);
        for _ in 0..5 {
            assert!(cache
                .is_authorized("gonka1p", "gonka1r", START_INFERENCE_MSG, NOW)
                .await
                .is_err());
        }
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(cache
            .is_authorized("gonka1p", "gonka1r", START_INFERENCE_MSG, NOW)
            .await
            .is_err());
        assert_eq!(src.calls.load(Ordering::SeqCst), 2);

        let slow = counting(vec![grant(None)], false, Duration::from_secs(5));
        let settings = GrantCacheSettings {
            query_timeout: Duration::from_millis(50),
            ..GrantCacheSettings::default()
        };
        let cache = GrantCache::new(slow, settings);
        let err = cache
            .is_authorized("gonka1p", "gonka1r", START_INFERENCE_MSG, NOW)
            .await
            .unwrap_err();
        assert!(err.0.contains("timed out"));
    }

    #[tokio::test]
    async fn the_cache_is_bounded_in_bytes() {
        let src = counting(vec![], false, Duration::ZERO);
        let settings = GrantCacheSettings {
            max_bytes: 64 * 1024,
            ..GrantCacheSettings::default()
        };
        let cache = GrantCache::new(src, settings);
        for i in 0..2_000 {
            let requester = format!("gonka1{i:0>200}");
            cache
                .is_authorized("gonka1p", &requester, START_INFERENCE_MSG, NOW)
                .await
                .unwrap();
        }
        let size = cache.cache.weighted_size().await;
        assert!(size <= 64 * 1024, "{size}");
    }

    async fn futures_join_all<F: Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
        let handles: Vec<_> = futs.map(Box::pin).collect();
        let mut out = Vec::new();
        let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
        // Poll all futures together so that their cache misses overlap.
        std::future::poll_fn(|cx| {
            let mut all_done = true;
            for slot in pending.iter_mut() {
                if let Some(f) = slot {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => {
                            out.push(v);
                            *slot = None;
                        }
                        std::task::Poll::Pending => all_done = false,
                    }
                }
            }
            if all_done {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        out
    }
}
