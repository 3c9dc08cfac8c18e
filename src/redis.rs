//! A small Redis client: RESP2 over one TCP connection, reconnected on failure, every
//! command bounded by a timeout. It speaks only what passport-gate needs (`SET NX PX`,
//! set and stream commands), so it stays a few hundred lines instead of a dependency
//! tree.

use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

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

/// A command that did not produce a reply: the server is unreachable, slow, or answered
/// an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisError(pub String);

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedisError {}

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

/// A Redis client with one lazily (re)opened connection. Commands are serialized over
/// it; for passport-gate's one or two commands per request that is plenty.
pub struct Redis {
    config: RedisConfig,
    conn: Mutex<Option<Conn>>,
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
        .map_err(|e| RedisError(format!("reading from Redis: {e}")))?;
    if n == 0 {
        return Err(RedisError("Redis closed the connection".into()));
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
                .map_err(|_| RedisError(format!("bad Redis reply {line:?}")))
        };
        match kind {
            "+" => Ok(Reply::Status(rest.to_owned())),
            "-" => Err(RedisError(format!("Redis error: {rest}"))),
            ":" => Ok(Reply::Integer(number()?)),
            "$" => {
                let len = number()?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                if len > MAX_REPLY_LEN {
                    return Err(RedisError("Redis reply too large".into()));
                }
                let mut buf = vec![0u8; len as usize + 2];
                conn.read_exact(&mut buf)
                    .await
                    .map_err(|e| RedisError(format!("reading from Redis: {e}")))?;
                buf.truncate(len as usize);
                Ok(Reply::Bulk(Some(buf)))
            }
            "*" => {
                let len = number()?;
                if len < 0 {
                    return Ok(Reply::Array(None));
                }
                if len > MAX_REPLY_LEN {
                    return Err(RedisError("Redis reply too large".into()));
                }
                let mut items = Vec::with_capacity(len.min(1024) as usize);
                for _ in 0..len {
                    items.push(read_reply(conn).await?);
                }
                Ok(Reply::Array(Some(items)))
            }
            _ => Err(RedisError(format!("bad Redis reply {line:?}"))),
        }
    })
}

impl Redis {
    /// A client for `config`; nothing is connected until the first command.
    pub fn new(config: RedisConfig) -> Redis {
        Redis {
            config,
            conn: Mutex::new(None),
        }
    }

    /// Runs one command. On any failure the connection is dropped, so the next command
    /// reconnects.
    pub async fn command(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let timeout = self.config.timeout;
        let mut guard = self.conn.lock().await;
        let attempt = async {
            if guard.is_none() {
                let stream = TcpStream::connect(&self.config.address)
                    .await
                    .map_err(|e| {
                        RedisError(format!(
                            "cannot connect to Redis at {}: {e}",
                            self.config.address
                        ))
                    })?;
                let _ = stream.set_nodelay(true);
                *guard = Some(BufReader::new(stream));
            }
            let conn = guard
                .as_mut()
                .ok_or_else(|| RedisError("no connection".into()))?;
            conn.get_mut()
                .write_all(&encode(args))
                .await
                .map_err(|e| RedisError(format!("writing to Redis: {e}")))?;
            read_reply(conn).await
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(RedisError(format!(
                "Redis did not answer within {timeout:?}"
            ))),
        };
        if let Err(e) = &result {
            // A server error reply leaves the connection usable; anything else does not.
            if !e.0.starts_with("Redis error:") {
                *guard = None;
            }
        }
        result
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
            other => Err(RedisError(format!("unexpected SET reply {other:?}"))),
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
            other => Err(RedisError(format!("unexpected SMEMBERS reply {other:?}"))),
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
