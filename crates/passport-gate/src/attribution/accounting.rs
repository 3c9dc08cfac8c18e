//! Accounting for billing: requests and tokens of accepted calls, grouped by principal,
//! agent and/or model and by period, with the calls whose usage is unknown counted
//! apart (never as zero tokens). Read through [`super::audit::load`], so the hash chain
//! of audit files is checked before anything is counted.

use super::audit::{ChainCheck, ChainStatus, ReportError, Tally};
use super::{AttributionEvent, UsageMissing};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What rows are grouped by, besides the period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupBy {
    /// `principal_address`.
    Principal,
    /// `agent_id`.
    Agent,
    /// `model`.
    Model,
}

impl GroupBy {
    /// `principal`, `agent` or `model`.
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "principal" => Some(GroupBy::Principal),
            "agent" => Some(GroupBy::Agent),
            "model" => Some(GroupBy::Model),
            _ => None,
        }
    }
}

/// The period a row covers, from the event's `verified_at` (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// `YYYY-MM-DDTHH`.
    Hour,
    /// `YYYY-MM-DD`.
    Day,
    /// `YYYY-MM`.
    Month,
    /// Everything in one period, `all`.
    All,
}

impl Period {
    /// `hour`, `day`, `month` or `all`.
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "hour" => Some(Period::Hour),
            "day" => Some(Period::Day),
            "month" => Some(Period::Month),
            "all" => Some(Period::All),
            _ => None,
        }
    }

    fn of(self, verified_at: &str) -> String {
        let len = match self {
            Period::Hour => 13,
            Period::Day => 10,
            Period::Month => 7,
            Period::All => return "all".to_owned(),
        };
        verified_at.get(..len).unwrap_or(verified_at).to_owned()
    }
}

/// The reasons a call has no usage, in the order of the CSV columns; `unrecorded` is an
/// event written before the reason was recorded.
pub const MISSING_REASONS: [&str; 8] = [
    UsageMissing::TooLarge.as_str(),
    UsageMissing::NotInStream.as_str(),
    UsageMissing::NotInAnswer.as_str(),
    UsageMissing::NotScanned.as_str(),
    UsageMissing::ClientDisconnected.as_str(),
    UsageMissing::UpstreamFailed.as_str(),
    UsageMissing::CutAtShutdown.as_str(),
    "unrecorded",
];

/// Requests and tokens of one group in one period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// The period (see [`Period`]).
    pub period: String,
    /// The principal, when grouped by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_address: Option<String>,
    /// The agent, when grouped by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The model, when grouped by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Accepted requests.
    pub requests: u64,
    /// Of those, the ones whose answer carried usage.
    pub requests_with_usage: u64,
    /// The ones whose usage is unknown: their tokens are in none of the sums.
    pub requests_without_usage: u64,
    /// `requests_without_usage` by reason (`usage_missing`, or `unrecorded`).
    pub usage_missing: BTreeMap<String, u64>,
    /// Requests the limits refused (429 `rate_limit_exceeded` or `insufficient_quota`,
    /// 400 `max_tokens_over_cap`, 503 `limits_unavailable`): verified, never forwarded,
    /// so in none of the other counts or sums.
    pub requests_limited: u64,
    /// Sum of `prompt_tokens`.
    pub prompt_tokens: u64,
    /// Sum of `completion_tokens`.
    pub completion_tokens: u64,
    /// Sum of `total_tokens`, or of `prompt_tokens + completion_tokens` for a call
    /// whose upstream omitted it.
    pub total_tokens: u64,
}

/// Whether `event` is a request the limits refused: a refusal that carries a verified
/// identity (a verifier's refusal never does, spec section 9).
pub fn is_limited(event: &AttributionEvent) -> bool {
    !event.outcome.is_accepted() && !event.principal_address.is_empty()
}

/// Groups the accepted `events` by `by` and `period`, sorted by period then group.
/// Requests the limits refused are counted apart in `requests_limited` (never as
/// requests or tokens); other refusal events carry no verified identity and are never
/// counted.
pub fn usage(events: &[AttributionEvent], by: &[GroupBy], period: Period) -> Vec<UsageRow> {
    let mut rows: BTreeMap<(String, [Option<String>; 3]), UsageRow> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.outcome.is_accepted() || is_limited(e))
    {
        let pick = |g: GroupBy, v: &str| by.contains(&g).then(|| v.to_owned());
        let group = [
            pick(GroupBy::Principal, &e.principal_address),
            pick(GroupBy::Agent, &e.agent_id),
            pick(GroupBy::Model, &e.model),
        ];
        let p = period.of(&e.verified_at);
        let row = rows.entry((p.clone(), group.clone())).or_insert_with(|| {
            let [principal_address, agent_id, model] = group;
            UsageRow {
                period: p,
                principal_address,
                agent_id,
                model,
                ..Default::default()
            }
        });
        if is_limited(e) {
            row.requests_limited += 1;
            continue;
        }
        Tally {
            calls: &mut row.requests,
            with_usage: &mut row.requests_with_usage,
            without_usage: &mut row.requests_without_usage,
            usage_missing: &mut row.usage_missing,
            prompt_tokens: &mut row.prompt_tokens,
            completion_tokens: &mut row.completion_tokens,
            total_tokens: &mut row.total_tokens,
        }
        .add(e);
    }
    rows.into_values().collect()
}

/// The accounting of `files`, with what is known of their chain: the chain of audit
/// files is checked first (a broken one is [`ReportError::Broken`]), as `audit report`
/// does.
pub fn usage_of_files(
    files: &[PathBuf],
    by: &[GroupBy],
    period: Period,
) -> Result<(ChainStatus, Vec<UsageRow>), ReportError> {
    let (chain, read) = super::audit::load(files, ChainCheck::Verify)?;
    Ok((chain, usage(&read.events, by, period)))
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break,
/// and, because agent ids and models are chosen by agents and the file is opened in
/// spreadsheets, prefixed with `'` when it starts like a formula (`=`, `+`, `-`, `@`,
/// tab, carriage return).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// `rows` as CSV with a header line: the period, the grouped columns in the order
/// principal, agent, model, the counts and sums, one `missing_<reason>` column per
/// reason of [`MISSING_REASONS`], and `requests_limited`.
pub fn to_csv(rows: &[UsageRow], by: &[GroupBy]) -> String {
    let mut header = vec!["period".to_owned()];
    for (g, name) in [
        (GroupBy::Principal, "principal_address"),
        (GroupBy::Agent, "agent_id"),
        (GroupBy::Model, "model"),
    ] {
        if by.contains(&g) {
            header.push(name.to_owned());
        }
    }
    for name in [
        "requests",
        "requests_with_usage",
        "requests_without_usage",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
    ] {
        header.push(name.to_owned());
    }
    header.extend(MISSING_REASONS.iter().map(|r| format!("missing_{r}")));
    header.push("requests_limited".to_owned());
    let mut out = header.join(",") + "\n";
    for r in rows {
        let mut fields = vec![csv_field(&r.period)];
        for v in [&r.principal_address, &r.agent_id, &r.model]
            .into_iter()
            .flatten()
        {
            fields.push(csv_field(v));
        }
        for n in [
            r.requests,
            r.requests_with_usage,
            r.requests_without_usage,
            r.prompt_tokens,
            r.completion_tokens,
            r.total_tokens,
        ] {
            fields.push(n.to_string());
        }
        for reason in MISSING_REASONS {
            fields.push(
                r.usage_missing
                    .get(reason)
                    .copied()
                    .unwrap_or(0)
                    .to_string(),
            );
        }
        fields.push(r.requests_limited.to_string());
        out += &fields.join(",");
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(agent: &str, at: &str, tokens: Option<(u64, u64)>) -> AttributionEvent {
        AttributionEvent {
            principal_address: "gonka1p".into(),
            agent_id: agent.into(),
            model: "m".into(),
            verified_at: at.into(),
            prompt_tokens: tokens.map(|t| t.0),
            completion_tokens: tokens.map(|t| t.1),
            usage_missing: tokens.is_none().then_some(UsageMissing::ClientDisconnected),
            ..Default::default()
        }
    }

    #[test]
    fn calls_are_grouped_by_period_and_the_chosen_identities() {
        let events = [
            call("a", "2026-05-21T12:00:00Z", Some((1, 2))),
            call("a", "2026-05-21T13:00:00Z", None),
            call("b", "2026-05-22T01:00:00Z", Some((10, 20))),
        ];
        let by_day = usage(&events, &[GroupBy::Principal, GroupBy::Agent], Period::Day);
        assert_eq!(by_day.len(), 2);
        assert_eq!(by_day[0].period, "2026-05-21");
        assert_eq!(by_day[0].agent_id.as_deref(), Some("a"));
        assert_eq!(
            (
                by_day[0].requests,
                by_day[0].requests_without_usage,
                by_day[0].total_tokens
            ),
            (2, 1, 3)
        );
        assert_eq!(by_day[0].usage_missing.get("client_disconnected"), Some(&1));
        assert_eq!(by_day[0].model, None);
        let all = usage(&events, &[GroupBy::Principal], Period::All);
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].requests, all[0].total_tokens), (3, 33));
        assert_eq!(usage(&events, &[], Period::Hour).len(), 3);
    }

    #[test]
    fn refusals_are_never_counted_and_limited_requests_are_counted_apart() {
        let limited = AttributionEvent {
            outcome: super::super::Outcome::Refused,
            code: Some("insufficient_quota".into()),
            usage_missing: None,
            ..call("a", "2026-05-21T12:00:00Z", None)
        };
        // A verifier's refusal: only a claimed identity.
        let refused = AttributionEvent {
            outcome: super::super::Outcome::Refused,
            code: Some("agent_sig_invalid".into()),
            claimed_agent_id_unverified: Some("a".into()),
            claimed_principal_address_unverified: Some("gonka1p".into()),
            ..Default::default()
        };
        assert!(usage(
            std::slice::from_ref(&refused),
            &[GroupBy::Agent],
            Period::Day
        )
        .is_empty());
        let events = [
            call("a", "2026-05-21T12:00:00Z", Some((1, 2))),
            limited.clone(),
            limited,
            refused,
        ];
        let rows = usage(&events, &[GroupBy::Principal, GroupBy::Agent], Period::Day);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (
                r.requests,
                r.requests_without_usage,
                r.total_tokens,
                r.requests_limited
            ),
            (1, 0, 3, 2)
        );
        let csv = to_csv(&rows, &[GroupBy::Agent]);
        assert!(csv.lines().next().unwrap().ends_with(",requests_limited"));
        assert!(csv.lines().nth(1).unwrap().ends_with(",2"), "{csv}");
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("urn:aps:agent:a"), "urn:aps:agent:a");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        let rows = usage(
            &[call("=1+1", "2026-05-21T12:00:00Z", Some((1, 1)))],
            &[GroupBy::Agent],
            Period::Day,
        );
        let csv = to_csv(&rows, &[GroupBy::Agent]);
        let mut lines = csv.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("period,agent_id,requests,requests_with_usage,"));
        assert!(lines
            .next()
            .unwrap()
            .starts_with("2026-05-21,'=1+1,1,1,0,1,1,2,"));
    }
}
