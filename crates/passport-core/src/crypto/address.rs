//! Cosmos account addresses: `bech32(prefix, RIPEMD160(SHA256(compressed key)))`.

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32, Hrp};
use ripemd::Ripemd160;
use sha2::{Digest, Sha256};
use std::fmt;

/// The address prefix on Gonka.
pub const DEFAULT_ADDRESS_PREFIX: &str = "gonka";

/// Why no address can be derived under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    /// The prefix is empty or holds something other than lowercase letters and digits.
    PrefixCharacters {
        /// The refused prefix.
        prefix: String,
    },
    /// The prefix is not a valid bech32 human-readable part (BIP-173).
    Prefix {
        /// The refused prefix.
        prefix: String,
        /// What bech32 found wrong with it.
        source: bech32::primitives::hrp::Error,
    },
    /// bech32 could not encode the address (for example, it would be too long).
    Encode(bech32::EncodeError),
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::PrefixCharacters { prefix } => write!(
                f,
                "address prefix {prefix:?} must be non-empty lowercase letters and digits"
            ),
            AddressError::Prefix { prefix, source } => {
                write!(f, "address prefix {prefix:?}: {source}")
            }
            AddressError::Encode(e) => write!(f, "cannot encode address: {e}"),
        }
    }
}

impl std::error::Error for AddressError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AddressError::PrefixCharacters { .. } => None,
            AddressError::Prefix { source, .. } => Some(source),
            AddressError::Encode(e) => Some(e),
        }
    }
}

fn checked_prefix(prefix: &str) -> Result<Hrp, AddressError> {
    if prefix.is_empty()
        || prefix
            .bytes()
            .any(|b| !b.is_ascii_lowercase() && !b.is_ascii_digit())
    {
        return Err(AddressError::PrefixCharacters {
            prefix: prefix.to_owned(),
        });
    }
    Hrp::parse(prefix).map_err(|source| AddressError::Prefix {
        prefix: prefix.to_owned(),
        source,
    })
}

/// The account address of a 33-byte compressed secp256k1 key: lowercase bech32 (not
/// bech32m) with the given prefix.
pub fn derive_address(prefix: &str, compressed_key: &[u8; 33]) -> Result<String, AddressError> {
    let hrp = checked_prefix(prefix)?;
    let hash = Ripemd160::digest(Sha256::digest(compressed_key));
    bech32::encode_lower::<Bech32>(hrp, &hash).map_err(AddressError::Encode)
}

/// The longest bech32 string (BIP-173); anything longer is refused before decoding.
pub const MAX_ADDRESS_LEN: usize = 90;

/// Why a string is not a canonical account address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressProblem {
    /// Longer than [`MAX_ADDRESS_LEN`] characters.
    TooLong,
    /// Contains an uppercase letter.
    NotLowercase,
    /// Not bech32 with a valid bech32 (not bech32m) checksum.
    NotBech32,
    /// Another human-readable prefix than the configured one.
    WrongPrefix,
    /// The payload is not 20 bytes.
    NotAnAccount,
}

impl fmt::Display for AddressProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressProblem::TooLong => "longer than 90 characters",
            AddressProblem::NotLowercase => "not lowercase",
            AddressProblem::NotBech32 => {
                "not bech32 with a valid checksum (bech32m is not an account address)"
            }
            AddressProblem::WrongPrefix => "another prefix than this chain's",
            AddressProblem::NotAnAccount => "the payload is not a 20-byte account hash",
        })
    }
}

/// Checks that `address` is a canonical account address with this prefix: at most 90
/// characters, lowercase, a bech32 (not bech32m) checksum, and a 20-byte payload.
/// Mixed or upper case, and the bech32m checksum, are refused so that one account has
/// exactly one spelling.
pub fn check_address(prefix: &str, address: &str) -> Result<(), AddressProblem> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(AddressProblem::TooLong);
    }
    if address.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(AddressProblem::NotLowercase);
    }
    let parsed = CheckedHrpstring::new::<Bech32>(address).map_err(|_| AddressProblem::NotBech32)?;
    if parsed.hrp().as_str() != prefix {
        return Err(AddressProblem::WrongPrefix);
    }
    if parsed.byte_iter().len() != 20 {
        return Err(AddressProblem::NotAnAccount);
    }
    Ok(())
}

/// Whether `address` is a canonical account address with this prefix (see
/// [`check_address`]).
pub fn is_canonical_address(prefix: &str, address: &str) -> bool {
    check_address(prefix, address).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::decode_base64;

    #[test]
    fn a_prefix_outside_lowercase_letters_and_digits_is_refused_by_name() {
        let err = derive_address("Gonka", &[2u8; 33]).unwrap_err();
        assert_eq!(
            err,
            AddressError::PrefixCharacters {
                prefix: "Gonka".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "address prefix \"Gonka\" must be non-empty lowercase letters and digits"
        );
        assert!(matches!(
            derive_address("", &[2u8; 33]),
            Err(AddressError::PrefixCharacters { .. })
        ));
    }

    fn key(b64: &str) -> [u8; 33] {
        decode_base64(b64).unwrap().try_into().unwrap()
    }

    #[test]
    fn cosmjs_vector_derives_its_address() {
        let k = key("AtQaCqFnshaZQp6rIkvAPyzThvCvXSDO+9AzbxVErqJP");
        assert_eq!(
            derive_address("cosmos", &k).unwrap(),
            "cosmos1h806c7khnvmjlywdrkdgk2vrayy2mmvf9rxk2r"
        );
    }

    #[test]
    fn gonka_config_vector_derives_its_address() {
        let k = key("Au5ZQav3E36PZpGta2xUa8r9xEEo9Biph3fG5i3qaeSG");
        let a = derive_address("gonka", &k).unwrap();
        assert_eq!(a, "gonka1jwrv4q8hpxc354pr87pt0pkulaep67e9s4z0ym");
        assert!(is_canonical_address("gonka", &a));
    }

    #[test]
    fn bech32m_checksum_is_refused() {
        assert!(!is_canonical_address(
            "gonka",
            "gonka1jwrv4q8hpxc354pr87pt0pkulaep67e99fjrpe"
        ));
    }

    #[test]
    fn uppercase_and_foreign_prefixes_are_refused() {
        assert!(!is_canonical_address(
            "gonka",
            "GONKA1JWRV4Q8HPXC354PR87PT0PKULAEP67E9S4Z0YM"
        ));
        assert!(!is_canonical_address(
            "cosmos",
            "gonka1jwrv4q8hpxc354pr87pt0pkulaep67e9s4z0ym"
        ));
    }

    #[test]
    fn bad_prefixes_are_configuration_errors() {
        let k = key("Au5ZQav3E36PZpGta2xUa8r9xEEo9Biph3fG5i3qaeSG");
        assert!(derive_address("", &k).is_err());
        assert!(derive_address("Gonka", &k).is_err());
    }
}
