//! `passport-gate gonka-sign`: the Gonka native request signature (the headers a Gonka API
//! node authenticates a developer by), printed as `Name: value` lines ready for `curl -H`.

use crate::cli::input::BodyArg;
use crate::cli::output::{say, Failure};
use clap::Args;
use passport_core::gonka::{monotonic_timestamp_ns, NativeSigner};
use passport_core::keyfile::principal_secret_from_hex_or_path;

#[derive(Args)]
pub(crate) struct GonkaSignArgs {
    /// The developer's secp256k1 key: a key file (`keygen --principal`) or 64 hex digits.
    #[arg(long)]
    key: String,
    #[command(flatten)]
    body: BodyArg,
    /// Unix time in nanoseconds (default: now, never repeated within this process).
    #[arg(long, allow_negative_numbers = true)]
    timestamp_ns: Option<i64>,
    /// The address of the node the request goes to (a node without `X-Transfer-Address`
    /// checks the signature against its own address, so sign with that one).
    #[arg(long, default_value = "")]
    transfer_address: String,
    /// Bech32 prefix of the requester address.
    #[arg(long, default_value = "gonka")]
    prefix: String,
}

pub fn run(a: &GonkaSignArgs) -> Result<u8, Failure> {
    crate::cli::input::warn_if_readable_by_others(std::path::Path::new(&a.key));
    let secret = principal_secret_from_hex_or_path(&a.key, "--key").map_err(|e| e.to_string())?;
    let signer = NativeSigner::new(&secret, &a.prefix)
        .map_err(|e| format!("--prefix {:?}: {e}", a.prefix))?;
    let body = a.body.read()?;
    let timestamp = a.timestamp_ns.unwrap_or_else(monotonic_timestamp_ns);
    for (name, value) in signer.sign(&body, timestamp, &a.transfer_address).pairs() {
        say!("{name}: {value}");
    }
    Ok(0)
}
