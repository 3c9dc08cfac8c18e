//! `passport-gate verify`: one request's JSON verdict.

use crate::cli::input::{BodyArg, PassportArg};
use crate::cli::output::{say, Failure};
use clap::Args;
use passport_core::mint::{verify_json, VerifyOptions};

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The gateway's chain id.
    #[arg(long)]
    chain_id: String,
    /// Verify as of this instant (RFC 3339) instead of now.
    #[arg(long)]
    now: Option<String>,
    /// The largest accepted passport lifetime.
    #[arg(long, default_value_t = 3600)]
    max_ttl_seconds: u64,
    /// Bech32 prefix of addresses.
    #[arg(long, default_value = "gonka")]
    prefix: String,
    /// The HTTP method.
    #[arg(long)]
    method: String,
    /// The request target in origin form: the path plus ?query, as sent (no scheme,
    /// host or #fragment: no request line carries those to the layer).
    #[arg(long)]
    uri: String,
    #[command(flatten)]
    passport: PassportArg,
    /// The X-Agent-Sig value, exactly as the header carries it.
    #[arg(long)]
    sig: String,
    #[command(flatten)]
    body: BodyArg,
}

pub fn run(a: &VerifyArgs) -> Result<u8, Failure> {
    // The values go through the layer's own header reading (in `verify_json`), so that a
    // value the layer refuses (surrounding spaces, control characters) or treats as
    // absent (empty) gets the same verdict here.
    let options = VerifyOptions {
        chain_id: a.chain_id.clone(),
        now: a.now.clone(),
        max_ttl_seconds: a.max_ttl_seconds,
        prefix: a.prefix.clone(),
        method: a.method.clone(),
        uri: a.uri.clone(),
        passport: a.passport.read()?,
        sig: a.sig.clone(),
    };
    let body = a.body.read()?;
    let verdict = verify_json(&options, &body).map_err(|e| e.to_string())?;
    say!("{verdict}");
    Ok(if verdict["ok"] == true { 0 } else { 1 })
}
