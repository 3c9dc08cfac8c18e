//! Agent-builder tools as a library: mint a passport, complete one signed by a wallet,
//! sign a request. The `passport-gate` CLI is a thin layer over these functions.

use crate::config::ConfigError;
use crate::crypto::{
    decode_base64, encode_base64, AddressError, AgentKey, AgentSecret, PrincipalKey,
    PrincipalSecret,
};
use crate::envelope::{
    beneficiary_is_valid, parse_strict, signing_document_of, Envelope, EnvelopeError,
    AGENT_KEY_TYPE, AUDIENCE, PRINCIPAL_KEY_TYPE, VERSION,
};
use crate::inspect::{inspect, InspectError};
use crate::time::{Timestamp, TimestampError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Why a passport could not be minted, completed, inspected or a request signed.
#[derive(Debug)]
#[non_exhaustive]
pub enum MintError {
    /// The chain id is empty.
    ChainIdEmpty,
    /// The agent id is empty.
    AgentIdEmpty,
    /// The expiry is not after the issue time.
    ExpiryNotAfterIssue {
        /// The issue time.
        issued_at: Timestamp,
        /// The expiry.
        expires_at: Timestamp,
    },
    /// The lifetime is longer than a verifier accepts.
    LifetimeTooLong {
        /// The passport's lifetime, in whole seconds.
        lifetime_seconds: i128,
        /// The verifier's maximum.
        max_ttl_seconds: u64,
    },
    /// `not_before` is at or after the expiry: the passport would never be valid.
    NeverValid,
    /// The beneficiary is too long or holds control characters.
    BeneficiaryInvalid,
    /// No principal address can be derived under the prefix.
    Address(AddressError),
    /// JSON could not be written or read back (never expected for our own output).
    Json(serde_json::Error),
    /// The envelope we built or completed does not parse.
    Envelope(EnvelopeError),
    /// The principal secret key is not the key the passport names.
    SecretKeyMismatch,
    /// The unsigned envelope is not strict JSON.
    UnsignedNotJson(serde_json::Error),
    /// The unsigned envelope is not a JSON object.
    UnsignedNotObject,
    /// The unsigned envelope's `principal_sig` is not `""`.
    UnsignedAlreadySigned,
    /// The wallet's signature is not strict standard base64.
    SignatureNotBase64,
    /// `principal_pubkey` in the envelope is not a compressed secp256k1 key.
    PrincipalKeyInvalid,
    /// `principal_address` is not the address of `principal_pubkey` under the prefix.
    AddressMismatch {
        /// The address the envelope names.
        claimed: String,
        /// The address derived from `principal_pubkey`.
        derived: String,
    },
    /// The wallet's signature does not verify for the envelope and address.
    SignatureInvalid,
    /// The passport is not strict standard base64.
    PassportNotBase64,
    /// The passport does not parse as an envelope (signing).
    PassportMalformed(EnvelopeError),
    /// The agent key is not the passport's `agent_pubkey`.
    AgentKeyMismatch,
    /// A request field is too long to be framed in the signing payload.
    RequestFieldTooLong,
    /// A time option is not an RFC 3339 timestamp.
    Time {
        /// The option's name, e.g. `not_before` or `--now`.
        option: &'static str,
        /// Why the timestamp was refused.
        source: TimestampError,
    },
    /// The mint options object does not deserialize.
    MintOptions(serde_json::Error),
    /// Both `ttl_seconds` and `expires_at` are given.
    TtlAndExpiry,
    /// `ttl_seconds` is zero or negative.
    TtlNotPositive {
        /// The refused lifetime.
        ttl_seconds: i64,
    },
    /// The expiry (`issued_at` plus the ttl) is after [`Timestamp::LATEST`]: no passport
    /// can spell it.
    ExpiryAfterLatest,
    /// Neither `ttl_seconds` nor `expires_at` is given.
    NoExpiry,
    /// `agent_pubkey` is not base64 of a valid Ed25519 key.
    AgentPubkeyInvalid,
    /// `principal_pubkey` was given to a mint with a secret key.
    PrincipalPubkeyWithSecret,
    /// `principal_pubkey` (the unsigned flow) is not base64 of a compressed secp256k1 key.
    PrincipalPubkeyInvalid,
    /// The passport decodes but is not JSON (inspection).
    PassportNotJson(serde_json::Error),
    /// The passport is JSON but not a well-formed envelope (inspection).
    EnvelopeMalformed(EnvelopeError),
    /// The verify options object does not deserialize.
    VerifyOptions(serde_json::Error),
    /// The verifier refused its configuration.
    Config(Vec<ConfigError>),
    /// The request target is not origin-form.
    UriNotOriginForm {
        /// The refused target.
        uri: String,
    },
}

impl fmt::Display for MintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MintError::ChainIdEmpty => f.write_str("the chain id must not be empty"),
            MintError::AgentIdEmpty => f.write_str("the agent id must not be empty"),
            MintError::ExpiryNotAfterIssue {
                issued_at,
                expires_at,
            } => write!(
                f,
                "expires_at ({expires_at}) must be after issued_at ({issued_at})"
            ),
            MintError::LifetimeTooLong {
                lifetime_seconds,
                max_ttl_seconds,
            } => write!(
                f,
                "the passport would live {lifetime_seconds} s, more than the {max_ttl_seconds} s a verifier accepts (raise --max-ttl-seconds only if the gateway's max_ttl_seconds is raised too)"
            ),
            MintError::NeverValid => f.write_str(
                "not_before must be before expires_at, or the passport is never valid",
            ),
            MintError::BeneficiaryInvalid => f.write_str(
                "the beneficiary must be at most 255 bytes with no control characters",
            ),
            MintError::Address(e) => e.fmt(f),
            MintError::Json(e) => e.fmt(f),
            MintError::Envelope(e) => e.fmt(f),
            MintError::SecretKeyMismatch => {
                f.write_str("the principal secret key does not match the principal public key")
            }
            MintError::UnsignedNotJson(e) => write!(f, "the envelope is not valid JSON: {e}"),
            MintError::UnsignedNotObject => f.write_str("the envelope must be a JSON object"),
            MintError::UnsignedAlreadySigned => {
                f.write_str("the envelope must carry \"principal_sig\": \"\" before signing")
            }
            MintError::SignatureNotBase64 => {
                f.write_str("the signature is not strict standard base64")
            }
            MintError::PrincipalKeyInvalid => {
                f.write_str("principal_pubkey is not a compressed secp256k1 key")
            }
            MintError::AddressMismatch { claimed, derived } => write!(
                f,
                "principal_address {claimed} is not the address of principal_pubkey ({derived})"
            ),
            MintError::SignatureInvalid => f.write_str("the signature does not verify: sign exactly the data printed by `mint --unsigned`, as the principal address"),
            MintError::PassportNotBase64 => f.write_str("the passport is not strict standard base64"),
            MintError::PassportMalformed(e) => write!(f, "the passport is malformed: {e}"),
            MintError::AgentKeyMismatch => {
                f.write_str("the agent key does not match the passport's agent_pubkey")
            }
            MintError::RequestFieldTooLong => f.write_str("a request field is longer than 4 GiB"),
            MintError::Time { option, source } => write!(f, "{option}: {source}"),
            MintError::MintOptions(e) => write!(f, "mint options: {e}"),
            MintError::TtlAndExpiry => f.write_str("give ttl_seconds or expires_at, not both"),
            MintError::TtlNotPositive { ttl_seconds } => {
                write!(f, "ttl_seconds {ttl_seconds}: must be positive")
            }
            MintError::NoExpiry => f.write_str("give ttl_seconds or expires_at"),
            MintError::ExpiryAfterLatest => write!(
                f,
                "ttl: issued_at + ttl is after {}, the latest time a passport can hold (a year has four digits): give a shorter ttl",
                Timestamp::LATEST
            ),
            MintError::AgentPubkeyInvalid => {
                f.write_str("agent_pubkey is not base64 of a valid Ed25519 key")
            }
            MintError::PrincipalPubkeyWithSecret => f.write_str(
                "principal_pubkey is for the unsigned flow; minting uses the secret key's own",
            ),
            MintError::PrincipalPubkeyInvalid => {
                f.write_str("principal_pubkey is not base64 of a compressed secp256k1 key")
            }
            MintError::PassportNotJson(e) => write!(f, "the passport is not JSON: {e}"),
            MintError::EnvelopeMalformed(e) => write!(f, "malformed envelope: {e}"),
            MintError::VerifyOptions(e) => write!(f, "verify options: {e}"),
            MintError::Config(errs) => {
                for (i, e) in errs.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    e.fmt(f)?;
                }
                Ok(())
            }
            MintError::UriNotOriginForm { uri } => write!(
                f,
                "--uri {uri:?}: expected an origin-form target (/path?query, no scheme, host or #fragment)"
            ),
        }
    }
}

impl std::error::Error for MintError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MintError::Address(e) => Some(e),
            MintError::Json(e)
            | MintError::UnsignedNotJson(e)
            | MintError::MintOptions(e)
            | MintError::PassportNotJson(e)
            | MintError::VerifyOptions(e) => Some(e),
            MintError::Envelope(e)
            | MintError::PassportMalformed(e)
            | MintError::EnvelopeMalformed(e) => Some(e),
            MintError::Time { source, .. } => Some(source),
            MintError::Config(errs) => errs.first().map(|e| e as _),
            _ => None,
        }
    }
}

/// Everything a principal decides when it issues a passport.
#[derive(Clone, Debug)]
pub struct PassportSpec {
    /// The chain the passport is valid on.
    pub chain_id: String,
    /// The agent's identifier, e.g. `urn:aps:agent:<id>`.
    pub agent_id: String,
    /// The agent's Ed25519 key.
    pub agent_key: AgentKey,
    /// The principal's secp256k1 key.
    pub principal_key: PrincipalKey,
    /// Bech32 prefix for the principal address.
    pub address_prefix: String,
    /// When the passport is issued.
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// When it starts to be valid, if later than issue.
    pub not_before: Option<Timestamp>,
    /// `None`: every model; `Some(vec![])`: none; otherwise these exact names.
    pub allowed_models: Option<Vec<String>>,
    /// Who the work is for, if not the principal.
    pub beneficiary: Option<String>,
}

/// A passport waiting for the principal's signature (the wallet flow).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsignedPassport {
    /// The envelope JSON with `principal_sig` set to `""`.
    pub envelope_json: Vec<u8>,
    /// The bytes the wallet must sign as ADR-036 `data` (the JCS form of the envelope).
    pub data: Vec<u8>,
    /// The ADR-036 signer: the principal address.
    pub signer: String,
}

impl UnsignedPassport {
    /// What `mint --unsigned` prints (less its `next` hint): `{"envelope": {...},
    /// "sign_arbitrary": {"signer": ..., "data": ...}}`.
    pub fn to_json(&self) -> Result<Value, MintError> {
        Ok(serde_json::json!({
            "envelope": serde_json::from_slice::<Value>(&self.envelope_json).map_err(MintError::Json)?,
            "sign_arbitrary": {
                "signer": self.signer,
                "data": String::from_utf8_lossy(&self.data),
            },
        }))
    }
}

#[derive(Serialize)]
struct KeyOut<'a> {
    #[serde(rename = "type")]
    key_type: &'a str,
    public_key: String,
}

#[derive(Serialize)]
struct ScopeOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_models: Option<&'a [String]>,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_before: Option<String>,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: &'a str,
    audience: &'a str,
    chain_id: &'a str,
    agent_id: &'a str,
    agent_pubkey: KeyOut<'a>,
    principal_address: String,
    principal_pubkey: KeyOut<'a>,
    scope: ScopeOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    beneficiary: Option<&'a str>,
    issued_at: String,
    principal_sig: &'a str,
}

impl PassportSpec {
    /// Refuses what a verifier with `max_ttl_seconds` would reject whatever the time:
    /// an empty chain or agent id, expiry not after issue, a lifetime over the maximum,
    /// `not_before` at or after expiry, an invalid beneficiary, and an expiry after
    /// [`Timestamp::LATEST`], which would be written as a timestamp no verifier parses.
    pub fn check(&self, max_ttl_seconds: u64) -> Result<(), MintError> {
        if self.chain_id.is_empty() {
            return Err(MintError::ChainIdEmpty);
        }
        if self.agent_id.is_empty() {
            return Err(MintError::AgentIdEmpty);
        }
        if self.expires_at > Timestamp::LATEST {
            return Err(MintError::ExpiryAfterLatest);
        }
        let lifetime = self.expires_at.nanos_since(self.issued_at);
        if lifetime <= 0 {
            return Err(MintError::ExpiryNotAfterIssue {
                issued_at: self.issued_at,
                expires_at: self.expires_at,
            });
        }
        if lifetime > i128::from(max_ttl_seconds) * 1_000_000_000 {
            return Err(MintError::LifetimeTooLong {
                lifetime_seconds: lifetime / 1_000_000_000,
                max_ttl_seconds,
            });
        }
        if self.not_before.is_some_and(|nb| nb >= self.expires_at) {
            return Err(MintError::NeverValid);
        }
        if let Some(b) = &self.beneficiary {
            if !beneficiary_is_valid(b) {
                return Err(MintError::BeneficiaryInvalid);
            }
        }
        Ok(())
    }

    fn envelope_json(&self, principal_sig: &str) -> Result<Vec<u8>, MintError> {
        let address = self
            .principal_key
            .address(&self.address_prefix)
            .map_err(MintError::Address)?;
        let out = EnvelopeOut {
            v: VERSION,
            audience: AUDIENCE,
            chain_id: &self.chain_id,
            agent_id: &self.agent_id,
            agent_pubkey: KeyOut {
                key_type: AGENT_KEY_TYPE,
                public_key: self.agent_key.to_base64(),
            },
            principal_address: address,
            principal_pubkey: KeyOut {
                key_type: PRINCIPAL_KEY_TYPE,
                public_key: self.principal_key.to_base64(),
            },
            scope: ScopeOut {
                allowed_models: self.allowed_models.as_deref(),
                expires_at: self.expires_at.to_rfc3339(),
                not_before: self.not_before.map(Timestamp::to_rfc3339),
            },
            beneficiary: self.beneficiary.as_deref(),
            issued_at: self.issued_at.to_rfc3339(),
            principal_sig,
        };
        serde_json::to_vec(&out).map_err(MintError::Json)
    }

    /// The envelope and the exact ADR-036 `data` and signer for a wallet to sign.
    pub fn unsigned(&self, max_ttl_seconds: u64) -> Result<UnsignedPassport, MintError> {
        self.check(max_ttl_seconds)?;
        let envelope_json = self.envelope_json("")?;
        Ok(UnsignedPassport {
            data: signing_document_of(&envelope_json).map_err(MintError::Envelope)?,
            signer: self
                .principal_key
                .address(&self.address_prefix)
                .map_err(MintError::Address)?,
            envelope_json,
        })
    }

    /// Mints the passport with the principal's secret key and returns the
    /// `X-Agent-Passport` header value.
    pub fn mint(
        &self,
        secret: &PrincipalSecret,
        max_ttl_seconds: u64,
    ) -> Result<String, MintError> {
        if secret.public_key() != self.principal_key {
            return Err(MintError::SecretKeyMismatch);
        }
        let unsigned = self.unsigned(max_ttl_seconds)?;
        let sig = secret.sign_adr036(&unsigned.signer, &unsigned.data);
        let json = self.envelope_json(&encode_base64(&sig))?;
        Ok(encode_base64(&json))
    }
}

/// Completes an unsigned envelope (with `principal_sig: ""`) with a wallet's ADR-036
/// signature, checks that signature and the address, and returns the header value.
pub fn attach_signature(
    unsigned_json: &[u8],
    signature_b64: &str,
    address_prefix: &str,
) -> Result<String, MintError> {
    let mut value = parse_strict(unsigned_json).map_err(MintError::UnsignedNotJson)?;
    let Some(obj) = value.as_object_mut() else {
        return Err(MintError::UnsignedNotObject);
    };
    if obj.get("principal_sig") != Some(&Value::String(String::new())) {
        return Err(MintError::UnsignedAlreadySigned);
    }
    let sig = decode_base64(signature_b64.trim()).ok_or(MintError::SignatureNotBase64)?;
    obj.insert("principal_sig".into(), Value::String(encode_base64(&sig)));
    let json = serde_json::to_vec(&value).map_err(MintError::Json)?;
    let envelope = Envelope::parse(&json).map_err(MintError::Envelope)?;
    let key = decode_base64(&envelope.principal_pubkey.public_key)
        .and_then(|b| PrincipalKey::from_compressed(&b))
        .ok_or(MintError::PrincipalKeyInvalid)?;
    let derived = key.address(address_prefix).map_err(MintError::Address)?;
    if derived != envelope.principal_address {
        return Err(MintError::AddressMismatch {
            claimed: envelope.principal_address.clone(),
            derived,
        });
    }
    if !key.verify_adr036(
        &envelope.principal_address,
        &envelope.signing_document(),
        &sig,
    ) {
        return Err(MintError::SignatureInvalid);
    }
    Ok(encode_base64(&json))
}

/// An agent's key bound to one passport, ready to sign many requests: the passport is
/// parsed and canonicalized once.
#[derive(Clone, Debug)]
pub struct AgentSigner {
    agent: AgentSecret,
    passport: String,
    envelope_jcs: Vec<u8>,
    chain_id: String,
    passport_chain_id: String,
}

impl AgentSigner {
    /// Binds `agent` to `passport_b64` for requests to a gateway on `chain_id`. Refuses a
    /// passport that does not parse or names another agent key.
    pub fn new(
        agent: AgentSecret,
        passport_b64: &str,
        chain_id: &str,
    ) -> Result<AgentSigner, MintError> {
        let passport = passport_b64.trim().to_owned();
        let raw = decode_base64(&passport).ok_or(MintError::PassportNotBase64)?;
        let envelope = Envelope::parse(&raw).map_err(MintError::PassportMalformed)?;
        if envelope.agent_pubkey.public_key != agent.public_key().to_base64() {
            return Err(MintError::AgentKeyMismatch);
        }
        Ok(AgentSigner {
            agent,
            envelope_jcs: envelope.jcs().to_vec(),
            passport,
            chain_id: chain_id.to_owned(),
            passport_chain_id: envelope.chain_id,
        })
    }

    /// The passport's `chain_id`. A gateway accepts the passport only on that chain and
    /// checks request signatures with it, so signing with another chain id makes
    /// signatures no gateway accepts (`agent_sig_invalid`); tools warn about it.
    pub fn passport_chain_id(&self) -> &str {
        &self.passport_chain_id
    }

    /// The `X-Agent-Passport` value.
    pub fn passport(&self) -> &str {
        &self.passport
    }

    /// The `X-Agent-Sig` value for `method`, `uri` (path and query as sent) and `body`.
    pub fn sign(&self, method: &str, uri: &str, body: &[u8]) -> Result<String, MintError> {
        let sig = self
            .agent
            .sign_request(&self.chain_id, method, uri, &self.envelope_jcs, body)
            .ok_or(MintError::RequestFieldTooLong)?;
        Ok(encode_base64(&sig))
    }
}

/// Signs one request for `passport_b64` and returns the `X-Agent-Sig` header value.
pub fn sign_request(
    secret: &AgentSecret,
    passport_b64: &str,
    chain_id: &str,
    method: &str,
    uri: &str,
    body: &[u8],
) -> Result<String, MintError> {
    AgentSigner::new(secret.clone(), passport_b64, chain_id)?.sign(method, uri, body)
}

/// The options of `passport-gate mint` as a JSON object, for the language bindings
/// (`bindings/python`, `bindings/node`): they pass their keyword arguments through here so
/// that every refusal and default is the CLI's.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintOptions {
    /// The chain the passport is valid on.
    pub chain_id: String,
    /// The agent's identifier.
    pub agent_id: String,
    /// The agent's Ed25519 public key, standard base64.
    pub agent_pubkey: String,
    /// The principal's compressed public key, base64 (the unsigned flow only).
    #[serde(default)]
    pub principal_pubkey: Option<String>,
    /// Lifetime from issue in seconds (exclusive with `expires_at`).
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// Absolute expiry, RFC 3339.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Start of validity, RFC 3339.
    #[serde(default)]
    pub not_before: Option<String>,
    /// Issue time, RFC 3339 (default: now, whole seconds, as the CLI).
    #[serde(default)]
    pub issued_at: Option<String>,
    /// `None`: every model; `[]`: none; otherwise these exact names.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Who the work is for.
    #[serde(default)]
    pub beneficiary: Option<String>,
    /// Bech32 prefix of the principal address.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The largest lifetime the target gateway accepts.
    #[serde(default = "default_max_ttl_seconds")]
    pub max_ttl_seconds: u64,
}

fn default_prefix() -> String {
    "gonka".into()
}

fn default_max_ttl_seconds() -> u64 {
    3600
}

fn option_time(
    option: &'static str,
    value: &Option<String>,
) -> Result<Option<Timestamp>, MintError> {
    value
        .as_deref()
        .map(|t| Timestamp::parse(t).map_err(|source| MintError::Time { option, source }))
        .transpose()
}

impl MintOptions {
    /// Parses the JSON object a binding sends.
    pub fn from_json(json: &str) -> Result<MintOptions, MintError> {
        serde_json::from_str(json).map_err(MintError::MintOptions)
    }

    /// The passport these options describe for `principal_key`.
    pub fn spec(&self, principal_key: PrincipalKey) -> Result<PassportSpec, MintError> {
        let issued_at = match option_time("issued_at", &self.issued_at)? {
            Some(t) => t,
            None => Timestamp::from_unix_seconds(Timestamp::now().unix_seconds()),
        };
        let expires_at = match (
            self.ttl_seconds,
            option_time("expires_at", &self.expires_at)?,
        ) {
            (Some(_), Some(_)) => return Err(MintError::TtlAndExpiry),
            (Some(ttl), None) if ttl > 0 => issued_at.plus_seconds(ttl),
            (Some(ttl), None) => return Err(MintError::TtlNotPositive { ttl_seconds: ttl }),
            (None, Some(t)) => t,
            (None, None) => return Err(MintError::NoExpiry),
        };
        let agent_key = decode_base64(&self.agent_pubkey)
            .and_then(|b| AgentKey::from_bytes(&b))
            .ok_or(MintError::AgentPubkeyInvalid)?;
        Ok(PassportSpec {
            chain_id: self.chain_id.clone(),
            agent_id: self.agent_id.clone(),
            agent_key,
            principal_key,
            address_prefix: self.prefix.clone(),
            issued_at,
            expires_at,
            not_before: option_time("not_before", &self.not_before)?,
            allowed_models: self.models.clone(),
            beneficiary: self.beneficiary.clone(),
        })
    }

    /// Mints with the principal's secret key: the `X-Agent-Passport` value.
    pub fn mint(&self, secret: &PrincipalSecret) -> Result<String, MintError> {
        if self.principal_pubkey.is_some() {
            return Err(MintError::PrincipalPubkeyWithSecret);
        }
        self.spec(secret.public_key())?
            .mint(secret, self.max_ttl_seconds)
    }

    /// The wallet flow's first half, as `mint --unsigned` prints it: the envelope, the
    /// ADR-036 signer and data, and the next step.
    pub fn unsigned(&self) -> Result<Value, MintError> {
        let key = self
            .principal_pubkey
            .as_deref()
            .and_then(decode_base64)
            .and_then(|b| PrincipalKey::from_compressed(&b))
            .ok_or(MintError::PrincipalPubkeyInvalid)?;
        self.spec(key)?.unsigned(self.max_ttl_seconds)?.to_json()
    }
}

/// What `passport-gate inspect` shows, as JSON: the envelope, its ids, the address derived
/// from `principal_pubkey` and whether the validity window contains `now`. Signatures are
/// not checked (that is [`verify_json`]): [`crate::inspect::Inspection::into_json`].
pub fn inspect_json(passport_b64: &str, prefix: &str, now: Timestamp) -> Result<Value, MintError> {
    inspect(passport_b64, prefix, now, None)?
        .into_json()
        .map_err(MintError::EnvelopeMalformed)
}

impl From<InspectError> for MintError {
    fn from(e: InspectError) -> Self {
        match e {
            InspectError::NotBase64 => MintError::PassportNotBase64,
            InspectError::NotJson(e) => MintError::PassportNotJson(e),
        }
    }
}

/// One request to check with [`verify_json`], as the bindings pass it (JSON).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyOptions {
    /// The gateway's chain id.
    pub chain_id: String,
    /// Verify as of this instant (RFC 3339) instead of now.
    #[serde(default)]
    pub now: Option<String>,
    /// The largest accepted passport lifetime.
    #[serde(default = "default_max_ttl_seconds")]
    pub max_ttl_seconds: u64,
    /// Bech32 prefix of addresses.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The HTTP method.
    pub method: String,
    /// The origin-form request target (path and ?query as sent).
    pub uri: String,
    /// The `X-Agent-Passport` value.
    pub passport: String,
    /// The `X-Agent-Sig` value.
    pub sig: String,
}

impl VerifyOptions {
    /// Parses the JSON object a binding sends.
    pub fn from_json(json: &str) -> Result<VerifyOptions, MintError> {
        serde_json::from_str(json).map_err(MintError::VerifyOptions)
    }
}

/// Verifies one request with the verifier core (the gateway's own checks, with the
/// layer's header reading) and returns the verdict as `passport-gate verify` prints it:
/// `{"ok": true, ...identity}` or `{"ok": false, "status", "code", "message"}`. For tests
/// and tooling: a fresh verifier each call, no replay or revocation state. Errors name the
/// CLI's flags (`--now`, `--uri`): the CLI's `verify` is this function.
pub fn verify_json(options: &VerifyOptions, body: &[u8]) -> Result<Value, MintError> {
    use crate::time::{FixedClock, SystemClock};
    use crate::verifier::{origin_form_target, PASSPORT_HEADER, SIGNATURE_HEADER};
    use crate::{Config, Rejection, Verifier};
    use std::sync::Arc;

    let config = Config {
        max_ttl_seconds: options.max_ttl_seconds,
        address_prefix: options.prefix.clone(),
        // A fresh verifier each call: a cache would never be read again.
        envelope_cache_capacity: 0,
        ..Config::for_chain(options.chain_id.clone())
    };
    let verifier = match option_time("--now", &options.now)? {
        Some(t) => Verifier::with_clock(&config, Arc::new(FixedClock::new(t))),
        None => Verifier::with_clock(&config, Arc::new(SystemClock)),
    }
    .map_err(MintError::Config)?;
    let uri = origin_form_target(&options.uri).ok_or_else(|| MintError::UriNotOriginForm {
        uri: options.uri.clone(),
    })?;
    let mut headers = http::HeaderMap::new();
    let mut unsendable = false;
    for (name, value) in [
        (PASSPORT_HEADER, &options.passport),
        (SIGNATURE_HEADER, &options.sig),
    ] {
        match http::HeaderValue::from_str(value) {
            Ok(v) => {
                headers.insert(name, v);
            }
            Err(_) => unsendable = true,
        }
    }
    let verdict = if unsendable {
        Err(Rejection::HeaderMalformed)
    } else {
        match verifier.passport_headers(&headers) {
            Ok(None) => {
                return Ok(serde_json::json!({
                    "ok": false,
                    "passthrough": true,
                    "message": "no passport: both values are empty, and the layer forwards such a request unverified",
                }))
            }
            Ok(Some(h)) => verifier.verify_request(&h, &options.method, uri, body),
            Err(r) => Err(r),
        }
    };
    Ok(match verdict {
        Ok(agent) => serde_json::json!({
            "ok": true,
            "agent_id": agent.agent_id(),
            "agent_pubkey": agent.agent_key().to_base64(),
            "principal_address": agent.principal_address(),
            "model": agent.model(),
            "beneficiary": agent.beneficiary(),
            "allowed_models": agent.allowed_models(),
            "expires_at": agent.expires_at().to_rfc3339(),
            "envelope_sha256": hex::encode(agent.envelope_sha256()),
            "passport_id": hex::encode(agent.passport_id()),
            "request_body_sha256": hex::encode(agent.body_sha256()),
        }),
        Err(r) => serde_json::json!({
            "ok": false, "status": r.status().as_u16(), "code": r.code(), "message": r.message(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> (PassportSpec, PrincipalSecret, AgentSecret) {
        let principal = PrincipalSecret::from_bytes(&[11u8; 32]).unwrap();
        let agent = AgentSecret::from_bytes(&[12u8; 32]);
        let t = Timestamp::parse("2026-05-21T12:00:00Z").unwrap();
        (
            PassportSpec {
                chain_id: "gonka-mainnet".into(),
                agent_id: "urn:aps:agent:t".into(),
                agent_key: agent.public_key(),
                principal_key: principal.public_key(),
                address_prefix: "gonka".into(),
                issued_at: t,
                expires_at: t.plus_seconds(3600),
                not_before: None,
                allowed_models: None,
                beneficiary: None,
            },
            principal,
            agent,
        )
    }

    #[test]
    fn minting_refuses_what_a_default_verifier_rejects() {
        let (mut s, p, _) = spec();
        s.expires_at = s.issued_at.plus_seconds(3601);
        assert!(matches!(
            s.mint(&p, 3600),
            Err(MintError::LifetimeTooLong {
                lifetime_seconds: 3601,
                max_ttl_seconds: 3600
            })
        ));
        assert!(s.mint(&p, 3600).unwrap_err().to_string().contains("3600"));
        assert!(s.mint(&p, 7200).is_ok());
        s.expires_at = s.issued_at;
        assert!(matches!(
            s.mint(&p, 3600),
            Err(MintError::ExpiryNotAfterIssue { .. })
        ));
        let (mut s, p, _) = spec();
        s.beneficiary = Some("a\nb".into());
        assert!(matches!(
            s.mint(&p, 3600),
            Err(MintError::BeneficiaryInvalid)
        ));
    }

    #[test]
    fn wallet_flow_attaches_a_checked_signature() {
        let (s, p, _) = spec();
        let unsigned = s.unsigned(3600).unwrap();
        let sig = p.sign_adr036(&unsigned.signer, &unsigned.data);
        let header =
            attach_signature(&unsigned.envelope_json, &encode_base64(&sig), "gonka").unwrap();
        assert!(Envelope::parse(&decode_base64(&header).unwrap()).is_ok());
        let other = PrincipalSecret::from_bytes(&[13u8; 32]).unwrap();
        let bad = other.sign_adr036(&unsigned.signer, &unsigned.data);
        assert!(matches!(
            attach_signature(&unsigned.envelope_json, &encode_base64(&bad), "gonka"),
            Err(MintError::SignatureInvalid)
        ));
    }

    #[test]
    fn signing_refuses_a_foreign_agent_key() {
        let (s, p, a) = spec();
        let passport = s.mint(&p, 3600).unwrap();
        assert!(sign_request(&a, &passport, "gonka-mainnet", "POST", "/v1", b"{}").is_ok());
        let other = AgentSecret::from_bytes(&[14u8; 32]);
        assert!(matches!(
            sign_request(&other, &passport, "gonka-mainnet", "POST", "/v1", b"{}"),
            Err(MintError::AgentKeyMismatch)
        ));
    }

    fn options(extra: serde_json::Value) -> MintOptions {
        let (_, _, agent) = spec();
        let mut v = serde_json::json!({
            "chain_id": "gonka-mainnet", "agent_id": "urn:aps:agent:t",
            "agent_pubkey": agent.public_key().to_base64(), "issued_at": "2026-05-21T12:00:00Z",
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        MintOptions::from_json(&v.to_string()).unwrap()
    }

    #[test]
    fn mint_options_need_exactly_one_positive_expiry() {
        let (_, p, _) = spec();
        let both =
            options(serde_json::json!({"ttl_seconds": 60, "expires_at": "2026-05-21T12:01:00Z"}));
        assert!(matches!(both.mint(&p), Err(MintError::TtlAndExpiry)));
        assert_eq!(
            both.mint(&p).unwrap_err().to_string(),
            "give ttl_seconds or expires_at, not both"
        );
        assert!(matches!(
            options(serde_json::json!({})).mint(&p),
            Err(MintError::NoExpiry)
        ));
        assert_eq!(
            options(serde_json::json!({}))
                .mint(&p)
                .unwrap_err()
                .to_string(),
            "give ttl_seconds or expires_at"
        );
        let negative = options(serde_json::json!({"ttl_seconds": -5}));
        assert!(matches!(
            negative.mint(&p),
            Err(MintError::TtlNotPositive { ttl_seconds: -5 })
        ));
        assert_eq!(
            negative.mint(&p).unwrap_err().to_string(),
            "ttl_seconds -5: must be positive"
        );
        assert!(options(serde_json::json!({"ttl_seconds": 60}))
            .mint(&p)
            .is_ok());
        assert!(MintOptions::from_json(
            r#"{"chain_id":"c","agent_id":"a","agent_pubkey":"x","ttl":60}"#
        )
        .is_err());
    }

    #[test]
    fn minting_with_a_secret_refuses_a_separate_principal_pubkey() {
        let (_, p, _) = spec();
        let o = options(
            serde_json::json!({"ttl_seconds": 60, "principal_pubkey": p.public_key().to_base64()}),
        );
        assert!(matches!(
            o.mint(&p),
            Err(MintError::PrincipalPubkeyWithSecret)
        ));
        assert!(o
            .mint(&p)
            .unwrap_err()
            .to_string()
            .contains("unsigned flow"));
        assert!(o.unsigned().is_ok());
    }

    #[test]
    fn inspect_json_reports_the_validity_window_at_now() {
        let (_, p, _) = spec();
        let passport =
            options(serde_json::json!({"ttl_seconds": 60, "not_before": "2026-05-21T12:00:10Z"}))
                .mint(&p)
                .unwrap();
        let at = |t: &str| inspect_json(&passport, "gonka", Timestamp::parse(t).unwrap()).unwrap();
        assert_eq!(at("2026-05-21T12:00:05Z")["state"], "not_yet_valid");
        assert_eq!(at("2026-05-21T12:00:30Z")["state"], "valid");
        assert_eq!(at("2026-05-21T12:02:00Z")["state"], "expired");
        assert_eq!(at("2026-05-21T12:00:30Z")["address_matches"], true);
        assert!(inspect_json("not base64!", "gonka", Timestamp::now()).is_err());
    }

    #[test]
    fn verify_json_reads_the_values_as_the_layer_does() {
        let request = |passport: &str, sig: &str| VerifyOptions {
            chain_id: "gonka-mainnet".into(),
            now: Some("2026-05-21T12:00:30Z".into()),
            max_ttl_seconds: 3600,
            prefix: "gonka".into(),
            method: "POST".into(),
            uri: "/v1".into(),
            passport: passport.into(),
            sig: sig.into(),
        };
        let empty = verify_json(&request("", ""), b"").unwrap();
        assert_eq!(empty["passthrough"], true);
        let spaced = verify_json(&request(" x", "y"), b"").unwrap();
        assert_eq!(spaced["code"], "header_malformed");
        let (_, p, a) = spec();
        let passport = options(serde_json::json!({"ttl_seconds": 60}))
            .mint(&p)
            .unwrap();
        let sig = sign_request(
            &a,
            &passport,
            "gonka-mainnet",
            "POST",
            "/v1",
            br#"{"model":"m"}"#,
        )
        .unwrap();
        let accepted = verify_json(&request(&passport, &sig), br#"{"model":"m"}"#).unwrap();
        assert_eq!(accepted["ok"], true, "{accepted}");
        assert_eq!(
            verify_json(&request(&passport, &sig), br#"{"model":"n"}"#).unwrap()["code"],
            "agent_sig_invalid"
        );
        let mut absolute = request(&passport, &sig);
        absolute.uri = "http://h/v1".into();
        assert!(matches!(
            verify_json(&absolute, br#"{"model":"m"}"#),
            Err(MintError::UriNotOriginForm { .. })
        ));
    }
}
