//! The limit store in Redis (the `redis` feature): one budget for every replica.
//!
//! Every decision is taken by one Lua script (`STEP`), so two replicas judging at once
//! can never both take the last request or the last tokens. The script reads the time
//! from the server (`TIME`), so replicas with skewed clocks still agree on the windows.
//! Keys carry the principal as a Redis Cluster hash tag, so a principal's keys and its
//! agents' keys share a slot and one script may touch them all:
//!
//! - `<prefix>limits:{<principal>}:p`: the principal's bucket and token windows (a hash);
//! - `<prefix>limits:{<principal>}:pc`: its requests in flight (a sorted set of request
//!   ids scored by the end of their lease, so a replica that dies gives its slots back).
//!   Every admitted request has its member there, whatever the principal's
//!   `concurrent_requests`: removing it is what makes a settlement count once;
//! - `<prefix>limits:{<principal>}:a:<agent_id>` and `…:ac:<agent_id>`: the same for
//!   one agent of that principal (its set only when it limits requests in flight).
//!   Each lease set also holds the member `~`, scored `+inf` and never counted, so that
//!   it outlives its last request and its expiry is renewed once a minute, not on every
//!   admission.
//!
//! **One script call per principal at a time, carrying everything waiting.** Each
//! replica keeps, per principal, a lane: while one call for that principal is under way,
//! the admissions and settlements that arrive wait in the lane, and the next call
//! carries them all (up to [`STEP_ASKS`] admissions and [`STEP_SETTLEMENTS`]
//! settlements). The script judges the admissions one after another, as separate calls
//! would, reading each hash once and writing it once. With no other work for that
//! principal a call carries one request, as before; under load a request costs a share
//! of one round trip and one script. Settlements leave the request path: an ended
//! answer queues its ticket and returns.
//!
//! A ticket settles only if its member is still in the principal's set, so a call sent
//! twice (a retry after a lost reply) counts once. Settlements that cannot be written are
//! retried ([`SETTLE_RETRIES`]); those that still fail are counted
//! (`passport_gate_limit_settlements_failed_total`) and logged: their reservation stays
//! charged and their in-flight slots come back at the end of their lease. An admission
//! waits at most the Redis timeout, queue included; one admitted after its request gave
//! up waiting is released at once.
//!
//! Hashes live at least a day and a minute past their last use, lease sets at least a
//! lease (their expiry is renewed on the first admission of each minute, so each may
//! live up to a minute longer).

use super::{
    AdmitFuture, Ask, Gauge, LimitReason, LimitStore, LimitStoreError, Limited, SettleFuture,
    Standing, Ticket, Verdict, IN_FLIGHT_LEASE_MS,
};
use crate::metrics::IntCounter;
use crate::redis_client::{Redis, RedisError, Reply};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// The most admissions one script call judges.
pub const STEP_ASKS: usize = 64;

/// The most settlements one script call carries.
pub const STEP_SETTLEMENTS: usize = 128;

/// How long settlements that could not be written wait before each retry.
pub const SETTLE_RETRIES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(500),
    Duration::from_millis(2000),
];

/// The integers the script returns per admission.
const ROW: usize = 11;

/// Settles, then judges and takes, for one principal. KEYS: the principal's hash and
/// lease set, then each agent's hash and lease set (a "pair": 1 is the principal's, 2 the
/// first agent's). ARGV: the lease (ms), the number of settlements S and of admissions
/// A; the quotas of each pair (requests per minute, in flight, tokens per minute, hour,
/// day); then S settlements of 6 values (the agent's pair, the request id, charged minus
/// reserved, windows 1, 2, 3); then A admissions of 3 (the agent's pair, tokens, the
/// request id). Returns 11 integers per admission: `0, 0, req limit, req remaining, req
/// reset, tok limit, tok remaining, tok reset, window 1, 2, 3` (a gauge of `-1` is
/// absent) when admitted, `reason, retry ms` and nine zeros when refused (1 requests per
/// minute, 2 in flight, 3 tokens). The admissions are judged one after another, as
/// separate calls would judge them. Each hash is read once and written once; a lease set
/// is counted only when its scope limits requests in flight (members whose lease ended
/// do not count, and are removed on the scope's first call of a minute); expiries are
/// renewed on a scope's first admission of a minute, or when its lease set is new. A
/// lease set keeps a member `~` scored `+inf` (not counted), so that settling its last
/// request does not delete it, and `ZADD` says when it is new.
const STEP: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local ns, na = tonumber(ARGV[2]), tonumber(ARGV[3])
local np = #KEYS / 2
local wn = {math.floor(now / 60000), math.floor(now / 3600000), math.floor(now / 86400000)}
local reset = {60000 - now % 60000, 3600000 - now % 3600000, 86400000 - now % 86400000}
local q = {}
local a = 4
for j = 1, np do
  q[j] = {tonumber(ARGV[a]), tonumber(ARGV[a + 1]),
    {tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])}}
  a = a + 5
end
local sc = {}
local function scope(j)
  local x = sc[j]
  if x then return x end
  local v = redis.call('HMGET', KEYS[2 * j - 1], 'b', 't', 'w1', 'n1', 'w2', 'n2', 'w3', 'n3')
  x = {rpm = q[j][1], conc = q[j][2], lim = q[j][3], w = {}, n = {}, add = {}, added = 0,
    took = false, settled = false, clean = false}
  if v[1] and v[2] then x.b, x.t = tonumber(v[1]), tonumber(v[2]) end
  for i = 1, 3 do
    x.w[i] = v[1 + 2 * i] and tonumber(v[1 + 2 * i])
    x.n[i] = tonumber(v[2 + 2 * i] or 0) or 0
  end
  x.fresh = x.w[1] ~= wn[1]
  sc[j] = x
  return x
end
for _ = 1, ns do
  local j, id, delta = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
  if redis.call('ZREM', KEYS[2], id) == 1 then
    local g = scope(j)
    g.rem = g.rem or {}
    g.rem[#g.rem + 1] = id
    for s = 1, 2 do
      local x = g
      if s == 1 then x = scope(1) end
      x.clean = true
      if delta ~= 0 then
        for i = 1, 3 do
          if x.w[i] == tonumber(ARGV[a + 2 + i]) then
            x.n[i] = math.max(0, x.n[i] + delta)
            x.settled = true
          end
        end
      end
    end
  end
  a = a + 6
end
local out, o = {}, 0
local bs = {0, 0}
for _ = 1, na do
  local j, tokens, id = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2]
  a = a + 3
  local p, g = scope(1), scope(j)
  local rate, rms, tok, tms = false, 0, false, 0
  local rl, rr, rs, tl, tr, ts = -1, -1, -1, -1, -1, -1
  for s = 1, 2 do
    local x, zk = p, KEYS[2]
    if s == 2 then x, zk = g, KEYS[2 * j] end
    local rpm = x.rpm
    local b = rpm * 1000
    if x.b then b = math.min(b, x.b + math.floor(math.max(0, now - x.t) * rpm / 60)) end
    bs[s] = b
    if rpm > 0 then
      if b < 1000 then
        if not rate then rate, rms = 1, math.ceil((1000 - b) * 60 / rpm) end
      else
        local left = b - 1000
        local rem = math.floor(left / 1000)
        if rl < 0 or rem < rr then rl, rr, rs = rpm, rem, math.ceil((rpm * 1000 - left) * 60 / rpm) end
      end
    end
    if x.conc > 0 and not rate then
      if x.live == nil then
        x.live = redis.call('ZCOUNT', zk, now + 1, '(+inf') + x.added
      end
      if x.live >= x.conc then rate, rms = 2, 1000 end
    end
    for i = 1, 3 do
      local lim = x.lim[i]
      if lim > 0 then
        local used = 0
        if x.w[i] == wn[i] then used = x.n[i] end
        if used + tokens > lim then
          if not tok or tms < reset[i] then tok, tms = 3, reset[i] end
        else
          local rem = lim - used - tokens
          if tl < 0 or rem < tr then tl, tr, ts = lim, rem, reset[i] end
        end
      end
    end
  end
  if rate or tok then
    out[o + 1] = rate or tok
    out[o + 2] = rate and rms or tms
    for i = 3, 11 do out[o + i] = 0 end
  else
    for s = 1, 2 do
      local x = p
      if s == 2 then x = g end
      x.b = bs[s]
      if x.rpm > 0 then x.b = x.b - 1000 end
      x.t = now
      for i = 1, 3 do
        if x.w[i] == wn[i] then
          x.n[i] = x.n[i] + tokens
        else
          x.w[i], x.n[i] = wn[i], tokens
        end
      end
      x.took = true
      if s == 1 or x.conc > 0 then
        x.add[2 * x.added + 1] = now + lease
        x.add[2 * x.added + 2] = id
        x.added = x.added + 1
        if x.live then x.live = x.live + 1 end
      end
    end
    out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = 0, 0, rl, rr, rs
    out[o + 6], out[o + 7], out[o + 8] = tl, tr, ts
    out[o + 9], out[o + 10], out[o + 11] = wn[1], wn[2], wn[3]
  end
  o = o + 11
end
for j, x in pairs(sc) do
  local h, z = KEYS[2 * j - 1], KEYS[2 * j]
  if x.took then
    redis.call('HSET', h, 'b', x.b, 't', x.t, 'w1', x.w[1], 'n1', x.n[1],
      'w2', x.w[2], 'n2', x.n[2], 'w3', x.w[3], 'n3', x.n[3])
    if x.fresh then redis.call('PEXPIRE', h, 86520000) end
  elseif x.settled then
    local f = {}
    for i = 1, 3 do
      if x.w[i] then
        f[#f + 1] = 'n' .. i
        f[#f + 1] = x.n[i]
      end
    end
    redis.call('HSET', h, unpack(f))
  end
  if x.rem and j > 1 then redis.call('ZREM', z, unpack(x.rem)) end
  if x.added > 0 then
    x.add[2 * x.added + 1] = '+inf'
    x.add[2 * x.added + 2] = '~'
    local new = redis.call('ZADD', z, unpack(x.add))
    if x.fresh or new > x.added then redis.call('PEXPIRE', z, lease + 60000) end
  end
  if x.fresh and (x.added > 0 or x.clean) then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
end
return out
"#;

/// Limits shared by every replica through one Redis (or Redis Cluster).
#[derive(Clone)]
pub struct RedisLimitStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisLimitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimitStore")
            .field("redis", &self.inner.redis)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner {
    redis: Arc<Redis>,
    prefix: String,
    /// The SHA-1 of [`STEP`] as the server names it, once learned: then each call sends
    /// `EVALSHA` and not the whole script.
    sha: OnceLock<String>,
    /// The lanes of the principals with work under way, by principal. A lane is in the
    /// map exactly while a task drives it.
    lanes: Mutex<HashMap<String, Lane>>,
    /// Counts settlements given up after their retries.
    failed: Option<IntCounter>,
    /// Settlements waiting to be retried (out of the lanes meanwhile).
    retrying: AtomicUsize,
}

/// What waits for a principal's next script call.
#[derive(Default)]
struct Lane {
    asks: Vec<Waiting>,
    owed: Vec<Owed>,
}

/// An admission waiting for its verdict.
struct Waiting {
    agent: String,
    tokens: u64,
    request_id: u64,
    quotas: [u64; 10],
    reply: oneshot::Sender<Result<Verdict, LimitStoreError>>,
}

/// A settlement to write.
struct Owed {
    agent: String,
    request_id: u64,
    /// Charged minus reserved.
    delta: i64,
    windows: [u64; 3],
    /// Failed attempts so far.
    failures: usize,
}

fn lock(lanes: &Mutex<HashMap<String, Lane>>) -> std::sync::MutexGuard<'_, HashMap<String, Lane>> {
    // A panic while holding the lock leaves plain data behind: keep using it.
    lanes.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedisLimitStore {
    /// Keys start with `prefix`.
    pub fn new(redis: Arc<Redis>, prefix: &str) -> RedisLimitStore {
        RedisLimitStore {
            inner: Arc::new(Inner {
                redis,
                prefix: prefix.to_owned(),
                sha: OnceLock::new(),
                lanes: Mutex::default(),
                failed: None,
                retrying: AtomicUsize::new(0),
            }),
        }
    }

    /// Counts on `counter` every settlement given up after its retries.
    pub fn count_failed_settlements_on(self, counter: IntCounter) -> RedisLimitStore {
        let inner = Arc::try_unwrap(self.inner).map(|mut i| {
            i.failed = Some(counter.clone());
            i
        });
        match inner {
            Ok(i) => RedisLimitStore { inner: Arc::new(i) },
            // Shared already: a store in use keeps what it has.
            Err(inner) => RedisLimitStore { inner },
        }
    }

    /// Waits until every settlement queued so far was written (or given up), at most
    /// `within`: for a shutdown, and for tests. Returns the settlements still owed then
    /// (queued or waiting for a retry).
    pub async fn flush(&self, within: Duration) -> usize {
        let until = tokio::time::Instant::now() + within;
        // A lane stays in the table while its call is under way, so an empty table
        // (and nothing waiting for a retry) means every settlement was sent and answered.
        let owed = || {
            let lanes = lock(&self.inner.lanes);
            let queued: usize = lanes.values().map(|lane| lane.owed.len()).sum();
            let retrying = self.inner.retrying.load(Ordering::SeqCst);
            let busy = !lanes.is_empty() || retrying > 0;
            // A lane whose call is under way owes at least that call's settlements.
            busy.then(|| (queued + retrying).max(1))
        };
        loop {
            let left = owed();
            match left {
                None => return 0,
                Some(n) if tokio::time::Instant::now() >= until => return n,
                Some(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
}

impl Inner {
    /// Adds work to `principal`'s lane; true when no task drives it yet (the caller
    /// starts one).
    fn enqueue(&self, principal: &str, add: impl FnOnce(&mut Lane)) -> bool {
        let mut lanes = lock(&self.lanes);
        match lanes.get_mut(principal) {
            Some(lane) => {
                add(lane);
                false
            }
            None => {
                let mut lane = Lane::default();
                add(&mut lane);
                lanes.insert(principal.to_owned(), lane);
                true
            }
        }
    }

    /// Sends `principal`'s waiting work, call after call, until its lane is empty.
    async fn drive(self: Arc<Self>, principal: String) {
        loop {
            let (asks, owed) = {
                let mut lanes = lock(&self.lanes);
                let Some(lane) = lanes.get_mut(&principal) else {
                    return;
                };
                // An admission whose request stopped waiting is not judged.
                lane.asks.retain(|w| !w.reply.is_closed());
                if lane.asks.is_empty() && lane.owed.is_empty() {
                    lanes.remove(&principal);
                    return;
                }
                let asks: Vec<Waiting> =
                    lane.asks.drain(..lane.asks.len().min(STEP_ASKS)).collect();
                let owed: Vec<Owed> = lane
                    .owed
                    .drain(..lane.owed.len().min(STEP_SETTLEMENTS))
                    .collect();
                (asks, owed)
            };
            match self.step(&principal, &asks, &owed).await {
                Ok(rows) => {
                    for (w, row) in asks.into_iter().zip(rows.chunks(ROW)) {
                        let verdict = verdict(&principal, &w, row);
                        if let Err(Ok(Verdict::Admitted(ticket, _))) = w.reply.send(verdict) {
                            // Admitted after its request gave up waiting: give it back.
                            self.enqueue(&principal, |lane| {
                                lane.owed.push(Owed {
                                    agent: ticket.agent,
                                    request_id: ticket.request_id,
                                    delta: -i64::try_from(ticket.reserved).unwrap_or(i64::MAX),
                                    windows: ticket.windows,
                                    failures: 0,
                                })
                            });
                        }
                    }
                }
                Err(e) => {
                    let e = store_error(e);
                    for w in asks {
                        let _ = w.reply.send(Err(e.clone()));
                    }
                    self.retry(&principal, owed, &e);
                }
            }
        }
    }

    /// Puts `owed` back in the lane after a pause, or gives up on those that failed
    /// every retry.
    fn retry(self: &Arc<Self>, principal: &str, owed: Vec<Owed>, e: &LimitStoreError) {
        let mut later = Vec::new();
        for mut o in owed {
            o.failures += 1;
            if o.failures > SETTLE_RETRIES.len() {
                if let Some(c) = &self.failed {
                    c.inc();
                }
                tracing::warn!(error = %e, "limit settlement failed after retries; the reservation stays charged");
            } else {
                later.push(o);
            }
        }
        let Some(pause) = later.first().map(|o| SETTLE_RETRIES[o.failures - 1]) else {
            return;
        };
        let this = Arc::clone(self);
        let principal = principal.to_owned();
        self.retrying.fetch_add(later.len(), Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            let n = later.len();
            let start = this.enqueue(&principal, |lane| lane.owed.extend(later));
            this.retrying.fetch_sub(n, Ordering::SeqCst);
            if start {
                this.drive(principal).await;
            }
        });
    }

    /// One script call for `principal`: settles `owed`, then judges `asks`; returns
    /// [`ROW`] integers per admission.
    async fn step<'a>(
        &self,
        principal: &str,
        asks: &'a [Waiting],
        owed: &'a [Owed],
    ) -> Result<Vec<i64>, RedisError> {
        let base = format!("{}limits:{{{principal}}}", self.prefix);
        let mut keys = vec![format!("{base}:p"), format!("{base}:pc")];
        // The quotas of each pair of keys: the latest admission's.
        let mut quotas: Vec<[u64; 5]> = vec![[0; 5]];
        let mut pairs: HashMap<&str, usize> = HashMap::new();
        let mut pair = |agent: &'a str, keys: &mut Vec<String>, quotas: &mut Vec<[u64; 5]>| {
            let agent_id = agent
                .strip_prefix(principal)
                .and_then(|a| a.strip_prefix('/'))
                .unwrap_or(agent);
            *pairs.entry(agent_id).or_insert_with(|| {
                keys.push(format!("{base}:a:{agent_id}"));
                keys.push(format!("{base}:ac:{agent_id}"));
                quotas.push([0; 5]);
                keys.len() / 2
            })
        };
        let owed_pairs: Vec<usize> = owed
            .iter()
            .map(|o| pair(&o.agent, &mut keys, &mut quotas))
            .collect();
        let ask_pairs: Vec<usize> = asks
            .iter()
            .map(|w| {
                let j = pair(&w.agent, &mut keys, &mut quotas);
                quotas[0].copy_from_slice(&w.quotas[..5]);
                quotas[j - 1].copy_from_slice(&w.quotas[5..]);
                j
            })
            .collect();
        let mut args: Vec<String> =
            Vec::with_capacity(3 + 5 * quotas.len() + 6 * owed.len() + 3 * asks.len());
        args.push(IN_FLIGHT_LEASE_MS.to_string());
        args.push(owed.len().to_string());
        args.push(asks.len().to_string());
        for q in &quotas {
            args.extend(q.iter().map(u64::to_string));
        }
        for (o, j) in owed.iter().zip(owed_pairs) {
            args.push(j.to_string());
            args.push(o.request_id.to_string());
            args.push(o.delta.to_string());
            args.extend(o.windows.iter().map(u64::to_string));
        }
        for (w, j) in asks.iter().zip(ask_pairs) {
            args.push(j.to_string());
            args.push(w.tokens.to_string());
            args.push(w.request_id.to_string());
        }
        let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let arg_refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let reply = self.run(&key_refs, &arg_refs).await?;
        match integers(reply) {
            Some(rows) if rows.len() == ROW * asks.len() => Ok(rows),
            _ => Err(RedisError::Unavailable(
                "unexpected limit script reply".into(),
            )),
        }
    }

    /// Runs [`STEP`] by its SHA-1 once known (`EVALSHA`), else whole (`EVAL`, after which
    /// the SHA-1 is learned with `SCRIPT LOAD`). A node that does not know the script
    /// (`NOSCRIPT`: restarted, or another Cluster node) gets it whole once.
    async fn run(&self, keys: &[&[u8]], args: &[&[u8]]) -> Result<Reply, RedisError> {
        if let Some(known) = self.sha.get() {
            let numkeys = keys.len().to_string();
            let mut all: Vec<&[u8]> = vec![b"EVALSHA", known.as_bytes(), numkeys.as_bytes()];
            all.extend_from_slice(keys);
            all.extend_from_slice(args);
            match self.redis.command(&all).await {
                Err(RedisError::Server(e)) if e.contains("NOSCRIPT") => {}
                answer => return answer,
            }
        }
        let answer = self.redis.eval(STEP, keys, args).await;
        if answer.is_ok() && self.sha.get().is_none() {
            if let Ok(Reply::Bulk(Some(name))) = self
                .redis
                .command(&[b"SCRIPT", b"LOAD", STEP.as_bytes()])
                .await
            {
                let _ = self.sha.set(String::from_utf8_lossy(&name).into_owned());
            }
        }
        answer
    }
}

fn store_error(e: RedisError) -> LimitStoreError {
    match e {
        RedisError::Forgetful(e) => LimitStoreError::Untrusted(e),
        e => LimitStoreError::Unavailable(e.to_string()),
    }
}

fn integers(reply: Reply) -> Option<Vec<i64>> {
    match reply {
        Reply::Array(Some(items)) => items
            .into_iter()
            .map(|r| match r {
                Reply::Integer(n) => Some(n),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn gauge(v: &[i64]) -> Option<Gauge> {
    let [limit, remaining, reset] = [v[0], v[1], v[2]].map(|n| u64::try_from(n).ok());
    Some(Gauge {
        limit: limit?,
        remaining: remaining?,
        reset_ms: reset?,
    })
}

/// The verdict of one admission's row of the script's reply.
fn verdict(principal: &str, w: &Waiting, row: &[i64]) -> Result<Verdict, LimitStoreError> {
    let retry = |ms: i64| Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
    let refused = |reason, ms| {
        Ok(Verdict::Refused(Limited {
            reason,
            retry_after: retry(ms),
        }))
    };
    match row {
        [1, ms, ..] => refused(LimitReason::RequestsPerMinute, *ms),
        [2, ms, ..] => refused(LimitReason::ConcurrentRequests, *ms),
        [3, ms, ..] => refused(LimitReason::Tokens, *ms),
        [0, 0, rest @ ..] if rest.len() == ROW - 2 => {
            let windows = [rest[6], rest[7], rest[8]].map(|n| u64::try_from(n).unwrap_or(0));
            Ok(Verdict::Admitted(
                Ticket {
                    principal: principal.to_owned(),
                    agent: w.agent.clone(),
                    request_id: w.request_id,
                    reserved: w.tokens,
                    windows,
                    in_flight: true,
                },
                Standing {
                    requests: gauge(&rest[0..3]),
                    tokens: gauge(&rest[3..6]),
                },
            ))
        }
        _ => Err(LimitStoreError::Unavailable(
            "unexpected limit script reply".into(),
        )),
    }
}

impl LimitStore for RedisLimitStore {
    fn admit<'a>(&'a self, ask: Ask<'a>) -> AdmitFuture<'a> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            let mut quotas = [0u64; 10];
            quotas[..5].copy_from_slice(&ask.principal.1.values());
            quotas[5..].copy_from_slice(&ask.agent.1.values());
            let waiting = Waiting {
                agent: ask.agent.0.to_owned(),
                tokens: ask.tokens,
                request_id: ask.request_id,
                quotas,
                reply: tx,
            };
            let principal = ask.principal.0;
            if self
                .inner
                .enqueue(principal, |lane| lane.asks.push(waiting))
            {
                tokio::spawn(Arc::clone(&self.inner).drive(principal.to_owned()));
            }
            // The Redis timeout bounds the wait, the queue included.
            let timeout = self.inner.redis.timeout();
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(verdict)) => verdict,
                Ok(Err(_)) => Err(LimitStoreError::Unavailable(
                    "the limit script was not sent".into(),
                )),
                Err(_) => Err(LimitStoreError::Unavailable(format!(
                    "Redis at {} did not answer within {timeout:?}",
                    self.inner.redis.address()
                ))),
            }
        })
    }

    fn settle(&self, ticket: Ticket, charged: u64) -> Option<SettleFuture> {
        let delta = i64::try_from(charged)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(ticket.reserved).unwrap_or(i64::MAX));
        let owed = Owed {
            agent: ticket.agent,
            request_id: ticket.request_id,
            delta,
            windows: ticket.windows,
            failures: 0,
        };
        let principal = ticket.principal;
        if !self.inner.enqueue(&principal, |lane| lane.owed.push(owed)) {
            return None;
        }
        let drive = Arc::clone(&self.inner).drive(principal);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(drive);
                None
            }
            // No runtime here: the caller runs it.
            Err(_) => Some(Box::pin(async move {
                drive.await;
                Ok(())
            })),
        }
    }
}
