//! RFC 8785 (JCS) output for the envelope's fixed schema, written directly from the
//! parsed members: no intermediate JSON tree, one pass per form. Member names are
//! written in sorted order (all ASCII, so byte order is UTF-16 order); strings are
//! escaped exactly as ECMAScript's `JSON.stringify` does, which is what RFC 8785 requires.
//! `tests` check the output against `serde_jcs` on arbitrary member values.

use super::{KeyMember, WireEnvelope};

/// Appends `s` as a JSON string in RFC 8785 form: `"` and `\` escaped, `\b \t \n \f \r`
/// for those controls, `\u00xx` (lowercase hex) for the other C0 controls, everything
/// else as raw UTF-8.
pub(crate) fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn member(name: &str, first: &mut bool, out: &mut Vec<u8>) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    write_string(name, out);
    out.push(b':');
}

fn key_member(k: &KeyMember, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"public_key\":");
    write_string(&k.public_key, out);
    out.extend_from_slice(b",\"type\":");
    write_string(&k.key_type, out);
    out.push(b'}');
}

/// Appends the JCS form of the received envelope with `principal_sig` replaced by
/// `principal_sig` (the received value for the agent's form, `""` for the principal's).
/// Returns where the `principal_sig` string (quotes included) is in `out`.
pub(crate) fn write_envelope(
    w: &WireEnvelope,
    principal_sig: &str,
    out: &mut Vec<u8>,
) -> std::ops::Range<usize> {
    let mut first = true;
    out.push(b'{');
    member("agent_id", &mut first, out);
    write_string(&w.agent_id, out);
    member("agent_pubkey", &mut first, out);
    key_member(&w.agent_pubkey, out);
    member("audience", &mut first, out);
    write_string(&w.audience, out);
    if let Some(b) = &w.beneficiary {
        member("beneficiary", &mut first, out);
        write_string(b, out);
    }
    member("chain_id", &mut first, out);
    write_string(&w.chain_id, out);
    member("issued_at", &mut first, out);
    write_string(&w.issued_at, out);
    member("principal_address", &mut first, out);
    write_string(&w.principal_address, out);
    member("principal_pubkey", &mut first, out);
    key_member(&w.principal_pubkey, out);
    member("principal_sig", &mut first, out);
    let sig_start = out.len();
    write_string(principal_sig, out);
    let sig = sig_start..out.len();
    member("scope", &mut first, out);
    let mut scope_first = true;
    out.push(b'{');
    if let Some(models) = &w.scope.allowed_models {
        member("allowed_models", &mut scope_first, out);
        out.push(b'[');
        for (i, m) in models.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(m, out);
        }
        out.push(b']');
    }
    member("expires_at", &mut scope_first, out);
    write_string(&w.scope.expires_at, out);
    if let Some(nb) = &w.scope.not_before {
        member("not_before", &mut scope_first, out);
        write_string(nb, out);
    }
    out.push(b'}');
    member("v", &mut first, out);
    write_string(&w.v, out);
    out.push(b'}');
    sig
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Controls, quotes, backslashes, BMP above U+E000 and astral characters: every
        // escaping and ordering case of RFC 8785 that a string can hit.
        proptest::collection::vec(
            prop_oneof![
                any::<char>(),
                Just('"'),
                Just('\\'),
                Just('\u{7f}'),
                Just('\u{1f}'),
                Just('\u{e9}'),
                Just('\u{fb33}'),
                Just('\u{1f602}')
            ],
            0..12,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn matches_serde_jcs_on_arbitrary_member_values(
            strings in proptest::collection::vec(text(), 12),
            models in proptest::option::of(proptest::collection::vec(text(), 0..3)),
            beneficiary in proptest::option::of(text()),
            not_before in proptest::option::of(text()),
        ) {
            let w = WireEnvelope {
                v: strings[0].clone(),
                audience: strings[1].clone(),
                chain_id: strings[2].clone(),
                agent_id: strings[3].clone(),
                agent_pubkey: KeyMember { key_type: strings[4].clone(), public_key: strings[5].clone() },
                principal_address: strings[6].clone(),
                principal_pubkey: KeyMember { key_type: strings[7].clone(), public_key: strings[8].clone() },
                scope: super::super::WireScope {
                    allowed_models: models.clone(),
                    expires_at: strings[9].clone(),
                    not_before: not_before.clone(),
                },
                beneficiary: beneficiary.clone(),
                issued_at: strings[10].clone(),
                principal_sig: strings[11].clone(),
            };
            let mut value = serde_json::json!({
                "v": w.v, "audience": w.audience, "chain_id": w.chain_id, "agent_id": w.agent_id,
                "agent_pubkey": {"type": w.agent_pubkey.key_type, "public_key": w.agent_pubkey.public_key},
                "principal_address": w.principal_address,
                "principal_pubkey": {"type": w.principal_pubkey.key_type, "public_key": w.principal_pubkey.public_key},
                "scope": {"expires_at": w.scope.expires_at},
                "issued_at": w.issued_at, "principal_sig": w.principal_sig,
            });
            if let Some(m) = &models { value["scope"]["allowed_models"] = serde_json::json!(m); }
            if let Some(nb) = &not_before { value["scope"]["not_before"] = serde_json::json!(nb); }
            if let Some(b) = &beneficiary { value["beneficiary"] = serde_json::json!(b); }
            let mut ours = Vec::new();
            let sig = write_envelope(&w, &w.principal_sig, &mut ours);
            // The signing document is made by splicing `""` over that range (see
            // `Envelope::signing_document`): the same as writing it with `""`.
            let mut blank = Vec::new();
            write_envelope(&w, "", &mut blank);
            let spliced = [&ours[..sig.start], b"\"\"", &ours[sig.end..]].concat();
            prop_assert_eq!(spliced, blank);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_jcs::to_string(&value).unwrap());
        }
    }
}
