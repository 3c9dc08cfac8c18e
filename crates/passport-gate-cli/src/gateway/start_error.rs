//! Why the gateway could not start: one variant per reason, each printed as one line
//! naming the configuration key it comes from.

use passport_gate::grants::GrantQueryError;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the gateway could not start.
#[derive(Debug)]
pub enum StartError {
    /// Several problems, found in one run (every file that cannot be opened), printed
    /// one per line.
    Problems(Vec<StartError>),
    /// A metric could not be registered.
    Metrics(prometheus::Error),
    /// The attribution queue's thread could not be started.
    AttributionThread(std::io::Error),
    /// A file the gateway writes (`attribution.audit_file`, `attribution.file`,
    /// `server.access_log`) could not be opened.
    OpenFile {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be opened.
        source: std::io::Error,
    },
    /// The Redis client of `attribution.redis_stream` could not be set up.
    RedisStream(std::io::Error),
    /// The chain-node client of `binding.chain_node` could not be set up.
    ChainNode(GrantQueryError),
    /// `binding.requester_signature` without `binding.chain_node` (the configuration
    /// refuses it first).
    RequesterSignatureWithoutChainNode,
    /// The watcher of `principals.allow_file` could not be started.
    PrincipalsFile(String),
    /// The replay store's Redis server can silently forget records and
    /// `replay.accept_forgetful_redis` is off.
    ReplayStoreForgetful(String),
    /// The disk replay store in `replay.data_dir` could not be opened (missing directory,
    /// a file that is not a replay database or is damaged, or one another process holds);
    /// it is never replaced.
    ReplayDataDir(passport_gate::replay::DiskStoreError),
    /// The watcher of `revocation.file` could not be started.
    RevocationFile(String),
    /// The revocation set's Redis server can silently forget it and
    /// `revocation.accept_forgetful_redis` is off.
    RevocationStoreForgetful(String),
    /// The limit store's Redis server can silently forget counters and
    /// `limits.accept_forgetful_redis` is off.
    LimitStoreForgetful(String),
    /// The watcher of `limits.policy_file` could not be started.
    LimitsPolicyWatcher(std::io::Error),
    /// The passport layer refused its `agent_envelope` settings.
    Envelope(passport_gate::ConfigError),
    /// The access log's writer thread could not be started.
    AccessLogThread(std::io::Error),
    /// The watcher of `upstream_auth.token_file` could not be started.
    UpstreamAuthWatcher(std::io::Error),
    /// `server.listen` could not be bound.
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// Why it could not be bound.
        source: std::io::Error,
    },
    /// `server.admin_listen` could not be bound.
    AdminListen {
        /// The configured address.
        addr: SocketAddr,
        /// Why it could not be bound.
        source: std::io::Error,
    },
    /// A bound listener's address could not be read.
    LocalAddr(std::io::Error),
}

impl StartError {
    /// `problems` as one error: the only one, or all of them together.
    pub(crate) fn from_problems(mut problems: Vec<StartError>) -> StartError {
        if problems.len() == 1 {
            problems.remove(0)
        } else {
            StartError::Problems(problems)
        }
    }

    /// Every single problem, in the order found (nested lists flattened).
    pub fn problems(&self) -> Vec<&StartError> {
        match self {
            StartError::Problems(list) => list.iter().flat_map(StartError::problems).collect(),
            e => vec![e],
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Problems(list) => {
                for (i, e) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
            StartError::Metrics(e) => write!(f, "metrics: {e}"),
            StartError::AttributionThread(e) => {
                write!(f, "cannot start the attribution thread: {e}")
            }
            StartError::OpenFile { key, path, source } => {
                write!(f, "{key}: cannot open {}: {source}", path.display())
            }
            StartError::RedisStream(e) => write!(f, "attribution.redis_stream: {e}"),
            StartError::ChainNode(e) => write!(f, "binding.chain_node: {e}"),
            StartError::RequesterSignatureWithoutChainNode => {
                f.write_str("binding.requester_signature: needs binding.chain_node")
            }
            StartError::PrincipalsFile(e) => write!(f, "principals.allow_file: {e}"),
            StartError::ReplayStoreForgetful(e) => write!(f, "replay.store: {e}"),
            StartError::ReplayDataDir(e) => write!(f, "replay.data_dir: {e}"),
            StartError::RevocationFile(e) => write!(f, "revocation.file: {e}"),
            StartError::RevocationStoreForgetful(e) => write!(f, "revocation.redis: {e}"),
            StartError::LimitStoreForgetful(e) => write!(f, "limits.store: {e}"),
            StartError::LimitsPolicyWatcher(e) => {
                write!(f, "limits.policy_file: cannot start the watcher: {e}")
            }
            StartError::Envelope(e) => write!(f, "agent_envelope.{e}"),
            StartError::AccessLogThread(e) => write!(f, "cannot start the access log thread: {e}"),
            StartError::UpstreamAuthWatcher(e) => {
                write!(f, "upstream_auth.token_file: cannot start the watcher: {e}")
            }
            StartError::Listen { addr, source } => {
                write!(f, "server.listen: cannot listen on {addr}: {source}")
            }
            StartError::AdminListen { addr, source } => {
                write!(f, "server.admin_listen: cannot listen on {addr}: {source}")
            }
            StartError::LocalAddr(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Metrics(e) => Some(e),
            StartError::AttributionThread(e)
            | StartError::RedisStream(e)
            | StartError::AccessLogThread(e)
            | StartError::UpstreamAuthWatcher(e)
            | StartError::LimitsPolicyWatcher(e)
            | StartError::LocalAddr(e)
            | StartError::OpenFile { source: e, .. }
            | StartError::Listen { source: e, .. }
            | StartError::AdminListen { source: e, .. } => Some(e),
            StartError::ChainNode(e) => Some(e),
            StartError::Envelope(e) => Some(e),
            StartError::ReplayDataDir(e) => Some(e),
            StartError::Problems(_)
            | StartError::RequesterSignatureWithoutChainNode
            | StartError::PrincipalsFile(_)
            | StartError::ReplayStoreForgetful(_)
            | StartError::RevocationStoreForgetful(_)
            | StartError::LimitStoreForgetful(_)
            | StartError::RevocationFile(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_print_one_per_line_and_flatten() {
        let open = |key| StartError::OpenFile {
            key,
            path: PathBuf::from("no-such-dir/x"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let e = StartError::from_problems(vec![
            open("attribution.audit_file"),
            StartError::RevocationFile("cannot read".into()),
            StartError::from_problems(vec![open("server.access_log")]),
        ]);
        let text = e.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("attribution.audit_file: cannot open no-such-dir/x: "));
        assert_eq!(lines[1], "revocation.file: cannot read");
        assert!(lines[2].starts_with("server.access_log: cannot open no-such-dir/x: "));
        assert_eq!(e.problems().len(), 3);
        assert!(std::error::Error::source(e.problems()[0]).is_some());
    }
}
