//! The conformance suite: the vector format, the runner that drives the production
//! layer with each vector, and the generator that writes `conformance/vectors/`.
//!
//! The format is shared with other implementations; see `conformance/README.md`.

mod generate;
mod runner;

pub use generate::generate;
pub use runner::{layer_for, run_paths, run_vector, RunReport, VectorOutcome};

use passport_gate::grants::Grant;
use serde::{Deserialize, Serialize};

/// One conformance vector: a configuration and the requests to send, in order, to one
/// layer instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vector {
    /// Unique name.
    pub name: String,
    /// What the case checks, and why the expectation is what it is.
    pub description: String,
    /// The layer's configuration.
    pub config: VectorConfig,
    /// The requests, sent in order.
    pub steps: Vec<Step>,
}

/// The configuration block of a vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorConfig {
    /// The verifier's chain id.
    pub chain_id: String,
    /// The clock, RFC 3339.
    pub now: String,
    /// Default 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_seconds: Option<u64>,
    /// Default 10 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<u64>,
    /// Default `gonka`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_prefix: Option<String>,
    /// Requester binding with a static grant list; absent means no binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<VectorBinding>,
    /// Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_protection: Option<bool>,
    /// Revoked identities; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<passport_gate::revocation::Revoked>,
    /// A shared revocation set (section 7.2) is configured and has not been read yet;
    /// default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_set_unread: Option<bool>,
    /// `optional` (default, the reference's behaviour) or `required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<VectorMode>,
    /// How long the whole body may take to arrive; default 30000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_read_timeout_ms: Option<u64>,
    /// The replay store, with `replay_protection: true`; absent means the in-process
    /// store with its default capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_store: Option<VectorReplayStore>,
    /// With `replay_protection: true`: the in-process replay store started at this instant
    /// (RFC 3339) and holds no record of earlier runs, so passports issued at or before it
    /// plus `clock_skew_seconds` are refused (section 7.1); absent means no such start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_store_started_at: Option<String>,
    /// Bytes left in the verifier's body budget (`max_buffered_body_bytes`) while the
    /// vector runs, as if other requests held the rest; absent means the whole budget
    /// is free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_budget_free: Option<u64>,
    /// Live replay records one principal may hold (section 8's
    /// `replay_records_per_principal`), with `replay_protection: true`; absent means
    /// the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_records_per_principal: Option<u64>,
    /// The principal allowlist (addresses in normal form); absent means every
    /// principal is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals_allowed: Option<Vec<String>>,
    /// Section 8's `cold_verifications_per_second` (section 6.3); absent means the
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_verifications_per_second: Option<u64>,
    /// Limits per principal and per agent (section 7.5), in the process; absent means
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<VectorLimits>,
}

/// `config.limits`: section 7.5's keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorLimits {
    /// `max_tokens_cap`.
    pub max_tokens_cap: u64,
    /// `default_max_tokens`.
    pub default_max_tokens: u64,
    /// The principal's limits (absent keys: no limit).
    #[serde(default)]
    pub principal: passport_gate::limits::Quota,
    /// The agent's limits (absent keys: no limit).
    #[serde(default)]
    pub agent: passport_gate::limits::Quota,
}

/// `config.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VectorMode {
    /// A request without passport headers passes unverified.
    Optional,
    /// A request without passport headers is refused with `passport_required`.
    Required,
}

/// `config.replay_store`: `"unavailable"` or `{"capacity": N}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VectorReplayStore {
    /// A store in a named state.
    State(ReplayStoreState),
    /// The in-process store holding at most `capacity` live records.
    Bounded(ReplayStoreCapacity),
}

/// A replay store's named state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayStoreState {
    /// Every query fails (a shared store that is down), with fail-closed behaviour.
    Unavailable,
}

/// `{"capacity": N}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayStoreCapacity {
    /// The most live records the store holds.
    pub capacity: u64,
}

/// Requester binding in a vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorBinding {
    /// The header naming the requester.
    pub requester_header: String,
    /// The grants the static source knows.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// A grant source that fails instead of answering: `"error"` or `"timeout"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<GrantFailure>,
    /// The longest a grant query may take; default 15000 (the reference's bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_timeout_ms: Option<u64>,
    /// The message type a grant must cover; default
    /// `/inference.inference.MsgStartInference`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_type_url: Option<String>,
    /// The chain's accounts: address to standard base64 of the 33-byte compressed
    /// secp256k1 key, or null for an account without a key; an address not listed has
    /// no account. Present: a grantee without a key does not count (spec section 7), and
    /// requester signatures take keys from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<std::collections::BTreeMap<String, Option<String>>>,
    /// Requires the requester's native signature (spec section 7); needs `accounts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_signature: Option<VectorRequesterSignature>,
}

/// `binding.requester_signature`: Gonka's native signature, checked as a gateway would.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorRequesterSignature {
    /// The transfer address of the node behind the gateway.
    pub transfer_address: String,
    /// How old `X-Timestamp` may be, in milliseconds; default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// How far ahead `X-Timestamp` may be, in milliseconds; default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_advance_ms: Option<u64>,
    /// How many verified signatures the seen-set holds; default 262144.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seen: Option<u64>,
}

/// How a failing grant source fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantFailure {
    /// Every query answers with an error (the node is down or answers 5xx).
    Error,
    /// Every query hangs until the query timeout.
    Timeout,
}

/// One request and what must happen to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Overrides `config.now` for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    /// The request.
    pub request: StepRequest,
    /// The expected outcome.
    pub expect: Expect,
}

/// A request of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers in order; a name may repeat.
    pub headers: Vec<(String, String)>,
    /// The body, standard base64.
    pub body_base64: String,
    /// How the body arrives; absent means whole and at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_behaviour: Option<BodyBehaviour>,
}

/// `request.body_behaviour`: a body that does not arrive whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BodyBehaviour {
    /// The first N bytes arrive, then the stream fails (the client reset).
    BreakAfter(u64),
    /// The first N bytes arrive, then nothing more, ever.
    StallAfter(u64),
}

/// The expected outcome of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// 200 means forwarded to the inner service.
    pub status: u16,
    /// The rejection code, when `status` is not 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The identity the inner service must see, when a passport was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<ExpectVerified>,
}

/// The identity an accepted passport must produce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectVerified {
    /// `agent_id`.
    pub agent_id: String,
    /// `principal_address`.
    pub principal_address: String,
    /// The body's model.
    pub model: String,
    /// The beneficiary, or null.
    pub beneficiary: Option<String>,
    /// Hex SHA-256 of the decoded passport header.
    pub envelope_sha256: String,
    /// Hex SHA-256 of the body.
    pub request_body_sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn vectors_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/vectors")
    }

    fn write(dir: &Path, vectors: &[Vector]) {
        std::fs::create_dir_all(dir).unwrap();
        for v in vectors {
            let text = serde_json::to_string_pretty(v).unwrap() + "\n";
            std::fs::write(dir.join(format!("{}.json", v.name)), text).unwrap();
        }
    }

    /// Every generated vector passes through the layer, and the checked-in directory
    /// holds exactly what the generator writes. `REGENERATE_VECTORS=1` rewrites it first
    /// (as `passport-gate conformance --generate conformance/vectors` does).
    #[test]
    fn generated_vectors_pass_and_match_the_checked_in_files() {
        let vectors = generate();
        let dir = vectors_dir();
        if std::env::var_os("REGENERATE_VECTORS").is_some() {
            write(&dir, &vectors);
        }
        let tmp = std::env::temp_dir().join(format!("passport-vectors-{}", std::process::id()));
        write(&tmp, &vectors);
        let report = run_paths(std::slice::from_ref(&tmp));
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(report.invalid.is_empty(), "{:?}", report.invalid);
        assert!(report.failed.is_empty(), "{:#?}", report.failed);
        assert_eq!(report.passed, vectors.len());
        for v in &vectors {
            let text = serde_json::to_string_pretty(v).unwrap() + "\n";
            let path = dir.join(format!("{}.json", v.name));
            assert_eq!(
                std::fs::read_to_string(&path).ok().as_deref(),
                Some(text.as_str()),
                "{} differs from the generator",
                path.display()
            );
        }
    }
}
