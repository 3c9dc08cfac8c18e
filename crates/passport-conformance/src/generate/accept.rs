//! Accepted shapes and validity windows (spec section 3 and section 6 steps 5 and 6).

use super::{
    accepted, body, config, envelope, seal, signed, step, vector, Keys, AGENT_ID, MODEL, URI,
};
use crate::Vector;
use serde_json::{json, Value};

/// Passports that must be accepted: scope, beneficiary, `not_before`, query strings,
/// TTL and skew boundaries.
pub(super) fn shapes(k: &Keys, out: &mut Vec<Vector>) {
    let p_addr = Keys::address(&k.principal);
    let agent_id = AGENT_ID;
    let b = body(MODEL);

    let accept = |name: &str, description: &str, v: Value, uri: &str, beneficiary: Option<&str>| {
        let raw = seal(v, &k.principal);
        vector(
            name,
            description,
            config(),
            vec![step(
                signed(k, &raw, uri, &b),
                accepted(&raw, agent_id, &p_addr, MODEL, beneficiary, &b),
            )],
        )
    };
    out.push(accept(
        "accept-models-omitted",
        "allowed_models absent allows every model",
        envelope(k),
        URI,
        None,
    ));
    {
        let mut v = envelope(k);
        v["scope"]["allowed_models"] = json!(["llama-3.1-8b", MODEL]);
        out.push(accept(
            "accept-models-listed",
            "the model is in allowed_models",
            v,
            URI,
            None,
        ));
    }
    {
        let mut v = envelope(k);
        v["beneficiary"] = json!("acme-corp/cost-centre-7");
        out.push(accept(
            "accept-beneficiary",
            "a beneficiary is carried to the verified identity",
            v,
            URI,
            Some("acme-corp/cost-centre-7"),
        ));
    }
    {
        let name = "b".repeat(255);
        let mut v = envelope(k);
        v["beneficiary"] = json!(name);
        out.push(accept(
            "accept-beneficiary-255-bytes",
            "exactly 255 bytes is allowed",
            v,
            URI,
            Some(&name),
        ));
    }
    {
        let mut v = envelope(k);
        v["scope"]["not_before"] = json!("2026-05-21T12:00:00Z");
        out.push(accept(
            "accept-not-before-now",
            "now equal to not_before is valid",
            v,
            URI,
            None,
        ));
    }
    out.push(accept(
        "accept-query-string",
        "the signed URI includes the query string exactly as sent",
        envelope(k),
        "/v1/chat/completions?api-version=2024-10-21&stream=false",
        None,
    ));
    // Accepted validity windows: (name, description, issued_at, expires_at).
    for (name, description, issued, expires) in [
        (
            "accept-ttl-exactly-max",
            "expires_at - issued_at = 3600 s is allowed",
            "2026-05-21T11:30:00Z",
            "2026-05-21T12:30:00Z",
        ),
        (
            "accept-issued-at-within-skew",
            "issued_at 30 s in the future is within the skew",
            "2026-05-21T12:00:30Z",
            "2026-05-21T12:30:00Z",
        ),
        (
            "accept-offsets-and-fractions",
            "numeric offsets and fractional seconds name the same instants as UTC",
            "2026-05-21T13:59:00+02:00",
            "2026-05-21T07:29:00.5-05:00",
        ),
    ] {
        let mut v = envelope(k);
        v["issued_at"] = json!(issued);
        v["scope"]["expires_at"] = json!(expires);
        out.push(accept(name, description, v, URI, None));
    }
    {
        let mut c = config();
        c.max_ttl_seconds = Some(7200);
        let mut v = envelope(k);
        v["issued_at"] = json!("2026-05-21T11:30:00Z");
        v["scope"]["expires_at"] = json!("2026-05-21T12:30:01Z");
        let raw = seal(v, &k.principal);
        out.push(vector(
            "accept-ttl-under-raised-max",
            "with max_ttl_seconds 7200, a 3601 s passport is allowed",
            c,
            vec![step(
                signed(k, &raw, URI, &b),
                accepted(&raw, agent_id, &p_addr, MODEL, None, &b),
            )],
        ));
    }
}
