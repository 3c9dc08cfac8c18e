//! Every reason a request with a passport can be refused, with its stable code, HTTP
//! status and one-line message. This is the only place that maps a reason to those.

use http::StatusCode;
use std::fmt;

/// Why a request was refused. One variant per reason; see spec section "Errors".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// Exactly one of `X-Agent-Passport` and `X-Agent-Sig` was sent.
    SigHeaderMismatch,
    /// A header is repeated, not visible ASCII, or not strict base64.
    HeaderMalformed,
    /// The passport header is longer than `max_passport_bytes` allows.
    PassportTooLarge,
    /// The passport is not in the envelope cache and the verifier is already checking
    /// as many uncached passports as it may (at once or this second); retry later.
    VerificationBusy,
    /// The body is larger than the configured limit.
    BodyTooLarge,
    /// The bodies already held for other requests use the whole body budget.
    BodyBudgetExhausted,
    /// The body could not be read to its end (the client stopped sending or reset).
    BodyReadFailed,
    /// The body did not arrive within `body_read_timeout_ms`.
    BodyReadTimeout,
    /// The envelope or the request body is not what the spec requires.
    EnvelopeMalformed,
    /// `agent_id` is longer than 256 bytes.
    AgentIdTooLong,
    /// The body's `model` is longer than 256 bytes.
    ModelTooLong,
    /// `v` is not `aps-agent-envelope-v1`.
    VersionUnknown,
    /// `audience` is not `gonka`.
    AudienceMismatch,
    /// `chain_id` is not the verifier's chain.
    ChainIdMismatch,
    /// The passport lives longer than `max_ttl_seconds`.
    TtlTooLong,
    /// `issued_at` is in the future beyond the skew, or `not_before` has not come.
    EnvelopeNotYetValid,
    /// `expires_at` has passed.
    EnvelopeExpired,
    /// The principal key is a multisig key.
    PrincipalMultisigUnsupported,
    /// The principal key type is not `secp256k1`.
    PrincipalPubkeyTypeInvalid,
    /// The principal key is not base64 of 33 bytes.
    PrincipalPubkeyMalformed,
    /// `principal_address` is not the address of `principal_pubkey`.
    PrincipalAddressMismatch,
    /// The agent key type is not `ed25519`.
    AgentPubkeyTypeInvalid,
    /// The agent key is not base64 of 32 bytes.
    AgentPubkeyMalformed,
    /// The beneficiary is too long or holds control characters.
    BeneficiaryInvalid,
    /// The principal's ADR-036 signature does not verify (or the key is no point).
    PrincipalSigInvalid,
    /// The agent's request signature does not verify (not 64 bytes, or the key is not
    /// a usable point, or the signature is wrong).
    AgentSigInvalid,
    /// `allowed_models` is `[]`: the passport allows no model.
    AllowedModelsEmpty,
    /// The requested model is not in `allowed_models`.
    ModelNotAllowed,
    /// The gateway serves only the principals on its allowlist, and this one is not.
    PrincipalNotAllowed,
    /// The requester header is not one lowercase bech32 account address with this
    /// chain's prefix (answered as `principal_mismatch`, before any grant lookup).
    RequesterAddressInvalid,
    /// The principal is neither the requester nor a granter to it.
    PrincipalMismatch,
    /// The chain could not be asked about grants; retry later.
    ChainQueryFailed,
    /// Requester signatures are required (`requester_signature = "gonka"`) and
    /// `Authorization` or `X-Timestamp` is absent.
    RequesterSigMissing,
    /// A native signature header is repeated, not visible ASCII, or malformed
    /// (`Authorization` not padded base64 of 64 bytes `r‖s` with `r`, `s` in range and
    /// `s` low; `X-Timestamp` not canonical decimal nanoseconds).
    RequesterSigMalformed,
    /// `X-Transfer-Address` is present and is not the configured transfer address.
    RequesterTransferAddressMismatch,
    /// `X-Timestamp` is outside the configured window around the gateway's clock.
    RequesterTimestampOutOfWindow,
    /// The requester has no chain account, or its account holds no public key.
    RequesterPubkeyUnknown,
    /// The native signature does not verify with the requester's on-chain key.
    RequesterSigInvalid,
    /// This `Authorization` was already accepted within its window.
    RequesterSigReplayed,
    /// The set of recently seen `Authorization` values is full of live entries; retry
    /// later.
    RequesterSigStoreFull,
    /// The gateway requires a passport and none was sent.
    PassportRequired,
    /// The passport is on the revocation list.
    PassportRevoked,
    /// A shared revocation set is configured and has not been read yet, so a revoked
    /// passport cannot be told apart; retry later.
    RevocationsUnavailable,
    /// This exact signed request was already accepted while its passport is valid.
    RequestReplayed,
    /// The passport was issued before the gateway started, and the gateway keeps no
    /// replay records across a restart: a request accepted before it could be accepted
    /// again. Refused until the passport expires; mint a new one.
    PassportPredatesStart,
    /// The replay store could not be asked; retry later.
    ReplayStoreUnavailable,
    /// The in-process replay store is full of live records; retry later.
    ReplayStoreFull,
    /// The principal already holds its quota of live replay records; retry later.
    ReplayQuotaExceeded,
}

impl Rejection {
    /// Every variant, in verification order.
    pub const ALL: [Rejection; 48] = [
        Rejection::SigHeaderMismatch,
        Rejection::HeaderMalformed,
        Rejection::PassportTooLarge,
        Rejection::VerificationBusy,
        Rejection::EnvelopeMalformed,
        Rejection::AgentIdTooLong,
        Rejection::VersionUnknown,
        Rejection::AudienceMismatch,
        Rejection::ChainIdMismatch,
        Rejection::TtlTooLong,
        Rejection::EnvelopeNotYetValid,
        Rejection::EnvelopeExpired,
        Rejection::PrincipalMultisigUnsupported,
        Rejection::PrincipalPubkeyTypeInvalid,
        Rejection::PrincipalPubkeyMalformed,
        Rejection::PrincipalAddressMismatch,
        Rejection::AgentPubkeyTypeInvalid,
        Rejection::AgentPubkeyMalformed,
        Rejection::BeneficiaryInvalid,
        Rejection::PrincipalSigInvalid,
        Rejection::PrincipalNotAllowed,
        Rejection::RequesterAddressInvalid,
        Rejection::RequesterSigMissing,
        Rejection::RequesterSigMalformed,
        Rejection::RequesterTransferAddressMismatch,
        Rejection::RequesterTimestampOutOfWindow,
        Rejection::PrincipalMismatch,
        Rejection::ChainQueryFailed,
        Rejection::RequesterPubkeyUnknown,
        Rejection::BodyTooLarge,
        Rejection::BodyBudgetExhausted,
        Rejection::BodyReadFailed,
        Rejection::BodyReadTimeout,
        Rejection::ModelTooLong,
        Rejection::AgentSigInvalid,
        Rejection::AllowedModelsEmpty,
        Rejection::ModelNotAllowed,
        Rejection::RevocationsUnavailable,
        Rejection::PassportRevoked,
        Rejection::RequesterSigInvalid,
        Rejection::RequesterSigReplayed,
        Rejection::RequesterSigStoreFull,
        Rejection::PassportPredatesStart,
        Rejection::RequestReplayed,
        Rejection::ReplayStoreUnavailable,
        Rejection::ReplayStoreFull,
        Rejection::ReplayQuotaExceeded,
        Rejection::PassportRequired,
    ];

    /// The stable snake_case code.
    pub const fn code(self) -> &'static str {
        match self {
            Rejection::SigHeaderMismatch => "sig_header_mismatch",
            Rejection::HeaderMalformed => "header_malformed",
            Rejection::PassportTooLarge => "passport_too_large",
            Rejection::VerificationBusy => "verification_busy",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::BodyBudgetExhausted => "body_budget_exhausted",
            Rejection::AgentIdTooLong => "agent_id_too_long",
            Rejection::ModelTooLong => "model_too_long",
            Rejection::BodyReadFailed => "body_read_failed",
            Rejection::BodyReadTimeout => "body_read_timeout",
            Rejection::EnvelopeMalformed => "envelope_malformed",
            Rejection::VersionUnknown => "version_unknown",
            Rejection::AudienceMismatch => "audience_mismatch",
            Rejection::ChainIdMismatch => "chain_id_mismatch",
            Rejection::TtlTooLong => "ttl_too_long",
            Rejection::EnvelopeNotYetValid => "envelope_not_yet_valid",
            Rejection::EnvelopeExpired => "envelope_expired",
            Rejection::PrincipalMultisigUnsupported => "principal_multisig_unsupported",
            Rejection::PrincipalPubkeyTypeInvalid => "principal_pubkey_type_invalid",
            Rejection::PrincipalPubkeyMalformed => "principal_pubkey_malformed",
            Rejection::PrincipalAddressMismatch => "principal_address_mismatch",
            Rejection::AgentPubkeyTypeInvalid => "agent_pubkey_type_invalid",
            Rejection::AgentPubkeyMalformed => "agent_pubkey_malformed",
            Rejection::BeneficiaryInvalid => "beneficiary_invalid",
            Rejection::PrincipalSigInvalid => "principal_sig_invalid",
            Rejection::AgentSigInvalid => "agent_sig_invalid",
            Rejection::AllowedModelsEmpty => "allowed_models_empty",
            Rejection::ModelNotAllowed => "model_not_allowed",
            Rejection::PrincipalNotAllowed => "principal_not_allowed",
            Rejection::RequesterAddressInvalid | Rejection::PrincipalMismatch => {
                "principal_mismatch"
            }
            Rejection::ChainQueryFailed => "chain_query_failed",
            Rejection::RequesterSigMissing => "requester_sig_missing",
            Rejection::RequesterSigMalformed => "requester_sig_malformed",
            Rejection::RequesterTransferAddressMismatch => "requester_transfer_address_mismatch",
            Rejection::RequesterTimestampOutOfWindow => "requester_timestamp_out_of_window",
            Rejection::RequesterPubkeyUnknown => "requester_pubkey_unknown",
            Rejection::RequesterSigInvalid => "requester_sig_invalid",
            Rejection::RequesterSigReplayed => "requester_sig_replayed",
            Rejection::RequesterSigStoreFull => "requester_sig_store_full",
            Rejection::PassportRequired => "passport_required",
            Rejection::PassportRevoked => "passport_revoked",
            Rejection::RevocationsUnavailable => "revocations_unavailable",
            Rejection::RequestReplayed => "request_replayed",
            Rejection::PassportPredatesStart => "passport_predates_start",
            Rejection::ReplayStoreUnavailable => "replay_store_unavailable",
            Rejection::ReplayStoreFull => "replay_store_full",
            Rejection::ReplayQuotaExceeded => "replay_quota_exceeded",
        }
    }

    /// The HTTP status the rejection is answered with.
    pub const fn status(self) -> StatusCode {
        match self {
            Rejection::SigHeaderMismatch
            | Rejection::HeaderMalformed
            | Rejection::BodyReadFailed
            | Rejection::EnvelopeMalformed
            | Rejection::AgentIdTooLong
            | Rejection::ModelTooLong => StatusCode::BAD_REQUEST,
            Rejection::PassportTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyReadTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::TtlTooLong
            | Rejection::EnvelopeNotYetValid
            | Rejection::EnvelopeExpired
            | Rejection::AllowedModelsEmpty
            | Rejection::ModelNotAllowed
            | Rejection::PrincipalNotAllowed
            | Rejection::RequesterAddressInvalid
            | Rejection::PrincipalMismatch => StatusCode::FORBIDDEN,
            Rejection::ReplayQuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Rejection::ChainQueryFailed
            | Rejection::BodyBudgetExhausted
            | Rejection::VerificationBusy
            | Rejection::ReplayStoreUnavailable
            | Rejection::ReplayStoreFull
            | Rejection::RevocationsUnavailable
            | Rejection::RequesterSigStoreFull => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::VersionUnknown
            | Rejection::AudienceMismatch
            | Rejection::ChainIdMismatch
            | Rejection::PrincipalMultisigUnsupported
            | Rejection::PrincipalPubkeyTypeInvalid
            | Rejection::PrincipalPubkeyMalformed
            | Rejection::PrincipalAddressMismatch
            | Rejection::AgentPubkeyTypeInvalid
            | Rejection::AgentPubkeyMalformed
            | Rejection::BeneficiaryInvalid
            | Rejection::PrincipalSigInvalid
            | Rejection::AgentSigInvalid
            | Rejection::PassportRequired
            | Rejection::PassportRevoked
            | Rejection::RequestReplayed
            | Rejection::PassportPredatesStart
            | Rejection::RequesterSigMissing
            | Rejection::RequesterSigMalformed
            | Rejection::RequesterTransferAddressMismatch
            | Rejection::RequesterTimestampOutOfWindow
            | Rejection::RequesterPubkeyUnknown
            | Rejection::RequesterSigInvalid
            | Rejection::RequesterSigReplayed => StatusCode::UNAUTHORIZED,
        }
    }

    /// A one-line message for people. It never quotes request bytes.
    pub const fn message(self) -> &'static str {
        match self {
            Rejection::SigHeaderMismatch => {
                "X-Agent-Passport and X-Agent-Sig must be sent together"
            }
            Rejection::HeaderMalformed => {
                "a passport header is repeated or is not strict standard base64"
            }
            Rejection::PassportTooLarge => {
                "the X-Agent-Passport header is larger than this gateway accepts"
            }
            Rejection::VerificationBusy => {
                "the gateway is verifying as many new passports as it can; retry later"
            }
            Rejection::BodyTooLarge => "the request body is larger than this gateway accepts",
            Rejection::BodyBudgetExhausted => {
                "the gateway is holding as many request bodies as it can; retry later"
            }
            Rejection::AgentIdTooLong => "the passport's agent_id is longer than 256 bytes",
            Rejection::ModelTooLong => "the request's model is longer than 256 bytes",
            Rejection::BodyReadFailed => "the request body could not be read to its end",
            Rejection::BodyReadTimeout => "the request body did not arrive in time",
            Rejection::EnvelopeMalformed => {
                "the passport or the request body does not have the required form"
            }
            Rejection::VersionUnknown => "the passport version is not aps-agent-envelope-v1",
            Rejection::AudienceMismatch => "the passport audience is not gonka",
            Rejection::ChainIdMismatch => "the passport was issued for another chain",
            Rejection::TtlTooLong => {
                "the passport lifetime exceeds the maximum this gateway accepts"
            }
            Rejection::EnvelopeNotYetValid => "the passport is not valid yet",
            Rejection::EnvelopeExpired => "the passport has expired",
            Rejection::PrincipalMultisigUnsupported => "multisig principal keys are not supported",
            Rejection::PrincipalPubkeyTypeInvalid => "the principal key type must be secp256k1",
            Rejection::PrincipalPubkeyMalformed => "the principal key is not 33 bytes of base64",
            Rejection::PrincipalAddressMismatch => {
                "the principal address is not derived from the principal key"
            }
            Rejection::AgentPubkeyTypeInvalid => "the agent key type must be ed25519",
            Rejection::AgentPubkeyMalformed => "the agent key is not 32 bytes of base64",
            Rejection::BeneficiaryInvalid => {
                "the beneficiary is longer than 255 bytes or contains control characters"
            }
            Rejection::PrincipalSigInvalid => "the principal signature does not verify",
            // The likeliest causes, all on the signer's side: a signature over other bytes,
            // or for another chain id than the passport's (the one this gateway checked).
            Rejection::AgentSigInvalid => {
                "the agent signature does not verify for this request: sign the method, target and body exactly as sent, with the passport's chain_id as the chain id"
            }
            Rejection::AllowedModelsEmpty => "the passport allows no model",
            Rejection::ModelNotAllowed => "the passport does not allow the requested model",
            Rejection::PrincipalNotAllowed => "this gateway does not serve the passport's principal",
            Rejection::PrincipalMismatch => {
                "the principal is not the requester and has granted it no authorization"
            }
            Rejection::ChainQueryFailed => "the chain could not be queried for grants; retry later",
            Rejection::RequesterSigMissing => {
                "this gateway requires the requester's native signature (Authorization and X-Timestamp)"
            }
            Rejection::RequesterSigMalformed => {
                "a native signature header is repeated or malformed (Authorization: padded base64 of a 64-byte low-S r||s; X-Timestamp: decimal nanoseconds)"
            }
            Rejection::RequesterTransferAddressMismatch => {
                "X-Transfer-Address is not the transfer address this gateway forwards to"
            }
            Rejection::RequesterTimestampOutOfWindow => {
                "X-Timestamp is outside the window this gateway accepts; sign the request again"
            }
            Rejection::RequesterPubkeyUnknown => {
                "the requester has no account with a public key on chain"
            }
            Rejection::RequesterSigInvalid => {
                "the requester's native signature does not verify for this request"
            }
            Rejection::RequesterSigReplayed => {
                "this Authorization was already accepted; sign the request again"
            }
            Rejection::RequesterSigStoreFull => {
                "the gateway remembers as many recent requester signatures as it can; retry later"
            }
            Rejection::PassportRequired => "this endpoint requires an agent passport",
            Rejection::PassportRevoked => "the passport has been revoked",
            Rejection::RevocationsUnavailable => {
                "the gateway has not read its revocation list yet; retry later"
            }
            Rejection::RequestReplayed => {
                "this signed request was already accepted; sign a new one"
            }
            Rejection::ReplayStoreUnavailable => {
                "the replay store could not be reached; retry later"
            }
            Rejection::PassportPredatesStart => {
                "the gateway restarted without its replay records and refuses passports issued before; mint a new one"
            }
            Rejection::ReplayStoreFull => "the replay store is full; retry later",
            Rejection::RequesterAddressInvalid => {
                "the requester header is not a lowercase bech32 account address with this chain's prefix"
            }
            Rejection::ReplayQuotaExceeded => {
                "this principal holds its quota of live replay records; retry later"
            }
        }
    }

    /// Seconds a client should wait before retrying, for transient failures.
    pub const fn retry_after_seconds(self) -> Option<u32> {
        match self {
            Rejection::ChainQueryFailed
            | Rejection::ReplayStoreUnavailable
            | Rejection::ReplayStoreFull
            | Rejection::RevocationsUnavailable => Some(5),
            Rejection::BodyBudgetExhausted
            | Rejection::VerificationBusy
            | Rejection::RequesterSigStoreFull => Some(1),
            Rejection::ReplayQuotaExceeded => Some(60),
            _ => None,
        }
    }

    /// The complete HTTP answer: the status, `Content-Type: application/problem+json`,
    /// `WWW-Authenticate` on 401 and `Retry-After` on transient refusals.
    pub fn http_response(self) -> http::Response<String> {
        let mut resp = crate::problem::problem_response(self.status(), self.code(), self.message());
        let headers = resp.headers_mut();
        if self.status() == StatusCode::UNAUTHORIZED {
            let challenge = format!(
                "AgentPassport realm=\"passport-gate\", error=\"{}\"",
                self.code()
            );
            if let Ok(v) = http::HeaderValue::from_str(&challenge) {
                headers.insert(http::header::WWW_AUTHENTICATE, v);
            }
        }
        if let Some(secs) = self.retry_after_seconds() {
            headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        resp
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code(),
            self.status().as_u16(),
            self.message()
        )
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case() {
        // One alias: a malformed requester is a principal mismatch on the wire.
        assert_eq!(
            Rejection::RequesterAddressInvalid.code(),
            Rejection::PrincipalMismatch.code()
        );
        let codes: HashSet<_> = Rejection::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Rejection::ALL.len() - 1);
        for c in codes {
            assert!(
                c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{c}"
            );
        }
    }

    #[test]
    fn statuses_follow_the_reference_table() {
        assert_eq!(Rejection::SigHeaderMismatch.status(), 400);
        assert_eq!(Rejection::BodyTooLarge.status(), 413);
        assert_eq!(Rejection::VersionUnknown.status(), 401);
        assert_eq!(Rejection::TtlTooLong.status(), 403);
        assert_eq!(Rejection::ModelNotAllowed.status(), 403);
        assert_eq!(Rejection::PrincipalMismatch.status(), 403);
        assert_eq!(Rejection::ChainQueryFailed.status(), 503);
        assert_eq!(Rejection::ChainQueryFailed.retry_after_seconds(), Some(5));
    }
}
