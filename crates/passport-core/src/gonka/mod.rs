//! Gonka's native request signature: a developer signs each inference request with their
//! own secp256k1 key, and a Gonka API node checks it (`/v1/chat/completions`).
//!
//! The node's rules, as the node (gonka `decentralized-api`, header names in
//! `utils/api_headers.go`) and the chain (`x/inference`, `MsgStartInference` checks) apply
//! them; the summary we work from is section 2 of the shared Gonka deployments reference:
//! - `Authorization` is standard padded base64 of the 64-byte `r ‖ s`, with no `Bearer`;
//!   `X-Requester-Address` is the signer's bech32 address (`gonka1…`, whose key must be on
//!   chain); `X-Timestamp` is unix time in nanoseconds, decimal; `X-Transfer-Address` is
//!   optional, and when it is absent the node signs with its own address.
//! - The signed input is `lower_hex(SHA-256(body)) ‖ decimal(timestamp) ‖ transfer_address`
//!   ([`native_signed_input`]; the timestamp rule for values ≤ 0 is documented there).
//! - The signature is ECDSA secp256k1 over SHA-256 of that input, low-S, 64 bytes; the node
//!   verifies with the Cosmos SDK's `PubKey.VerifySignature`, which hashes the input itself
//!   and refuses high-S and any other length. RFC 6979 nonces make it deterministic, so
//!   [`NativeSigner::sign_now`] takes its timestamps from a clock that never repeats.
//! - The chain refuses a timestamp more than `TimestampExpiration` old or `TimestampAdvance`
//!   ahead (10 s each by default, [`check_native_window`]) and a reused `Authorization`.
//!
//! ```
//! use passport_core::crypto::PrincipalSecret;
//! use passport_core::gonka::{check_native_window, verify_native, NativeSigner};
//! use passport_core::gonka::{DEFAULT_MAX_ADVANCE_NS, DEFAULT_MAX_AGE_NS};
//!
//! let mut scalar = [0u8; 32];
//! scalar[31] = 1;
//! let secret = PrincipalSecret::from_bytes(&scalar).unwrap();
//! let signer = NativeSigner::new(&secret, "gonka").unwrap();
//! let headers = signer.sign(b"hello", 1_000_000_000, "gonka1test");
//! assert_eq!(headers.requester_address, "gonka1w508d6qejxtdg4y5r3zarvary0c5xw7k2gsyg6");
//! assert_eq!(
//!     headers.authorization,
//!     "/x6JuvqXWpT9YNgjYt0eNLxK8nDjccY/VyJrDn4bGjNbWWu3Px9doIlUQUOOf2Eu7SqyZ4oyGlDoY+4XpGA2JQ=="
//! );
//! let names: Vec<_> = headers.pairs().into_iter().map(|(name, _)| name).collect();
//! assert_eq!(names, ["Authorization", "X-Requester-Address", "X-Timestamp", "X-Transfer-Address"]);
//!
//! // The node's side: the key comes from the chain (the account's `pub_key`).
//! let key = secret.public_key();
//! assert!(verify_native(&key, &headers, b"hello", "gonka", "gonka1node").is_ok());
//! assert!(verify_native(&key, &headers, b"hello!", "gonka", "gonka1node").is_err());
//! let now = 1_000_000_000 + DEFAULT_MAX_AGE_NS;
//! assert!(check_native_window(headers.timestamp, now, DEFAULT_MAX_AGE_NS, DEFAULT_MAX_ADVANCE_NS).is_ok());
//! ```

mod endpoint;
mod error;
mod headers;
mod sign;
mod verify;

pub use endpoint::{check_transfer_address, Endpoint, EndpointError, TransferAddresses};
pub use error::NativeSigError;
pub use headers::{
    parse_timestamp, NativeHeaders, AUTHORIZATION, X_REQUESTER_ADDRESS, X_TIMESTAMP,
    X_TRANSFER_ADDRESS,
};
pub use sign::{monotonic_timestamp_ns, native_signed_input, NativeSigner};
pub use verify::{check_native_window, verify_native, DEFAULT_MAX_ADVANCE_NS, DEFAULT_MAX_AGE_NS};

#[cfg(test)]
mod tests;
