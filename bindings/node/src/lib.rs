//! The native half of the `passport-gate` npm package: thin wrappers over the library's
//! key files, minting, signing and verification (no second implementation of JCS, ADR-036
//! or the signing payload). The JavaScript half (`index.js`) turns option objects into
//! the JSON these functions take, maps errors to `PassportGateError` and adds
//! `passportFetch`.
// `deny`, not `forbid`: the `#[napi]` macros expand to FFI glue under `allow(unsafe_code)`;
// this file itself has no unsafe code.
#![deny(unsafe_code)]

use napi::bindgen_prelude::{Error, Result, Status, Uint8Array};
use napi_derive::napi;
use passport_core::crypto::AddressError;
use passport_core::crypto::{AgentSecret, PrincipalKey as PrincipalPublicKey, PrincipalSecret};
use passport_core::gonka::{
    self, parse_timestamp, verify_native, Endpoint, NativeHeaders, NativeSigner,
    TransferAddresses as Transfers,
};
use passport_core::gonka::{EndpointError, NativeSigError};
use passport_core::keyfile::KeyFileError;
use passport_core::keyfile::{
    key_file_text, load_agent_secret, load_principal_secret, parse_agent_secret,
    parse_principal_secret, principal_secret_from_hex_or_path, write_key_file, KeyFile,
};
use passport_core::mint::{self, AgentSigner, MintError, MintOptions, VerifyOptions};
use passport_core::time::Timestamp;
use std::path::Path;

/// A refusal as `index.js` reads it: `[code] message`, the code stable and snake_case,
/// the message one line in the package's own (camelCase) option names. `index.js` turns
/// it into a `PassportGateError` with `code` and `message`.
fn coded(code: &str, message: impl std::fmt::Display) -> Error {
    Error::new(Status::InvalidArg, format!("[{code}] {message}"))
}

fn refused(e: impl Coded) -> Error {
    coded(e.code(), e.message())
}

fn no_randomness(e: impl std::fmt::Display) -> Error {
    Error::new(
        Status::GenericFailure,
        format!("[no_randomness] no randomness: {e}"),
    )
}

/// The stable code and the Node message of each error the library returns here.
trait Coded {
    fn code(&self) -> &'static str;
    fn message(&self) -> String;
}

impl Coded for MintError {
    fn code(&self) -> &'static str {
        match self {
            MintError::ChainIdEmpty => "chain_id_empty",
            MintError::AgentIdEmpty => "agent_id_empty",
            MintError::ExpiryNotAfterIssue { .. } => "expiry_not_after_issue",
            MintError::LifetimeTooLong { .. } => "lifetime_too_long",
            MintError::NeverValid => "never_valid",
            MintError::BeneficiaryInvalid => "beneficiary_invalid",
            MintError::Address(_) => "prefix_invalid",
            MintError::Json(_) => "json",
            MintError::Envelope(_) => "envelope_invalid",
            MintError::SecretKeyMismatch => "secret_key_mismatch",
            MintError::UnsignedNotJson(_) => "envelope_not_json",
            MintError::UnsignedNotObject => "envelope_not_object",
            MintError::UnsignedAlreadySigned => "envelope_already_signed",
            MintError::SignatureNotBase64 => "signature_not_base64",
            MintError::PrincipalKeyInvalid => "principal_pubkey_invalid",
            MintError::AddressMismatch { .. } => "principal_address_mismatch",
            MintError::SignatureInvalid => "signature_invalid",
            MintError::PassportNotBase64 => "passport_not_base64",
            MintError::PassportMalformed(_) => "passport_malformed",
            MintError::AgentKeyMismatch => "agent_key_mismatch",
            MintError::RequestFieldTooLong => "request_field_too_long",
            MintError::Time { .. } => "time_invalid",
            MintError::MintOptions(_) | MintError::VerifyOptions(_) => "invalid_option",
            MintError::TtlAndExpiry => "ttl_and_expiry",
            MintError::TtlNotPositive { .. } => "ttl_not_positive",
            MintError::ExpiryAfterLatest => "expiry_after_latest",
            MintError::NoExpiry => "no_expiry",
            MintError::AgentPubkeyInvalid => "agent_pubkey_invalid",
            MintError::PrincipalPubkeyWithSecret => "principal_pubkey_with_secret",
            MintError::PrincipalPubkeyInvalid => "principal_pubkey_invalid",
            MintError::PassportNotJson(_) => "passport_not_json",
            MintError::EnvelopeMalformed(_) => "passport_malformed",
            MintError::Config(_) => "config_invalid",
            MintError::UriNotOriginForm { .. } => "uri_not_origin_form",
            _ => "refused",
        }
    }

    /// The library's message, with the option names of `mint`, `mintUnsigned` and
    /// `verify` (`ttlSeconds`, not `ttl_seconds` or `--max-ttl-seconds`) and no JSON
    /// positions.
    fn message(&self) -> String {
        match self {
            MintError::ExpiryNotAfterIssue {
                issued_at,
                expires_at,
            } => format!("expiresAt ({expires_at}) must be after issuedAt ({issued_at})"),
            MintError::LifetimeTooLong {
                lifetime_seconds,
                max_ttl_seconds,
            } => format!(
                "the passport would live {lifetime_seconds} s, more than the {max_ttl_seconds} s a verifier accepts (raise maxTtlSeconds only if the gateway's max_ttl_seconds is raised too)"
            ),
            MintError::NeverValid => {
                "notBefore must be before expiresAt, or the passport is never valid".to_owned()
            }
            MintError::Time { option, source } => format!("{}: {source}", option_name(option)),
            MintError::MintOptions(e) | MintError::VerifyOptions(e) => {
                format!("the options are not valid: {}", without_position(e))
            }
            MintError::UnsignedNotJson(e) => {
                format!("the envelope is not valid JSON: {}", without_position(e))
            }
            MintError::PassportNotJson(e) => {
                format!("the passport is not JSON: {}", without_position(e))
            }
            MintError::TtlAndExpiry => "give ttlSeconds or expiresAt, not both".to_owned(),
            MintError::TtlNotPositive { ttl_seconds } => {
                format!("ttlSeconds {ttl_seconds}: must be positive")
            }
            MintError::NoExpiry => "give ttlSeconds or expiresAt".to_owned(),
            MintError::ExpiryAfterLatest => format!(
                "issuedAt + ttlSeconds is after {}, the latest time a passport can hold (a year has four digits): give a shorter ttlSeconds",
                Timestamp::LATEST
            ),
            MintError::AgentPubkeyInvalid => {
                "agentPubkey is not base64 of a valid Ed25519 key".to_owned()
            }
            MintError::PrincipalPubkeyInvalid => {
                "principalPubkey is not base64 of a compressed secp256k1 key".to_owned()
            }
            MintError::UriNotOriginForm { uri } => format!(
                "uri {uri:?}: expected an origin-form target (/path?query, no scheme, host or #fragment)"
            ),
            other => other.to_string(),
        }
    }
}

/// The `mint`/`verify` option a library option name stands for.
fn option_name(option: &str) -> &str {
    match option {
        "issued_at" => "issuedAt",
        "expires_at" => "expiresAt",
        "not_before" => "notBefore",
        "--now" => "now",
        other => other,
    }
}

/// A serde_json error without its `at line 1 column 57` (a position in JSON the caller
/// never wrote).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

impl Coded for KeyFileError {
    fn code(&self) -> &'static str {
        match self {
            KeyFileError::Read { .. } => "key_file_unreadable",
            KeyFileError::NotAKeyFile { .. } => "not_a_key_file",
            KeyFileError::WrongKind { .. } => "key_file_wrong_kind",
            KeyFileError::SecretNotHex { .. } => "secret_not_hex",
            KeyFileError::InvalidSecp256k1 { .. } => "secret_invalid",
            KeyFileError::NeitherHexNorFile { .. } => "neither_secret_nor_key_file",
            KeyFileError::Address(_) => "prefix_invalid",
            KeyFileError::Serialize(_) => "json",
            KeyFileError::Create { .. } => "key_file_exists_or_uncreatable",
            KeyFileError::Write { .. } => "key_file_unwritable",
            _ => "key_file_refused",
        }
    }

    fn message(&self) -> String {
        match self {
            KeyFileError::NotAKeyFile { origin, source } => {
                format!("{origin} is not a key file: {}", without_position(source))
            }
            other => other.to_string(),
        }
    }
}

impl Coded for AddressError {
    fn code(&self) -> &'static str {
        "prefix_invalid"
    }

    fn message(&self) -> String {
        self.to_string()
    }
}

impl Coded for EndpointError {
    fn code(&self) -> &'static str {
        match self {
            EndpointError::UrlNotAbsolute { .. } => "endpoint_url_not_absolute",
            EndpointError::AddressEmpty { .. } => "transfer_address_empty",
            EndpointError::AddressInvalid { .. } => "transfer_address_invalid",
            EndpointError::NoEndpointFor { .. } => "no_endpoint_for_url",
        }
    }

    fn message(&self) -> String {
        self.to_string()
    }
}

impl Coded for NativeSigError {
    fn code(&self) -> &'static str {
        NativeSigError::code(self)
    }

    fn message(&self) -> String {
        NativeSigError::message(self)
    }
}

/// An agent's Ed25519 secret key.
#[napi]
pub struct AgentKey {
    secret: AgentSecret,
}

#[napi]
impl AgentKey {
    /// A new random key.
    #[napi(factory)]
    pub fn generate() -> Result<AgentKey> {
        Ok(AgentKey {
            secret: AgentSecret::generate().map_err(no_randomness)?,
        })
    }

    /// The key in the text of a key file or a bare 64-hex-digit secret.
    #[napi(factory)]
    pub fn from_key_file(text: String) -> Result<AgentKey> {
        Ok(AgentKey {
            secret: parse_agent_secret(&text, "the key file text").map_err(refused)?,
        })
    }

    /// The key in the file at `path`.
    #[napi(factory)]
    pub fn load(path: String) -> Result<AgentKey> {
        Ok(AgentKey {
            secret: load_agent_secret(Path::new(&path)).map_err(refused)?,
        })
    }

    /// The public key, standard base64.
    #[napi(getter)]
    pub fn public_key(&self) -> String {
        self.secret.public_key().to_base64()
    }

    /// The key file text, as `keygen --agent` writes it.
    #[napi]
    pub fn key_file(&self) -> Result<String> {
        key_file_text(&KeyFile::agent(&self.secret)).map_err(refused)
    }

    /// Writes the key file at `path` (which must not exist), mode 0600.
    #[napi]
    pub fn save(&self, path: String) -> Result<()> {
        write_key_file(Path::new(&path), &KeyFile::agent(&self.secret)).map_err(refused)
    }
}

/// A principal's secp256k1 secret key.
#[napi]
pub struct PrincipalKey {
    secret: PrincipalSecret,
}

#[napi]
impl PrincipalKey {
    /// A new random key.
    #[napi(factory)]
    pub fn generate() -> Result<PrincipalKey> {
        Ok(PrincipalKey {
            secret: PrincipalSecret::generate().map_err(no_randomness)?,
        })
    }

    /// The key in the text of a key file or a bare 64-hex-digit secret.
    #[napi(factory)]
    pub fn from_key_file(text: String) -> Result<PrincipalKey> {
        Ok(PrincipalKey {
            secret: parse_principal_secret(&text, "the key file text").map_err(refused)?,
        })
    }

    /// The key in the file at `path`.
    #[napi(factory)]
    pub fn load(path: String) -> Result<PrincipalKey> {
        Ok(PrincipalKey {
            secret: load_principal_secret(Path::new(&path)).map_err(refused)?,
        })
    }

    /// The compressed public key, standard base64.
    #[napi(getter)]
    pub fn public_key(&self) -> String {
        self.secret.public_key().to_base64()
    }

    /// The account address under `prefix`.
    #[napi]
    pub fn address(&self, prefix: String) -> Result<String> {
        self.secret.public_key().address(&prefix).map_err(refused)
    }

    /// The key file text, as `keygen --principal` writes it.
    #[napi]
    pub fn key_file(&self, prefix: String) -> Result<String> {
        key_file_text(&KeyFile::principal(&self.secret, &prefix).map_err(refused)?).map_err(refused)
    }

    /// Writes the key file at `path` (which must not exist), mode 0600.
    #[napi]
    pub fn save(&self, path: String, prefix: String) -> Result<()> {
        write_key_file(
            Path::new(&path),
            &KeyFile::principal(&self.secret, &prefix).map_err(refused)?,
        )
        .map_err(refused)
    }
}

/// An agent key bound to one passport for one chain.
#[napi]
pub struct Signer {
    inner: AgentSigner,
}

#[napi]
impl Signer {
    /// Refuses a passport that does not parse or names another agent key.
    #[napi(constructor)]
    pub fn new(agent_key: &AgentKey, passport: String, chain_id: String) -> Result<Signer> {
        Ok(Signer {
            inner: AgentSigner::new(agent_key.secret.clone(), &passport, &chain_id)
                .map_err(refused)?,
        })
    }

    /// The `X-Agent-Passport` value.
    #[napi(getter)]
    pub fn passport(&self) -> String {
        self.inner.passport().to_owned()
    }

    /// The `X-Agent-Sig` value for `method`, `uri` (path and ?query as sent) and `body`.
    #[napi]
    pub fn sign(&self, method: String, uri: String, body: Uint8Array) -> Result<String> {
        self.inner.sign(&method, &uri, &body).map_err(refused)
    }
}

/// Mints a passport; `options` is the JSON of the mint options (snake_case).
#[napi]
pub fn mint_json(principal_key: &PrincipalKey, options: String) -> Result<String> {
    MintOptions::from_json(&options)
        .and_then(|o| o.mint(&principal_key.secret))
        .map_err(refused)
}

/// The unsigned envelope and the ADR-036 data for a wallet, as JSON.
#[napi]
pub fn mint_unsigned_json(options: String) -> Result<String> {
    MintOptions::from_json(&options)
        .and_then(|o| o.unsigned())
        .map(|v| v.to_string())
        .map_err(refused)
}

/// Completes an unsigned envelope with a wallet's ADR-036 signature.
#[napi]
pub fn attach_signature(
    envelope_json: String,
    signature: String,
    prefix: String,
) -> Result<String> {
    mint::attach_signature(envelope_json.as_bytes(), &signature, &prefix).map_err(refused)
}

/// What `passport-gate inspect` shows, as JSON.
#[napi]
pub fn inspect_json(passport: String, prefix: String) -> Result<String> {
    mint::inspect_json(&passport, &prefix, Timestamp::now())
        .map(|v| v.to_string())
        .map_err(refused)
}

/// The verifier's verdict on one request, as JSON.
#[napi]
pub fn verify_json(options: String, body: Uint8Array) -> Result<String> {
    let options = VerifyOptions::from_json(&options).map_err(refused)?;
    mint::verify_json(&options, &body)
        .map(|v| v.to_string())
        .map_err(refused)
}

/// The `X-Agent-Sig` value for one request.
#[napi]
pub fn sign_request(
    agent_key: &AgentKey,
    passport: String,
    chain_id: String,
    method: String,
    uri: String,
    body: Uint8Array,
) -> Result<String> {
    mint::sign_request(
        &agent_key.secret,
        &passport,
        &chain_id,
        &method,
        &uri,
        &body,
    )
    .map_err(refused)
}

/// A developer's Gonka key, signing requests natively as a Gonka API node expects.
#[napi]
pub struct GonkaSigner {
    inner: NativeSigner,
}

#[napi]
impl GonkaSigner {
    /// `key` is a 64-hex-digit secret (optionally `0x`-prefixed) or the path of a
    /// principal key file (`passport-gate keygen --principal`).
    #[napi(factory)]
    pub fn from_key(key: String, prefix: String) -> Result<GonkaSigner> {
        let secret = principal_secret_from_hex_or_path(&key, "gonkaKey").map_err(refused)?;
        GonkaSigner::from_secret(&secret, &prefix)
    }

    /// A signer for a principal key already loaded.
    #[napi(factory)]
    pub fn from_principal_key(key: &PrincipalKey, prefix: String) -> Result<GonkaSigner> {
        GonkaSigner::from_secret(&key.secret, &prefix)
    }

    /// The `X-Requester-Address` value.
    #[napi(getter)]
    pub fn address(&self) -> String {
        self.inner.address().to_owned()
    }

    /// The native headers, in order, as `[name, value]` pairs; `timestamp_ns` is the
    /// canonical decimal string (a JavaScript number cannot hold nanoseconds). The
    /// transfer address (empty for none) is signed as given, unchecked.
    #[napi]
    pub fn sign(
        &self,
        body: Uint8Array,
        timestamp_ns: String,
        transfer_address: String,
    ) -> Result<Vec<Vec<String>>> {
        let ts = parse_timestamp(&timestamp_ns).map_err(|_| {
            coded(
                "timestamp_invalid",
                format!("timestampNs {timestamp_ns:?} is not the decimal form of a 64-bit integer"),
            )
        })?;
        Ok(pairs(self.inner.sign(&body, ts, &transfer_address)))
    }

    /// `sign` at the process's monotonic nanosecond clock.
    #[napi]
    pub fn sign_now(&self, body: Uint8Array, transfer_address: String) -> Vec<Vec<String>> {
        pairs(self.inner.sign_now(&body, &transfer_address))
    }
}

impl GonkaSigner {
    fn from_secret(secret: &PrincipalSecret, prefix: &str) -> Result<GonkaSigner> {
        Ok(GonkaSigner {
            inner: NativeSigner::new(secret, prefix).map_err(refused)?,
        })
    }
}

fn pairs(headers: NativeHeaders) -> Vec<Vec<String>> {
    headers
        .pairs()
        .into_iter()
        .map(|(name, value)| vec![name.to_owned(), value])
        .collect()
}

/// Where each request's transfer address comes from: one address, or a `url;address`
/// endpoint list.
#[napi]
pub struct TransferAddresses {
    inner: Transfers,
}

#[napi]
impl TransferAddresses {
    /// One transfer address for every request, checked under `prefix`; none when absent.
    #[napi(factory)]
    pub fn one(address: Option<String>, prefix: String) -> Result<TransferAddresses> {
        Ok(TransferAddresses {
            inner: Transfers::one(address.as_deref(), &prefix).map_err(refused)?,
        })
    }

    /// An endpoint list of `url;address` entries.
    #[napi(factory)]
    pub fn endpoints(entries: Vec<String>, prefix: String) -> Result<TransferAddresses> {
        Ok(TransferAddresses {
            inner: Transfers::endpoints(entries.iter().map(String::as_str), &prefix)
                .map_err(refused)?,
        })
    }

    /// The transfer address for a request to `url` (empty: none).
    #[napi]
    pub fn for_url(&self, url: String) -> Result<String> {
        self.inner.for_url(&url).map(str::to_owned).map_err(refused)
    }
}

/// One `url;address` entry, read.
#[napi(object)]
pub struct ParsedEndpoint {
    /// The URL as given.
    pub url: String,
    /// The transfer address, when the entry names one.
    pub transfer_address: Option<String>,
}

/// Reads one `url;address` entry (no `;`: no transfer address).
#[napi]
pub fn parse_endpoint(entry: String, prefix: String) -> Result<ParsedEndpoint> {
    let e = Endpoint::parse(&entry, &prefix).map_err(refused)?;
    Ok(ParsedEndpoint {
        url: e.url().to_owned(),
        transfer_address: e.transfer_address().map(str::to_owned),
    })
}

/// Checks native headers (`[name, value]` pairs) as a Gonka API node does (signature,
/// address, timestamp > 0; no window or replay); `public_key` is compressed, base64.
#[napi]
pub fn gonka_verify(
    public_key: String,
    headers: Vec<Vec<String>>,
    body: Uint8Array,
    node_address: String,
    prefix: String,
) -> Result<()> {
    let key = passport_core::crypto::decode_base64(&public_key)
        .and_then(|b| PrincipalPublicKey::from_compressed(&b))
        .ok_or_else(|| {
            coded(
                "public_key_invalid",
                "publicKey is not a base64 compressed secp256k1 key",
            )
        })?;
    let mut map = http::HeaderMap::new();
    for pair in &headers {
        let [name, value] = pair.as_slice() else {
            return Err(coded(
                "header_invalid",
                "each header must be a [name, value] pair",
            ));
        };
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| coded("header_invalid", format!("{name:?} is not a header name")))?;
        let value = http::HeaderValue::from_str(value).map_err(|_| {
            coded(
                "header_invalid",
                format!("the {name} value is not a header value"),
            )
        })?;
        map.append(name, value);
    }
    NativeHeaders::from_headers(&map)
        .and_then(|h| verify_native(&key, &h, &body, &prefix, &node_address))
        .map_err(refused)
}

/// Nanoseconds since the epoch, strictly increasing within this process, as decimal.
#[napi]
pub fn monotonic_timestamp_ns() -> String {
    gonka::monotonic_timestamp_ns().to_string()
}
