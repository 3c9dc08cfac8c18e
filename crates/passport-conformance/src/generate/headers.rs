//! The passport headers: absent, alone, repeated, not base64 (spec sections 2 and 6, step 1).

use super::{
    agent_sig, body, config, envelope, jcs_of, rejected, request, seal, step, vector, Keys, CHAIN,
    MODEL, URI,
};
use crate::{Expect, Vector};
use passport_core::crypto::encode_base64;

/// Header presence and encoding.
pub(super) fn headers(k: &Keys, out: &mut Vec<Vector>) {
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);
    let passport = encode_base64(&valid);
    let good_sig = agent_sig(&k.agent, CHAIN, "POST", URI, &jcs_of(&valid), &b);

    out.push(vector(
        "passthrough-no-headers",
        "a request without passport headers reaches the inner service untouched",
        config(),
        vec![step(
            request("POST", URI, vec![("Authorization", "Bearer x".into())], &b),
            Expect {
                status: 200,
                code: None,
                verified: None,
            },
        )],
    ));
    out.push(vector(
        "sig-header-mismatch-passport-only",
        "X-Agent-Passport without X-Agent-Sig",
        config(),
        vec![step(
            request(
                "POST",
                URI,
                vec![("X-Agent-Passport", passport.clone())],
                &b,
            ),
            rejected("sig_header_mismatch"),
        )],
    ));
    out.push(vector(
        "sig-header-mismatch-sig-only",
        "X-Agent-Sig without X-Agent-Passport",
        config(),
        vec![step(
            request("POST", URI, vec![("X-Agent-Sig", good_sig.clone())], &b),
            rejected("sig_header_mismatch"),
        )],
    ));
    for (name, description, headers) in [
        (
            "header-repeated-passport",
            "two X-Agent-Passport headers",
            vec![
                ("X-Agent-Passport", passport.clone()),
                ("X-Agent-Passport", passport.clone()),
                ("X-Agent-Sig", good_sig.clone()),
            ],
        ),
        (
            "header-repeated-sig",
            "two X-Agent-Sig headers",
            vec![
                ("X-Agent-Passport", passport.clone()),
                ("X-Agent-Sig", good_sig.clone()),
                ("X-Agent-Sig", good_sig.clone()),
            ],
        ),
        (
            "header-passport-not-base64",
            "the passport is not base64",
            vec![
                ("X-Agent-Passport", "{not base64}".into()),
                ("X-Agent-Sig", good_sig.clone()),
            ],
        ),
        (
            "header-passport-unpadded",
            "base64 without padding is refused",
            vec![
                (
                    "X-Agent-Passport",
                    passport.trim_end_matches('=').to_owned()
                        + if passport.ends_with('=') { "" } else { "A" },
                ),
                ("X-Agent-Sig", good_sig.clone()),
            ],
        ),
    ] {
        out.push(vector(
            name,
            description,
            config(),
            vec![step(
                request("POST", URI, headers, &b),
                rejected("header_malformed"),
            )],
        ));
    }
}
