//! The tamper-evident audit file: JSON lines chained by SHA-256.
//!
//! Each line is `{"prev_hash": <hex>, "hash": <hex>, "event": {...}}` where
//! `hash = SHA-256(prev_hash as 32 raw bytes || RFC 8785 form of event)`, and the first
//! line of a chain has `prev_hash` = 64 zeros. Editing, deleting or reordering a line
//! breaks the chain at that line or the next. Rotation renames the full file to
//! `<name>.<n>` and continues the chain in a fresh file.

use super::{AttributionEvent, Outcome, Sink};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// When the audit file is made durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every event (slowest, loses nothing the OS acknowledged).
    Always,
    /// Whenever the queue runs empty, and at shutdown (default).
    #[default]
    Batch,
    /// Never explicitly (the OS decides).
    Never,
}

/// The hash before the first line of a chain.
pub const GENESIS: [u8; 32] = [0; 32];

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prev_hash: String,
    hash: String,
    event: AttributionEvent,
}

/// What [`AuditFileSink`] writes: [`Line`] with the event borrowed (the same fields in
/// the same order, so the same bytes), not cloned for every line.
#[derive(Serialize)]
struct LineRef<'a> {
    prev_hash: String,
    hash: String,
    event: &'a AttributionEvent,
}

/// The event's fields in JCS order (RFC 8785: keys sorted by UTF-16 code units, which
/// for these ASCII names is byte order), borrowed, with the event's own omissions. For
/// this flat record of strings, integers and a bool, serde_json writes exactly the JCS
/// bytes (the same string escapes, integers in decimal) as long as every integer is at
/// most 2^53 (JCS writes numbers as IEEE doubles): [`jcs`] checks that, and
/// `fast_jcs_is_serde_jcs` compares both on every field. The destructuring in [`jcs`]
/// names every field, so a new field does not compile until it is added here.
#[derive(Serialize)]
struct JcsEvent<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    agent_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    beneficiary: &'a Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    chain_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    claimed_agent_id_unverified: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claimed_principal_address_unverified: &'a Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    client_disconnected: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    client_stalled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cut_at_shutdown: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    envelope_sha256: &'a str,
    event_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    inference_id: &'a str,
    latency_ms: u64,
    method: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    model: &'a str,
    #[serde(skip_serializing_if = "Outcome::is_accepted")]
    outcome: Outcome,
    #[serde(skip_serializing_if = "str::is_empty")]
    passport_expires_at: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    passport_id: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_cut_bytes: Option<u64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    principal_address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refused_at: &'a Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    request_body_sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    requester_address: &'a Option<String>,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_missing: Option<super::UsageMissing>,
    v: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    verified_at: &'a str,
}

/// Integers up to this are written alike by JCS (as doubles) and serde_json.
const EXACT_INTEGER: u64 = 1 << 53;

/// `JCS(event)`: through [`JcsEvent`] and serde_json (several times faster than
/// serde_jcs, which buffers and sorts every member at run time), or serde_jcs when an
/// integer is too large for that to be exact.
fn jcs(event: &AttributionEvent) -> io::Result<Vec<u8>> {
    let AttributionEvent {
        v,
        event_id,
        inference_id,
        chain_id,
        model,
        agent_id,
        principal_address,
        beneficiary,
        requester_address,
        request_body_sha256,
        envelope_sha256,
        passport_id,
        passport_expires_at,
        verified_at,
        method,
        path,
        path_cut_bytes,
        status,
        latency_ms,
        client_disconnected,
        client_stalled,
        outcome,
        code,
        refused_at,
        claimed_agent_id_unverified,
        claimed_principal_address_unverified,
        prompt_tokens,
        completion_tokens,
        total_tokens,
        usage_missing,
        cut_at_shutdown,
    } = event;
    let exact = [
        Some(*latency_ms),
        *path_cut_bytes,
        *prompt_tokens,
        *completion_tokens,
        *total_tokens,
    ]
    .iter()
    .flatten()
    .all(|n| *n <= EXACT_INTEGER);
    if !exact {
        return serde_jcs::to_vec(event).map_err(io::Error::other);
    }
    serde_json::to_vec(&JcsEvent {
        agent_id,
        beneficiary,
        chain_id,
        claimed_agent_id_unverified,
        claimed_principal_address_unverified,
        client_disconnected: *client_disconnected,
        client_stalled: *client_stalled,
        code,
        completion_tokens: *completion_tokens,
        cut_at_shutdown: *cut_at_shutdown,
        envelope_sha256,
        event_id,
        inference_id,
        latency_ms: *latency_ms,
        method,
        model,
        outcome: *outcome,
        passport_expires_at,
        passport_id,
        path,
        path_cut_bytes: *path_cut_bytes,
        principal_address,
        prompt_tokens: *prompt_tokens,
        refused_at,
        request_body_sha256,
        requester_address,
        status: *status,
        total_tokens: *total_tokens,
        usage_missing: *usage_missing,
        v,
        verified_at,
    })
    .map_err(io::Error::other)
}

/// `SHA-256(prev || JCS(event))`.
pub fn chain_hash(prev: &[u8; 32], event: &AttributionEvent) -> io::Result<[u8; 32]> {
    let jcs = jcs(event)?;
    let mut h = Sha256::new();
    h.update(prev);
    h.update(&jcs);
    Ok(h.finalize().into())
}

/// Appends chained lines to a file, rotating by size.
pub struct AuditFileSink {
    name: String,
    path: PathBuf,
    file: File,
    size: u64,
    head: [u8; 32],
    fsync: FsyncPolicy,
    max_bytes: Option<u64>,
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The highest rotation number present next to `path`.
fn last_rotation(path: &Path) -> u32 {
    (1..)
        .take_while(|n| rotated(path, *n).exists())
        .last()
        .unwrap_or(0)
}

/// The hash of the last complete line of `path`, after cutting off an incomplete last
/// line (an interrupted write). `None` for an empty or missing file.
fn recover_head(path: &Path, cut_partial: bool) -> io::Result<Option<[u8; 32]>> {
    let mut file = match OpenOptions::new().read(true).write(cut_partial).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < text.len() && cut_partial {
        tracing::warn!(
            file = %path.display(),
            bytes = text.len() - complete,
            "cutting an incomplete last line left by an interrupted write"
        );
        file.set_len(complete as u64)?;
        file.seek(SeekFrom::End(0))?;
    }
    let Some(last) = text[..complete]
        .split(|b| *b == b'\n')
        .rev()
        .find(|l| !l.is_empty())
    else {
        return Ok(None);
    };
    let line: Line = serde_json::from_slice(last).map_err(|e| {
        io::Error::other(format!(
            "{}: the last line is not an audit line: {e}",
            path.display()
        ))
    })?;
    decode_hash(&line.hash).map(Some).ok_or_else(|| {
        io::Error::other(format!("{}: the last line has a bad hash", path.display()))
    })
}

fn decode_hash(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl AuditFileSink {
    /// Opens (or creates) `path`, continuing the chain from its last complete line, or
    /// from the newest rotated file when `path` is empty.
    pub fn open(
        path: &Path,
        fsync: FsyncPolicy,
        max_bytes: Option<u64>,
    ) -> io::Result<AuditFileSink> {
        let mut head = recover_head(path, true)?;
        if head.is_none() {
            let n = last_rotation(path);
            if n > 0 {
                head = recover_head(&rotated(path, n), false)?;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(AuditFileSink {
            name: format!("audit:{}", path.display()),
            path: path.to_path_buf(),
            file,
            size,
            head: head.unwrap_or(GENESIS),
            fsync,
            max_bytes,
        })
    }

    /// The hash of the last line written: keep it elsewhere to detect lines removed
    /// from the end.
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_all()?;
        let target = rotated(&self.path, last_rotation(&self.path) + 1);
        std::fs::rename(&self.path, &target)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        tracing::info!(rotated_to = %target.display(), "audit file rotated");
        Ok(())
    }
}

impl Sink for AuditFileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, event: &AttributionEvent) -> io::Result<()> {
        if self.max_bytes.is_some_and(|m| self.size >= m) {
            self.rotate()?;
        }
        let hash = chain_hash(&self.head, event)?;
        let line = LineRef {
            prev_hash: super::to_hex(&self.head),
            hash: super::to_hex(&hash),
            event,
        };
        let text = serde_json::to_string(&line).map_err(io::Error::other)?;
        // serde_json writes bidi and C1 controls raw; escaped, an agent_id cannot make
        // the line read differently from its bytes. The hash is over the event's JCS
        // form, which the escape does not change. (The text is copied only when an
        // escape changed it.)
        let escaped = match passport_core::inspect::escape_controls(&text) {
            std::borrow::Cow::Owned(e) => Some(e),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let mut bytes = escaped.unwrap_or(text).into_bytes();
        bytes.push(b'\n');
        // One write call per line: a crash leaves at most one incomplete last line.
        self.file.write_all(&bytes)?;
        self.size += bytes.len() as u64;
        self.head = hash;
        if self.fsync == FsyncPolicy::Always {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.fsync != FsyncPolicy::Never {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// The audit trail records refused requests too (when the layer emits them).
    fn records_refusals(&self) -> bool {
        true
    }
}

/// The outcome of checking audit files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Lines that verified.
    pub lines: u64,
    /// The hash of the last verified line (hex).
    pub head: String,
    /// The first problem, as `file:line: what`, if any.
    pub broken: Option<String>,
    /// Whether the last file ends in an incomplete line (an interrupted write).
    pub incomplete_tail: bool,
    /// Whether the first line continued an earlier chain (its `prev_hash` is not the
    /// genesis hash), so earlier files were not part of the check.
    pub starts_mid_chain: bool,
}

/// Opens `path` for reading; an error names the file (`nope.jsonl: No such file or
/// directory`), so that a user given several files knows which one to fix.
fn open_named(path: &Path) -> io::Result<File> {
    File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Checks the chain across `files`, in order.
pub fn verify_files(files: &[PathBuf]) -> io::Result<ChainReport> {
    let mut report = ChainReport {
        lines: 0,
        head: hex::encode(GENESIS),
        broken: None,
        incomplete_tail: false,
        starts_mid_chain: false,
    };
    let mut expected: Option<[u8; 32]> = None;
    for (fi, path) in files.iter().enumerate() {
        let mut reader = BufReader::new(open_named(path)?);
        let mut buf = Vec::new();
        let mut number = 0u64;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            number += 1;
            let at = format!("{}:{number}", path.display());
            if buf.last() != Some(&b'\n') {
                if fi + 1 == files.len() {
                    report.incomplete_tail = true;
                } else {
                    report.broken = Some(format!(
                        "{at}: incomplete line in the middle of the chain (truncated)"
                    ));
                }
                return Ok(report);
            }
            let fail = |report: &ChainReport, why: String| {
                Ok(ChainReport {
                    broken: Some(format!("{at}: {why}")),
                    ..report.clone()
                })
            };
            let parsed = passport_core::envelope::parse_strict(&buf)
                .map_err(|e| e.to_string())
                .and_then(|v| serde_json::from_value::<Line>(v).map_err(|e| e.to_string()));
            let line = match parsed {
                Ok(l) => l,
                Err(e) => {
                    return fail(
                        &report,
                        format!("not an audit line ({e}): edited or corrupted"),
                    )
                }
            };
            let (Some(prev), Some(hash)) = (decode_hash(&line.prev_hash), decode_hash(&line.hash))
            else {
                return fail(
                    &report,
                    "prev_hash or hash is not 64 hex digits: edited".into(),
                );
            };
            match expected {
                None if prev != GENESIS => report.starts_mid_chain = true,
                Some(e) if prev != e => {
                    return fail(
                        &report,
                        "prev_hash is not the hash of the line before: a line was deleted, inserted or reordered here, or the previous line was edited and rehashed".into(),
                    )
                }
                _ => {}
            }
            if chain_hash(&prev, &line.event)? != hash {
                return fail(
                    &report,
                    "hash does not match the line's content: the event was edited".into(),
                );
            }
            expected = Some(hash);
            report.lines += 1;
            report.head = line.hash;
        }
    }
    Ok(report)
}

/// The events of a set of files, for a report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFiles {
    /// Every event, in order.
    pub events: Vec<AttributionEvent>,
    /// Whether the files are audit files (hash-chained lines); otherwise plain JSON-lines
    /// event files, which have no chain to verify.
    pub chained: bool,
    /// Incomplete last lines (an interrupted write) that were not counted.
    pub incomplete_tails: u64,
}

/// Every event in `files`, in order. A line that is neither an audit line nor an event,
/// or files mixing the two kinds, are an error naming the file and line: nothing is
/// skipped silently. Only an incomplete last line of a file (an interrupted write, not
/// part of the chain) is left out, and counted.
pub fn read_events(files: &[PathBuf]) -> io::Result<EventFiles> {
    let mut out = EventFiles::default();
    let mut kind: Option<bool> = None;
    for path in files {
        let mut reader = BufReader::new(open_named(path)?);
        let mut buf = Vec::new();
        let mut number = 0u64;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            number += 1;
            if buf.pop() != Some(b'\n') {
                out.incomplete_tails += 1;
                break;
            }
            let bad = |why: String| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}:{number}: {why}", path.display()),
                )
            };
            // Audit lines wrap the event; plain JSON-lines sinks write it bare.
            let (event, chained) = match serde_json::from_slice::<Line>(&buf) {
                Ok(l) => (l.event, true),
                Err(_) => match serde_json::from_slice::<AttributionEvent>(&buf) {
                    Ok(e) => (e, false),
                    Err(e) => return Err(bad(format!("neither an audit line nor an event: {e}"))),
                },
            };
            match kind {
                Some(k) if k != chained => {
                    return Err(bad(
                        "audit lines and plain event lines are mixed; report them separately"
                            .into(),
                    ))
                }
                _ => kind = Some(chained),
            }
            out.events.push(event);
        }
    }
    out.chained = kind.unwrap_or(false);
    Ok(out)
}

/// Calls and tokens per day, principal, agent and model.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CallCount {
    /// `YYYY-MM-DD` (UTC) of `verified_at`.
    pub day: String,
    /// The principal.
    pub principal_address: String,
    /// The agent.
    pub agent_id: String,
    /// The model.
    pub model: String,
    /// How many calls.
    pub calls: u64,
    /// Sum of `prompt_tokens` over the calls whose answer carried usage.
    pub prompt_tokens: u64,
    /// Sum of `completion_tokens`.
    pub completion_tokens: u64,
    /// Sum of `total_tokens` (or, for a call whose upstream omitted it, of its
    /// `prompt_tokens + completion_tokens`).
    pub total_tokens: u64,
    /// How many of the calls carried usage.
    pub calls_with_usage: u64,
    /// How many carried none: their tokens are unknown, not zero, and are not in the
    /// sums (`usage_missing` says why).
    pub calls_without_usage: u64,
    /// The calls without usage by reason (`usage_missing`; `unrecorded` for events
    /// written before the reason was recorded).
    pub usage_missing: std::collections::BTreeMap<String, u64>,
}

/// The counters of one row of a usage table (`audit report` and `usage` name them
/// differently), and the one way an accepted event is counted into them.
pub(crate) struct Tally<'a> {
    pub(crate) calls: &'a mut u64,
    pub(crate) with_usage: &'a mut u64,
    pub(crate) without_usage: &'a mut u64,
    pub(crate) usage_missing: &'a mut std::collections::BTreeMap<String, u64>,
    pub(crate) prompt_tokens: &'a mut u64,
    pub(crate) completion_tokens: &'a mut u64,
    pub(crate) total_tokens: &'a mut u64,
}

impl Tally<'_> {
    /// Counts `e`: one call, with usage or without (by reason), and its tokens.
    pub(crate) fn add(self, e: &AttributionEvent) {
        *self.calls += 1;
        match missing_reason(e) {
            None => *self.with_usage += 1,
            Some(why) => {
                *self.without_usage += 1;
                *self.usage_missing.entry(why.to_owned()).or_default() += 1;
            }
        }
        *self.prompt_tokens = self
            .prompt_tokens
            .saturating_add(e.prompt_tokens.unwrap_or(0));
        *self.completion_tokens = self
            .completion_tokens
            .saturating_add(e.completion_tokens.unwrap_or(0));
        *self.total_tokens = self.total_tokens.saturating_add(e.tokens());
    }
}

/// Why `event` has no usage, as reports name it; `None` when it has some.
pub fn missing_reason(event: &AttributionEvent) -> Option<&'static str> {
    if event.has_usage() {
        return None;
    }
    Some(event.usage_missing.map_or("unrecorded", |m| m.as_str()))
}

/// Counts accepted `events` and sums their tokens by day, principal, agent and model,
/// sorted by those keys. Refusal events carry no verified identity and are not counted
/// here (see [`refusals`]).
pub fn summarize(events: &[AttributionEvent]) -> Vec<CallCount> {
    let mut counts: std::collections::BTreeMap<(String, String, String, String), CallCount> =
        Default::default();
    for e in events.iter().filter(|e| e.outcome.is_accepted()) {
        let day = e.verified_at.get(..10).unwrap_or(&e.verified_at).to_owned();
        let key = (
            day,
            e.principal_address.clone(),
            e.agent_id.clone(),
            e.model.clone(),
        );
        let row = counts.entry(key.clone()).or_insert_with(|| CallCount {
            day: key.0,
            principal_address: key.1,
            agent_id: key.2,
            model: key.3,
            calls: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            total_tokens: 0,
            calls_with_usage: 0,
            calls_without_usage: 0,
            usage_missing: Default::default(),
        });
        Tally {
            calls: &mut row.calls,
            with_usage: &mut row.calls_with_usage,
            without_usage: &mut row.calls_without_usage,
            usage_missing: &mut row.usage_missing,
            prompt_tokens: &mut row.prompt_tokens,
            completion_tokens: &mut row.completion_tokens,
            total_tokens: &mut row.total_tokens,
        }
        .add(e);
    }
    counts.into_values().collect()
}

/// How many refused requests `events` record, per code, sorted by code.
pub fn refusals(events: &[AttributionEvent]) -> Vec<(String, u64)> {
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for e in events.iter().filter(|e| !e.outcome.is_accepted()) {
        *counts
            .entry(e.code.clone().unwrap_or_default())
            .or_default() += 1;
    }
    counts.into_iter().collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_jcs_is_serde_jcs() {
        let text = |i: u32| -> String {
            // Every ASCII control, quote, backslash, DEL, non-ASCII, bidi and
            // astral characters, across the fields.
            let specials = [
                "\u{0}",
                "\u{1f}",
                "\u{8}",
                "\t",
                "\n",
                "\u{c}",
                "\r",
                "\"",
                "\\",
                "/",
                "\u{7f}",
                "\u{80}",
                "\u{e9}",
                "\u{2028}",
                "\u{202e}",
                "\u{ffff}",
                "\u{1f600}",
                "plain",
            ];
            specials
                .iter()
                .cycle()
                .skip(i as usize)
                .take(5)
                .copied()
                .collect()
        };
        let full = |i: u32, n: u64| AttributionEvent {
            v: text(i),
            event_id: text(i + 1),
            inference_id: text(i + 2),
            chain_id: text(i + 3),
            model: text(i + 4),
            agent_id: text(i + 5),
            principal_address: text(i + 6),
            beneficiary: Some(text(i + 7)),
            requester_address: Some(text(i + 8)),
            request_body_sha256: text(i + 9),
            envelope_sha256: text(i + 10),
            passport_id: text(i + 11),
            passport_expires_at: text(i + 12),
            verified_at: text(i + 13),
            method: text(i + 14),
            path: text(i + 15),
            path_cut_bytes: Some(n),
            status: 499,
            latency_ms: n,
            client_disconnected: true,
            client_stalled: true,
            outcome: Outcome::Refused,
            code: Some(text(i + 16)),
            refused_at: Some(text(i + 17)),
            claimed_agent_id_unverified: Some(text(i + 18)),
            claimed_principal_address_unverified: Some(text(i + 19)),
            prompt_tokens: Some(n / 2),
            completion_tokens: Some(n / 3),
            total_tokens: Some(n),
            usage_missing: Some(super::super::UsageMissing::TooLarge),
            cut_at_shutdown: true,
        };
        let mut events = vec![AttributionEvent::default(), event(1)];
        for (i, n) in [
            0,
            1,
            999,
            EXACT_INTEGER - 1,
            EXACT_INTEGER,
            EXACT_INTEGER + 1,
            u64::MAX,
        ]
        .into_iter()
        .enumerate()
        {
            events.push(full(i as u32, n));
        }
        for e in &events {
            assert_eq!(
                String::from_utf8(jcs(e).unwrap()).unwrap(),
                String::from_utf8(serde_jcs::to_vec(e).unwrap()).unwrap()
            );
        }
    }

    use super::*;

    pub(crate) fn event(n: u64) -> AttributionEvent {
        AttributionEvent {
            v: super::super::EVENT_VERSION.into(),
            event_id: format!("{n:032x}"),
            inference_id: format!("inf-{n}"),
            chain_id: "gonka-mainnet".into(),
            model: if n % 2 == 0 {
                "m-even".into()
            } else {
                "m-odd".into()
            },
            agent_id: "urn:aps:agent:a".into(),
            principal_address: "gonka1p".into(),
            beneficiary: None,
            requester_address: None,
            request_body_sha256: "00".repeat(32),
            envelope_sha256: "11".repeat(32),
            passport_expires_at: "2026-05-21T13:00:00Z".into(),
            verified_at: format!("2026-05-2{}T12:00:00Z", 1 + n % 2),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            status: 200,
            latency_ms: n,
            passport_id: String::new(),
            client_disconnected: false,
            ..Default::default()
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pg-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(path: &Path, range: std::ops::Range<u64>, max_bytes: Option<u64>) -> [u8; 32] {
        let mut s = AuditFileSink::open(path, FsyncPolicy::Batch, max_bytes).unwrap();
        for n in range {
            s.write(&event(n)).unwrap();
        }
        s.flush().unwrap();
        s.head()
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_report_counts_by_day_principal_agent_and_model() {
        let events: Vec<_> = (0..5).map(event).collect();
        let rows = summarize(&events);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].day.as_str(), rows[0].model.as_str(), rows[0].calls),
            ("2026-05-21", "m-even", 3)
        );
        assert_eq!(
            (rows[1].day.as_str(), rows[1].model.as_str(), rows[1].calls),
            ("2026-05-22", "m-odd", 2)
        );
    }

    #[test]
    fn the_report_sums_prompt_and_completion_when_total_tokens_is_absent() {
        let mut e = event(0);
        (e.prompt_tokens, e.completion_tokens) = (Some(4), Some(7));
        let mut without = event(2);
        without.usage_missing = Some(crate::attribution::UsageMissing::NotInStream);
        let rows = summarize(&[e, without, event(4)]);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.prompt_tokens, r.completion_tokens, r.total_tokens),
            (4, 7, 11)
        );
        assert_eq!(
            (r.calls, r.calls_with_usage, r.calls_without_usage),
            (3, 1, 2)
        );
        assert_eq!(r.usage_missing.get("not_in_stream"), Some(&1));
        assert_eq!(r.usage_missing.get("unrecorded"), Some(&1));
    }

    #[test]
    fn a_missing_file_is_named() {
        let missing = dir("missing").join("nope.jsonl");
        for e in [
            verify_files(std::slice::from_ref(&missing)).unwrap_err(),
            read_events(std::slice::from_ref(&missing)).unwrap_err(),
        ] {
            assert!(e.to_string().contains("nope.jsonl: "), "{e}");
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
        }
    }

    #[test]
    fn an_untouched_chain_verifies_and_reports_its_head() {
        let d = dir("ok");
        let p = d.join("audit.jsonl");
        let head = write(&p, 0..5, None);
        let r = verify_files(&[p]).unwrap();
        assert_eq!(r.lines, 5);
        assert_eq!(r.head, hex::encode(head));
        assert_eq!(r.broken, None);
        assert!(!r.starts_mid_chain);
    }

    #[test]
    fn the_chain_continues_across_reopening() {
        let d = dir("reopen");
        let p = d.join("audit.jsonl");
        write(&p, 0..3, None);
        write(&p, 3..6, None);
        assert_eq!(verify_files(&[p]).unwrap().lines, 6);
    }

    #[test]
    fn a_report_needs_a_verified_chain_unless_told_to_skip_the_check() {
        let d = dir("report-rule");
        let p = d.join("audit.jsonl");
        write(&p, 0..4, None);
        let ok = report(std::slice::from_ref(&p), ChainCheck::Verify).unwrap();
        assert!(matches!(&ok.chain, ChainStatus::Verified(r) if r.lines == 4));
        assert_eq!(ok.rows.iter().map(|r| r.calls).sum::<u64>(), 4);
        let mut l = lines(&p);
        l[1] = l[1].replace("m-odd", "m-even");
        std::fs::write(&p, l.join("\n") + "\n").unwrap();
        let refused = report(std::slice::from_ref(&p), ChainCheck::Verify).unwrap_err();
        assert!(matches!(refused, ReportError::Broken(_)), "{refused}");
        let skipped = report(&[p], ChainCheck::Skip).unwrap();
        assert_eq!(skipped.chain, ChainStatus::NotChecked);
    }

    fn tampered(name: &str, edit: impl Fn(&mut Vec<String>)) -> ChainReport {
        let d = dir(name);
        let p = d.join("audit.jsonl");
        write(&p, 0..6, None);
        let mut l = lines(&p);
        edit(&mut l);
        std::fs::write(&p, l.join("\n") + "\n").unwrap();
        verify_files(&[p]).unwrap()
    }

    #[test]
    fn an_edited_line_is_named() {
        let r = tampered("edit", |l| l[2] = l[2].replace("m-even", "m-odd"));
        assert!(
            r.broken
                .as_deref()
                .unwrap()
                .contains("audit.jsonl:3: hash does not match"),
            "{r:?}"
        );
    }

    #[test]
    fn an_edited_and_rehashed_line_breaks_the_next_link() {
        let r = tampered("rehash", |l| {
            let mut line: serde_json::Value = serde_json::from_str(&l[2]).unwrap();
            line["event"]["model"] = "forged".into();
            let event: AttributionEvent = serde_json::from_value(line["event"].clone()).unwrap();
            let prev = decode_hash(line["prev_hash"].as_str().unwrap()).unwrap();
            line["hash"] = hex::encode(chain_hash(&prev, &event).unwrap()).into();
            l[2] = line.to_string();
        });
        assert!(
            r.broken
                .as_deref()
                .unwrap()
                .contains("audit.jsonl:4: prev_hash"),
            "{r:?}"
        );
    }

    #[test]
    fn a_deleted_line_is_named() {
        let r = tampered("delete", |l| {
            l.remove(3);
        });
        assert!(
            r.broken
                .as_deref()
                .unwrap()
                .contains("audit.jsonl:4: prev_hash"),
            "{r:?}"
        );
    }

    #[test]
    fn reordered_lines_are_named() {
        let r = tampered("reorder", |l| l.swap(1, 2));
        assert!(
            r.broken
                .as_deref()
                .unwrap()
                .contains("audit.jsonl:2: prev_hash"),
            "{r:?}"
        );
    }

    #[test]
    fn truncation_in_the_middle_is_named_and_at_the_end_needs_the_head() {
        let r = tampered("cut-middle", |l| l[2].truncate(40));
        assert!(
            r.broken
                .as_deref()
                .unwrap()
                .contains("audit.jsonl:3: not an audit line"),
            "{r:?}"
        );
        let full = tampered("cut-none", |_| {});
        let cut = tampered("cut-end", |l| {
            l.pop();
        });
        assert_eq!(
            cut.broken, None,
            "lines removed from the end are not detectable alone"
        );
        assert_ne!(cut.head, full.head, "but the head hash differs");
    }

    #[test]
    fn an_interrupted_last_line_is_reported_and_cut_on_reopen() {
        let d = dir("partial");
        let p = d.join("audit.jsonl");
        write(&p, 0..3, None);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"prev_hash\":\"00").unwrap();
        drop(f);
        let r = verify_files(std::slice::from_ref(&p)).unwrap();
        assert_eq!((r.lines, r.incomplete_tail, r.broken), (3, true, None));
        write(&p, 3..5, None);
        let r = verify_files(&[p]).unwrap();
        assert_eq!((r.lines, r.incomplete_tail, r.broken), (5, false, None));
    }

    #[test]
    fn rotation_continues_the_chain_across_files() {
        let d = dir("rotate");
        let p = d.join("audit.jsonl");
        write(&p, 0..10, Some(1500));
        let n = last_rotation(&p);
        assert!(n >= 2, "rotated {n} times");
        let mut files: Vec<PathBuf> = (1..=n).map(|i| rotated(&p, i)).collect();
        files.push(p.clone());
        let r = verify_files(&files).unwrap();
        assert_eq!((r.lines, r.broken), (10, None));
        // Verifying from a later file alone works, and says it starts mid-chain.
        let r = verify_files(&files[1..]).unwrap();
        assert!(r.starts_mid_chain && r.broken.is_none());
        // Reopening after rotation continues from the newest file.
        write(&p, 10..12, Some(1500));
        let mut files: Vec<PathBuf> = (1..=last_rotation(&p)).map(|i| rotated(&p, i)).collect();
        files.push(p);
        assert_eq!(verify_files(&files).unwrap().lines, 12);
    }
}

/// Whether a report checks the hash chain of audit files first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainCheck {
    /// Check it, and refuse to report on a broken chain.
    Verify,
    /// Do not check it (the numbers may include edited lines).
    Skip,
}

/// What a report knows of the chain behind its numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainStatus {
    /// Plain JSON-lines event files: there is no chain to check.
    Unchained,
    /// Audit files whose chain was not checked ([`ChainCheck::Skip`]).
    NotChecked,
    /// Audit files whose chain verified.
    Verified(ChainReport),
}

/// Calls and tokens of a set of files, with what is known of their chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// What is known of the chain.
    pub chain: ChainStatus,
    /// Whether any event was read.
    pub has_events: bool,
    /// Incomplete last lines (an interrupted write) that were not counted.
    pub incomplete_tails: u64,
    /// Calls and tokens by day, principal, agent and model.
    pub rows: Vec<CallCount>,
    /// Refused requests by code.
    pub refusals: Vec<(String, u64)>,
}

/// Why no report was made.
#[derive(Debug)]
pub enum ReportError {
    /// The events could not be read (or a line is neither an audit line nor an event).
    Read(io::Error),
    /// The chain could not be checked.
    Verify(io::Error),
    /// The chain is broken at `file:line: what`: numbers over it would not be evidence.
    Broken(String),
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportError::Read(e) => write!(f, "cannot read the events: {e}"),
            ReportError::Verify(e) => write!(f, "cannot check the chain: {e}"),
            ReportError::Broken(at) => write!(f, "the chain is BROKEN at {at}"),
        }
    }
}

impl std::error::Error for ReportError {}

/// Summarises `files` (audit files in chain order, or JSON-lines event files). Audit
/// files are reported only over a verified chain unless `check` is
/// [`ChainCheck::Skip`]: a broken chain is [`ReportError::Broken`].
pub fn report(files: &[PathBuf], check: ChainCheck) -> Result<Report, ReportError> {
    let (chain, read) = load(files, check)?;
    Ok(Report {
        chain,
        has_events: !read.events.is_empty(),
        incomplete_tails: read.incomplete_tails,
        rows: summarize(&read.events),
        refusals: refusals(&read.events),
    })
}

/// The events of `files` and what is known of their chain, checked first unless `check`
/// is [`ChainCheck::Skip`]: every report over audit files ([`report`], the accounting
/// of [`super::accounting`]) reads them through here, so none counts over a broken
/// chain.
pub fn load(
    files: &[PathBuf],
    check: ChainCheck,
) -> Result<(ChainStatus, EventFiles), ReportError> {
    let read = read_events(files).map_err(ReportError::Read)?;
    let chain = if !read.chained {
        ChainStatus::Unchained
    } else if check == ChainCheck::Skip {
        ChainStatus::NotChecked
    } else {
        let r = verify_files(files).map_err(ReportError::Verify)?;
        if let Some(broken) = r.broken {
            return Err(ReportError::Broken(broken));
        }
        ChainStatus::Verified(r)
    };
    Ok((chain, read))
}
