//! Revocation: passports refused with `passport_revoked` although they verify, by agent
//! id, agent public key, principal address or passport id.
//!
//! Entries come from a file (reloaded when it changes, no restart) and, with Redis, from
//! a shared set that every replica polls. Both use one line format (spec section 7.2),
//! which represents every value exactly:
//!
//! ```text
//! # a comment: only a whole line whose first character is `#`
//! agent_id urn:aps:agent:leaked-7
//! agent_id "urn:aps:agent:bot #7 \n"   (a value starting with `"` is a JSON string)
//! agent_pubkey 7Fh2...=                 (strict standard base64 of an Ed25519 key)
//! principal gonka1...                   (bech32, normalized to lowercase)
//! passport 9f86d0818...                 (hex passport_id: SHA-256 of the JCS form)
//! ```
//!
//! The kind and the value are separated by one space; an unquoted value is the rest of
//! the line verbatim (`#` and spaces included). `envelope <hex>` means `passport <hex>`.

#[cfg(feature = "redis")]
use crate::redis_client::Redis;
use passport_core::crypto::{check_address, decode_base64, AgentKey};
use passport_core::verifier::{VerifiedAgent, MAX_AGENT_ID_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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
    /// Revoked passports by lowercase hex `passport_id` (SHA-256 of the JCS form, so
    /// that re-serializing a passport does not escape). The name is the vector format's.
    pub envelope_sha256: BTreeSet<String>,
}

/// One revocation entry, validated and in normal form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// `agent_id <id>`.
    AgentId(String),
    /// `agent_pubkey <base64>`.
    AgentPubkey(String),
    /// `principal <address>`.
    Principal(String),
    /// `passport <hex passport_id>` (also read as `envelope <hex>`).
    Passport(String),
}

/// Why a value can never be a revocation entry (it could never match a passport).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// An agent id that is empty or longer than the verifier accepts (its length).
    AgentIdLength(usize),
    /// An agent key that is not strict base64 of a valid Ed25519 key.
    AgentKey,
    /// A principal address mixing upper and lower case.
    PrincipalMixedCase,
    /// A principal that is not a bech32 account address (why).
    PrincipalAddress(String),
    /// A `passport` value that is not 64 hex digits.
    PassportId,
    /// An `envelope` value (the older name) that is not 64 hex digits.
    EnvelopeId,
    /// A kind other than agent_id, agent_pubkey, principal, passport, envelope.
    UnknownKind,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryError::AgentIdLength(n) => write!(
                f,
                "an agent_id is 1 to {MAX_AGENT_ID_BYTES} bytes (this one has {n})"
            ),
            EntryError::AgentKey => f.write_str(
                "an agent_pubkey is strict standard base64 (padded) of a valid 32-byte Ed25519 key",
            ),
            EntryError::PrincipalMixedCase => {
                f.write_str("a principal address must not mix upper and lower case")
            }
            EntryError::PrincipalAddress(why) => {
                write!(f, "a principal is a bech32 account address: {why}")
            }
            EntryError::PassportId => {
                f.write_str("a passport entry is a passport_id: 64 hex digits")
            }
            EntryError::EnvelopeId => {
                f.write_str("a envelope entry is a passport_id: 64 hex digits")
            }
            EntryError::UnknownKind => {
                f.write_str("unknown kind (agent_id, agent_pubkey, principal, passport, envelope)")
            }
        }
    }
}

impl std::error::Error for EntryError {}

/// Why an X-Agent-Passport value names no passport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassportValueError {
    /// The value is not strict standard base64.
    NotBase64,
    /// The decoded bytes are not an envelope (why).
    Malformed(String),
}

impl fmt::Display for PassportValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassportValueError::NotBase64 => {
                f.write_str("the passport is not strict standard base64")
            }
            PassportValueError::Malformed(why) => write!(f, "malformed envelope: {why}"),
        }
    }
}

impl std::error::Error for PassportValueError {}

/// Whether `value` must be written as a JSON string: empty, starting with `"`, white
/// space at either end, white space followed by `#`, or any control character (which
/// includes line breaks). The unquoted form refuses the same values, so that a file in
/// the older format (trimmed values, `# comments` after an entry) never silently means
/// a different value: such a line is reported instead.
fn needs_quoting(value: &str) -> bool {
    value.is_empty()
        || value.starts_with('"')
        || value.starts_with(char::is_whitespace)
        || value.ends_with(char::is_whitespace)
        || value
            .char_indices()
            .any(|(i, c)| c.is_whitespace() && value[i + c.len_utf8()..].starts_with('#'))
        || value
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, value) = match self {
            Entry::AgentId(v) => ("agent_id", v),
            Entry::AgentPubkey(v) => ("agent_pubkey", v),
            Entry::Principal(v) => ("principal", v),
            Entry::Passport(v) => ("passport", v),
        };
        if needs_quoting(value) {
            let quoted = serde_json::to_string(value).map_err(|_| fmt::Error)?;
            write!(f, "{kind} {quoted}")
        } else {
            write!(f, "{kind} {value}")
        }
    }
}

impl Entry {
    /// Validates `value` as an entry of `kind` and puts it in normal form. Refuses what
    /// could never match a passport: an empty or over-long agent id, a key that is not
    /// strict base64 of a valid Ed25519 point, an address that is not bech32 with a
    /// 20-byte payload, an id that is not 64 hex digits.
    pub fn new(kind: &str, value: &str) -> Result<Entry, String> {
        match kind {
            "agent_id" => Entry::agent_id(value),
            "agent_pubkey" => Entry::agent_key(value),
            "principal" => Entry::principal(value),
            "passport" => Entry::passport_id(value),
            "envelope" => Entry::passport_id(value).map_err(|_| EntryError::EnvelopeId),
            _ => Err(EntryError::UnknownKind),
        }
        .map_err(|e| e.to_string())
    }

    /// Every passport naming this agent id (1 to 256 bytes, any characters).
    pub fn agent_id(value: &str) -> Result<Entry, EntryError> {
        if value.is_empty() || value.len() > MAX_AGENT_ID_BYTES {
            return Err(EntryError::AgentIdLength(value.len()));
        }
        Ok(Entry::AgentId(value.to_owned()))
    }

    /// Every passport naming this agent key (strict standard base64 of an Ed25519 key),
    /// in its normal base64 form.
    pub fn agent_key(value: &str) -> Result<Entry, EntryError> {
        decode_base64(value)
            .and_then(|b| AgentKey::from_bytes(&b))
            .map(|k| Entry::AgentPubkey(k.to_base64()))
            .ok_or(EntryError::AgentKey)
    }

    /// Every passport issued by this principal (a bech32 account address, kept in
    /// lowercase).
    pub fn principal(value: &str) -> Result<Entry, EntryError> {
        // Bech32 is case-insensitive but must not mix cases; addresses are
        // compared in their lowercase form.
        let lower = value.to_ascii_lowercase();
        if value != lower && value != value.to_ascii_uppercase() {
            return Err(EntryError::PrincipalMixedCase);
        }
        let prefix = lower.rsplit_once('1').map_or("", |(hrp, _)| hrp);
        check_address(prefix, &lower)
            .map(|()| Entry::Principal(lower.clone()))
            .map_err(|e| EntryError::PrincipalAddress(e.to_string()))
    }

    /// One passport by its passport_id (64 hex digits, kept in lowercase).
    pub fn passport_id(value: &str) -> Result<Entry, EntryError> {
        if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Entry::Passport(value.to_ascii_lowercase()))
        } else {
            Err(EntryError::PassportId)
        }
    }

    /// One passport given as its X-Agent-Passport value (surrounding white space is
    /// ignored): the entry names its computed passport_id.
    pub fn passport(header: &str) -> Result<Entry, PassportValueError> {
        let raw = decode_base64(header.trim()).ok_or(PassportValueError::NotBase64)?;
        let envelope = passport_core::envelope::Envelope::parse(&raw)
            .map_err(|e| PassportValueError::Malformed(e.to_string()))?;
        Ok(Entry::Passport(hex::encode(envelope.passport_id())))
    }

    /// Parses one `kind value` line (without its line break). The messages never quote
    /// the value.
    pub fn parse(line: &str) -> Result<Entry, String> {
        let (kind, raw) = line
            .split_once(' ')
            .ok_or("expected `kind value` separated by one space")?;
        let value = if raw.starts_with('"') {
            if !raw.ends_with('"') || raw.len() < 2 {
                return Err("a quoted value must be one JSON string and nothing after it".into());
            }
            serde_json::from_str::<String>(raw)
                .map_err(|e| format!("the quoted value is not a JSON string: {e}"))?
        } else {
            if needs_quoting(raw) {
                return Err(
                    "this value must be written as a JSON string (it is empty, has white space at an end or before '#', or control characters)"
                        .into(),
                );
            }
            raw.to_owned()
        };
        Entry::new(kind, &value)
    }

    /// Whether a principal entry names an address with `prefix` (other entries: true).
    /// An address with another prefix can never match this gateway's passports.
    pub fn fits_prefix(&self, prefix: &str) -> bool {
        match self {
            Entry::Principal(a) => check_address(prefix, a).is_ok(),
            _ => true,
        }
    }
}

/// A line of a revocation file that did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based.
    pub line: usize,
    /// Why, without quoting the line.
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl Revoked {
    /// Adds one entry.
    pub fn insert(&mut self, e: Entry) {
        match e {
            Entry::AgentId(v) => self.agent_ids.insert(v),
            Entry::AgentPubkey(v) => self.agent_pubkeys.insert(v),
            Entry::Principal(v) => self.principal_addresses.insert(v),
            Entry::Passport(v) => self.envelope_sha256.insert(v),
        };
    }

    /// Adds every entry of `other`.
    pub fn extend(&mut self, other: &Revoked) {
        self.agent_ids.extend(other.agent_ids.iter().cloned());
        self.agent_pubkeys
            .extend(other.agent_pubkeys.iter().cloned());
        self.principal_addresses
            .extend(other.principal_addresses.iter().cloned());
        self.envelope_sha256
            .extend(other.envelope_sha256.iter().cloned());
    }

    /// Parses a revocation file: one entry per line; blank lines and lines starting
    /// with `#` are skipped. Returns the good entries and every bad line by number.
    pub fn parse_lines(text: &str) -> (Revoked, Vec<BadLine>) {
        let mut r = Revoked::default();
        let mut bad = Vec::new();
        for (i, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            match Entry::parse(line) {
                Ok(e) => r.insert(e),
                Err(reason) => bad.push(BadLine {
                    line: i + 1,
                    reason,
                }),
            }
        }
        (r, bad)
    }

    /// Parses a revocation file, refusing it whole if any line is bad.
    pub fn parse(text: &str) -> Result<Revoked, String> {
        let (r, bad) = Revoked::parse_lines(text);
        if bad.is_empty() {
            Ok(r)
        } else {
            Err(bad
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "))
        }
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

    /// How many entries the set holds.
    pub fn len(&self) -> usize {
        self.agent_ids.len()
            + self.agent_pubkeys.len()
            + self.principal_addresses.len()
            + self.envelope_sha256.len()
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
    bad_lines: Option<crate::metrics::IntCounter>,
    shared: SharedSet,
}

/// The state of the shared (Redis) set, when one is expected.
#[derive(Debug, Default)]
struct SharedSet {
    /// A shared set is configured: until it has been read, nothing can be judged.
    expected: AtomicBool,
    /// It has been read at least once.
    read: AtomicBool,
    /// Why the last poll failed, `None` when it succeeded.
    last_error: RwLock<Option<String>>,
    /// Counts polls that found the set empty after it held entries.
    emptied: Option<crate::metrics::IntCounter>,
}

/// What `/readyz` says about the revocation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationHealth {
    /// Every source is read and current (or no shared set is configured).
    Current,
    /// The shared set has never been read: passport requests are refused with 503
    /// `revocations_unavailable`. The reason of the last failed read.
    NotRead(String),
    /// The shared set was read, but the last poll failed: the entries last read stay in
    /// force. The reason.
    Stale(String),
}

impl RevocationList {
    /// A list with only `fixed` entries (configuration or a conformance vector).
    pub fn new(fixed: Revoked) -> RevocationList {
        RevocationList {
            fixed,
            ..RevocationList::default()
        }
    }

    /// Counts every bad line of a reloaded file (or bad member of the Redis set) on
    /// `counter`.
    pub fn count_bad_lines_on(&mut self, counter: crate::metrics::IntCounter) {
        self.bad_lines = Some(counter);
    }

    /// Counts, on `counter`, every poll that finds the shared set empty after it held
    /// entries (a Redis that lost its data, or an operator who removed the last entry).
    pub fn count_emptied_set_on(&mut self, counter: crate::metrics::IntCounter) {
        self.shared.emptied = Some(counter);
    }

    /// Says that a shared set will be read (by [`RevocationList::watch_redis`]): until
    /// it has been, [`RevocationList::ready`] is false and the layer refuses every
    /// passport with 503 `revocations_unavailable`, since a revoked one cannot be told
    /// apart.
    pub fn await_shared_set(&self) {
        self.shared.expected.store(true, Ordering::Release);
    }

    /// Whether every expected source has been read at least once.
    pub fn ready(&self) -> bool {
        !self.shared.expected.load(Ordering::Acquire) || self.shared.read.load(Ordering::Acquire)
    }

    /// The list's health, for `/readyz`.
    pub fn health(&self) -> RevocationHealth {
        let error = self
            .shared
            .last_error
            .read()
            .map(|e| e.clone())
            .unwrap_or_else(|_| Some("lock poisoned".into()));
        match (self.ready(), error) {
            (false, e) => RevocationHealth::NotRead(e.unwrap_or_else(|| "not read yet".into())),
            (true, Some(e)) => RevocationHealth::Stale(e),
            (true, None) => RevocationHealth::Current,
        }
    }

    #[cfg(feature = "redis")]
    fn shared_read_failed(&self, error: String) {
        if let Ok(mut g) = self.shared.last_error.write() {
            *g = Some(error);
        }
    }

    #[cfg(feature = "redis")]
    /// Takes a freshly read shared set. A set that is empty after holding entries is
    /// taken (removing the last entry is how an operator lifts the last revocation) but
    /// logged and counted: a Redis that lost its data looks the same.
    fn shared_read(&self, source: &str, r: Revoked) {
        let before = read(&self.from_redis);
        if r.is_empty() && !before.is_empty() {
            tracing::warn!(
                source,
                entries_before = before.len(),
                "the shared revocation set is now empty: every revocation it held is lifted \
                 (if nobody removed them, the Redis lost its data)"
            );
            if let Some(c) = &self.shared.emptied {
                c.inc();
            }
        }
        RevocationList::set(&self.from_redis, r);
        if let Ok(mut g) = self.shared.last_error.write() {
            *g = None;
        }
        self.shared.read.store(true, Ordering::Release);
    }

    /// Whether the passport of `agent` is revoked.
    pub fn revokes(&self, agent: &VerifiedAgent) -> bool {
        self.fixed.revokes(agent)
            || read(&self.from_file).revokes(agent)
            || read(&self.from_redis).revokes(agent)
    }

    fn set(slot: &RwLock<Arc<Revoked>>, r: Revoked) {
        if let Ok(mut g) = slot.write() {
            *g = Arc::new(r);
        }
    }

    fn report_bad(&self, source: &str, bad: &[BadLine]) {
        for b in bad {
            tracing::warn!(source, line = b.line, reason = %b.reason, "bad revocation entry");
        }
        if let Some(c) = &self.bad_lines {
            c.inc_by(bad.len() as u64);
        }
    }

    /// Loads `path` now (a missing file counts as empty; a bad line is an error naming
    /// it) and then reloads it whenever its modification time or size changes, checking
    /// every `interval`. A reloaded file with bad lines is reported line by line and
    /// counted; its good entries are added to those in force, and nothing is dropped
    /// until the file is clean again, so a typo never lifts a revocation.
    pub fn watch_file(self: &Arc<Self>, path: PathBuf, interval: Duration) -> Result<(), String> {
        let (initial, bad) = read_file(&path)?;
        if !bad.is_empty() {
            return Err(format!(
                "{}: {}",
                path.display(),
                bad.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        RevocationList::set(&self.from_file, initial);
        crate::watch::watch_file(
            "passport-gate-revocations",
            self,
            path,
            interval,
            |list: &Self, path| match read_file(path) {
                Ok((r, bad)) if bad.is_empty() => {
                    tracing::info!(file = %path.display(), "revocation file reloaded");
                    RevocationList::set(&list.from_file, r);
                }
                Ok((good, bad)) => {
                    list.report_bad(&path.display().to_string(), &bad);
                    let mut kept = (*read(&list.from_file)).clone();
                    kept.extend(&good);
                    tracing::warn!(
                        file = %path.display(),
                        bad_lines = bad.len(),
                        "revocation file has bad lines: its good entries are added, and no earlier entry is dropped until it is fixed"
                    );
                    RevocationList::set(&list.from_file, kept);
                }
                Err(e) => tracing::warn!(error = %e, "revocation file not reloaded"),
            },
        )
            .map_err(|e| format!("cannot start the revocation watcher: {e}"))
    }

    #[cfg(feature = "redis")]
    /// Polls the Redis set `key` every `interval` (on the current tokio runtime). Until
    /// the first poll succeeds the list is not [`ready`](RevocationList::ready); a later
    /// failed poll keeps the previous entries (and is reported by
    /// [`health`](RevocationList::health)); bad members are reported and counted. A
    /// failed poll is logged at WARN with its cause, as
    /// [`WarnLimiter`](crate::warn_limit::WarnLimiter) allows with
    /// [`FAILED_POLL_LOG_EVERY`].
    pub fn watch_redis(self: &Arc<Self>, redis: Arc<Redis>, key: String, interval: Duration) {
        self.await_shared_set();
        let list = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut warn = crate::warn_limit::WarnLimiter::new(FAILED_POLL_LOG_EVERY);
            loop {
                let Some(l) = list.upgrade() else { return };
                match redis.smembers(&key).await {
                    Ok(members) => {
                        let mut r = Revoked::default();
                        let mut bad = Vec::new();
                        for (i, m) in members.iter().enumerate() {
                            match Entry::parse(m) {
                                Ok(e) => r.insert(e),
                                Err(reason) => bad.push(BadLine {
                                    line: i + 1,
                                    reason,
                                }),
                            }
                        }
                        l.report_bad(&key, &bad);
                        l.shared_read(&key, r);
                        warn.succeeded();
                    }
                    Err(e) => {
                        let cause = e.to_string();
                        if let Some(held_back) = warn.failed(&cause) {
                            tracing::warn!(
                                error = %cause,
                                failed_polls_not_logged = held_back,
                                "revocation set not refreshed"
                            );
                        }
                        l.shared_read_failed(cause);
                    }
                }
                drop(l);
                tokio::time::sleep(interval).await;
            }
        });
    }
}

/// How often a failing poll of the shared set is logged, at most.
#[cfg(feature = "redis")]
pub const FAILED_POLL_LOG_EVERY: Duration = Duration::from_secs(10);

fn read(slot: &RwLock<Arc<Revoked>>) -> Arc<Revoked> {
    slot.read().map(|g| Arc::clone(&g)).unwrap_or_default()
}

fn read_file(path: &Path) -> Result<(Revoked, Vec<BadLine>), String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Revoked::parse_lines(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Revoked::default(), Vec::new())),
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

    fn key() -> String {
        passport_core::crypto::AgentSecret::from_bytes(&[7; 32])
            .public_key()
            .to_base64()
    }
    const ADDR: &str = "cosmos1h806c7khnvmjlywdrkdgk2vrayy2mmvf9rxk2r";

    #[test]
    fn comments_are_whole_lines_and_values_keep_hash_and_spaces() {
        let r = Revoked::parse(
            "# leaked\nagent_id urn:aps:agent:bot#7\nagent_id \" padded \"\n\nenvelope ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\r\n",
        )
        .unwrap();
        assert!(r.agent_ids.contains("urn:aps:agent:bot#7"));
        assert!(!r.agent_ids.contains("urn:aps:agent:bot"));
        assert!(r.agent_ids.contains(" padded "));
        assert!(r
            .envelope_sha256
            .contains("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"));
    }

    #[test]
    fn a_quoted_value_is_a_json_string() {
        let r = Revoked::parse("agent_id \"line\\nbreak \\\"q\\\" \"\n").unwrap();
        assert!(r.agent_ids.contains("line\nbreak \"q\" "));
        assert!(Entry::parse("agent_id \"open").is_err());
        assert!(Entry::parse("agent_id \"a\" b").is_err());
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let (r, bad) = Revoked::parse_lines(
            "agent_id ok\nbogus x\nenvelope 1234\nagent_id tab\there\nagent_id x # old comment\nagent_id trailing \nagent_id  two spaces\n",
        );
        assert!(r.agent_ids.contains("ok"));
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
        assert!(Revoked::parse("agent_id ok\nbogus x\n")
            .unwrap_err()
            .starts_with("line 2:"));
    }

    #[test]
    fn entries_are_validated_and_normalized() {
        assert_eq!(
            Entry::new("principal", &ADDR.to_ascii_uppercase()).unwrap(),
            Entry::Principal(ADDR.into())
        );
        assert!(Entry::new("principal", "cosmos1H806c7khnvmjlywdrkdgk2vrayy2mmvf9rxk2r").is_err());
        assert!(Entry::new("principal", "cosmos1h806c7khnvmjlywdrkdgk2vrayy2mmvf9rxk2q").is_err());
        assert!(Entry::new("agent_pubkey", &key()).is_ok());
        assert!(Entry::new("agent_pubkey", key().trim_end_matches('=')).is_err());
        assert!(Entry::new(
            "agent_pubkey",
            &passport_core::crypto::encode_base64(&[0; 32])
        )
        .is_err());
        assert_eq!(
            Entry::new("envelope", &"AB".repeat(32)).unwrap(),
            Entry::Passport("ab".repeat(32))
        );
        assert!(Entry::new("passport", &"ab".repeat(31)).is_err());
        assert!(Entry::new("agent_id", "").is_err());
        assert!(Entry::new("agent_id", &"x".repeat(MAX_AGENT_ID_BYTES + 1)).is_err());
        assert!(Entry::new("agent_id", &"x".repeat(MAX_AGENT_ID_BYTES)).is_ok());
    }

    #[test]
    fn every_value_round_trips_through_its_text_form() {
        for e in [
            Entry::AgentId("urn:aps:agent:1".into()),
            Entry::AgentId("bot#7".into()),
            Entry::AgentId("bot #7".into()),
            Entry::AgentId(" lead and trail ".into()),
            Entry::AgentId("line\nbreak\r\u{85}\u{2028}".into()),
            Entry::AgentId("\"starts with a quote".into()),
            Entry::AgentId("ünïcödé ✓".into()),
            Entry::AgentPubkey(key()),
            Entry::Principal(ADDR.into()),
            Entry::Passport("ab".repeat(32)),
        ] {
            let line = e.to_string();
            assert!(!line.contains('\n'), "{line:?}");
            assert_eq!(Entry::parse(&line).unwrap(), e, "{line:?}");
            assert!(!Revoked::parse(&format!("{line}\n")).unwrap().is_empty());
        }
    }
}
