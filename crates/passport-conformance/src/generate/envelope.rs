//! Envelope members, one rule broken at a time (spec sections 3 and 4.3; section 6 steps 3-10a).

use super::{
    body, config, envelope, rejected, seal, signed, step, vector, Keys, ISSUED, MODEL, URI,
};
use crate::Vector;
use passport_core::crypto::{derive_address, encode_base64};
use serde_json::{json, Value};

/// One vector per envelope rule: members, versions, time fields, keys, addresses,
/// beneficiary and the encoding of `principal_sig`.
pub(super) fn members(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let b = body(MODEL);

    // A vector with one request whose passport is `mutate(envelope)` sealed by the
    // fixture principal and signed by the fixture agent, expected to fail with `code`.
    let mut reject_envelope =
        |name: &str, description: &str, code: &str, mutate: &dyn Fn(&mut Value)| {
            let mut v = envelope(k);
            mutate(&mut v);
            let raw = seal(v, &k.principal);
            out.push(vector(
                name,
                description,
                config(),
                vec![step(signed(k, &raw, URI, &b), rejected(code))],
            ));
        };

    reject_envelope(
        "version-unknown",
        "v must be aps-agent-envelope-v1",
        "version_unknown",
        &|v| v["v"] = json!("aps-agent-envelope-v2"),
    );
    reject_envelope(
        "audience-mismatch",
        "audience must be gonka",
        "audience_mismatch",
        &|v| v["audience"] = json!("openai"),
    );
    reject_envelope(
        "chain-id-mismatch",
        "a passport for gonka-testnet is refused by a gonka-mainnet verifier",
        "chain_id_mismatch",
        &|v| v["chain_id"] = json!("gonka-testnet"),
    );
    reject_envelope(
        "envelope-unknown-member",
        "an unknown top-level member is refused even though it is signed",
        "envelope_malformed",
        &|v| v["max_spend"] = json!("100"),
    );
    reject_envelope(
        "envelope-unknown-scope-member",
        "an unknown member inside scope is refused",
        "envelope_malformed",
        &|v| v["scope"]["max_tokens"] = json!("10"),
    );
    reject_envelope(
        "envelope-allowed-models-null",
        "allowed_models null is refused (the reference reads it as absent, which widens scope)",
        "envelope_malformed",
        &|v| v["scope"]["allowed_models"] = Value::Null,
    );
    reject_envelope(
        "envelope-beneficiary-null",
        "null is never a member value: beneficiary null is refused, not read as absent",
        "envelope_malformed",
        &|v| v["beneficiary"] = Value::Null,
    );
    reject_envelope(
        "envelope-member-wrong-case",
        "member names are case-sensitive: Agent_id is unknown and agent_id is missing",
        "envelope_malformed",
        &|v| {
            let obj = v.as_object_mut().expect("object");
            let id = obj.remove("agent_id").expect("present");
            obj.insert("Agent_id".into(), id);
        },
    );
    reject_envelope(
        "envelope-empty-agent-id",
        "required members must be non-empty",
        "envelope_malformed",
        &|v| v["agent_id"] = json!(""),
    );
    reject_envelope(
        "envelope-bad-timestamp",
        "issued_at must be RFC 3339 with T and an offset",
        "envelope_malformed",
        &|v| v["issued_at"] = json!("2026-05-21 11:59:00"),
    );
    reject_envelope(
        "envelope-expiry-not-after-issue",
        "expires_at equal to issued_at is malformed",
        "envelope_malformed",
        &|v| v["scope"]["expires_at"] = json!(ISSUED),
    );
    reject_envelope(
        "ttl-one-second-over",
        "expires_at - issued_at = 3601 s exceeds the default max_ttl_seconds of 3600",
        "ttl_too_long",
        &|v| {
            v["issued_at"] = json!("2026-05-21T11:30:00Z");
            v["scope"]["expires_at"] = json!("2026-05-21T12:30:01Z");
        },
    );
    reject_envelope(
        "issued-at-beyond-skew",
        "issued_at 31 s in the future is outside the 30 s skew",
        "envelope_not_yet_valid",
        &|v| {
            v["issued_at"] = json!("2026-05-21T12:00:31Z");
            v["scope"]["expires_at"] = json!("2026-05-21T12:30:00Z");
        },
    );
    reject_envelope(
        "not-before-in-future",
        "now is before not_before; the skew does not apply to not_before",
        "envelope_not_yet_valid",
        &|v| v["scope"]["not_before"] = json!("2026-05-21T12:00:01Z"),
    );
    reject_envelope(
        "expired",
        "expires_at is one second before now",
        "envelope_expired",
        &|v| {
            v["issued_at"] = json!("2026-05-21T11:30:00Z");
            v["scope"]["expires_at"] = json!("2026-05-21T11:59:59Z");
        },
    );
    reject_envelope(
        "principal-multisig",
        "a multisig principal key type is unsupported",
        "principal_multisig_unsupported",
        &|v| v["principal_pubkey"]["type"] = json!("tendermint/PubKeyMultisigThreshold"),
    );
    reject_envelope(
        "principal-multisig-any-case",
        "the multisig test ignores case",
        "principal_multisig_unsupported",
        &|v| v["principal_pubkey"]["type"] = json!("/cosmos.crypto.MultiSig.LegacyAminoPubKey"),
    );
    reject_envelope(
        "principal-pubkey-type-invalid",
        "the principal key type must be exactly secp256k1",
        "principal_pubkey_type_invalid",
        &|v| v["principal_pubkey"]["type"] = json!("ed25519"),
    );
    reject_envelope(
        "principal-pubkey-type-wrong-case",
        "Secp256k1 is not secp256k1",
        "principal_pubkey_type_invalid",
        &|v| v["principal_pubkey"]["type"] = json!("Secp256k1"),
    );
    {
        let uncompressed = {
            // 0x04 || X || Y of an arbitrary valid point is 65 bytes: not a compressed key.
            let mut b = vec![0x04u8];
            b.extend_from_slice(&[
                0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87,
                0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b,
                0x16, 0xf8, 0x17, 0x98,
            ]);
            b.extend_from_slice(&[
                0x48, 0x3a, 0xda, 0x77, 0x26, 0xa3, 0xc4, 0x65, 0x5d, 0xa4, 0xfb, 0xfc, 0x0e, 0x11,
                0x08, 0xa8, 0xfd, 0x17, 0xb4, 0x48, 0xa6, 0x85, 0x54, 0x19, 0x9c, 0x47, 0xd0, 0x8f,
                0xfb, 0x10, 0xd4, 0xb8,
            ]);
            encode_base64(&b)
        };
        let not_on_curve = {
            // x = 2^256 - 1 exceeds the field prime, so no point has it.
            let mut b = vec![0x02u8];
            b.extend_from_slice(&[0xff; 32]);
            encode_base64(&b)
        };
        for (name, key, why) in [
            (
                "principal-pubkey-32-bytes",
                encode_base64(&[0x02; 32]),
                "a 32-byte key is not a compressed point",
            ),
            (
                "principal-pubkey-uncompressed",
                uncompressed,
                "the 65-byte uncompressed form is refused",
            ),
        ] {
            reject_envelope(name, why, "principal_pubkey_malformed", &|v| {
                v["principal_pubkey"]["public_key"] = json!(key)
            });
        }
        reject_envelope(
            "principal-pubkey-not-on-curve",
            "33 bytes that are no point (x beyond the field) are only length-checked, as in the reference: the address derived from those bytes is not principal_address",
            "principal_address_mismatch",
            &|v| v["principal_pubkey"]["public_key"] = json!(not_on_curve),
        );
        let not_on_curve_bytes: [u8; 33] = passport_core::crypto::decode_base64(&not_on_curve)
            .and_then(|b| b.try_into().ok())
            .expect("33 bytes");
        let derived =
            derive_address("gonka", &not_on_curve_bytes).expect("gonka is a valid prefix");
        reject_envelope(
            "principal-pubkey-not-on-curve-address-derived",
            "33 bytes that are no point, with principal_address derived from them: the address matches, and no signature verifies under a non-point (principal_sig_invalid at step 10, as in the reference)",
            "principal_sig_invalid",
            &|v| {
                v["principal_pubkey"]["public_key"] = json!(not_on_curve);
                v["principal_address"] = json!(derived);
            },
        );
    }
    {
        let other = Keys::address(&k.other_principal);
        reject_envelope(
            "principal-address-of-another-key",
            "principal_address must be derived from principal_pubkey",
            "principal_address_mismatch",
            &|v| v["principal_address"] = json!(other),
        );
        let upper = p_addr.to_uppercase();
        reject_envelope(
            "principal-address-uppercase",
            "the uppercase spelling of the right address is refused: one account, one spelling",
            "principal_address_mismatch",
            &|v| v["principal_address"] = json!(upper),
        );
    }
    reject_envelope(
        "agent-pubkey-type-invalid",
        "the agent key type must be exactly ed25519",
        "agent_pubkey_type_invalid",
        &|v| v["agent_pubkey"]["type"] = json!("Ed25519"),
    );
    {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let identity = encode_base64(&identity);
        reject_envelope(
            "agent-pubkey-small-order",
            "the identity point (small order) is refused as an agent key, at the agent signature step where the reference fails a 32-byte key that does not verify (section 11: strict Ed25519)",
            "agent_sig_invalid",
            &|v| v["agent_pubkey"]["public_key"] = json!(identity),
        );
        // y = 2 has no x on the curve; y = p + 1 is a non-canonical spelling of y = 1.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        for (name, key, why) in [
            (
                "agent-pubkey-not-on-curve",
                off_curve,
                "32 bytes that are no point are only length-checked, as in the reference: the agent signature cannot verify (agent_sig_invalid at step 10)",
            ),
            (
                "agent-pubkey-non-canonical",
                non_canonical,
                "a non-canonical encoding (y = p + 1) is only length-checked, as in the reference: the agent signature does not verify (agent_sig_invalid at step 10)",
            ),
        ] {
            reject_envelope(name, why, "agent_sig_invalid", &|v| {
                v["agent_pubkey"]["public_key"] = json!(encode_base64(&key))
            });
        }
        reject_envelope(
            "agent-pubkey-31-bytes",
            "an Ed25519 key is 32 bytes",
            "agent_pubkey_malformed",
            &|v| v["agent_pubkey"]["public_key"] = json!(encode_base64(&[7u8; 31])),
        );
    }
    for (name, value, why) in [
        (
            "beneficiary-newline",
            "acme\ncorp".to_owned(),
            "a C0 control character is refused",
        ),
        (
            "beneficiary-delete",
            "acme\u{7f}".to_owned(),
            "U+007F is refused",
        ),
        (
            "beneficiary-c1",
            "acme\u{85}corp".to_owned(),
            "a C1 control character (U+0085) is refused",
        ),
        (
            "beneficiary-256-bytes",
            "b".repeat(256),
            "more than 255 bytes is refused",
        ),
    ] {
        reject_envelope(name, why, "beneficiary_invalid", &|v| {
            v["beneficiary"] = json!(value)
        });
    }
    {
        let mut v = envelope(k);
        v["principal_sig"] = json!("not base64!");
        let raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "principal-sig-not-base64",
            "principal_sig must be base64 of 64 bytes",
            config(),
            vec![step(
                signed(k, &raw, URI, &b),
                rejected("principal_sig_invalid"),
            )],
        ));
    }
}
