//! The page's JSON API as plain functions: request bytes in, a JSON answer or a
//! [`WalletError`] out. The envelope, the ADR-036 `data` and every check come from
//! [`passport_core::mint`] (the code behind `mint --unsigned` and `mint --attach-sig`) and
//! [`passport_core::verifier`]; the page itself never builds or canonicalizes an envelope.

use super::error::WalletError;
use super::WalletConfig;
use passport_core::crypto::{decode_base64, AgentKey, PrincipalKey};
use passport_core::envelope::{beneficiary_is_valid, Envelope};
use passport_core::inspect::{inspect, window_phrase, InspectError};
use passport_core::mint::{attach_signature, PassportSpec};
use passport_core::time::Timestamp;
use passport_core::verifier::{Rejection, Verifier, MAX_AGENT_ID_BYTES, MAX_MODEL_BYTES};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// Most models one passport from the page may list.
pub const MAX_MODELS: usize = 64;

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, WalletError> {
    serde_json::from_slice(body).map_err(|e| WalletError::RequestMalformed(e.to_string()))
}

/// What `GET /api/config` answers: what the page shows and what it offers the wallet.
pub fn config(c: &WalletConfig) -> Value {
    json!({
        "chain_id": c.chain_id,
        "prefix": c.prefix,
        "max_ttl_seconds": c.max_ttl_seconds,
        "version": env!("CARGO_PKG_VERSION"),
        // What `experimentalSuggestChain` needs when the wallet does not know the chain.
        "suggest_chain": {
            "chainId": c.chain_id,
            "chainName": c.chain_id,
            "rpc": c.rpc,
            "rest": c.rest,
            "bip44": { "coinType": 118 },
            "bech32Config": {
                "bech32PrefixAccAddr": c.prefix,
                "bech32PrefixAccPub": format!("{}pub", c.prefix),
                "bech32PrefixValAddr": format!("{}valoper", c.prefix),
                "bech32PrefixValPub": format!("{}valoperpub", c.prefix),
                "bech32PrefixConsAddr": format!("{}valcons", c.prefix),
                "bech32PrefixConsPub": format!("{}valconspub", c.prefix),
            },
            "currencies": [c.currency()],
            "feeCurrencies": [c.currency()],
            "stakeCurrency": c.currency(),
        },
    })
}

/// The form, as the page posts it to `POST /api/unsigned`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PassportForm {
    /// The wallet's `getKey().pubKey`, base64.
    wallet_pubkey: String,
    /// The wallet's `getKey().bech32Address`.
    wallet_address: String,
    agent_key: String,
    agent_id: String,
    /// `true`: no `allowed_models` (every model); otherwise `models` is the list.
    every_model: bool,
    models: Vec<String>,
    lifetime_seconds: u64,
    /// RFC 3339, or empty.
    not_before: String,
    /// Empty for none.
    beneficiary: String,
}

/// The agent key as pasted: base64 of the 32-byte key, or a JSON object holding it as
/// `public_key` (the public part of an agent key file). A whole key file is refused so
/// the principal learns it was handed the agent's secret.
fn agent_key_of(text: &str) -> Result<AgentKey, WalletError> {
    let text = text.trim();
    let b64 = if text.starts_with('{') {
        let v: Value = serde_json::from_str(text).map_err(|_| WalletError::AgentKeyInvalid)?;
        if v.get("secret_key").is_some() {
            return Err(WalletError::AgentSecretPasted);
        }
        v.get("public_key")
            .and_then(Value::as_str)
            .ok_or(WalletError::AgentKeyInvalid)?
            .to_owned()
    } else {
        text.to_owned()
    };
    decode_base64(&b64)
        .and_then(|b| AgentKey::from_bytes(&b))
        .ok_or(WalletError::AgentKeyInvalid)
}

fn models_of(form: &PassportForm) -> Result<Option<Vec<String>>, WalletError> {
    if form.every_model {
        return Ok(None);
    }
    let models: Vec<String> = form
        .models
        .iter()
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    if models.is_empty() {
        return Err(WalletError::ModelsEmpty);
    }
    if models.len() > MAX_MODELS {
        return Err(WalletError::ModelInvalid(format!(
            "at most {MAX_MODELS} models per passport"
        )));
    }
    for (i, m) in models.iter().enumerate() {
        if m.len() > MAX_MODEL_BYTES {
            return Err(WalletError::ModelInvalid(format!(
                "a model name is longer than the {MAX_MODEL_BYTES} bytes a gateway accepts"
            )));
        }
        if models[..i].contains(m) {
            return Err(WalletError::ModelInvalid(format!(
                "the model {m:?} is listed twice"
            )));
        }
    }
    Ok(Some(models))
}

/// The passport the form describes, issued now, checked field by field so that each
/// refusal names its field; [`PassportSpec::unsigned`] still applies every rule.
fn spec_of(
    c: &WalletConfig,
    form: &PassportForm,
    now: Timestamp,
) -> Result<PassportSpec, WalletError> {
    let principal_key = decode_base64(form.wallet_pubkey.trim())
        .and_then(|b| PrincipalKey::from_compressed(&b))
        .ok_or(WalletError::WalletKeyInvalid)?;
    let derived = principal_key
        .address(&c.prefix)
        .map_err(|_| WalletError::WalletKeyInvalid)?;
    if derived != form.wallet_address {
        return Err(WalletError::WalletAddressMismatch {
            wallet: form.wallet_address.clone(),
            derived,
        });
    }
    let agent_key = agent_key_of(&form.agent_key)?;
    let agent_id = form.agent_id.trim().to_owned();
    if agent_id.is_empty() {
        return Err(WalletError::AgentIdEmpty);
    }
    if agent_id.len() > MAX_AGENT_ID_BYTES {
        return Err(WalletError::AgentIdTooLong);
    }
    let allowed_models = models_of(form)?;
    let out_of_range = WalletError::LifetimeOutOfRange {
        max_seconds: c.max_ttl_seconds,
    };
    if form.lifetime_seconds == 0 || form.lifetime_seconds > c.max_ttl_seconds {
        return Err(out_of_range);
    }
    let lifetime = i64::try_from(form.lifetime_seconds).map_err(|_| out_of_range)?;
    let issued_at = Timestamp::from_unix_seconds(now.unix_seconds());
    let expires_at = issued_at.plus_seconds(lifetime);
    let not_before = match form.not_before.trim() {
        "" => None,
        t => {
            let nb = Timestamp::parse(t).map_err(|e| {
                WalletError::NotBeforeInvalid(format!("not before is not a date and time: {e}"))
            })?;
            if nb >= expires_at {
                return Err(WalletError::NotBeforeInvalid(format!(
                    "not before must be before the expiry ({expires_at}), or the passport is never valid"
                )));
            }
            Some(nb)
        }
    };
    let beneficiary = match form.beneficiary.trim() {
        "" => None,
        b if beneficiary_is_valid(b) => Some(b.to_owned()),
        _ => return Err(WalletError::BeneficiaryInvalid),
    };
    Ok(PassportSpec {
        chain_id: c.chain_id.clone(),
        agent_id,
        agent_key,
        principal_key,
        address_prefix: c.prefix.clone(),
        issued_at,
        expires_at,
        not_before,
        allowed_models,
        beneficiary,
    })
}

/// `POST /api/unsigned`: the envelope (with `principal_sig: ""`) and the exact
/// `signArbitrary(chain_id, signer, data)` arguments, from [`PassportSpec::unsigned`].
pub fn unsigned(c: &WalletConfig, body: &[u8], now: Timestamp) -> Result<Value, WalletError> {
    let form: PassportForm = parse(body)?;
    let spec = spec_of(c, &form, now)?;
    let u = spec
        .unsigned(c.max_ttl_seconds)
        .map_err(WalletError::PassportRefused)?;
    // Both are written by serde_json and the JCS writer, which only write UTF-8.
    let envelope = String::from_utf8_lossy(&u.envelope_json).into_owned();
    let data = String::from_utf8_lossy(&u.data).into_owned();
    Ok(json!({
        "envelope": envelope,
        "sign_arbitrary": { "chain_id": c.chain_id, "signer": u.signer, "data": data },
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedForm {
    /// The `envelope` that `/api/unsigned` answered, unchanged.
    envelope: String,
    /// `signArbitrary(...).signature`, base64.
    signature: String,
}

/// `POST /api/attach`: the wallet's signature attached and checked by
/// [`attach_signature`], then judged by the verifier as a gateway on this chain would.
pub fn attach(c: &WalletConfig, verifier: &Verifier, body: &[u8]) -> Result<Value, WalletError> {
    let form: SignedForm = parse(body)?;
    let passport = attach_signature(form.envelope.as_bytes(), &form.signature, &c.prefix)
        .map_err(WalletError::SignatureRefused)?;
    let mut answer = describe(c, verifier, &passport)?;
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("passport".into(), Value::String(passport));
    }
    Ok(answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecodeForm {
    passport: String,
}

/// `POST /api/decode`: what `passport-gate inspect` prints, and the verifier's verdict.
pub fn decode(c: &WalletConfig, verifier: &Verifier, body: &[u8]) -> Result<Value, WalletError> {
    let form: DecodeForm = parse(body)?;
    describe(c, verifier, &form.passport)
}

fn describe(c: &WalletConfig, verifier: &Verifier, passport: &str) -> Result<Value, WalletError> {
    let i = inspect(passport, &c.prefix, verifier.now(), Some(verifier)).map_err(|e| {
        WalletError::PassportUnreadable(match e {
            InspectError::NotJson(e) => format!("this is not a passport: not JSON ({e})"),
            InspectError::NotBase64 => "this is not a passport: not strict standard base64 (paste the whole X-Agent-Passport value)".into(),
        })
    })?;
    let verdict = i.verdict.map(|v| match v {
        Ok(()) => json!({ "ok": true, "message": format!(
            "verifies: a gateway on {} (prefix {}, max lifetime {} s) accepts this passport now",
            c.chain_id, c.prefix, c.max_ttl_seconds) }),
        // Signed and scoped correctly, only early: the page says when it starts to work
        // rather than showing a passport the principal just minted as refused.
        Err(r @ Rejection::EnvelopeNotYetValid) => json!({
            "ok": false, "code": r.code(), "not_yet_valid": true,
            "message": "signed correctly, but not valid yet: a gateway accepts it from its not-before time" }),
        Err(r) => json!({ "ok": false, "code": r.code(), "message": r.message() }),
    });
    let mut answer = json!({ "envelope": i.json, "verdict": verdict });
    let Ok(f) = i.envelope else {
        return Ok(answer);
    };
    let e = &f.envelope;
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("passport_id".into(), json!(hex::encode(e.passport_id())));
        obj.insert("envelope_sha256".into(), json!(hex::encode(e.sha256())));
        obj.insert(
            "derived_address".into(),
            json!({ "address": f.derived_address.address(), "matches": f.address_matches() }),
        );
        obj.insert(
            "window".into(),
            json!({
                "issued_at": e.issued_at.to_rfc3339(),
                "not_before": e.scope.not_before.map(Timestamp::to_rfc3339),
                "expires_at": e.scope.expires_at.to_rfc3339(),
                "now": i.now.to_rfc3339(),
                "state": window_phrase(f.window),
            }),
        );
        obj.insert("next".into(), json!(next_command(c, e)));
    }
    Ok(answer)
}

/// The commands an agent builder runs next with this passport.
fn next_command(c: &WalletConfig, e: &Envelope) -> String {
    let model = e
        .scope
        .allowed_models
        .as_ref()
        .and_then(|m| m.first())
        .map_or("MODEL", String::as_str);
    let body = json!({ "model": model, "messages": [{ "role": "user", "content": "hello" }] });
    format!(
        "passport-gate request \"$GATEWAY/v1/chat/completions\" --agent-key agent.json --passport-file passport.txt --chain-id {} --body {}",
        shell_quote(&c.chain_id),
        shell_quote(&body.to_string()),
    )
}

/// POSIX single quotes: a model name or chain id is shown, never run by the page.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use passport_core::config::Config;
    use passport_core::crypto::{encode_base64, AgentSecret, PrincipalSecret};
    use passport_core::time::FixedClock;
    use std::sync::Arc;

    const NOW: &str = "2026-11-24T07:00:00Z";

    fn page() -> (WalletConfig, Verifier) {
        let c = WalletConfig::new("127.0.0.1:0".parse().unwrap(), "gonka-mainnet", "gonka");
        let verifier = Verifier::with_clock(
            &Config::for_chain("gonka-mainnet"),
            Arc::new(FixedClock::new(Timestamp::parse(NOW).unwrap())),
        )
        .unwrap();
        (c, verifier)
    }

    fn principal() -> PrincipalSecret {
        PrincipalSecret::from_bytes(&[7u8; 32]).unwrap()
    }

    fn form() -> Value {
        let key = principal().public_key();
        json!({
            "wallet_pubkey": key.to_base64(),
            "wallet_address": key.address("gonka").unwrap(),
            "agent_key": AgentSecret::from_bytes(&[8u8; 32]).public_key().to_base64(),
            "agent_id": "urn:aps:agent:t",
            "every_model": false,
            "models": ["qwen/qwen3-32b", ""],
            "lifetime_seconds": 1800,
            "not_before": "",
            "beneficiary": "",
        })
    }

    fn unsigned_of(form: &Value) -> Result<Value, WalletError> {
        let (c, _) = page();
        unsigned(
            &c,
            form.to_string().as_bytes(),
            Timestamp::parse(NOW).unwrap(),
        )
    }

    fn refusal(change: impl FnOnce(&mut Value)) -> WalletError {
        let mut f = form();
        change(&mut f);
        unsigned_of(&f).unwrap_err()
    }

    /// The wallet's half of the flow: signArbitrary(chain_id, signer, data).
    fn wallet_signs(u: &Value) -> String {
        let a = &u["sign_arbitrary"];
        let sig = principal().sign_adr036(
            a["signer"].as_str().unwrap(),
            a["data"].as_str().unwrap().as_bytes(),
        );
        encode_base64(&sig)
    }

    #[test]
    fn the_page_mints_the_passport_that_mint_builds() {
        let (c, verifier) = page();
        let u = unsigned_of(&form()).unwrap();
        let body = json!({ "envelope": u["envelope"], "signature": wallet_signs(&u) });
        let out = attach(&c, &verifier, body.to_string().as_bytes()).unwrap();
        assert_eq!(out["verdict"]["ok"], true, "{out}");
        let t = Timestamp::parse(NOW).unwrap();
        let spec = PassportSpec {
            chain_id: "gonka-mainnet".into(),
            agent_id: "urn:aps:agent:t".into(),
            agent_key: AgentSecret::from_bytes(&[8u8; 32]).public_key(),
            principal_key: principal().public_key(),
            address_prefix: "gonka".into(),
            issued_at: t,
            expires_at: t.plus_seconds(1800),
            not_before: None,
            allowed_models: Some(vec!["qwen/qwen3-32b".into()]),
            beneficiary: None,
        };
        // The same members and signature as `mint` (attach_signature writes them in
        // another order, as `mint --attach-sig` does).
        let as_json =
            |b64: &str| -> Value { serde_json::from_slice(&decode_base64(b64).unwrap()).unwrap() };
        assert_eq!(
            as_json(out["passport"].as_str().unwrap()),
            as_json(&spec.mint(&principal(), 3600).unwrap())
        );
        assert_eq!(out["window"]["expires_at"], "2026-11-24T07:30:00Z");
    }

    #[test]
    fn a_signature_from_another_key_is_refused_next_to_the_wallet() {
        let (c, verifier) = page();
        let u = unsigned_of(&form()).unwrap();
        let a = &u["sign_arbitrary"];
        let other = PrincipalSecret::from_bytes(&[9u8; 32]).unwrap();
        let sig = other.sign_adr036(
            a["signer"].as_str().unwrap(),
            a["data"].as_str().unwrap().as_bytes(),
        );
        let body = json!({ "envelope": u["envelope"], "signature": encode_base64(&sig) });
        let e = attach(&c, &verifier, body.to_string().as_bytes()).unwrap_err();
        assert_eq!((e.code(), e.field()), ("signature_refused", "wallet"));
    }

    #[test]
    fn a_lifetime_over_the_gateway_maximum_is_refused_next_to_the_lifetime() {
        let e = refusal(|f| f["lifetime_seconds"] = json!(3601));
        assert_eq!((e.code(), e.field()), ("lifetime_out_of_range", "lifetime"));
        let e = refusal(|f| f["lifetime_seconds"] = json!(0));
        assert_eq!(e.code(), "lifetime_out_of_range");
        assert!(unsigned_of(&{
            let mut f = form();
            f["lifetime_seconds"] = json!(3600);
            f
        })
        .is_ok());
    }

    #[test]
    fn a_wallet_address_of_another_prefix_is_refused() {
        let e = refusal(|f| {
            f["wallet_address"] = json!(principal().public_key().address("cosmos").unwrap())
        });
        assert_eq!((e.code(), e.field()), ("wallet_address_mismatch", "wallet"));
    }

    #[test]
    fn a_whole_agent_key_file_is_refused_and_its_public_part_accepted() {
        let agent = AgentSecret::from_bytes(&[8u8; 32]);
        let file = passport_core::keyfile::KeyFile::agent(&agent);
        let e = refusal(|f| f["agent_key"] = json!(serde_json::to_string(&file).unwrap()));
        assert_eq!((e.code(), e.field()), ("agent_secret_pasted", "agent_key"));
        let mut f = form();
        f["agent_key"] = json!(format!("{{\"public_key\": \"{}\"}}", file.public_key));
        assert!(unsigned_of(&f).is_ok());
        let e = refusal(|f| f["agent_key"] = json!("AAAA"));
        assert_eq!(e.code(), "agent_key_invalid");
    }

    #[test]
    fn models_are_required_unless_every_model_is_chosen() {
        let e = refusal(|f| f["models"] = json!(["", "  "]));
        assert_eq!((e.code(), e.field()), ("models_empty", "models"));
        let e = refusal(|f| f["models"] = json!(["a", "a"]));
        assert_eq!(e.code(), "model_invalid");
        let e = refusal(|f| {
            f["models"] = json!((0..=MAX_MODELS)
                .map(|i| format!("m{i}"))
                .collect::<Vec<_>>())
        });
        assert_eq!(e.code(), "model_invalid");
        let mut f = form();
        f["every_model"] = json!(true);
        f["models"] = json!([]);
        let u = unsigned_of(&f).unwrap();
        assert!(!u["envelope"].as_str().unwrap().contains("allowed_models"));
    }

    #[test]
    fn not_before_takes_a_browser_timestamp_and_must_precede_expiry() {
        let mut f = form();
        f["not_before"] = json!("2026-11-24T07:10:00.000Z");
        let u = unsigned_of(&f).unwrap();
        assert!(u["envelope"]
            .as_str()
            .unwrap()
            .contains("\"not_before\":\"2026-11-24T07:10:00Z\""));
        let (c, verifier) = page();
        let body = json!({ "envelope": u["envelope"], "signature": wallet_signs(&u) });
        let out = attach(&c, &verifier, body.to_string().as_bytes()).unwrap();
        assert_eq!(out["verdict"]["not_yet_valid"], true, "{out}");
        assert_eq!(out["window"]["state"], "not yet valid");
        let e = refusal(|f| f["not_before"] = json!("2026-11-24T07:30:00Z"));
        assert_eq!((e.code(), e.field()), ("not_before_invalid", "not_before"));
        let e = refusal(|f| f["not_before"] = json!("tomorrow"));
        assert_eq!(e.code(), "not_before_invalid");
    }

    #[test]
    fn an_invalid_beneficiary_or_agent_id_is_refused_next_to_its_field() {
        let e = refusal(|f| f["beneficiary"] = json!("a\u{7}b"));
        assert_eq!(
            (e.code(), e.field()),
            ("beneficiary_invalid", "beneficiary")
        );
        let e = refusal(|f| f["agent_id"] = json!(" "));
        assert_eq!((e.code(), e.field()), ("agent_id_empty", "agent_id"));
        let e = refusal(|f| f["agent_id"] = json!("x".repeat(MAX_AGENT_ID_BYTES + 1)));
        assert_eq!(e.code(), "agent_id_too_long");
    }

    #[test]
    fn an_unknown_or_missing_member_is_a_malformed_request() {
        let e = refusal(|f| f["extra"] = json!(1));
        assert_eq!(e.code(), "request_malformed");
        let e = refusal(|f| {
            f.as_object_mut().unwrap().remove("agent_id");
        });
        assert_eq!(e.code(), "request_malformed");
    }

    #[test]
    fn decoding_says_whether_the_passport_verifies() {
        let (c, verifier) = page();
        let u = unsigned_of(&form()).unwrap();
        let body = json!({ "envelope": u["envelope"], "signature": wallet_signs(&u) });
        let passport = attach(&c, &verifier, body.to_string().as_bytes()).unwrap()["passport"]
            .as_str()
            .unwrap()
            .to_owned();
        let d = decode(
            &c,
            &verifier,
            json!({ "passport": passport }).to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(d["verdict"]["ok"], true);
        assert_eq!(d["derived_address"]["matches"], true);
        assert_eq!(d["window"]["state"], "inside its validity window");
        let e = decode(&c, &verifier, br#"{"passport":"e30="}"#).unwrap();
        assert_eq!(e["verdict"]["code"], "envelope_malformed");
        let e = decode(&c, &verifier, br#"{"passport":"%%"}"#).unwrap_err();
        assert_eq!((e.code(), e.field()), ("passport_unreadable", "passport"));
    }
}
