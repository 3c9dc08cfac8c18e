//! Revocation: passports refused with `passport_revoked` although they verify, by agent
//! id, agent public key, principal address or envelope SHA-256.
//!
//! Entries come from a file (reloaded when it changes, no restart) and, with Redis, from
//! a shared set that every replica polls. Both use one line format:
//!
//! ```text
//! # comment
//! agent_id urn:aps:agent:leaked-7
//! agent_pubkey 7Fh2...=            (standard base64, as in the passport)
//! principal gonka1...
//! envelope 9f86d0818...            (hex SHA-256 of the decoded passport header)
//! ```

use crate::redis::Redis;
use crate::verifier::VerifiedAgent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// A set of revoked identities. The field names are those of a conformance vector's
/// `revoked` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Revoked {
    /// Revoked `agent_id` values.
    pub agent_ids: BTreeSet<String>,
    /// Revoked agent keys, standard base64 as in `agent_pubkey.public_key`.
    pub agent_pubkeys: BTreeSet<String>,
    /// Revoked principal addresses (every passport they issued).
    pub principal_addresses: BTreeSet<String>,
    /// Revoked passports, by hex SHA-256 of the decoded header bytes.
    pub envelope_sha256: BTreeSet<String>,
}

/// One revocation entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// `agent_id <id>`.
    AgentId(String),
    /// `agent_pubkey <base64>`.
    AgentPubkey(String),
    /// `principal <address>`.
    Principal(String),
    /// `envelope <hex sha256>`.
    Envelope(String),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::AgentId(v) => write!(f, "agent_id {v}"),
            Entry::AgentPubkey(v) => write!(f, "agent_pubkey {v}"),
            Entry::Principal(v) => write!(f, "principal {v}"),
            Entry::Envelope(v) => write!(f, "envelope {v}"),
        }
    }
}

impl Entry {
    /// Parses one `kind value` line.
    pub fn parse(line: &str) -> Result<Entry, String> {
        let (kind, value) = line
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{line:?}: expected `kind value`"))?;
        let value = value.trim();
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(format!(
                "{line:?}: the value must be non-empty without control characters"
            ));
        }
        match kind {
            "agent_id" => Ok(Entry::AgentId(value.to_owned())),
            "agent_pubkey" => Ok(Entry::AgentPubkey(value.to_owned())),
            "principal" => Ok(Entry::Principal(value.to_owned())),
            "envelope" => {
                if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(Entry::Envelope(value.to_ascii_lowercase()))
                } else {
                    Err(format!("{line:?}: an envelope entry is 64 hex digits"))
                }
            }
            other => Err(format!(
                "{line:?}: unknown kind {other:?} (agent_id, agent_pubkey, principal, envelope)"
            )),
        }
    }
}

impl Revoked {
    /// Adds one entry.
    pub fn insert(&mut self, e: Entry) {
        match e {
            Entry::AgentId(v) => self.agent_ids.insert(v),
            Entry::AgentPubkey(v) => self.agent_pubkeys.insert(v),
            Entry::Principal(v) => self.principal_addresses.insert(v),
            Entry::Envelope(v) => self.envelope_sha256.insert(v),
        };
    }

    /// Parses a revocation file: one entry per line, `#` comments, blank lines ignored.
    /// Errors name the line number.
    pub fn parse(text: &str) -> Result<Revoked, String> {
        let mut r = Revoked::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            r.insert(Entry::parse(line).map_err(|e| format!("line {}: {e}", i + 1))?);
        }
        Ok(r)
    }

    /// Whether this set revokes the verified request's passport.
    pub fn revokes(&self, agent: &VerifiedAgent) -> bool {
        self.agent_ids.contains(agent.agent_id())
            || self.agent_pubkeys.contains(&agent.agent_key().to_base64())
            || self.principal_addresses.contains(agent.principal_address())
            || self
                .envelope_sha256
                .contains(&hex::encode(agent.passport_id()))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.agent_ids.is_empty()
            && self.agent_pubkeys.is_empty()
            && self.principal_addresses.is_empty()
            && self.envelope_sha256.is_empty()
    }
}

/// The revocations in force: a static part plus what the file and Redis last said.
#[derive(Debug, Default)]
pub struct RevocationList {
    fixed: Revoked,
    from_file: RwLock<Arc<Revoked>>,
    from_redis: RwLock<Arc<Revoked>>,
}

impl RevocationList {
    /// A list with only `fixed` entries (configuration or a conformance vector).
    pub fn new(fixed: Revoked) -> RevocationList {
        RevocationList {
            fixed,
            ..RevocationList::default()
        }
    }

    /// Whether the passport of `agent` is revoked.
    pub fn revokes(&self, agent: &VerifiedAgent) -> bool {
        let read = |l: &RwLock<Arc<Revoked>>| l.read().map(|g| Arc::clone(&g)).unwrap_or_default();
        self.fixed.revokes(agent)
            || read(&self.from_file).revokes(agent)
            || read(&self.from_redis).revokes(agent)
    }

    fn set(slot: &RwLock<Arc<Revoked>>, r: Revoked) {
        if let Ok(mut g) = slot.write() {
            *g = Arc::new(r);
        }
    }

    /// Loads `path` now (a missing file counts as empty) and then reloads it whenever
    /// its modification time or size changes, checking every `interval`. A file that
    /// fails to parse is reported and the previous entries stay in force.
    pub fn watch_file(self: &Arc<Self>, path: PathBuf, interval: Duration) -> Result<(), String> {
        let initial = read_file(&path)?;
        RevocationList::set(&self.from_file, initial);
        let list = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("passport-gate-revocations".into())
            .spawn(move || {
                let mut seen = stamp(&path);
                loop {
                    std::thread::sleep(interval);
                    let Some(list) = list.upgrade() else { return };
                    let now = stamp(&path);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    match read_file(&path) {
                        Ok(r) => {
                            tracing::info!(file = %path.display(), "revocation file reloaded");
                            RevocationList::set(&list.from_file, r);
                        }
                        Err(e) => tracing::warn!(error = %e, "revocation file not reloaded"),
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start the revocation watcher: {e}"))
    }

    /// Polls the Redis set `key` every `interval` (on the current tokio runtime). A
    /// failed poll keeps the previous entries.
    pub fn watch_redis(self: &Arc<Self>, redis: Arc<Redis>, key: String, interval: Duration) {
        let list = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(l) = list.upgrade() else { return };
                match redis.smembers(&key).await {
                    Ok(members) => {
                        let mut r = Revoked::default();
                        for m in members {
                            match Entry::parse(&m) {
                                Ok(e) => r.insert(e),
                                Err(e) => {
                                    tracing::warn!(error = %e, "bad revocation entry in Redis")
                                }
                            }
                        }
                        RevocationList::set(&l.from_redis, r);
                    }
                    Err(e) => tracing::warn!(error = %e, "revocation set not refreshed"),
                }
                drop(l);
                tokio::time::sleep(interval).await;
            }
        });
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read_file(path: &Path) -> Result<Revoked, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Revoked::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Revoked::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Appends `entry` to the revocation file at `path` (created if needed).
pub fn append_to_file(path: &Path, entry: &Entry) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    writeln!(f, "{entry}").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_format_parses_and_names_bad_lines() {
        let r = Revoked::parse("# leaked\nagent_id urn:aps:agent:x\n\nprincipal gonka1abc  # all of them\nenvelope ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\n").unwrap();
        assert!(r.agent_ids.contains("urn:aps:agent:x"));
        assert!(r.principal_addresses.contains("gonka1abc"));
        assert!(r
            .envelope_sha256
            .contains("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"));
        let err = Revoked::parse("agent_id ok\nbogus x\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(Revoked::parse("envelope 1234").is_err());
    }

    #[test]
    fn entries_round_trip_through_their_text_form() {
        for e in [
            Entry::AgentId("urn:aps:agent:1".into()),
            Entry::AgentPubkey("AAAA".into()),
            Entry::Principal("gonka1x".into()),
            Entry::Envelope("ab".repeat(32)),
        ] {
            assert_eq!(Entry::parse(&e.to_string()).unwrap(), e);
        }
    }
}
