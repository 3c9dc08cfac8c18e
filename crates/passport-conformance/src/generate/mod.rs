//! Writes the conformance vectors from fixed keys and a fixed clock.
//!
//! Expectations here are written by hand from the spec (the status table below and the
//! rule each case breaks); the generator never asks the verifier what it thinks. The
//! signatures are deterministic (RFC 8032 Ed25519, RFC 6979 ECDSA), so anyone can
//! regenerate identical files with `passport-gate conformance --generate DIR`.

mod accept;
mod agent;
mod binding;
mod body;
mod cache;
mod envelope;
mod hardening;
mod headers;
mod modes;
mod parity;
mod policy;
mod principal;
mod raw_json;
mod requester;
mod scope;

use crate::{Expect, ExpectVerified, Step, StepRequest, Vector, VectorBinding, VectorConfig};
use passport_core::crypto::{derive_address, encode_base64, AgentSecret, PrincipalSecret};
use passport_core::envelope::{canonical, parse_strict};
use passport_gate::grants::Grant;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

const NOW: &str = "2026-05-21T12:00:00Z";
const ISSUED: &str = "2026-05-21T11:59:00Z";
const EXPIRES: &str = "2026-05-21T12:29:00Z";
const CHAIN: &str = "gonka-mainnet";
const URI: &str = "/v1/chat/completions";
const MODEL: &str = "qwen/qwen3-32b";
const AGENT_ID: &str = "urn:aps:agent:conformance-1";

/// The status each code is answered with, from the spec's error table.
fn status_of(code: &str) -> u16 {
    match code {
        "max_tokens_over_cap" => 400,
        "rate_limit_exceeded" | "insufficient_quota" => 429,
        "sig_header_mismatch" | "header_malformed" | "envelope_malformed" | "body_read_failed" => {
            400
        }
        "body_too_large" => 413,
        "passport_too_large" => 431,
        "agent_id_too_long" | "model_too_long" => 400,
        "body_read_timeout" => 408,
        "ttl_too_long"
        | "envelope_not_yet_valid"
        | "envelope_expired"
        | "allowed_models_empty"
        | "model_not_allowed"
        | "principal_mismatch"
        | "principal_not_allowed" => 403,
        "replay_quota_exceeded" => 429,
        "requester_sig_store_full"
        | "chain_query_failed"
        | "replay_store_unavailable"
        | "replay_store_full"
        | "revocations_unavailable"
        | "body_budget_exhausted"
        | "verification_busy" => 503,
        _ => 401,
    }
}

struct Keys {
    principal: PrincipalSecret,
    other_principal: PrincipalSecret,
    agent: AgentSecret,
    other_agent: AgentSecret,
}

impl Keys {
    fn fixed() -> Keys {
        let scalar = |b: u8| {
            PrincipalSecret::from_bytes(&[b; 32]).expect("a constant below the group order")
        };
        Keys {
            principal: scalar(0x11),
            other_principal: scalar(0x22),
            agent: AgentSecret::from_bytes(&[0x33; 32]),
            other_agent: AgentSecret::from_bytes(&[0x44; 32]),
        }
    }

    fn address(secret: &PrincipalSecret) -> String {
        derive_address("gonka", secret.public_key().compressed()).expect("gonka is a valid prefix")
    }
}

fn body(model: &str) -> Vec<u8> {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"Say hello."}}],"max_tokens":16}}"#
    )
    .into_bytes()
}

/// A complete envelope with `principal_sig` blank.
fn envelope(k: &Keys) -> Value {
    json!({
        "v": "aps-agent-envelope-v1",
        "audience": "gonka",
        "chain_id": CHAIN,
        "agent_id": AGENT_ID,
        "agent_pubkey": {"type": "ed25519", "public_key": k.agent.public_key().to_base64()},
        "principal_address": Keys::address(&k.principal),
        "principal_pubkey": {"type": "secp256k1", "public_key": k.principal.public_key().to_base64()},
        "scope": {"expires_at": EXPIRES},
        "issued_at": ISSUED,
        "principal_sig": ""
    })
}

/// The ADR-036 signature of `value` (with `principal_sig` blanked) by `secret`.
fn principal_sig(value: &Value, secret: &PrincipalSecret) -> String {
    let mut doc = value.clone();
    doc["principal_sig"] = Value::String(String::new());
    let data = canonical(&doc).expect("generated envelopes canonicalize");
    let signer = value["principal_address"].as_str().unwrap_or_default();
    encode_base64(&secret.sign_adr036(signer, &data))
}

/// Signs `value` with `secret` and returns the envelope bytes.
fn seal(mut value: Value, secret: &PrincipalSecret) -> Vec<u8> {
    value["principal_sig"] = Value::String(principal_sig(&value, secret));
    serde_json::to_vec(&value).expect("a JSON value serializes")
}

fn agent_sig(
    agent: &AgentSecret,
    chain: &str,
    method: &str,
    uri: &str,
    envelope_jcs: &[u8],
    body: &[u8],
) -> String {
    encode_base64(
        &agent
            .sign_request(chain, method, uri, envelope_jcs, body)
            .expect("small fields"),
    )
}

fn jcs_of(raw: &[u8]) -> Vec<u8> {
    parse_strict(raw)
        .ok()
        .and_then(|v| canonical(&v).ok())
        .unwrap_or_else(|| raw.to_vec())
}

fn request(method: &str, uri: &str, headers: Vec<(&str, String)>, body: &[u8]) -> StepRequest {
    StepRequest {
        method: method.into(),
        uri: uri.into(),
        headers: headers
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect(),
        body_base64: encode_base64(body),
        body_behaviour: None,
    }
}

/// A request carrying `raw` as passport, signed correctly by the fixture agent.
fn signed(k: &Keys, raw: &[u8], uri: &str, body: &[u8]) -> StepRequest {
    let sig = agent_sig(&k.agent, CHAIN, "POST", uri, &jcs_of(raw), body);
    request(
        "POST",
        uri,
        vec![
            ("X-Agent-Passport", encode_base64(raw)),
            ("X-Agent-Sig", sig),
        ],
        body,
    )
}

fn accepted(
    raw: &[u8],
    agent_id: &str,
    principal: &str,
    model: &str,
    beneficiary: Option<&str>,
    body: &[u8],
) -> Expect {
    Expect {
        status: 200,
        code: None,
        verified: Some(ExpectVerified {
            agent_id: agent_id.into(),
            principal_address: principal.into(),
            model: model.into(),
            beneficiary: beneficiary.map(str::to_owned),
            envelope_sha256: hex::encode(Sha256::digest(raw)),
            request_body_sha256: hex::encode(Sha256::digest(body)),
        }),
    }
}

fn rejected(code: &str) -> Expect {
    Expect {
        status: status_of(code),
        code: Some(code.into()),
        verified: None,
    }
}

fn config() -> VectorConfig {
    VectorConfig {
        chain_id: CHAIN.into(),
        now: NOW.into(),
        max_ttl_seconds: None,
        max_body_size: None,
        address_prefix: None,
        binding: None,
        replay_protection: None,
        revoked: None,
        revocation_set_unread: None,
        mode: None,
        body_read_timeout_ms: None,
        replay_store: None,
        replay_store_started_at: None,
        body_budget_free: None,
        replay_records_per_principal: None,
        principals_allowed: None,
        cold_verifications_per_second: None,
        limits: None,
    }
}

fn step(request: StepRequest, expect: Expect) -> Step {
    Step {
        now: None,
        request,
        expect,
    }
}

fn vector(name: &str, description: &str, config: VectorConfig, steps: Vec<Step>) -> Vector {
    Vector {
        name: name.into(),
        description: description.into(),
        config,
        steps,
    }
}

/// A grant of `msg` from `granter` to `grantee`, expiring at `expiration` (RFC 3339).
fn grant_of(granter: &str, grantee: &str, msg: &str, expiration: Option<&str>) -> Grant {
    Grant {
        granter: granter.into(),
        grantee: grantee.into(),
        msg_type_url: msg.into(),
        expiration: expiration.and_then(|t| passport_core::time::Timestamp::parse(t).ok()),
    }
}

/// A vector configuration with requester binding on `X-Requester-Address` over a static
/// grant list.
fn bound(grants: Vec<Grant>) -> VectorConfig {
    let mut c = config();
    c.binding = Some(VectorBinding {
        requester_header: "X-Requester-Address".into(),
        grants,
        fail: None,
        query_timeout_ms: None,
        msg_type_url: None,
        accounts: None,
        requester_signature: None,
    });
    c
}

/// A request whose headers are `passport` and `sig` as given (either may be empty).
fn with_headers(passport: &str, sig: &str, body: &[u8]) -> StepRequest {
    request(
        "POST",
        URI,
        vec![
            ("X-Agent-Passport", passport.to_owned()),
            ("X-Agent-Sig", sig.to_owned()),
        ],
        body,
    )
}

/// `(r, n - s)` for a 64-byte `r || s` secp256k1 signature, by schoolbook subtraction.
fn high_s_twin(sig: &[u8]) -> Vec<u8> {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ];
    let mut out = sig.to_vec();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(sig[32 + i]) - borrow;
        out[32 + i] = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
    out
}

/// The chain's accounts for a vector: each address with its key, or null for none.
fn accounts_of(entries: &[(&str, Option<&PrincipalSecret>)]) -> BTreeMap<String, Option<String>> {
    entries
        .iter()
        .map(|(a, s)| ((*a).to_owned(), s.map(|s| s.public_key().to_base64())))
        .collect()
}

/// `bound(grants)` with the chain's accounts (spec section 7: a grantee without a key does
/// not count).
fn bound_with_accounts(
    grants: Vec<Grant>,
    accounts: BTreeMap<String, Option<String>>,
) -> VectorConfig {
    let mut c = bound(grants);
    if let Some(b) = &mut c.binding {
        b.accounts = Some(accounts);
    }
    c
}

/// Builds every vector.
pub fn generate() -> Vec<Vector> {
    let k = Keys::fixed();
    let mut out = Vec::new();
    envelope::members(&k, &mut out);
    accept::shapes(&k, &mut out);
    raw_json::hand_written(&k, &mut out);
    agent::forgeries(&k, &mut out);
    principal::forgeries(&k, &mut out);
    scope::models(&k, &mut out);
    headers::headers(&k, &mut out);
    body::body_checks(&k, &mut out);
    cache::cache(&k, &mut out);
    binding::static_grants(&k, &mut out);
    policy::replay(&k, &mut out);
    policy::allowlist(&k, &mut out);
    policy::revocation(&k, &mut out);
    policy::limits(&k, &mut out);
    parity::parity(&k, &mut out);
    modes::unexpressed_before(&k, &mut out);
    hardening::hardening(&k, &mut out);
    binding::chain_data(&k, &mut out);
    requester::signatures(&k, &mut out);
    out
}
