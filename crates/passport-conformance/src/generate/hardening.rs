//! Bounds on unauthenticated input, and the order of the checks (spec sections 2, 6, 6.2, 6.3, 11).

use super::{
    accepted, body, bound, config, envelope, jcs_of, rejected, seal, signed, step, vector,
    with_headers, Keys, AGENT_ID, MODEL, URI,
};
use crate::{Vector, VectorConfig};
use passport_core::crypto::encode_base64;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `raw` (a JSON object) with `pad` spaces after its opening brace: another
/// serialization of the same passport.
fn padded(raw: &[u8], pad: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + pad);
    out.push(b'{');
    out.extend(std::iter::repeat_n(b' ', pad));
    out.extend_from_slice(&raw[1..]);
    out
}

/// Bounds on what an unauthenticated client sends, and the order of the body checks
/// after the envelope checks (spec sections 2, 6, 6.2 and their section 11 rows).
pub(super) fn hardening(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let agent_id = AGENT_ID;
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);

    // Passport size: 16384 decoded bytes (the default max_passport_bytes) pass, one more
    // does not, and the refusal comes before the envelope is parsed.
    let at_limit = padded(&valid, 16_384 - valid.len());
    out.push(vector(
        "accept-passport-at-size-limit",
        "a passport of exactly max_passport_bytes (16384, the default) decoded bytes is accepted; white space does not change its identity",
        config(),
        vec![step(
            signed(k, &at_limit, URI, &b),
            accepted(&at_limit, agent_id, &p_addr, MODEL, None, &b),
        )],
    ));
    let over = padded(&valid, 30_000);
    out.push(vector(
        "passport-too-large",
        "a passport header longer than the strict base64 of max_passport_bytes (16384) is refused with 431 before it is decoded or parsed",
        config(),
        vec![step(signed(k, &over, URI, &b), rejected("passport_too_large"))],
    ));
    let one_over = padded(&valid, 16_385 - valid.len());
    out.push(vector(
        "passport-one-byte-too-large",
        "a passport that decodes to max_passport_bytes + 1 bytes is refused although its header is within the base64 length bound",
        config(),
        vec![step(
            signed(k, &one_over, URI, &b),
            rejected("passport_too_large"),
        )],
    ));

    // agent_id and model: 256 bytes pass, 257 do not.
    let long_id = |n: usize| {
        let mut v = envelope(k);
        v["agent_id"] = json!(format!("urn:aps:agent:{}", "x".repeat(n - 14)));
        seal(v, &k.principal)
    };
    let id256 = long_id(256);
    let id256_text = format!("urn:aps:agent:{}", "x".repeat(242));
    out.push(vector(
        "accept-agent-id-256-bytes",
        "an agent_id of 256 bytes is accepted",
        config(),
        vec![step(
            signed(k, &id256, URI, &b),
            accepted(&id256, &id256_text, &p_addr, MODEL, None, &b),
        )],
    ));
    out.push(vector(
        "agent-id-too-long",
        "an agent_id over 256 bytes is refused: it would reach events, logs and audit files",
        config(),
        vec![step(
            signed(k, &long_id(257), URI, &b),
            rejected("agent_id_too_long"),
        )],
    ));
    let m256 = "m".repeat(256);
    let b256 = body(&m256);
    out.push(vector(
        "accept-model-256-bytes",
        "a model name of 256 bytes is accepted (the passport allows every model)",
        config(),
        vec![step(
            signed(k, &valid, URI, &b256),
            accepted(&valid, agent_id, &p_addr, &m256, None, &b256),
        )],
    ));
    let b257 = body(&"m".repeat(257));
    out.push(vector(
        "model-too-long",
        "a model name over 256 bytes is refused: it would reach events, logs and audit files",
        config(),
        vec![step(
            signed(k, &valid, URI, &b257),
            rejected("model_too_long"),
        )],
    ));

    // The body checks come after the envelope checks and the principal signature.
    let expired = seal(
        {
            let mut v = envelope(k);
            v["issued_at"] = json!("2026-05-21T11:00:00Z");
            v["scope"]["expires_at"] = json!("2026-05-21T11:30:00Z");
            v
        },
        &k.principal,
    );
    out.push(vector(
        "order-envelope-checks-before-the-body",
        "an expired passport with a body that is not JSON is envelope_expired: the envelope is judged before the body is read (the reference reads the body first and answers envelope_malformed; spec section 11)",
        config(),
        vec![step(
            signed(k, &expired, URI, b"not json"),
            rejected("envelope_expired"),
        )],
    ));
    let widened = {
        let mut v: Value = serde_json::from_slice(&valid).expect("the fixture is JSON");
        v["scope"]["allowed_models"] = json!([MODEL]);
        serde_json::to_vec(&v).expect("a JSON value serializes")
    };
    let mut small = config();
    small.max_body_size = Some(64);
    out.push(vector(
        "order-principal-signature-before-the-body-size",
        "a passport whose principal signature fails, with a body over max_body_size (64 here), is principal_sig_invalid: a forged passport never makes the verifier read a body (spec section 11)",
        small,
        vec![step(
            signed(k, &widened, URI, &b),
            rejected("principal_sig_invalid"),
        )],
    ));
    out.push(vector(
        "order-body-before-the-agent-signature",
        "a valid passport with a body without a model and a wrong agent signature is envelope_malformed: the body step comes before the agent signature, as in the reference",
        config(),
        vec![step(
            with_headers(
                &encode_base64(&valid),
                &encode_base64(&[9u8; 64]),
                br#"{"messages":[]}"#,
            ),
            rejected("envelope_malformed"),
        )],
    ));

    // Requester binding depends only on the passport and a header: it runs before the
    // body is read, so an ungranted principal never makes the verifier hold a body.
    {
        let requester = Keys::address(&k.other_principal);
        let mut not_json = signed(k, &valid, URI, b"not json");
        not_json
            .headers
            .push(("X-Requester-Address".into(), requester.clone()));
        let mut wrong_sig = with_headers(&encode_base64(&valid), &encode_base64(&[9u8; 64]), &b);
        wrong_sig
            .headers
            .push(("X-Requester-Address".into(), requester));
        out.push(vector(
            "order-binding-before-the-body",
            "with requester binding and no grant, a request whose body is not JSON, or whose agent signature is wrong, is principal_mismatch: the binding is judged from the passport and the header before the body is read (the reference reads the body first; spec section 11)",
            bound(Vec::new()),
            vec![
                step(not_json, rejected("principal_mismatch")),
                step(wrong_sig, rejected("principal_mismatch")),
            ],
        ));
    }

    // The body budget: with other requests holding all but 16 bytes of it, a body of
    // more than 16 bytes is refused, a smaller one would fit.
    let mut tight = config();
    tight.body_budget_free = Some(16);
    out.push(vector(
        "body-budget-exhausted",
        "when the bodies other requests hold leave 16 bytes of max_buffered_body_bytes, a valid request with a larger body gets 503 body_budget_exhausted",
        tight,
        vec![step(
            signed(k, &valid, URI, &b),
            rejected("body_budget_exhausted"),
        )],
    ));

    // Bounded cold verification: with one per second, the first passport is verified,
    // another passport (it needs its own signature check) is shed, and another
    // serialization of the first one (found by passport_id, no signature check) and the
    // cached bytes still pass.
    let mut one_per_second = config();
    one_per_second.cold_verifications_per_second = Some(1);
    let respaced = padded(&valid, 5);
    let mut second = envelope(k);
    second["agent_id"] = json!("urn:aps:agent:conformance-2");
    let second = seal(second, &k.principal);
    out.push(vector(
        "verification-busy",
        "with cold_verifications_per_second 1, a second passport that needs its own principal signature check within the same second gets 503 verification_busy, while another serialization of the verified passport (found by passport_id, no signature check) and the cached passport are still accepted",
        one_per_second,
        vec![
            step(
                signed(k, &valid, URI, &b),
                accepted(&valid, agent_id, &p_addr, MODEL, None, &b),
            ),
            step(signed(k, &second, URI, &b), rejected("verification_busy")),
            step(
                signed(k, &respaced, URI, &b),
                accepted(&respaced, agent_id, &p_addr, MODEL, None, &b),
            ),
            step(
                signed(k, &valid, URI, &b),
                accepted(&valid, agent_id, &p_addr, MODEL, None, &b),
            ),
        ],
    ));

    // One passport, one identity: revocation names passport_id, so another
    // serialization of a revoked passport is revoked too, and the cache holds one entry
    // for both serializations.
    let passport_id = hex::encode(Sha256::digest(jcs_of(&valid)));
    let spaced = padded(&valid, 3);
    out.push(vector(
        "revoked-passport-any-serialization",
        "a passport revoked by passport_id (SHA-256 of its JCS form) is refused in every serialization, here with white space added after the opening brace",
        VectorConfig {
            revoked: Some(passport_gate::revocation::Revoked {
                envelope_sha256: [passport_id].into_iter().collect(),
                ..Default::default()
            }),
            ..config()
        },
        vec![
            step(signed(k, &spaced, URI, &b), rejected("passport_revoked")),
            step(signed(k, &valid, URI, &b), rejected("passport_revoked")),
        ],
    ));
    // Section 7.2: until a configured shared revocation set has been read, a revoked
    // passport cannot be told apart, so every passport that verifies is refused with
    // 503; the revocation step comes after the signatures, so a forgery is still
    // answered as one.
    out.push(vector(
        "revocations-unavailable-until-the-shared-set-is-read",
        "a shared revocation set is configured and not read yet: a passport that verifies is refused with 503 revocations_unavailable, a forged one with agent_sig_invalid",
        VectorConfig {
            revocation_set_unread: Some(true),
            ..config()
        },
        vec![
            step(
                signed(k, &valid, URI, &b),
                rejected("revocations_unavailable"),
            ),
            step(
                with_headers(&encode_base64(&valid), &encode_base64(&[7u8; 64]), &b),
                rejected("agent_sig_invalid"),
            ),
        ],
    ));
    // One principal cannot fill the replay store: with a quota of one live record, its
    // second new request is refused while another principal's is accepted.
    {
        let mut c = config();
        c.replay_protection = Some(true);
        c.replay_records_per_principal = Some(1);
        let other_addr = Keys::address(&k.other_principal);
        let mut v = envelope(k);
        v["principal_address"] = json!(other_addr);
        v["principal_pubkey"]["public_key"] = json!(k.other_principal.public_key().to_base64());
        let theirs = seal(v, &k.other_principal);
        let other_body = body("llama-3.1-8b");
        out.push(vector(
            "replay-quota-exceeded",
            "with replay_records_per_principal = 1, a principal's second new request while its first record lives is 429 replay_quota_exceeded; another principal is still served, and an exact replay is still request_replayed",
            c,
            vec![
                step(
                    signed(k, &valid, URI, &b),
                    accepted(&valid, agent_id, &p_addr, MODEL, None, &b),
                ),
                step(
                    signed(k, &valid, URI, &other_body),
                    rejected("replay_quota_exceeded"),
                ),
                step(signed(k, &valid, URI, &b), rejected("request_replayed")),
                step(
                    signed(k, &theirs, URI, &b),
                    accepted(&theirs, agent_id, &other_addr, MODEL, None, &b),
                ),
            ],
        ));
    }
    out.push(vector(
        "cache-serializations-share-one-identity",
        "two serializations of one passport are both accepted, each reported with the SHA-256 of its own bytes",
        config(),
        vec![
            step(
                signed(k, &valid, URI, &b),
                accepted(&valid, agent_id, &p_addr, MODEL, None, &b),
            ),
            step(
                signed(k, &spaced, URI, &b),
                accepted(&spaced, agent_id, &p_addr, MODEL, None, &b),
            ),
        ],
    ));
}
