//! Configuration of the verifier and the layer, with the reference's names where it has
//! them, validated as a whole before anything starts.

use crate::crypto::DEFAULT_ADDRESS_PREFIX;
use serde::Deserialize;
use std::fmt;

/// Whether a request without a passport may pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No passport headers: the request passes untouched (the reference's behaviour).
    #[default]
    Optional,
    /// No passport headers: 401 `passport_required`.
    Required,
}

/// The `agent_envelope` block. Every field has the reference's default; see
/// [`Config::validate`] for the accepted ranges.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Master switch; off by default, and off means every request passes untouched.
    pub enabled: bool,
    /// The chain this gateway serves; passports for any other chain are refused.
    pub chain_id: String,
    /// Bech32 prefix of account addresses.
    pub address_prefix: String,
    /// Longest accepted `expires_at - issued_at`, in seconds.
    pub max_ttl_seconds: u64,
    /// How far in the future `issued_at` may be, in seconds.
    pub clock_skew_seconds: u64,
    /// Largest request body read when a passport is present, in bytes.
    pub max_body_size: u64,
    /// Capacity of the attribution queue; a full queue drops events and counts them.
    pub attribution_queue_cap: usize,
    /// How many serializations of verified passports the cache remembers (each is 32
    /// bytes of key plus a small entry); 0 turns the cache off (every request pays the
    /// full verification). Default 100,000; 0 in a build without passport-core's `cache`
    /// feature, which refuses any other value.
    pub envelope_cache_capacity: u64,
    /// How many bytes of verified passports the cache holds at most, counted per entry
    /// from the parsed envelope's sizes (see spec section 6.2).
    pub envelope_cache_max_bytes: u64,
    /// Largest decoded `X-Agent-Passport` accepted, in bytes; a longer header is refused
    /// before it is decoded or parsed. A real passport is well under 2 KiB.
    pub max_passport_bytes: u64,
    /// Bytes of request bodies (with passports) the layer holds at once, across all
    /// requests; beyond it a request is answered 503 `body_budget_exhausted`.
    pub max_buffered_body_bytes: u64,
    /// How long reading a request body (with a passport) may take before 408
    /// `body_read_timeout`: a client that stalls must not hold a buffer forever.
    pub body_read_timeout_ms: u64,
    /// `optional` (default) or `required`.
    pub mode: Mode,
    /// Refuse an exact replay of an accepted signed request (off by default, as in the
    /// reference).
    pub replay_protection: bool,
    /// Live records the in-process replay store holds before refusing new requests.
    pub replay_cache_capacity: u64,
    /// Live replay records one principal may hold (in either store); beyond it its
    /// requests are refused with 429 `replay_quota_exceeded`, so one passport holder
    /// cannot fill the store and refuse everyone else.
    pub replay_records_per_principal: u64,
    /// Passports not in the envelope cache verified in full at once (each costs one
    /// secp256k1 verification); beyond it a request is answered 503
    /// `verification_busy` at once. 0: no bound.
    pub max_concurrent_cold_verifications: u64,
    /// Passports not in the envelope cache verified in full per second (a token bucket
    /// holding one second of them); beyond it 503 `verification_busy`. 0: no bound.
    pub cold_verifications_per_second: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            chain_id: String::new(),
            address_prefix: DEFAULT_ADDRESS_PREFIX.to_owned(),
            max_ttl_seconds: 3600,
            clock_skew_seconds: 30,
            max_body_size: 10 * 1024 * 1024,
            attribution_queue_cap: 1024,
            // No cache where the build has none (the `cache` feature): 0 is the only
            // capacity such a build accepts.
            envelope_cache_capacity: if crate::verifier::CACHE_AVAILABLE {
                100_000
            } else {
                0
            },
            envelope_cache_max_bytes: 64 * 1024 * 1024,
            max_passport_bytes: 16 * 1024,
            max_buffered_body_bytes: 256 * 1024 * 1024,
            body_read_timeout_ms: 30_000,
            mode: Mode::Optional,
            replay_protection: false,
            replay_cache_capacity: 1_000_000,
            replay_records_per_principal: DEFAULT_RECORDS_PER_PRINCIPAL,
            max_concurrent_cold_verifications: 0,
            cold_verifications_per_second: 1000,
        }
    }
}

/// A setting that is out of range, named by its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration key, as written in the file.
    pub key: &'static str,
    /// What is wrong with it and what is accepted.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The default `replay_records_per_principal`: live replay records one principal may hold.
pub const DEFAULT_RECORDS_PER_PRINCIPAL: u64 = 10_000;

/// Largest accepted `max_ttl_seconds`: seven days.
pub const MAX_TTL_LIMIT: u64 = 7 * 24 * 3600;
/// Largest accepted `clock_skew_seconds`.
pub const MAX_CLOCK_SKEW: u64 = 300;
/// Largest accepted `max_body_size` (the signing payload length prefix is 32 bits, and
/// a gateway that buffers more than this per request is a denial-of-service target).
pub const MAX_BODY_LIMIT: u64 = 1 << 30;
/// Largest accepted `max_passport_bytes` (a header larger than this is not a passport).
pub const MAX_PASSPORT_LIMIT: u64 = 1 << 20;

fn range(key: &'static str, value: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError {
            key,
            message: format!("{value} is out of range; accepted: {lo} to {hi}"),
        })
    }
}

impl Config {
    /// An enabled configuration for `chain_id` with every other value at its default.
    pub fn for_chain(chain_id: impl Into<String>) -> Config {
        Config {
            enabled: true,
            chain_id: chain_id.into(),
            ..Config::default()
        }
    }

    /// Checks every setting, returning all errors (one per key) rather than the first,
    /// so an operator fixes a file in one pass. Out-of-range values are errors, never
    /// silently replaced by defaults.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.enabled && self.chain_id.is_empty() {
            errors.push(ConfigError {
                key: "chain_id",
                message: "must be set when enabled is true".into(),
            });
        }
        if self.chain_id.len() > 128 || self.chain_id.chars().any(|c| c.is_control()) {
            errors.push(ConfigError {
                key: "chain_id",
                message: "must be at most 128 bytes with no control characters".into(),
            });
        }
        if let Err(e) = crate::crypto::derive_address(&self.address_prefix, &[2u8; 33]) {
            errors.push(ConfigError {
                key: "address_prefix",
                message: e.to_string(),
            });
        }
        let checks = [
            range("max_ttl_seconds", self.max_ttl_seconds, 1, MAX_TTL_LIMIT),
            range(
                "clock_skew_seconds",
                self.clock_skew_seconds,
                0,
                MAX_CLOCK_SKEW,
            ),
            range("max_body_size", self.max_body_size, 1, MAX_BODY_LIMIT),
            range(
                "attribution_queue_cap",
                self.attribution_queue_cap as u64,
                1,
                1 << 20,
            ),
            range(
                "envelope_cache_capacity",
                self.envelope_cache_capacity,
                0,
                10_000_000,
            ),
            range(
                "envelope_cache_max_bytes",
                self.envelope_cache_max_bytes,
                64 * 1024,
                1 << 36,
            ),
            range(
                "max_passport_bytes",
                self.max_passport_bytes,
                1024,
                MAX_PASSPORT_LIMIT,
            ),
            range(
                "max_buffered_body_bytes",
                self.max_buffered_body_bytes,
                self.max_body_size.min(MAX_BODY_LIMIT),
                1 << 36,
            ),
            range(
                "body_read_timeout_ms",
                self.body_read_timeout_ms,
                1,
                600_000,
            ),
            range(
                "replay_cache_capacity",
                self.replay_cache_capacity,
                1,
                100_000_000,
            ),
            range(
                "replay_records_per_principal",
                self.replay_records_per_principal,
                1,
                100_000_000,
            ),
            range(
                "max_concurrent_cold_verifications",
                self.max_concurrent_cold_verifications,
                0,
                1024,
            ),
            range(
                "cold_verifications_per_second",
                self.cold_verifications_per_second,
                0,
                1_000_000,
            ),
        ];
        errors.extend(checks.into_iter().filter_map(Result::err));
        if !crate::verifier::CACHE_AVAILABLE && self.envelope_cache_capacity > 0 {
            errors.push(ConfigError {
                key: "envelope_cache_capacity",
                message: "this build has no envelope cache (passport-core's `cache` feature is off); set 0".into(),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_defaults_and_disabled() {
        let c = Config::default();
        assert!(!c.enabled);
        assert_eq!(c.max_ttl_seconds, 3600);
        assert_eq!(c.max_body_size, 10 * 1024 * 1024);
        assert_eq!(c.attribution_queue_cap, 1024);
        assert_eq!(c.mode, Mode::Optional);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn enabled_without_chain_id_refuses_to_start() {
        let c = Config {
            enabled: true,
            ..Config::default()
        };
        let errs = c.validate().unwrap_err();
        assert_eq!(errs[0].key, "chain_id");
    }

    #[test]
    fn out_of_range_values_are_named_by_key() {
        let c = Config {
            max_ttl_seconds: 0,
            max_body_size: 0,
            clock_skew_seconds: 3600,
            address_prefix: "Bad".into(),
            ..Config::for_chain("gonka-mainnet")
        };
        let keys: Vec<_> = c.validate().unwrap_err().iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "address_prefix",
                "max_ttl_seconds",
                "clock_skew_seconds",
                "max_body_size"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<Config, _> = serde_json::from_str(r#"{"enabled":true,"chain_idd":"x"}"#);
        assert!(r.is_err());
    }
}
