//! The requester verified, not trusted: with a [`RequesterSignature`] on the binding,
//! `X-Requester-Address` counts only when Gonka's native request signature
//! (`passport_core::gonka`) verifies with the requester's on-chain key.

use super::AccountCache;
use passport_core::crypto::{check_address, AddressProblem};
use passport_core::gonka::{DEFAULT_MAX_ADVANCE_NS, DEFAULT_MAX_AGE_NS};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

/// How native requester signatures are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequesterSignatureSettings {
    /// The transfer address the node behind the gateway signs with (its own address):
    /// the signed input's transfer address when `X-Transfer-Address` is absent, and the
    /// only value `X-Transfer-Address` may have when present.
    pub transfer_address: String,
    /// The account address prefix (`gonka`).
    pub prefix: String,
    /// How old `X-Timestamp` may be, in nanoseconds (default 10 s, the chain's
    /// `TimestampExpiration`).
    pub max_age_ns: i64,
    /// How far ahead `X-Timestamp` may be, in nanoseconds (default 10 s, the chain's
    /// `TimestampAdvance`).
    pub max_advance_ns: i64,
    /// The most `Authorization` values remembered at once (each until its timestamp
    /// leaves the window). A new one beyond it is refused with 503
    /// `requester_sig_store_full` rather than forgetting a live one. Default 262,144
    /// (about 40 MiB at most; at the default 20 s window, 13,000 requests a second).
    pub max_seen: usize,
}

impl RequesterSignatureSettings {
    /// Settings for a node at `transfer_address`, with prefix `gonka`, the default
    /// window and bound.
    pub fn new(transfer_address: impl Into<String>) -> Self {
        RequesterSignatureSettings {
            transfer_address: transfer_address.into(),
            prefix: "gonka".to_owned(),
            max_age_ns: DEFAULT_MAX_AGE_NS,
            max_advance_ns: DEFAULT_MAX_ADVANCE_NS,
            max_seen: 262_144,
        }
    }
}

/// Why [`RequesterSignatureSettings`] cannot be used; one variant per setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequesterSignatureProblem {
    /// `transfer_address` is not a canonical account address with `prefix`.
    TransferAddress(AddressProblem),
    /// `max_age_ns` is negative or more than an hour.
    MaxAge,
    /// `max_advance_ns` is negative or more than an hour.
    MaxAdvance,
    /// `max_seen` is 0.
    MaxSeen,
}

impl fmt::Display for RequesterSignatureProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequesterSignatureProblem::TransferAddress(p) => write!(
                f,
                "transfer_address: not a canonical account address with the prefix: {p}"
            ),
            RequesterSignatureProblem::MaxAge => {
                f.write_str("max_age: must be between 0 and one hour")
            }
            RequesterSignatureProblem::MaxAdvance => {
                f.write_str("max_advance: must be between 0 and one hour")
            }
            RequesterSignatureProblem::MaxSeen => f.write_str("max_seen: must be at least 1"),
        }
    }
}

impl std::error::Error for RequesterSignatureProblem {}

impl RequesterSignatureSettings {
    /// Checks the settings before a gateway starts, so that a typo is a startup error and
    /// never a weaker check: the transfer address is a canonical account address with the
    /// prefix (which checks the prefix too), both windows are within `0..=1 hour` (a
    /// longer window is a longer replay horizon and a larger seen-set), and `max_seen` is
    /// at least 1. Returns every problem.
    pub fn validate(&self) -> Result<(), Vec<RequesterSignatureProblem>> {
        const HOUR_NS: i64 = 3_600_000_000_000;
        let mut problems = Vec::new();
        if let Err(p) = check_address(&self.prefix, &self.transfer_address) {
            problems.push(RequesterSignatureProblem::TransferAddress(p));
        }
        if !(0..=HOUR_NS).contains(&self.max_age_ns) {
            problems.push(RequesterSignatureProblem::MaxAge);
        }
        if !(0..=HOUR_NS).contains(&self.max_advance_ns) {
            problems.push(RequesterSignatureProblem::MaxAdvance);
        }
        if self.max_seen == 0 {
            problems.push(RequesterSignatureProblem::MaxSeen);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Native signature checking on a binding: the settings, the requester accounts, and the
/// `Authorization` values already accepted.
#[derive(Clone, Debug)]
pub struct RequesterSignature {
    /// The settings.
    pub settings: RequesterSignatureSettings,
    /// Where the requester's public key is looked up.
    pub accounts: AccountCache,
    /// The signatures seen within their window.
    pub seen: Arc<SeenSignatures>,
}

impl RequesterSignature {
    /// Checking with `settings`, keys from `accounts`.
    pub fn new(settings: RequesterSignatureSettings, accounts: AccountCache) -> Self {
        let seen = Arc::new(SeenSignatures::new(settings.max_seen));
        RequesterSignature {
            settings,
            accounts,
            seen,
        }
    }
}

/// What [`SeenSignatures::insert`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// New; now remembered.
    Fresh,
    /// Already remembered: a replay.
    Replayed,
    /// The set is full of live entries; not remembered.
    Full,
}

/// A bounded in-memory set of accepted signatures (the 64 bytes `r‖s`), each kept until
/// the nanosecond its timestamp leaves the window (`timestamp + max_age`), after which
/// the window check refuses it anyway. Bounded by `capacity` entries; only signatures
/// that verified are inserted, so unauthenticated requests cannot fill it, and one
/// requester fills it only at its own request rate. Per node, not shared between
/// replicas (the node behind checks again).
#[derive(Debug)]
pub struct SeenSignatures {
    capacity: usize,
    inner: Mutex<SeenInner>,
}

#[derive(Debug, Default)]
struct SeenInner {
    expiry: HashMap<[u8; 64], i64>,
    order: BinaryHeap<Reverse<(i64, [u8; 64])>>,
}

impl SeenSignatures {
    /// An empty set of at most `capacity` live entries.
    pub fn new(capacity: usize) -> Self {
        SeenSignatures {
            capacity,
            inner: Mutex::new(SeenInner::default()),
        }
    }

    /// Remembers `sig` until `expires_ns`, after dropping entries expired at `now_ns`.
    pub fn insert(&self, sig: [u8; 64], expires_ns: i64, now_ns: i64) -> Seen {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(Reverse((t, k))) = inner.order.peek().copied() {
            if t >= now_ns {
                break;
            }
            inner.order.pop();
            if inner.expiry.get(&k) == Some(&t) {
                inner.expiry.remove(&k);
            }
        }
        if inner.expiry.contains_key(&sig) {
            return Seen::Replayed;
        }
        if inner.expiry.len() >= self.capacity {
            return Seen::Full;
        }
        inner.expiry.insert(sig, expires_ns);
        inner.order.push(Reverse((expires_ns, sig)));
        Seen::Fresh
    }

    /// Live entries (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expiry
            .len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated_field_by_field() {
        let node = "gonka1w508d6qejxtdg4y5r3zarvary0c5xw7k2gsyg6";
        assert_eq!(RequesterSignatureSettings::new(node).validate(), Ok(()));
        let mut s = RequesterSignatureSettings::new("gonka1nope");
        s.max_age_ns = -1;
        s.max_seen = 0;
        assert_eq!(
            s.validate(),
            Err(vec![
                RequesterSignatureProblem::TransferAddress(AddressProblem::NotBech32),
                RequesterSignatureProblem::MaxAge,
                RequesterSignatureProblem::MaxSeen,
            ])
        );
    }

    #[test]
    fn a_signature_is_refused_until_it_expires_and_the_set_is_bounded() {
        let seen = SeenSignatures::new(2);
        assert_eq!(seen.insert([1; 64], 100, 0), Seen::Fresh);
        assert_eq!(seen.insert([1; 64], 100, 50), Seen::Replayed);
        assert_eq!(seen.insert([1; 64], 100, 100), Seen::Replayed);
        assert_eq!(seen.insert([2; 64], 200, 100), Seen::Fresh);
        assert_eq!(seen.insert([3; 64], 200, 100), Seen::Full);
        // At 101 the first has left its window: its slot is free again.
        assert_eq!(seen.insert([3; 64], 200, 101), Seen::Fresh);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen.insert([1; 64], 300, 201), Seen::Fresh);
    }
}
