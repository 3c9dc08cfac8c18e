//! The agent's key: Ed25519 (RFC 8032, no prehash) over the request signing payload.

use super::{encode_base64, random_bytes};
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::fmt;

/// Domain separation tag that opens every agent signing payload.
pub const AGENT_SIG_DOMAIN: &[u8] = b"APS-AGENT-SIG-V1\n";

/// Feeds the agent signing payload to `sink`, piece by piece:
///
/// ```text
/// "APS-AGENT-SIG-V1\n"
/// u32_be(len) chain_id | u32_be(len) method | u32_be(len) uri
/// u32_be(len) envelope_jcs | u32_be(len) body
/// ```
///
/// Every field is length-prefixed so that no two requests share a payload by moving
/// bytes across a field boundary. Returns `None` when a field is longer than `u32::MAX`
/// bytes, which no verifier can express.
pub fn write_agent_signing_payload(
    chain_id: &str,
    method: &str,
    uri: &str,
    envelope_jcs: &[u8],
    body: &[u8],
    mut sink: impl FnMut(&[u8]),
) -> Option<()> {
    let fields: [&[u8]; 5] = [
        chain_id.as_bytes(),
        method.as_bytes(),
        uri.as_bytes(),
        envelope_jcs,
        body,
    ];
    let mut lengths = [[0u8; 4]; 5];
    for (len, field) in lengths.iter_mut().zip(fields) {
        *len = u32::try_from(field.len()).ok()?.to_be_bytes();
    }
    sink(AGENT_SIG_DOMAIN);
    for (len, field) in lengths.iter().zip(fields) {
        sink(len);
        sink(field);
    }
    Some(())
}

/// The agent signing payload as one byte string (see [`write_agent_signing_payload`]).
pub fn agent_signing_payload(
    chain_id: &str,
    method: &str,
    uri: &str,
    envelope_jcs: &[u8],
    body: &[u8],
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(
        AGENT_SIG_DOMAIN.len()
            + 20
            + chain_id.len()
            + method.len()
            + uri.len()
            + envelope_jcs.len()
            + body.len(),
    );
    write_agent_signing_payload(chain_id, method, uri, envelope_jcs, body, |p| {
        out.extend_from_slice(p)
    })?;
    Some(out)
}

/// An agent's public key as the envelope carries it: 32 bytes, and the point they encode
/// when that is a canonical encoding of a point outside the small-order subgroup.
///
/// A key read from a passport ([`AgentKey::from_wire`]) may be unusable: the reference
/// only checks the length when it decodes the key, and an unusable key fails where its
/// signature is checked, with `agent_sig_invalid`, so that both give one verdict.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AgentKey {
    bytes: [u8; 32],
    key: Option<VerifyingKey>,
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentKey({})", self.to_base64())
    }
}

impl AgentKey {
    /// Accepts exactly 32 bytes that are the canonical encoding of a point outside the
    /// small-order subgroup. A small-order key lets anyone produce signatures that verify
    /// under lenient rules, and a non-canonical encoding gives one key two spellings.
    pub fn from_bytes(bytes: &[u8]) -> Option<AgentKey> {
        let key = AgentKey::from_wire(bytes)?;
        key.key.map(|_| key)
    }

    /// Accepts any 32 bytes, as the reference decodes a passport's key; whether they are a
    /// usable key (see [`AgentKey::from_bytes`]) is decided by [`AgentKey::verify_request`],
    /// which refuses every signature under an unusable one.
    pub fn from_wire(bytes: &[u8]) -> Option<AgentKey> {
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        Some(AgentKey {
            bytes,
            key: usable_point(&bytes),
        })
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// Standard base64 of the key, as the envelope carries it.
    pub fn to_base64(&self) -> String {
        encode_base64(&self.bytes)
    }

    /// Verifies the agent's request signature strictly, streaming the payload into the
    /// hash instead of copying the body.
    ///
    /// Rejects every signature under an unusable key, and what `verify_strict` rejects:
    /// `s` not reduced modulo the group order (malleable), and an `R` that does not
    /// decompress or has small order.
    pub fn verify_request(
        &self,
        signature: &[u8; 64],
        chain_id: &str,
        method: &str,
        uri: &str,
        envelope_jcs: &[u8],
        body: &[u8],
    ) -> bool {
        let Some(key) = self.key else {
            return false;
        };
        let mut r = [0u8; 32];
        r.copy_from_slice(&signature[..32]);
        match CompressedEdwardsY(r).decompress() {
            Some(point) if !point.is_small_order() => {}
            _ => return false,
        }
        let sig = Signature::from_bytes(signature);
        let Ok(mut stream) = key.verify_stream(&sig) else {
            return false;
        };
        if write_agent_signing_payload(chain_id, method, uri, envelope_jcs, body, |p| {
            stream.update(p)
        })
        .is_none()
        {
            return false;
        }
        stream.finalize_and_verify().is_ok()
    }
}

/// The point `bytes` encode, when the encoding is canonical and the point is not of small
/// order.
fn usable_point(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    if !is_canonical_encoding(bytes) {
        return None;
    }
    let key = VerifyingKey::from_bytes(bytes).ok()?;
    (!key.is_weak()).then_some(key)
}

/// Whether `bytes` is the one encoding of the point it decodes to (RFC 8032 5.1.3):
/// the y coordinate below p = 2^255 - 19, and the sign bit clear when x is 0 (y = 1 or
/// y = p - 1). Checked on the bytes, so a key is decompressed once, not decompressed and
/// compressed again.
fn is_canonical_encoding(bytes: &[u8; 32]) -> bool {
    let sign = bytes[31] >> 7;
    let mut y = *bytes;
    y[31] &= 0x7f;
    let high_all_ones = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff);
    // y >= p: the top 254 bits all ones and the low byte at least 0xed.
    if high_all_ones && y[0] >= 0xed {
        return false;
    }
    let y_is_one = y[0] == 1 && y[1..].iter().all(|&b| b == 0);
    let y_is_p_minus_one = high_all_ones && y[0] == 0xec;
    !(sign == 1 && (y_is_one || y_is_p_minus_one))
}

/// An agent's secret key, for signing requests.
#[derive(Clone)]
pub struct AgentSecret(SigningKey);

impl fmt::Debug for AgentSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentSecret(..)")
    }
}

impl AgentSecret {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<AgentSecret, getrandom::Error> {
        let mut seed = [0u8; 32];
        random_bytes(&mut seed)?;
        Ok(AgentSecret::from_bytes(&seed))
    }

    /// The key with this 32-byte seed.
    pub fn from_bytes(seed: &[u8; 32]) -> AgentSecret {
        AgentSecret(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public_key(&self) -> AgentKey {
        let key = self.0.verifying_key();
        AgentKey {
            bytes: key.to_bytes(),
            key: Some(key),
        }
    }

    /// Signs a request; `None` when a field is too long to be length-prefixed.
    pub fn sign_request(
        &self,
        chain_id: &str,
        method: &str,
        uri: &str,
        envelope_jcs: &[u8],
        body: &[u8],
    ) -> Option<[u8; 64]> {
        let payload = agent_signing_payload(chain_id, method, uri, envelope_jcs, body)?;
        Some(self.0.sign(&payload).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte check agrees with decompressing and compressing again, on every edge
    /// encoding and on ordinary keys.
    #[test]
    fn canonical_encoding_is_decided_on_the_bytes() {
        let round_trips = |b: &[u8; 32]| {
            CompressedEdwardsY(*b)
                .decompress()
                .is_some_and(|p| p.compress().to_bytes() == *b)
        };
        let mut cases: Vec<[u8; 32]> = Vec::new();
        for low in 0xe0..=0xffu8 {
            for sign in [0u8, 0x80] {
                let mut b = [0xffu8; 32];
                b[0] = low;
                b[31] = 0x7f | sign;
                cases.push(b);
            }
        }
        for sign in [0u8, 0x80] {
            let mut one = [0u8; 32];
            one[0] = 1;
            one[31] |= sign;
            cases.push(one);
            let mut zero = [0u8; 32];
            zero[31] |= sign;
            cases.push(zero);
        }
        for seed in 0..64u8 {
            let k = AgentSecret::from_bytes(&[seed; 32]).public_key().to_bytes();
            cases.push(k);
            let mut flipped = k;
            flipped[31] ^= 0x80;
            cases.push(flipped);
        }
        for b in cases {
            if CompressedEdwardsY(b).decompress().is_some() {
                assert_eq!(is_canonical_encoding(&b), round_trips(&b), "{b:02x?}");
            }
        }
    }

    #[test]
    fn payload_layout_is_length_prefixed_big_endian() {
        let p = agent_signing_payload("c", "POST", "/v1?x=1", b"{}", b"body").unwrap();
        let mut want = b"APS-AGENT-SIG-V1\n".to_vec();
        for f in [&b"c"[..], b"POST", b"/v1?x=1", b"{}", b"body"] {
            want.extend_from_slice(&(f.len() as u32).to_be_bytes());
            want.extend_from_slice(f);
        }
        assert_eq!(p, want);
    }

    #[test]
    fn streamed_verification_accepts_exactly_what_verify_strict_accepts() {
        let secret = AgentSecret::from_bytes(&[3u8; 32]);
        let key = secret.public_key();
        let sig = secret
            .sign_request(
                "gonka-mainnet",
                "POST",
                "/v1/chat/completions",
                b"{}",
                b"{\"model\":\"m\"}",
            )
            .unwrap();
        let payload = agent_signing_payload(
            "gonka-mainnet",
            "POST",
            "/v1/chat/completions",
            b"{}",
            b"{\"model\":\"m\"}",
        )
        .unwrap();
        assert!(key
            .key
            .unwrap()
            .verify_strict(&payload, &Signature::from_bytes(&sig))
            .is_ok());
        assert!(key.verify_request(
            &sig,
            "gonka-mainnet",
            "POST",
            "/v1/chat/completions",
            b"{}",
            b"{\"model\":\"m\"}"
        ));
        assert!(!key.verify_request(
            &sig,
            "gonka-testnet",
            "POST",
            "/v1/chat/completions",
            b"{}",
            b"{\"model\":\"m\"}"
        ));
        assert!(!key.verify_request(
            &sig,
            "gonka-mainnet",
            "GET",
            "/v1/chat/completions",
            b"{}",
            b"{\"model\":\"m\"}"
        ));
        assert!(!key.verify_request(
            &sig,
            "gonka-mainnet",
            "POST",
            "/v1/chat/completions",
            b"{}",
            b"{\"model\":\"n\"}"
        ));
    }

    #[test]
    fn non_canonical_s_is_refused() {
        let secret = AgentSecret::from_bytes(&[4u8; 32]);
        let key = secret.public_key();
        let mut sig = secret.sign_request("c", "POST", "/", b"{}", b"").unwrap();
        assert!(key.verify_request(&sig, "c", "POST", "/", b"{}", b""));
        // s + l, where l = 2^252 + 27742317777372353535851937790883648493, still verifies
        // under the cofactorless equation but is not the canonical encoding.
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(sig[32 + i]) + u16::from(l[i]) + carry;
            sig[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert!(!key.verify_request(&sig, "c", "POST", "/", b"{}", b""));
    }

    #[test]
    fn small_order_keys_are_refused() {
        let identity = {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        };
        assert!(AgentKey::from_bytes(&identity).is_none());
        assert!(AgentKey::from_bytes(&[0u8; 31]).is_none());
        let good = AgentSecret::from_bytes(&[5u8; 32]).public_key().to_bytes();
        assert!(AgentKey::from_bytes(&good).is_some());
    }

    #[test]
    fn a_wire_key_is_any_32_bytes_but_an_unusable_one_verifies_nothing() {
        let secret = AgentSecret::from_bytes(&[6u8; 32]);
        let sig = secret.sign_request("c", "POST", "/", b"{}", b"").unwrap();
        let good = secret.public_key().to_bytes();
        assert!(AgentKey::from_wire(&good)
            .unwrap()
            .verify_request(&sig, "c", "POST", "/", b"{}", b""));
        // y = p + 1 is a non-canonical spelling of y = 1 (the identity); y = 2 is not on
        // the curve.
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for bytes in [non_canonical, off_curve, identity] {
            let key = AgentKey::from_wire(&bytes).unwrap();
            assert_eq!(key.to_bytes(), bytes);
            assert!(AgentKey::from_bytes(&bytes).is_none());
            assert!(!key.verify_request(&sig, "c", "POST", "/", b"{}", b""));
        }
        assert!(AgentKey::from_wire(&[0u8; 31]).is_none());
    }
}
