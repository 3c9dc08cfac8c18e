//! A signed passport for tests and benches: fixed keys, issued 2026-05-21T11:59:00Z (or
//! now, with `live`), valid 30 minutes, on gonka-mainnet. Core only (no HTTP, no async
//! runtime): passport-gate's tests/support adds an HTTP client on top, and
//! passport-gate-cli's the real binary; both include this file with `#[path]`.
#![allow(dead_code)]

use passport_core::crypto::{AgentSecret, PrincipalSecret};
use passport_core::mint::{sign_request, PassportSpec};
use passport_core::time::Timestamp;

pub const CHAIN: &str = "gonka-mainnet";

pub struct Fixture {
    pub passport: String,
    pub agent: AgentSecret,
    pub principal_address: String,
}

pub fn fixture(agent_id: &str, models: Option<Vec<String>>, beneficiary: Option<&str>) -> Fixture {
    fixture_at(
        agent_id,
        models,
        beneficiary,
        Timestamp::parse("2026-05-21T11:59:00Z").unwrap(),
    )
}

/// The same passport, issued now (for tests that run the real clock).
pub fn live(agent_id: &str) -> Fixture {
    fixture_at(
        agent_id,
        None,
        None,
        Timestamp::from_unix_seconds(Timestamp::now().unix_seconds()),
    )
}

/// The fixture passport issued at `t`, valid 30 minutes.
pub fn fixture_at(
    agent_id: &str,
    models: Option<Vec<String>>,
    beneficiary: Option<&str>,
    t: Timestamp,
) -> Fixture {
    fixture_of(0x61, agent_id, models, beneficiary, t)
}

/// A live passport (issued now, valid 30 minutes, every model) of the principal whose
/// secret is 32 bytes of `principal`.
pub fn live_of(principal: u8, agent_id: &str) -> Fixture {
    fixture_of(
        principal,
        agent_id,
        None,
        None,
        Timestamp::from_unix_seconds(Timestamp::now().unix_seconds()),
    )
}

/// The fixture passport of the principal whose secret is 32 bytes of `principal`.
pub fn fixture_of(
    principal: u8,
    agent_id: &str,
    models: Option<Vec<String>>,
    beneficiary: Option<&str>,
    t: Timestamp,
) -> Fixture {
    let principal = PrincipalSecret::from_bytes(&[principal; 32]).unwrap();
    let agent = AgentSecret::from_bytes(&[0x62; 32]);
    let spec = PassportSpec {
        chain_id: CHAIN.into(),
        agent_id: agent_id.into(),
        agent_key: agent.public_key(),
        principal_key: principal.public_key(),
        address_prefix: "gonka".into(),
        issued_at: t,
        expires_at: t.plus_seconds(1800),
        not_before: None,
        allowed_models: models,
        beneficiary: beneficiary.map(str::to_owned),
    };
    Fixture {
        passport: spec.mint(&principal, 3600).unwrap(),
        agent,
        principal_address: principal.public_key().address("gonka").unwrap(),
    }
}

impl Fixture {
    /// The `X-Agent-Sig` value for a POST of `body` to `uri`.
    pub fn sign(&self, uri: &str, body: &[u8]) -> String {
        sign_request(&self.agent, &self.passport, CHAIN, "POST", uri, body).unwrap()
    }

    /// Both passport headers for a POST of `body` to `uri`.
    pub fn headers(&self, uri: &str, body: &[u8]) -> Vec<(String, String)> {
        vec![
            ("x-agent-passport".into(), self.passport.clone()),
            ("x-agent-sig".into(), self.sign(uri, body)),
        ]
    }
}
