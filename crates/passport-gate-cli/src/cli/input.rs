//! Arguments several commands share: the request body and the passport.

use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct BodyArg {
    /// Read the body from this file (`-`: standard input).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// The body as a string.
    #[arg(long)]
    body: Option<String>,
}

impl BodyArg {
    pub(crate) fn read(&self) -> Result<Vec<u8>, String> {
        match (&self.body_file, &self.body) {
            (Some(p), _) if p.as_os_str() == "-" => {
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                    .map_err(|e| format!("cannot read the body from standard input: {e}"))?;
                Ok(body)
            }
            (Some(p), _) => {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
            (None, Some(s)) => Ok(s.clone().into_bytes()),
            (None, None) => Err("give --body or --body-file".into()),
        }
    }
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct PassportArg {
    /// The X-Agent-Passport value.
    #[arg(long)]
    passport: Option<String>,
    /// A file holding the X-Agent-Passport value (surrounding white space is ignored).
    #[arg(long)]
    passport_file: Option<PathBuf>,
}

impl PassportArg {
    pub(crate) fn read(&self) -> Result<String, String> {
        passport_value(self.passport.as_deref(), self.passport_file.as_deref())
    }
}

/// The passport given as a value or in a file (a file written by `mint > file` ends
/// with a newline, which is not part of the value).
pub(crate) fn passport_value(value: Option<&str>, file: Option<&Path>) -> Result<String, String> {
    match (value, file) {
        (Some(v), _) => Ok(v.to_owned()),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", f.display())),
        (None, None) => Err("give --passport or --passport-file".into()),
    }
}

/// Warns on standard error when the secret key file at `path` can be read by its group
/// or by others: other users of the machine could then sign as its owner. The key is
/// still loaded (as gpg does, not ssh) so that a script on a shared host keeps working,
/// but the warning names the file, its mode and the fix.
pub(crate) fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o044 != 0 {
            let shown = crate::terminal::escape_controls(&path.to_string_lossy()).into_owned();
            eprintln!(
                "passport-gate: warning: the secret key file {shown} has mode {mode:03o}: other users can read it; run `chmod 600 {shown}`"
            );
        }
    }
}

/// The agent secret key in the key file at `path` (warning when others can read it).
pub(crate) fn agent_secret_file(path: &Path) -> Result<passport_core::crypto::AgentSecret, String> {
    warn_if_readable_by_others(path);
    passport_core::keyfile::load_agent_secret(path).map_err(|e| e.to_string())
}

/// The principal secret key in the key file at `path` (warning when others can read it).
pub(crate) fn principal_secret_file(
    path: &Path,
) -> Result<passport_core::crypto::PrincipalSecret, String> {
    warn_if_readable_by_others(path);
    passport_core::keyfile::load_principal_secret(path).map_err(|e| e.to_string())
}

/// An agent signer for `passport` and `--chain-id`, warning on stderr when the chain id
/// is not the passport's: a gateway accepts the passport only on its own chain and
/// checks the signature with that chain id, so such a request is refused as
/// `agent_sig_invalid`, a code that cannot say which of the signed values differs.
pub(crate) fn agent_signer(
    agent: passport_core::crypto::AgentSecret,
    passport: &str,
    chain_id: &str,
) -> Result<passport_core::mint::AgentSigner, String> {
    use crate::terminal::escape_controls;
    let signer = passport_core::mint::AgentSigner::new(agent, passport, chain_id)
        .map_err(|e| e.to_string())?;
    if signer.passport_chain_id() != chain_id {
        eprintln!(
            "warning: --chain-id \"{}\" is not the passport's chain_id \"{}\": gateways verify the signature with the passport's chain_id and will refuse this request (agent_sig_invalid); sign with --chain-id \"{}\"",
            escape_controls(chain_id),
            escape_controls(signer.passport_chain_id()),
            escape_controls(signer.passport_chain_id()),
        );
    }
    Ok(signer)
}
