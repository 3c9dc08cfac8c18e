//! Attribution events: one record per accepted request, saying which agent, acting for
//! which principal, called which model with which body (and how many tokens the answer
//! used, when the upstream said), and, for sinks that ask for them (the audit file), one
//! per refused request, with the identity it claimed marked as unverified.
//!
//! Events travel through a bounded queue with `try_send`: a request never waits for
//! logging, a full queue drops the event and counts the drop, and one drain thread
//! writes to the sinks. A failing sink is counted and logged and never stops the drain
//! or the other sinks.

pub mod audit;
mod sink;
pub mod usage;

pub mod accounting;

pub use audit::{AuditFileSink, FsyncPolicy};
#[cfg(feature = "redis")]
pub use sink::{bounded_json, RedisStreamSink, StreamBounds};
pub use sink::{JsonLinesSink, Sink};

use crate::metrics::Metrics;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use passport_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The event format version.
pub const EVENT_VERSION: &str = "aps-attribution-v1";

/// Whether an event records an accepted or a refused request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Verified and forwarded (omitted from the JSON: every event before refusals were
    /// recorded is one).
    #[default]
    Accepted,
    /// Refused: by the verifier (nothing in the event is verified but the code), or by
    /// the limits after every passport check (the event then carries the verified
    /// identity, spec section 9).
    Refused,
}

impl Outcome {
    /// Whether this is [`Outcome::Accepted`] (the field is then omitted).
    pub fn is_accepted(&self) -> bool {
        *self == Outcome::Accepted
    }
}

/// The longest claimed identity string a refusal event keeps, in bytes (longer ones are
/// cut at a character boundary): a forged passport must not write large lines.
pub const MAX_CLAIMED_BYTES: usize = 256;

/// The longest `path` an event keeps, in bytes; a longer one is cut at a character
/// boundary and the event says how many bytes were cut (`path_cut_bytes`). The path is
/// whatever the client sent (up to the request-head limit, 64 KiB by default), for
/// refused requests and, signed by the agent, for accepted ones.
pub const MAX_PATH_BYTES: usize = 1024;

/// The longest `method` an event keeps, in bytes (an extension method is any token).
pub const MAX_METHOD_BYTES: usize = 32;

/// `s` cut to at most `max` bytes at a character boundary, and how many bytes were cut.
pub fn cut_to(s: &str, max: usize) -> (&str, usize) {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], s.len() - end)
}

/// `s` cut to at most [`MAX_CLAIMED_BYTES`] bytes at a character boundary.
pub fn bounded_claim(s: &str) -> String {
    cut_to(s, MAX_CLAIMED_BYTES).0.to_owned()
}

/// A request path as an event records it: cut to [`MAX_PATH_BYTES`], with the number
/// of bytes cut (`None` when nothing was).
pub fn bounded_path(path: &str) -> (String, Option<u64>) {
    let (kept, cut) = cut_to(path, MAX_PATH_BYTES);
    (kept.to_owned(), (cut > 0).then_some(cut as u64))
}

/// A request method as an event records it, cut to [`MAX_METHOD_BYTES`].
pub fn bounded_method(method: &str) -> String {
    cut_to(method, MAX_METHOD_BYTES).0.to_owned()
}

/// Why an accepted request's event carries no token usage. Without it a report could
/// not tell an answer that used no tokens from one whose usage the gateway could not
/// read, and an agent could hide its usage by choosing how it asks (spec section 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageMissing {
    /// A JSON answer longer than the bound usage is searched within (256 KiB).
    TooLarge,
    /// An event stream that ended without a chunk carrying usage (the client did not
    /// ask for `stream_options.include_usage`, or the upstream does not send it).
    NotInStream,
    /// A JSON answer that ended without a `usage` object (an error answer, a route that
    /// spends no tokens, or an upstream that does not report usage).
    NotInAnswer,
    /// An answer that is neither JSON nor an event stream, or has a content coding:
    /// not searched.
    NotScanned,
    /// The client hung up before the answer's end and no usage had passed.
    ClientDisconnected,
    /// The upstream's answer failed before its end and no usage had passed.
    UpstreamFailed,
    /// The gateway shut down before the answer ended (see `cut_at_shutdown`).
    CutAtShutdown,
}

impl UsageMissing {
    /// The snake_case name written in events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            UsageMissing::TooLarge => "too_large",
            UsageMissing::NotInStream => "not_in_stream",
            UsageMissing::NotInAnswer => "not_in_answer",
            UsageMissing::NotScanned => "not_scanned",
            UsageMissing::ClientDisconnected => "client_disconnected",
            UsageMissing::UpstreamFailed => "upstream_failed",
            UsageMissing::CutAtShutdown => "cut_at_shutdown",
        }
    }
}

/// One attribution record (JSON field names as written). The fields from the verified
/// request are empty, and omitted, in the refusal event of a request the verifier
/// refused; a request the limits refused was verified first, and its event has them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributionEvent {
    /// Always `aps-attribution-v1`.
    pub v: String,
    /// Unique id of this event (128 random bits, hex).
    pub event_id: String,
    /// The upstream's inference id when it named one in a response header, else the
    /// event id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inference_id: String,
    /// The chain the passport is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chain_id: String,
    /// The requested model.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// The agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_id: String,
    /// The principal the agent acted for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub principal_address: String,
    /// Who the work was for, when the passport says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneficiary: Option<String>,
    /// The requester address the request was bound to, when binding is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_address: Option<String>,
    /// Hex SHA-256 of the raw request body.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_body_sha256: String,
    /// Hex SHA-256 of the decoded `X-Agent-Passport` bytes, as the reference records it
    /// (another serialization of the same passport has another value).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub envelope_sha256: String,
    /// The passport's identity: hex SHA-256 of its JCS form, the same for every
    /// serialization (what revocation names). Absent in events written before it existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub passport_id: String,
    /// The passport's `expires_at`, as sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub passport_expires_at: String,
    /// When the passport was verified (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verified_at: String,
    /// The HTTP method.
    pub method: String,
    /// The request path (no query string), at most [`MAX_PATH_BYTES`].
    pub path: String,
    /// How many bytes were cut from the end of `path`; omitted when none were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_cut_bytes: Option<u64>,
    /// The status the inner service answered.
    pub status: u16,
    /// Milliseconds from verification to the inner service's response head.
    pub latency_ms: u64,
    /// The client hung up before the response head; the inner service still answered
    /// with `status`. Omitted when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_disconnected: bool,
    /// The answer was cut because its client stopped reading it for the server's
    /// client stall timeout (the upstream connection was then released). Omitted when
    /// false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_stalled: bool,
    /// `refused` for a refused request; omitted for an accepted one.
    #[serde(default, skip_serializing_if = "Outcome::is_accepted")]
    pub outcome: Outcome,
    /// The rejection code of a refused request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// When a request was refused (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_at: Option<String>,
    /// The `agent_id` a refused request's passport claimed: NOT verified (a forger
    /// writes what it likes here), at most [`MAX_CLAIMED_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_agent_id_unverified: Option<String>,
    /// The `principal_address` a refused request's passport claimed: NOT verified, at
    /// most [`MAX_CLAIMED_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_principal_address_unverified: Option<String>,
    /// The upstream's OpenAI `usage.prompt_tokens`, when its answer carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// The upstream's OpenAI `usage.completion_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// The upstream's OpenAI `usage.total_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// Why an accepted request's event has no usage; omitted when it has some, and in
    /// refusal events (and in events written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_missing: Option<UsageMissing>,
    /// The gateway shut down while this request was still being answered, after its
    /// grace period: the answer was cut, and `status` is 0 when no response head had
    /// come. Omitted when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut_at_shutdown: bool,
}

impl AttributionEvent {
    /// Whether the event carries any token count.
    pub fn has_usage(&self) -> bool {
        self.prompt_tokens.is_some()
            || self.completion_tokens.is_some()
            || self.total_tokens.is_some()
    }

    /// The total tokens of the call: `total_tokens`, or when the upstream omitted it
    /// (some do), `prompt_tokens + completion_tokens`.
    pub fn tokens(&self) -> u64 {
        self.total_tokens.unwrap_or_else(|| {
            self.prompt_tokens
                .unwrap_or(0)
                .saturating_add(self.completion_tokens.unwrap_or(0))
        })
    }
}

/// The event of a forwarded request while its answer is under way, queued exactly
/// once: by the end of the answer, or by a shutdown that cuts it (whichever takes it
/// first). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct PendingEvent(Arc<Mutex<Option<AttributionEvent>>>);

impl PendingEvent {
    /// The pending `event`.
    pub fn new(event: AttributionEvent) -> PendingEvent {
        PendingEvent(Arc::new(Mutex::new(Some(event))))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<AttributionEvent>> {
        // A panic while the lock was held left a whole event or none: still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the event, unless it was already taken.
    pub fn update(&self, change: impl FnOnce(&mut AttributionEvent)) {
        if let Some(event) = self.slot().as_mut() {
            change(event);
        }
    }

    /// Takes the event to queue it; `None` once someone did.
    pub fn take(&self) -> Option<AttributionEvent> {
        self.slot().take()
    }
}

/// Marks the request whose answer the server cut because its client stopped reading.
/// The server puts one in each request's extensions and marks it when it cuts the
/// answer; the layer's event for that request is then `client_stalled`.
#[derive(Clone, Debug, Default)]
pub struct ClientStall(Arc<std::sync::atomic::AtomicBool>);

impl ClientStall {
    /// Records that the answer was cut for a stalled client.
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`ClientStall::mark`] was called.
    pub fn is_marked(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Lowercase hex of `bytes`, as `hex::encode` (which builds the string a char at a
/// time: several times slower, and called five times per audited request).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A fresh 128-bit random identifier in hex.
pub fn new_event_id() -> String {
    let mut b = [0u8; 16];
    // The OS random source does not fail on supported platforms; if it ever did, a
    // time-based id still keeps events distinguishable.
    if passport_core::crypto::random_bytes(&mut b).is_err() {
        b[..16].copy_from_slice(&Timestamp::now().unix_nanos().to_be_bytes());
    }
    to_hex(&b)
}

/// What the queue did with events, at shutdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Events handed to every sink.
    pub written: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Events still queued when the shutdown deadline passed.
    pub lost_at_shutdown: u64,
    /// Sink writes that failed.
    pub sink_failures: u64,
}

struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// The sending side, held by the layer. Cheap to clone.
#[derive(Clone)]
pub struct AttributionSender {
    tx: Sender<AttributionEvent>,
    counters: Arc<Counters>,
    metrics: Metrics,
    refusal_rate: Option<Arc<PerSecond>>,
}

/// At most `per_second` admissions in each wall-clock second: what the audit file and
/// the gateway's access log allow themselves of lines about refused requests, which
/// anyone can cause.
#[derive(Debug)]
pub struct PerSecond {
    per_second: u64,
    /// The current second (Unix) and the admissions in it.
    window: std::sync::Mutex<(u64, u64)>,
}

impl PerSecond {
    /// A limit of `per_second` admissions a second.
    pub fn new(per_second: u64) -> PerSecond {
        PerSecond {
            per_second,
            window: std::sync::Mutex::new((0, 0)),
        }
    }

    /// Whether one more is admitted in the current second.
    pub fn admit(&self) -> bool {
        let second = Timestamp::now().unix_seconds().max(0).unsigned_abs();
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        if w.0 != second {
            *w = (second, 0);
        }
        if w.1 >= self.per_second {
            return false;
        }
        w.1 += 1;
        true
    }
}

impl std::fmt::Debug for AttributionSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttributionSender").finish_non_exhaustive()
    }
}

impl AttributionSender {
    /// Queues a refusal event without waiting, only while the queue is less than half
    /// full: a flood of forged requests must never crowd out the events of accepted
    /// ones. Returns false (and counts a drop) otherwise.
    pub fn emit_refusal(&self, event: AttributionEvent) -> bool {
        let capacity = self.tx.capacity().unwrap_or(usize::MAX);
        let over_rate = self.refusal_rate.as_ref().is_some_and(|r| !r.admit());
        if over_rate || self.tx.len() >= capacity.div_ceil(2) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.attribution_dropped.inc();
            return false;
        }
        self.emit(event)
    }

    /// This sender, queueing at most `per_second` refusal events in each second (the
    /// rest dropped and counted); `0` leaves refusals unlimited but for the queue.
    pub fn limit_refusals(mut self, per_second: u64) -> Self {
        self.refusal_rate = (per_second > 0).then(|| Arc::new(PerSecond::new(per_second)));
        self
    }

    /// Queues `event` without waiting. Returns false (and counts a drop) when the queue
    /// is full or the drain has stopped.
    pub fn emit(&self, event: AttributionEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => {
                self.metrics.attribution_emitted.inc();
                self.metrics
                    .attribution_queue_depth
                    .set(self.tx.len() as i64);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics.attribution_dropped.inc();
                false
            }
        }
    }
}

/// The queue and its drain thread.
pub struct AttributionQueue {
    sender: AttributionSender,
    stop: Sender<Instant>,
    drain: Mutex<Option<JoinHandle<()>>>,
    rx: Receiver<AttributionEvent>,
}

impl std::fmt::Debug for AttributionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttributionQueue").finish_non_exhaustive()
    }
}

impl AttributionQueue {
    /// Starts a queue of `capacity` events and a drain thread writing to `sinks`.
    pub fn start(
        capacity: usize,
        sinks: Vec<Box<dyn Sink>>,
        metrics: Metrics,
    ) -> std::io::Result<AttributionQueue> {
        let (tx, rx) = bounded(capacity);
        let (stop_tx, stop_rx) = bounded::<Instant>(1);
        let counters = Arc::new(Counters {
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let drain = {
            let rx = rx.clone();
            let counters = Arc::clone(&counters);
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("passport-gate-attribution".into())
                .spawn(move || drain_loop(rx, stop_rx, sinks, &counters, &metrics))?
        };
        Ok(AttributionQueue {
            sender: AttributionSender {
                tx,
                counters,
                metrics,
                refusal_rate: None,
            },
            stop: stop_tx,
            drain: Mutex::new(Some(drain)),
            rx,
        })
    }

    /// A handle for emitting events.
    pub fn sender(&self) -> AttributionSender {
        self.sender.clone()
    }

    /// Events waiting to be written.
    pub fn depth(&self) -> usize {
        self.rx.len()
    }

    /// Stops the drain: writes what is queued until `deadline` passes, flushes the sinks
    /// and reports what was written, dropped and lost. Later calls report the same
    /// counts without waiting.
    pub fn shutdown(&self, deadline: Duration) -> DrainReport {
        let handle = self.drain.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = self.stop.send(Instant::now() + deadline);
            let _ = handle.join();
        }
        let c = &self.sender.counters;
        DrainReport {
            written: c.written.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            lost_at_shutdown: self.rx.len() as u64,
            sink_failures: c.failed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for AttributionQueue {
    fn drop(&mut self) {
        let report = self.shutdown(Duration::from_secs(5));
        if report.lost_at_shutdown > 0 {
            tracing::warn!(
                lost = report.lost_at_shutdown,
                "attribution events lost at shutdown"
            );
        }
    }
}

fn write_one(
    event: &AttributionEvent,
    sinks: &mut [Box<dyn Sink>],
    counters: &Counters,
    metrics: &Metrics,
) {
    let refused = event.outcome == Outcome::Refused;
    for sink in sinks.iter_mut() {
        if refused && !sink.records_refusals() {
            continue;
        }
        if let Err(e) = sink.write(event) {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            metrics.attribution_failed.inc();
            tracing::warn!(sink = sink.name(), error = %e, "attribution sink write failed");
        }
    }
    counters.written.fetch_add(1, Ordering::Relaxed);
}

fn drain_loop(
    rx: Receiver<AttributionEvent>,
    stop: Receiver<Instant>,
    mut sinks: Vec<Box<dyn Sink>>,
    counters: &Counters,
    metrics: &Metrics,
) {
    let deadline = loop {
        if let Ok(deadline) = stop.try_recv() {
            break deadline;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => {
                write_one(&event, &mut sinks, counters, metrics);
                metrics.attribution_queue_depth.set(rx.len() as i64);
                if rx.is_empty() {
                    flush_all(&mut sinks, counters, metrics);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Instant::now(),
        }
    };
    while Instant::now() < deadline {
        match rx.try_recv() {
            Ok(event) => write_one(&event, &mut sinks, counters, metrics),
            Err(_) => break,
        }
    }
    metrics.attribution_queue_depth.set(rx.len() as i64);
    flush_all(&mut sinks, counters, metrics);
}

fn flush_all(sinks: &mut [Box<dyn Sink>], counters: &Counters, metrics: &Metrics) {
    for sink in sinks.iter_mut() {
        if let Err(e) = sink.flush() {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            metrics.attribution_failed.inc();
            tracing::warn!(sink = sink.name(), error = %e, "attribution sink flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn to_hex_is_hex_encode() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(super::to_hex(&bytes), hex::encode(&bytes));
        assert_eq!(super::to_hex(&[]), "");
    }

    use super::*;
    use std::sync::mpsc;

    fn event(n: u64) -> AttributionEvent {
        AttributionEvent {
            v: EVENT_VERSION.into(),
            event_id: format!("{n}"),
            inference_id: format!("{n}"),
            chain_id: "c".into(),
            model: "m".into(),
            agent_id: "a".into(),
            principal_address: "p".into(),
            beneficiary: None,
            requester_address: None,
            request_body_sha256: "00".into(),
            envelope_sha256: "00".into(),
            passport_expires_at: "2026-05-21T13:00:00Z".into(),
            verified_at: "2026-05-21T12:00:00Z".into(),
            method: "POST".into(),
            path: "/v1".into(),
            status: 200,
            latency_ms: 1,
            passport_id: String::new(),
            client_disconnected: false,
            ..Default::default()
        }
    }

    /// A sender on a bounded queue of `cap` events, and the queue's receiving end.
    fn queue_of(
        cap: usize,
    ) -> (
        AttributionSender,
        crossbeam_channel::Receiver<AttributionEvent>,
    ) {
        let (tx, rx) = bounded(cap);
        let sender = AttributionSender {
            tx,
            counters: Arc::new(Counters {
                written: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }),
            metrics: Metrics::new(),
            refusal_rate: None,
        };
        (sender, rx)
    }

    fn refusal() -> AttributionEvent {
        AttributionEvent {
            outcome: Outcome::Refused,
            ..event(9)
        }
    }

    #[test]
    fn refusals_beyond_the_rate_are_dropped_and_counted() {
        let (sender, rx) = queue_of(1_000);
        let sender = sender.limit_refusals(5);
        // At most five a second (a second boundary in between admits five more, never
        // all fifty); accepted events are not limited.
        let queued = (0..50).filter(|_| sender.emit_refusal(refusal())).count();
        assert!((5..=10).contains(&queued), "{queued}");
        assert_eq!(sender.metrics.attribution_dropped.get(), 50 - queued as u64);
        assert!((0..20).all(|i| sender.emit(event(i))));
        assert_eq!(rx.len(), queued + 20);
    }

    #[test]
    fn refusals_are_queued_only_while_the_queue_is_under_half_full() {
        let (sender, rx) = queue_of(4);
        assert!(sender.emit_refusal(refusal()));
        assert!(sender.emit(event(1)));
        // Half full: a flood of refusals is dropped and counted ...
        assert!(!sender.emit_refusal(refusal()));
        assert_eq!(sender.metrics.attribution_dropped.get(), 1);
        // ... and accepted requests still have the other half.
        assert!(sender.emit(event(2)));
        assert!(sender.emit(event(3)));
        assert!(!sender.emit(event(4)));
        assert_eq!(rx.len(), 4);
    }

    #[test]
    fn a_claimed_string_is_cut_at_a_character_boundary_within_the_bound() {
        assert_eq!(bounded_claim("gonka1abc"), "gonka1abc");
        let long = "é".repeat(MAX_CLAIMED_BYTES);
        let cut = bounded_claim(&long);
        assert!(cut.len() <= MAX_CLAIMED_BYTES && cut.len() >= MAX_CLAIMED_BYTES - 1);
        assert!(long.starts_with(&cut));
    }

    #[test]
    fn a_long_path_is_cut_within_the_bound_and_says_how_much_was_cut() {
        assert_eq!(
            bounded_path("/v1/chat/completions"),
            ("/v1/chat/completions".into(), None)
        );
        let long = format!("/v1/{}", "é".repeat(MAX_PATH_BYTES));
        let (kept, cut) = bounded_path(&long);
        assert!(kept.len() <= MAX_PATH_BYTES && kept.len() >= MAX_PATH_BYTES - 1);
        assert!(long.starts_with(&kept));
        assert_eq!(cut, Some((long.len() - kept.len()) as u64));
        assert_eq!(bounded_method(&"X".repeat(100)).len(), MAX_METHOD_BYTES);
    }

    /// A sink that blocks until released, then records what it got.
    struct Gate {
        release: Mutex<mpsc::Receiver<()>>,
        seen: Arc<Mutex<Vec<String>>>,
        fail: bool,
    }

    impl Sink for Gate {
        fn name(&self) -> &str {
            "gate"
        }
        fn write(&mut self, e: &AttributionEvent) -> std::io::Result<()> {
            let _ = self.release.lock().unwrap().recv();
            self.seen.lock().unwrap().push(e.event_id.clone());
            if self.fail {
                Err(std::io::Error::other("disk full"))
            } else {
                Ok(())
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_sink_makes_the_queue_drop_exactly_the_overflow() {
        let (release, gate_rx) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let metrics = Metrics::new();
        let q = AttributionQueue::start(
            4,
            vec![Box::new(Gate {
                release: Mutex::new(gate_rx),
                seen: seen.clone(),
                fail: false,
            })],
            metrics.clone(),
        )
        .unwrap();
        let s = q.sender();
        assert!(s.emit(event(0)));
        // Wait until the drain holds event 0 inside the blocked sink.
        let start = Instant::now();
        while q.depth() != 0 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let accepted = (1..=10).filter(|n| s.emit(event(*n))).count();
        assert_eq!(accepted, 4);
        assert_eq!(metrics.attribution_dropped.get(), 6);
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        let report = q.shutdown(Duration::from_secs(5));
        assert_eq!(report.written, 5);
        assert_eq!(report.dropped, 6);
        assert_eq!(report.lost_at_shutdown, 0);
        assert_eq!(*seen.lock().unwrap(), ["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn a_failing_sink_is_counted_and_does_not_stop_the_others() {
        let (release, gate_rx) = mpsc::channel();
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        let seen_failing = Arc::new(Mutex::new(Vec::new()));
        let path = std::env::temp_dir().join(format!("pg-attr-{}.jsonl", std::process::id()));
        let file = JsonLinesSink::create_file(&path).unwrap();
        let metrics = Metrics::new();
        let q = AttributionQueue::start(
            8,
            vec![
                Box::new(Gate {
                    release: Mutex::new(gate_rx),
                    seen: seen_failing.clone(),
                    fail: true,
                }),
                Box::new(file),
            ],
            metrics.clone(),
        )
        .unwrap();
        for n in 0..3 {
            assert!(q.sender().emit(event(n)));
        }
        let report = q.shutdown(Duration::from_secs(5));
        assert_eq!(report.written, 3);
        assert_eq!(report.sink_failures, 3);
        assert_eq!(metrics.attribution_failed.get(), 3);
        let lines = std::fs::read_to_string(&path).unwrap();
        let events: Vec<AttributionEvent> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events, vec![event(0), event(1), event(2)]);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn shutdown_reports_what_the_deadline_left_behind() {
        let (release, gate_rx) = mpsc::channel::<()>();
        let q = AttributionQueue::start(
            8,
            vec![Box::new(Gate {
                release: Mutex::new(gate_rx),
                seen: Arc::default(),
                fail: false,
            })],
            Metrics::new(),
        )
        .unwrap();
        for n in 0..4 {
            assert!(q.sender().emit(event(n)));
        }
        // The drain is stuck in the sink on event 0 when the zero deadline is given; the
        // sink opens only afterwards, so events 1 to 3 are left behind.
        let start = Instant::now();
        while q.depth() != 3 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let opener = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(release);
        });
        let report = q.shutdown(Duration::ZERO);
        opener.join().unwrap();
        assert_eq!(report.written, 1);
        assert_eq!(report.lost_at_shutdown, 3);
    }
}
