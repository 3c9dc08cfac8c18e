//! The developer's side: the signed input, the signer and its monotonic clock.

use super::headers::NativeHeaders;
use crate::crypto::{encode_base64, AddressError, PrincipalSecret};
use crate::time::Timestamp;
use k256::ecdsa::signature::DigestSigner;
use k256::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

/// The bytes a developer signs: `lower_hex(SHA-256(body)) ‖ decimal(timestamp_ns) ‖
/// transfer_address`, ASCII, with no separators.
///
/// The timestamp is always written, `0` and negative values included, as gonka-openai
/// (Python and TypeScript) writes it; the public fixture signed at timestamp 0 is
/// reproduced only in this form. The chain leaves the timestamp out when it is ≤ 0, so
/// the two sides sign different bytes for such a timestamp: [`super::verify_native`]
/// refuses it, and [`NativeSigner::sign_now`] never makes one.
pub fn native_signed_input(body: &[u8], timestamp_ns: i64, transfer_address: &str) -> Vec<u8> {
    let body_hash = hex::encode(Sha256::digest(body));
    let timestamp = timestamp_ns.to_string();
    let mut input = Vec::with_capacity(body_hash.len() + timestamp.len() + transfer_address.len());
    input.extend_from_slice(body_hash.as_bytes());
    input.extend_from_slice(timestamp.as_bytes());
    input.extend_from_slice(transfer_address.as_bytes());
    input
}

/// The last timestamp this process handed out, in nanoseconds since the epoch.
static LAST_TIMESTAMP_NS: AtomicI64 = AtomicI64::new(0);

/// The current time in nanoseconds since the epoch, strictly greater than every value
/// this function returned before in this process.
///
/// The node refuses a reused `Authorization`, and with RFC 6979 the same body, transfer
/// address and timestamp give the same signature; two requests with the same body in the
/// same nanosecond (or after the wall clock steps back) would collide. So each call
/// returns `max(now, last + 1)`: it never repeats and never goes backwards, and drifts
/// ahead of the wall clock only by the number of calls made within one clock tick.
pub fn monotonic_timestamp_ns() -> i64 {
    let now = i64::try_from(Timestamp::now().unix_nanos()).unwrap_or(i64::MAX);
    let next = |last: i64| now.max(last.saturating_add(1));
    match LAST_TIMESTAMP_NS
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(next(last)))
    {
        Ok(last) | Err(last) => next(last),
    }
}

/// Signs Gonka inference requests with a developer's secp256k1 key, as a Gonka API node
/// expects them (see the [module documentation](super)).
#[derive(Clone)]
pub struct NativeSigner {
    key: SigningKey,
    address: String,
}

impl fmt::Debug for NativeSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NativeSigner({})", self.address)
    }
}

impl NativeSigner {
    /// A signer for `secret`, whose requester address uses `prefix` (`gonka` on Gonka).
    pub fn new(secret: &PrincipalSecret, prefix: &str) -> Result<NativeSigner, AddressError> {
        let address = secret.public_key().address(prefix)?;
        let key = SigningKey::from_bytes(&secret.to_bytes().into())
            .expect("a PrincipalSecret holds a valid scalar");
        Ok(NativeSigner { key, address })
    }

    /// The requester address sent in `X-Requester-Address`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The headers for a request with this body, timestamp and transfer address (empty
    /// for none; the node then signs with its own address, so requests meant for a node
    /// should name it).
    pub fn sign(&self, body: &[u8], timestamp_ns: i64, transfer_address: &str) -> NativeHeaders {
        let input = native_signed_input(body, timestamp_ns, transfer_address);
        NativeHeaders {
            authorization: encode_base64(&self.signature(&input)),
            requester_address: self.address.clone(),
            timestamp: timestamp_ns,
            transfer_address: (!transfer_address.is_empty()).then(|| transfer_address.to_owned()),
        }
    }

    /// [`NativeSigner::sign`] at [`monotonic_timestamp_ns`].
    pub fn sign_now(&self, body: &[u8], transfer_address: &str) -> NativeHeaders {
        self.sign(body, monotonic_timestamp_ns(), transfer_address)
    }

    /// ECDSA over SHA-256 of `input` with an RFC 6979 nonce, low-S, as 64 bytes `r ‖ s`,
    /// each left-padded to 32 bytes (a client that drops a leading zero byte sends 63
    /// bytes about once in 128 signatures, and the node refuses them).
    fn signature(&self, input: &[u8]) -> [u8; 64] {
        let sig: Signature = self.key.sign_digest(Sha256::new_with_prefix(input));
        let sig = sig.normalize_s().unwrap_or(sig);
        sig.to_bytes().into()
    }
}
