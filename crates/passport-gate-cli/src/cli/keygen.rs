//! `passport-gate keygen`: a principal or agent key file.

use crate::cli::output::{print_out, Failure};
use clap::Args;
use passport_core::crypto::{AgentSecret, PrincipalSecret};
use passport_core::keyfile::{key_file_text, write_key_file, KeyFile};
use std::path::PathBuf;

#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct KeyKindArg {
    /// A principal key (secp256k1, with its account address).
    #[arg(long)]
    principal: bool,
    /// An agent key (Ed25519).
    #[arg(long)]
    agent: bool,
}

#[derive(Args)]
pub(crate) struct KeygenArgs {
    #[command(flatten)]
    kind: KeyKindArg,
    /// Write the key file here (created with mode 0600) instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Bech32 prefix of the principal address.
    #[arg(long, default_value = "gonka")]
    prefix: String,
}

pub fn run(a: &KeygenArgs) -> Result<u8, Failure> {
    let file = if a.kind.principal {
        let secret = PrincipalSecret::generate().map_err(|e| format!("no randomness: {e}"))?;
        KeyFile::principal(&secret, &a.prefix).map_err(|e| e.to_string())?
    } else {
        KeyFile::agent(&AgentSecret::generate().map_err(|e| format!("no randomness: {e}"))?)
    };
    match &a.out {
        Some(path) => {
            write_key_file(path, &file).map_err(|e| e.to_string())?;
            eprintln!("wrote {}", path.display());
            if let Some(addr) = &file.address {
                eprintln!("principal address: {addr}");
            }
            eprintln!("public key: {}", file.public_key);
        }
        None => print_out(&key_file_text(&file).map_err(|e| e.to_string())?, false),
    }
    Ok(0)
}
