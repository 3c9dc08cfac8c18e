//! `passport-gate revoke`: add an entry to the revocation file or Redis set.

use crate::cli::output::{runtime, Failure};
use crate::terminal::escape_controls;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
#[group(id = "target", required = true, multiple = false)]
pub(crate) struct RevokeTarget {
    /// Revoke every passport naming this agent id (1 to 256 bytes, any characters).
    #[arg(long)]
    agent_id: Option<String>,
    /// Revoke every passport naming this agent key (strict standard base64).
    #[arg(long)]
    agent_pubkey: Option<String>,
    /// Revoke every passport issued by this principal (bech32 account address).
    #[arg(long)]
    principal: Option<String>,
    /// Revoke one passport: its X-Agent-Passport value (the id is computed).
    #[arg(long)]
    passport: Option<String>,
    /// Revoke one passport: a file holding its X-Agent-Passport value.
    #[arg(long)]
    passport_file: Option<PathBuf>,
    /// Revoke one passport by its passport_id (64 hex digits: SHA-256 of its JCS form).
    #[arg(long, alias = "envelope")]
    passport_id: Option<String>,
}

#[derive(Args)]
#[group(id = "store", required = true, multiple = true)]
pub(crate) struct RevokeStore {
    /// The revocation file the gateways watch.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The Redis server the gateways poll, redis://host:port.
    #[arg(long)]
    redis: Option<String>,
}

#[derive(Args)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    target: RevokeTarget,
    #[command(flatten)]
    store: RevokeStore,
    /// The Redis key prefix the gateways use (the set is <prefix>revoked).
    #[arg(long, default_value = "aps:")]
    key_prefix: String,
    /// Bech32 prefix of the gateways' principal addresses.
    #[arg(long, default_value = "gonka")]
    prefix: String,
}

pub fn run(a: &RevokeArgs) -> Result<u8, Failure> {
    use passport_gate::revocation::{append_to_file, Entry};
    let t = &a.target;
    let refused = |e: passport_gate::revocation::EntryError| {
        format!("refused, this entry could never match: {e}")
    };
    let entry = if let Some(v) = &t.agent_id {
        Entry::agent_id(v).map_err(refused)?
    } else if let Some(v) = &t.agent_pubkey {
        Entry::agent_key(v).map_err(refused)?
    } else if let Some(v) = &t.principal {
        Entry::principal(v).map_err(refused)?
    } else if let Some(v) = &t.passport {
        Entry::passport(v).map_err(|e| e.to_string())?
    } else if let Some(p) = &t.passport_file {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        Entry::passport(&text).map_err(|e| e.to_string())?
    } else if let Some(v) = &t.passport_id {
        Entry::passport_id(v).map_err(refused)?
    } else {
        return Err(format!(
            "refused, this entry could never match: {}",
            "give one of --agent-id, --agent-pubkey, --principal, --passport, --passport-file, --passport-id"
        )
        .into());
    };
    if !entry.fits_prefix(&a.prefix) {
        return Err(format!(
            "refused, this entry could never match: the principal's prefix is not {:?} (see --prefix)",
            a.prefix
        )
        .into());
    }
    let shown = escape_controls(&entry.to_string()).into_owned();
    if let Some(file) = &a.store.file {
        append_to_file(file, &entry)?;
        eprintln!("added `{shown}` to {}", file.display());
    }
    if let Some(url) = &a.store.redis {
        let config = passport_gate::redis_client::RedisConfig::from_url(
            url,
            std::time::Duration::from_secs(5),
        )?;
        let key = format!("{}revoked", a.key_prefix);
        runtime()?
            .block_on(
                passport_gate::redis_client::Redis::new(config).sadd(&key, &entry.to_string()),
            )
            .map_err(|e| Failure(e.to_string(), 1))?;
        eprintln!("added `{shown}` to the Redis set {key}");
    }
    Ok(0)
}
