//! The limit store in Redis (the `redis` feature): one budget for every replica.
//!
//! Each admission and each settlement is one Lua script, so two replicas judging at once
//! can never both take the last request or the last tokens. The script reads the time
//! from the server (`TIME`), so replicas with skewed clocks still agree on the windows.
//! Keys carry the principal as a Redis Cluster hash tag, so a principal's keys and its
//! agents' keys share a slot and one script may touch them all:
//!
//! - `<prefix>limits:{<principal>}:p`: the principal's bucket and token windows (a hash);
//! - `<prefix>limits:{<principal>}:pc`: its requests in flight (a sorted set of request
//!   ids scored by the end of their lease, so a replica that dies gives its slots back);
//! - `<prefix>limits:{<principal>}:a:<agent_id>` and `…:ac:<agent_id>`: the same for
//!   one agent of that principal.
//!
//! Hashes live a day and a minute past their last use, lease sets as long as a lease.

use super::{
    AdmitFuture, Ask, Gauge, LimitReason, LimitStore, LimitStoreError, Limited, SettleFuture,
    Standing, Ticket, Verdict, IN_FLIGHT_LEASE_MS,
};
use crate::redis_client::{Redis, RedisError, Reply};
use std::sync::Arc;
use std::time::Duration;

/// Judges and takes, in one step. KEYS: principal hash, principal lease set, agent hash,
/// agent lease set. ARGV: tokens, request id, lease (ms), then the principal's and the
/// agent's quotas (requests per minute, in flight, tokens per minute, hour, day).
/// Returns `{0, 0, req limit, req remaining, req reset, tok limit, tok remaining, tok
/// reset, window 1, window 2, window 3}` (a gauge of `-1` is absent) when admitted,
/// `{reason, retry ms}` when refused (1 requests per minute, 2 in flight, 3 tokens).
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens = tonumber(ARGV[1])
local lease = tonumber(ARGV[3])
local windows = {60000, 3600000, 86400000}
local wn = {}
for i = 1, 3 do wn[i] = math.floor(now / windows[i]) end
local function tightest(g, n)
  if g == nil or n[2] < g[2] then return n end
  return g
end
local rate, tok, rg, tg = nil, nil, nil, nil
local st = {}
for s = 0, 1 do
  local h, z, base = KEYS[1 + 2 * s], KEYS[2 + 2 * s], 3 + 5 * s
  local rpm, conc = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local v = redis.call('HMGET', h, 'b', 't', 'w1', 'n1', 'w2', 'n2', 'w3', 'n3')
  local full = rpm * 1000
  local b = full
  if v[1] and v[2] then
    local elapsed = math.max(0, now - tonumber(v[2]))
    b = math.min(full, tonumber(v[1]) + math.floor(elapsed * rpm / 60))
  end
  if rpm > 0 then
    if b < 1000 then
      if rate == nil then rate = {1, math.ceil((1000 - b) * 60 / rpm)} end
    else
      local left = b - 1000
      rg = tightest(rg, {rpm, math.floor(left / 1000), math.ceil((full - left) * 60 / rpm)})
    end
  end
  if conc > 0 and rate == nil then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    if redis.call('ZCARD', z) >= conc then rate = {2, 1000} end
  end
  local used = {}
  for i = 1, 3 do
    used[i] = 0
    if v[1 + 2 * i] and tonumber(v[1 + 2 * i]) == wn[i] then used[i] = tonumber(v[2 + 2 * i]) end
    local limit = tonumber(ARGV[base + 2 + i])
    if limit > 0 then
      local reset = windows[i] - (now % windows[i])
      if used[i] + tokens > limit then
        if tok == nil or tok[2] < reset then tok = {3, reset} end
      else
        tg = tightest(tg, {limit, limit - used[i] - tokens, reset})
      end
    end
  end
  st[s] = {b = b, rpm = rpm, used = used}
end
if rate then return rate end
if tok then return tok end
for s = 0, 1 do
  local h, z = KEYS[1 + 2 * s], KEYS[2 + 2 * s]
  local b = st[s].b
  if st[s].rpm > 0 then b = b - 1000 end
  redis.call('HSET', h, 'b', b, 't', now,
    'w1', wn[1], 'n1', st[s].used[1] + tokens,
    'w2', wn[2], 'n2', st[s].used[2] + tokens,
    'w3', wn[3], 'n3', st[s].used[3] + tokens)
  redis.call('PEXPIRE', h, 86460000)
  redis.call('ZADD', z, now + lease, ARGV[2])
  redis.call('PEXPIRE', z, lease)
end
rg = rg or {-1, -1, -1}
tg = tg or {-1, -1, -1}
return {0, 0, rg[1], rg[2], rg[3], tg[1], tg[2], tg[3], wn[1], wn[2], wn[3]}
"#;

/// Gives back the slots and settles the reservation, in the windows it was charged to
/// only. KEYS: as [`ADMIT`]. ARGV: request id, reserved, charged, window 1, 2, 3.
const SETTLE: &str = r#"
local delta = tonumber(ARGV[3]) - tonumber(ARGV[2])
for s = 0, 1 do
  local h, z = KEYS[1 + 2 * s], KEYS[2 + 2 * s]
  redis.call('ZREM', z, ARGV[1])
  for i = 1, 3 do
    local w = redis.call('HGET', h, 'w' .. i)
    if w and tonumber(w) == tonumber(ARGV[3 + i]) then
      local n = tonumber(redis.call('HGET', h, 'n' .. i) or 0) + delta
      if n < 0 then n = 0 end
      redis.call('HSET', h, 'n' .. i, n)
    end
  end
end
return 1
"#;

/// Limits shared by every replica through one Redis (or Redis Cluster).
#[derive(Clone, Debug)]
pub struct RedisLimitStore {
    redis: Arc<Redis>,
    prefix: String,
    /// The SHA-1 of [`ADMIT`] and [`SETTLE`] as the server names them, once learned:
    /// then each call sends `EVALSHA` and not the whole script.
    shas: Arc<[std::sync::OnceLock<String>; 2]>,
}

/// Which script.
#[derive(Clone, Copy)]
enum Script {
    Admit = 0,
    Settle = 1,
}

impl RedisLimitStore {
    /// Keys start with `prefix`.
    pub fn new(redis: Arc<Redis>, prefix: &str) -> RedisLimitStore {
        RedisLimitStore {
            redis,
            prefix: prefix.to_owned(),
            shas: Arc::default(),
        }
    }

    /// Runs `which` by its SHA-1 once known (`EVALSHA`), else whole (`EVAL`, after which
    /// the SHA-1 is learned with `SCRIPT LOAD`). A node that does not know the script
    /// (`NOSCRIPT`: restarted, or another Cluster node) gets it whole once.
    async fn run(
        &self,
        which: Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Reply, RedisError> {
        let script = match which {
            Script::Admit => ADMIT,
            Script::Settle => SETTLE,
        };
        let sha = &self.shas[which as usize];
        if let Some(known) = sha.get() {
            let numkeys = keys.len().to_string();
            let mut all: Vec<&[u8]> = vec![b"EVALSHA", known.as_bytes(), numkeys.as_bytes()];
            all.extend_from_slice(keys);
            all.extend_from_slice(args);
            match self.redis.command(&all).await {
                Err(RedisError::Server(e)) if e.contains("NOSCRIPT") => {}
                answer => return answer,
            }
        }
        let answer = self.redis.eval(script, keys, args).await;
        if answer.is_ok() && sha.get().is_none() {
            if let Ok(Reply::Bulk(Some(name))) = self
                .redis
                .command(&[b"SCRIPT", b"LOAD", script.as_bytes()])
                .await
            {
                let _ = sha.set(String::from_utf8_lossy(&name).into_owned());
            }
        }
        answer
    }

    fn keys(&self, principal: &str, agent: &str) -> [String; 4] {
        let agent_id = agent
            .strip_prefix(principal)
            .and_then(|a| a.strip_prefix('/'))
            .unwrap_or(agent);
        let base = format!("{}limits:{{{principal}}}", self.prefix);
        [
            format!("{base}:p"),
            format!("{base}:pc"),
            format!("{base}:a:{agent_id}"),
            format!("{base}:ac:{agent_id}"),
        ]
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

impl LimitStore for RedisLimitStore {
    fn admit<'a>(&'a self, ask: Ask<'a>) -> AdmitFuture<'a> {
        Box::pin(async move {
            let keys = self.keys(ask.principal.0, ask.agent.0);
            let mut args: Vec<String> = vec![
                ask.tokens.to_string(),
                ask.request_id.to_string(),
                IN_FLIGHT_LEASE_MS.to_string(),
            ];
            for q in [ask.principal.1, ask.agent.1] {
                args.extend(q.values().iter().map(u64::to_string));
            }
            let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
            let arg_refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let reply = self
                .run(Script::Admit, &key_refs, &arg_refs)
                .await
                .map_err(store_error)?;
            let v = integers(reply).ok_or_else(|| {
                LimitStoreError::Unavailable("unexpected limit script reply".into())
            })?;
            let retry = |ms: i64| Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
            match v.as_slice() {
                [1, ms] => Ok(Verdict::Refused(Limited {
                    reason: LimitReason::RequestsPerMinute,
                    retry_after: retry(*ms),
                })),
                [2, ms] => Ok(Verdict::Refused(Limited {
                    reason: LimitReason::ConcurrentRequests,
                    retry_after: retry(*ms),
                })),
                [3, ms] => Ok(Verdict::Refused(Limited {
                    reason: LimitReason::Tokens,
                    retry_after: retry(*ms),
                })),
                [0, 0, rest @ ..] if rest.len() == 9 => {
                    let windows =
                        [rest[6], rest[7], rest[8]].map(|n| u64::try_from(n).unwrap_or(0));
                    Ok(Verdict::Admitted(
                        Ticket {
                            principal: ask.principal.0.to_owned(),
                            agent: ask.agent.0.to_owned(),
                            request_id: ask.request_id,
                            reserved: ask.tokens,
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
        })
    }

    fn settle(&self, ticket: Ticket, charged: u64) -> Option<SettleFuture> {
        let this = self.clone();
        Some(Box::pin(async move {
            let keys = this.keys(&ticket.principal, &ticket.agent);
            let args = [
                ticket.request_id.to_string(),
                ticket.reserved.to_string(),
                charged.to_string(),
                ticket.windows[0].to_string(),
                ticket.windows[1].to_string(),
                ticket.windows[2].to_string(),
            ];
            let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
            let arg_refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            this.run(Script::Settle, &key_refs, &arg_refs)
                .await
                .map(|_| ())
                .map_err(store_error)
        }))
    }
}
