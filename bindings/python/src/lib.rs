//! The native half of the `passport_gate` Python package: thin wrappers over the
//! library's key files, minting, signing and verification (no second implementation of
//! JCS, ADR-036 or the signing payload). The Python half (`passport_gate/__init__.py`)
//! turns keyword arguments into the JSON options these functions take and adds
//! `PassportAuth` for httpx.
#![forbid(unsafe_code)]

use passport_core::crypto::{AgentSecret, PrincipalKey as PrincipalPublicKey, PrincipalSecret};
use passport_core::gonka::{
    self, verify_native, Endpoint, NativeHeaders, NativeSigner, TransferAddresses,
};
use passport_core::keyfile::{
    key_file_text, load_agent_secret, load_principal_secret, parse_agent_secret,
    parse_principal_secret, principal_secret_from_hex_or_path, write_key_file, KeyFile,
};
use passport_core::mint::{self, AgentSigner, MintOptions, VerifyOptions};
use passport_core::time::Timestamp;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::path::PathBuf;

create_exception!(
    _native,
    PassportGateError,
    PyValueError,
    "A key, passport or request that passport-gate refuses; the message is the CLI's."
);

fn refused(e: impl std::fmt::Display) -> PyErr {
    PassportGateError::new_err(e.to_string())
}

fn no_randomness(e: impl std::fmt::Display) -> PyErr {
    PassportGateError::new_err(format!("no randomness: {e}"))
}

/// An agent's Ed25519 secret key.
#[pyclass(frozen, module = "passport_gate._native")]
struct AgentKey {
    secret: AgentSecret,
}

#[pymethods]
impl AgentKey {
    /// A new random key.
    #[staticmethod]
    fn generate() -> PyResult<AgentKey> {
        Ok(AgentKey {
            secret: AgentSecret::generate().map_err(no_randomness)?,
        })
    }

    /// The key in the text of a key file (`passport-gate keygen --agent`) or a bare
    /// 64-hex-digit secret.
    #[staticmethod]
    fn from_key_file(text: &str) -> PyResult<AgentKey> {
        Ok(AgentKey {
            secret: parse_agent_secret(text, "the key file text").map_err(refused)?,
        })
    }

    /// The key in the file at `path`.
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<AgentKey> {
        Ok(AgentKey {
            secret: load_agent_secret(&path).map_err(refused)?,
        })
    }

    /// The public key, standard base64 (the passport's `agent_pubkey`).
    #[getter]
    fn public_key(&self) -> String {
        self.secret.public_key().to_base64()
    }

    /// The key file text, as `keygen --agent` writes it.
    fn key_file(&self) -> PyResult<String> {
        key_file_text(&KeyFile::agent(&self.secret)).map_err(refused)
    }

    /// Writes the key file at `path` (which must not exist), mode 0600.
    fn save(&self, path: PathBuf) -> PyResult<()> {
        write_key_file(&path, &KeyFile::agent(&self.secret)).map_err(refused)
    }

    fn __repr__(&self) -> String {
        format!("AgentKey(public_key={:?})", self.public_key())
    }
}

/// A principal's secp256k1 secret key.
#[pyclass(frozen, module = "passport_gate._native")]
struct PrincipalKey {
    secret: PrincipalSecret,
}

#[pymethods]
impl PrincipalKey {
    /// A new random key.
    #[staticmethod]
    fn generate() -> PyResult<PrincipalKey> {
        Ok(PrincipalKey {
            secret: PrincipalSecret::generate().map_err(no_randomness)?,
        })
    }

    /// The key in the text of a key file (`passport-gate keygen --principal`) or a bare
    /// 64-hex-digit secret.
    #[staticmethod]
    fn from_key_file(text: &str) -> PyResult<PrincipalKey> {
        Ok(PrincipalKey {
            secret: parse_principal_secret(text, "the key file text").map_err(refused)?,
        })
    }

    /// The key in the file at `path`.
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<PrincipalKey> {
        Ok(PrincipalKey {
            secret: load_principal_secret(&path).map_err(refused)?,
        })
    }

    /// The compressed public key, standard base64.
    #[getter]
    fn public_key(&self) -> String {
        self.secret.public_key().to_base64()
    }

    /// The account address under `prefix`.
    #[pyo3(signature = (prefix = "gonka"))]
    fn address(&self, prefix: &str) -> PyResult<String> {
        self.secret.public_key().address(prefix).map_err(refused)
    }

    /// The key file text, as `keygen --principal` writes it.
    #[pyo3(signature = (prefix = "gonka"))]
    fn key_file(&self, prefix: &str) -> PyResult<String> {
        key_file_text(&KeyFile::principal(&self.secret, prefix).map_err(refused)?).map_err(refused)
    }

    /// Writes the key file at `path` (which must not exist), mode 0600.
    #[pyo3(signature = (path, prefix = "gonka"))]
    fn save(&self, path: PathBuf, prefix: &str) -> PyResult<()> {
        write_key_file(
            &path,
            &KeyFile::principal(&self.secret, prefix).map_err(refused)?,
        )
        .map_err(refused)
    }

    fn __repr__(&self) -> String {
        format!("PrincipalKey(public_key={:?})", self.public_key())
    }
}

/// An agent key bound to one passport for one chain: signs many requests, the passport
/// parsed and canonicalized once.
#[pyclass(frozen, module = "passport_gate._native")]
struct Signer {
    inner: AgentSigner,
}

#[pymethods]
impl Signer {
    #[new]
    fn new(agent_key: &AgentKey, passport: &str, chain_id: &str) -> PyResult<Signer> {
        Ok(Signer {
            inner: AgentSigner::new(agent_key.secret.clone(), passport, chain_id)
                .map_err(refused)?,
        })
    }

    /// The `X-Agent-Passport` value.
    #[getter]
    fn passport(&self) -> &str {
        self.inner.passport()
    }

    /// The `X-Agent-Sig` value for `method`, `uri` (path and ?query as sent) and `body`.
    fn sign(&self, method: &str, uri: &str, body: &[u8]) -> PyResult<String> {
        self.inner.sign(method, uri, body).map_err(refused)
    }
}

/// Mints a passport; `options` is the JSON of `passport_gate.mint`'s keywords.
#[pyfunction]
fn mint_json(principal_key: &PrincipalKey, options: &str) -> PyResult<String> {
    MintOptions::from_json(options)
        .and_then(|o| o.mint(&principal_key.secret))
        .map_err(refused)
}

/// The unsigned envelope and the ADR-036 data for a wallet, as JSON.
#[pyfunction]
fn mint_unsigned_json(options: &str) -> PyResult<String> {
    MintOptions::from_json(options)
        .and_then(|o| o.unsigned())
        .map(|v| v.to_string())
        .map_err(refused)
}

/// Completes an unsigned envelope with a wallet's ADR-036 signature.
#[pyfunction]
fn attach_signature(envelope_json: &[u8], signature: &str, prefix: &str) -> PyResult<String> {
    mint::attach_signature(envelope_json, signature, prefix).map_err(refused)
}

/// What `passport-gate inspect` shows, as JSON.
#[pyfunction]
fn inspect_json(passport: &str, prefix: &str) -> PyResult<String> {
    mint::inspect_json(passport, prefix, Timestamp::now())
        .map(|v| v.to_string())
        .map_err(refused)
}

/// The verifier's verdict on one request, as JSON.
#[pyfunction]
fn verify_json(options: &str, body: &[u8]) -> PyResult<String> {
    let options = VerifyOptions::from_json(options).map_err(refused)?;
    mint::verify_json(&options, body)
        .map(|v| v.to_string())
        .map_err(refused)
}

/// The `X-Agent-Sig` value for one request.
#[pyfunction]
fn sign_request(
    agent_key: &AgentKey,
    passport: &str,
    chain_id: &str,
    method: &str,
    uri: &str,
    body: &[u8],
) -> PyResult<String> {
    mint::sign_request(&agent_key.secret, passport, chain_id, method, uri, body).map_err(refused)
}

/// A developer's Gonka key, signing requests natively as a Gonka API node expects.
#[pyclass(frozen, module = "passport_gate._native")]
struct GonkaSigner {
    inner: NativeSigner,
}

#[pymethods]
impl GonkaSigner {
    /// `key` is a 64-hex-digit secret (optionally `0x`-prefixed) or the path of a
    /// principal key file (`passport-gate keygen --principal`).
    #[new]
    #[pyo3(signature = (key, prefix = "gonka"))]
    fn new(key: &str, prefix: &str) -> PyResult<GonkaSigner> {
        let secret = principal_secret_from_hex_or_path(key, "gonka_key").map_err(refused)?;
        GonkaSigner::from_secret(&secret, prefix)
    }

    /// A signer for a principal key already loaded.
    #[staticmethod]
    #[pyo3(signature = (key, prefix = "gonka"))]
    fn from_principal_key(key: &PrincipalKey, prefix: &str) -> PyResult<GonkaSigner> {
        GonkaSigner::from_secret(&key.secret, prefix)
    }

    /// The `X-Requester-Address` value.
    #[getter]
    fn address(&self) -> &str {
        self.inner.address()
    }

    /// The native headers, in order, for this body, timestamp and transfer address (empty
    /// for none). The transfer address is signed as given, unchecked.
    fn sign(
        &self,
        body: &[u8],
        timestamp_ns: i64,
        transfer_address: &str,
    ) -> Vec<(String, String)> {
        pairs(self.inner.sign(body, timestamp_ns, transfer_address))
    }

    /// [`GonkaSigner::sign`] at the process's monotonic nanosecond clock.
    fn sign_now(&self, body: &[u8], transfer_address: &str) -> Vec<(String, String)> {
        pairs(self.inner.sign_now(body, transfer_address))
    }

    fn __repr__(&self) -> String {
        format!("GonkaSigner(address={:?})", self.address())
    }
}

impl GonkaSigner {
    fn from_secret(secret: &PrincipalSecret, prefix: &str) -> PyResult<GonkaSigner> {
        Ok(GonkaSigner {
            inner: NativeSigner::new(secret, prefix).map_err(refused)?,
        })
    }
}

fn pairs(headers: NativeHeaders) -> Vec<(String, String)> {
    headers
        .pairs()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// Where each request's transfer address comes from: one address, or a `url;address`
/// endpoint list.
#[pyclass(frozen, name = "TransferAddresses", module = "passport_gate._native")]
struct PyTransferAddresses {
    inner: TransferAddresses,
}

/// The transfer address source for one address (checked under `prefix`; `None`: none).
#[pyfunction]
#[pyo3(signature = (address, prefix = "gonka"))]
fn transfer_address(address: Option<&str>, prefix: &str) -> PyResult<PyTransferAddresses> {
    Ok(PyTransferAddresses {
        inner: TransferAddresses::one(address, prefix).map_err(refused)?,
    })
}

/// The transfer address source for a list of `url;address` entries.
#[pyfunction]
#[pyo3(signature = (entries, prefix = "gonka"))]
fn endpoint_list(entries: Vec<String>, prefix: &str) -> PyResult<PyTransferAddresses> {
    Ok(PyTransferAddresses {
        inner: TransferAddresses::endpoints(entries.iter().map(String::as_str), prefix)
            .map_err(refused)?,
    })
}

#[pymethods]
impl PyTransferAddresses {
    /// The transfer address for a request to `url` (empty: none).
    fn for_url(&self, url: &str) -> PyResult<String> {
        self.inner.for_url(url).map(str::to_owned).map_err(refused)
    }
}

/// `(url, transfer_address or None)` of one `url;address` entry.
#[pyfunction]
#[pyo3(signature = (entry, prefix = "gonka"))]
fn parse_endpoint(entry: &str, prefix: &str) -> PyResult<(String, Option<String>)> {
    let e = Endpoint::parse(entry, prefix).map_err(refused)?;
    Ok((e.url().to_owned(), e.transfer_address().map(str::to_owned)))
}

/// Checks native headers as a Gonka API node does (signature, address, timestamp > 0;
/// no window or replay); `public_key` is the compressed key, base64.
#[pyfunction]
#[pyo3(signature = (public_key, headers, body, node_address, prefix = "gonka"))]
fn gonka_verify(
    public_key: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
    node_address: &str,
    prefix: &str,
) -> PyResult<()> {
    let key = passport_core::crypto::decode_base64(public_key)
        .and_then(|b| PrincipalPublicKey::from_compressed(&b))
        .ok_or_else(|| refused("public_key is not a base64 compressed secp256k1 key"))?;
    let mut map = http::HeaderMap::new();
    for (name, value) in &headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| refused(format!("{name:?} is not a header name")))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| refused(format!("the {name} value is not a header value")))?;
        map.append(name, value);
    }
    NativeHeaders::from_headers(&map)
        .and_then(|h| verify_native(&key, &h, body, prefix, node_address))
        .map_err(|e| refused(format!("{}: {}", e.code(), e.message())))
}

/// Nanoseconds since the epoch, strictly increasing within this process.
#[pyfunction]
fn monotonic_timestamp_ns() -> i64 {
    gonka::monotonic_timestamp_ns()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("PassportGateError", m.py().get_type::<PassportGateError>())?;
    m.add_class::<AgentKey>()?;
    m.add_class::<PrincipalKey>()?;
    m.add_class::<Signer>()?;
    m.add_function(wrap_pyfunction!(mint_json, m)?)?;
    m.add_function(wrap_pyfunction!(mint_unsigned_json, m)?)?;
    m.add_function(wrap_pyfunction!(attach_signature, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_json, m)?)?;
    m.add_function(wrap_pyfunction!(verify_json, m)?)?;
    m.add_function(wrap_pyfunction!(sign_request, m)?)?;
    m.add_class::<GonkaSigner>()?;
    m.add_class::<PyTransferAddresses>()?;
    m.add_function(wrap_pyfunction!(transfer_address, m)?)?;
    m.add_function(wrap_pyfunction!(endpoint_list, m)?)?;
    m.add_function(wrap_pyfunction!(parse_endpoint, m)?)?;
    m.add_function(wrap_pyfunction!(gonka_verify, m)?)?;
    m.add_function(wrap_pyfunction!(monotonic_timestamp_ns, m)?)?;
    Ok(())
}
