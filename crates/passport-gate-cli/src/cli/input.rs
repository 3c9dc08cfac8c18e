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
