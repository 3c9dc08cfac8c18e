//! Differences from the Go reference, U01 to U18 of issue 10 (spec sections 3, 6 and 11).

use super::{
    accepted, agent_sig, body, bound, config, envelope, grant_of, jcs_of, principal_sig, rejected,
    seal, signed, step, vector, with_headers, Keys, AGENT_ID, CHAIN, ISSUED, MODEL, NOW, URI,
};
use crate::{Expect, Step, Vector};
use passport_core::crypto::encode_base64;
use passport_gate::grants::START_INFERENCE_MSG;
use serde_json::{json, Value};

/// `raw` with the first occurrence of `from` replaced by `to`, byte for byte.
fn splice(raw: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = raw
        .windows(from.len())
        .position(|w| w == from)
        .expect("the text to replace is in the envelope");
    let mut out = raw[..at].to_vec();
    out.extend_from_slice(to);
    out.extend_from_slice(&raw[at + from.len()..]);
    out
}

/// One vector per difference from the Go reference found side by side (issue 10): the
/// expectation is the reference's verdict where we match it, and our spec's (with its
/// section 11 row) where we deliberately differ.
pub(super) fn parity(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let agent_id = AGENT_ID;
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);
    let ok = accepted(&valid, agent_id, &p_addr, MODEL, None, &b);
    let sealed = |mutate: &dyn Fn(&mut Value)| {
        let mut v = envelope(k);
        mutate(&mut v);
        seal(v, &k.principal)
    };
    let one = |name: &str, description: &str, raw: &[u8], expect: Expect| {
        vector(
            name,
            description,
            config(),
            vec![step(signed(k, raw, URI, &b), expect)],
        )
    };

    // U01: the signature's length is checked at the agent signature step.
    {
        let expired = sealed(&|v| {
            v["issued_at"] = json!("2026-05-21T11:30:00Z");
            v["scope"]["expires_at"] = json!("2026-05-21T11:59:59Z");
        });
        out.push(vector(
            "agent-sig-length-checked-at-the-agent-step",
            "X-Agent-Sig is only required to be base64 with the headers; 63 or 65 bytes fail as agent_sig_invalid after every envelope check, so an expired passport with a 63-byte signature is envelope_expired (the reference's order)",
            config(),
            vec![
                step(
                    with_headers(&encode_base64(&valid), &encode_base64(&[1u8; 63]), &b),
                    rejected("agent_sig_invalid"),
                ),
                step(
                    with_headers(&encode_base64(&valid), &encode_base64(&[1u8; 65]), &b),
                    rejected("agent_sig_invalid"),
                ),
                step(
                    with_headers(&encode_base64(&expired), &encode_base64(&[1u8; 63]), &b),
                    rejected("envelope_expired"),
                ),
            ],
        ));
    }

    {
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        let mut v = envelope(k);
        v["agent_pubkey"]["public_key"] = json!(encode_base64(&off_curve));
        v["principal_sig"] = json!(principal_sig(&v, &k.other_principal));
        let raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "agent-pubkey-not-on-curve-principal-sig-first",
            "an agent key that is no point and a principal signature by another key: the principal signature is checked first (principal_sig_invalid)",
            config(),
            vec![step(signed(k, &raw, URI, &b), rejected("principal_sig_invalid"))],
        ));
    }

    // U04: v, audience, chain_id and key types missing or empty answer their step's code;
    // null stays malformed (section 11).
    for (name, path, code) in [
        ("version-missing-or-empty", &["v"][..], "version_unknown"),
        (
            "audience-missing-or-empty",
            &["audience"][..],
            "audience_mismatch",
        ),
        (
            "chain-id-missing-or-empty",
            &["chain_id"][..],
            "chain_id_mismatch",
        ),
        (
            "principal-pubkey-type-missing-or-empty",
            &["principal_pubkey", "type"][..],
            "principal_pubkey_type_invalid",
        ),
        (
            "agent-pubkey-type-missing-or-empty",
            &["agent_pubkey", "type"][..],
            "agent_pubkey_type_invalid",
        ),
    ] {
        let set = |value: Option<Value>| {
            sealed(&|v| {
                let (last, parents) = path.split_last().expect("a path");
                let mut at = &mut *v;
                for p in parents {
                    at = &mut at[*p];
                }
                let obj = at.as_object_mut().expect("object");
                match &value {
                    None => {
                        obj.remove(*last);
                    }
                    Some(x) => {
                        obj.insert((*last).to_owned(), x.clone());
                    }
                }
            })
        };
        out.push(vector(
            name,
            &format!(
                "{} missing or \"\" is {code}, as in the reference; null is envelope_malformed (section 11: null is never a value)",
                path.join(".")
            ),
            config(),
            vec![
                step(signed(k, &set(None), URI, &b), rejected(code)),
                step(signed(k, &set(Some(json!(""))), URI, &b), rejected(code)),
                step(
                    signed(k, &set(Some(Value::Null)), URI, &b),
                    rejected("envelope_malformed"),
                ),
            ],
        ));
    }

    // U05, U07, U08: timestamps as the reference's time decoder reads them.
    out.push(one(
        "not-before-empty",
        "not_before \"\" is not a timestamp: envelope_malformed, as in the reference (absent is the only way to leave it out)",
        &sealed(&|v| v["scope"]["not_before"] = json!("")),
        rejected("envelope_malformed"),
    ));
    {
        let escaped = splice(
            &valid,
            format!("\"{ISSUED}\"").as_bytes(),
            format!("\"{}\\u005a\"", ISSUED.trim_end_matches('Z')).as_bytes(),
        );
        out.push(one(
            "timestamp-escaped",
            "a JSON escape inside a timestamp (issued_at ending in \\u005a) is envelope_malformed, as in the reference, whose time decoder reads the raw string; the signatures cover the unescaped form and would verify",
            &escaped,
            rejected("envelope_malformed"),
        ));
    }
    out.push(vector(
        "issued-at-zero-instant",
        "issued_at at 0001-01-01T00:00:00Z, in any offset spelling, counts as missing in the reference (Go's zero time): envelope_malformed",
        config(),
        ["0001-01-01T00:00:00Z", "0001-01-01T01:00:00+01:00"]
            .into_iter()
            .map(|t| {
                step(
                    signed(k, &sealed(&|v| v["issued_at"] = json!(t)), URI, &b),
                    rejected("envelope_malformed"),
                )
            })
            .collect(),
    ));

    // U06 (section 11): one spelling of a timestamp.
    out.push(vector(
        "timestamp-one-spelling",
        "spellings the reference's parser also takes are envelope_malformed here (section 11): ten fraction digits, a comma before the fraction, a one-digit hour, offsets +24:00 and +00:60",
        config(),
        [
            "2026-05-21T11:59:00.0000000000Z",
            "2026-05-21T11:59:00,5Z",
            "2026-05-21T9:59:00-02:00",
            "2026-05-22T11:59:00+24:00",
            "2026-05-21T11:59:00+00:60",
        ]
        .into_iter()
        .map(|t| {
            step(
                signed(k, &sealed(&|v| v["issued_at"] = json!(t)), URI, &b),
                rejected("envelope_malformed"),
            )
        })
        .collect(),
    ));

    // U09, U10 (section 11): invalid UTF-8 is refused, never replaced.
    out.push(one(
        "envelope-invalid-utf8",
        "a byte that is not UTF-8 inside an envelope string is envelope_malformed (section 11: replacing it would change what was signed)",
        &splice(&valid, b"conformance-1", b"conformance-\xff"),
        rejected("envelope_malformed"),
    ));
    {
        let bad = b"{\"model\":\"qwen\xff\"}".to_vec();
        out.push(vector(
            "body-model-invalid-utf8",
            "a byte that is not UTF-8 in the body's model is envelope_malformed (section 11: the upstream would read another model than the scope check)",
            config(),
            vec![step(signed(k, &valid, URI, &bad), rejected("envelope_malformed"))],
        ));
    }

    // U11 (section 11): null inside allowed_models.
    out.push(vector(
        "allowed-models-null-entry",
        "null inside allowed_models is envelope_malformed (section 11: null is never a value; the reference reads it as \"\")",
        config(),
        [json!([MODEL, null]), json!([null])]
            .into_iter()
            .map(|models| {
                let raw = sealed(&|v| v["scope"]["allowed_models"] = models.clone());
                step(signed(k, &raw, URI, &b), rejected("envelope_malformed"))
            })
            .collect(),
    ));

    // U12: the body's nesting depth.
    {
        let nested = |depth: usize| {
            let mut body = format!(r#"{{"model":"{MODEL}","x":"#).into_bytes();
            body.extend(std::iter::repeat_n(b'[', depth - 1));
            body.extend(std::iter::repeat_n(b']', depth - 1));
            body.push(b'}');
            body
        };
        let deep = nested(10_000);
        out.push(vector(
            "body-nested-deeper-than-10000",
            "a body nesting arrays and objects 10,000 levels deep is accepted; 10,001 is envelope_malformed (the reference's JSON decoder limit)",
            config(),
            vec![
                step(
                    signed(k, &valid, URI, &deep),
                    accepted(&valid, agent_id, &p_addr, MODEL, None, &deep),
                ),
                step(
                    signed(k, &valid, URI, &nested(10_001)),
                    rejected("envelope_malformed"),
                ),
            ],
        ));
    }

    // U13 (section 11): the target is signed as sent.
    {
        let raw_target = "/v1/chat/completions|{x}";
        let encoded_target = "/v1/chat/completions%7C%7Bx%7D";
        out.push(vector(
            "uri-signed-as-sent",
            "the agent signs the target exactly as sent, even characters Go re-escapes before signing (|, {, }): accepted here, agent_sig_invalid in the reference (section 11); percent-encoded before signing, the same target verifies in both",
            config(),
            vec![
                step(
                    signed(k, &valid, raw_target, &b),
                    ok.clone(),
                ),
                step(signed(k, &valid, encoded_target, &b), ok.clone()),
            ],
        ));
    }

    // U14: empty header values count as absent.
    {
        let passport = encode_base64(&valid);
        let sig = agent_sig(&k.agent, CHAIN, "POST", URI, &jcs_of(&valid), &b);
        out.push(vector(
            "header-values-empty",
            "both headers present with empty values pass through unverified, as with no headers; exactly one empty is sig_header_mismatch (the reference's rule)",
            config(),
            vec![
                step(
                    with_headers("", "", &b),
                    Expect {
                        status: 200,
                        code: None,
                        verified: None,
                    },
                ),
                step(with_headers("", &sig, &b), rejected("sig_header_mismatch")),
                step(
                    with_headers(&passport, "", &b),
                    rejected("sig_header_mismatch"),
                ),
            ],
        ));
    }

    // Requester binding: U15 to U18.
    {
        let requester = Keys::address(&k.other_principal);
        let grant =
            |msg: &str, expiration: Option<&str>| grant_of(&p_addr, &requester, msg, expiration);
        let from = |who: &[&str]| {
            let mut r = signed(k, &valid, URI, &b);
            for w in who {
                r.headers
                    .push(("X-Requester-Address".into(), (*w).to_owned()));
            }
            r
        };
        out.push(vector(
            "binding-requester-repeated",
            "X-Requester-Address sent twice, the principal first, is principal_mismatch (section 11: repeated headers are refused; the reference takes the first)",
            bound(vec![]),
            vec![step(
                from(&[&p_addr, &requester]),
                rejected("principal_mismatch"),
            )],
        ));
        out.push(vector(
            "binding-grant-expires-while-cached",
            "a grant that authorized a request stops counting when it expires, although the grant cache still holds it (section 11: the reference's 2-minute cache may accept)",
            bound(vec![grant(START_INFERENCE_MSG, Some("2026-05-21T12:00:30Z"))]),
            vec![
                step(from(&[&requester]), ok.clone()),
                Step {
                    now: Some("2026-05-21T12:00:30.5Z".into()),
                    request: from(&[&requester]),
                    expect: rejected("principal_mismatch"),
                },
            ],
        ));
        out.push(vector(
            "binding-grant-expiring-now-authorizes",
            "a grant whose expiration equals now still authorizes: x/authz drops a grant only when its expiration is strictly before the block time",
            bound(vec![grant(START_INFERENCE_MSG, Some(NOW))]),
            vec![step(from(&[&requester]), ok.clone())],
        ));
        out.push(vector(
            "binding-grant-msg-type-without-leading-slash",
            "a grant stored as inference.inference.MsgStartInference (no leading /) counts: one leading / is trimmed before comparing, as newer chain versions do",
            bound(vec![grant(
                START_INFERENCE_MSG.trim_start_matches('/'),
                None,
            )]),
            vec![step(from(&[&requester]), ok.clone())],
        ));
    }

    // The clock keeps sub-second precision.
    out.push(vector(
        "expired-half-second-after-expiry",
        "half a second after expires_at the passport has expired: a verifier's clock is read to the nanosecond",
        config(),
        vec![Step {
            now: Some("2026-05-21T12:29:00.5Z".into()),
            request: signed(k, &valid, URI, &b),
            expect: rejected("envelope_expired"),
        }],
    ));
}
