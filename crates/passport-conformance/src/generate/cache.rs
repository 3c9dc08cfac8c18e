//! Time boundaries and caching across one layer instance (spec sections 6 and 6.2).

use super::{
    accepted, agent_sig, body, config, envelope, jcs_of, principal_sig, rejected, request, seal,
    signed, step, vector, Keys, AGENT_ID, CHAIN, EXPIRES, MODEL, URI,
};
use crate::{Expect, Step, Vector};
use passport_core::crypto::encode_base64;
use serde_json::json;

/// The cached passport is re-checked against the clock, and caching weakens no check.
pub(super) fn cache(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let agent_id = AGENT_ID;
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);
    let passport = encode_base64(&valid);

    // Time boundaries across one layer instance (the second and third steps hit the cache).
    {
        let at = |t: &str, expect: Expect| Step {
            now: Some(t.into()),
            request: signed(k, &valid, URI, &b),
            expect,
        };
        out.push(vector(
            "expiry-boundaries",
            "valid one second before and exactly at expires_at, expired one second after; the cached passport is re-checked against the clock",
            config(),
            vec![
                at("2026-05-21T12:28:59Z", accepted(&valid, agent_id, &p_addr, MODEL, None, &b)),
                at(EXPIRES, accepted(&valid, agent_id, &p_addr, MODEL, None, &b)),
                at("2026-05-21T12:29:01Z", rejected("envelope_expired")),
            ],
        ));
    }

    // Caching must not weaken anything.
    {
        let forged = agent_sig(&k.other_agent, CHAIN, "POST", URI, &jcs_of(&valid), &b);
        let other_body = body("llama-3.1-8b");
        out.push(vector(
            "cache-reuse-checks-every-request",
            "a passport reused with a new body is accepted; a forged agent signature on the cached passport is still refused",
            config(),
            vec![
                step(signed(k, &valid, URI, &b), accepted(&valid, agent_id, &p_addr, MODEL, None, &b)),
                step(
                    signed(k, &valid, URI, &other_body),
                    accepted(&valid, agent_id, &p_addr, "llama-3.1-8b", None, &other_body),
                ),
                step(
                    request("POST", URI, vec![("X-Agent-Passport", passport.clone()), ("X-Agent-Sig", forged)], &b),
                    rejected("agent_sig_invalid"),
                ),
            ],
        ));
        let mut v = envelope(k);
        v["principal_sig"] = json!(principal_sig(&v, &k.other_principal));
        let forged_raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "cache-forged-envelope-never-cached",
            "a passport whose principal signature failed is refused again on reuse",
            config(),
            vec![
                step(
                    signed(k, &forged_raw, URI, &b),
                    rejected("principal_sig_invalid"),
                ),
                step(
                    signed(k, &forged_raw, URI, &b),
                    rejected("principal_sig_invalid"),
                ),
            ],
        ));
    }
}
