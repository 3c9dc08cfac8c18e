//! The principal allowlist (`[principals]`): a gateway that serves only some principals
//! (a devshard operator's own users) refuses every other one with
//! `principal_not_allowed`, once the principal address is known to be derived from the
//! passport's key (step 7) and before the principal signature is checked: a principal off
//! the list never costs a cold verification, nor a grant query or a body read.
//!
//! Addresses are compared in one normal form, lowercase bech32: an entry written in
//! uppercase is lowercased, a mixed-case one (invalid bech32) is refused, and an entry
//! that is not an account address with the chain's prefix stops the gateway at startup
//! with its key.

use passport_core::crypto::{check_address, AddressProblem};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The largest allowlist file read, in bytes; a larger one is refused (at startup) or
/// not reloaded (later), so a mistaken path cannot make the gateway read gigabytes.
pub const MAX_ALLOW_FILE_BYTES: u64 = 16 << 20;

/// The normal form of an account address: lowercase, checked as a canonical account
/// address with `prefix`. An all-uppercase address (valid bech32) is lowercased; a
/// mixed-case one is refused.
pub fn canonical_address(prefix: &str, address: &str) -> Result<String, AddressProblem> {
    let lowered = if address.bytes().any(|b| b.is_ascii_lowercase()) {
        address.to_owned()
    } else {
        address.to_ascii_lowercase()
    };
    check_address(prefix, &lowered)?;
    Ok(lowered)
}

/// Parses an allowlist file: one address per line; blank lines and lines starting with
/// `#` are skipped, surrounding whitespace is trimmed. Every bad line is one error.
pub fn parse_lines(text: &str, prefix: &str) -> Result<HashSet<String>, Vec<String>> {
    let (set, errors) = parse_good_lines(text, prefix);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

/// The valid addresses of `text`, and one error per bad line.
fn parse_good_lines(text: &str, prefix: &str) -> (HashSet<String>, Vec<String>) {
    let mut set = HashSet::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match canonical_address(prefix, line) {
            Ok(a) => {
                set.insert(a);
            }
            Err(e) => errors.push(format!(
                "line {}: not an account address with the prefix {prefix:?}: {e}",
                i + 1
            )),
        }
    }
    (set, errors)
}

/// The file's text, unless it cannot be read or is over [`MAX_ALLOW_FILE_BYTES`].
fn read_text(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if size > MAX_ALLOW_FILE_BYTES {
        return Err(format!(
            "{} is {size} bytes; the most read is {MAX_ALLOW_FILE_BYTES}",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Reads an allowlist file: every line an address with `prefix` (comments and blank
/// lines aside), one error per bad line.
pub fn read_file(path: &Path, prefix: &str) -> Result<HashSet<String>, Vec<String>> {
    parse_lines(&read_text(path).map_err(|e| vec![e])?, prefix)
}

/// `[principals]`, checked, with the file read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowlistSettings {
    /// `allow`, in normal form.
    pub fixed: HashSet<String>,
    /// `allow_file`, its first contents, and the reload interval.
    pub file: Option<(PathBuf, HashSet<String>, Duration)>,
    /// The prefix every address must have.
    pub prefix: String,
}

/// The principals allowed: `allow` plus what `allow_file` last said.
#[derive(Debug, Default)]
pub struct PrincipalAllowlist {
    fixed: HashSet<String>,
    from_file: RwLock<Arc<HashSet<String>>>,
}

impl PrincipalAllowlist {
    /// A list of `fixed` addresses (already in normal form).
    pub fn new(fixed: HashSet<String>) -> PrincipalAllowlist {
        PrincipalAllowlist {
            fixed,
            from_file: RwLock::default(),
        }
    }

    /// Whether `principal` (a `principal_address` derived from the passport's key, so
    /// lowercase) is allowed.
    pub fn allows(&self, principal: &str) -> bool {
        self.fixed.contains(principal)
            || self
                .from_file
                .read()
                .map(|g| g.contains(principal))
                .unwrap_or(false)
    }

    /// The entries from the file now in force.
    fn file_entries(&self) -> Arc<HashSet<String>> {
        self.from_file
            .read()
            .map(|g| Arc::clone(&g))
            .unwrap_or_default()
    }

    fn set_file(&self, set: HashSet<String>) {
        if let Ok(mut g) = self.from_file.write() {
            *g = Arc::new(set);
        }
    }

    /// Starts from `initial` (the file as validated) and reloads `path` whenever its
    /// modification time or size changes, checking every `interval`. A file with bad
    /// lines only removes (the principals it no longer names), a deleted file allows
    /// nobody, and a file that cannot be read otherwise or is too large is not taken;
    /// each problem is logged and counted on `failures`.
    pub fn watch_file(
        self: &Arc<Self>,
        path: PathBuf,
        initial: HashSet<String>,
        interval: Duration,
        prefix: String,
        failures: crate::metrics::IntCounter,
    ) -> Result<(), String> {
        self.set_file(initial);
        crate::watch::watch_file(
            "passport-gate-principals",
            self,
            path,
            interval,
            move |list: &Self, path| match read_text(path) {
                Ok(text) => {
                    let (set, errors) = parse_good_lines(&text, &prefix);
                    if errors.is_empty() {
                        tracing::info!(file = %path.display(), principals = set.len(), "principal allowlist reloaded");
                        list.set_file(set);
                        return;
                    }
                    // A bad line never widens the list and never blocks a removal: while
                    // the file has bad lines, the list in force loses every principal the
                    // file no longer names, and gains none.
                    failures.inc();
                    let kept: HashSet<String> = list.file_entries().intersection(&set).cloned().collect();
                    tracing::warn!(
                        file = %path.display(),
                        errors = %errors.join("; "),
                        principals = kept.len(),
                        "principal allowlist has bad lines: removals are applied, nothing is added until it is fixed"
                    );
                    list.set_file(kept);
                }
                Err(error) if !path.exists() => {
                    // Deleted: nobody from the file is allowed any more (fails closed).
                    failures.inc();
                    tracing::warn!(file = %path.display(), %error, "principal allowlist file is gone: its principals are no longer allowed");
                    list.set_file(HashSet::new());
                }
                Err(error) => {
                    failures.inc();
                    tracing::warn!(
                        file = %path.display(),
                        %error,
                        "principal allowlist not reloaded: the last good list stays in force"
                    );
                }
            },
        )
            .map_err(|e| format!("cannot start the allowlist watcher: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_have_one_normal_form() {
        let valid = passport_core::crypto::PrincipalSecret::from_bytes(&[7; 32])
            .unwrap()
            .public_key()
            .address("gonka")
            .unwrap();
        assert_eq!(canonical_address("gonka", &valid).unwrap(), valid);
        assert_eq!(
            canonical_address("gonka", &valid.to_ascii_uppercase()).unwrap(),
            valid
        );
        let mut mixed = valid.clone();
        mixed.replace_range(0..1, "G");
        assert_eq!(
            canonical_address("gonka", &mixed),
            Err(AddressProblem::NotLowercase)
        );
        assert!(canonical_address("cosmos", &valid).is_err());
    }

    #[test]
    fn a_file_with_a_bad_line_names_the_line() {
        let errors = parse_lines("# ops\n\nnot-an-address\n", "gonka").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("line 3:"), "{errors:?}");
    }
}
