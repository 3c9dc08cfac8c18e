//! Why a Gonka native request signature was refused.

use crate::crypto::AddressError;
use std::fmt;

/// Why a native request signature (the `Authorization`, `X-Requester-Address`,
/// `X-Timestamp` and `X-Transfer-Address` headers) was refused. One variant per reason;
/// [`NativeSigError::code`] is stable, [`NativeSigError::message`] is for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NativeSigError {
    /// A required header is absent.
    HeaderMissing {
        /// The header's name.
        name: &'static str,
    },
    /// A header appears more than once: readers disagree on which copy counts.
    HeaderRepeated {
        /// The header's name.
        name: &'static str,
    },
    /// A header value holds something other than visible ASCII.
    HeaderNotAscii {
        /// The header's name.
        name: &'static str,
    },
    /// `Authorization` is not strict standard base64 (RFC 4648 section 4, padded).
    SignatureMalformed,
    /// `Authorization` decodes to another length than the 64 bytes of `r‖s`.
    SignatureWrongLength {
        /// The decoded length.
        len: usize,
    },
    /// `r` or `s` is zero or not below the group order.
    SignatureOutOfRange,
    /// `s` is above half the group order (the node refuses the high-S twin).
    SignatureHighS,
    /// The signature does not verify over the signed input with this key.
    SignatureInvalid,
    /// `X-Timestamp` is not the canonical decimal spelling of a 64-bit integer.
    TimestampMalformed,
    /// `X-Timestamp` is zero or negative: the chain and the SDKs sign different bytes for it.
    TimestampNotPositive,
    /// `X-Timestamp` is older than the window allows.
    TimestampTooOld,
    /// `X-Timestamp` is further in the future than the window allows.
    TimestampTooFarAhead,
    /// `X-Requester-Address` is not the address of the signing key.
    AddressMismatch,
    /// The configured address prefix cannot be a bech32 prefix.
    PrefixInvalid(AddressError),
}

impl NativeSigError {
    /// The stable snake_case code of this reason.
    pub const fn code(&self) -> &'static str {
        match self {
            NativeSigError::HeaderMissing { .. } => "requester_header_missing",
            NativeSigError::HeaderRepeated { .. } => "requester_header_repeated",
            NativeSigError::HeaderNotAscii { .. } => "requester_header_not_ascii",
            NativeSigError::SignatureMalformed => "requester_sig_malformed",
            NativeSigError::SignatureWrongLength { .. } => "requester_sig_wrong_length",
            NativeSigError::SignatureOutOfRange => "requester_sig_out_of_range",
            NativeSigError::SignatureHighS => "requester_sig_high_s",
            NativeSigError::SignatureInvalid => "requester_sig_invalid",
            NativeSigError::TimestampMalformed => "requester_timestamp_malformed",
            NativeSigError::TimestampNotPositive => "requester_timestamp_not_positive",
            NativeSigError::TimestampTooOld => "requester_timestamp_too_old",
            NativeSigError::TimestampTooFarAhead => "requester_timestamp_too_far_ahead",
            NativeSigError::AddressMismatch => "requester_address_mismatch",
            NativeSigError::PrefixInvalid(_) => "requester_prefix_invalid",
        }
    }

    /// A one-line explanation.
    pub fn message(&self) -> String {
        match self {
            NativeSigError::HeaderMissing { name } => format!("the {name} header is missing"),
            NativeSigError::HeaderRepeated { name } => {
                format!("the {name} header appears more than once")
            }
            NativeSigError::HeaderNotAscii { name } => {
                format!("the {name} header is not visible ASCII")
            }
            NativeSigError::SignatureMalformed => {
                "Authorization is not standard padded base64 (no Bearer prefix)".into()
            }
            NativeSigError::SignatureWrongLength { len } => {
                format!("Authorization decodes to {len} bytes, not the 64 bytes of r||s")
            }
            NativeSigError::SignatureOutOfRange => {
                "the signature's r or s is zero or not below the curve order".into()
            }
            NativeSigError::SignatureHighS => {
                "the signature's s is high; only the low-S form is accepted".into()
            }
            NativeSigError::SignatureInvalid => {
                "the signature does not verify over SHA-256 of hex(SHA-256(body)) || timestamp || transfer address".into()
            }
            NativeSigError::TimestampMalformed => {
                "X-Timestamp is not a canonical decimal count of nanoseconds".into()
            }
            NativeSigError::TimestampNotPositive => "X-Timestamp must be after 1970".into(),
            NativeSigError::TimestampTooOld => "X-Timestamp is too old".into(),
            NativeSigError::TimestampTooFarAhead => "X-Timestamp is too far in the future".into(),
            NativeSigError::AddressMismatch => {
                "X-Requester-Address is not the address of the signing key".into()
            }
            NativeSigError::PrefixInvalid(e) => format!("address prefix: {e}"),
        }
    }
}

impl fmt::Display for NativeSigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for NativeSigError {}
