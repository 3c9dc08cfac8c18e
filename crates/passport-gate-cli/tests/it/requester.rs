//! The verified requester (Gonka native signature, `[binding] requester_signature =
//! "gonka"`), over real HTTP against the real binary: a stand-in chain node answering
//! the account and x/authz grant queries as the chain does, the test upstream, and
//! requests signed with `passport_core::gonka::NativeSigner` plus a passport.

use crate::support;

use passport_core::crypto::PrincipalSecret;
use passport_core::gonka::NativeSigner;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use support::serve::{config, refused_config, send, start, upstream, Gateway};

const URI: &str = "/v1/completions";

fn secret(b: u8) -> PrincipalSecret {
    PrincipalSecret::from_bytes(&[b; 32]).unwrap()
}

fn address(b: u8) -> String {
    secret(b).public_key().address("gonka").unwrap()
}

/// What the stand-in chain node knows.
#[derive(Clone, Default)]
struct Chain {
    /// Accounts with a secp256k1 key: address → base64 key.
    keys: HashMap<String, String>,
    /// Accounts without a key (they never signed a transaction).
    keyless: HashSet<String>,
    /// `(granter, grantee)` pairs with an authorization.
    grants: HashSet<(String, String)>,
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// A chain node's REST API, as much of it as the gateway asks:
/// `/cosmos/auth/v1beta1/accounts/{address}` (an account, one without a key, or 404 with
/// code 5), `/cosmos/authz/v1beta1/grants` (the grants of a granter to a grantee, an
/// empty list when none) and the node-info readiness probe.
async fn chain_node(chain: Chain) -> SocketAddr {
    let app = axum::Router::new().fallback(axum::routing::any(move |uri: http::Uri| {
        let chain = chain.clone();
        async move {
            let path = uri.path();
            let ok = |body: String| {
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .unwrap()
            };
            if let Some(addr) = path.strip_prefix("/cosmos/auth/v1beta1/accounts/") {
                if let Some(key) = chain.keys.get(addr) {
                    return ok(format!(
                        r#"{{"account":{{"@type":"/cosmos.auth.v1beta1.BaseAccount","address":"{addr}","pub_key":{{"@type":"/cosmos.crypto.secp256k1.PubKey","key":"{key}"}},"account_number":"7","sequence":"1"}}}}"#
                    ));
                }
                if chain.keyless.contains(addr) {
                    return ok(format!(
                        r#"{{"account":{{"@type":"/cosmos.auth.v1beta1.BaseAccount","address":"{addr}","pub_key":null,"account_number":"8","sequence":"0"}}}}"#
                    ));
                }
                return http::Response::builder()
                    .status(404)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(format!(
                        r#"{{"code":5,"message":"account {addr} not found","details":[]}}"#
                    )))
                    .unwrap();
            }
            if path == "/cosmos/authz/v1beta1/grants" {
                let query = uri.query().unwrap_or("");
                let granter = query_param(query, "granter").unwrap_or("").to_owned();
                let grantee = query_param(query, "grantee").unwrap_or("").to_owned();
                let grants = if chain.grants.contains(&(granter, grantee)) {
                    r#"[{"authorization":{"@type":"/cosmos.authz.v1beta1.GenericAuthorization","msg":"/inference.inference.MsgStartInference"},"expiration":null}]"#
                } else {
                    "[]"
                };
                return ok(format!(
                    r#"{{"grants":{grants},"pagination":{{"next_key":null,"total":"0"}}}}"#
                ));
            }
            ok("{}".to_owned())
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn body(n: usize) -> Vec<u8> {
    format!(r#"{{"model":"qwen/qwen3-32b","prompt":"requester {n}"}}"#).into_bytes()
}

fn now_ns() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

/// POSTs `body` with the passport headers of `passport` and the native `native`
/// headers; returns the status and the problem code.
async fn post(
    gw: &Gateway,
    passport: &support::Fixture,
    native: &[(&'static str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut headers: Vec<(String, String)> = passport.headers(URI, body);
    headers.extend(native.iter().map(|(n, v)| ((*n).to_owned(), v.clone())));
    let all: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let resp = send(gw.listen, "POST", URI, &all, body).await;
    let status = resp.status().as_u16();
    let text = support::serve::text(resp).await;
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_signature_binds_the_requester_and_every_failure_has_its_code() {
    // Principal 0x61 (the fixture passport) granted requester 0x71; 0x72 has a key but
    // no grant; principal 0x63 signs for itself but its account has no key.
    let transfer = address(0x74);
    let requester = NativeSigner::new(&secret(0x71), "gonka").unwrap();
    let stranger = NativeSigner::new(&secret(0x72), "gonka").unwrap();
    let keyless = NativeSigner::new(&secret(0x63), "gonka").unwrap();
    let mut chain = Chain::default();
    for b in [0x61, 0x71, 0x72] {
        chain
            .keys
            .insert(address(b), secret(b).public_key().to_base64());
    }
    chain.keyless.insert(address(0x63));
    chain.grants.insert((address(0x61), address(0x71)));
    let node = chain_node(chain).await;
    let up = upstream().await;
    let gw = start(
        "requester-gonka",
        &config(
            up.addr,
            &format!(
                "[binding]\nchain_node = \"http://{node}\"\nrequester_signature = \"gonka\"\ntransfer_address = \"{transfer}\"\n"
            ),
        ),
    );
    let passport = support::live_of(0x61, "urn:aps:agent:requester");

    // A good request: accepted, and the native headers reach the upstream unchanged.
    let b = body(1);
    let signed = requester.sign(&b, now_ns(), &transfer);
    let native = signed.pairs();
    assert_eq!(
        post(&gw, &passport, &native, &b).await,
        (200, String::new())
    );
    let seen = up.seen();
    let last = seen.last().expect("the upstream saw the request");
    for (name, value) in &native {
        assert_eq!(
            last.headers.get(*name).and_then(|v| v.to_str().ok()),
            Some(value.as_str()),
            "{name}"
        );
    }
    assert_eq!(
        last.headers
            .get("x-aps-requester-address")
            .and_then(|v| v.to_str().ok()),
        Some(requester.address())
    );

    // The same Authorization again: replayed.
    let (status, code) = post(&gw, &passport, &native, &b).await;
    assert_eq!((status, code.as_str()), (401, "requester_sig_replayed"));

    // A body other than the one signed (the passport signs the body sent).
    let signed = requester.sign(&body(2), now_ns(), &transfer);
    let (status, code) = post(&gw, &passport, &signed.pairs(), &body(3)).await;
    assert_eq!(code, "requester_sig_invalid", "{status}");
    assert_ne!(status, 200);

    // Signed a minute ago: outside the default 10 s window.
    let b = body(4);
    let stale = requester.sign(&b, now_ns() - 60_000_000_000, &transfer);
    let (status, code) = post(&gw, &passport, &stale.pairs(), &b).await;
    assert_eq!(code, "requester_timestamp_out_of_window", "{status}");

    // A requester the principal granted nothing.
    let b = body(5);
    let other = stranger.sign(&b, now_ns(), &transfer);
    let (status, code) = post(&gw, &passport, &other.pairs(), &b).await;
    assert_eq!((status, code.as_str()), (403, "principal_mismatch"));

    // A principal acting as its own requester, whose account has no public key.
    let own = support::live_of(0x63, "urn:aps:agent:keyless");
    let b = body(6);
    let signed = keyless.sign(&b, now_ns(), &transfer);
    let (status, code) = post(&gw, &own, &signed.pairs(), &b).await;
    assert_eq!(code, "requester_pubkey_unknown", "{status}");

    // Every refusal stayed at the gateway.
    assert_eq!(up.seen().len(), 1);
}

#[test]
fn a_requester_signature_without_a_chain_node_is_refused_naming_the_key() {
    let toml = config(
        "127.0.0.1:9".parse().unwrap(),
        &format!(
            "[binding]\nrequester_signature = \"gonka\"\ntransfer_address = \"{}\"\n",
            address(0x74)
        ),
    );
    let (code, stderr) = refused_config("requester-no-node", &toml);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("binding.requester_signature: \"gonka\" needs binding.chain_node"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was started"), "{stderr}");
}

#[test]
fn the_requester_signature_keys_are_checked_each_naming_its_key() {
    let toml = config(
        "127.0.0.1:9".parse().unwrap(),
        "[binding]\nchain_node = \"http://127.0.0.1:9\"\nrequester_signature = \"gonka\"\nrequester_timestamp_max_age_ms = 3600001\nrequester_signatures_seen_max = 0\ngrant_msg_type_url = \"MsgStartInference\"\n",
    );
    let (code, stderr) = refused_config("requester-keys", &toml);
    assert_eq!(code, Some(2), "{stderr}");
    for key in [
        "binding.transfer_address: must be set",
        "binding.requester_timestamp_max_age_ms: 3600001 is out of range",
        "binding.requester_signatures_seen_max: 0 is out of range",
        "binding.grant_msg_type_url:",
    ] {
        assert!(stderr.contains(key), "{key} missing from {stderr}");
    }
    let toml = config(
        "127.0.0.1:9".parse().unwrap(),
        "[binding]\nchain_node = \"http://127.0.0.1:9\"\nrequester_signature = \"gonka\"\ntransfer_address = \"cosmos1xyz\"\n",
    );
    let (code, stderr) = refused_config("requester-transfer", &toml);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "binding.transfer_address: \"cosmos1xyz\" is not a canonical account address"
        ),
        "{stderr}"
    );
}
