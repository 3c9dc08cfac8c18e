//! The request body: size, JSON shape and its model (spec section 6 step 2).

use super::{
    agent_sig, body, config, envelope, jcs_of, rejected, request, seal, signed, step, vector, Keys,
    CHAIN, MODEL, URI,
};
use crate::Vector;
use passport_core::crypto::encode_base64;

/// Bodies too large, not JSON, or without one string model.
pub(super) fn body_checks(k: &Keys, out: &mut Vec<Vector>) {
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);
    let passport = encode_base64(&valid);

    {
        let mut c = config();
        c.max_body_size = Some(64);
        let sig = agent_sig(&k.agent, CHAIN, "POST", URI, &jcs_of(&valid), &b);
        out.push(vector(
            "body-too-large",
            "a body over max_body_size (64 bytes here) is refused",
            c,
            vec![step(
                request(
                    "POST",
                    URI,
                    vec![("X-Agent-Passport", passport.clone()), ("X-Agent-Sig", sig)],
                    &b,
                ),
                rejected("body_too_large"),
            )],
        ));
    }
    for (name, description, bad) in [
        (
            "body-not-json",
            "the body must be JSON",
            b"model=qwen".to_vec(),
        ),
        (
            "body-without-model",
            "the body must have a model",
            br#"{"messages":[]}"#.to_vec(),
        ),
        (
            "body-model-empty",
            "the model must be non-empty",
            br#"{"model":""}"#.to_vec(),
        ),
        (
            "body-model-not-string",
            "the model must be a string",
            br#"{"model":7}"#.to_vec(),
        ),
        (
            "body-model-twice",
            "a body with two model members is refused",
            br#"{"model":"llama-3.1-8b","model":"qwen/qwen3-32b"}"#.to_vec(),
        ),
    ] {
        out.push(vector(
            name,
            description,
            config(),
            vec![step(
                signed(k, &valid, URI, &bad),
                rejected("envelope_malformed"),
            )],
        ));
    }
}
