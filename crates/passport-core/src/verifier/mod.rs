//! The transport-agnostic verifier: decoded passport bytes, the agent signature, the
//! request's method, URI, body and model, and a clock in; a [`VerifiedAgent`] or a
//! [`Rejection`] out.
//!
//! The order of checks is the reference's (spec section "Verification order"), so that
//! a request failing two checks gets the same code from both implementations.

mod admission;
mod cache;
#[cfg(feature = "axum")]
mod extract;
mod model;
mod rejection;
mod request;

pub use admission::{ColdAdmission, ColdPermit};
use cache::Found;
pub use cache::{EnvelopeCache, CACHE_AVAILABLE};
pub use rejection::Rejection;
pub use request::{
    has_passport_headers, origin_form_target, requested_model, signed_target, PassportHeaders,
    MAX_BODY_DEPTH, PASSPORT_HEADER, SIGNATURE_HEADER,
};

use crate::config::{Config, ConfigError};
use crate::crypto::{decode_base64, derive_address, AgentKey, PrincipalKey};
use crate::envelope::{
    beneficiary_is_valid, Envelope, AGENT_KEY_TYPE, AUDIENCE, PRINCIPAL_KEY_TYPE, VERSION,
};
use crate::time::{Clock, SystemClock, Timestamp};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An envelope whose time-independent checks and principal signature passed. This is
/// what the envelope cache holds.
#[derive(Debug)]
pub struct VerifiedEnvelope {
    /// The parsed envelope.
    pub envelope: Envelope,
    /// The decoded agent key.
    pub agent_key: AgentKey,
    /// The decoded principal key.
    pub principal_key: PrincipalKey,
}

impl VerifiedEnvelope {
    /// What the envelope cache charges for this entry, in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.envelope.heap_bytes() + std::mem::size_of::<VerifiedEnvelope>()
    }
}

/// The longest `agent_id` accepted, in bytes: it reaches events, logs and audit files.
pub const MAX_AGENT_ID_BYTES: usize = 256;
/// The longest `model` accepted, in bytes: it reaches events, logs and audit files.
pub const MAX_MODEL_BYTES: usize = 256;

/// A passport whose envelope checks (steps 3 to 10a) passed for one request, found in
/// the cache or verified now. [`Verifier::check_request`] finishes the request with it.
#[derive(Debug)]
pub struct CheckedPassport {
    verified: Arc<VerifiedEnvelope>,
    raw_sha256: [u8; 32],
    found: Found,
    now: Timestamp,
}

impl CheckedPassport {
    /// The verified envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.verified.envelope
    }
    /// The instant of the verdict (the request's one clock reading).
    pub fn now(&self) -> Timestamp {
        self.now
    }
}

/// A request whose passport verified: the identity handed to handlers.
#[derive(Clone, Debug)]
pub struct VerifiedAgent {
    verified: Arc<VerifiedEnvelope>,
    model: String,
    envelope_sha256: [u8; 32],
    body_sha256: [u8; 32],
    verified_at: Timestamp,
}

impl VerifiedAgent {
    /// `agent_id` from the passport.
    pub fn agent_id(&self) -> &str {
        &self.verified.envelope.agent_id
    }
    /// The agent's Ed25519 key.
    pub fn agent_key(&self) -> &AgentKey {
        &self.verified.agent_key
    }
    /// The principal's account address (verified against its key).
    pub fn principal_address(&self) -> &str {
        &self.verified.envelope.principal_address
    }
    /// The principal's secp256k1 key.
    pub fn principal_key(&self) -> &PrincipalKey {
        &self.verified.principal_key
    }
    /// The beneficiary, when the passport names one.
    pub fn beneficiary(&self) -> Option<&str> {
        self.verified.envelope.beneficiary.as_deref()
    }
    /// The models the passport allows (`None`: every model).
    pub fn allowed_models(&self) -> Option<&[String]> {
        self.verified.envelope.scope.allowed_models.as_deref()
    }
    /// The end of the passport's validity.
    pub fn expires_at(&self) -> Timestamp {
        self.verified.envelope.scope.expires_at
    }
    /// The start of the passport's validity, when set.
    pub fn not_before(&self) -> Option<Timestamp> {
        self.verified.envelope.scope.not_before
    }
    /// When the principal issued the passport.
    pub fn issued_at(&self) -> Timestamp {
        self.verified.envelope.issued_at
    }
    /// The chain the passport was issued for.
    pub fn chain_id(&self) -> &str {
        &self.verified.envelope.chain_id
    }
    /// The model the request asked for.
    pub fn model(&self) -> &str {
        &self.model
    }
    /// SHA-256 of the decoded `X-Agent-Passport` bytes this request carried (another
    /// serialization of the same passport has another value; see
    /// [`VerifiedAgent::passport_id`]).
    pub fn envelope_sha256(&self) -> [u8; 32] {
        self.envelope_sha256
    }
    /// The passport's identity: SHA-256 of its RFC 8785 form (see
    /// [`Envelope::passport_id`]).
    pub fn passport_id(&self) -> [u8; 32] {
        self.verified.envelope.passport_id()
    }
    /// SHA-256 of the raw request body.
    pub fn body_sha256(&self) -> [u8; 32] {
        self.body_sha256
    }
    /// When the verifier accepted the request.
    pub fn verified_at(&self) -> Timestamp {
        self.verified_at
    }
    /// The whole verified envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.verified.envelope
    }
}

/// One request to judge, after its headers were decoded.
#[derive(Clone, Copy, Debug)]
pub struct PassportRequest<'a> {
    /// The decoded `X-Agent-Passport` bytes.
    pub passport: &'a [u8],
    /// The decoded `X-Agent-Sig` (anything but 64 bytes fails as `agent_sig_invalid`).
    pub signature: &'a [u8],
    /// The HTTP method as sent, e.g. `POST`.
    pub method: &'a str,
    /// The path plus `?query` when present, as sent.
    pub uri: &'a str,
    /// The raw request body.
    pub body: &'a [u8],
    /// The body's top-level `"model"`.
    pub model: &'a str,
}

/// Cache hit and miss counts since the verifier was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests whose envelope was found verified in the cache.
    pub hits: u64,
    /// Requests whose envelope had to be parsed and checked.
    pub misses: u64,
}

/// Envelope cache hits and misses, counted by a [`Verifier`] as it judges passports.
#[derive(Debug, Default)]
pub struct CacheCounters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheCounters {
    /// The counts so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// The verifier. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Verifier {
    chain_id: String,
    address_prefix: String,
    max_ttl_nanos: i128,
    clock_skew_seconds: i64,
    max_body_size: u64,
    max_passport_bytes: usize,
    cache: EnvelopeCache,
    cold: ColdAdmission,
    clock: Arc<dyn Clock>,
    counters: Arc<CacheCounters>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("chain_id", &self.chain_id)
            .field("address_prefix", &self.address_prefix)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `config`, reading the system clock. Fails when the configuration
    /// does not validate or names no chain.
    pub fn new(config: &Config) -> Result<Verifier, Vec<ConfigError>> {
        Verifier::with_clock(config, Arc::new(SystemClock))
    }

    /// A verifier reading `clock` for "now".
    pub fn with_clock(
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Verifier, Vec<ConfigError>> {
        config.validate()?;
        if config.chain_id.is_empty() {
            return Err(vec![ConfigError {
                key: "chain_id",
                message: "a verifier needs the chain id it serves".into(),
            }]);
        }
        Ok(Verifier {
            chain_id: config.chain_id.clone(),
            address_prefix: config.address_prefix.clone(),
            max_ttl_nanos: i128::from(config.max_ttl_seconds) * 1_000_000_000,
            clock_skew_seconds: config.clock_skew_seconds as i64,
            max_body_size: config.max_body_size,
            max_passport_bytes: usize::try_from(config.max_passport_bytes).unwrap_or(usize::MAX),
            cache: EnvelopeCache::new(
                config.envelope_cache_capacity,
                config.envelope_cache_max_bytes,
            ),
            cold: ColdAdmission::new(
                config.max_concurrent_cold_verifications,
                config.cold_verifications_per_second,
            ),
            clock,
            counters: Arc::default(),
        })
    }

    /// The chain this verifier serves.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// The largest body accepted, in bytes.
    pub fn max_body_size(&self) -> u64 {
        self.max_body_size
    }

    /// Step 1: finds and decodes the passport headers (see
    /// [`PassportHeaders::from_headers`]), refusing first, with `passport_too_large`, a
    /// passport value too long to be decoded at all: strict base64 of
    /// `max_passport_bytes` is never longer than `4 * ceil(max / 3)` characters. The
    /// layer and the CLI both read headers through this.
    pub fn passport_headers(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<Option<PassportHeaders>, Rejection> {
        let longest = self.max_passport_bytes.div_ceil(3).saturating_mul(4);
        if headers.get(SIGNATURE_HEADER).is_some_and(|v| !v.is_empty())
            && headers
                .get(PASSPORT_HEADER)
                .is_some_and(|v| v.len() > longest)
        {
            return Err(Rejection::PassportTooLarge);
        }
        PassportHeaders::from_headers(headers)
    }

    /// The current time on this verifier's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The verified-envelope cache.
    pub fn cache(&self) -> &EnvelopeCache {
        &self.cache
    }

    /// The bound on cold verifications (`max_concurrent_cold_verifications`,
    /// `cold_verifications_per_second`).
    pub fn cold_admission(&self) -> &ColdAdmission {
        &self.cold
    }

    /// Cache hits and misses so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.counters.stats()
    }

    /// Counts cache hits and misses on `counters` (the layer passes its metrics', which
    /// read them at each scrape).
    pub fn count_cache_on(&mut self, counters: Arc<CacheCounters>) {
        self.counters = counters;
    }

    /// Every step from 2 to 11 for a request whose headers were decoded and whose body
    /// is in memory, in the order of spec section 6: the passport
    /// ([`Verifier::check_passport`]), the body ([`Verifier::check_body`]), then the
    /// request ([`Verifier::check_request`]). The layer runs the same three with the body
    /// read in between.
    pub fn verify_request(
        &self,
        headers: &PassportHeaders,
        method: &str,
        uri: &str,
        body: &[u8],
    ) -> Result<VerifiedAgent, Rejection> {
        let passport = self.check_passport(&headers.passport)?;
        let model = self.check_body(body)?;
        self.check_request(passport, &headers.signature, method, uri, body, model)
    }

    /// Steps 3 to 11 for a request whose model the caller already extracted.
    pub fn verify(&self, req: &PassportRequest<'_>) -> Result<VerifiedAgent, Rejection> {
        let passport = self.check_passport(req.passport)?;
        self.check_request(
            passport,
            req.signature,
            req.method,
            req.uri,
            req.body,
            req.model.to_owned(),
        )
    }

    /// Steps 3 to 10a, everything that depends only on the passport and the clock, run
    /// before a byte of the body is read: an unauthenticated client can make the
    /// verifier parse a bounded header and check one secp256k1 signature, never make it
    /// hold a body.
    ///
    /// Rejects a passport over `max_passport_bytes` before parsing it. A passport whose
    /// serialization or `passport_id` is in the cache skips steps 3 to 10a except the
    /// time window (step 6), which is checked on every request.
    ///
    /// A passport whose bytes are not in the cache is a cold verification: it is parsed
    /// and checked up to step 9 first (cheap next to a signature check), and only a
    /// passport that passes them takes a token of [`ColdAdmission`], right before the
    /// principal signature (step 10a); beyond the bound it is refused with
    /// `verification_busy`. Bytes that cannot be a passport therefore never cost a
    /// token, and cached passports never wait behind cold ones.
    pub fn check_passport(&self, passport: &[u8]) -> Result<CheckedPassport, Rejection> {
        self.check_passport_allowing(passport, &|_| true)
    }

    /// [`Verifier::check_passport`] with a principal allowlist: a passport whose
    /// `principal_address` `allows` refuses is refused with `principal_not_allowed`
    /// after step 9 and before any cold-verification token is taken, so that traffic
    /// from principals off the list can never shed a principal on it (spec section
    /// 6.3). A cached passport is checked against `allows` on every request too, since
    /// the list may change.
    pub fn check_passport_allowing(
        &self,
        passport: &[u8],
        allows: &dyn Fn(&str) -> bool,
    ) -> Result<CheckedPassport, Rejection> {
        if passport.len() > self.max_passport_bytes {
            return Err(Rejection::PassportTooLarge);
        }
        let now = self.clock.now();
        let raw_sha256: [u8; 32] = Sha256::digest(passport).into();
        let checked = |verified, found| CheckedPassport {
            verified,
            raw_sha256,
            found,
            now,
        };
        let allowed = |e: &Envelope| {
            if allows(&e.principal_address) {
                Ok(())
            } else {
                Err(Rejection::PrincipalNotAllowed)
            }
        };
        if let Some(v) = self.cache.get_serialization(&raw_sha256) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            self.check_time_window(&v.envelope, now)?;
            allowed(&v.envelope)?;
            return Ok(checked(v, Found::Serialization));
        }
        let envelope = Envelope::parse_hashed(passport, raw_sha256)
            .map_err(|_| Rejection::EnvelopeMalformed)?;
        if envelope.agent_id.len() > MAX_AGENT_ID_BYTES {
            return Err(Rejection::AgentIdTooLong);
        }
        // Another serialization of a passport already verified: the same JCS form is the
        // same parsed value, so every time-independent check has the same outcome.
        if let Some(v) = self.cache.get_passport(&envelope.passport_id()) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            self.check_time_window(&v.envelope, now)?;
            allowed(&v.envelope)?;
            return Ok(checked(v, Found::PassportId));
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let v = Arc::new(self.verify_envelope(envelope, now, &allowed)?);
        Ok(checked(v, Found::Nowhere))
    }

    /// Step 2 on a body in memory: its size, then its top-level `model` (one non-empty
    /// string, at most [`MAX_MODEL_BYTES`]).
    pub fn check_body(&self, body: &[u8]) -> Result<String, Rejection> {
        if body.len() as u64 > self.max_body_size {
            return Err(Rejection::BodyTooLarge);
        }
        let model = requested_model(body)?;
        if model.len() > MAX_MODEL_BYTES {
            return Err(Rejection::ModelTooLong);
        }
        Ok(model)
    }

    /// Steps 10b and 11: the agent signature over this request and the model scope.
    /// Only when both pass is the passport remembered in the cache, so that a request
    /// failing any check leaves nothing behind.
    pub fn check_request(
        &self,
        passport: CheckedPassport,
        signature: &[u8],
        method: &str,
        uri: &str,
        body: &[u8],
        model: String,
    ) -> Result<VerifiedAgent, Rejection> {
        let verified = passport.verified;
        // The signature's length is checked here, with the signature, as the reference
        // does (spec section 2).
        let verifies = <&[u8; 64]>::try_from(signature).is_ok_and(|signature| {
            verified.agent_key.verify_request(
                signature,
                &self.chain_id,
                method,
                uri,
                verified.envelope.jcs(),
                body,
            )
        });
        if !verifies {
            return Err(Rejection::AgentSigInvalid);
        }
        check_model_scope(&verified.envelope, &model)?;
        let left = verified.envelope.scope.expires_at.nanos_since(passport.now);
        let ttl = Duration::from_nanos(u64::try_from(left.max(0)).unwrap_or(u64::MAX));
        self.cache
            .remember(passport.raw_sha256, &verified, passport.found, ttl);
        Ok(VerifiedAgent {
            verified,
            model,
            envelope_sha256: passport.raw_sha256,
            body_sha256: Sha256::digest(body).into(),
            verified_at: passport.now,
        })
    }

    /// Steps 4 to 10a on a cache miss, in the reference's order, with the allowlist
    /// (`allowed`) and the cold-verification bound between step 9 and the one
    /// expensive check, the principal signature.
    fn verify_envelope(
        &self,
        envelope: Envelope,
        now: Timestamp,
        allowed: &dyn Fn(&Envelope) -> Result<(), Rejection>,
    ) -> Result<VerifiedEnvelope, Rejection> {
        self.check_identity(&envelope)?;
        self.check_lifetime(&envelope)?;
        self.check_time_window(&envelope, now)?;
        let principal_key = self.check_principal_key(&envelope)?;
        let agent_key = check_agent_key(&envelope)?;
        check_beneficiary(&envelope)?;
        allowed(&envelope)?;
        let _permit = self.cold.try_admit().ok_or(Rejection::VerificationBusy)?;
        let principal_key = check_principal_signature(&envelope, &principal_key)?;
        // Whether the agent key is a usable point (a decompression, about a tenth of a
        // signature check) is worked out only now, after the token: it decides nothing
        // before step 10b, and a passport shed or refused above never needs it.
        let agent_key = AgentKey::from_wire(&agent_key).ok_or(Rejection::AgentPubkeyMalformed)?;
        Ok(VerifiedEnvelope {
            envelope,
            agent_key,
            principal_key,
        })
    }

    /// Step 4. Rejects another version, another audience, and a passport for another
    /// chain: a passport must not be replayable against a chain its principal did not
    /// name.
    fn check_identity(&self, e: &Envelope) -> Result<(), Rejection> {
        if e.version != VERSION {
            return Err(Rejection::VersionUnknown);
        }
        if e.audience != AUDIENCE {
            return Err(Rejection::AudienceMismatch);
        }
        if e.chain_id != self.chain_id {
            return Err(Rejection::ChainIdMismatch);
        }
        Ok(())
    }

    /// Step 5. Rejects an expiry not after the issue time (malformed), and a lifetime
    /// over `max_ttl_seconds`: a long-lived passport is a long-lived bearer credential
    /// for whoever steals the agent key.
    fn check_lifetime(&self, e: &Envelope) -> Result<(), Rejection> {
        let lifetime = e.scope.expires_at.nanos_since(e.issued_at);
        if lifetime <= 0 {
            return Err(Rejection::EnvelopeMalformed);
        }
        if lifetime > self.max_ttl_nanos {
            return Err(Rejection::TtlTooLong);
        }
        Ok(())
    }

    /// Step 6, run on every request, cached or not. Rejects `issued_at` more than the
    /// skew in the future and `now` before `not_before` (not yet valid), and `now` after
    /// `expires_at` (expired). The skew forgives clock drift on `issued_at` only: the
    /// principal chose `not_before` and `expires_at` deliberately.
    fn check_time_window(&self, e: &Envelope, now: Timestamp) -> Result<(), Rejection> {
        if e.issued_at > now.plus_seconds(self.clock_skew_seconds) {
            return Err(Rejection::EnvelopeNotYetValid);
        }
        if e.scope.not_before.is_some_and(|nb| now < nb) {
            return Err(Rejection::EnvelopeNotYetValid);
        }
        if now > e.scope.expires_at {
            return Err(Rejection::EnvelopeExpired);
        }
        Ok(())
    }

    /// Step 7. Rejects multisig keys (no ADR-036 signature can be checked against one),
    /// any type but `secp256k1`, a key that is not 33 bytes, and an address that is not
    /// the one derived from the key bytes: the address is what grants and audit records
    /// name, so it must be bound to the key that signed. Whether the 33 bytes are a
    /// point is left to the signature check (step 10a), as in the reference: the address
    /// is derived from the bytes alone.
    fn check_principal_key(&self, e: &Envelope) -> Result<[u8; 33], Rejection> {
        let key_type = &e.principal_pubkey.key_type;
        if key_type.to_ascii_lowercase().contains("multisig") {
            return Err(Rejection::PrincipalMultisigUnsupported);
        }
        if key_type != PRINCIPAL_KEY_TYPE {
            return Err(Rejection::PrincipalPubkeyTypeInvalid);
        }
        let key: [u8; 33] = decode_base64(&e.principal_pubkey.public_key)
            .and_then(|b| b.try_into().ok())
            .ok_or(Rejection::PrincipalPubkeyMalformed)?;
        match derive_address(&self.address_prefix, &key) {
            Ok(derived) if derived == e.principal_address => Ok(key),
            _ => Err(Rejection::PrincipalAddressMismatch),
        }
    }
}

/// Step 8. Rejects any type but `ed25519` and a key that is not 32 bytes; returns the 32
/// bytes. A 32-byte key that is not a usable point (off the curve, non-canonical, small
/// order) fails at the agent signature step instead, where the reference fails it (see
/// [`AgentKey::from_wire`]).
fn check_agent_key(e: &Envelope) -> Result<[u8; 32], Rejection> {
    if e.agent_pubkey.key_type != AGENT_KEY_TYPE {
        return Err(Rejection::AgentPubkeyTypeInvalid);
    }
    decode_base64(&e.agent_pubkey.public_key)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or(Rejection::AgentPubkeyMalformed)
}

/// Step 9 (see [`beneficiary_is_valid`]).
fn check_beneficiary(e: &Envelope) -> Result<(), Rejection> {
    match &e.beneficiary {
        Some(b) if !beneficiary_is_valid(b) => Err(Rejection::BeneficiaryInvalid),
        _ => Ok(()),
    }
}

/// Step 10a. Rejects a principal key whose 33 bytes are not a compressed point (no
/// signature verifies under it), and a principal signature that is not strict base64 of
/// 64 bytes, is high-S, or does not verify over the ADR-036 wrapping of the envelope's
/// signing document with the principal address as signer.
fn check_principal_signature(e: &Envelope, key: &[u8; 33]) -> Result<PrincipalKey, Rejection> {
    let key = PrincipalKey::from_compressed(key).ok_or(Rejection::PrincipalSigInvalid)?;
    let sig = decode_base64(&e.principal_sig).ok_or(Rejection::PrincipalSigInvalid)?;
    if key.verify_adr036(&e.principal_address, &e.signing_document(), &sig) {
        Ok(key)
    } else {
        Err(Rejection::PrincipalSigInvalid)
    }
}

/// Step 11. `allowed_models` absent allows every model; `[]` allows none; otherwise the
/// model must match one entry exactly, case-sensitively (model names are identifiers,
/// and folding case could map one name onto another model).
fn check_model_scope(e: &Envelope, model: &str) -> Result<(), Rejection> {
    match &e.scope.allowed_models {
        None => Ok(()),
        Some(list) if list.is_empty() => Err(Rejection::AllowedModelsEmpty),
        Some(list) if list.iter().any(|m| m == model) => Ok(()),
        Some(_) => Err(Rejection::ModelNotAllowed),
    }
}
