//! Why the wallet page's API refused a request: one variant per reason, each with a
//! stable code, an HTTP status, a one-line message and the form field it belongs to, so
//! the page shows every refusal next to the control that caused it.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use passport_core::mint::MintError;

/// A refused API request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalletError {
    /// No such page or API route.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The `Host` header names neither a loopback address nor `localhost`: a page on
    /// another site that rebound its name to 127.0.0.1 must not drive this API.
    ForeignHost,
    /// A POST whose `Content-Type` is not `application/json` (a plain HTML form on
    /// another site cannot send one without a CORS preflight this server never grants).
    NotJson,
    /// A request body over [`super::MAX_REQUEST_BYTES`].
    RequestTooLarge,
    /// The body did not arrive within [`super::REQUEST_READ_TIMEOUT`].
    RequestTimeout,
    /// The body is not the JSON object this route expects.
    RequestMalformed(String),
    /// The wallet's public key is not a compressed secp256k1 key.
    WalletKeyInvalid,
    /// The wallet's address is not the address of its key under the configured prefix.
    WalletAddressMismatch {
        /// What the wallet reported.
        wallet: String,
        /// What the key gives under the configured prefix.
        derived: String,
    },
    /// The agent key is not base64 of an Ed25519 public key (nor a key file's public part).
    AgentKeyInvalid,
    /// A whole agent key file, secret included, was pasted.
    AgentSecretPasted,
    /// The agent id is empty.
    AgentIdEmpty,
    /// The agent id is longer than a gateway accepts.
    AgentIdTooLong,
    /// No model listed and "every model" not chosen.
    ModelsEmpty,
    /// A model name is empty, too long, repeated, or there are too many.
    ModelInvalid(String),
    /// The lifetime is zero or over the gateway's maximum.
    LifetimeOutOfRange {
        /// The gateway's maximum, in seconds.
        max_seconds: u64,
    },
    /// `not_before` is not an RFC 3339 time, or not before the expiry.
    NotBeforeInvalid(String),
    /// The beneficiary is too long or holds control characters.
    BeneficiaryInvalid,
    /// The library refused the passport for a reason no field check caught.
    PassportRefused(MintError),
    /// The wallet's signature does not verify for this envelope and address.
    SignatureRefused(MintError),
    /// The text to decode is not base64 of a JSON passport.
    PassportUnreadable(String),
}

impl WalletError {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            WalletError::NotFound => "not_found",
            WalletError::MethodNotAllowed => "method_not_allowed",
            WalletError::ForeignHost => "foreign_host",
            WalletError::NotJson => "not_json",
            WalletError::RequestTooLarge => "request_too_large",
            WalletError::RequestTimeout => "request_timeout",
            WalletError::RequestMalformed(_) => "request_malformed",
            WalletError::WalletKeyInvalid => "wallet_key_invalid",
            WalletError::WalletAddressMismatch { .. } => "wallet_address_mismatch",
            WalletError::AgentKeyInvalid => "agent_key_invalid",
            WalletError::AgentSecretPasted => "agent_secret_pasted",
            WalletError::AgentIdEmpty => "agent_id_empty",
            WalletError::AgentIdTooLong => "agent_id_too_long",
            WalletError::ModelsEmpty => "models_empty",
            WalletError::ModelInvalid(_) => "model_invalid",
            WalletError::LifetimeOutOfRange { .. } => "lifetime_out_of_range",
            WalletError::NotBeforeInvalid(_) => "not_before_invalid",
            WalletError::BeneficiaryInvalid => "beneficiary_invalid",
            WalletError::PassportRefused(_) => "passport_refused",
            WalletError::SignatureRefused(_) => "signature_refused",
            WalletError::PassportUnreadable(_) => "passport_unreadable",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            WalletError::NotFound => StatusCode::NOT_FOUND,
            WalletError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            WalletError::ForeignHost => StatusCode::MISDIRECTED_REQUEST,
            WalletError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WalletError::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WalletError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            WalletError::RequestMalformed(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The form field the page shows the message next to (`form` when none fits).
    pub fn field(&self) -> &'static str {
        match self {
            WalletError::WalletKeyInvalid
            | WalletError::WalletAddressMismatch { .. }
            | WalletError::SignatureRefused(_) => "wallet",
            WalletError::AgentKeyInvalid | WalletError::AgentSecretPasted => "agent_key",
            WalletError::AgentIdEmpty | WalletError::AgentIdTooLong => "agent_id",
            WalletError::ModelsEmpty | WalletError::ModelInvalid(_) => "models",
            WalletError::LifetimeOutOfRange { .. } => "lifetime",
            WalletError::NotBeforeInvalid(_) => "not_before",
            WalletError::BeneficiaryInvalid => "beneficiary",
            WalletError::PassportUnreadable(_) => "passport",
            _ => "form",
        }
    }

    /// One line in plain words.
    pub fn message(&self) -> String {
        match self {
            WalletError::NotFound => "no such page".into(),
            WalletError::MethodNotAllowed => "this route does not take that method".into(),
            WalletError::ForeignHost => {
                "the Host header is not a loopback name; open the page at the address the command printed".into()
            }
            WalletError::NotJson => "send the request as application/json".into(),
            WalletError::RequestTooLarge => format!(
                "the request is larger than {} bytes",
                super::MAX_REQUEST_BYTES
            ),
            WalletError::RequestTimeout => "the request body did not arrive in time".into(),
            WalletError::RequestMalformed(why) => format!("the request is malformed: {why}"),
            WalletError::WalletKeyInvalid => {
                "the wallet's public key is not a compressed secp256k1 key".into()
            }
            WalletError::WalletAddressMismatch { wallet, derived } => format!(
                "the wallet reports address {wallet}, but its key gives {derived} under this page's prefix; start the page with the wallet's --prefix"
            ),
            WalletError::AgentKeyInvalid => {
                "paste the agent's public key: 44 characters of base64 (the public_key of its key file)".into()
            }
            WalletError::AgentSecretPasted => {
                "this is a whole key file with its secret_key: paste only its public_key, and keep the secret with the agent".into()
            }
            WalletError::AgentIdEmpty => "give the agent an id, e.g. urn:aps:agent:my-bot".into(),
            WalletError::AgentIdTooLong => format!(
                "the agent id is longer than the {} bytes a gateway accepts",
                passport_core::verifier::MAX_AGENT_ID_BYTES
            ),
            WalletError::ModelsEmpty => {
                "list at least one model, or choose \"every model\"".into()
            }
            WalletError::ModelInvalid(why) => why.clone(),
            WalletError::LifetimeOutOfRange { max_seconds } => format!(
                "the lifetime must be more than 0 and at most {max_seconds} seconds ({} minutes), the gateway's maximum; a longer passport is refused",
                max_seconds / 60
            ),
            WalletError::NotBeforeInvalid(why) => why.clone(),
            WalletError::BeneficiaryInvalid => {
                "the beneficiary must be at most 255 bytes with no control characters".into()
            }
            WalletError::PassportRefused(e) => format!("the passport cannot be built: {e}"),
            WalletError::SignatureRefused(e) => format!("the wallet's signature was refused: {e}"),
            WalletError::PassportUnreadable(why) => why.clone(),
        }
    }

    /// The RFC 9457 answer, in the shape of [`passport_gate::problem::problem_response`] plus
    /// the `field` member.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let message = self.message();
        let body = serde_json::json!({
            "type": format!("urn:passport-gate:error:{}", self.code()),
            "title": message,
            "status": self.status().as_u16(),
            "detail": message,
            "code": self.code(),
            "error": self.code(),
            "field": self.field(),
        });
        passport_gate::problem::problem_json(self.status(), &body)
    }
}
