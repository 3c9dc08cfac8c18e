//! `passport-gate inspect`: a passport's contents, derived address and window.

use crate::cli::input::passport_value;
use crate::cli::output::{say, Failure};
use clap::Args;
use passport_core::inspect::{window_phrase, DerivedAddress};
use passport_core::time::Timestamp;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct InspectArgs {
    /// The X-Agent-Passport value.
    #[arg(required_unless_present = "passport_file")]
    passport: Option<String>,
    /// A file holding the X-Agent-Passport value.
    #[arg(long, conflicts_with = "passport")]
    passport_file: Option<PathBuf>,
    /// Bech32 prefix for the derived address.
    #[arg(long, default_value = "gonka")]
    prefix: String,
}

pub(crate) fn both_times(t: Timestamp) -> String {
    use chrono::TimeZone;
    let local = chrono::Local
        .timestamp_opt(
            t.unix_seconds(),
            (t.unix_nanos().rem_euclid(1_000_000_000)) as u32,
        )
        .single()
        .map(|l| l.format("%Y-%m-%d %H:%M:%S %:z").to_string())
        .unwrap_or_else(|| "?".into());
    format!("{t} (local {local})")
}

pub fn run(a: &InspectArgs) -> Result<u8, Failure> {
    let passport = passport_value(a.passport.as_deref(), a.passport_file.as_deref())?;
    let now = Timestamp::now();
    let i = passport_core::inspect::inspect(&passport, &a.prefix, now, None)
        .map_err(|e| e.to_string())?;
    let pretty = serde_json::to_string_pretty(&i.json)
        .map_err(|e| format!("the passport is not JSON: {e}"))?;
    say!("{pretty}");
    let f = i
        .envelope
        .map_err(|e| Failure(format!("malformed envelope: {e}"), 1))?;
    let e = &f.envelope;
    say!("");
    say!("envelope sha256:   {}", hex::encode(e.sha256()));
    say!("passport id:       {}", hex::encode(e.passport_id()));
    match &f.derived_address {
        DerivedAddress::Derived(addr) => {
            let verdict = if f.address_matches() {
                "matches"
            } else {
                "DOES NOT MATCH principal_address"
            };
            say!("derived address:   {addr} ({verdict})");
        }
        DerivedAddress::Failed(err) => say!("derived address:   cannot derive: {err}"),
        DerivedAddress::KeyInvalid => {
            say!("derived address:   principal_pubkey is not a compressed secp256k1 key")
        }
    }
    say!("issued at:         {}", both_times(e.issued_at));
    if let Some(nb) = e.scope.not_before {
        say!("not before:        {}", both_times(nb));
    }
    say!("expires at:        {}", both_times(e.scope.expires_at));
    say!(
        "now:               {} ({})",
        both_times(now),
        window_phrase(f.window)
    );
    say!("signatures:        not checked here; use `passport-gate verify`");
    Ok(0)
}
