//! Accepting connections on both listeners with bounds: a maximum number of open
//! connections (beyond it a new connection is closed at once and counted), hyper's
//! timer with a header-read timeout that also bounds the idle wait between keep-alive
//! requests, a bound on the request head, and an accept loop that backs off on errors
//! such as EMFILE without flooding the log.

use crate::metrics::ConnectionMetrics;
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds one listener applies to each connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to receive a whole request head, from the moment the server waits for it
    /// (a new connection, or the end of the previous response on a keep-alive one).
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
}

/// hyper's smallest accepted read buffer; a smaller `max_buf_size` panics.
const MIN_BUFFER: usize = 8_192;

impl ConnectionLimits {
    /// An HTTP/1 server builder with these bounds. hyper (1.12, the version required in Cargo.toml) starts the
    /// header-read timer both on a new connection and when a keep-alive connection goes
    /// idle, so one timeout covers slow heads and idle connections alike.
    pub fn http1(&self) -> http1::Builder {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_header_size(self.max_header_bytes)
            .max_buf_size(self.max_header_bytes.max(MIN_BUFFER));
        b
    }
}

/// Holds one connection slot; dropping it frees the slot and lowers the gauge.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    open: prometheus::IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// First and largest pause after a failed accept.
const BACKOFF_FIRST: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this period for failed accepts and refused connections.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts events and logs at most one line per [`LOG_EVERY`], with the count since
/// the previous line.
struct RateLimitedLog {
    what: &'static str,
    listener: &'static str,
    last: Option<Instant>,
    unlogged: u64,
}

impl RateLimitedLog {
    fn new(what: &'static str, listener: &'static str) -> Self {
        RateLimitedLog {
            what,
            listener,
            last: None,
            unlogged: 0,
        }
    }

    fn record(&mut self, detail: &dyn std::fmt::Display) {
        self.unlogged += 1;
        let now = Instant::now();
        if self.last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            tracing::warn!(
                listener = self.listener,
                count = self.unlogged,
                "{} ({detail}); at most one line per {}s",
                self.what,
                LOG_EVERY.as_secs()
            );
            self.last = Some(now);
            self.unlogged = 0;
        }
    }
}

/// A listener that hands out connections with a slot each.
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    metrics: ConnectionMetrics,
    backoff: Duration,
    accept_errors: RateLimitedLog,
    refusals: RateLimitedLog,
}

impl Acceptor {
    /// Accepts on `listener` with at most `max_connections` open.
    pub fn new(
        listener: TcpListener,
        max_connections: usize,
        metrics: ConnectionMetrics,
        name: &'static str,
    ) -> Acceptor {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(max_connections)),
            metrics,
            backoff: BACKOFF_FIRST,
            accept_errors: RateLimitedLog::new("accept failed", name),
            refusals: RateLimitedLog::new("connection refused: max_connections open", name),
        }
    }

    /// The next connection that got a slot. A connection beyond the limit is closed at
    /// once (the descriptor is released immediately, so a flood of them cannot use up
    /// the process's descriptors). Cancel-safe.
    pub async fn next(&mut self) -> (TcpStream, SocketAddr, Slot) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.backoff = BACKOFF_FIRST;
                    match Arc::clone(&self.slots).try_acquire_owned() {
                        Ok(permit) => {
                            self.metrics.open.inc();
                            let slot = Slot {
                                _permit: permit,
                                open: self.metrics.open.clone(),
                            };
                            return (stream, peer, slot);
                        }
                        Err(_) => {
                            drop(stream);
                            self.metrics.refused.inc();
                            self.refusals.record(&peer);
                        }
                    }
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: retrying at once spins and floods the
                    // log; wait, doubling up to a second, until an accept succeeds.
                    self.metrics.accept_errors.inc();
                    self.accept_errors.record(&e);
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
