//! A small Redis client: RESP2 over one TCP connection, reconnected on failure, every
//! command bounded by a timeout. It speaks only what passport-gate needs (`SET NX PX`,
//! set and stream commands), so it stays a few hundred lines instead of a dependency
//! tree.

use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// A Redis reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and other simple strings.
    Status(String),
    /// `:n`.
    Integer(i64),
    /// `$n` bulk string; `None` for the nil bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` for the nil array.
    Array(Option<Vec<Reply>>),
}

/// A command that did not produce a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisError {
    /// The server is unreachable, slow, closed the connection or answered garbage; the
    /// connection is dropped.
    Unavailable(String),
    /// The server answered an error reply; the connection stays usable.
    Server(String),
    /// The server's settings let it silently forget keys (eviction, no persistence, or
    /// unknown), and the client was told to refuse such a server.
    Forgetful(String),
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Unavailable(e) => f.write_str(e),
            RedisError::Server(e) => write!(f, "Redis error: {e}"),
            RedisError::Forgetful(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for RedisError {}

fn unavailable(message: String) -> RedisError {
    RedisError::Unavailable(message)
}

/// The connection settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// `host:port`.
    pub address: String,
    /// Time allowed for connecting and for each command.
    pub timeout: Duration,
}

impl RedisConfig {
    /// Parses `redis://host:port` (no password or database support).
    pub fn from_url(url: &str, timeout: Duration) -> Result<RedisConfig, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("{url:?} must start with redis://"))?;
        let address = rest.trim_end_matches('/');
        if address.is_empty() || address.contains(['/', '@']) {
            return Err(format!(
                "{url:?} must be redis://host:port (no user, password or database)"
            ));
        }
        let address = if address.contains(':') {
            address.to_owned()
        } else {
            format!("{address}:6379")
        };
        Ok(RedisConfig { address, timeout })
    }
}

type Conn = BufReader<TcpStream>;

/// The most connections one client opens at once. Requests beyond it wait for a free
/// one, and that wait counts against the command's timeout.
const MAX_CONNECTIONS: usize = 32;

/// What the client does about a server that can silently forget keys.
#[derive(Clone, Debug, Default)]
pub enum Durability {
    /// Nothing is checked (revocation polling and attribution streams).
    #[default]
    Unchecked,
    /// Every new connection first reads `maxmemory-policy`, `appendonly` and `save`; a
    /// server that can evict keys, forgets them on restart, or refuses to say, is
    /// refused with [`RedisError::Forgetful`].
    Required,
    /// As `Required`, but a forgetful server is used anyway: each such connection is
    /// logged as a warning and counted on `counter`.
    AcceptForgetful {
        /// Counts connections made to a forgetful server.
        counter: Option<prometheus::IntCounter>,
    },
}

/// A Redis client. Each command takes an idle connection (or opens one, up to
/// [`MAX_CONNECTIONS`]) for the time of one round trip, so a stalled server delays
/// no request beyond the timeout: waiting for a connection, connecting, writing and
/// reading all count against it.
pub struct Redis {
    config: RedisConfig,
    idle: std::sync::Mutex<Vec<Conn>>,
    slots: Semaphore,
    durability: Durability,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("address", &self.config.address)
            .finish_non_exhaustive()
    }
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The longest bulk string or array accepted from the server.
const MAX_REPLY_LEN: i64 = 64 << 20;

async fn read_line(conn: &mut Conn) -> Result<String, RedisError> {
    let mut line = String::new();
    let n = conn
        .read_line(&mut line)
        .await
        .map_err(|e| unavailable(format!("reading from Redis: {e}")))?;
    if n == 0 {
        return Err(unavailable("Redis closed the connection".into()));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_reply(
    conn: &mut Conn,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, RedisError>> + Send + '_>> {
    Box::pin(async move {
        let line = read_line(conn).await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let number = || {
            rest.parse::<i64>()
                .map_err(|_| unavailable(format!("bad Redis reply {line:?}")))
        };
        match kind {
            "+" => Ok(Reply::Status(rest.to_owned())),
            "-" => Err(RedisError::Server(rest.to_owned())),
            ":" => Ok(Reply::Integer(number()?)),
            "$" => {
                let len = number()?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                if len > MAX_REPLY_LEN {
                    return Err(unavailable("Redis reply too large".into()));
                }
                let mut buf = vec![0u8; len as usize + 2];
                conn.read_exact(&mut buf)
                    .await
                    .map_err(|e| unavailable(format!("reading from Redis: {e}")))?;
                buf.truncate(len as usize);
                Ok(Reply::Bulk(Some(buf)))
            }
            "*" => {
                let len = number()?;
                if len < 0 {
                    return Ok(Reply::Array(None));
                }
                if len > MAX_REPLY_LEN {
                    return Err(unavailable("Redis reply too large".into()));
                }
                let mut items = Vec::with_capacity(len.min(1024) as usize);
                for _ in 0..len {
                    items.push(read_reply(conn).await?);
                }
                Ok(Reply::Array(Some(items)))
            }
            _ => Err(unavailable(format!("bad Redis reply {line:?}"))),
        }
    })
}

async fn exchange(conn: &mut Conn, args: &[&[u8]]) -> Result<Reply, RedisError> {
    conn.get_mut()
        .write_all(&encode(args))
        .await
        .map_err(|e| unavailable(format!("writing to Redis: {e}")))?;
    read_reply(conn).await
}

/// The value of one `CONFIG GET` parameter, or why it could not be read.
async fn config_value(conn: &mut Conn, name: &str) -> Result<Result<String, String>, RedisError> {
    match exchange(conn, &[b"CONFIG", b"GET", name.as_bytes()]).await {
        Ok(Reply::Array(Some(items))) => match items.get(1) {
            Some(Reply::Bulk(Some(v))) => Ok(Ok(String::from_utf8_lossy(v).into_owned())),
            _ => Ok(Err(format!("CONFIG GET {name} gave no value"))),
        },
        Ok(other) => Ok(Err(format!("CONFIG GET {name} answered {other:?}"))),
        Err(RedisError::Server(e)) => Ok(Err(format!("CONFIG GET {name} refused: {e}"))),
        Err(e) => Err(e),
    }
}

/// What lets the server forget a key before its TTL: any eviction policy but
/// `noeviction` (our keys all carry a TTL, so `volatile-*` policies evict them too), no
/// append-only file (a restart forgets everything, or with RDB snapshots alone
/// everything since the last one), or settings it will not tell (managed
/// servers often refuse `CONFIG`, and unknown counts as unsafe). Empty when safe.
async fn forgetful_settings(conn: &mut Conn) -> Result<Vec<String>, RedisError> {
    let mut problems = Vec::new();
    match config_value(conn, "maxmemory-policy").await? {
        Ok(p) if p == "noeviction" => {}
        Ok(p) => problems.push(format!("maxmemory-policy is {p}")),
        Err(e) => problems.push(format!("eviction policy unknown: {e}")),
    }
    let aof = config_value(conn, "appendonly").await?;
    let rdb = config_value(conn, "save").await?;
    // Only the append-only file keeps what was written since the last snapshot: with RDB
    // snapshots alone, a crash forgets every record newer than the snapshot, and each
    // of those requests could be replayed once.
    match (aof, rdb) {
        (Ok(a), _) if a == "yes" => {}
        (Ok(_), Ok(s)) if !s.trim().is_empty() => problems.push(format!(
            "only RDB snapshots (save \"{s}\", appendonly no): a crash forgets the records since the last snapshot"
        )),
        (Ok(_), Ok(_)) => problems.push("no persistence (appendonly no, save \"\")".into()),
        (Err(e), _) | (_, Err(e)) => problems.push(format!("persistence unknown: {e}")),
    }
    Ok(problems)
}

impl Redis {
    /// A client for `config`; nothing is connected until the first command.
    pub fn new(config: RedisConfig) -> Redis {
        Redis {
            config,
            idle: std::sync::Mutex::new(Vec::new()),
            slots: Semaphore::new(MAX_CONNECTIONS),
            durability: Durability::Unchecked,
        }
    }

    /// Checks every new connection's server settings as `durability` says.
    pub fn with_durability(mut self, durability: Durability) -> Redis {
        self.durability = durability;
        self
    }

    /// Runs one command within the configured timeout. On any failure but an error
    /// reply the connection is dropped, so a later command opens a fresh one.
    pub async fn command(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let timeout = self.config.timeout;
        match tokio::time::timeout(timeout, self.round_trip(args)).await {
            Ok(r) => r,
            Err(_) => Err(unavailable(format!(
                "Redis did not answer within {timeout:?}"
            ))),
        }
    }

    /// Opens a connection now and checks the server as the durability setting says
    /// (used at startup, so that a refused server is reported before serving).
    pub async fn check(&self) -> Result<(), RedisError> {
        self.command(&[b"PING"]).await.map(|_| ())
    }

    // If the caller's timeout drops this future mid-command, the connection it owns is
    // dropped with it: a half-read reply never reaches the next command.
    async fn round_trip(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| unavailable("the Redis client is closed".into()))?;
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut conn = match idle {
            Some(c) => c,
            None => self.connect().await?,
        };
        let result = exchange(&mut conn, args).await;
        if matches!(result, Ok(_) | Err(RedisError::Server(_))) {
            if let Ok(mut v) = self.idle.lock() {
                v.push(conn);
            }
        }
        result
    }

    async fn connect(&self) -> Result<Conn, RedisError> {
        let stream = TcpStream::connect(&self.config.address)
            .await
            .map_err(|e| {
                unavailable(format!(
                    "cannot connect to Redis at {}: {e}",
                    self.config.address
                ))
            })?;
        let _ = stream.set_nodelay(true);
        let mut conn = BufReader::new(stream);
        let counter = match &self.durability {
            Durability::Unchecked => return Ok(conn),
            Durability::Required => None,
            Durability::AcceptForgetful { counter } => Some(counter),
        };
        let problems = forgetful_settings(&mut conn).await?;
        if problems.is_empty() {
            return Ok(conn);
        }
        let problems = problems.join("; ");
        match counter {
            None => Err(RedisError::Forgetful(format!(
                "Redis at {} can silently forget replay records ({problems}); it needs \
                 maxmemory-policy noeviction and AOF or RDB persistence, or set \
                 replay.accept_forgetful_redis = true to accept the risk",
                self.config.address
            ))),
            Some(counter) => {
                tracing::warn!(
                    address = %self.config.address,
                    problems = %problems,
                    "USING A REDIS THAT CAN SILENTLY FORGET REPLAY RECORDS \
                     (replay.accept_forgetful_redis = true): a forgotten record lets that \
                     request be replayed"
                );
                if let Some(c) = counter {
                    c.inc();
                }
                Ok(conn)
            }
        }
    }

    /// `EVAL script numkeys keys... args...`.
    pub async fn eval(
        &self,
        script: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Reply, RedisError> {
        let numkeys = keys.len().to_string();
        let mut all: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), numkeys.as_bytes()];
        all.extend_from_slice(keys);
        all.extend_from_slice(args);
        self.command(&all).await
    }

    /// `SET key value NX PX ttl_ms`: true when the key was new.
    pub async fn set_nx_px(&self, key: &str, ttl_ms: u64) -> Result<bool, RedisError> {
        let ttl = ttl_ms.max(1).to_string();
        match self
            .command(&[b"SET", key.as_bytes(), b"1", b"NX", b"PX", ttl.as_bytes()])
            .await?
        {
            Reply::Status(s) if s == "OK" => Ok(true),
            Reply::Bulk(None) => Ok(false),
            other => Err(unavailable(format!("unexpected SET reply {other:?}"))),
        }
    }

    /// `SADD key member`.
    pub async fn sadd(&self, key: &str, member: &str) -> Result<(), RedisError> {
        self.command(&[b"SADD", key.as_bytes(), member.as_bytes()])
            .await
            .map(|_| ())
    }

    /// `SMEMBERS key`, as strings.
    pub async fn smembers(&self, key: &str) -> Result<Vec<String>, RedisError> {
        match self.command(&[b"SMEMBERS", key.as_bytes()]).await? {
            Reply::Array(Some(items)) => Ok(items
                .into_iter()
                .filter_map(|r| match r {
                    Reply::Bulk(Some(b)) => String::from_utf8(b).ok(),
                    _ => None,
                })
                .collect()),
            other => Err(unavailable(format!("unexpected SMEMBERS reply {other:?}"))),
        }
    }

    /// `XADD key MAXLEN ~ maxlen * field value`.
    pub async fn xadd(
        &self,
        key: &str,
        maxlen: u64,
        field: &str,
        value: &[u8],
    ) -> Result<(), RedisError> {
        let maxlen = maxlen.to_string();
        self.command(&[
            b"XADD",
            key.as_bytes(),
            b"MAXLEN",
            b"~",
            maxlen.as_bytes(),
            b"*",
            field.as_bytes(),
            value,
        ])
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_encoded_as_resp_arrays() {
        assert_eq!(
            encode(&[b"SET", b"k", b"1"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n".to_vec()
        );
    }

    #[test]
    fn urls_are_checked() {
        let t = Duration::from_secs(1);
        assert_eq!(
            RedisConfig::from_url("redis://127.0.0.1:6380", t)
                .unwrap()
                .address,
            "127.0.0.1:6380"
        );
        assert_eq!(
            RedisConfig::from_url("redis://localhost", t)
                .unwrap()
                .address,
            "localhost:6379"
        );
        assert!(RedisConfig::from_url("http://x", t).is_err());
        assert!(RedisConfig::from_url("redis://user:pw@x:1/0", t).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commands_to_a_stalled_server_each_end_within_the_timeout() {
        let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = stall.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = stall.accept().await {
                held.push(s);
            }
        });
        let r = std::sync::Arc::new(Redis::new(RedisConfig {
            address,
            timeout: Duration::from_millis(300),
        }));
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let r = std::sync::Arc::clone(&r);
                tokio::spawn(async move { r.set_nx_px("k", 1000).await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Err(RedisError::Unavailable(_))));
        }
        assert!(started.elapsed() < Duration::from_millis(1_000));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_not_a_hang() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = Redis::new(RedisConfig {
            address: closed.to_string(),
            timeout: Duration::from_millis(500),
        });
        assert!(r.set_nx_px("k", 1000).await.is_err());
    }
}
