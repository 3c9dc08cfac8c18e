//! Accepting connections on both listeners with bounds: a maximum number of open
//! connections (beyond it a new connection is closed at once and counted), hyper's
//! timer with a header-read timeout that also bounds the idle wait between keep-alive
//! requests, a bound on the request head, and an accept loop that backs off on errors
//! such as EMFILE without flooding the log. The proxy listener speaks HTTP/1.1 and
//! HTTP/2 (ALPN over TLS, prior knowledge over cleartext), with the same bounds.

use super::metrics::ConnectionMetrics;
use crate::transport::tls::TransportMetrics;
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

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

/// The bounds of an HTTP/2 connection, besides the header-list size (which is
/// [`ConnectionLimits::max_header_bytes`], the same bound as an HTTP/1 head).
#[derive(Clone, Copy, Debug)]
pub struct Http2Limits {
    /// Streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Keep-alive ping interval; `None` sends none.
    pub keep_alive_interval: Option<Duration>,
    /// Time to answer a ping before the connection is closed.
    pub keep_alive_timeout: Duration,
}

/// HTTP/2 flow-control windows (bytes): the protocol's default per stream, four times
/// that per connection.
const H2_STREAM_WINDOW: u32 = 65_535;
const H2_CONNECTION_WINDOW: u32 = 4 * 65_535;
/// Answer bytes buffered for one HTTP/2 stream.
const H2_SEND_BUFFER: usize = 16 * 1024;

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

/// The protocol of one client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (or 1.0).
    Http1,
    /// HTTP/2.
    Http2,
}

/// The start of the HTTP/2 connection preface (RFC 9113 section 3.4). No request the
/// gateway serves over HTTP/1 starts with it (`PRI` is not a proxied method).
const PREFACE_START: &[u8] = b"PRI";

/// What a cleartext client speaks, from its first bytes (left unread): HTTP/2 with
/// prior knowledge (h2c) or HTTP/1. `None` when it closed before sending anything.
async fn sniff(stream: &TcpStream) -> Option<Protocol> {
    let mut head = [0u8; 3];
    loop {
        let n = stream.peek(&mut head).await.ok()?;
        if n == 0 {
            return None;
        }
        if n >= PREFACE_START.len() || head[..n] != PREFACE_START[..n] {
            return Some(if head[..n] == *PREFACE_START {
                Protocol::Http2
            } else {
                Protocol::Http1
            });
        }
        // A prefix of the preface so far: wait for more (peek does not consume, so
        // it would return at once).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How the proxy listener serves connections: TLS or not, and both HTTP versions with
/// the listener's bounds.
pub struct ProxyProtocols {
    /// The TLS acceptor, when `[server.tls]` is set.
    pub tls: Option<TlsAcceptor>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// Time for the TLS handshake and the first bytes of the first request.
    handshake_timeout: Duration,
    metrics: TransportMetrics,
    /// True once the gateway shuts down: HTTP/2 connections send `GOAWAY` (HTTP/1 ones
    /// are closed through the graceful-shutdown watcher).
    stopping: tokio::sync::watch::Sender<bool>,
}

impl ProxyProtocols {
    /// Both protocols with `limits` and `h2`, over TLS when `tls` is given.
    pub fn new(
        limits: &ConnectionLimits,
        h2: &Http2Limits,
        tls: Option<TlsAcceptor>,
        metrics: TransportMetrics,
    ) -> ProxyProtocols {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(h2.max_concurrent_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(h2.keep_alive_interval)
            .keep_alive_timeout(h2.keep_alive_timeout)
            // Unread request bodies a client may push onto one connection (HTTP/1
            // leaves them in the socket buffer), and answer bytes held for one stream
            // whose client does not read (as the upstream read buffer under HTTP/1).
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_send_buf_size(H2_SEND_BUFFER);
        ProxyProtocols {
            tls,
            http1: limits.http1(),
            http2,
            handshake_timeout: limits.header_read_timeout,
            metrics,
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Sends `GOAWAY` on every HTTP/2 connection: the gateway shuts down.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Serves one accepted connection until it ends: the TLS handshake (ALPN decides
    /// the protocol) or, in cleartext, the first bytes (the preface decides), both
    /// within the header-read timeout; then HTTP/1 or HTTP/2 under `watcher`. When
    /// `closing` completes, an HTTP/2 connection sends `GOAWAY` (an HTTP/1 one is closed
    /// by the `Connection: close` of the answer that completed it).
    pub async fn serve<S, B>(
        &self,
        stream: TcpStream,
        service: S,
        watcher: Watcher,
        closing: impl Future<Output = ()> + Send,
    ) where
        S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match &self.tls {
            Some(acceptor) => {
                let accepted =
                    tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await;
                let tls = match accepted {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        self.metrics.client_handshake_failed();
                        tracing::debug!(error = %e, "TLS handshake with a client failed");
                        return;
                    }
                    Err(_) => {
                        self.metrics.client_handshake_failed();
                        tracing::debug!("TLS handshake with a client timed out");
                        return;
                    }
                };
                let protocol = match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Protocol::Http2,
                    _ => Protocol::Http1,
                };
                self.serve_as(protocol, tls, service, watcher, closing)
                    .await;
            }
            None => {
                let Ok(Some(protocol)) =
                    tokio::time::timeout(self.handshake_timeout, sniff(&stream)).await
                else {
                    return;
                };
                self.serve_as(protocol, stream, service, watcher, closing)
                    .await;
            }
        }
    }

    async fn serve_as<I, S, B>(
        &self,
        protocol: Protocol,
        io: I,
        service: S,
        watcher: Watcher,
        closing: impl Future<Output = ()> + Send,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io = TokioIo::new(io);
        let ended = match protocol {
            Protocol::Http1 => {
                watcher
                    .watch(self.http1.serve_connection(io, service))
                    .await
            }
            Protocol::Http2 => {
                let streams = Arc::new(OpenStreams::default());
                let service = Tracked {
                    inner: service,
                    streams: Arc::clone(&streams),
                };
                // Not `watcher.watch`: `GOAWAY` is also sent when `closing` completes. The
                // watcher is held until the connection ends, so shutdown still waits for it.
                let conn = self.http2.serve_connection(io, service);
                tokio::pin!(conn);
                let idle = streams.idle_for(self.handshake_timeout);
                tokio::pin!(idle);
                tokio::pin!(closing);
                let mut stopping = self.stopping.subscribe();
                let mut goaway = false;
                let ended = loop {
                    tokio::select! {
                        ended = conn.as_mut() => break ended,
                        () = &mut idle => {
                            tracing::debug!("HTTP/2 connection idle for the header-read timeout: closed");
                            break Ok(());
                        }
                        () = &mut closing, if !goaway => {
                            conn.as_mut().graceful_shutdown();
                            goaway = true;
                        }
                        _ = stopping.wait_for(|s| *s), if !goaway => {
                            conn.as_mut().graceful_shutdown();
                            goaway = true;
                        }
                    }
                };
                drop(watcher);
                ended
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// The streams of one HTTP/2 connection whose answer is not finished. A connection
/// without any for the header-read timeout is closed, as an idle HTTP/1 keep-alive
/// connection is: without it, a client that sends the preface and nothing else would
/// hold a connection slot for ever (keep-alive pings only prove it is alive).
#[derive(Default)]
struct OpenStreams {
    count: AtomicUsize,
    changed: Notify,
}

impl OpenStreams {
    /// Completes once no stream has been open for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    () = tokio::time::sleep(idle) => return,
                    () = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One open stream; dropped with its response body (or with the request, when it is
/// reset before an answer).
struct StreamGuard(Arc<OpenStreams>);

impl StreamGuard {
    fn open(streams: &Arc<OpenStreams>) -> StreamGuard {
        streams.count.fetch_add(1, Ordering::AcqRel);
        streams.changed.notify_waiters();
        StreamGuard(Arc::clone(streams))
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// A service that counts its open streams in [`OpenStreams`].
struct Tracked<S> {
    inner: S,
    streams: Arc<OpenStreams>,
}

type TrackedFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<http::Response<TrackedBody<B>>, E>> + Send>>;

impl<S, B> Service<http::Request<Incoming>> for Tracked<S>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<B, S::Error>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let guard = StreamGuard::open(&self.streams);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its stream counted until it is dropped.
    struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: StreamGuard,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
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
