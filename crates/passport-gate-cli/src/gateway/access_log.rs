//! The access log (`server.access_log`): one JSON line per request the proxy listener
//! answered, written by a thread of its own.
//!
//! Requests never wait for the sink: a line goes into a queue of
//! `server.access_log_buffer_lines` lines, and when the sink is slower than the traffic
//! (a full disk, a stdout nobody reads) the queue fills and further lines are dropped
//! and counted in `passport_gate_access_log_dropped_total`, never buffered without
//! bound. At shutdown, once the connections closed, the queue gets up to
//! [`SHUTDOWN_FLUSH`] to reach the sink.
//!
//! A line is bounded in bytes: the path is cut to
//! [`MAX_PATH_BYTES`](passport_gate::attribution::MAX_PATH_BYTES) (the line then says
//! `path_cut_bytes`), and every other field is the gateway's own or bounded by the
//! verifier. Lines about refused requests, which anyone can cause, are also bounded
//! in number: at most `server.access_log_refusals_per_second` a second, the rest
//! counted in `passport_gate_access_log_refusals_dropped_total` and, on the next
//! refusal line written, in its `refusals_dropped_before`.

use super::error::GatewayError;
use super::settings::AccessLogTarget;
use super::start_error::StartError;
use passport_core::verifier::Rejection;
use passport_gate::attribution::{cut_to, PerSecond, MAX_PATH_BYTES};
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

/// How long the queued lines get to reach the sink at shutdown.
pub const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// The agent of an accepted request, put in the response's extensions by the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedAgent(pub String);

/// A running access log.
#[derive(Debug)]
pub struct AccessLog {
    lines: SyncSender<String>,
    dropped: prometheus::IntCounter,
    /// Lines about refusals: at most so many a second (none: no limit).
    refusal_rate: Option<PerSecond>,
    refusals_dropped: prometheus::IntCounter,
    /// Refusal lines dropped since the last one written.
    refusals_dropped_since: AtomicU64,
    /// Lines queued and not yet flushed to the sink.
    pending: Arc<AtomicUsize>,
}

impl AccessLog {
    /// Opens the sink and starts the writer thread; `None` when the log is off.
    pub fn start(
        target: &AccessLogTarget,
        capacity: usize,
        refusals_per_second: u64,
        dropped: prometheus::IntCounter,
        refusals_dropped: prometheus::IntCounter,
    ) -> Result<Option<AccessLog>, StartError> {
        let sink: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| StartError::OpenFile {
                        key: "server.access_log",
                        path: path.clone(),
                        source,
                    })?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(capacity);
        let pending = Arc::new(AtomicUsize::new(0));
        let written_lines = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("passport-gate-access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(sink);
                while let Ok(line) = rx.recv() {
                    let mut taken = 1;
                    let mut written = out.write_all(line.as_bytes());
                    // Flush whenever the queue runs empty: lines reach the sink promptly
                    // without a write per line under load.
                    while let Ok(line) = rx.try_recv() {
                        taken += 1;
                        written = written.and_then(|()| out.write_all(line.as_bytes()));
                    }
                    if let Err(e) = written.and_then(|()| out.flush()) {
                        tracing::warn!(error = %e, "access log: write failed");
                    }
                    written_lines.fetch_sub(taken, Ordering::SeqCst);
                }
            })
            .map_err(StartError::AccessLogThread)?;
        Ok(Some(AccessLog {
            lines: tx,
            dropped,
            refusal_rate: (refusals_per_second > 0).then(|| PerSecond::new(refusals_per_second)),
            refusals_dropped,
            refusals_dropped_since: AtomicU64::new(0),
            pending,
        }))
    }

    /// Completes once every queued line reached the sink, or after `wait` (a sink that
    /// does not take them); returns the lines still queued. Called at shutdown, after
    /// the connections closed.
    pub async fn flushed(&self, wait: std::time::Duration) -> usize {
        let deadline = Instant::now() + wait;
        loop {
            let left = self.pending.load(Ordering::SeqCst);
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Queues the line of one answered request, or drops and counts it when the queue
    /// is full, or when it is about a refusal and the refusal lines of this second
    /// are spent.
    pub fn record<B>(
        &self,
        method: &http::Method,
        path: &str,
        response: &http::Response<B>,
        started: Instant,
    ) {
        let (outcome, code) = outcome(response);
        let mut dropped_before = None;
        if matches!(outcome, "rejected" | "refused") {
            if let Some(rate) = &self.refusal_rate {
                if !rate.admit() {
                    self.refusals_dropped.inc();
                    self.refusals_dropped_since.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                dropped_before =
                    Some(self.refusals_dropped_since.swap(0, Ordering::Relaxed)).filter(|n| *n > 0);
            }
        }
        let (path, cut) = cut_to(path, MAX_PATH_BYTES);
        let agent = response
            .extensions()
            .get::<AcceptedAgent>()
            .map(|a| a.0.as_str());
        // serde_json writes bidi controls, C1 controls and U+2028/9 raw; escaped, an
        // agent_id cannot make a line read differently from its bytes in a terminal
        // or viewer (the JSON value is the same).
        let mut line = serde_json::json!({
            "time": passport_core::time::Timestamp::now().to_rfc3339(),
            "method": method.as_str(),
            "path": path,
            "status": response.status().as_u16(),
            "outcome": outcome,
            "code": code,
            "agent": agent,
            "latency_ms": started.elapsed().as_millis() as u64,
        });
        if cut > 0 {
            line["path_cut_bytes"] = cut.into();
        }
        if let Some(n) = dropped_before {
            line["refusals_dropped_before"] = n.into();
        }
        let line = line.to_string();
        let mut line = crate::terminal::escape_controls(&line).into_owned();
        line.push('\n');
        // Counted before it is sent, so the writer never uncounts a line first.
        self.pending.fetch_add(1, Ordering::SeqCst);
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.dropped.inc();
            }
        }
    }
}

/// What happened to a request, from the marks the layer and the gateway leave on the
/// response: `rejected` (a passport check failed), `refused` (the gateway refused it
/// before any passport check), `limited` (a verified passport over its limits, never
/// forwarded), `upstream_failed` (the upstream could not answer),
/// `accepted` (a verified passport, forwarded) or `forwarded` (no passport check).
pub(super) fn outcome<B>(response: &http::Response<B>) -> (&'static str, Option<&'static str>) {
    let ext = response.extensions();
    if let Some(r) = ext.get::<Rejection>() {
        return ("rejected", Some(r.code()));
    }
    if let Some(l) = ext.get::<passport_gate::limits::Limited>() {
        return ("limited", Some(l.reason.code()));
    }
    if let Some(e) = ext.get::<GatewayError>() {
        return match e {
            GatewayError::UpstreamUnavailable
            | GatewayError::UpstreamTimeout
            | GatewayError::UpstreamBusy => ("upstream_failed", Some(e.code())),
            _ => ("refused", Some(e.code())),
        };
    }
    if ext.get::<AcceptedAgent>().is_some() {
        return ("accepted", None);
    }
    ("forwarded", None)
}
