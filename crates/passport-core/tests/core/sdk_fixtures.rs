//! The SDK fixtures (conformance/sdk-fixtures.json): inputs and expected outputs that the
//! Python (pytest) and Node (node:test) bindings check too, so that all three produce the
//! same keys, passports and signatures byte for byte.
//!
//! The expected outputs are computed here from the inputs with the library; the file must
//! equal that computation byte for byte. After a deliberate change, rewrite it with
//! `PASSPORT_GATE_WRITE_SDK_FIXTURES=1 cargo test -p passport-core --test core sdk_fixtures`.

use passport_core::crypto::{decode_base64, encode_base64, AgentSecret, PrincipalSecret};
use passport_core::keyfile::{key_file_text, parse_agent_secret, parse_principal_secret, KeyFile};
use passport_core::mint::{
    attach_signature, inspect_json, sign_request, verify_json, MintOptions, VerifyOptions,
};
use passport_core::time::Timestamp;
use serde_json::{json, Value};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../conformance/sdk-fixtures.json"
);

fn agent() -> AgentSecret {
    parse_agent_secret(&"a1".repeat(32), "fixture").unwrap()
}

fn principal() -> PrincipalSecret {
    parse_principal_secret(&"b2".repeat(32), "fixture").unwrap()
}

fn mint_inputs() -> Vec<(&'static str, Value)> {
    let agent_pubkey = agent().public_key().to_base64();
    vec![
        (
            "every_model",
            json!({"chain_id": "gonka-mainnet", "agent_id": "urn:aps:agent:fixture",
                   "agent_pubkey": agent_pubkey, "issued_at": "2026-05-21T12:00:00Z",
                   "ttl_seconds": 3600}),
        ),
        (
            "one_model_with_beneficiary",
            json!({"chain_id": "gonka-mainnet", "agent_id": "urn:aps:agent:fixture",
                   "agent_pubkey": agent_pubkey, "issued_at": "2026-05-21T12:00:00Z",
                   "expires_at": "2026-05-21T12:30:00Z", "not_before": "2026-05-21T12:00:05Z",
                   "models": ["m1"], "beneficiary": "gonka1beneficiary ünïcode"}),
        ),
    ]
}

fn refusal_inputs() -> Vec<(&'static str, Value)> {
    let agent_pubkey = agent().public_key().to_base64();
    let base = json!({"chain_id": "gonka-mainnet", "agent_id": "urn:aps:agent:fixture",
                      "agent_pubkey": agent_pubkey, "issued_at": "2026-05-21T12:00:00Z"});
    let with = |extra: Value| {
        let mut v = base.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    vec![
        ("lifetime_over_max_ttl", with(json!({"ttl_seconds": 3601}))),
        (
            "expiry_not_after_issue",
            with(json!({"expires_at": "2026-05-21T12:00:00Z"})),
        ),
        ("no_expiry", with(json!({}))),
        (
            "control_character_in_beneficiary",
            with(json!({"ttl_seconds": 60, "beneficiary": "a\nb"})),
        ),
        (
            "empty_chain_id",
            with(json!({"ttl_seconds": 60, "chain_id": ""})),
        ),
    ]
}

/// (name, passport index, method, uri, body)
fn request_inputs() -> Vec<(&'static str, usize, &'static str, &'static str, Vec<u8>)> {
    let chat = br#"{"model":"m1","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    let other_model = br#"{"model":"m2","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    let four_kib: Vec<u8> = (0..4096u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i % 36) as usize])
        .collect();
    vec![
        (
            "chat_completion",
            0,
            "POST",
            "/v1/chat/completions",
            chat.clone(),
        ),
        (
            "query_and_empty_body",
            0,
            "GET",
            "/v1/models?limit=2&after=a%20b",
            Vec::new(),
        ),
        ("four_kib_body", 0, "POST", "/v1/embeddings", four_kib),
        (
            "binary_body",
            0,
            "PUT",
            "/v1/files/x",
            (0..=255u8).collect(),
        ),
        ("allowed_model", 1, "POST", "/v1/chat/completions", chat),
        (
            "model_not_allowed",
            1,
            "POST",
            "/v1/chat/completions",
            other_model,
        ),
    ]
}

/// (name, request index, now)
fn verify_inputs() -> Vec<(&'static str, usize, &'static str)> {
    vec![
        ("accepted", 0, "2026-05-21T12:10:00Z"),
        ("accepted_with_scope", 4, "2026-05-21T12:10:00Z"),
        ("model_not_allowed", 5, "2026-05-21T12:10:00Z"),
        ("expired", 0, "2026-05-21T14:00:00Z"),
        ("not_yet_valid", 4, "2026-05-21T12:00:01Z"),
    ]
}

fn fixtures() -> Value {
    let agent = agent();
    let principal = principal();
    let mut passports = Vec::new();
    let mint: Vec<Value> = mint_inputs()
        .into_iter()
        .map(|(name, options)| {
            let passport = MintOptions::from_json(&options.to_string())
                .unwrap()
                .mint(&principal)
                .unwrap();
            passports.push(passport.clone());
            let inspect = inspect_json(
                &passport,
                "gonka",
                Timestamp::parse("2026-05-21T12:10:00Z").unwrap(),
            )
            .unwrap();
            json!({"name": name, "options": options, "passport": passport,
                   "passport_id": inspect["passport_id"], "envelope": inspect["envelope"]})
        })
        .collect();
    let refusals: Vec<Value> = refusal_inputs()
        .into_iter()
        .map(|(name, options)| {
            let error = MintOptions::from_json(&options.to_string())
                .unwrap()
                .mint(&principal)
                .unwrap_err()
                .to_string();
            json!({"name": name, "options": options, "error": error})
        })
        .collect();
    let mut unsigned_options = mint_inputs()[1].1.clone();
    unsigned_options["principal_pubkey"] = json!(principal.public_key().to_base64());
    let unsigned = MintOptions::from_json(&unsigned_options.to_string())
        .unwrap()
        .unsigned()
        .unwrap();
    let data = unsigned["sign_arbitrary"]["data"].as_str().unwrap();
    let signer = unsigned["sign_arbitrary"]["signer"].as_str().unwrap();
    let wallet_signature = encode_base64(&principal.sign_adr036(signer, data.as_bytes()));
    let attached = attach_signature(
        unsigned["envelope"].to_string().as_bytes(),
        &wallet_signature,
        "gonka",
    )
    .unwrap();
    let requests: Vec<(&str, usize, &str, &str, Vec<u8>)> = request_inputs();
    let request_values: Vec<Value> = requests
        .iter()
        .map(|(name, p, method, uri, body)| {
            let sig =
                sign_request(&agent, &passports[*p], "gonka-mainnet", method, uri, body).unwrap();
            json!({"name": name, "passport": p, "chain_id": "gonka-mainnet", "method": method,
                   "uri": uri, "body_base64": encode_base64(body), "sig": sig})
        })
        .collect();
    let verify: Vec<Value> = verify_inputs()
        .into_iter()
        .map(|(name, r, now)| {
            let (_, p, method, uri, body) = &requests[r];
            let options = VerifyOptions {
                chain_id: "gonka-mainnet".into(),
                now: Some(now.into()),
                max_ttl_seconds: 3600,
                prefix: "gonka".into(),
                method: method.to_string(),
                uri: uri.to_string(),
                passport: passports[*p].clone(),
                sig: request_values[r]["sig"].as_str().unwrap().into(),
            };
            json!({"name": name, "request": r, "now": now, "verdict": verify_json(&options, body).unwrap()})
        })
        .collect();
    json!({
        "about": "Inputs and expected outputs checked byte for byte by crates/passport-core/tests/core/sdk_fixtures.rs, bindings/python/tests/test_fixtures.py and bindings/node/test/fixtures.test.mjs. Regenerate: PASSPORT_GATE_WRITE_SDK_FIXTURES=1 cargo test -p passport-core --test core sdk_fixtures",
        "agent_key": {
            "secret_hex": "a1".repeat(32),
            "public_key": agent.public_key().to_base64(),
            "key_file": key_file_text(&KeyFile::agent(&agent)).unwrap(),
        },
        "principal_key": {
            "secret_hex": "b2".repeat(32),
            "public_key": principal.public_key().to_base64(),
            "address": principal.public_key().address("gonka").unwrap(),
            "key_file": key_file_text(&KeyFile::principal(&principal, "gonka").unwrap()).unwrap(),
        },
        "mint": mint,
        "refusals": refusals,
        "unsigned": {"options": unsigned_options, "result": unsigned,
                     "wallet_signature": wallet_signature, "passport": attached},
        "requests": request_values,
        "verify": verify,
        // Not computed here: the native fixtures' expectations come from outside our code
        // (the published fixtures, python-ecdsa and coincurve; each entry says which), so
        // they are carried over as they are on disk. passport-core's gonka tests check
        // that the library reproduces every one of them.
        "gonka_native": on_disk_gonka_native(),
    })
}

/// The `gonka_native` fixtures as they are in the file.
fn on_disk_gonka_native() -> Value {
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    on_disk["gonka_native"].clone()
}

#[test]
fn sdk_fixtures_equal_what_the_library_computes() {
    let text = serde_json::to_string_pretty(&fixtures()).unwrap() + "\n";
    if std::env::var_os("PASSPORT_GATE_WRITE_SDK_FIXTURES").is_some() {
        std::fs::write(PATH, &text).unwrap();
    }
    let on_disk = std::fs::read_to_string(PATH).unwrap();
    assert!(on_disk == text, "conformance/sdk-fixtures.json differs from the library's output; if the change is deliberate, regenerate it (see the module doc)");
}

#[test]
fn the_wallet_flow_fixture_gives_the_minted_passport() {
    // ADR-036 signatures are deterministic (RFC 6979), so a wallet's signature attached to
    // the unsigned envelope gives the passport `mint` makes from the same options: the
    // same JCS form (the key order of the JSON may differ), hence the same passport id.
    let f = fixtures();
    let now = Timestamp::parse("2026-05-21T12:10:00Z").unwrap();
    let id =
        |p: &Value| inspect_json(p.as_str().unwrap(), "gonka", now).unwrap()["passport_id"].clone();
    assert_eq!(
        id(&f["unsigned"]["passport"]),
        id(&f["mint"][1]["passport"])
    );
    assert!(decode_base64(f["unsigned"]["passport"].as_str().unwrap()).is_some());
}
