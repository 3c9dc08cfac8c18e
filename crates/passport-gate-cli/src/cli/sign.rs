//! `passport-gate sign`: the X-Agent-Sig value of one request.

use crate::cli::input::{BodyArg, PassportArg};
use crate::cli::output::{say, Failure};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct SignArgs {
    /// The agent's key file.
    #[arg(long)]
    agent_key: PathBuf,
    #[command(flatten)]
    passport: PassportArg,
    /// The gateway's chain id.
    #[arg(long)]
    chain_id: String,
    /// The HTTP method.
    #[arg(long)]
    method: String,
    /// The path plus ?query, exactly as it will be sent.
    #[arg(long)]
    uri: String,
    #[command(flatten)]
    body: BodyArg,
    /// Print both headers as `Name: value` lines.
    #[arg(long)]
    headers: bool,
}

pub fn run(a: &SignArgs) -> Result<u8, Failure> {
    let secret = crate::cli::input::agent_secret_file(&a.agent_key)?;
    let passport = a.passport.read()?;
    let body = a.body.read()?;
    let sig = crate::cli::input::agent_signer(secret, &passport, &a.chain_id)?
        .sign(&a.method, &a.uri, &body)
        .map_err(|e| e.to_string())?;
    if a.headers {
        say!("X-Agent-Passport: {}", passport.trim());
        say!("X-Agent-Sig: {sig}");
    } else {
        say!("{sig}");
    }
    Ok(0)
}
