//! The `aps-agent-envelope-v1` passport: its members, its strict parser and its canonical
//! forms.
//!
//! The parser keeps the bytes it was given. Every hash and every canonical form is derived
//! from what the agent sent, never from a re-serialisation of [`Envelope`], so that a
//! member we do not model can never slip past a signature.

mod jcs;
mod json;

pub(crate) use jcs::write_string as write_json_string;
pub use json::parse_strict;

use crate::time::{Timestamp, TimestampError};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

/// The only version this crate speaks.
pub const VERSION: &str = "aps-agent-envelope-v1";
/// The only audience defined by the spec.
pub const AUDIENCE: &str = "gonka";
/// The key type an agent key must carry.
pub const AGENT_KEY_TYPE: &str = "ed25519";
/// The key type a principal key must carry.
pub const PRINCIPAL_KEY_TYPE: &str = "secp256k1";
/// The longest beneficiary, in bytes of UTF-8.
pub const MAX_BENEFICIARY_BYTES: usize = 255;

/// A public key member: `{"type": ..., "public_key": <base64>}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMember {
    /// The key type as sent (`ed25519`, `secp256k1`). Missing reads as `""`, which the
    /// key checks refuse with their type code, as the reference does.
    #[serde(rename = "type", default)]
    pub key_type: String,
    /// Standard base64 of the key bytes, as sent.
    pub public_key: String,
}

/// What the principal allowed the agent to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every model; `Some(empty)`: no model; otherwise the exact model names.
    pub allowed_models: Option<Vec<String>>,
    /// The end of the validity window.
    pub expires_at: Timestamp,
    /// The start of the validity window, when one was set.
    pub not_before: Option<Timestamp>,
    /// `expires_at` exactly as sent.
    pub expires_at_text: String,
}

/// Where an instant falls against a scope's validity window (without clock skew: for
/// display; the verifier applies its skew itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Before `not_before`.
    NotYetValid,
    /// Inside the window.
    Valid,
    /// After `expires_at`.
    Expired,
}

impl Scope {
    /// Where `now` falls against the window.
    pub fn window_at(&self, now: Timestamp) -> Window {
        if now > self.expires_at {
            Window::Expired
        } else if self.not_before.is_some_and(|nb| now < nb) {
            Window::NotYetValid
        } else {
            Window::Valid
        }
    }
}

/// A parsed passport with the bytes it came from and its canonical forms.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `v`.
    pub version: String,
    /// `audience`.
    pub audience: String,
    /// `chain_id`.
    pub chain_id: String,
    /// `agent_id`.
    pub agent_id: String,
    /// `agent_pubkey`.
    pub agent_pubkey: KeyMember,
    /// `principal_address`.
    pub principal_address: String,
    /// `principal_pubkey`.
    pub principal_pubkey: KeyMember,
    /// `scope`.
    pub scope: Scope,
    /// `beneficiary`; an empty string counts as absent, as in the reference.
    pub beneficiary: Option<String>,
    /// `issued_at`.
    pub issued_at: Timestamp,
    /// `principal_sig`, base64 as sent.
    pub principal_sig: String,
    sha256: [u8; 32],
    passport_id: [u8; 32],
    jcs: Vec<u8>,
    /// Where the `principal_sig` string is in `jcs`: the signing document is `jcs` with
    /// it replaced by `""`, made when a signature check needs it (a passport shed
    /// before that check, and a cached one, never does).
    sig_in_jcs: std::ops::Range<usize>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("agent_id", &self.agent_id)
            .field("principal_address", &self.principal_address)
            .field("chain_id", &self.chain_id)
            .field("sha256", &hex::encode(self.sha256))
            .finish_non_exhaustive()
    }
}

/// Why bytes are not a well-formed envelope. The text is for operators and tools; HTTP
/// answers carry only the code `envelope_malformed`, never this text, because it can quote
/// request bytes.
#[derive(Debug)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not one JSON object of the envelope's shape: a syntax error, a duplicate or unknown
    /// member, a member of the wrong JSON type or a missing required member.
    Json(serde_json::Error),
    /// A required member is present but empty.
    EmptyMember {
        /// The member's dotted path, e.g. `agent_pubkey.public_key`.
        member: &'static str,
    },
    /// A timestamp member outside the strict RFC 3339 profile.
    Timestamp {
        /// The member's dotted path, e.g. `scope.expires_at`.
        member: &'static str,
        /// Why the timestamp was refused.
        source: TimestampError,
    },
    /// `issued_at` names Go's zero time, which the reference cannot tell from a missing one.
    ZeroIssuedAt,
    /// A value could not be written in RFC 8785 canonical form.
    Canonicalize(serde_json::Error),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Json(e) => write!(f, "invalid envelope: {e}"),
            EnvelopeError::EmptyMember { member } => write!(f, "member {member} is empty"),
            EnvelopeError::Timestamp { member, source } => write!(f, "member {member}: {source}"),
            EnvelopeError::ZeroIssuedAt => {
                f.write_str("member issued_at is the zero instant 0001-01-01T00:00:00Z")
            }
            EnvelopeError::Canonicalize(e) => write!(f, "cannot canonicalize: {e}"),
        }
    }
}

impl std::error::Error for EnvelopeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnvelopeError::Json(e) | EnvelopeError::Canonicalize(e) => Some(e),
            EnvelopeError::Timestamp { source, .. } => Some(source),
            EnvelopeError::EmptyMember { .. } | EnvelopeError::ZeroIssuedAt => None,
        }
    }
}

// Deserialized straight from the received bytes: serde's derive refuses duplicate and
// unknown member names (compared after unescaping, case-sensitively) at every depth.
//
// `v`, `audience`, `chain_id` and the key types may be missing: the reference reads a
// missing one as `""` and answers with the code of the check that compares it
// (`version_unknown`, `audience_mismatch`, `chain_id_mismatch`, `*_type_invalid`). Such
// an envelope never reaches a signature check, so the `""` never enters a canonical form
// that anything verifies or keys on. `null` stays a type error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope {
    #[serde(default)]
    v: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    chain_id: String,
    agent_id: String,
    agent_pubkey: KeyMember,
    principal_address: String,
    principal_pubkey: KeyMember,
    scope: WireScope,
    #[serde(default, deserialize_with = "present")]
    beneficiary: Option<String>,
    #[serde(deserialize_with = "unescaped")]
    issued_at: String,
    principal_sig: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireScope {
    // `null` must not mean "absent": the reference reads it as absent, which widens the
    // scope to every model. Deserializing into a plain Vec makes `null` a type error.
    #[serde(default, deserialize_with = "present")]
    allowed_models: Option<Vec<String>>,
    #[serde(deserialize_with = "unescaped")]
    expires_at: String,
    #[serde(default, deserialize_with = "present_unescaped")]
    not_before: Option<String>,
}

/// An optional member that, when present, must have its type: `null` is refused rather
/// than read as absent (the same rule for every optional member).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A timestamp string read from the raw bytes, refusing any escape sequence.
///
/// The reference decodes timestamps with Go's time type straight from the raw JSON
/// string, so `"...00\u005a"` is malformed there although it unescapes to a valid
/// time; refusing escapes here gives one verdict. `serde_json::from_slice` hands a string
/// without escapes to `visit_borrowed_str` and an unescaped copy to `visit_str`.
fn unescaped<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Unescaped;
    impl<'de> serde::de::Visitor<'de> for Unescaped {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a timestamp string without escape sequences")
        }
        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<String, E> {
            Err(E::custom("a timestamp must not contain escape sequences"))
        }
    }
    d.deserialize_str(Unescaped)
}

/// [`unescaped`] for an optional member (`null` refused, as by [`present`]).
fn present_unescaped<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    unescaped(d).map(Some)
}

fn required<'a>(member: &'static str, value: &'a str) -> Result<&'a str, EnvelopeError> {
    if value.is_empty() {
        Err(EnvelopeError::EmptyMember { member })
    } else {
        Ok(value)
    }
}

fn timestamp(member: &'static str, value: &str) -> Result<Timestamp, EnvelopeError> {
    Timestamp::parse(required(member, value)?)
        .map_err(|source| EnvelopeError::Timestamp { member, source })
}

impl Envelope {
    /// Parses the decoded `X-Agent-Passport` bytes.
    ///
    /// Rejects: anything but one JSON object; duplicate member names at any depth
    /// (compared after unescaping); unknown members at any depth; a member of the wrong
    /// JSON type, including `allowed_models: null`; a missing or empty required member; a
    /// timestamp outside the strict RFC 3339 profile. Member names are case-sensitive.
    pub fn parse(raw: &[u8]) -> Result<Envelope, EnvelopeError> {
        Envelope::parse_hashed(raw, Sha256::digest(raw).into())
    }

    /// [`Envelope::parse`] for bytes whose SHA-256 the caller already computed (the
    /// verifier hashes them once, for its cache key).
    pub(crate) fn parse_hashed(raw: &[u8], sha256: [u8; 32]) -> Result<Envelope, EnvelopeError> {
        let wire: WireEnvelope = serde_json::from_slice(raw).map_err(EnvelopeError::Json)?;

        for (name, v) in [
            ("agent_id", &wire.agent_id),
            ("agent_pubkey.public_key", &wire.agent_pubkey.public_key),
            ("principal_address", &wire.principal_address),
            (
                "principal_pubkey.public_key",
                &wire.principal_pubkey.public_key,
            ),
            ("principal_sig", &wire.principal_sig),
        ] {
            required(name, v)?;
        }
        let issued_at = timestamp("issued_at", &wire.issued_at)?;
        // The reference cannot tell Go's zero time from a missing `issued_at`.
        if issued_at == Timestamp::ZERO_INSTANT {
            return Err(EnvelopeError::ZeroIssuedAt);
        }
        let expires_at = timestamp("scope.expires_at", &wire.scope.expires_at)?;
        // Present means a timestamp: `""` is malformed, as in the reference.
        let not_before = match wire.scope.not_before.as_deref() {
            None => None,
            Some(s) => Some(timestamp("scope.not_before", s)?),
        };

        let mut jcs = Vec::with_capacity(raw.len());
        let sig_in_jcs = jcs::write_envelope(&wire, &wire.principal_sig, &mut jcs);
        // The buffer was sized from the received bytes, which may be padded with white
        // space; the cache charges what is kept.
        jcs.shrink_to_fit();
        let passport_id = Sha256::digest(&jcs).into();

        Ok(Envelope {
            version: wire.v,
            audience: wire.audience,
            chain_id: wire.chain_id,
            agent_id: wire.agent_id,
            agent_pubkey: wire.agent_pubkey,
            principal_address: wire.principal_address,
            principal_pubkey: wire.principal_pubkey,
            scope: Scope {
                allowed_models: wire.scope.allowed_models,
                expires_at,
                not_before,
                expires_at_text: wire.scope.expires_at,
            },
            beneficiary: wire.beneficiary.filter(|b| !b.is_empty()),
            issued_at,
            principal_sig: wire.principal_sig,
            sha256,
            passport_id,
            jcs,
            sig_in_jcs,
        })
    }

    /// Bytes this envelope holds on the heap plus its own size: what the envelope cache
    /// charges for it.
    pub fn heap_bytes(&self) -> usize {
        let strings = [
            &self.version,
            &self.audience,
            &self.chain_id,
            &self.agent_id,
            &self.agent_pubkey.key_type,
            &self.agent_pubkey.public_key,
            &self.principal_address,
            &self.principal_pubkey.key_type,
            &self.principal_pubkey.public_key,
            &self.scope.expires_at_text,
            &self.principal_sig,
        ];
        let models = self.scope.allowed_models.as_ref().map_or(0, |m| {
            m.capacity() * std::mem::size_of::<String>()
                + m.iter().map(String::capacity).sum::<usize>()
        });
        std::mem::size_of::<Envelope>()
            + strings.iter().map(|s| s.capacity()).sum::<usize>()
            + self.beneficiary.as_ref().map_or(0, String::capacity)
            + models
            + self.jcs.capacity()
    }

    /// SHA-256 of the decoded header bytes (not of the canonical form).
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// The passport's identity: SHA-256 of its RFC 8785 form. Both signatures cover the
    /// canonical form, so every serialization of one passport (white space, member
    /// order, escapes) verifies alike; every decision about "this passport" (cache,
    /// revocation) must therefore key on this, never on the received bytes.
    pub fn passport_id(&self) -> [u8; 32] {
        self.passport_id
    }

    /// RFC 8785 form of the whole envelope as received: what the agent signs.
    pub fn jcs(&self) -> &[u8] {
        &self.jcs
    }

    /// RFC 8785 form with `principal_sig` set to the empty string: what the principal
    /// signs (wrapped in ADR-036). Made from [`Envelope::jcs`] on each call.
    pub fn signing_document(&self) -> Vec<u8> {
        let (before, after) = (
            self.jcs.get(..self.sig_in_jcs.start).unwrap_or_default(),
            self.jcs.get(self.sig_in_jcs.end..).unwrap_or_default(),
        );
        let mut doc = Vec::with_capacity(before.len() + 2 + after.len());
        doc.extend_from_slice(before);
        doc.extend_from_slice(b"\"\"");
        doc.extend_from_slice(after);
        doc
    }
}

/// The principal's signing document for envelope JSON that is not signed yet (its
/// `principal_sig` may be empty): the same canonical writer the verifier uses, so a
/// minting tool and the verifier cannot disagree about what the principal signs.
pub(crate) fn signing_document_of(json: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let wire: WireEnvelope = serde_json::from_slice(json).map_err(EnvelopeError::Json)?;
    let mut out = Vec::with_capacity(json.len());
    jcs::write_envelope(&wire, "", &mut out);
    Ok(out)
}

/// RFC 8785 canonical form of a value we parsed ourselves with duplicates refused.
pub fn canonical(value: &Value) -> Result<Vec<u8>, EnvelopeError> {
    serde_jcs::to_vec(value).map_err(EnvelopeError::Canonicalize)
}

/// Checks the beneficiary rule: at most 255 bytes of UTF-8 and no C0 or C1 control
/// character (U+0000-001F, U+007F-009F), so that the value can be logged and shown
/// without hiding or forging lines in an audit trail.
pub fn beneficiary_is_valid(b: &str) -> bool {
    b.len() <= MAX_BENEFICIARY_BYTES
        && !b
            .chars()
            .any(|c| matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "v": VERSION,
            "audience": AUDIENCE,
            "chain_id": "gonka-mainnet",
            "agent_id": "urn:aps:agent:a1",
            "agent_pubkey": {"type": "ed25519", "public_key": "AAAA"},
            "principal_address": "gonka1xyz",
            "principal_pubkey": {"type": "secp256k1", "public_key": "AAAA"},
            "scope": {"expires_at": "2026-05-21T13:00:00Z"},
            "issued_at": "2026-05-21T12:00:00Z",
            "principal_sig": "c2ln"
        })
    }

    fn parse_value(v: &Value) -> Result<Envelope, EnvelopeError> {
        Envelope::parse(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn a_complete_envelope_parses() {
        let e = parse_value(&sample()).unwrap();
        assert_eq!(e.agent_id, "urn:aps:agent:a1");
        assert_eq!(e.scope.allowed_models, None);
        assert_eq!(e.beneficiary, None);
    }

    #[test]
    fn unknown_members_are_refused_at_every_depth() {
        let mut v = sample();
        v["extra"] = "x".into();
        assert!(parse_value(&v).is_err());
        let mut v = sample();
        v["scope"]["max_tokens"] = 5.into();
        assert!(parse_value(&v).is_err());
        let mut v = sample();
        v["agent_pubkey"]["kid"] = "1".into();
        assert!(parse_value(&v).is_err());
    }

    #[test]
    fn null_is_never_a_member_value() {
        for (outer, inner) in [
            ("beneficiary", None),
            ("scope", Some("not_before")),
            ("scope", Some("allowed_models")),
        ] {
            let mut v = sample();
            match inner {
                None => v[outer] = Value::Null,
                Some(i) => v[outer][i] = Value::Null,
            }
            assert!(parse_value(&v).is_err(), "{outer}.{inner:?} null");
        }
    }

    #[test]
    fn member_names_are_case_sensitive() {
        let mut v = sample();
        let obj = v.as_object_mut().unwrap();
        let id = obj.remove("agent_id").unwrap();
        obj.insert("Agent_Id".into(), id);
        assert!(parse_value(&v).is_err());
    }

    #[test]
    fn allowed_models_null_is_refused_but_empty_and_absent_differ() {
        let mut v = sample();
        v["scope"]["allowed_models"] = Value::Null;
        assert!(parse_value(&v).is_err());
        v["scope"]["allowed_models"] = serde_json::json!([]);
        assert_eq!(
            parse_value(&v).unwrap().scope.allowed_models,
            Some(Vec::new())
        );
    }

    #[test]
    fn version_audience_chain_and_key_types_may_be_missing_or_empty() {
        for name in ["v", "audience", "chain_id"] {
            let mut v = sample();
            v.as_object_mut().unwrap().remove(name);
            assert!(parse_value(&v).is_ok(), "missing {name}");
            v[name] = "".into();
            assert!(parse_value(&v).is_ok(), "empty {name}");
            v[name] = Value::Null;
            assert!(parse_value(&v).is_err(), "null {name}");
        }
        for key in ["agent_pubkey", "principal_pubkey"] {
            let mut v = sample();
            v[key].as_object_mut().unwrap().remove("type");
            assert_eq!(
                parse_value(&v).unwrap().agent_pubkey.key_type.is_empty(),
                key == "agent_pubkey"
            );
            v[key]["type"] = Value::Null;
            assert!(parse_value(&v).is_err(), "null {key}.type");
        }
    }

    #[test]
    fn timestamps_are_read_without_escapes() {
        let text = serde_json::to_string(&sample()).unwrap();
        let escaped = text.replace("2026-05-21T12:00:00Z", "2026-05-21T12:00:00\\u005a");
        assert!(escaped.contains("\\u005a"));
        assert!(Envelope::parse(escaped.as_bytes()).is_err());
        let mut v = sample();
        v["scope"]["not_before"] = "2026-05-21T12:00:00Z".into();
        let text = serde_json::to_string(&v).unwrap();
        let escaped = text.replacen("\"not_before\":\"2026", "\"not_before\":\"\\u0032026", 1);
        assert!(Envelope::parse(text.as_bytes()).is_ok());
        assert!(Envelope::parse(escaped.as_bytes()).is_err());
    }

    #[test]
    fn not_before_empty_is_malformed() {
        let mut v = sample();
        v["scope"]["not_before"] = "".into();
        assert!(matches!(
            parse_value(&v),
            Err(EnvelopeError::EmptyMember {
                member: "scope.not_before"
            })
        ));
    }

    #[test]
    fn issued_at_at_the_zero_instant_is_malformed() {
        for zero in ["0001-01-01T00:00:00Z", "0001-01-01T05:00:00+05:00"] {
            let mut v = sample();
            v["issued_at"] = zero.into();
            let err = parse_value(&v).unwrap_err();
            assert!(matches!(err, EnvelopeError::ZeroIssuedAt), "{zero}");
            assert_eq!(
                err.to_string(),
                "member issued_at is the zero instant 0001-01-01T00:00:00Z"
            );
        }
    }

    #[test]
    fn required_members_must_be_present_and_non_empty() {
        for name in [
            "agent_id",
            "principal_sig",
            "issued_at",
            "principal_address",
        ] {
            let mut v = sample();
            v.as_object_mut().unwrap().remove(name);
            assert!(
                matches!(parse_value(&v), Err(EnvelopeError::Json(_))),
                "missing {name}"
            );
            let mut v = sample();
            v[name] = "".into();
            assert!(
                matches!(parse_value(&v), Err(EnvelopeError::EmptyMember { member }) if member == name),
                "empty {name}"
            );
        }
    }

    #[test]
    fn a_timestamp_outside_the_profile_names_its_member_and_reason() {
        let mut v = sample();
        v["scope"]["expires_at"] = "2026-05-21t13:00:00Z".into();
        let err = parse_value(&v).unwrap_err();
        assert!(matches!(
            err,
            EnvelopeError::Timestamp {
                member: "scope.expires_at",
                source: TimestampError::UnexpectedCharacter
            }
        ));
        assert_eq!(
            err.to_string(),
            "member scope.expires_at: not an RFC 3339 timestamp: unexpected character"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn unpaired_surrogate_escapes_are_refused() {
        let text = serde_json::to_string(&sample()).unwrap();
        let bad = text.replace("urn:aps:agent:a1", "urn:aps:agent:\\ud800");
        assert!(bad.contains("\\ud800"));
        assert!(Envelope::parse(bad.as_bytes()).is_err());
    }

    #[test]
    fn signing_document_blanks_the_principal_signature() {
        let e = parse_value(&sample()).unwrap();
        let doc = String::from_utf8(e.signing_document().to_vec()).unwrap();
        assert!(doc.contains(r#""principal_sig":"""#));
        let full = String::from_utf8(e.jcs().to_vec()).unwrap();
        assert!(full.contains(r#""principal_sig":"c2ln""#));
    }

    #[test]
    fn beneficiary_rule() {
        assert!(beneficiary_is_valid("acme corp, cost centre 7 – ünï"));
        assert!(beneficiary_is_valid(&"x".repeat(255)));
        assert!(!beneficiary_is_valid(&"x".repeat(256)));
        assert!(!beneficiary_is_valid("a\nb"));
        assert!(!beneficiary_is_valid("a\u{7f}"));
        assert!(!beneficiary_is_valid("a\u{85}"));
        assert!(beneficiary_is_valid("a\u{a0}"));
    }
}
