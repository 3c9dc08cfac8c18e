//! `passport-gate mint`: a passport, an unsigned envelope, or a wallet signature attached.

use crate::cli::input::{agent_secret_file, principal_secret_file};
use crate::cli::output::{say, Failure};
use clap::Args;
use passport_core::crypto::{decode_base64, AgentKey, PrincipalKey};
use passport_core::mint::{attach_signature, PassportSpec};
use passport_core::time::Timestamp;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct MintArgs {
    /// The principal's key file (or a file holding the 64-hex-digit secret).
    #[arg(long, required_unless_present_any = ["unsigned", "attach_sig"])]
    principal_key: Option<PathBuf>,
    /// The principal's public key, base64 (with --unsigned, instead of --principal-key).
    #[arg(long, conflicts_with = "principal_key")]
    principal_pubkey: Option<String>,
    /// The agent's key file.
    #[arg(long, conflicts_with = "agent_pubkey")]
    agent_key: Option<PathBuf>,
    /// The agent's public key, base64.
    #[arg(long)]
    agent_pubkey: Option<String>,
    /// The agent id, e.g. urn:aps:agent:<id>.
    #[arg(long)]
    agent_id: Option<String>,
    /// The chain the passport is valid on.
    #[arg(long)]
    chain_id: Option<String>,
    /// Lifetime from issue: 90s, 30m, 1h, or plain seconds.
    #[arg(long, conflicts_with = "expires_at")]
    ttl: Option<String>,
    /// Absolute expiry, RFC 3339.
    #[arg(long)]
    expires_at: Option<String>,
    /// Start of validity, RFC 3339.
    #[arg(long)]
    not_before: Option<String>,
    /// Issue time, RFC 3339 (default: now).
    #[arg(long)]
    issued_at: Option<String>,
    /// An allowed model (repeat for more). Without any, every model is allowed.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Allow no model at all (allowed_models: []).
    #[arg(long, conflicts_with = "models")]
    no_models: bool,
    /// Who the work is for.
    #[arg(long)]
    beneficiary: Option<String>,
    /// Bech32 prefix of the principal address.
    #[arg(long, default_value = "gonka")]
    prefix: String,
    /// The largest lifetime the target gateway accepts.
    #[arg(long, default_value_t = 3600)]
    max_ttl_seconds: u64,
    /// Print the envelope and the ADR-036 data to sign in a wallet, instead of signing.
    #[arg(long, conflicts_with = "attach_sig")]
    unsigned: bool,
    /// Complete an unsigned envelope (--envelope FILE) with a wallet's signature.
    #[arg(long, requires = "envelope")]
    attach_sig: Option<String>,
    /// The unsigned envelope file printed by --unsigned.
    #[arg(long)]
    envelope: Option<PathBuf>,
}

pub(crate) fn parse_time(name: &str, s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s).map_err(|e| format!("--{name}: {e}"))
}

pub(crate) fn parse_duration_seconds(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("--ttl {s:?}: expected a number with an optional unit s, m or h"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("--ttl {s:?}: the unit must be s, m or h")),
    };
    n.checked_mul(factor)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("--ttl {s:?}: must be positive and not absurdly large"))
}

pub(crate) fn agent_public(a: &MintArgs) -> Result<AgentKey, String> {
    match (&a.agent_key, &a.agent_pubkey) {
        (Some(p), _) => Ok(agent_secret_file(p)?.public_key()),
        (None, Some(b64)) => decode_base64(b64)
            .and_then(|b| AgentKey::from_bytes(&b))
            .ok_or_else(|| "--agent-pubkey is not base64 of a valid Ed25519 key".into()),
        (None, None) => Err("give --agent-key or --agent-pubkey".into()),
    }
}

pub fn run(a: &MintArgs) -> Result<u8, Failure> {
    if let Some(sig) = &a.attach_sig {
        let path = a
            .envelope
            .as_ref()
            .ok_or("--attach-sig needs --envelope FILE".to_string())?;
        let json =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let header = attach_signature(&json, sig, &a.prefix).map_err(|e| e.to_string())?;
        say!("{header}");
        return Ok(0);
    }
    let need =
        |v: &Option<String>, flag: &str| v.clone().ok_or_else(|| format!("{flag} is required"));
    let (principal_secret, principal_key) = match (&a.principal_key, &a.principal_pubkey) {
        (Some(p), _) => {
            let s = principal_secret_file(p)?;
            let k = s.public_key();
            (Some(s), k)
        }
        (None, Some(b64)) => (
            None,
            decode_base64(b64)
                .and_then(|b| PrincipalKey::from_compressed(&b))
                .ok_or(
                    "--principal-pubkey is not base64 of a compressed secp256k1 key".to_string(),
                )?,
        ),
        (None, None) => {
            return Err(
                "give --principal-key (or --principal-pubkey with --unsigned)"
                    .to_string()
                    .into(),
            )
        }
    };
    let issued_at = match &a.issued_at {
        Some(t) => parse_time("issued-at", t)?,
        None => Timestamp::from_unix_seconds(Timestamp::now().unix_seconds()),
    };
    let expires_at = match (&a.ttl, &a.expires_at) {
        (Some(ttl), _) => issued_at.plus_seconds(parse_duration_seconds(ttl)?),
        (None, Some(t)) => parse_time("expires-at", t)?,
        (None, None) => return Err("give --ttl or --expires-at".to_string().into()),
    };
    let spec = PassportSpec {
        chain_id: need(&a.chain_id, "--chain-id")?,
        agent_id: need(&a.agent_id, "--agent-id")?,
        agent_key: agent_public(a)?,
        principal_key,
        address_prefix: a.prefix.clone(),
        issued_at,
        expires_at,
        not_before: a
            .not_before
            .as_deref()
            .map(|t| parse_time("not-before", t))
            .transpose()?,
        allowed_models: if a.no_models {
            Some(Vec::new())
        } else if a.models.is_empty() {
            None
        } else {
            Some(a.models.clone())
        },
        beneficiary: a.beneficiary.clone(),
    };
    if a.unsigned {
        let u = spec
            .unsigned(a.max_ttl_seconds)
            .map_err(|e| e.to_string())?;
        let mut out = u.to_json().map_err(|e| e.to_string())?;
        out["next"] = "save .envelope to a file, have the wallet signArbitrary(chain_id, signer, data), then run: passport-gate mint --attach-sig <signature> --envelope <file>".into();
        say!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
        return Ok(0);
    }
    let secret =
        principal_secret.ok_or("minting needs --principal-key (or use --unsigned)".to_string())?;
    say!(
        "{}",
        spec.mint(&secret, a.max_ttl_seconds)
            .map_err(|e| e.to_string())?
    );
    Ok(0)
}
