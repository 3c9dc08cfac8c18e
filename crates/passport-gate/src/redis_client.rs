//! The gateway's Redis: one server (`redis://[user:pass@]host:port/db`, `rediss://` for
//! TLS) or a Redis Cluster, through the maintained `redis` crate (multiplexed
//! connections, cluster slot routing, rustls). Every command has one deadline that
//! includes waiting for a connection. A new connection first checks, when told to,
//! that the server cannot silently forget keys; a connection that fails is dropped and
//! the next command connects (and checks) again.
//!
//! Why `redis` and not `fred`: `redis` is the client most Redis deployments already
//! run, with TLS through the rustls we already build, cluster support behind one
//! feature, and no background task per client. Its `ConnectionManager` is not used: it
//! reconnects on its own with no hook, and every new connection must pass the
//! durability check.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, IntoConnectionInfo, TlsCertificates, Value};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// A Redis reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and other simple strings.
    Status(String),
    /// `:n`.
    Integer(i64),
    /// A bulk string; `None` for nil.
    Bulk(Option<Vec<u8>>),
    /// An array; `None` for the nil array.
    Array(Option<Vec<Reply>>),
}

impl From<Value> for Reply {
    fn from(v: Value) -> Reply {
        match v {
            Value::Nil => Reply::Bulk(None),
            Value::Int(n) => Reply::Integer(n),
            Value::BulkString(b) => Reply::Bulk(Some(b)),
            Value::Array(items) | Value::Set(items) => {
                Reply::Array(Some(items.into_iter().map(Reply::from).collect()))
            }
            Value::SimpleString(s) => Reply::Status(s),
            Value::Okay => Reply::Status("OK".into()),
            other => Reply::Status(format!("{other:?}")),
        }
    }
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
    /// The server is at `maxmemory` and refused a command that would have grown its
    /// memory (`-OOM`, with `maxmemory-policy noeviction`); nothing was written.
    OutOfMemory(String),
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Unavailable(e) => f.write_str(e),
            RedisError::Server(e) => write!(f, "Redis error: {e}"),
            RedisError::Forgetful(e) => f.write_str(e),
            RedisError::OutOfMemory(e) => write!(f, "Redis is out of memory: {e}"),
        }
    }
}

impl std::error::Error for RedisError {}

fn unavailable(message: String) -> RedisError {
    RedisError::Unavailable(message)
}

/// The connection settings.
#[derive(Clone)]
pub struct RedisConfig {
    /// Server URLs: one server, or the seed nodes of a cluster.
    nodes: Vec<String>,
    /// Redis Cluster (slot routing) instead of one server.
    cluster: bool,
    /// CA and client certificate for `rediss://`, as PEM bytes.
    tls: Option<TlsCertificates>,
    /// `host:port` of the first node, for messages (never the password).
    address: String,
    /// Time allowed for each command, connecting included.
    pub timeout: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("address", &self.address)
            .field("cluster", &self.cluster)
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// CA and client certificate files for `rediss://`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedisTlsFiles<'a> {
    /// A private CA; without it the platform's roots.
    pub ca_file: Option<&'a Path>,
    /// Client certificate and key (mTLS).
    pub client_cert: Option<(&'a Path, &'a Path)>,
}

/// `url` as it may be shown in a message: the password of its user information replaced
/// by `***` (`redis://user:***@host:6379`, `redis://***@host` when there is no user
/// name), whether or not the rest parses, so that a configuration error never prints a
/// credential.
pub fn redacted_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let Some(at) = url[start..].rfind('@').map(|i| start + i) else {
        return url.to_owned();
    };
    let shown = match url[start..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{}{shown}{}", &url[..start], &url[at..])
}

/// `host:port` of a URL, and whether it is TLS. Refuses Unix sockets and the
/// `#insecure` fragment, which would turn certificate verification off silently.
fn address_of(url: &str) -> Result<(String, bool), String> {
    let info = url
        .into_connection_info()
        .map_err(|_| "not a redis:// or rediss:// URL".to_owned())?;
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => Ok((format!("{host}:{port}"), false)),
        ConnectionAddr::TcpTls { insecure: true, .. } => {
            Err("#insecure turns off certificate verification and is refused".into())
        }
        ConnectionAddr::TcpTls { host, port, .. } => Ok((format!("{host}:{port}"), true)),
        _ => Err("must be redis:// or rediss://".into()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl RedisConfig {
    /// One server at `url` (`redis://[user:pass@]host[:port][/db]`, `rediss://` for TLS
    /// verified against the platform's roots).
    pub fn from_url(url: &str, timeout: Duration) -> Result<RedisConfig, String> {
        RedisConfig::new(&[url], false, RedisTlsFiles::default(), timeout)
    }

    /// One server (`cluster = false`, one URL) or a cluster reached through the seed
    /// `nodes`, all `redis://` or all `rediss://`; TLS trusts `tls.ca_file` when given.
    pub fn new(
        nodes: &[&str],
        cluster: bool,
        tls: RedisTlsFiles<'_>,
        timeout: Duration,
    ) -> Result<RedisConfig, String> {
        let Some(first) = nodes.first() else {
            return Err("no Redis URL".into());
        };
        if !cluster && nodes.len() > 1 {
            return Err("several nodes are only for a cluster (cluster = true)".into());
        }
        let mut schemes = Vec::new();
        for url in nodes {
            // The URL may hold a password: messages name only its position.
            let (_, tls) =
                address_of(url).map_err(|e| format!("Redis URL {:?}: {e}", redacted_url(url)))?;
            schemes.push(tls);
        }
        let (address, uses_tls) = address_of(first)?;
        if schemes.iter().any(|t| *t != uses_tls) {
            return Err("mix of redis:// and rediss:// nodes".into());
        }
        let certificates = match (tls.ca_file, tls.client_cert) {
            (None, None) => None,
            _ if !uses_tls => {
                return Err("CA or client certificate files need rediss:// URLs".into())
            }
            (ca, client) => Some(TlsCertificates {
                root_cert: ca.map(read).transpose()?,
                client_tls: match client {
                    Some((cert, key)) => Some(redis::ClientTlsConfig {
                        client_cert: read(cert)?,
                        client_key: read(key)?,
                    }),
                    None => None,
                },
            }),
        };
        let config = RedisConfig {
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            cluster,
            tls: certificates,
            address,
            timeout,
        };
        // Builds (without connecting) to check the certificates parse.
        config.client()?;
        Ok(config)
    }

    /// `host:port` of the first node.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn client(&self) -> Result<Client, String> {
        // The ring provider, as the rest of passport-gate uses; an error only says a
        // default is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if self.cluster {
            let mut b = redis::cluster::ClusterClientBuilder::new(self.nodes.clone())
                .connection_timeout(self.timeout)
                .response_timeout(self.timeout);
            if let Some(t) = &self.tls {
                b = b.certs(t.clone());
            }
            b.build()
                .map(|c| Client::Cluster(Box::new(c)))
                .map_err(|e| format!("Redis cluster: {e}"))
        } else {
            let url = self.nodes[0].as_str();
            let client = match &self.tls {
                Some(t) => redis::Client::build_with_tls(url, t.clone()),
                None => redis::Client::open(url),
            };
            client
                .map(|c| Client::Single(Box::new(c)))
                .map_err(|e| format!("Redis at {}: {e}", self.address))
        }
    }
}

enum Client {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// A live connection; clones share it.
#[derive(Clone)]
enum Link {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Link {
    async fn query(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd).await,
            Link::Cluster(c) => c.req_packed_command(cmd).await,
        }
    }
}

/// What a client keeps in Redis, for the messages about a server that can forget it:
/// what is lost, and the configuration key that accepts the risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keeps {
    /// What a forgetful server loses (`replay records`, `revocations`).
    pub what: &'static str,
    /// The key that accepts such a server.
    pub accept_key: &'static str,
}

impl Keeps {
    /// The replay store's records.
    pub const REPLAY_RECORDS: Keeps = Keeps {
        what: "replay records",
        accept_key: "replay.accept_forgetful_redis",
    };
    /// The shared revocation set.
    pub const REVOCATIONS: Keeps = Keeps {
        what: "revocations",
        accept_key: "revocation.accept_forgetful_redis",
    };
    /// The limit counters and reservations (`[limits] store = "redis"`).
    pub const LIMIT_COUNTERS: Keeps = Keeps {
        what: "limit counters",
        accept_key: "limits.accept_forgetful_redis",
    };
}

/// Whether a server must prove that it keeps every key until it expires, and what
/// happens when it cannot.
#[derive(Clone, Debug, Default)]
pub enum Durability {
    /// No check (the attribution stream: a lost event is not a security failure).
    #[default]
    Unchecked,
    /// A forgetful server is refused (`RedisError::Forgetful`).
    Required(Keeps),
    /// A forgetful server is used, with a loud warning and a count per connection.
    AcceptForgetful {
        /// What the client keeps there.
        keeps: Keeps,
        /// Counted once per forgetful connection.
        counter: Option<crate::metrics::IntCounter>,
    },
}

impl Durability {
    /// The check for a store that keeps `keeps`: a forgetful server refused, or, when
    /// the operator accepts the risk (`accept_forgetful`), used with every such
    /// connection counted on `counter`.
    pub fn for_store(
        keeps: Keeps,
        accept_forgetful: bool,
        counter: crate::metrics::IntCounter,
    ) -> Durability {
        if accept_forgetful {
            Durability::AcceptForgetful {
                keeps,
                counter: Some(counter),
            }
        } else {
            Durability::Required(keeps)
        }
    }
}

/// The message for a server whose settings are `problems`: what it can forget and the
/// settings that fix it (AOF, since RDB snapshots alone are refused), or the key that
/// accepts the risk.
fn forgetful_message(address: &str, keeps: Keeps, problems: &str) -> String {
    format!(
        "Redis at {address} can silently forget {} ({problems}); it needs \
         maxmemory-policy noeviction and AOF persistence (appendonly yes; RDB snapshots \
         alone lose every write since the last one), or set {} = true to accept the risk",
        keeps.what, keeps.accept_key
    )
}

/// A Redis client: one lazily made connection (multiplexed, or a cluster connection),
/// replaced after a failure.
pub struct Redis {
    config: RedisConfig,
    link: tokio::sync::Mutex<Option<Link>>,
    durability: Durability,
    out_of_memory: Option<crate::metrics::IntCounter>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("address", &self.config.address)
            .finish_non_exhaustive()
    }
}

/// Whether the connection is unusable after `e` (dropped, refused, timed out, I/O).
fn connection_failed(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || e.is_cluster_error()
}

async fn config_value(link: &mut Link, name: &str) -> Result<Result<String, String>, RedisError> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg(name);
    match link.query(&cmd).await {
        Ok(Value::ServerError(e)) => Ok(Err(format!("CONFIG GET {name} refused: {e}"))),
        Ok(v) => match Reply::from(v) {
            Reply::Array(Some(items)) => match items.get(1) {
                Some(Reply::Bulk(Some(v))) => Ok(Ok(String::from_utf8_lossy(v).into_owned())),
                _ => Ok(Err(format!("CONFIG GET {name} gave no value"))),
            },
            other => Ok(Err(format!("CONFIG GET {name} answered {other:?}"))),
        },
        Err(e) if connection_failed(&e) => Err(unavailable(format!("Redis: {e}"))),
        Err(e) => Ok(Err(format!("CONFIG GET {name} refused: {e}"))),
    }
}

/// What lets the server forget a key before it expires. A refused `CONFIG GET` (managed
/// Redis often forbids it) counts as unknown, hence forgetful: the operator who checked
/// the provider's settings says so with `replay.accept_forgetful_redis = true`. Under
/// Cluster the command goes to one node; the nodes of a cluster are expected to share
/// their settings.
async fn forgetful_settings(link: &mut Link) -> Result<Vec<String>, RedisError> {
    let mut problems = Vec::new();
    match config_value(link, "maxmemory-policy").await? {
        Ok(p) if p == "noeviction" => {}
        Ok(p) => problems.push(format!("maxmemory-policy is {p}")),
        Err(e) => problems.push(format!("eviction policy unknown: {e}")),
    }
    let aof = config_value(link, "appendonly").await?;
    let rdb = config_value(link, "save").await?;
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
    /// A client for `config`; it connects on the first command.
    pub fn new(config: RedisConfig) -> Redis {
        Redis {
            config,
            link: tokio::sync::Mutex::new(None),
            durability: Durability::Unchecked,
            out_of_memory: None,
        }
    }

    /// Counts every command the server refuses for being at `maxmemory` on `counter`.
    pub fn count_out_of_memory_on(mut self, counter: crate::metrics::IntCounter) -> Redis {
        self.out_of_memory = Some(counter);
        self
    }

    /// The time allowed for each command, waiting for a connection included.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// `host:port` of the (first) server, for messages.
    pub fn address(&self) -> &str {
        &self.config.address
    }

    /// Checks every new connection's settings as `durability` says.
    pub fn with_durability(mut self, durability: Durability) -> Redis {
        self.durability = durability;
        self
    }

    /// Sends one command; waiting for a connection counts against the timeout.
    pub async fn command(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let Some((name, rest)) = args.split_first() else {
            return Err(RedisError::Server("empty command".into()));
        };
        let mut cmd = redis::cmd(&String::from_utf8_lossy(name));
        for a in rest {
            cmd.arg(*a);
        }
        let timeout = self.config.timeout;
        match tokio::time::timeout(timeout, self.round_trip(&cmd)).await {
            Ok(r) => r,
            Err(_) => Err(unavailable(format!(
                "Redis at {} did not answer within {timeout:?}",
                self.config.address
            ))),
        }
    }

    /// Connects (and checks durability) if needed and sends `PING`.
    pub async fn check(&self) -> Result<(), RedisError> {
        self.command(&[b"PING"]).await.map(|_| ())
    }

    async fn round_trip(&self, cmd: &redis::Cmd) -> Result<Reply, RedisError> {
        let mut link = self.link().await?;
        match link.query(cmd).await {
            // The crate hands an error reply back as a value.
            Ok(Value::ServerError(e)) if e.code() == "OOM" => Err(self.out_of_memory(&e)),
            Ok(Value::ServerError(e)) => Err(RedisError::Server(e.to_string())),
            Ok(v) => Ok(Reply::from(v)),
            Err(e) if connection_failed(&e) => {
                // The next command connects again, and checks the server again.
                *self.link.lock().await = None;
                Err(unavailable(format!(
                    "Redis at {}: {e}",
                    self.config.address
                )))
            }
            Err(e) if e.code() == Some("OOM") => Err(self.out_of_memory(&e)),
            Err(e) => Err(RedisError::Server(e.to_string())),
        }
    }

    /// A refusal at `maxmemory`, counted.
    fn out_of_memory(&self, e: &dyn fmt::Display) -> RedisError {
        if let Some(c) = &self.out_of_memory {
            c.inc();
        }
        RedisError::OutOfMemory(e.to_string())
    }

    /// The live connection, made (and checked) when there is none. Commands that find
    /// none wait here for the one being made.
    async fn link(&self) -> Result<Link, RedisError> {
        let mut current = self.link.lock().await;
        if let Some(link) = &*current {
            return Ok(link.clone());
        }
        let link = self.connect().await?;
        *current = Some(link.clone());
        Ok(link)
    }

    async fn connect(&self) -> Result<Link, RedisError> {
        let address = &self.config.address;
        let client = self.config.client().map_err(unavailable)?;
        let mut link = match client {
            Client::Single(c) => {
                let settings = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.config.timeout))
                    .set_response_timeout(Some(self.config.timeout));
                Link::Single(
                    c.get_multiplexed_async_connection_with_config(&settings)
                        .await
                        .map_err(|e| {
                            unavailable(format!("cannot connect to Redis at {address}: {e}"))
                        })?,
                )
            }
            Client::Cluster(c) => Link::Cluster(c.get_async_connection().await.map_err(|e| {
                unavailable(format!(
                    "cannot connect to the Redis cluster at {address}: {e}"
                ))
            })?),
        };
        let (keeps, counter) = match &self.durability {
            Durability::Unchecked => return Ok(link),
            Durability::Required(keeps) => (*keeps, None),
            Durability::AcceptForgetful { keeps, counter } => (*keeps, Some(counter)),
        };
        let problems = forgetful_settings(&mut link).await?;
        if problems.is_empty() {
            return Ok(link);
        }
        let problems = problems.join("; ");
        match counter {
            None => Err(RedisError::Forgetful(forgetful_message(
                address, keeps, &problems,
            ))),
            Some(counter) => {
                tracing::warn!(
                    address = %address,
                    problems = %problems,
                    accepted_by = keeps.accept_key,
                    "USING A REDIS THAT CAN SILENTLY FORGET {}: what it forgets no longer protects",
                    keeps.what.to_uppercase()
                );
                if let Some(c) = counter {
                    c.inc();
                }
                Ok(link)
            }
        }
    }

    /// `EVAL script numkeys keys.. args..` (under Cluster every key must share a slot).
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

    /// `SET key 1 NX PX ttl`: whether the key was new.
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

    /// `SMEMBERS key` (members that are not UTF-8 are skipped).
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
    fn urls_with_user_password_database_and_tls_are_accepted() {
        let t = Duration::from_secs(1);
        let address = |url: &str| RedisConfig::from_url(url, t).map(|c| c.address().to_owned());
        assert_eq!(address("redis://127.0.0.1:6380").unwrap(), "127.0.0.1:6380");
        assert_eq!(address("redis://localhost").unwrap(), "localhost:6379");
        assert_eq!(address("redis://user:pw@x:1/3").unwrap(), "x:1");
        assert_eq!(address("rediss://:pw@x:6380/0").unwrap(), "x:6380");
        assert!(address("http://x").is_err());
    }

    #[test]
    fn a_url_that_turns_off_certificate_verification_is_refused() {
        let e =
            RedisConfig::from_url("rediss://x:6380/#insecure", Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("#insecure"), "{e}");
    }

    #[test]
    fn urls_are_shown_with_the_password_redacted() {
        for (url, shown) in [
            ("redis://u:s3cret@x:1/0", "redis://u:***@x:1/0"),
            ("rediss://:s3cret@x/#insecure", "rediss://:***@x/#insecure"),
            ("redis://s3cret@x:notaport", "redis://***@x:notaport"),
            ("u:s3:cret@x", "u:***@x"),
            ("redis://x:1", "redis://x:1"),
        ] {
            assert_eq!(redacted_url(url), shown);
        }
    }

    #[test]
    fn a_password_never_appears_in_a_config_error_or_debug_output() {
        let c = RedisConfig::from_url("redis://u:s3cret@x:1", Duration::from_secs(1)).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = RedisConfig::new(
            &["redis://u:s3cret@x:1", "rediss://u:s3cret@y:1"],
            true,
            RedisTlsFiles::default(),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn the_durability_message_names_appendonly_and_the_key_that_accepts_the_risk() {
        for (keeps, key) in [
            (Keeps::REPLAY_RECORDS, "replay.accept_forgetful_redis"),
            (Keeps::REVOCATIONS, "revocation.accept_forgetful_redis"),
        ] {
            let m = forgetful_message("x:6379", keeps, "only RDB snapshots");
            assert!(m.contains("maxmemory-policy noeviction"), "{m}");
            assert!(m.contains("appendonly yes"), "{m}");
            assert!(m.contains("RDB snapshots alone"), "{m}");
            assert!(!m.contains("AOF or RDB"), "{m}");
            assert!(m.contains(&format!("{key} = true")), "{m}");
            assert!(m.contains(keeps.what), "{m}");
        }
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
        let r = std::sync::Arc::new(Redis::new(
            RedisConfig::from_url(&format!("redis://{address}"), Duration::from_millis(300))
                .unwrap(),
        ));
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
        let r = Redis::new(
            RedisConfig::from_url(&format!("redis://{closed}"), Duration::from_millis(500))
                .unwrap(),
        );
        assert!(r.set_nx_px("k", 1000).await.is_err());
    }
}
