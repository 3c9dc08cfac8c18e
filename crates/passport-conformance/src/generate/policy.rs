//! Replay protection, revocation, the principal allowlist (spec sections 7.1 to 7.3) and
//! the limits (section 7.5).

use super::{
    accepted, body, config, envelope, rejected, seal, signed, step, vector, Keys, AGENT_ID, MODEL,
    URI,
};
use crate::Vector;
use passport_core::crypto::encode_base64;
use sha2::{Digest, Sha256};

/// Replay protection (off unless the vector turns it on).
pub(super) fn replay(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let agent_id = AGENT_ID;
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);

    {
        let replaying = || {
            let mut c = config();
            c.replay_protection = Some(true);
            c
        };
        let ok = accepted(&valid, agent_id, &p_addr, MODEL, None, &b);
        out.push(vector(
            "replay-exact-request-refused",
            "with replay_protection, the same signed request is accepted once and then refused",
            replaying(),
            vec![
                step(signed(k, &valid, URI, &b), ok.clone()),
                step(signed(k, &valid, URI, &b), rejected("request_replayed")),
            ],
        ));
        let other_body = body("llama-3.1-8b");
        out.push(vector(
            "replay-same-passport-new-request-accepted",
            "the same passport with a new body and signature is a new request",
            replaying(),
            vec![
                step(signed(k, &valid, URI, &b), ok.clone()),
                step(
                    signed(k, &valid, URI, &other_body),
                    accepted(&valid, agent_id, &p_addr, "llama-3.1-8b", None, &other_body),
                ),
            ],
        ));
        // The forged request carries the genuine request's signature over another body;
        // had the store recorded it before verification, the genuine request would be
        // refused as a replay.
        let genuine = signed(k, &valid, URI, &b);
        let mut forged = genuine.clone();
        forged.body_base64 = encode_base64(&body("llama-3.1-8b"));
        out.push(vector(
            "replay-forged-request-does-not-poison-the-store",
            "a request failing verification is not recorded, so the genuine request with the same signature is accepted",
            replaying(),
            vec![step(forged, rejected("agent_sig_invalid")), step(genuine, ok.clone())],
        ));
        out.push(vector(
            "replay-protection-off-by-default",
            "without replay_protection (the reference's behaviour) a repeated request is accepted",
            config(),
            vec![
                step(signed(k, &valid, URI, &b), ok.clone()),
                step(signed(k, &valid, URI, &b), ok.clone()),
            ],
        ));
    }
}

/// The principal allowlist: checked right after the principal signature, before the
/// body.
pub(super) fn allowlist(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let agent_id = AGENT_ID;
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);

    {
        let allowing = |address: String| {
            let mut c = config();
            c.principals_allowed = Some(vec![address]);
            c
        };
        out.push(vector(
            "principal-not-allowed",
            "a gateway that serves only the principals on its allowlist refuses a valid passport of another principal, before the body is read",
            allowing(Keys::address(&k.other_principal)),
            vec![step(
                signed(k, &valid, URI, b"not json"),
                rejected("principal_not_allowed"),
            )],
        ));
        out.push(vector(
            "accept-principal-allowed",
            "a principal on the allowlist is served",
            allowing(p_addr.clone()),
            vec![step(
                signed(k, &valid, URI, &b),
                accepted(&valid, agent_id, &p_addr, MODEL, None, &b),
            )],
        ));
    }
}

/// Revocation by agent id, agent key, principal and envelope hash.
pub(super) fn revocation(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let agent_id = AGENT_ID;
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);

    {
        use passport_gate::revocation::Revoked;
        let revoking = |r: Revoked| {
            let mut c = config();
            c.revoked = Some(r);
            c
        };
        let one = |v: &str| std::iter::once(v.to_owned()).collect();
        for (name, description, revoked) in [
            (
                "revoked-agent-id",
                "the agent id is revoked",
                Revoked {
                    agent_ids: one(agent_id),
                    ..Revoked::default()
                },
            ),
            (
                "revoked-agent-pubkey",
                "the agent key is revoked",
                Revoked {
                    agent_pubkeys: one(&k.agent.public_key().to_base64()),
                    ..Revoked::default()
                },
            ),
            (
                "revoked-principal",
                "every passport of the principal is revoked",
                Revoked {
                    principal_addresses: one(&p_addr),
                    ..Revoked::default()
                },
            ),
            (
                "revoked-envelope",
                "this passport is revoked by its SHA-256",
                Revoked {
                    envelope_sha256: one(&hex::encode(Sha256::digest(&valid))),
                    ..Revoked::default()
                },
            ),
        ] {
            out.push(vector(
                name,
                description,
                revoking(revoked),
                vec![step(
                    signed(k, &valid, URI, &b),
                    rejected("passport_revoked"),
                )],
            ));
        }
        out.push(vector(
            "revoked-other-identities-unaffected",
            "revoking another agent, key, principal and passport leaves this passport valid",
            revoking(Revoked {
                agent_ids: one("urn:aps:agent:other"),
                agent_pubkeys: one(&k.other_agent.public_key().to_base64()),
                principal_addresses: one(&Keys::address(&k.other_principal)),
                envelope_sha256: one(&"0".repeat(64)),
            }),
            vec![step(
                signed(k, &valid, URI, &b),
                accepted(&valid, agent_id, &p_addr, MODEL, None, &b),
            )],
        ));
    }
}

/// The limits (section 7.5) that one request, or two at one instant, can show: the
/// `max_tokens` cap, the request bucket and a token budget no reservation fits in.
pub(super) fn limits(k: &Keys, out: &mut Vec<Vector>) {
    use crate::VectorLimits;
    use passport_gate::limits::Quota;
    let p_addr = Keys::address(&k.principal);
    let valid = seal(envelope(k), &k.principal);
    let limiting = |principal: Quota, agent: Quota| {
        let mut c = config();
        c.limits = Some(VectorLimits {
            max_tokens_cap: 100,
            default_max_tokens: 50,
            principal,
            agent,
        });
        c
    };
    let asking = |key: &str, n: u64| {
        format!(r#"{{"model":"{MODEL}","{key}":{n},"messages":[]}}"#).into_bytes()
    };
    for key in ["max_tokens", "max_completion_tokens"] {
        let at_cap = asking(key, 100);
        let over = asking(key, 101);
        out.push(vector(
            &format!("limits-{}-over-cap", key.replace('_', "-")),
            &format!("a body whose {key} exceeds max_tokens_cap is refused, not clamped (the body is signed); one at the cap is served"),
            limiting(Quota::default(), Quota::default()),
            vec![
                step(signed(k, &valid, URI, &over), rejected("max_tokens_over_cap")),
                step(
                    signed(k, &valid, URI, &at_cap),
                    accepted(&valid, AGENT_ID, &p_addr, MODEL, None, &at_cap),
                ),
            ],
        ));
    }
    let (first, second) = (asking("max_tokens", 1), asking("max_tokens", 2));
    out.push(vector(
        "limits-agent-requests-per-minute",
        "an agent with requests_per_minute = 1 is served once, and its second request within the minute is refused rate_limit_exceeded",
        limiting(
            Quota::default(),
            Quota {
                requests_per_minute: 1,
                ..Quota::default()
            },
        ),
        vec![
            step(
                signed(k, &valid, URI, &first),
                accepted(&valid, AGENT_ID, &p_addr, MODEL, None, &first),
            ),
            step(signed(k, &valid, URI, &second), rejected("rate_limit_exceeded")),
        ],
    ));
    // Every copy and spelling of a maximum is judged: a member given twice counts at its
    // largest (Python and Go keep the last copy, other parsers the first), a string
    // holding a number counts (pydantic reads `"101"` as 101), and so does the Responses
    // API's `max_output_tokens`.
    for (name, what, body) in [
        (
            "limits-max-tokens-twice-over-cap",
            "a body giving max_tokens twice, once over max_tokens_cap, is refused whichever copy is last",
            format!(r#"{{"model":"{MODEL}","max_tokens":1,"max_tokens":101,"messages":[]}}"#),
        ),
        (
            "limits-max-tokens-string-over-cap",
            "a body whose max_tokens is a string holding a number over max_tokens_cap is refused",
            format!(r#"{{"model":"{MODEL}","max_tokens":"101","messages":[]}}"#),
        ),
        (
            "limits-max-output-tokens-over-cap",
            "a body whose max_output_tokens (the Responses API) exceeds max_tokens_cap is refused",
            format!(r#"{{"model":"{MODEL}","max_output_tokens":101,"input":"x"}}"#),
        ),
    ] {
        out.push(vector(
            name,
            what,
            limiting(Quota::default(), Quota::default()),
            vec![step(
                signed(k, &valid, URI, body.as_bytes()),
                rejected("max_tokens_over_cap"),
            )],
        ));
    }
    // `n` completions of `max_tokens` each: 16 + 2 * 100 = 216 fits 300, 16 + 3 * 100
    // does not.
    let (two, three) = (
        format!(r#"{{"model":"{MODEL}","max_tokens":100,"n":2,"messages":[]}}"#).into_bytes(),
        format!(r#"{{"model":"{MODEL}","max_tokens":100,"n":3,"messages":[]}}"#).into_bytes(),
    );
    out.push(vector(
        "limits-n-completions-reserved",
        "a body asking n completions reserves n times its max_tokens (plus a quarter of its bytes): n = 3 does not fit a tokens_per_day the same body with n = 2 fits",
        limiting(
            Quota {
                tokens_per_day: 300,
                ..Quota::default()
            },
            Quota::default(),
        ),
        vec![
            step(signed(k, &valid, URI, &three), rejected("insufficient_quota")),
            step(
                signed(k, &valid, URI, &two),
                accepted(&valid, AGENT_ID, &p_addr, MODEL, None, &two),
            ),
        ],
    ));
    let b = format!(r#"{{"model":"{MODEL}","messages":[]}}"#).into_bytes();
    out.push(vector(
        "limits-principal-token-budget",
        "a request whose reservation (a quarter of its body bytes, rounded up, plus default_max_tokens when the body names no maximum) exceeds the principal's tokens_per_day is refused insufficient_quota",
        limiting(
            Quota {
                tokens_per_day: 50,
                ..Quota::default()
            },
            Quota::default(),
        ),
        vec![step(signed(k, &valid, URI, &b), rejected("insufficient_quota"))],
    ));
}
