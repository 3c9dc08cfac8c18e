//! `passport-gate audit`: check or summarise audit files.

use crate::cli::output::{say, Failure};
use crate::terminal::escape_controls;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the hash chain across FILEs (oldest first) and name the first broken line.
    Verify {
        /// Audit files in chain order (rotated files first: audit.jsonl.1, .2, ..., audit.jsonl).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The head hash kept elsewhere; lines removed from the end are detected against it.
        #[arg(long)]
        head: Option<String>,
    },
    /// Summarise calls and tokens by day, principal, agent and model, after checking
    /// the hash chain of audit files (a broken chain is not reported).
    Report {
        /// Audit files in chain order, or JSON-lines event files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Report without checking the chain (a loud warning says so).
        #[arg(long)]
        no_verify: bool,
    },
}

pub fn run(a: &AuditCommand) -> Result<u8, Failure> {
    use passport_gate::attribution::audit::{self, verify_files, ChainCheck};
    match a {
        AuditCommand::Verify { files, head } => {
            // A head that no chain can end at is a typo: said before reading anything.
            if let Some(h) = head {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Failure(
                        format!(
                            "--head \"{}\": expected the 64 hex digits of a head hash, as `audit verify` prints it (\"head hash: ...\")",
                            escape_controls(h)
                        ),
                        2,
                    ));
                }
            }
            let r = verify_files(files).map_err(|e| Failure(format!("cannot read: {e}"), 2))?;
            if r.starts_mid_chain {
                say!("note: the first line continues an earlier file; give every file from the first to check the whole chain");
            }
            if let Some(broken) = &r.broken {
                say!("BROKEN at {broken}");
                say!("{} line(s) verified before it", r.lines);
                return Ok(1);
            }
            if r.incomplete_tail {
                say!("note: the last line is incomplete (an interrupted write); it is not part of the chain");
            }
            // A mismatch is the verdict: nothing before it may read as "ok".
            if let Some(h) = head.as_deref().filter(|h| !h.eq_ignore_ascii_case(&r.head)) {
                say!("HEAD MISMATCH: the files end at head hash {}, not at {h}; lines were removed from the end or the files are not the ones that hash was taken from", r.head);
                say!("{} line(s) chained correctly up to that head", r.lines);
                return Ok(1);
            }
            say!("ok: {} line(s) verified", r.lines);
            say!("head hash: {}", r.head);
            if head.is_some() {
                say!("head matches the expected hash");
            } else {
                say!(
                    "lines removed from the end cannot be detected from the files alone: keep the head hash elsewhere and check it with --head"
                );
            }
            Ok(0)
        }
        AuditCommand::Report {
            files,
            json,
            no_verify,
        } => {
            let check = if *no_verify {
                ChainCheck::Skip
            } else {
                ChainCheck::Verify
            };
            let report = audit::report(files, check)
                .map_err(|e| not_reported(e, "; --no-verify reports anyway"))?;
            print_chain(&report.chain, report.has_events, report.incomplete_tails);
            let rows = &report.rows;
            let refused = &report.refusals;
            if *json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(rows).map_err(|e| e.to_string())?
                );
                return Ok(0);
            }
            say!(
                "{:<10}  {:<46}  {:<32}  {:<24}  {:>7}  {:>8}  {:>10}  {:>10}  {:>10}",
                "day",
                "principal",
                "agent",
                "model",
                "calls",
                "no usage",
                "prompt",
                "completion",
                "tokens"
            );
            let mut missing = std::collections::BTreeMap::<&str, u64>::new();
            for r in rows {
                say!(
                    "{:<10}  {:<46}  {:<32}  {:<24}  {:>7}  {:>8}  {:>10}  {:>10}  {:>10}",
                    escape_controls(&r.day),
                    escape_controls(&r.principal_address),
                    escape_controls(&r.agent_id),
                    escape_controls(&r.model),
                    r.calls,
                    r.calls_without_usage,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.total_tokens
                );
                for (why, n) in &r.usage_missing {
                    *missing.entry(why).or_default() += n;
                }
            }
            for (code, n) in refused {
                say!("refused ({}): {n}", escape_controls(code));
            }
            for (why, n) in &missing {
                say!("calls without usage ({why}): {n}, their tokens unknown and not in the sums");
            }
            let calls: u64 = rows.iter().map(|r| r.calls).sum();
            say!("{calls} call(s) in {} event file(s)", files.len());
            Ok(0)
        }
    }
}

/// The failure of a report that could not be made (shared with `usage`); `hint` follows
/// the advice given for a broken chain.
pub(crate) fn not_reported(
    e: passport_gate::attribution::audit::ReportError,
    hint: &str,
) -> Failure {
    use passport_gate::attribution::audit::ReportError;
    match e {
        ReportError::Read(e) => Failure(format!("cannot report: {e}"), 2),
        ReportError::Verify(e) => Failure(format!("cannot read: {e}"), 2),
        ReportError::Broken(broken) => Failure(
            format!("not reporting: the chain is BROKEN at {broken} (see `passport-gate audit verify`{hint})"),
            1,
        ),
    }
}

/// Says on stderr what is known of the chain behind a report's numbers (shared with
/// `usage`).
pub(crate) fn print_chain(
    chain: &passport_gate::attribution::audit::ChainStatus,
    has_events: bool,
    incomplete_tails: u64,
) {
    use passport_gate::attribution::audit::ChainStatus;
    match chain {
        ChainStatus::Unchained => {
            if has_events {
                eprintln!("WARNING: plain JSON-lines event files have no hash chain: these numbers are NOT verified");
            }
        }
        ChainStatus::NotChecked => {
            eprintln!("WARNING: --no-verify: the hash chain was NOT checked; these numbers may include edited, inserted or reordered lines, and miss deleted ones");
        }
        ChainStatus::Verified(r) => {
            eprintln!(
                "chain verified: {} line(s), head hash {} (compare it with the head kept elsewhere: lines removed from the end are not detected otherwise)",
                r.lines, r.head
            );
            if r.starts_mid_chain {
                eprintln!("note: the first line continues an earlier file; give every file from the first to check the whole chain");
            }
        }
    }
    if incomplete_tails > 0 {
        eprintln!(
            "note: {incomplete_tails} incomplete last line(s) (an interrupted write) not counted"
        );
    }
}
