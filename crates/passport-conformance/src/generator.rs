//! Writes the conformance vectors from fixed keys and a fixed clock.
//!
//! Expectations here are written by hand from the spec (the status table below and the
//! rule each case breaks); the generator never asks the verifier what it thinks. The
//! signatures are deterministic (RFC 8032 Ed25519, RFC 6979 ECDSA), so anyone can
//! regenerate identical files with `passport-gate conformance --generate DIR`.

use super::{
    BodyBehaviour, Expect, ExpectVerified, GrantFailure, ReplayStoreCapacity, ReplayStoreState,
    Step, StepRequest, Vector, VectorBinding, VectorConfig, VectorMode, VectorReplayStore,
    VectorRequesterSignature,
};
use passport_core::crypto::{derive_address, encode_base64, AgentSecret, PrincipalSecret};
use passport_core::envelope::{canonical, parse_strict};
use passport_core::gonka::NativeSigner;
use passport_gate::grants::CLAIM_REWARDS_MSG;
use passport_gate::grants::{Grant, START_INFERENCE_MSG};
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
        mode: None,
        body_read_timeout_ms: None,
        replay_store: None,
        body_budget_free: None,
        replay_records_per_principal: None,
        principals_allowed: None,
        cold_verifications_per_second: None,
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

/// Builds every vector.
pub fn generate() -> Vec<Vector> {
    let k = Keys::fixed();
    let p_addr = Keys::address(&k.principal);
    let agent_id = AGENT_ID;
    let b = body(MODEL);
    let mut out = Vec::new();

    // A vector with one request whose passport is `mutate(envelope)` sealed by the
    // fixture principal and signed by the fixture agent, expected to fail with `code`.
    let mut reject_envelope =
        |name: &str, description: &str, code: &str, mutate: &dyn Fn(&mut Value)| {
            let mut v = envelope(&k);
            mutate(&mut v);
            let raw = seal(v, &k.principal);
            out.push(vector(
                name,
                description,
                config(),
                vec![step(signed(&k, &raw, URI, &b), rejected(code))],
            ));
        };

    reject_envelope(
        "version-unknown",
        "v must be aps-agent-envelope-v1",
        "version_unknown",
        &|v| v["v"] = json!("aps-agent-envelope-v2"),
    );
    reject_envelope(
        "audience-mismatch",
        "audience must be gonka",
        "audience_mismatch",
        &|v| v["audience"] = json!("openai"),
    );
    reject_envelope(
        "chain-id-mismatch",
        "a passport for gonka-testnet is refused by a gonka-mainnet verifier",
        "chain_id_mismatch",
        &|v| v["chain_id"] = json!("gonka-testnet"),
    );
    reject_envelope(
        "envelope-unknown-member",
        "an unknown top-level member is refused even though it is signed",
        "envelope_malformed",
        &|v| v["max_spend"] = json!("100"),
    );
    reject_envelope(
        "envelope-unknown-scope-member",
        "an unknown member inside scope is refused",
        "envelope_malformed",
        &|v| v["scope"]["max_tokens"] = json!("10"),
    );
    reject_envelope(
        "envelope-allowed-models-null",
        "allowed_models null is refused (the reference reads it as absent, which widens scope)",
        "envelope_malformed",
        &|v| v["scope"]["allowed_models"] = Value::Null,
    );
    reject_envelope(
        "envelope-beneficiary-null",
        "null is never a member value: beneficiary null is refused, not read as absent",
        "envelope_malformed",
        &|v| v["beneficiary"] = Value::Null,
    );
    reject_envelope(
        "envelope-member-wrong-case",
        "member names are case-sensitive: Agent_id is unknown and agent_id is missing",
        "envelope_malformed",
        &|v| {
            let obj = v.as_object_mut().expect("object");
            let id = obj.remove("agent_id").expect("present");
            obj.insert("Agent_id".into(), id);
        },
    );
    reject_envelope(
        "envelope-empty-agent-id",
        "required members must be non-empty",
        "envelope_malformed",
        &|v| v["agent_id"] = json!(""),
    );
    reject_envelope(
        "envelope-bad-timestamp",
        "issued_at must be RFC 3339 with T and an offset",
        "envelope_malformed",
        &|v| v["issued_at"] = json!("2026-05-21 11:59:00"),
    );
    reject_envelope(
        "envelope-expiry-not-after-issue",
        "expires_at equal to issued_at is malformed",
        "envelope_malformed",
        &|v| v["scope"]["expires_at"] = json!(ISSUED),
    );
    reject_envelope(
        "ttl-one-second-over",
        "expires_at - issued_at = 3601 s exceeds the default max_ttl_seconds of 3600",
        "ttl_too_long",
        &|v| {
            v["issued_at"] = json!("2026-05-21T11:30:00Z");
            v["scope"]["expires_at"] = json!("2026-05-21T12:30:01Z");
        },
    );
    reject_envelope(
        "issued-at-beyond-skew",
        "issued_at 31 s in the future is outside the 30 s skew",
        "envelope_not_yet_valid",
        &|v| {
            v["issued_at"] = json!("2026-05-21T12:00:31Z");
            v["scope"]["expires_at"] = json!("2026-05-21T12:30:00Z");
        },
    );
    reject_envelope(
        "not-before-in-future",
        "now is before not_before; the skew does not apply to not_before",
        "envelope_not_yet_valid",
        &|v| v["scope"]["not_before"] = json!("2026-05-21T12:00:01Z"),
    );
    reject_envelope(
        "expired",
        "expires_at is one second before now",
        "envelope_expired",
        &|v| {
            v["issued_at"] = json!("2026-05-21T11:30:00Z");
            v["scope"]["expires_at"] = json!("2026-05-21T11:59:59Z");
        },
    );
    reject_envelope(
        "principal-multisig",
        "a multisig principal key type is unsupported",
        "principal_multisig_unsupported",
        &|v| v["principal_pubkey"]["type"] = json!("tendermint/PubKeyMultisigThreshold"),
    );
    reject_envelope(
        "principal-multisig-any-case",
        "the multisig test ignores case",
        "principal_multisig_unsupported",
        &|v| v["principal_pubkey"]["type"] = json!("/cosmos.crypto.MultiSig.LegacyAminoPubKey"),
    );
    reject_envelope(
        "principal-pubkey-type-invalid",
        "the principal key type must be exactly secp256k1",
        "principal_pubkey_type_invalid",
        &|v| v["principal_pubkey"]["type"] = json!("ed25519"),
    );
    reject_envelope(
        "principal-pubkey-type-wrong-case",
        "Secp256k1 is not secp256k1",
        "principal_pubkey_type_invalid",
        &|v| v["principal_pubkey"]["type"] = json!("Secp256k1"),
    );
    {
        let uncompressed = {
            // 0x04 || X || Y of an arbitrary valid point is 65 bytes: not a compressed key.
            let mut b = vec![0x04u8];
            b.extend_from_slice(&[
                0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87,
                0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b,
                0x16, 0xf8, 0x17, 0x98,
            ]);
            b.extend_from_slice(&[
                0x48, 0x3a, 0xda, 0x77, 0x26, 0xa3, 0xc4, 0x65, 0x5d, 0xa4, 0xfb, 0xfc, 0x0e, 0x11,
                0x08, 0xa8, 0xfd, 0x17, 0xb4, 0x48, 0xa6, 0x85, 0x54, 0x19, 0x9c, 0x47, 0xd0, 0x8f,
                0xfb, 0x10, 0xd4, 0xb8,
            ]);
            encode_base64(&b)
        };
        let not_on_curve = {
            // x = 2^256 - 1 exceeds the field prime, so no point has it.
            let mut b = vec![0x02u8];
            b.extend_from_slice(&[0xff; 32]);
            encode_base64(&b)
        };
        for (name, key, why) in [
            (
                "principal-pubkey-32-bytes",
                encode_base64(&[0x02; 32]),
                "a 32-byte key is not a compressed point",
            ),
            (
                "principal-pubkey-uncompressed",
                uncompressed,
                "the 65-byte uncompressed form is refused",
            ),
        ] {
            reject_envelope(name, why, "principal_pubkey_malformed", &|v| {
                v["principal_pubkey"]["public_key"] = json!(key)
            });
        }
        reject_envelope(
            "principal-pubkey-not-on-curve",
            "33 bytes that are no point (x beyond the field) are only length-checked, as in the reference: the address derived from those bytes is not principal_address",
            "principal_address_mismatch",
            &|v| v["principal_pubkey"]["public_key"] = json!(not_on_curve),
        );
        let not_on_curve_bytes: [u8; 33] = passport_core::crypto::decode_base64(&not_on_curve)
            .and_then(|b| b.try_into().ok())
            .expect("33 bytes");
        let derived =
            derive_address("gonka", &not_on_curve_bytes).expect("gonka is a valid prefix");
        reject_envelope(
            "principal-pubkey-not-on-curve-address-derived",
            "33 bytes that are no point, with principal_address derived from them: the address matches, and no signature verifies under a non-point (principal_sig_invalid at step 10, as in the reference)",
            "principal_sig_invalid",
            &|v| {
                v["principal_pubkey"]["public_key"] = json!(not_on_curve);
                v["principal_address"] = json!(derived);
            },
        );
    }
    {
        let other = Keys::address(&k.other_principal);
        reject_envelope(
            "principal-address-of-another-key",
            "principal_address must be derived from principal_pubkey",
            "principal_address_mismatch",
            &|v| v["principal_address"] = json!(other),
        );
        let upper = p_addr.to_uppercase();
        reject_envelope(
            "principal-address-uppercase",
            "the uppercase spelling of the right address is refused: one account, one spelling",
            "principal_address_mismatch",
            &|v| v["principal_address"] = json!(upper),
        );
    }
    reject_envelope(
        "agent-pubkey-type-invalid",
        "the agent key type must be exactly ed25519",
        "agent_pubkey_type_invalid",
        &|v| v["agent_pubkey"]["type"] = json!("Ed25519"),
    );
    {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let identity = encode_base64(&identity);
        reject_envelope(
            "agent-pubkey-small-order",
            "the identity point (small order) is refused as an agent key, at the agent signature step where the reference fails a 32-byte key that does not verify (section 11: strict Ed25519)",
            "agent_sig_invalid",
            &|v| v["agent_pubkey"]["public_key"] = json!(identity),
        );
        // y = 2 has no x on the curve; y = p + 1 is a non-canonical spelling of y = 1.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        for (name, key, why) in [
            (
                "agent-pubkey-not-on-curve",
                off_curve,
                "32 bytes that are no point are only length-checked, as in the reference: the agent signature cannot verify (agent_sig_invalid at step 10)",
            ),
            (
                "agent-pubkey-non-canonical",
                non_canonical,
                "a non-canonical encoding (y = p + 1) is only length-checked, as in the reference: the agent signature does not verify (agent_sig_invalid at step 10)",
            ),
        ] {
            reject_envelope(name, why, "agent_sig_invalid", &|v| {
                v["agent_pubkey"]["public_key"] = json!(encode_base64(&key))
            });
        }
        reject_envelope(
            "agent-pubkey-31-bytes",
            "an Ed25519 key is 32 bytes",
            "agent_pubkey_malformed",
            &|v| v["agent_pubkey"]["public_key"] = json!(encode_base64(&[7u8; 31])),
        );
    }
    for (name, value, why) in [
        (
            "beneficiary-newline",
            "acme\ncorp".to_owned(),
            "a C0 control character is refused",
        ),
        (
            "beneficiary-delete",
            "acme\u{7f}".to_owned(),
            "U+007F is refused",
        ),
        (
            "beneficiary-c1",
            "acme\u{85}corp".to_owned(),
            "a C1 control character (U+0085) is refused",
        ),
        (
            "beneficiary-256-bytes",
            "b".repeat(256),
            "more than 255 bytes is refused",
        ),
    ] {
        reject_envelope(name, why, "beneficiary_invalid", &|v| {
            v["beneficiary"] = json!(value)
        });
    }
    {
        let mut v = envelope(&k);
        v["principal_sig"] = json!("not base64!");
        let raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "principal-sig-not-base64",
            "principal_sig must be base64 of 64 bytes",
            config(),
            vec![step(
                signed(&k, &raw, URI, &b),
                rejected("principal_sig_invalid"),
            )],
        ));
    }

    // Accepted shapes.
    let accept = |name: &str, description: &str, v: Value, uri: &str, beneficiary: Option<&str>| {
        let raw = seal(v, &k.principal);
        vector(
            name,
            description,
            config(),
            vec![step(
                signed(&k, &raw, uri, &b),
                accepted(&raw, agent_id, &p_addr, MODEL, beneficiary, &b),
            )],
        )
    };
    out.push(accept(
        "accept-models-omitted",
        "allowed_models absent allows every model",
        envelope(&k),
        URI,
        None,
    ));
    {
        let mut v = envelope(&k);
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
        let mut v = envelope(&k);
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
        let mut v = envelope(&k);
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
        let mut v = envelope(&k);
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
        envelope(&k),
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
        let mut v = envelope(&k);
        v["issued_at"] = json!(issued);
        v["scope"]["expires_at"] = json!(expires);
        out.push(accept(name, description, v, URI, None));
    }
    {
        let mut c = config();
        c.max_ttl_seconds = Some(7200);
        let mut v = envelope(&k);
        v["issued_at"] = json!("2026-05-21T11:30:00Z");
        v["scope"]["expires_at"] = json!("2026-05-21T12:30:01Z");
        let raw = seal(v, &k.principal);
        out.push(vector(
            "accept-ttl-under-raised-max",
            "with max_ttl_seconds 7200, a 3601 s passport is allowed",
            c,
            vec![step(
                signed(&k, &raw, URI, &b),
                accepted(&raw, agent_id, &p_addr, MODEL, None, &b),
            )],
        ));
    }

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
                signed(&k, &raw, URI, &b),
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
                signed(&k, dup.as_bytes(), URI, &b),
                rejected("envelope_malformed"),
            )],
        ));
        let trailing = format!("{}{{}}", template.trim_end());
        out.push(vector(
            "envelope-trailing-bytes",
            "bytes after the envelope object are refused",
            config(),
            vec![step(
                signed(&k, trailing.as_bytes(), URI, &b),
                rejected("envelope_malformed"),
            )],
        ));
    }

    let valid = seal(envelope(&k), &k.principal);
    let passport = encode_base64(&valid);
    let good_sig = agent_sig(&k.agent, CHAIN, "POST", URI, &jcs_of(&valid), &b);

    // Agent signature forgeries.
    for (name, description, chain, method, uri, signer, signed_body) in [
        (
            "agent-sig-other-body",
            "signed over another body with the same model",
            CHAIN,
            "POST",
            URI,
            &k.agent,
            body(MODEL)
                .into_iter()
                .chain(b" ".iter().copied())
                .collect::<Vec<u8>>(),
        ),
        (
            "agent-sig-other-uri",
            "signed for /v1/completions, sent to /v1/chat/completions",
            CHAIN,
            "POST",
            "/v1/completions",
            &k.agent,
            b.clone(),
        ),
        (
            "agent-sig-other-method",
            "signed for PUT, sent as POST",
            CHAIN,
            "PUT",
            URI,
            &k.agent,
            b.clone(),
        ),
        (
            "agent-sig-other-chain",
            "signed with gonka-testnet in the payload",
            "gonka-testnet",
            "POST",
            URI,
            &k.agent,
            b.clone(),
        ),
        (
            "agent-sig-other-key",
            "signed by a key other than agent_pubkey",
            CHAIN,
            "POST",
            URI,
            &k.other_agent,
            b.clone(),
        ),
        (
            "agent-sig-query-dropped",
            "signed without the query string that was sent",
            CHAIN,
            "POST",
            URI,
            &k.agent,
            b.clone(),
        ),
    ] {
        let sent_uri = if name == "agent-sig-query-dropped" {
            "/v1/chat/completions?x=1"
        } else {
            URI
        };
        let sig = agent_sig(signer, chain, method, uri, &jcs_of(&valid), &signed_body);
        out.push(vector(
            name,
            description,
            config(),
            vec![step(
                request(
                    "POST",
                    sent_uri,
                    vec![("X-Agent-Passport", passport.clone()), ("X-Agent-Sig", sig)],
                    &b,
                ),
                rejected("agent_sig_invalid"),
            )],
        ));
    }

    // Principal signature forgeries.
    {
        let mut v = envelope(&k);
        v["principal_sig"] = json!(principal_sig(&v, &k.other_principal));
        let raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "principal-sig-other-key",
            "signed by another secp256k1 key than principal_pubkey",
            config(),
            vec![step(
                signed(&k, &raw, URI, &b),
                rejected("principal_sig_invalid"),
            )],
        ));

        let mut v = envelope(&k);
        v["scope"]["allowed_models"] = json!([MODEL]);
        let sig = principal_sig(&v, &k.principal);
        v["principal_sig"] = json!(sig);
        v["scope"]
            .as_object_mut()
            .expect("object")
            .remove("allowed_models");
        let raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "principal-sig-scope-widened",
            "allowed_models removed after signing, widening the scope to every model",
            config(),
            vec![step(
                signed(&k, &raw, URI, &b),
                rejected("principal_sig_invalid"),
            )],
        ));

        let mut v = envelope(&k);
        let low =
            passport_core::crypto::decode_base64(&principal_sig(&v, &k.principal)).expect("base64");
        v["principal_sig"] = json!(encode_base64(&high_s_twin(&low)));
        let raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "principal-sig-high-s",
            "(r, n - s) verifies mathematically but high-S signatures are refused",
            config(),
            vec![step(
                signed(&k, &raw, URI, &b),
                rejected("principal_sig_invalid"),
            )],
        ));

        let mut v = envelope(&k);
        let mut removed = v.clone();
        removed
            .as_object_mut()
            .expect("object")
            .remove("principal_sig");
        let data = canonical(&removed).expect("canonicalizes");
        v["principal_sig"] = json!(encode_base64(&k.principal.sign_adr036(&p_addr, &data)));
        let raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "principal-sig-member-removed-not-blanked",
            "the principal signs the envelope with principal_sig set to \"\", not removed",
            config(),
            vec![step(
                signed(&k, &raw, URI, &b),
                rejected("principal_sig_invalid"),
            )],
        ));
    }

    // Model scope.
    for (name, description, models, code) in [
        (
            "allowed-models-empty",
            "allowed_models [] allows no model",
            json!([]),
            "allowed_models_empty",
        ),
        (
            "model-not-allowed",
            "the model is not listed",
            json!(["llama-3.1-8b"]),
            "model_not_allowed",
        ),
        (
            "model-case-differs",
            "matching is case-sensitive",
            json!(["Qwen/Qwen3-32B"]),
            "model_not_allowed",
        ),
    ] {
        let mut v = envelope(&k);
        v["scope"]["allowed_models"] = models;
        let raw = seal(v, &k.principal);
        out.push(vector(
            name,
            description,
            config(),
            vec![step(signed(&k, &raw, URI, &b), rejected(code))],
        ));
    }

    // Headers.
    out.push(vector(
        "passthrough-no-headers",
        "a request without passport headers reaches the inner service untouched",
        config(),
        vec![step(
            request("POST", URI, vec![("Authorization", "Bearer x".into())], &b),
            Expect {
                status: 200,
                code: None,
                verified: None,
            },
        )],
    ));
    out.push(vector(
        "sig-header-mismatch-passport-only",
        "X-Agent-Passport without X-Agent-Sig",
        config(),
        vec![step(
            request(
                "POST",
                URI,
                vec![("X-Agent-Passport", passport.clone())],
                &b,
            ),
            rejected("sig_header_mismatch"),
        )],
    ));
    out.push(vector(
        "sig-header-mismatch-sig-only",
        "X-Agent-Sig without X-Agent-Passport",
        config(),
        vec![step(
            request("POST", URI, vec![("X-Agent-Sig", good_sig.clone())], &b),
            rejected("sig_header_mismatch"),
        )],
    ));
    for (name, description, headers) in [
        (
            "header-repeated-passport",
            "two X-Agent-Passport headers",
            vec![
                ("X-Agent-Passport", passport.clone()),
                ("X-Agent-Passport", passport.clone()),
                ("X-Agent-Sig", good_sig.clone()),
            ],
        ),
        (
            "header-repeated-sig",
            "two X-Agent-Sig headers",
            vec![
                ("X-Agent-Passport", passport.clone()),
                ("X-Agent-Sig", good_sig.clone()),
                ("X-Agent-Sig", good_sig.clone()),
            ],
        ),
        (
            "header-passport-not-base64",
            "the passport is not base64",
            vec![
                ("X-Agent-Passport", "{not base64}".into()),
                ("X-Agent-Sig", good_sig.clone()),
            ],
        ),
        (
            "header-passport-unpadded",
            "base64 without padding is refused",
            vec![
                (
                    "X-Agent-Passport",
                    passport.trim_end_matches('=').to_owned()
                        + if passport.ends_with('=') { "" } else { "A" },
                ),
                ("X-Agent-Sig", good_sig.clone()),
            ],
        ),
    ] {
        out.push(vector(
            name,
            description,
            config(),
            vec![step(
                request("POST", URI, headers, &b),
                rejected("header_malformed"),
            )],
        ));
    }

    // Body.
    {
        let mut c = config();
        c.max_body_size = Some(64);
        let sig = agent_sig(&k.agent, CHAIN, "POST", URI, &jcs_of(&valid), &b);
        out.push(vector(
            "body-too-large",
            "a body over max_body_size (64 bytes here) is refused",
            c,
            vec![step(
                request(
                    "POST",
                    URI,
                    vec![("X-Agent-Passport", passport.clone()), ("X-Agent-Sig", sig)],
                    &b,
                ),
                rejected("body_too_large"),
            )],
        ));
    }
    for (name, description, bad) in [
        (
            "body-not-json",
            "the body must be JSON",
            b"model=qwen".to_vec(),
        ),
        (
            "body-without-model",
            "the body must have a model",
            br#"{"messages":[]}"#.to_vec(),
        ),
        (
            "body-model-empty",
            "the model must be non-empty",
            br#"{"model":""}"#.to_vec(),
        ),
        (
            "body-model-not-string",
            "the model must be a string",
            br#"{"model":7}"#.to_vec(),
        ),
        (
            "body-model-twice",
            "a body with two model members is refused",
            br#"{"model":"llama-3.1-8b","model":"qwen/qwen3-32b"}"#.to_vec(),
        ),
    ] {
        out.push(vector(
            name,
            description,
            config(),
            vec![step(
                signed(&k, &valid, URI, &bad),
                rejected("envelope_malformed"),
            )],
        ));
    }

    // Time boundaries across one layer instance (the second and third steps hit the cache).
    {
        let at = |t: &str, expect: Expect| Step {
            now: Some(t.into()),
            request: signed(&k, &valid, URI, &b),
            expect,
        };
        out.push(vector(
            "expiry-boundaries",
            "valid one second before and exactly at expires_at, expired one second after; the cached passport is re-checked against the clock",
            config(),
            vec![
                at("2026-05-21T12:28:59Z", accepted(&valid, agent_id, &p_addr, MODEL, None, &b)),
                at(EXPIRES, accepted(&valid, agent_id, &p_addr, MODEL, None, &b)),
                at("2026-05-21T12:29:01Z", rejected("envelope_expired")),
            ],
        ));
    }

    // Caching must not weaken anything.
    {
        let forged = agent_sig(&k.other_agent, CHAIN, "POST", URI, &jcs_of(&valid), &b);
        let other_body = body("llama-3.1-8b");
        out.push(vector(
            "cache-reuse-checks-every-request",
            "a passport reused with a new body is accepted; a forged agent signature on the cached passport is still refused",
            config(),
            vec![
                step(signed(&k, &valid, URI, &b), accepted(&valid, agent_id, &p_addr, MODEL, None, &b)),
                step(
                    signed(&k, &valid, URI, &other_body),
                    accepted(&valid, agent_id, &p_addr, "llama-3.1-8b", None, &other_body),
                ),
                step(
                    request("POST", URI, vec![("X-Agent-Passport", passport.clone()), ("X-Agent-Sig", forged)], &b),
                    rejected("agent_sig_invalid"),
                ),
            ],
        ));
        let mut v = envelope(&k);
        v["principal_sig"] = json!(principal_sig(&v, &k.other_principal));
        let forged_raw = serde_json::to_vec(&v).expect("serializes");
        out.push(vector(
            "cache-forged-envelope-never-cached",
            "a passport whose principal signature failed is refused again on reuse",
            config(),
            vec![
                step(
                    signed(&k, &forged_raw, URI, &b),
                    rejected("principal_sig_invalid"),
                ),
                step(
                    signed(&k, &forged_raw, URI, &b),
                    rejected("principal_sig_invalid"),
                ),
            ],
        ));
    }

    // Requester binding with a static grant list.
    {
        let requester = Keys::address(&k.other_principal);
        let grant =
            |msg: &str, expiration: Option<&str>| grant_of(&p_addr, &requester, msg, expiration);
        let with_requester = |who: &str| {
            let mut r = signed(&k, &valid, URI, &b);
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
                signed(&k, &valid, URI, &b),
                rejected("principal_mismatch"),
            )],
        ));
    }

    // Replay protection (beyond the reference; off unless the vector turns it on).
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
                step(signed(&k, &valid, URI, &b), ok.clone()),
                step(signed(&k, &valid, URI, &b), rejected("request_replayed")),
            ],
        ));
        let other_body = body("llama-3.1-8b");
        out.push(vector(
            "replay-same-passport-new-request-accepted",
            "the same passport with a new body and signature is a new request",
            replaying(),
            vec![
                step(signed(&k, &valid, URI, &b), ok.clone()),
                step(
                    signed(&k, &valid, URI, &other_body),
                    accepted(&valid, agent_id, &p_addr, "llama-3.1-8b", None, &other_body),
                ),
            ],
        ));
        // The forged request carries the genuine request's signature over another body;
        // had the store recorded it before verification, the genuine request would be
        // refused as a replay.
        let genuine = signed(&k, &valid, URI, &b);
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
                step(signed(&k, &valid, URI, &b), ok.clone()),
                step(signed(&k, &valid, URI, &b), ok.clone()),
            ],
        ));
    }

    // The principal allowlist (beyond the reference): checked right after the
    // principal signature, before the body.
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
                signed(&k, &valid, URI, b"not json"),
                rejected("principal_not_allowed"),
            )],
        ));
        out.push(vector(
            "accept-principal-allowed",
            "a principal on the allowlist is served",
            allowing(p_addr.clone()),
            vec![step(
                signed(&k, &valid, URI, &b),
                accepted(&valid, agent_id, &p_addr, MODEL, None, &b),
            )],
        ));
    }

    // Revocation (beyond the reference).
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
                    signed(&k, &valid, URI, &b),
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
                signed(&k, &valid, URI, &b),
                accepted(&valid, agent_id, &p_addr, MODEL, None, &b),
            )],
        ));
    }

    parity(&k, &mut out);
    unexpressed_before(&k, &mut out);
    hardening(&k, &mut out);
    requester_binding_parity(&k, &mut out);
    requester_signatures(&k, &mut out);
    out
}

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
fn hardening(k: &Keys, out: &mut Vec<Vector>) {
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
    // another serialization of it (its bytes are not in the cache) is shed, and the
    // cached bytes still pass.
    let mut one_per_second = config();
    one_per_second.cold_verifications_per_second = Some(1);
    let respaced = padded(&valid, 5);
    out.push(vector(
        "verification-busy",
        "with cold_verifications_per_second 1, a second passport whose bytes are not in the envelope cache within the same second gets 503 verification_busy before it is parsed, while the cached passport is still accepted",
        one_per_second,
        vec![
            step(
                signed(k, &valid, URI, &b),
                accepted(&valid, agent_id, &p_addr, MODEL, None, &b),
            ),
            step(signed(k, &respaced, URI, &b), rejected("verification_busy")),
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
fn parity(k: &Keys, out: &mut Vec<Vector>) {
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

/// Vectors for the codes the format could not express before it gained `mode`,
/// `binding.fail`, `request.body_behaviour` and `config.replay_store`.
fn unexpressed_before(k: &Keys, out: &mut Vec<Vector>) {
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
        let other = body("llama-3.1-8b");
        out.push(vector(
            "replay-store-full",
            "a store holding at most one live record accepts one request, then refuses a new one with replay_store_full rather than forget the first",
            c,
            vec![
                step(signed(k, &valid, URI, &b), ok.clone()),
                step(signed(k, &valid, URI, &other), rejected("replay_store_full")),
            ],
        ));
    }
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

/// Requester binding on real chain data (V01 to V03 of issue 21): the grant's message
/// type, grantees without a key, principals without an account.
fn requester_binding_parity(k: &Keys, out: &mut Vec<Vector>) {
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

/// Gonka's native request signature at the gateway (spec section 7, requester
/// signatures): the requester verified, not trusted.
fn requester_signatures(k: &Keys, out: &mut Vec<Vector>) {
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
