//! Chain accounts and their public keys (`GET /cosmos/auth/v1beta1/accounts/{address}`),
//! cached like grants: a requester's key for its native signature, and whether a grantee
//! has a key at all (the reference counts only grantees with one).

use super::{GrantCacheSettings, GrantQueryError, LookupCache, Weigh};
use passport_core::crypto::PrincipalKey;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What the chain says about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Account {
    /// No account (the node answers 404, code 5).
    Unknown,
    /// An account whose `pub_key` is null (it never signed a transaction).
    NoPublicKey,
    /// An account with a secp256k1 public key.
    Key(PrincipalKey),
}

impl Account {
    /// The public key, when there is one.
    pub fn key(&self) -> Option<&PrincipalKey> {
        match self {
            Account::Key(k) => Some(k),
            _ => None,
        }
    }
}

impl Weigh for Account {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Account>()
    }
}

/// What an account source returns.
pub type AccountFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Account, GrantQueryError>> + Send + 'a>>;

/// Where accounts come from. An error means the source could not be asked, and is
/// never taken as "no account".
pub trait AccountSource: Send + Sync + 'static {
    /// The account at `address`.
    fn account<'a>(&'a self, address: &'a str) -> AccountFuture<'a>;
}

/// A fixed set of accounts (tests, vectors): an address maps to its key, or to `None`
/// for an account without one; an address not in the map has no account.
#[derive(Clone, Debug, Default)]
pub struct StaticAccounts(pub HashMap<String, Option<PrincipalKey>>);

impl AccountSource for StaticAccounts {
    fn account<'a>(&'a self, address: &'a str) -> AccountFuture<'a> {
        let found = match self.0.get(address) {
            None => Account::Unknown,
            Some(None) => Account::NoPublicKey,
            Some(Some(k)) => Account::Key(k.clone()),
        };
        Box::pin(std::future::ready(Ok(found)))
    }
}

/// Cached account lookups, with the bounds of [`GrantCacheSettings`]: an account with a
/// key is trusted for `ttl` (a key, once on chain, does not change for an address), an
/// unknown account or one without a key for `negative_ttl`, a failure for `failure_ttl`.
#[derive(Clone)]
pub struct AccountCache {
    source: Arc<dyn AccountSource>,
    cache: LookupCache<String, Account>,
}

impl fmt::Debug for AccountCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountCache")
            .field("settings", self.cache.settings())
            .finish_non_exhaustive()
    }
}

impl AccountCache {
    /// A cache in front of `source`.
    pub fn new(source: Arc<dyn AccountSource>, settings: GrantCacheSettings) -> AccountCache {
        AccountCache {
            source,
            cache: LookupCache::new(settings, "account"),
        }
    }

    /// The account at `address`, and whether it came from the cache. The caller has
    /// checked that `address` is a canonical account address.
    pub async fn account(&self, address: &str) -> Result<(Account, bool), GrantQueryError> {
        let settings = *self.cache.settings();
        let source = Arc::clone(&self.source);
        self.cache
            .get(address.to_owned(), async move {
                let account = source.account(address).await?;
                let ttl = match account {
                    Account::Key(_) => settings.ttl,
                    _ => settings.negative_ttl,
                };
                Ok((account, ttl))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passport_core::crypto::PrincipalSecret;

    fn key() -> PrincipalKey {
        let mut scalar = [0u8; 32];
        scalar[31] = 1;
        PrincipalSecret::from_bytes(&scalar).unwrap().public_key()
    }

    #[tokio::test]
    async fn accounts_are_unknown_keyless_or_keyed_and_cached() {
        let mut map = HashMap::new();
        map.insert("gonka1a".to_owned(), Some(key()));
        map.insert("gonka1b".to_owned(), None);
        let cache = AccountCache::new(Arc::new(StaticAccounts(map)), GrantCacheSettings::default());
        assert_eq!(
            cache.account("gonka1a").await.unwrap(),
            (Account::Key(key()), false)
        );
        assert_eq!(
            cache.account("gonka1a").await.unwrap(),
            (Account::Key(key()), true)
        );
        assert_eq!(
            cache.account("gonka1b").await.unwrap().0,
            Account::NoPublicKey
        );
        assert_eq!(cache.account("gonka1c").await.unwrap().0, Account::Unknown);
    }
}
