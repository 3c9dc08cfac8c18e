//! The cryptography of a passport: addresses, the principal's ADR-036 signature and the
//! agent's Ed25519 request signature. Each rule lives in exactly one function here; the
//! verifier and the minting tools both call these.

mod address;
mod agent;
mod principal;

pub use address::{
    check_address, derive_address, is_canonical_address, AddressError, AddressProblem,
    DEFAULT_ADDRESS_PREFIX, MAX_ADDRESS_LEN,
};
pub use agent::{agent_signing_payload, write_agent_signing_payload, AgentKey, AgentSecret};
pub use principal::{adr036_sign_bytes, PrincipalKey, PrincipalSecret};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Decodes standard base64 (RFC 4648 section 4) strictly: padding is required and must
/// be canonical, the unused trailing bits must be zero, and no white space is allowed.
/// A lenient decoder would let one passport have many spellings, and therefore many
/// SHA-256 values, which breaks caching, revocation by hash and audit correlation.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

/// Standard base64 with padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Fills `out` from the operating system's random source.
pub fn random_bytes(out: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::getrandom(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_decoded_strictly() {
        assert_eq!(decode_base64("AAE=").unwrap(), vec![0, 1]);
        assert!(decode_base64("AAE").is_none(), "missing padding");
        assert!(decode_base64("AAF=").is_none(), "non-zero trailing bits");
        assert!(decode_base64("AA E=").is_none(), "white space");
        assert!(decode_base64("AA-_").is_none(), "URL-safe alphabet");
        assert!(decode_base64("AAE==").is_none(), "extra padding");
    }
}
