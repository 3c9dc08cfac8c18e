//! Requester binding over a static grant list and the chain's accounts (spec section 7).

use super::{
    accepted, accounts_of, body, bound, bound_with_accounts, envelope, grant_of, rejected, seal,
    signed, step, vector, Keys, AGENT_ID, MODEL, URI,
};
use crate::Vector;
use passport_gate::grants::{Grant, CLAIM_REWARDS_MSG, START_INFERENCE_MSG};
use std::collections::BTreeMap;

/// Requester binding with a static grant list.
pub(super) fn static_grants(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let agent_id = AGENT_ID;
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);

    {
        let requester = Keys::address(&k.other_principal);
        let grant =
            |msg: &str, expiration: Option<&str>| grant_of(&p_addr, &requester, msg, expiration);
        let with_requester = |who: &str| {
            let mut r = signed(k, &valid, URI, &b);
            r.headers.push(("X-Requester-Address".into(), who.into()));
            r
        };
        let ok = accepted(&valid, agent_id, &p_addr, MODEL, None, &b);
        for (name, description, grants, who, expect) in [
            (
                "binding-requester-is-principal",
                "the principal itself needs no grant",
                vec![],
                p_addr.clone(),
                ok.clone(),
            ),
            (
                "binding-grant-authorizes",
                "a MsgStartInference grant from the principal to the requester",
                vec![grant(START_INFERENCE_MSG, None)],
                requester.clone(),
                ok.clone(),
            ),
            (
                "binding-grant-unexpired",
                "a grant expiring after now authorizes",
                vec![grant(START_INFERENCE_MSG, Some("2026-05-21T12:00:01Z"))],
                requester.clone(),
                ok.clone(),
            ),
            (
                "binding-no-grant",
                "no grant from the principal to the requester",
                vec![],
                requester.clone(),
                rejected("principal_mismatch"),
            ),
            (
                "binding-grant-other-message",
                "a grant for another message type does not count",
                vec![grant("/cosmos.bank.v1beta1.MsgSend", None)],
                requester.clone(),
                rejected("principal_mismatch"),
            ),
            (
                "binding-grant-expired",
                "an expired grant does not count",
                vec![grant(START_INFERENCE_MSG, Some("2026-05-21T11:00:00Z"))],
                requester.clone(),
                rejected("principal_mismatch"),
            ),
        ] {
            out.push(vector(
                name,
                description,
                bound(grants),
                vec![step(with_requester(&who), expect)],
            ));
        }
        out.push(vector(
            "binding-requester-header-missing",
            "with binding on, a request that names no requester is refused",
            bound(vec![grant(START_INFERENCE_MSG, None)]),
            vec![step(
                signed(k, &valid, URI, &b),
                rejected("principal_mismatch"),
            )],
        ));
    }
}

/// Requester binding on real chain data (V01 to V03 of issue 21): the grant's message
/// type, grantees without a key, principals without an account.
pub(super) fn chain_data(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let r_addr = Keys::address(&k.other_principal);
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);
    let with_requester = |who: &str| {
        let mut r = signed(k, &valid, URI, &b);
        r.headers.push(("X-Requester-Address".into(), who.into()));
        r
    };
    let ok = accepted(&valid, AGENT_ID, &p_addr, MODEL, None, &b);
    // V01: the default is x/authz's meaning (a MsgStartInference grant); a gateway in front
    // of the newest keeper may configure MsgClaimRewards, the legacy warm-key marker that
    // keeper answers MsgStartInference queries from.
    out.push(vector(
        "binding-claim-rewards-grant-by-default",
        "with the default message type, a grant of only MsgClaimRewards does not authorize (spec section 11: the newest keeper's GranteesByMessageType counts it)",
        bound(vec![grant_of(&p_addr, &r_addr, CLAIM_REWARDS_MSG, None)]),
        vec![step(with_requester(&r_addr), rejected("principal_mismatch"))],
    ));
    let claim_rewards = |grants: Vec<Grant>| {
        let mut c = bound(grants);
        if let Some(b) = &mut c.binding {
            b.msg_type_url = Some(CLAIM_REWARDS_MSG.into());
        }
        c
    };
    out.push(vector(
        "binding-msg-type-claim-rewards-authorizes",
        "binding.msg_type_url = MsgClaimRewards (the newest keeper): a MsgClaimRewards grant authorizes",
        claim_rewards(vec![grant_of(&p_addr, &r_addr, CLAIM_REWARDS_MSG, None)]),
        vec![step(with_requester(&r_addr), ok.clone())],
    ));
    out.push(vector(
        "binding-msg-type-claim-rewards-start-inference-only",
        "binding.msg_type_url = MsgClaimRewards (the newest keeper): a grant of only MsgStartInference does not authorize",
        claim_rewards(vec![grant_of(&p_addr, &r_addr, START_INFERENCE_MSG, None)]),
        vec![step(with_requester(&r_addr), rejected("principal_mismatch"))],
    ));
    // V02: a grantee counts only if its account holds a public key.
    let grant = vec![grant_of(&p_addr, &r_addr, START_INFERENCE_MSG, None)];
    out.push(vector(
        "binding-grantee-with-key",
        "with the chain's accounts known, a grantee whose account has a public key counts",
        bound_with_accounts(
            grant.clone(),
            accounts_of(&[
                (&p_addr, Some(&k.principal)),
                (&r_addr, Some(&k.other_principal)),
            ]),
        ),
        vec![step(with_requester(&r_addr), ok.clone())],
    ));
    out.push(vector(
        "binding-grantee-without-key",
        "a grantee whose chain account has no public key does not count, as in the reference",
        bound_with_accounts(
            grant.clone(),
            accounts_of(&[(&p_addr, Some(&k.principal)), (&r_addr, None)]),
        ),
        vec![step(
            with_requester(&r_addr),
            rejected("principal_mismatch"),
        )],
    ));
    out.push(vector(
        "binding-grantee-without-account",
        "a grantee with no chain account has no public key either: it does not count",
        bound_with_accounts(grant, accounts_of(&[(&p_addr, Some(&k.principal))])),
        vec![step(
            with_requester(&r_addr),
            rejected("principal_mismatch"),
        )],
    ));
    // V03: a principal without a chain account has granted nothing.
    out.push(vector(
        "binding-principal-without-account",
        "a principal with no chain account and another requester: principal_mismatch (the reference answers 500 chain_query_failed; spec section 11)",
        bound_with_accounts(vec![], accounts_of(&[(&r_addr, Some(&k.other_principal))])),
        vec![step(with_requester(&r_addr), rejected("principal_mismatch"))],
    ));
    out.push(vector(
        "binding-requester-is-principal-without-key",
        "without requester signatures, the principal as requester needs no account lookup",
        bound_with_accounts(vec![], BTreeMap::new()),
        vec![step(with_requester(&p_addr), ok)],
    ));
}
