//! The replay store in Redis (the `redis` feature): one record set for every replica.

use super::{
    ReleaseFuture, ReplayError, ReplayFuture, ReplayRecord, ReplayStore, ReplayVerdict,
    DEFAULT_RECORDS_PER_PRINCIPAL,
};
use crate::redis_client::{Redis, RedisError, Reply};
use passport_core::time::Timestamp;
use std::sync::Arc;

/// Forgets a reserved record and its place in the principal's quota, in one step.
/// KEYS: the record, the principal's sorted set. ARGV: the member.
const RELEASE: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"#;

/// Check, count and record in one step on the server, so that two replicas seeing one
/// request at once still give exactly one acceptance, and the quota cannot be raced.
/// KEYS: the record, the principal's sorted set of live records (scored by deadline).
/// ARGV: now (ms), deadline (ms), TTL (ms), quota, the member.
/// Returns 1 fresh, 0 replayed, 2 over quota.
///
/// The script reads before it writes, and its first write is `SET`, a command Redis
/// refuses at `maxmemory` (`-OOM`): Redis checks memory only at a script's first write
/// that would grow it, and lets every later write through, so an earlier write (such
/// as pruning the expired members first) would let a full Redis grow with every
/// request. Expired members are therefore counted out by score (`ZCOUNT` above now)
/// and pruned last.
const CHECK_AND_RECORD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf') >= tonumber(ARGV[4]) then return 2 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"#;

/// A store shared by every replica: the record is `<prefix>replay:{<principal>}:<hex
/// key>` with a TTL, and each principal's live records are counted in the sorted set
/// `<prefix>replay-quota:{<principal address>}`. The braces are a Redis Cluster hash
/// tag: one principal's keys share a slot, so the script is cluster-safe.
#[derive(Clone, Debug)]
pub struct RedisReplayStore {
    redis: Arc<Redis>,
    prefix: String,
    per_principal: u64,
}

impl RedisReplayStore {
    /// Keys start with `prefix`; the quota is [`DEFAULT_RECORDS_PER_PRINCIPAL`].
    pub fn new(redis: Arc<Redis>, prefix: &str) -> RedisReplayStore {
        RedisReplayStore {
            redis,
            prefix: prefix.to_owned(),
            per_principal: DEFAULT_RECORDS_PER_PRINCIPAL,
        }
    }

    /// At most `n` live records per principal.
    pub fn records_per_principal(mut self, n: u64) -> RedisReplayStore {
        self.per_principal = n;
        self
    }
}

fn unix_millis(t: Timestamp) -> i128 {
    t.unix_nanos() / 1_000_000
}

impl RedisReplayStore {
    fn keys(&self, key: &[u8; 32], principal: &str) -> (String, String, String) {
        let member = hex::encode(key);
        // Both keys carry the principal as a hash tag, so under Redis Cluster they fall
        // in one slot and the scripts may touch both.
        let name = format!("{}replay:{{{principal}}}:{member}", self.prefix);
        let quota_set = format!("{}replay-quota:{{{principal}}}", self.prefix);
        (member, name, quota_set)
    }
}

impl ReplayStore for RedisReplayStore {
    fn release<'a>(&'a self, key: &'a [u8; 32], principal: &'a str) -> ReleaseFuture<'a> {
        Box::pin(async move {
            let (member, name, quota_set) = self.keys(key, principal);
            match self
                .redis
                .eval(
                    RELEASE,
                    &[name.as_bytes(), quota_set.as_bytes()],
                    &[member.as_bytes()],
                )
                .await
            {
                Ok(Reply::Integer(1)) => Ok(()),
                Ok(other) => Err(ReplayError::Unavailable(format!(
                    "unexpected release script reply {other:?}"
                ))),
                Err(e) => Err(ReplayError::Unavailable(e.to_string())),
            }
        })
    }

    fn check_and_record<'a>(&'a self, record: ReplayRecord<'a>) -> ReplayFuture<'a> {
        Box::pin(async move {
            let ttl_ms = u64::try_from(record.until.nanos_since(record.now) / 1_000_000)
                .unwrap_or(0)
                .max(1)
                .to_string();
            let (member, name, quota_set) = self.keys(record.key, record.principal);
            let now = unix_millis(record.now).to_string();
            let until = unix_millis(record.until).to_string();
            let quota = self.per_principal.to_string();
            let answer = self
                .redis
                .eval(
                    CHECK_AND_RECORD,
                    &[name.as_bytes(), quota_set.as_bytes()],
                    &[
                        now.as_bytes(),
                        until.as_bytes(),
                        ttl_ms.as_bytes(),
                        quota.as_bytes(),
                        member.as_bytes(),
                    ],
                )
                .await;
            match answer {
                Ok(Reply::Integer(1)) => Ok(ReplayVerdict::Fresh),
                Ok(Reply::Integer(0)) => Ok(ReplayVerdict::Replayed),
                Ok(Reply::Integer(2)) => Err(ReplayError::QuotaExceeded),
                Ok(other) => Err(ReplayError::Unavailable(format!(
                    "unexpected replay script reply {other:?}"
                ))),
                Err(RedisError::Forgetful(e)) => Err(ReplayError::Untrusted(e)),
                // Nothing was written: refused like a full in-process store.
                Err(RedisError::OutOfMemory(_)) => Err(ReplayError::Full),
                Err(e) => Err(ReplayError::Unavailable(e.to_string())),
            }
        })
    }
}
