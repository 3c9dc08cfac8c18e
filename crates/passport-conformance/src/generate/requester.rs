//! Gonka's native requester signatures at the gateway (spec section 7.0).

use super::{
    accepted, accounts_of, body, bound_with_accounts, envelope, grant_of, high_s_twin, rejected,
    seal, signed, step, vector, Keys, AGENT_ID, MODEL, NOW, URI,
};
use crate::{Expect, StepRequest, Vector, VectorConfig, VectorRequesterSignature};
use passport_core::crypto::{encode_base64, PrincipalSecret};
use passport_core::gonka::NativeSigner;
use passport_gate::grants::{Grant, START_INFERENCE_MSG};
use std::collections::BTreeMap;

/// Gonka's native request signature at the gateway (spec section 7, requester
/// signatures): the requester verified, not trusted.
pub(super) fn signatures(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let r_addr = Keys::address(&k.other_principal);
    let node_secret = PrincipalSecret::from_bytes(&[0x55; 32]).expect("below the order");
    let node = Keys::address(&node_secret);
    let now_ns = i64::try_from(
        passport_core::time::Timestamp::parse(NOW)
            .expect("NOW parses")
            .unix_nanos(),
    )
    .expect("NOW fits");
    const WINDOW: i64 = 10_000_000_000;
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);
    let ok = accepted(&valid, AGENT_ID, &p_addr, MODEL, None, &b);
    let accounts = accounts_of(&[
        (&p_addr, Some(&k.principal)),
        (&r_addr, Some(&k.other_principal)),
    ]);
    let config_with = |grants: Vec<Grant>, accounts: BTreeMap<String, Option<String>>| {
        let mut c = bound_with_accounts(grants, accounts);
        if let Some(b) = &mut c.binding {
            b.requester_signature = Some(VectorRequesterSignature {
                transfer_address: node.clone(),
                max_age_ms: None,
                max_advance_ms: None,
                max_seen: None,
            });
        }
        c
    };
    let signer = |s: &PrincipalSecret| NativeSigner::new(s, "gonka").expect("gonka prefix");
    // The passport request plus the native headers of `who` over `signed_body` at `ts`,
    // signed for `transfer`; `send_transfer` says whether X-Transfer-Address is sent.
    let native = |who: &PrincipalSecret,
                  signed_body: &[u8],
                  ts: i64,
                  transfer: &str,
                  send_transfer: bool| {
        let mut r = signed(k, &valid, URI, &b);
        for (name, value) in signer(who).sign(signed_body, ts, transfer).pairs() {
            if name == "X-Transfer-Address" && !send_transfer {
                continue;
            }
            r.headers.push((name.into(), value));
        }
        r
    };
    let plain = |who: &PrincipalSecret, ts: i64| native(who, &b, ts, &node, false);
    let one =
        |name: &str,
         description: &str,
         config: VectorConfig,
         request: StepRequest,
         expect: Expect| { vector(name, description, config, vec![step(request, expect)]) };

    out.push(one(
        "requester-sig-principal-signs",
        "the principal is the requester and signs natively with its on-chain key, without X-Transfer-Address (the node's own address is signed)",
        config_with(vec![], accounts.clone()),
        plain(&k.principal, now_ns),
        ok.clone(),
    ));
    out.push(one(
        "requester-sig-grantee-signs",
        "a grantee with a MsgStartInference grant signs natively with its on-chain key",
        config_with(
            vec![grant_of(&p_addr, &r_addr, START_INFERENCE_MSG, None)],
            accounts.clone(),
        ),
        plain(&k.other_principal, now_ns),
        ok.clone(),
    ));
    out.push(one(
        "requester-sig-transfer-address-configured",
        "X-Transfer-Address equal to the configured transfer address, and signed over",
        config_with(vec![], accounts.clone()),
        native(&k.principal, &b, now_ns, &node, true),
        ok.clone(),
    ));
    out.push(one(
        "requester-sig-transfer-address-other",
        "X-Transfer-Address naming another node than the configured one is refused, even though the signature covers it",
        config_with(vec![], accounts.clone()),
        native(&k.principal, &b, now_ns, &p_addr, true),
        rejected("requester_transfer_address_mismatch"),
    ));
    {
        let mut r = plain(&k.principal, now_ns);
        r.headers.retain(|(n, _)| n != "Authorization");
        out.push(one(
            "requester-sig-missing",
            "with requester signatures on, a request without Authorization is refused",
            config_with(vec![], accounts.clone()),
            r,
            rejected("requester_sig_missing"),
        ));
        let mut r = plain(&k.principal, now_ns);
        r.headers.retain(|(n, _)| n != "X-Timestamp");
        out.push(one(
            "requester-sig-timestamp-missing",
            "with requester signatures on, a request without X-Timestamp is refused",
            config_with(vec![], accounts.clone()),
            r,
            rejected("requester_sig_missing"),
        ));
    }
    {
        let mut bearer = plain(&k.principal, now_ns);
        for (n, v) in &mut bearer.headers {
            if n == "Authorization" {
                *v = format!("Bearer {v}");
            }
        }
        let mut high_s = plain(&k.principal, now_ns);
        for (n, v) in &mut high_s.headers {
            if n == "Authorization" {
                let sig = passport_core::crypto::decode_base64(v).expect("base64");
                *v = encode_base64(&high_s_twin(&sig));
            }
        }
        let mut repeated = plain(&k.principal, now_ns);
        repeated
            .headers
            .push(("X-Timestamp".into(), now_ns.to_string()));
        let mut padded_ts = plain(&k.principal, now_ns);
        for (n, v) in &mut padded_ts.headers {
            if n == "X-Timestamp" {
                *v = format!("0{v}");
            }
        }
        for (name, description, request) in [
            (
                "requester-sig-bearer",
                "Authorization with a Bearer prefix is not the node's form",
                bearer,
            ),
            (
                "requester-sig-high-s",
                "the high-S twin of a valid signature: the node (Cosmos SDK) refuses it",
                high_s,
            ),
            (
                "requester-sig-timestamp-repeated",
                "X-Timestamp sent twice",
                repeated,
            ),
            (
                "requester-sig-timestamp-not-canonical",
                "X-Timestamp with a leading zero is not canonical decimal",
                padded_ts,
            ),
        ] {
            out.push(one(
                name,
                description,
                config_with(vec![], accounts.clone()),
                request,
                rejected("requester_sig_malformed"),
            ));
        }
    }
    {
        // The window: 10 s each way by default, both ends included.
        let c = config_with(vec![], accounts.clone());
        out.push(vector(
            "requester-sig-timestamp-window",
            "X-Timestamp exactly 10 s old or 10 s ahead is accepted; one nanosecond further is requester_timestamp_out_of_window",
            c,
            vec![
                step(plain(&k.principal, now_ns - WINDOW), ok.clone()),
                step(plain(&k.principal, now_ns + WINDOW), ok.clone()),
                step(
                    plain(&k.principal, now_ns - WINDOW - 1),
                    rejected("requester_timestamp_out_of_window"),
                ),
                step(
                    plain(&k.principal, now_ns + WINDOW + 1),
                    rejected("requester_timestamp_out_of_window"),
                ),
            ],
        ));
        let mut c = config_with(vec![], accounts.clone());
        if let Some(b) = &mut c.binding {
            if let Some(rs) = &mut b.requester_signature {
                rs.max_age_ms = Some(2_000);
                rs.max_advance_ms = Some(1_000);
            }
        }
        out.push(vector(
            "requester-sig-timestamp-window-configured",
            "a window of 2 s back and 1 s ahead",
            c,
            vec![
                step(plain(&k.principal, now_ns - 2_000_000_000), ok.clone()),
                step(
                    plain(&k.principal, now_ns - 2_000_000_001),
                    rejected("requester_timestamp_out_of_window"),
                ),
                step(plain(&k.principal, now_ns + 1_000_000_000), ok.clone()),
                step(
                    plain(&k.principal, now_ns + 1_000_000_001),
                    rejected("requester_timestamp_out_of_window"),
                ),
            ],
        ));
    }
    out.push(one(
        "requester-sig-account-unknown",
        "the requester has no chain account, so no key to verify with",
        config_with(vec![], BTreeMap::new()),
        plain(&k.principal, now_ns),
        rejected("requester_pubkey_unknown"),
    ));
    out.push(one(
        "requester-sig-account-without-key",
        "the requester's chain account holds no public key",
        config_with(vec![], accounts_of(&[(&p_addr, None)])),
        plain(&k.principal, now_ns),
        rejected("requester_pubkey_unknown"),
    ));
    out.push(one(
        "requester-sig-other-body",
        "the native signature covers another body",
        config_with(vec![], accounts.clone()),
        native(&k.principal, b"{}", now_ns, &node, false),
        rejected("requester_sig_invalid"),
    ));
    {
        // Signed by the grantee's key but naming the principal as requester.
        let mut r = plain(&k.other_principal, now_ns);
        for (n, v) in &mut r.headers {
            if n == "X-Requester-Address" {
                v.clone_from(&p_addr);
            }
        }
        out.push(one(
            "requester-sig-other-key",
            "X-Requester-Address names the principal, but another key signed",
            config_with(vec![], accounts.clone()),
            r,
            rejected("requester_sig_invalid"),
        ));
    }
    out.push(one(
        "requester-sig-signed-for-other-node",
        "without X-Transfer-Address the configured node address is signed; a signature over another address does not verify",
        config_with(vec![], accounts.clone()),
        native(&k.principal, &b, now_ns, &p_addr, false),
        rejected("requester_sig_invalid"),
    ));
    out.push(vector(
        "requester-sig-replayed",
        "an Authorization already accepted within its window is refused; a new signature (another timestamp) is accepted",
        config_with(vec![], accounts.clone()),
        vec![
            step(plain(&k.principal, now_ns), ok.clone()),
            step(plain(&k.principal, now_ns), rejected("requester_sig_replayed")),
            step(plain(&k.principal, now_ns + 1), ok.clone()),
        ],
    ));
    {
        let mut second = step(plain(&k.principal, now_ns), ok.clone());
        second.now = Some("2026-05-21T12:00:10Z".into());
        let mut third = step(
            plain(&k.principal, now_ns),
            rejected("requester_timestamp_out_of_window"),
        );
        third.now = Some("2026-05-21T12:00:10.000000001Z".into());
        out.push(vector(
            "requester-sig-replay-until-window-end",
            "a seen Authorization stays refused while its timestamp is in the window, and is refused by the window afterwards",
            config_with(vec![], accounts.clone()),
            vec![
                step(plain(&k.principal, now_ns), ok.clone()),
                {
                    let mut s = second;
                    s.expect = rejected("requester_sig_replayed");
                    s
                },
                third,
            ],
        ));
    }
    {
        let mut config = config_with(vec![], accounts.clone());
        if let Some(rs) = config
            .binding
            .as_mut()
            .and_then(|b| b.requester_signature.as_mut())
        {
            rs.max_seen = Some(1);
        }
        out.push(vector(
            "requester-sig-store-full",
            "the seen-set holds one signature: a second verified signature while the first is live is refused with requester_sig_store_full (503), never by forgetting a live one",
            config,
            vec![
                step(plain(&k.principal, now_ns), ok.clone()),
                step(
                    plain(&k.principal, now_ns + 1),
                    rejected("requester_sig_store_full"),
                ),
                step(plain(&k.principal, now_ns), rejected("requester_sig_replayed")),
            ],
        ));
    }
    // Order (spec section 6): the header checks before the grant, the key after it, the
    // signature over the body after the agent signature.
    out.push(one(
        "requester-sig-window-before-grant",
        "no grant and a stale X-Timestamp: the window is judged first, without a chain query",
        config_with(vec![], accounts.clone()),
        plain(&k.other_principal, now_ns - WINDOW - 1),
        rejected("requester_timestamp_out_of_window"),
    ));
    out.push(one(
        "requester-sig-grant-before-key",
        "no grant and no account: principal_mismatch comes before the key lookup",
        config_with(vec![], accounts_of(&[(&p_addr, Some(&k.principal))])),
        plain(&k.other_principal, now_ns),
        rejected("principal_mismatch"),
    ));
    {
        let mut r = native(&k.principal, b"{}", now_ns, &node, false);
        for (n, v) in &mut r.headers {
            if n == "X-Agent-Sig" {
                *v = encode_base64(&[0u8; 64]);
            }
        }
        out.push(one(
            "requester-sig-after-agent-sig",
            "a wrong agent signature and a wrong native signature: agent_sig_invalid (step 10b) comes first",
            config_with(vec![], accounts.clone()),
            r,
            rejected("agent_sig_invalid"),
        ));
    }
}
