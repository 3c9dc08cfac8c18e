//! A hand-written envelope: white space, escapes, order, duplicates (spec sections 3, 4.1, 5).

use super::{
    accepted, agent_sig, body, config, rejected, request, signed, step, vector, Keys, CHAIN,
    EXPIRES, ISSUED, MODEL, URI,
};
use crate::Vector;
use passport_core::crypto::encode_base64;
use passport_core::envelope::{canonical, parse_strict};

/// Vectors built on one hand-written envelope whose RFC 8785 form is also written out
/// by hand.
pub(super) fn hand_written(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let b = body(MODEL);

    // A hand-written envelope: white space, escapes, reordered members, non-ASCII text.
    {
        let agent_key = k.agent.public_key().to_base64();
        let principal_key = k.principal.public_key().to_base64();
        let template = format!(
            "{{\n  \"scope\" : {{ \"expires_at\" : \"{EXPIRES}\", \"allowed_models\" : [ \"qwen\\/qwen3-32b\" ] }},\n  \"issued_at\":\"{ISSUED}\",\t\"v\":\"aps-agent-envelope-v1\",\n  \"agent_id\" : \"urn:aps:agent:\\u00e9t\\u00e9-7\",\n  \"beneficiary\" : \"Soci\u{e9}t\u{e9} \\\"Nord\\\" \\u2013 \u{6771}\u{4eac}\",\n  \"principal_pubkey\" : {{\"public_key\":\"{principal_key}\",\"type\":\"secp256k1\"}},\n  \"audience\" : \"gonka\", \"chain_id\" : \"{CHAIN}\",\n  \"agent_pubkey\":{{\"type\":\"ed25519\",\"public_key\":\"{agent_key}\"}},\n  \"principal_address\" : \"{p_addr}\",\n  \"principal_sig\" : \"\"\n}}\n"
        );
        // The RFC 8785 form, written out by hand: members sorted, no white space, `\/`
        // and `\u` escapes replaced by the characters, `"` still escaped.
        let expected_doc = format!(
            "{{\"agent_id\":\"urn:aps:agent:\u{e9}t\u{e9}-7\",\"agent_pubkey\":{{\"public_key\":\"{agent_key}\",\"type\":\"ed25519\"}},\"audience\":\"gonka\",\"beneficiary\":\"Soci\u{e9}t\u{e9} \\\"Nord\\\" \u{2013} \u{6771}\u{4eac}\",\"chain_id\":\"{CHAIN}\",\"issued_at\":\"{ISSUED}\",\"principal_address\":\"{p_addr}\",\"principal_pubkey\":{{\"public_key\":\"{principal_key}\",\"type\":\"secp256k1\"}},\"principal_sig\":\"\",\"scope\":{{\"allowed_models\":[\"qwen/qwen3-32b\"],\"expires_at\":\"{EXPIRES}\"}},\"v\":\"aps-agent-envelope-v1\"}}"
        );
        let parsed = parse_strict(template.as_bytes()).expect("the template is JSON");
        let doc = canonical(&parsed).expect("canonicalizes");
        assert_eq!(
            String::from_utf8_lossy(&doc),
            expected_doc,
            "JCS disagrees with the hand-written form"
        );
        let sig = encode_base64(&k.principal.sign_adr036(&p_addr, &doc));
        let raw = template
            .replace(
                "\"principal_sig\" : \"\"",
                &format!("\"principal_sig\" : \"{sig}\""),
            )
            .into_bytes();
        let beneficiary = "Soci\u{e9}t\u{e9} \"Nord\" \u{2013} \u{6771}\u{4eac}";
        out.push(vector(
            "accept-raw-json-canonicalized",
            "white space, escapes, reordered members and non-ASCII text: both signatures are over the RFC 8785 form, not the bytes sent",
            config(),
            vec![step(
                signed(k, &raw, URI, &b),
                accepted(&raw, "urn:aps:agent:\u{e9}t\u{e9}-7", &p_addr, MODEL, Some(beneficiary), &b),
            )],
        ));
        // The same envelope with the agent signing the raw bytes instead of the JCS form.
        let wrong = agent_sig(&k.agent, CHAIN, "POST", URI, &raw, &b);
        out.push(vector(
            "agent-sig-over-raw-envelope",
            "the agent must sign the JCS form of the envelope, not the bytes sent",
            config(),
            vec![step(
                request(
                    "POST",
                    URI,
                    vec![
                        ("X-Agent-Passport", encode_base64(&raw)),
                        ("X-Agent-Sig", wrong),
                    ],
                    &b,
                ),
                rejected("agent_sig_invalid"),
            )],
        ));
        // A duplicate member, written by hand since no serializer produces one.
        let dup = template.replacen(
            "\"v\":\"aps-agent-envelope-v1\",",
            "\"v\":\"aps-agent-envelope-v1\",\"\\u0076\":\"aps-agent-envelope-v1\",",
            1,
        );
        out.push(vector(
            "envelope-duplicate-member-escaped",
            "\"v\" and \"\\u0076\" are the same member name: a duplicate is refused",
            config(),
            vec![step(
                signed(k, dup.as_bytes(), URI, &b),
                rejected("envelope_malformed"),
            )],
        ));
        let trailing = format!("{}{{}}", template.trim_end());
        out.push(vector(
            "envelope-trailing-bytes",
            "bytes after the envelope object are refused",
            config(),
            vec![step(
                signed(k, trailing.as_bytes(), URI, &b),
                rejected("envelope_malformed"),
            )],
        ));
    }
}
