//! The limit policy: defaults for every principal and every agent, and overrides per
//! principal and per agent from a policy file, reloaded when it changes.
//!
//! The file is a subset of TOML, read line by line so that one bad line is named by its
//! number and costs no other line:
//!
//! ```toml
//! [principal."gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27"]
//! requests_per_minute = 10
//! tokens_per_day = 50_000
//!
//! [agent."gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27/urn:aps:agent:batch"]
//! concurrent_requests = 2
//! ```
//!
//! An agent is named `<principal address>/<agent_id>` (see [`super::agent_key`]). A key
//! an override leaves out takes the default.
//!
//! **A bad line never widens anyone's limits, and never blocks a tightening.** On a
//! reload, entries without a bad line take their new values. An entry with a bad line
//! (an unknown key, a value that is not a number in range, a repeated key) keeps, for
//! each key, the tighter of its last values and what its good lines say. A bad section
//! header makes the lines under it belong to no entry; so while the file has a bad line,
//! an entry that disappeared keeps the tighter of its last values and the defaults. At
//! startup a bad line is refused.

use super::{tighter, Quota, QUOTA_KEYS, QUOTA_MAX};
use crate::metrics::IntCounter;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The keys one override sets, in the order of [`QUOTA_KEYS`]; `None` takes the default.
pub type QuotaOverride = [Option<u64>; 5];

/// The largest policy file read, in bytes.
pub const MAX_POLICY_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Defaults and overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyTable {
    /// `[limits.principal]`.
    pub principal: Quota,
    /// `[limits.agent]`.
    pub agent: Quota,
    /// Overrides by principal address.
    pub principals: HashMap<String, QuotaOverride>,
    /// Overrides by agent key (`<principal>/<agent_id>`).
    pub agents: HashMap<String, QuotaOverride>,
}

fn effective(default: &Quota, o: Option<&QuotaOverride>) -> Quota {
    let d = default.values();
    let mut v = d;
    if let Some(o) = o {
        for i in 0..5 {
            v[i] = o[i].unwrap_or(d[i]);
        }
    }
    Quota::from_values(v)
}

/// A bad line of the policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Principal,
    Agent,
}

/// What one reading of the file gave.
#[derive(Debug, Default)]
struct Parsed {
    /// Entries, with whether they had a bad line.
    entries: HashMap<(Kind, String), (QuotaOverride, bool)>,
    errors: Vec<PolicyError>,
}

/// A section header: `[principal."…"]` or `[agent."…"]`.
fn header(line: &str) -> Result<(Kind, String), String> {
    let inner = line
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .ok_or("a section header is [principal.\"address\"] or [agent.\"principal/agent_id\"]")?;
    let (kind, name) = inner
        .split_once('.')
        .ok_or("a section header is [principal.\"address\"] or [agent.\"principal/agent_id\"]")?;
    let kind = match kind.trim() {
        "principal" => Kind::Principal,
        "agent" => Kind::Agent,
        other => return Err(format!("unknown section {other:?}; use principal or agent")),
    };
    let name = name
        .trim()
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .filter(|n| !n.is_empty() && !n.contains(['"', '\\']))
        .ok_or("the name must be a non-empty quoted string without \" or \\")?;
    let name = match kind {
        Kind::Principal => principal_name(name)?,
        Kind::Agent => match name.split_once('/') {
            Some((principal, id)) if !id.is_empty() => {
                format!("{}/{id}", principal_name(principal)?)
            }
            _ => return Err("an agent is named \"<principal address>/<agent_id>\"".into()),
        },
    };
    Ok((kind, name))
}

/// A principal's name in the one spelling a passport carries (lowercase bech32, a
/// 20-byte account), as the allowlist reads it: written all in uppercase, it is
/// lowercased; mixed case or a checksum error is refused, so that an override never
/// names a principal it can never apply to.
fn principal_name(address: &str) -> Result<String, String> {
    let normal = if address.bytes().any(|b| b.is_ascii_lowercase()) {
        address.to_owned()
    } else {
        address.to_ascii_lowercase()
    };
    let prefix = normal.rfind('1').map_or("", |i| &normal[..i]);
    passport_core::crypto::check_address(prefix, &normal)
        .map_err(|p| format!("{address:?} is not a principal address: {p}"))?;
    Ok(normal)
}

/// A `key = value` line.
fn setting(line: &str) -> Result<(usize, u64), String> {
    let (key, value) = line
        .split_once('=')
        .ok_or("expected key = value or a section header")?;
    let key = key.trim();
    let i = QUOTA_KEYS
        .iter()
        .position(|k| *k == key)
        .ok_or_else(|| format!("unknown key {key:?}; keys: {}", QUOTA_KEYS.join(", ")))?;
    let value = value.split('#').next().unwrap_or("").trim();
    let digits = value.replace('_', "");
    let n: u64 = digits
        .parse()
        .ok()
        .filter(|_| !value.starts_with('_') && !value.ends_with('_') && !value.contains("__"))
        .ok_or_else(|| format!("{key}: {value:?} is not a whole number"))?;
    if n > QUOTA_MAX[i] {
        return Err(format!(
            "{key}: {n} is out of range; accepted: 0 to {}",
            QUOTA_MAX[i]
        ));
    }
    Ok((i, n))
}

fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    // The entry the following lines set, `None` under a bad header.
    let mut current: Option<(Kind, String)> = None;
    let mut orphaned = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |problem: String| PolicyError {
            line: n + 1,
            problem,
        };
        if line.starts_with('[') {
            match header(line) {
                Ok(entry) if parsed.entries.contains_key(&entry) => {
                    parsed
                        .errors
                        .push(bad(format!("{:?} appears twice", entry.1)));
                    parsed.entries.entry(entry.clone()).or_default().1 = true;
                    current = Some(entry);
                    orphaned = false;
                }
                Ok(entry) => {
                    parsed.entries.insert(entry.clone(), ([None; 5], false));
                    current = Some(entry);
                    orphaned = false;
                }
                Err(problem) => {
                    parsed.errors.push(bad(problem));
                    current = None;
                    orphaned = true;
                }
            }
            continue;
        }
        let Some(entry) = &current else {
            if !orphaned {
                parsed.errors.push(bad(
                    "a setting outside a [principal.\"…\"] or [agent.\"…\"] section".into(),
                ));
            }
            continue;
        };
        let Some((values, had_bad)) = parsed.entries.get_mut(entry) else {
            continue;
        };
        match setting(line) {
            Ok((i, _)) if values[i].is_some() => {
                *had_bad = true;
                parsed
                    .errors
                    .push(bad(format!("{} is set twice", QUOTA_KEYS[i])));
            }
            Ok((i, v)) => values[i] = Some(v),
            Err(problem) => {
                *had_bad = true;
                parsed.errors.push(bad(problem));
            }
        }
    }
    parsed
}

/// The limits in force, shared by the limiter and the file watcher.
#[derive(Debug)]
pub struct LimitPolicy {
    table: RwLock<Arc<PolicyTable>>,
}

impl LimitPolicy {
    /// A policy with these defaults and overrides.
    pub fn new(table: PolicyTable) -> LimitPolicy {
        LimitPolicy {
            table: RwLock::new(Arc::new(table)),
        }
    }

    /// The tables in force.
    pub fn table(&self) -> Arc<PolicyTable> {
        match self.table.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The quotas of `principal` and of the agent `agent_key`.
    pub fn quotas(&self, principal: &str, agent_key: &str) -> (Quota, Quota) {
        let t = self.table();
        (
            effective(&t.principal, t.principals.get(principal)),
            effective(&t.agent, t.agents.get(agent_key)),
        )
    }

    /// Reads the file at startup: every bad line refuses it.
    pub fn load_initial(&self, path: &Path) -> Result<(), Vec<String>> {
        let text = read(path).map_err(|e| vec![e])?;
        let parsed = parse(&text);
        if !parsed.errors.is_empty() {
            return Err(parsed
                .errors
                .iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect());
        }
        self.apply(parsed);
        Ok(())
    }

    /// Takes a changed file (see the module documentation for bad lines). Returns its
    /// bad lines.
    pub fn reload(&self, text: &str) -> Vec<PolicyError> {
        let parsed = parse(text);
        let errors = parsed.errors.clone();
        self.apply(parsed);
        errors
    }

    fn apply(&self, parsed: Parsed) {
        let old = self.table();
        let mut next = PolicyTable {
            principal: old.principal,
            agent: old.agent,
            principals: HashMap::new(),
            agents: HashMap::new(),
        };
        let has_errors = !parsed.errors.is_empty();
        let default = |kind: Kind| match kind {
            Kind::Principal => old.principal,
            Kind::Agent => old.agent,
        };
        let old_override = |kind: Kind, name: &str| match kind {
            Kind::Principal => old.principals.get(name).copied(),
            Kind::Agent => old.agents.get(name).copied(),
        };
        let tightened = |kind: Kind, name: &str, new: &QuotaOverride| -> QuotaOverride {
            let d = default(kind);
            let was = effective(&d, old_override(kind, name).as_ref()).values();
            let now = effective(&d, Some(new)).values();
            let mut out = [None; 5];
            for i in 0..5 {
                out[i] = Some(tighter(was[i], now[i]));
            }
            out
        };
        let mut put = |kind: Kind, name: String, o: QuotaOverride| match kind {
            Kind::Principal => next.principals.insert(name, o),
            Kind::Agent => next.agents.insert(name, o),
        };
        let mut seen: std::collections::HashSet<(Kind, &str)> = Default::default();
        for ((kind, name), (values, bad)) in &parsed.entries {
            seen.insert((*kind, name.as_str()));
            let o = if *bad {
                tightened(*kind, name, values)
            } else {
                *values
            };
            put(*kind, name.clone(), o);
        }
        if has_errors {
            let gone: Vec<(Kind, String)> = old
                .principals
                .keys()
                .map(|n| (Kind::Principal, n.clone()))
                .chain(old.agents.keys().map(|n| (Kind::Agent, n.clone())))
                .filter(|(k, n)| !seen.contains(&(*k, n.as_str())))
                .collect();
            for (kind, name) in gone {
                let o = tightened(kind, &name, &[None; 5]);
                put(kind, name, o);
            }
        }
        match self.table.write() {
            Ok(mut t) => *t = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
    }

    /// Reloads `path` every `interval` when it changed; each bad line is logged with the
    /// file and its number and counted on `bad_lines`.
    pub fn watch_file(
        self: &Arc<Self>,
        path: PathBuf,
        interval: Duration,
        bad_lines: IntCounter,
    ) -> std::io::Result<()> {
        crate::watch::watch_file(
            "passport-gate-limits-policy",
            self,
            path,
            interval,
            move |policy: &LimitPolicy, path: &Path| match read(path) {
                Ok(text) => {
                    let errors = policy.reload(&text);
                    for e in &errors {
                        bad_lines.inc();
                        tracing::warn!(file = %path.display(), line = e.line, problem = %e.problem,
                            "limits policy: bad line; that entry keeps the tighter of its last and its new values");
                    }
                    if errors.is_empty() {
                        tracing::info!(file = %path.display(), "limits policy reloaded");
                    }
                }
                Err(e) => {
                    bad_lines.inc();
                    tracing::warn!(error = %e, "limits policy not reloaded; the last one stays in force");
                }
            },
        )
    }
}

fn read(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_POLICY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_POLICY_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_POLICY_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27";

    fn policy() -> LimitPolicy {
        LimitPolicy::new(PolicyTable {
            principal: Quota {
                requests_per_minute: 60,
                tokens_per_day: 1000,
                ..Quota::default()
            },
            agent: Quota {
                requests_per_minute: 30,
                ..Quota::default()
            },
            ..PolicyTable::default()
        })
    }

    fn rpm(p: &LimitPolicy, principal: &str) -> u64 {
        p.quotas(principal, "x/y").0.requests_per_minute
    }

    #[test]
    fn overrides_replace_the_defaults_key_by_key() {
        let p = policy();
        let errors = p.reload(
            "# comment\n[principal.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27\"]\nrequests_per_minute = 10\n\n[agent.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27/a\"]\ntokens_per_day = 5_000 # daily\n",
        );
        assert_eq!(errors, vec![]);
        let (pq, aq) = p.quotas(P, "gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27/a");
        assert_eq!(pq.requests_per_minute, 10);
        assert_eq!(pq.tokens_per_day, 1000);
        assert_eq!(aq.requests_per_minute, 30);
        assert_eq!(aq.tokens_per_day, 5000);
    }

    #[test]
    fn a_bad_line_is_named_by_number() {
        let p = policy();
        let errors = p.reload("[principal.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27\"]\nrequests_per_minut = 5\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].problem.contains("requests_per_minut"));
        let errors = p.reload("[principal.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27\"]\n\nrequests_per_minute = lots\n");
        assert_eq!(errors[0].line, 3);
        let errors = p.reload("[principl.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27\"]\n");
        assert_eq!(errors[0].line, 1);
    }

    #[test]
    fn a_bad_line_never_widens_the_entry_it_is_in() {
        let p = policy();
        p.reload("[principal.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27\"]\nrequests_per_minute = 10\n");
        // A typo in the key: the entry keeps 10, not the default 60.
        p.reload("[principal.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27\"]\nrequests_per_minut = 100\n");
        assert_eq!(rpm(&p, P), 10);
        // A wider value next to a bad line is not taken either.
        p.reload("[principal.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27\"]\nrequests_per_minute = 100\ntokens_per_dya = 1\n");
        assert_eq!(rpm(&p, P), 10);
    }

    #[test]
    fn a_bad_line_never_blocks_a_tightening() {
        let p = policy();
        p.reload("[principal.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27\"]\nrequests_per_minute = 10\n[principal.\"gonka1qgpqyqszqgpqyqszqgpqyqszqgpqyqsznzq9pg\"]\nrequests_per_minute = 40\n");
        p.reload(
            "[principal.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27\"]\nrequests_per_minute = 3\nbogus = 1\n[principal.\"gonka1qgpqyqszqgpqyqszqgpqyqszqgpqyqsznzq9pg\"]\nrequests_per_minute = 5\n",
        );
        assert_eq!(rpm(&p, P), 3);
        assert_eq!(rpm(&p, "gonka1qgpqyqszqgpqyqszqgpqyqszqgpqyqsznzq9pg"), 5);
    }

    #[test]
    fn a_bad_header_never_widens_the_entry_it_hid() {
        let p = policy();
        p.reload("[principal.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27\"]\nrequests_per_minute = 10\n");
        p.reload("[principl.\"gonka1qyqszqgpqyqszqgpqyqszqgpqyqszqgpzxxq27\"]\nrequests_per_minute = 100\n");
        assert_eq!(rpm(&p, P), 10);
        // Once the file is good again, the entry goes as the file says.
        p.reload("");
        assert_eq!(rpm(&p, P), 60);
    }

    #[test]
    fn startup_refuses_a_bad_line_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("pg-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("limits.toml");
        std::fs::write(&path, "[agent.\"nope\"]\n").unwrap();
        let errors = policy().load_initial(&path).unwrap_err();
        assert!(errors[0].contains("limits.toml: line 1:"), "{errors:?}");
    }

    #[test]
    fn a_principal_no_passport_can_carry_is_a_bad_line_and_uppercase_is_lowercased() {
        let p = LimitPolicy::new(PolicyTable::default());
        let upper = P.to_uppercase();
        let mixed = format!("G{}", &P[1..]);
        let typo = P.replace("zxxq27", "zxxq28");
        let text = format!(
            "[principal.\"{mixed}\"]\n[principal.\"{typo}\"]\n[agent.\"{mixed}/a\"]\n[agent.\"{P}/\"]\n[principal.\"{upper}\"]\nrequests_per_minute = 1\n[agent.\"{upper}/urn:A/b\"]\nrequests_per_minute = 2\n"
        );
        let errors = p.reload(&text);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 3, 4], "{errors:?}");
        assert!(errors[0].problem.contains("not lowercase"), "{errors:?}");
        assert!(errors[1].problem.contains("checksum"), "{errors:?}");
        let (pq, aq) = p.quotas(P, &format!("{P}/urn:A/b"));
        assert_eq!((pq.requests_per_minute, aq.requests_per_minute), (1, 2));
    }
}
