//! Accepting connections on both listeners with bounds: a maximum number of open
//! connections (beyond it a new connection is closed at once and counted), hyper's
//! timer with a header-read timeout that also bounds the idle wait between keep-alive
//! requests, a bound on the request head, and an accept loop that backs off on errors
//! such as EMFILE without flooding the log. The proxy listener speaks HTTP/1.1 and
//! HTTP/2 (ALPN over TLS, prior knowledge over cleartext), with the same bounds, and
//! cuts an answer whose client reads nothing of it for the client stall timeout.

use super::metrics::ConnectionMetrics;
use crate::transport::tls::{ListenerTls, TransportMetrics};
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use passport_gate::attribution::ClientStall;
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

/// What a cleartext client speaks, from its first bytes: HTTP/2 with prior knowledge
/// (h2c) or HTTP/1, and the bytes read to decide (served again by [`Rewind`]). `None`
/// when it closed before deciding. Each read waits for the socket to be readable, so a
/// client that sends a prefix of the preface and stops costs no CPU while it waits
/// (within the header-read timeout of the caller).
async fn sniff(stream: &mut TcpStream) -> Option<(Protocol, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; PREFACE_START.len()];
    let mut n = 0;
    loop {
        let read = stream.read(&mut head[n..]).await.ok()?;
        if read == 0 {
            return None;
        }
        n += read;
        if head[..n] != PREFACE_START[..n] {
            return Some((Protocol::Http1, head[..n].to_vec()));
        }
        if n == PREFACE_START.len() {
            return Some((Protocol::Http2, head.to_vec()));
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream whose first bytes were already read: reads return them first, then
    /// what follows on `inner`. Writes go to `inner`.
    struct Rewind<I> {
        prefix: Vec<u8>,
        served: usize,
        #[pin]
        inner: I,
    }
}

impl<I: AsyncRead> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let left = &this.prefix[*this.served..];
        if left.is_empty() {
            return this.inner.poll_read(cx, buf);
        }
        let n = left.len().min(buf.remaining());
        buf.put_slice(&left[..n]);
        *this.served += n;
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// How the proxy listener serves connections: TLS or not, and both HTTP versions with
/// the listener's bounds.
pub struct ProxyProtocols {
    /// The listener's TLS, when `[server.tls]` is set.
    pub tls: Option<Arc<ListenerTls>>,
    http1: http1::Builder,
    http2: http2::Builder<StreamExecutor>,
    /// Time for the TLS handshake and the first bytes of the first request.
    handshake_timeout: Duration,
    /// `server.client_stall_timeout_ms`.
    stall_timeout: Duration,
    metrics: TransportMetrics,
    /// True once the gateway shuts down: HTTP/2 connections send `GOAWAY` (HTTP/1 ones
    /// are closed through the graceful-shutdown watcher).
    stopping: tokio::sync::watch::Sender<bool>,
}

impl ProxyProtocols {
    /// Both protocols with `limits` and `h2`, over TLS when `tls` is given; an answer
    /// whose client reads nothing of it for `stall_timeout` is cut.
    pub fn new(
        limits: &ConnectionLimits,
        h2: &Http2Limits,
        stall_timeout: Duration,
        tls: Option<Arc<ListenerTls>>,
        metrics: TransportMetrics,
    ) -> ProxyProtocols {
        let mut http2 = http2::Builder::new(StreamExecutor {
            stall_timeout,
            stalls: metrics.client_stalls.clone(),
        });
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
            stall_timeout,
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
            Some(tls) => {
                let accepted =
                    tokio::time::timeout(self.handshake_timeout, tls.acceptor().accept(stream))
                        .await;
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
                let mut stream = stream;
                let Ok(Some((protocol, prefix))) =
                    tokio::time::timeout(self.handshake_timeout, sniff(&mut stream)).await
                else {
                    return;
                };
                let stream = Rewind {
                    prefix,
                    served: 0,
                    inner: stream,
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
                // One answer at a time: the connection has one watch, and a stalled
                // answer closes the connection (dropping the answer and its upstream
                // request).
                let watch = StallWatch::new(self.stall_timeout);
                let service = Watched {
                    inner: service,
                    streams: None,
                };
                let conn = watcher.watch(self.http1.serve_connection(io, service));
                WATCH
                    .scope(Arc::clone(&watch), async {
                        tokio::select! {
                            ended = conn => ended,
                            () = watch.stalled() => {
                                self.metrics.client_stalls.inc();
                                tracing::debug!("HTTP/1 client read nothing for the client stall timeout: connection closed");
                                Ok(())
                            }
                        }
                    })
                    .await
            }
            Protocol::Http2 => {
                // Each stream is watched in its own task (see [`StreamExecutor`]).
                let streams = Arc::new(OpenStreams::default());
                let service = Watched {
                    inner: service,
                    streams: Some(Arc::clone(&streams)),
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

tokio::task_local! {
    /// The stall watch of the task serving answers: an HTTP/1 connection's, or an
    /// HTTP/2 stream's (each stream runs in its own task).
    static WATCH: Arc<StallWatch>;
}

/// Whether the answer being served waits for its client, and since when. An answer
/// waits from the moment its head or one of its body frames is handed to hyper until
/// hyper asks for the next frame: hyper asks only once the client took what it had
/// (HTTP/1: the socket and a bounded write buffer have room; HTTP/2: the stream has
/// window). Waiting for the upstream is not waiting for the client.
pub struct StallWatch {
    timeout: Duration,
    state: std::sync::Mutex<WatchState>,
    started: Notify,
}

#[derive(Default)]
struct WatchState {
    waiting_since: Option<tokio::time::Instant>,
    /// The request of the answer being served, marked when it is cut.
    mark: Option<ClientStall>,
}

impl StallWatch {
    fn new(timeout: Duration) -> Arc<StallWatch> {
        Arc::new(StallWatch {
            timeout,
            state: std::sync::Mutex::default(),
            started: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An answer's head was handed to hyper.
    fn answered(&self, mark: ClientStall) {
        let mut s = self.state();
        s.mark = Some(mark);
        s.waiting_since = Some(tokio::time::Instant::now());
        drop(s);
        self.started.notify_one();
    }

    /// hyper asks for the next body frame.
    fn asked(&self) {
        self.state().waiting_since = None;
    }

    /// A body frame was handed to hyper.
    fn handed(&self) {
        let mut s = self.state();
        let was_idle = s.waiting_since.is_none();
        s.waiting_since = Some(tokio::time::Instant::now());
        drop(s);
        if was_idle {
            self.started.notify_one();
        }
    }

    /// The answer is over (its body dropped).
    fn ended(&self) {
        let mut s = self.state();
        s.waiting_since = None;
        s.mark = None;
    }

    /// Completes, with the answer's request marked, once an answer has waited for its
    /// client for the timeout. Wakes once per timeout at most while answers flow.
    async fn stalled(&self) {
        loop {
            let since = self.state().waiting_since;
            match since {
                None => self.started.notified().await,
                Some(t) => {
                    let deadline = t + self.timeout;
                    if tokio::time::Instant::now() < deadline {
                        tokio::time::sleep_until(deadline).await;
                        continue;
                    }
                    if let Some(mark) = &self.state().mark {
                        mark.mark();
                    }
                    return;
                }
            }
        }
    }
}

/// Runs each HTTP/2 stream in its own task with its own [`StallWatch`]: a stream whose
/// client gives it no window for the stall timeout is reset (its task dropped, with
/// its answer and upstream request), and the connection's other streams go on.
#[derive(Clone)]
pub struct StreamExecutor {
    stall_timeout: Duration,
    stalls: prometheus::IntCounter,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let watch = StallWatch::new(self.stall_timeout);
        let stalls = self.stalls.clone();
        tokio::spawn(WATCH.scope(Arc::clone(&watch), async move {
            tokio::select! {
                () = fut => {}
                () = watch.stalled() => {
                    stalls.inc();
                    tracing::debug!("HTTP/2 client gave a stream no window for the client stall timeout: stream reset");
                }
            }
        }));
    }
}

/// A service whose answers are watched for stalled clients ([`StallWatch`]) and, under
/// HTTP/2, counted in [`OpenStreams`].
struct Watched<S> {
    inner: S,
    streams: Option<Arc<OpenStreams>>,
}

type WatchedFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<http::Response<WatchedBody<B>>, E>> + Send>>;

impl<S, B> Service<http::Request<Incoming>> for Watched<S>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<WatchedBody<B>>;
    type Error = S::Error;
    type Future = WatchedFuture<B, S::Error>;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        let guard = self.streams.as_ref().map(StreamGuard::open);
        let mark = ClientStall::default();
        req.extensions_mut().insert(mark.clone());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            // Polled in the task that serves the answer (the connection's, or the
            // stream's), which has the watch.
            let watch = WATCH.try_with(Arc::clone).ok().map(|w| {
                w.answered(mark);
                WatchGuard(w)
            });
            Ok(resp.map(|inner| WatchedBody {
                inner,
                watch,
                _guard: guard,
            }))
        })
    }
}

/// Ends the answer on its watch when the body is dropped.
struct WatchGuard(Arc<StallWatch>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.ended();
    }
}

pin_project_lite::pin_project! {
    /// A response body that tells its watch when hyper asks for a frame and when it
    /// gets one, and keeps its stream counted until it is dropped.
    struct WatchedBody<B> {
        #[pin]
        inner: B,
        watch: Option<WatchGuard>,
        _guard: Option<StreamGuard>,
    }
}

impl<B: Body> Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        if let Some(w) = this.watch.as_ref() {
            w.0.asked();
        }
        let polled = this.inner.poll_frame(cx);
        if let (Some(w), Poll::Ready(Some(Ok(_)))) = (this.watch.as_ref(), &polled) {
            w.0.handed();
        }
        polled
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
