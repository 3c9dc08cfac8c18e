//! The node's side: checking a native request signature and its timestamp window.

use super::{native_signed_input, NativeHeaders, NativeSigError};
use crate::crypto::{decode_base64, PrincipalKey};
use k256::ecdsa::Signature;
use k256::elliptic_curve::scalar::IsHigh;
use sha2::{Digest, Sha256};

/// How old a timestamp may be: the chain parameter `TimestampExpiration`'s default.
pub const DEFAULT_MAX_AGE_NS: i64 = 10_000_000_000;
/// How far ahead a timestamp may be: the chain parameter `TimestampAdvance`'s default.
pub const DEFAULT_MAX_ADVANCE_NS: i64 = 10_000_000_000;

/// Checks a native request signature by `key` over `body`, as a Gonka API node does.
///
/// `node_address` is the transfer address the node signs with when `X-Transfer-Address`
/// is absent: its own address. Replay (a reused `Authorization`) and the timestamp
/// window ([`check_native_window`]) are the caller's, since both need state or a clock.
///
/// Refuses, in this order: a timestamp ≤ 0 (the chain leaves such a timestamp out of the
/// signed input and the SDKs do not, so no such signature means one thing); an
/// `Authorization` that is not strict base64, not 64 bytes, out of range or high-S (the
/// Cosmos SDK refuses the high-S twin, so accepting it here would let through what the
/// node refuses); an `X-Requester-Address` that is not `key`'s address under `prefix`;
/// and a signature that does not verify over SHA-256 of [`native_signed_input`].
pub fn verify_native(
    key: &PrincipalKey,
    headers: &NativeHeaders,
    body: &[u8],
    prefix: &str,
    node_address: &str,
) -> Result<(), NativeSigError> {
    if headers.timestamp <= 0 {
        return Err(NativeSigError::TimestampNotPositive);
    }
    let signature = parse_signature(&headers.authorization)?;
    let address = key.address(prefix).map_err(NativeSigError::PrefixInvalid)?;
    if address != headers.requester_address {
        return Err(NativeSigError::AddressMismatch);
    }
    let transfer = headers.transfer_address.as_deref().unwrap_or(node_address);
    let input = native_signed_input(body, headers.timestamp, transfer);
    if key.verify_digest(Sha256::digest(input).into(), &signature) {
        Ok(())
    } else {
        Err(NativeSigError::SignatureInvalid)
    }
}

/// Decodes `Authorization` into a signature: strict standard base64 of exactly 64 bytes
/// `r ‖ s`, both in `1..n`, `s` low. Nothing is normalised: a high `s` is refused, not
/// flipped, because the node refuses it.
fn parse_signature(authorization: &str) -> Result<secp256k1::ecdsa::Signature, NativeSigError> {
    let bytes = decode_base64(authorization).ok_or(NativeSigError::SignatureMalformed)?;
    if bytes.len() != 64 {
        return Err(NativeSigError::SignatureWrongLength { len: bytes.len() });
    }
    let sig = Signature::from_slice(&bytes).map_err(|_| NativeSigError::SignatureOutOfRange)?;
    if bool::from(sig.s().is_high()) {
        return Err(NativeSigError::SignatureHighS);
    }
    secp256k1::ecdsa::Signature::from_compact(&bytes)
        .map_err(|_| NativeSigError::SignatureOutOfRange)
}

/// Checks that `timestamp_ns` lies in `[now_ns − max_age_ns, now_ns + max_advance_ns]`,
/// both ends included: a timestamp exactly `max_age_ns` old or exactly `max_advance_ns`
/// ahead is accepted, one nanosecond further is refused. The node compares with the
/// latest block time using `TimestampExpiration` and `TimestampAdvance` (10 s each by
/// default, [`DEFAULT_MAX_AGE_NS`] and [`DEFAULT_MAX_ADVANCE_NS`]); a gate in front of it
/// compares with its own clock, so the window bounds how long a replay store must
/// remember an `Authorization`.
pub fn check_native_window(
    timestamp_ns: i64,
    now_ns: i64,
    max_age_ns: i64,
    max_advance_ns: i64,
) -> Result<(), NativeSigError> {
    let (ts, now) = (i128::from(timestamp_ns), i128::from(now_ns));
    if ts < now - i128::from(max_age_ns) {
        return Err(NativeSigError::TimestampTooOld);
    }
    if ts > now + i128::from(max_advance_ns) {
        return Err(NativeSigError::TimestampTooFarAhead);
    }
    Ok(())
}
