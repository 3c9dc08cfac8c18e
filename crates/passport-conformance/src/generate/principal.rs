//! Principal signature forgeries (spec section 4, ADR-036).

use super::{
    body, config, envelope, high_s_twin, principal_sig, rejected, signed, step, vector, Keys,
    MODEL, URI,
};
use crate::Vector;
use passport_core::crypto::encode_base64;
use passport_core::envelope::canonical;
use serde_json::json;

/// Principal signatures by another key, over a widened scope, high-S, or over the
/// envelope with `principal_sig` removed.
pub(super) fn forgeries(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let b = body(MODEL);

    {
        let mut v = envelope(k);
        v["principal_sig"] = json!(principal_sig(&v, &k.other_principal));
        let raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "principal-sig-other-key",
            "signed by another secp256k1 key than principal_pubkey",
            config(),
            vec![step(
                signed(k, &raw, URI, &b),
                rejected("principal_sig_invalid"),
            )],
        ));

        let mut v = envelope(k);
        v["scope"]["allowed_models"] = json!([MODEL]);
        let sig = principal_sig(&v, &k.principal);
        v["principal_sig"] = json!(sig);
        v["scope"]
            .as_object_mut()
            .expect("object")
            .remove("allowed_models");
        let raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "principal-sig-scope-widened",
            "allowed_models removed after signing, widening the scope to every model",
            config(),
            vec![step(
                signed(k, &raw, URI, &b),
                rejected("principal_sig_invalid"),
            )],
        ));

        let mut v = envelope(k);
        let low =
            passport_core::crypto::decode_base64(&principal_sig(&v, &k.principal)).expect("base64");
        v["principal_sig"] = json!(encode_base64(&high_s_twin(&low)));
        let raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "principal-sig-high-s",
            "(r, n - s) verifies mathematically but high-S signatures are refused",
            config(),
            vec![step(
                signed(k, &raw, URI, &b),
                rejected("principal_sig_invalid"),
            )],
        ));

        let mut v = envelope(k);
        let mut removed = v.clone();
        removed
            .as_object_mut()
            .expect("object")
            .remove("principal_sig");
        let data = canonical(&removed).expect("canonicalizes");
        v["principal_sig"] = json!(encode_base64(&k.principal.sign_adr036(&p_addr, &data)));
        let raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "principal-sig-member-removed-not-blanked",
            "the principal signs the envelope with principal_sig set to \"\", not removed",
            config(),
            vec![step(
                signed(k, &raw, URI, &b),
                rejected("principal_sig_invalid"),
            )],
        ));
    }
}
