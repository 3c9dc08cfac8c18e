//! The in-process limit store: one replica's counters, behind one lock.

use super::{
    AdmitFuture, Ask, Gauge, LimitReason, LimitStore, Limited, Quota, SettleFuture, Standing,
    Ticket, Verdict, WINDOWS,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The counters of one principal or one agent.
#[derive(Clone, Debug, Default)]
struct ScopeState {
    /// Requests left in the bucket, in thousandths, and when it was last refilled (ms).
    bucket_milli: u64,
    refilled_ms: u64,
    /// Whether the bucket has been used (a new scope starts full).
    started: bool,
    in_flight: u64,
    /// Per window: its number and the tokens charged in it.
    windows: [(u64, u64); 3],
}

impl ScopeState {
    /// Refills the bucket of `rpm` requests per minute up to `now_ms`.
    fn refill(&mut self, rpm: u64, now_ms: u64) {
        let full = rpm.saturating_mul(1000);
        if !self.started {
            self.bucket_milli = full;
            self.started = true;
        } else {
            let elapsed = now_ms.saturating_sub(self.refilled_ms);
            // `rpm` requests per 60 000 ms is `rpm / 60` thousandths per ms.
            let add = elapsed.saturating_mul(rpm) / 60;
            self.bucket_milli = self.bucket_milli.saturating_add(add).min(full);
        }
        self.refilled_ms = now_ms;
    }

    /// Tokens charged in window `i` at `now_ms` (zero once the window moved on).
    fn used(&self, i: usize, now_ms: u64) -> u64 {
        let (number, used) = self.windows[i];
        if number == now_ms / WINDOWS[i] {
            used
        } else {
            0
        }
    }

    /// Whether nothing is held or counted at `now_ms`: the state can be forgotten.
    fn idle(&self, now_ms: u64) -> bool {
        self.in_flight == 0
            && (0..3).all(|i| self.used(i, now_ms) == 0)
            && now_ms.saturating_sub(self.refilled_ms) >= 60_000
    }
}

/// What one scope says about a request.
struct Check {
    refused: Option<Limited>,
    requests: Option<Gauge>,
    tokens: Option<Gauge>,
}

/// Judges `quota` for one scope at `now_ms`, without changing anything.
fn check(state: &ScopeState, quota: &Quota, tokens: u64, now_ms: u64) -> Check {
    let mut refused: Option<Limited> = None;
    let mut requests = None;
    let rpm = quota.requests_per_minute;
    if rpm > 0 {
        if state.bucket_milli < 1000 {
            let missing = 1000 - state.bucket_milli;
            let wait = (missing.saturating_mul(60)).div_ceil(rpm);
            refused = Some(Limited {
                reason: LimitReason::RequestsPerMinute,
                retry_after: Some(Duration::from_millis(wait)),
            });
        } else {
            let left = state.bucket_milli - 1000;
            let to_full = (rpm * 1000 - left).saturating_mul(60).div_ceil(rpm);
            requests = Some(Gauge {
                limit: rpm,
                remaining: left / 1000,
                reset_ms: to_full,
            });
        }
    }
    if refused.is_none()
        && quota.concurrent_requests > 0
        && state.in_flight >= quota.concurrent_requests
    {
        refused = Some(Limited {
            reason: LimitReason::ConcurrentRequests,
            retry_after: Some(Duration::from_secs(1)),
        });
    }
    let mut token_gauge = None;
    let mut token_refusal: Option<Limited> = None;
    for (i, limit) in quota.token_limits().into_iter().enumerate() {
        if limit == 0 {
            continue;
        }
        let used = state.used(i, now_ms);
        let reset_ms = WINDOWS[i] - now_ms % WINDOWS[i];
        if used.saturating_add(tokens) > limit {
            let later = token_refusal
                .and_then(|r| r.retry_after)
                .is_none_or(|d| d < Duration::from_millis(reset_ms));
            if later {
                token_refusal = Some(Limited {
                    reason: LimitReason::Tokens,
                    retry_after: Some(Duration::from_millis(reset_ms)),
                });
            }
        } else {
            let g = Gauge {
                limit,
                remaining: limit - used - tokens,
                reset_ms,
            };
            token_gauge = Gauge::tightest(token_gauge, Some(g));
        }
    }
    Check {
        refused: refused.or(token_refusal),
        requests,
        tokens: token_gauge,
    }
}

/// The most states kept before idle ones are forgotten.
const PRUNE_AT: usize = 100_000;

/// The most principals and agents tracked at once. An agent's state is made by an
/// admitted request, so a principal's own limits bound how fast it adds agents; beyond
/// this many (none idle), a request of a principal or agent not yet tracked is refused
/// `limits_unavailable` rather than let the map grow without bound.
pub const MAX_TRACKED: usize = 1_000_000;

/// Limits of one replica: every replica has its own budget.
#[derive(Debug, Default)]
pub struct MemoryLimitStore {
    scopes: Mutex<Scopes>,
}

/// The states, and when to look for idle ones again.
#[derive(Debug, Default)]
struct Scopes {
    map: HashMap<String, ScopeState>,
    /// The size at which idle states are looked for next: twice what the last look left
    /// (at least [`PRUNE_AT`]), so that the looks, each a pass over every state, cost
    /// O(1) per admission however many states stay busy. (Looking at every admission
    /// once [`PRUNE_AT`] busy states were there cost 0.84 ms per admission at 100,000
    /// states, in release, under the lock every admission takes.)
    prune_at: usize,
    /// When the last look was (ms); a full table looks again at most once a second.
    pruned_ms: u64,
    /// How many looks were made.
    prunes: u64,
}

impl Scopes {
    fn prune(&mut self, now_ms: u64) {
        self.map.retain(|_, s| !s.idle(now_ms));
        self.prune_at = self.map.len().saturating_mul(2).max(PRUNE_AT);
        self.pruned_ms = now_ms;
        self.prunes += 1;
    }
}

impl MemoryLimitStore {
    /// An empty store.
    pub fn new() -> MemoryLimitStore {
        MemoryLimitStore::default()
    }

    /// Judges `ask` at `now_ms` (milliseconds since the Unix epoch) and takes what it
    /// needs when it fits.
    pub fn admit_at(&self, ask: &Ask<'_>, now_ms: u64) -> Verdict {
        let Ok(mut scopes) = self.scopes.lock() else {
            return Verdict::Refused(Limited {
                reason: LimitReason::StoreUnavailable,
                retry_after: None,
            });
        };
        if scopes.map.len() >= scopes.prune_at.max(PRUNE_AT) {
            scopes.prune(now_ms);
        }
        let new_scopes = |scopes: &Scopes| {
            [ask.principal.0, ask.agent.0]
                .iter()
                .filter(|k| !scopes.map.contains_key(**k))
                .count()
        };
        if scopes.map.len() + new_scopes(&scopes) > MAX_TRACKED
            && now_ms.saturating_sub(scopes.pruned_ms) >= 1000
        {
            scopes.prune(now_ms);
        }
        if scopes.map.len() + new_scopes(&scopes) > MAX_TRACKED {
            return Verdict::Refused(Limited {
                reason: LimitReason::StoreUnavailable,
                retry_after: Some(Duration::from_secs(60)),
            });
        }
        let scopes = &mut scopes.map;
        let scopes_asked = [ask.principal, ask.agent];
        let mut checks = Vec::with_capacity(2);
        for (key, quota) in scopes_asked {
            // Looked up first: a known scope costs no allocation.
            if !scopes.contains_key(key) {
                scopes.insert(key.to_owned(), ScopeState::default());
            }
            let Some(state) = scopes.get_mut(key) else {
                continue;
            };
            state.refill(quota.requests_per_minute, now_ms);
            checks.push(check(state, &quota, ask.tokens, now_ms));
        }
        // Rates first (a retry soon may pass), then token budgets.
        let refusal = checks
            .iter()
            .filter_map(|c| c.refused)
            .min_by_key(|l| l.reason == LimitReason::Tokens);
        if let Some(l) = refusal {
            return Verdict::Refused(l);
        }
        let windows = WINDOWS.map(|w| now_ms / w);
        for (key, quota) in scopes_asked {
            if let Some(state) = scopes.get_mut(key) {
                if quota.requests_per_minute > 0 {
                    state.bucket_milli -= 1000;
                }
                state.in_flight += 1;
                for (i, number) in windows.iter().enumerate() {
                    let used = state.used(i, now_ms);
                    state.windows[i] = (*number, used.saturating_add(ask.tokens));
                }
            }
        }
        let standing = Standing {
            requests: checks
                .iter()
                .fold(None, |g, c| Gauge::tightest(g, c.requests)),
            tokens: checks
                .iter()
                .fold(None, |g, c| Gauge::tightest(g, c.tokens)),
        };
        Verdict::Admitted(
            Ticket {
                principal: ask.principal.0.to_owned(),
                agent: ask.agent.0.to_owned(),
                request_id: ask.request_id,
                reserved: ask.tokens,
                windows,
                in_flight: true,
            },
            standing,
        )
    }

    /// Gives back `ticket`'s slots and settles it to `charged` tokens.
    pub fn settle_now(&self, ticket: &Ticket, charged: u64) {
        let Ok(mut scopes) = self.scopes.lock() else {
            return;
        };
        for key in [&ticket.principal, &ticket.agent] {
            let Some(state) = scopes.map.get_mut(key.as_str()) else {
                continue;
            };
            if ticket.in_flight {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
            for (i, number) in ticket.windows.iter().enumerate() {
                let (current, used) = &mut state.windows[i];
                if current == number {
                    *used = used.saturating_sub(ticket.reserved).saturating_add(charged);
                }
            }
        }
    }
}

pub(super) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl LimitStore for MemoryLimitStore {
    fn admit<'a>(&'a self, ask: Ask<'a>) -> AdmitFuture<'a> {
        let verdict = self.admit_at(&ask, unix_millis());
        Box::pin(std::future::ready(Ok(verdict)))
    }

    fn settle(&self, ticket: Ticket, charged: u64) -> Option<SettleFuture> {
        self.settle_now(&ticket, charged);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask<'a>(p: Quota, a: Quota, tokens: u64) -> Ask<'a> {
        Ask {
            principal: ("gonka1p", p),
            agent: ("gonka1p/agent", a),
            tokens,
            request_id: 1,
        }
    }

    const T0: u64 = 1_800_000_000_000;

    fn admitted(v: Verdict) -> (Ticket, Standing) {
        match v {
            Verdict::Admitted(t, s) => (t, s),
            Verdict::Refused(l) => panic!("refused: {l:?}"),
        }
    }

    fn refused(v: Verdict) -> Limited {
        match v {
            Verdict::Refused(l) => l,
            Verdict::Admitted(..) => panic!("admitted"),
        }
    }

    #[test]
    fn requests_per_minute_is_a_bucket_that_refills_at_its_rate() {
        let s = MemoryLimitStore::new();
        let q = Quota {
            requests_per_minute: 2,
            ..Quota::default()
        };
        let a = ask(q, Quota::default(), 0);
        let (_, standing) = admitted(s.admit_at(&a, T0));
        assert_eq!(standing.requests.map(|g| g.remaining), Some(1));
        admitted(s.admit_at(&a, T0));
        let l = refused(s.admit_at(&a, T0));
        assert_eq!(l.reason, LimitReason::RequestsPerMinute);
        assert_eq!(l.retry_after, Some(Duration::from_secs(30)));
        // Half a minute later one request is back.
        admitted(s.admit_at(&a, T0 + 30_000));
        refused(s.admit_at(&a, T0 + 30_000));
    }

    #[test]
    fn in_flight_requests_are_counted_until_settled() {
        let s = MemoryLimitStore::new();
        let q = Quota {
            concurrent_requests: 1,
            ..Quota::default()
        };
        let a = ask(Quota::default(), q, 0);
        let (t, _) = admitted(s.admit_at(&a, T0));
        assert_eq!(
            refused(s.admit_at(&a, T0)).reason,
            LimitReason::ConcurrentRequests
        );
        s.settle_now(&t, 0);
        admitted(s.admit_at(&a, T0));
    }

    #[test]
    fn a_reservation_that_does_not_fit_is_refused_and_settlement_returns_the_unused_part() {
        let s = MemoryLimitStore::new();
        let q = Quota {
            tokens_per_day: 1000,
            ..Quota::default()
        };
        let a = ask(q, Quota::default(), 600);
        let (t, standing) = admitted(s.admit_at(&a, T0));
        assert_eq!(standing.tokens.map(|g| g.remaining), Some(400));
        let l = refused(s.admit_at(&a, T0));
        assert_eq!(l.reason, LimitReason::Tokens);
        assert_eq!(
            l.retry_after,
            Some(Duration::from_millis(86_400_000 - T0 % 86_400_000))
        );
        s.settle_now(&t, 100);
        let (_, standing) = admitted(s.admit_at(&a, T0));
        assert_eq!(standing.tokens.map(|g| g.remaining), Some(300));
    }

    #[test]
    fn a_settlement_after_the_window_moved_on_changes_only_the_old_window() {
        let s = MemoryLimitStore::new();
        let q = Quota {
            tokens_per_minute: 1000,
            ..Quota::default()
        };
        let start = T0 - T0 % 60_000;
        let a = ask(q, Quota::default(), 600);
        let (t, _) = admitted(s.admit_at(&a, start));
        let (_, standing) = admitted(s.admit_at(&a, start + 60_000));
        assert_eq!(standing.tokens.map(|g| g.remaining), Some(400));
        // Settling the first request (charged in the last minute) does not give the
        // new minute anything.
        s.settle_now(&t, 0);
        refused(s.admit_at(&a, start + 60_000));
    }

    #[test]
    fn nothing_is_taken_when_either_scope_refuses() {
        let s = MemoryLimitStore::new();
        let p = Quota {
            requests_per_minute: 10,
            tokens_per_hour: 100,
            ..Quota::default()
        };
        let a = Quota {
            tokens_per_hour: 50,
            ..Quota::default()
        };
        assert_eq!(
            refused(s.admit_at(&ask(p, a, 60), T0)).reason,
            LimitReason::Tokens
        );
        let (_, standing) = admitted(s.admit_at(&ask(p, a, 50), T0));
        // The refused request took nothing from the principal's bucket.
        assert_eq!(standing.requests.map(|g| g.remaining), Some(9));
        assert_eq!(standing.tokens.map(|g| g.remaining), Some(0));
    }

    #[test]
    fn busy_states_past_the_prune_size_are_not_scanned_at_every_admission() {
        let s = MemoryLimitStore::new();
        let q = Quota {
            tokens_per_day: 1_000_000_000,
            ..Quota::default()
        };
        // Every agent charged tokens today: none is idle until the day ends.
        for i in 0..(PRUNE_AT as u64 + 50_000) {
            let agent = format!("gonka1p/agent-{i}");
            let ask = Ask {
                principal: ("gonka1p", q),
                agent: (&agent, q),
                tokens: 1,
                request_id: i,
            };
            let (t, _) = admitted(s.admit_at(&ask, T0));
            s.settle_now(&t, 1);
        }
        let scopes = s.scopes.lock().unwrap();
        assert_eq!(scopes.map.len(), PRUNE_AT + 50_001);
        assert_eq!(
            scopes.prunes, 1,
            "one pass at PRUNE_AT, the next at twice that"
        );
        assert_eq!(scopes.prune_at, 2 * PRUNE_AT);
    }
}
