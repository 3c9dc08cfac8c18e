//! `passport-gate usage`: requests and tokens per principal and agent (and model) per
//! period, for billing, after checking the hash chain of the audit files.

use crate::cli::output::{say, Failure};
use clap::{Args, ValueEnum};
use passport_gate::attribution::accounting::{self, GroupBy, Period, UsageRow};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct UsageArgs {
    /// Audit files in chain order (rotated files first: audit.jsonl.1, .2, ..., audit.jsonl),
    /// or JSON-lines event files; repeat the option or give several after it.
    #[arg(long = "audit-file", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// What rows are grouped by, besides the period: a comma-separated list of
    /// `principal`, `agent`, `model`.
    #[arg(long, default_value = "principal,agent", value_delimiter = ',')]
    by: Vec<String>,
    /// The period of a row, from `verified_at` (UTC): `hour`, `day`, `month` or `all`.
    #[arg(long, default_value = "day")]
    period: String,
    /// Output: an aligned table, CSV (one column per reason usage is missing), or JSON.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

pub fn run(a: &UsageArgs) -> Result<u8, Failure> {
    let mut by = Vec::new();
    for name in &a.by {
        let g = GroupBy::parse(name.trim()).ok_or_else(|| {
            Failure(
                format!("--by: unknown `{name}`; use principal, agent or model, comma-separated"),
                2,
            )
        })?;
        if !by.contains(&g) {
            by.push(g);
        }
    }
    let period = Period::parse(&a.period).ok_or_else(|| {
        Failure(
            format!(
                "--period: unknown `{}`; use hour, day, month or all",
                a.period
            ),
            2,
        )
    })?;
    let (chain, rows) = accounting::usage_of_files(&a.files, &by, period)
        .map_err(|e| super::audit::not_reported(e, ""))?;
    super::audit::print_chain(&chain, !rows.is_empty(), 0);
    match a.format {
        Format::Json => say!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
        ),
        // CSV goes out as is: quoting, not escaping, keeps its fields intact.
        Format::Csv => {
            use std::io::Write;
            let csv = accounting::to_csv(&rows, &by);
            let _ = std::io::stdout().lock().write_all(csv.as_bytes());
        }
        Format::Table => table(&rows),
    }
    Ok(0)
}

fn table(rows: &[UsageRow]) {
    say!(
        "{:<13}  {:<46}  {:<32}  {:<24}  {:>8}  {:>8}  {:>10}  {:>10}  {:>10}  {:>8}",
        "period",
        "principal",
        "agent",
        "model",
        "requests",
        "no usage",
        "prompt",
        "completion",
        "tokens",
        "limited"
    );
    let mut missing = std::collections::BTreeMap::<&str, u64>::new();
    for r in rows {
        let or_all = |v: &Option<String>| v.clone().unwrap_or_else(|| "*".into());
        say!(
            "{:<13}  {:<46}  {:<32}  {:<24}  {:>8}  {:>8}  {:>10}  {:>10}  {:>10}  {:>8}",
            r.period,
            or_all(&r.principal_address),
            or_all(&r.agent_id),
            or_all(&r.model),
            r.requests,
            r.requests_without_usage,
            r.prompt_tokens,
            r.completion_tokens,
            r.total_tokens,
            r.requests_limited
        );
        for (why, n) in &r.usage_missing {
            *missing.entry(why).or_default() += n;
        }
    }
    for (why, n) in &missing {
        say!("requests without usage ({why}): {n}, their tokens unknown and not in the sums");
    }
    let requests: u64 = rows.iter().map(|r| r.requests).sum();
    let limited: u64 = rows.iter().map(|r| r.requests_limited).sum();
    if limited > 0 {
        say!("requests refused by the limits: {limited}, never forwarded, in none of the sums");
    }
    say!("{requests} request(s) in {} row(s)", rows.len());
}
