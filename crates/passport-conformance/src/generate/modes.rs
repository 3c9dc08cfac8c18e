//! `mode`, failing grant sources, broken bodies and replay stores (spec sections 6, 7 and 7.1).

use super::{
    accepted, body, config, envelope, rejected, request, seal, signed, step, vector, with_headers,
    Keys, AGENT_ID, MODEL, URI,
};
use crate::{
    BodyBehaviour, GrantFailure, ReplayStoreCapacity, ReplayStoreState, Vector, VectorBinding,
    VectorMode, VectorReplayStore,
};

/// Vectors for the codes the format could not express before it gained `mode`,
/// `binding.fail`, `request.body_behaviour` and `config.replay_store`.
pub(super) fn unexpressed_before(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let agent_id = AGENT_ID;
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);
    let ok = accepted(&valid, agent_id, &p_addr, MODEL, None, &b);

    {
        let mut c = config();
        c.mode = Some(VectorMode::Required);
        out.push(vector(
            "passport-required",
            "with mode required, a request without passport headers (or with both values empty) is passport_required; one with a valid passport is accepted",
            c,
            vec![
                step(
                    request("POST", URI, vec![("Authorization", "Bearer x".into())], &b),
                    rejected("passport_required"),
                ),
                step(with_headers("", "", &b), rejected("passport_required")),
                step(signed(k, &valid, URI, &b), ok.clone()),
            ],
        ));
    }
    for (name, description, failure) in [
        (
            "chain-query-failed-error",
            "the grant source answers with an error: chain_query_failed (503, retry), never taken as no grant",
            GrantFailure::Error,
        ),
        (
            "chain-query-failed-timeout",
            "the grant source does not answer within binding.query_timeout_ms (50 ms here): chain_query_failed",
            GrantFailure::Timeout,
        ),
    ] {
        let mut c = config();
        c.binding = Some(VectorBinding {
            requester_header: "X-Requester-Address".into(),
            grants: vec![],
            fail: Some(failure),
            query_timeout_ms: Some(50),
            msg_type_url: None,
            accounts: None,
            requester_signature: None,
        });
        let mut r = signed(k, &valid, URI, &b);
        r.headers.push((
            "X-Requester-Address".into(),
            Keys::address(&k.other_principal),
        ));
        out.push(vector(
            name,
            description,
            c,
            vec![step(r, rejected("chain_query_failed"))],
        ));
    }
    {
        let mut r = signed(k, &valid, URI, &b);
        r.body_behaviour = Some(BodyBehaviour::BreakAfter(10));
        out.push(vector(
            "body-read-failed",
            "the body breaks off after 10 bytes: body_read_failed",
            config(),
            vec![step(r, rejected("body_read_failed"))],
        ));
        let mut c = config();
        c.body_read_timeout_ms = Some(50);
        let mut r = signed(k, &valid, URI, &b);
        r.body_behaviour = Some(BodyBehaviour::StallAfter(10));
        out.push(vector(
            "body-read-timeout",
            "the body stops after 10 bytes and body_read_timeout_ms (50 ms here) passes: body_read_timeout",
            c,
            vec![step(r, rejected("body_read_timeout"))],
        ));
    }
    {
        let mut c = config();
        c.replay_protection = Some(true);
        c.replay_store = Some(VectorReplayStore::State(ReplayStoreState::Unavailable));
        out.push(vector(
            "replay-store-unavailable",
            "with replay_protection and a replay store that cannot be asked, a valid request is replay_store_unavailable (fail-closed, 503)",
            c,
            vec![step(signed(k, &valid, URI, &b), rejected("replay_store_unavailable"))],
        ));
        let mut c = config();
        c.replay_protection = Some(true);
        c.replay_store = Some(VectorReplayStore::Bounded(ReplayStoreCapacity {
            capacity: 1,
        }));
        // Another principal's request: the first principal's own would meet its quota
        // (at most a tenth of the capacity, at least one record) before the capacity.
        let mut v = envelope(k);
        v["principal_address"] = serde_json::json!(Keys::address(&k.other_principal));
        v["principal_pubkey"]["public_key"] =
            serde_json::json!(k.other_principal.public_key().to_base64());
        let theirs = seal(v, &k.other_principal);
        out.push(vector(
            "replay-store-full",
            "a store holding at most one live record accepts one request, then refuses another principal's new one with replay_store_full rather than forget the first",
            c,
            vec![
                step(signed(k, &valid, URI, &b), ok.clone()),
                step(signed(k, &theirs, URI, &b), rejected("replay_store_full")),
            ],
        ));
        // The in-process store forgets earlier runs: a passport issued at or before its
        // start plus the clock skew (30 s by default) may have had requests accepted by an
        // earlier run, so it is refused until it expires; one issued later is served
        // (spec section 7.1).
        let mut c = config();
        c.replay_protection = Some(true);
        c.replay_store_started_at = Some("2026-05-21T11:58:30Z".into());
        let mut later = envelope(k);
        later["issued_at"] = serde_json::json!("2026-05-21T11:59:20Z");
        let later = seal(later, &k.principal);
        out.push(vector(
            "replay-memory-store-refuses-passports-from-before-its-start",
            "the in-process store started at 11:58:30 with the default clock_skew_seconds (30): a passport issued at 11:59:00, at start plus skew, is 401 passport_predates_start (an earlier run may have accepted its requests); one issued at 11:59:20 is served",
            c,
            vec![
                step(signed(k, &valid, URI, &b), rejected("passport_predates_start")),
                step(
                    signed(k, &later, URI, &b),
                    accepted(&later, agent_id, &p_addr, MODEL, None, &b),
                ),
            ],
        ));
        // One principal cannot fill a bounded store: its quota is at most a tenth of the
        // capacity, whatever replay_records_per_principal says (here the default, 10000).
        let mut c = config();
        c.replay_protection = Some(true);
        c.replay_store = Some(VectorReplayStore::Bounded(ReplayStoreCapacity {
            capacity: 20,
        }));
        let third = body("llama-3.1-8b");
        let fourth = body("mistral-7b");
        out.push(vector(
            "replay-quota-a-tenth-of-the-capacity",
            "with replay_cache_capacity = 20 and the default replay_records_per_principal, one principal holds at most 2 live records (a tenth of the capacity): its third new request is 429 replay_quota_exceeded, and another principal is still served",
            c,
            vec![
                step(signed(k, &valid, URI, &b), ok.clone()),
                step(
                    signed(k, &valid, URI, &third),
                    accepted(&valid, agent_id, &p_addr, "llama-3.1-8b", None, &third),
                ),
                step(
                    signed(k, &valid, URI, &fourth),
                    rejected("replay_quota_exceeded"),
                ),
                step(
                    signed(k, &theirs, URI, &b),
                    accepted(
                        &theirs,
                        agent_id,
                        &Keys::address(&k.other_principal),
                        MODEL,
                        None,
                        &b,
                    ),
                ),
            ],
        ));
    }
}
