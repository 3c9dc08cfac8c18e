//! The requests of the peer benchmark (`benches/peers.sh`), written into a directory:
//!
//! - `cached.lua`: a wrk script sending one signed request again and again (the same
//!   77-byte chat body, passport and signature each time);
//! - `distinct.lua` and `distinct.tsv`: a wrk script cycling through `distinct.tsv`, one
//!   line per request (`body<TAB>signature`), every body distinct and 77 bytes long and
//!   every signature distinct, for replay protection (the agent's signature covers
//!   method, path, passport and body, not a time or nonce, so only a distinct body makes
//!   a distinct signature);
//! - `ca.pem`, `cert.pem`, `key.pem`: a CA and a `localhost` certificate signed by it, for
//!   the TLS configurations of both proxies.
//!
//! `cargo run --release --example peers_requests -- DIR COUNT`

use passport_core::crypto::{AgentSecret, PrincipalSecret};
use passport_core::mint::{AgentSigner, PassportSpec};
use passport_core::time::Timestamp;
use std::fmt::Write as _;
use std::path::PathBuf;

const CHAIN: &str = "gonka-mainnet";
const PATH: &str = "/v1/chat/completions";
/// The chat body's size (the issue's figure).
const BODY_BYTES: usize = 77;

/// A 77-byte chat body carrying `n` (zero-padded to fill the size).
fn body(n: u64) -> String {
    let head = r#"{"model":"echo-1","messages":[{"role":"user","content":"say hi "#;
    let tail = r#""}]}"#;
    let digits = BODY_BYTES - head.len() - tail.len();
    format!("{head}{n:0digits$}{tail}")
}

fn lua_string(s: &str) -> String {
    format!("{s:?}")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: peers_requests DIR COUNT"));
    let count: u64 = args
        .next()
        .and_then(|c| c.parse().ok())
        .expect("usage: peers_requests DIR COUNT");
    std::fs::create_dir_all(&dir).expect("the directory can be created");

    let principal = PrincipalSecret::from_bytes(&[0x91; 32]).expect("a valid key");
    let agent = AgentSecret::from_bytes(&[0x92; 32]);
    let now = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds());
    let passport = PassportSpec {
        chain_id: CHAIN.into(),
        agent_id: "urn:aps:agent:peers".into(),
        agent_key: agent.public_key(),
        principal_key: principal.public_key(),
        address_prefix: "gonka".into(),
        issued_at: now,
        expires_at: now.plus_seconds(3600),
        not_before: None,
        allowed_models: Some(vec!["echo-1".into()]),
        beneficiary: None,
    }
    .mint(&principal, 3600)
    .expect("the passport mints");
    let signer = AgentSigner::new(agent, &passport, CHAIN).expect("the signer builds");

    let cached_body = body(0);
    assert_eq!(cached_body.len(), BODY_BYTES);
    let cached_sig = signer
        .sign("POST", PATH, cached_body.as_bytes())
        .expect("signs");
    let headers = format!(
        "{{[\"Content-Type\"] = \"application/json\", [\"X-Agent-Passport\"] = {}, [\"X-Agent-Sig\"] = {}}}",
        lua_string(&passport),
        lua_string(&cached_sig)
    );
    std::fs::write(
        dir.join("cached.lua"),
        format!(
            "wrk.method = \"POST\"\nwrk.path = \"{PATH}\"\nwrk.body = {}\nwrk.headers = {headers}\n",
            lua_string(&cached_body)
        ),
    )
    .expect("cached.lua is written");

    let mut tsv = String::with_capacity(count as usize * 180);
    for n in 1..=count {
        let b = body(n);
        assert_eq!(b.len(), BODY_BYTES);
        let sig = signer.sign("POST", PATH, b.as_bytes()).expect("signs");
        let _ = writeln!(tsv, "{b}\t{sig}");
    }
    std::fs::write(dir.join("distinct.tsv"), tsv).expect("distinct.tsv is written");
    // Each line is read once at start; a request takes the next line (wrapping, which
    // would be a replay: the bench counts non-2xx answers and says so).
    std::fs::write(
        dir.join("distinct.lua"),
        format!(
            r#"local bodies, sigs, n, i = {{}}, {{}}, 0, 0
for line in io.lines({tsv_path}) do
  local b, s = line:match("^(.-)\t(.*)$")
  n = n + 1
  bodies[n], sigs[n] = b, s
end
local passport = {passport}
request = function()
  i = i % n + 1
  return wrk.format("POST", "{PATH}", {{["Content-Type"] = "application/json", ["X-Agent-Passport"] = passport, ["X-Agent-Sig"] = sigs[i]}}, bodies[i])
end
"#,
            tsv_path = lua_string(&dir.join("distinct.tsv").display().to_string()),
            passport = lua_string(&passport),
        ),
    )
    .expect("distinct.lua is written");

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (nginx) takes a leaf whose issuer is its own subject for
    // a self-signed certificate.
    ca.distinguished_name
        .push(DnType::CommonName, "passport-gate peers bench CA");
    let ca_key = KeyPair::generate().expect("a CA key");
    let ca = ca.self_signed(&ca_key).expect("the CA signs itself");
    let key = KeyPair::generate().expect("a key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf parameters");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf
        .signed_by(&key, &ca, &ca_key)
        .expect("the CA signs the leaf");
    for (name, text) in [
        ("ca.pem", ca.pem()),
        ("cert.pem", leaf.pem()),
        ("key.pem", key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), text).expect("the certificates are written");
    }
}
