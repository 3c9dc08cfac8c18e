//! The principal's key: secp256k1, signing the envelope through Cosmos ADR-036
//! (`signArbitrary`, as Keplr and cosmjs produce it).

use super::{derive_address, encode_base64, random_bytes, AddressError};
use crate::envelope::write_json_string;
use k256::ecdsa::signature::DigestSigner;
use k256::ecdsa::{Signature, SigningKey};
use k256::elliptic_curve::scalar::IsHigh;
use sha2::{Digest, Sha256};
use std::fmt;

/// A principal's public key: a valid compressed secp256k1 point, held decoded for
/// libsecp256k1, which checks signatures faster than k256.
#[derive(Clone, PartialEq, Eq)]
pub struct PrincipalKey {
    key: secp256k1::PublicKey,
    compressed: [u8; 33],
}

/// libsecp256k1's verification context (immutable; built once).
fn verifier() -> &'static secp256k1::Secp256k1<secp256k1::VerifyOnly> {
    static CONTEXT: std::sync::OnceLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> =
        std::sync::OnceLock::new();
    CONTEXT.get_or_init(secp256k1::Secp256k1::verification_only)
}

impl fmt::Debug for PrincipalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrincipalKey({})", encode_base64(&self.compressed))
    }
}

/// The ADR-036 sign bytes for `data` signed by `signer`: the canonical (RFC 8785) JSON of
/// a zero-fee amino `StdSignDoc` with one `sign/MsgSignData` message. `data` appears as
/// standard base64, as wallets encode it. The document's shape is fixed, so it is
/// written directly, members in sorted order; the public Keplr and Cosmos SDK vectors
/// in the tests pin every byte.
pub fn adr036_sign_bytes(signer: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(200 + data.len() * 4 / 3 + signer.len());
    out.extend_from_slice(
        br#"{"account_number":"0","chain_id":"","fee":{"amount":[],"gas":"0"},"memo":"","msgs":[{"type":"sign/MsgSignData","value":{"data":"#,
    );
    write_json_string(&encode_base64(data), &mut out);
    out.extend_from_slice(br#","signer":"#);
    write_json_string(signer, &mut out);
    out.extend_from_slice(br#"}}],"sequence":"0"}"#);
    out
}

impl PrincipalKey {
    /// Accepts exactly 33 bytes, a `0x02`/`0x03` prefix and a point on the curve.
    /// Uncompressed and hybrid encodings are refused: the address is derived from the
    /// compressed form, so any other form would name a different account.
    pub fn from_compressed(bytes: &[u8]) -> Option<PrincipalKey> {
        let compressed: [u8; 33] = bytes.try_into().ok()?;
        if compressed[0] != 0x02 && compressed[0] != 0x03 {
            return None;
        }
        let key = secp256k1::PublicKey::from_slice(&compressed).ok()?;
        Some(PrincipalKey { key, compressed })
    }

    /// The 33-byte compressed encoding.
    pub fn compressed(&self) -> &[u8; 33] {
        &self.compressed
    }

    /// Standard base64 of the compressed encoding, as the envelope carries it.
    pub fn to_base64(&self) -> String {
        encode_base64(&self.compressed)
    }

    /// The account address for this key under `prefix`.
    pub fn address(&self, prefix: &str) -> Result<String, AddressError> {
        derive_address(prefix, &self.compressed)
    }

    /// Verifies an ADR-036 signature (64 bytes, `r || s`) by this key over `data` as
    /// signed by `signer`.
    ///
    /// Rejects a signature of the wrong length, `r` or `s` out of range, and a high `s`:
    /// `(r, n - s)` verifies whenever `(r, s)` does, so accepting both would give one
    /// passport two spellings (the Cosmos SDK refuses high `s` for the same reason).
    pub fn verify_adr036(&self, signer: &str, data: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(signature) else {
            return false;
        };
        if bool::from(sig.s().is_high()) {
            return false;
        }
        // The same 64 bytes, in range and low-S as just checked.
        let Ok(sig) = secp256k1::ecdsa::Signature::from_compact(signature) else {
            return false;
        };
        self.verify_digest(Sha256::digest(adr036_sign_bytes(signer, data)).into(), &sig)
    }

    /// Checks an ECDSA signature over a SHA-256 `digest` with libsecp256k1; range and
    /// low-S are the caller's to check first (both callers refuse a high `s`).
    pub(crate) fn verify_digest(
        &self,
        digest: [u8; 32],
        sig: &secp256k1::ecdsa::Signature,
    ) -> bool {
        let message = secp256k1::Message::from_digest(digest);
        verifier().verify_ecdsa(&message, sig, &self.key).is_ok()
    }
}

/// A principal's secret key, for minting passports in tests and tools.
#[derive(Clone)]
pub struct PrincipalSecret(SigningKey);

impl fmt::Debug for PrincipalSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrincipalSecret(..)")
    }
}

impl PrincipalSecret {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<PrincipalSecret, getrandom::Error> {
        loop {
            let mut bytes = [0u8; 32];
            random_bytes(&mut bytes)?;
            if let Some(k) = PrincipalSecret::from_bytes(&bytes) {
                return Ok(k);
            }
        }
    }

    /// The key with this 32-byte scalar; `None` for zero or a value not below the order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<PrincipalSecret> {
        SigningKey::from_slice(bytes).ok().map(PrincipalSecret)
    }

    /// The 32-byte scalar.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes().into()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PrincipalKey {
        let vk = *self.0.verifying_key();
        let point = vk.to_encoded_point(true);
        let mut compressed = [0u8; 33];
        compressed.copy_from_slice(point.as_bytes());
        // The public point of a k256 signing key is on the curve whatever the scalar, so
        // libsecp256k1 always accepts its encoding.
        let key = secp256k1::PublicKey::from_slice(&compressed)
            .expect("a k256 public key is a valid secp256k1 point");
        PrincipalKey { key, compressed }
    }

    /// An ADR-036 signature over `data` by `signer`, low-S, as 64 bytes `r || s`.
    pub fn sign_adr036(&self, signer: &str, data: &[u8]) -> [u8; 64] {
        let sig: Signature = self
            .0
            .sign_digest(Sha256::new_with_prefix(adr036_sign_bytes(signer, data)));
        let sig = sig.normalize_s().unwrap_or(sig);
        sig.to_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::decode_base64;

    #[test]
    fn keplr_signature_from_public_test_data_verifies() {
        let key = PrincipalKey::from_compressed(
            &decode_base64("Aoz4+N8ckpDiz4oOKKKVERJGeS49nOgGrXw0s0dkymDr").unwrap(),
        )
        .unwrap();
        let signer = "bostrom1qjjjur5et06eszh82pfv7kvdnu3sur239umc00";
        assert_eq!(key.address("bostrom").unwrap(), signer);
        let data = decode_base64("eyJuaWNrbmFtZSI6ImJvYi1jb3Ntb3MiLCJhdmF0YXJfY2lkIjoiUW1VMU5mMm9wSkdaR05XbXF4QWE5YmI4WDZ3VlNIUkJEQ1k2bmJtM1JtVlhHYiIsImdpZnRfY2xhaW1pbmdfYWRkcmVzc190eXBlIjoiY29zbW9zIiwiZ2lmdF9jbGFpbWluZ19hZGRyZXNzIjoiY29zbW9zMXFqamp1cjVldDA2ZXN6aDgycGZ2N2t2ZG51M3N1cjIzeDAwdDNnIiwidGFyZ2V0X2FkZHJlc3MiOiJib3N0cm9tMXFqamp1cjVldDA2ZXN6aDgycGZ2N2t2ZG51M3N1cjIzOXVtYzAwIiwicmVsYXlfcmV3YXJkIjoiMC4wMSJ9").unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(adr036_sign_bytes(signer, &data))),
            "ebc83cd5c74895b64bfe0fd7c7eca370001f18b8b1d70476bdf15d19ef5e8d1c"
        );
        let sig = decode_base64(
            "CvMkqkQHVPV3DTyVErth16OdTjAwqQD6t+r9ImSpdwUZFin+UPeGSfH9hhuAmqYAp4CffhNNSEisdfzwwvlN/w==",
        )
        .unwrap();
        assert!(key.verify_adr036(signer, &data, &sig));
        assert!(!key.verify_adr036(signer, b"other data", &sig));
    }

    #[test]
    fn cosmos_sdk_adr036_vector_verifies() {
        let key = PrincipalKey::from_compressed(
            &hex::decode("034646ae5047316b4230d0086c8acec687f00b1cd9d1dc634f6cb358ac0a9a8fff")
                .unwrap(),
        )
        .unwrap();
        let signer = "cosmos1mnyn7x24xj6vraxeeq56dfkxa009tvhgknhm04";
        assert_eq!(key.address("cosmos").unwrap(), signer);
        let data = decode_base64("SGVsbG8sIEFEUi0wMzYh").unwrap();
        assert_eq!(data, b"Hello, ADR-036!");
        assert_eq!(
            hex::encode(Sha256::digest(adr036_sign_bytes(signer, &data))),
            "5ac8daed449a016684fd64bade7510b75ccd7c6eefa31b60a10eb577b37575e3"
        );
        let sig = hex::decode("043485aac9cd7de64da9548b72635c061e07b20063488c0d3affc3c843b33c0458f799ac6592b6260c5ce326be4996d95ee8cfbea4ae76b820f2a7a01ad3a5cc").unwrap();
        assert!(key.verify_adr036(signer, &data, &sig));
        assert!(!key.verify_adr036("cosmos1other", &data, &sig));
    }

    #[test]
    fn sign_bytes_are_the_canonical_form_of_the_amino_document() {
        let signer = "gonka1\"odd\\signer\u{1}";
        let data = b"any bytes \x00\xff";
        let doc = serde_json::json!({
            "account_number": "0", "chain_id": "", "fee": {"amount": [], "gas": "0"}, "memo": "",
            "msgs": [{"type": "sign/MsgSignData", "value": {"data": encode_base64(data), "signer": signer}}],
            "sequence": "0"
        });
        assert_eq!(
            adr036_sign_bytes(signer, data),
            serde_jcs::to_vec(&doc).unwrap()
        );
    }

    #[test]
    fn high_s_twin_of_a_valid_signature_is_refused() {
        let secret = PrincipalSecret::from_bytes(&[7u8; 32]).unwrap();
        let key = secret.public_key();
        let sig = secret.sign_adr036("gonka1x", b"doc");
        assert!(key.verify_adr036("gonka1x", b"doc", &sig));
        let low = Signature::from_slice(&sig).unwrap();
        let high_s = -*low.s();
        let high = Signature::from_scalars(low.r().to_bytes(), high_s.to_bytes()).unwrap();
        assert!(bool::from(high.s().is_high()));
        assert!(!key.verify_adr036("gonka1x", b"doc", &high.to_bytes()));
    }

    #[test]
    fn only_compressed_points_are_keys() {
        let secret = PrincipalSecret::from_bytes(&[9u8; 32]).unwrap();
        let compressed = *secret.public_key().compressed();
        assert!(PrincipalKey::from_compressed(&compressed).is_some());
        let uncompressed = secret.0.verifying_key().to_encoded_point(false);
        assert!(PrincipalKey::from_compressed(uncompressed.as_bytes()).is_none());
        let mut off_curve = compressed;
        off_curve[1..].fill(0xff);
        assert!(PrincipalKey::from_compressed(&off_curve).is_none());
        assert!(PrincipalKey::from_compressed(&compressed[..32]).is_none());
    }
}
