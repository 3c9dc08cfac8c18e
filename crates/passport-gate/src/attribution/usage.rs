//! Token usage: the OpenAI `usage` object of an upstream answer, read from the response
//! body as it streams to the client, without delaying or holding it.
//!
//! A JSON answer is copied aside up to [`MAX_USAGE_JSON_BYTES`] (beyond that, usage is
//! not looked for) and parsed when it ends. A server-sent event stream keeps only its
//! last [`USAGE_SSE_TAIL_BYTES`]: the usage chunk an OpenAI-compatible server sends when
//! the client asked for `stream_options.include_usage` is the last one before
//! `data: [DONE]`. The event is queued when the body ends, or when it is dropped (the
//! client hung up), with whatever usage was seen.

use super::{AttributionSender, PendingEvent, UsageMissing};
use serde::Deserialize;

/// The largest JSON answer searched for `usage`, in bytes.
pub const MAX_USAGE_JSON_BYTES: usize = 256 * 1024;

/// The tail of an event stream kept to find the final usage chunk, in bytes.
pub const USAGE_SSE_TAIL_BYTES: usize = 16 * 1024;

/// Token counts as OpenAI reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TokenUsage {
    /// `prompt_tokens`.
    pub prompt_tokens: Option<u64>,
    /// `completion_tokens`.
    pub completion_tokens: Option<u64>,
    /// `total_tokens`.
    pub total_tokens: Option<u64>,
}

impl TokenUsage {
    /// The tokens the answer used: `total_tokens`, else prompt plus completion.
    pub fn total(&self) -> Option<u64> {
        self.total_tokens.or_else(|| {
            self.prompt_tokens
                .zip(self.completion_tokens)
                .map(|(p, c)| p.saturating_add(c))
        })
    }
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<TokenUsage>,
}

/// The `usage` of one JSON object, when it has a non-null one.
fn usage_of(json: &[u8]) -> Option<TokenUsage> {
    serde_json::from_slice::<WithUsage>(json).ok()?.usage
}

/// What is kept of a response body to find its usage.
#[derive(Debug)]
enum Scan {
    /// Not an answer usage is looked for in (another type, or compressed).
    Off,
    /// A JSON answer that grew past [`MAX_USAGE_JSON_BYTES`]: no longer searched.
    TooLarge,
    /// Done: the event was queued.
    Done,
    /// A JSON answer, copied while it stays within the bound.
    Json(Vec<u8>),
    /// An event stream: its last bytes.
    Sse(Vec<u8>),
}

/// Scans a response body for usage, within fixed memory.
#[derive(Debug)]
pub struct UsageScan {
    scan: Scan,
}

impl UsageScan {
    /// A scan for a response with these headers: JSON and event streams are scanned,
    /// anything else (or anything with a content coding) is not.
    pub fn for_response(headers: &http::HeaderMap) -> UsageScan {
        let encoded = headers
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        let kind = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let scan = match kind.as_deref() {
            _ if encoded => Scan::Off,
            Some("text/event-stream") => Scan::Sse(Vec::new()),
            Some(t) if t == "application/json" || t.ends_with("+json") => Scan::Json(Vec::new()),
            _ => Scan::Off,
        };
        UsageScan { scan }
    }

    /// Takes note of one chunk of the body as it passes.
    pub fn feed(&mut self, data: &[u8]) {
        match &mut self.scan {
            Scan::Off | Scan::TooLarge | Scan::Done => {}
            Scan::Json(buf) => {
                if buf.len() + data.len() > MAX_USAGE_JSON_BYTES {
                    self.scan = Scan::TooLarge;
                } else {
                    buf.extend_from_slice(data);
                }
            }
            Scan::Sse(tail) => {
                if data.len() >= USAGE_SSE_TAIL_BYTES {
                    tail.clear();
                    tail.extend_from_slice(&data[data.len() - USAGE_SSE_TAIL_BYTES..]);
                } else {
                    tail.extend_from_slice(data);
                    // Compacted only past twice the window: amortized constant work per byte.
                    if tail.len() > 2 * USAGE_SSE_TAIL_BYTES {
                        tail.drain(..tail.len() - USAGE_SSE_TAIL_BYTES);
                    }
                }
            }
        }
    }

    /// The usage found in what passed: the JSON answer's, or the last event's that
    /// carries one.
    pub fn usage(&self) -> Option<TokenUsage> {
        match &self.scan {
            Scan::Off | Scan::TooLarge | Scan::Done => None,
            Scan::Json(buf) => usage_of(buf),
            Scan::Sse(tail) => tail.split(|b| *b == b'\n').rev().find_map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let data = line.strip_prefix(b"data:")?;
                usage_of(data.trim_ascii())
            }),
        }
    }

    /// Why no usage was found, for a body that ended as `end`. A body that did not
    /// reach its end says so first: what was not seen might have carried usage.
    pub fn missing(&self, end: BodyEnd) -> UsageMissing {
        match (&self.scan, end) {
            (Scan::TooLarge, _) => UsageMissing::TooLarge,
            (Scan::Off | Scan::Done, _) => UsageMissing::NotScanned,
            (_, BodyEnd::Dropped) => UsageMissing::ClientDisconnected,
            (_, BodyEnd::Failed) => UsageMissing::UpstreamFailed,
            (Scan::Sse(_), BodyEnd::Complete) => UsageMissing::NotInStream,
            (Scan::Json(_), BodyEnd::Complete) => UsageMissing::NotInAnswer,
        }
    }
}

/// How a response body ended, for its event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// Read to its end.
    Complete,
    /// The upstream's body failed before its end.
    Failed,
    /// Dropped before its end: the client hung up (or the connection was cut).
    Dropped,
}

/// What happens when an accepted request's answer ends (or is dropped): its event is
/// queued with the usage the body carried, or why it carried none, and its token
/// reservation is settled to that usage (the whole reservation when none was read).
pub struct EventOnEnd {
    sender: Option<AttributionSender>,
    event: Option<PendingEvent>,
    settlement: Option<crate::limits::Settlement>,
    scan: UsageScan,
    /// Held until the event is queued (the layer's count of forwarded requests whose
    /// event is still to come, which shutdown waits for).
    _hold: Box<dyn Send + Sync>,
    /// Marked when the server cut the answer for a stalled client.
    stall: Option<super::ClientStall>,
}

impl std::fmt::Debug for EventOnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventOnEnd")
            .field("scan", &self.scan)
            .finish_non_exhaustive()
    }
}

impl EventOnEnd {
    /// Queues `event` through `sender` when the body ends (unless a shutdown took it
    /// first); `hold` is dropped then.
    pub fn new(
        sender: AttributionSender,
        event: PendingEvent,
        scan: UsageScan,
        hold: Box<dyn Send + Sync>,
    ) -> EventOnEnd {
        EventOnEnd {
            sender: Some(sender),
            event: Some(event),
            settlement: None,
            scan,
            _hold: hold,
            stall: None,
        }
    }

    /// Settles nothing but `settlement` when the body ends (no event is written).
    pub fn settle_only(settlement: crate::limits::Settlement, scan: UsageScan) -> EventOnEnd {
        EventOnEnd {
            sender: None,
            event: None,
            settlement: Some(settlement),
            scan,
            _hold: Box::new(()),
            stall: None,
        }
    }

    /// Also settles `settlement` when the body ends.
    pub fn with_settlement(mut self, settlement: Option<crate::limits::Settlement>) -> Self {
        self.settlement = settlement;
        self
    }

    /// Marks the event `client_stalled` if `stall` is marked by the time it is queued.
    pub fn watch_stall(&mut self, stall: super::ClientStall) {
        self.stall = Some(stall);
    }

    /// Takes note of one chunk of the body.
    pub fn feed(&mut self, data: &[u8]) {
        self.scan.feed(data);
    }

    /// Queues the event and settles the reservation (once), for a body that ended as
    /// `end`.
    pub fn finish(&mut self, end: BodyEnd) {
        if matches!(self.scan.scan, Scan::Done) {
            return;
        }
        let usage = self.scan.usage();
        let missing = self.scan.missing(end);
        self.scan = UsageScan { scan: Scan::Done };
        let usage = usage.filter(|u| {
            u.prompt_tokens.is_some() || u.completion_tokens.is_some() || u.total_tokens.is_some()
        });
        if let Some(mut settlement) = self.settlement.take() {
            settlement.settle(usage.as_ref().and_then(|u| u.total()));
        }
        let (Some(pending), Some(sender)) = (self.event.take(), &self.sender) else {
            return;
        };
        let Some(mut event) = pending.take() else {
            return;
        };
        match usage {
            Some(u) => {
                event.prompt_tokens = u.prompt_tokens;
                event.completion_tokens = u.completion_tokens;
                event.total_tokens = u.total_tokens;
            }
            None => event.usage_missing = Some(missing),
        }
        if self
            .stall
            .as_ref()
            .is_some_and(super::ClientStall::is_marked)
        {
            event.client_stalled = true;
        }
        sender.emit(event);
    }
}

impl Drop for EventOnEnd {
    fn drop(&mut self) {
        self.finish(BodyEnd::Dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(content_type: &str, chunks: &[&[u8]]) -> Option<TokenUsage> {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
        let mut s = UsageScan::for_response(&h);
        for c in chunks {
            s.feed(c);
        }
        s.usage()
    }

    const USAGE: TokenUsage = TokenUsage {
        prompt_tokens: Some(3),
        completion_tokens: Some(5),
        total_tokens: Some(8),
    };

    #[test]
    fn a_json_answer_gives_its_usage_even_split_across_chunks() {
        let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#;
        let (a, b) = body.split_at(40);
        assert_eq!(
            scan("application/json; charset=utf-8", &[a, b]),
            Some(USAGE)
        );
        assert_eq!(scan("application/json", &[br#"{"usage":null}"#]), None);
        assert_eq!(scan("text/plain", &[body]), None);
    }

    #[test]
    fn a_json_answer_beyond_the_bound_is_not_searched() {
        let pad = vec![b' '; MAX_USAGE_JSON_BYTES];
        let body = br#"{"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#;
        assert_eq!(scan("application/json", &[&pad, body]), None);
    }

    #[test]
    fn an_event_stream_gives_the_usage_of_its_last_chunk_within_the_tail() {
        let filler = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}],\"usage\":null}}\n\n",
            "x".repeat(1000)
        );
        let mut chunks: Vec<Vec<u8>> = (0..100).map(|_| filler.clone().into_bytes()).collect();
        chunks.push(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\r\n\r\n".to_vec());
        chunks.push(b"data: [DONE]\n\n".to_vec());
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        assert_eq!(scan("text/event-stream", &refs), Some(USAGE));
        // Without the usage chunk (the client did not ask for it): none.
        assert_eq!(scan("text/event-stream", &refs[..100]), None);
    }

    #[test]
    fn the_event_stream_tail_stays_within_its_bound() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            "text/event-stream".parse().unwrap(),
        );
        let mut s = UsageScan::for_response(&h);
        for _ in 0..10_000 {
            s.feed(&[b'x'; 1000]);
            let Scan::Sse(tail) = &s.scan else { panic!() };
            assert!(tail.len() <= 2 * USAGE_SSE_TAIL_BYTES);
        }
        s.feed(&vec![b'y'; 5 * USAGE_SSE_TAIL_BYTES]);
        let Scan::Sse(tail) = &s.scan else { panic!() };
        assert_eq!(tail.len(), USAGE_SSE_TAIL_BYTES);
    }

    #[test]
    fn an_answer_without_usage_says_why() {
        let fed = |content_type: &str, chunks: &[&[u8]]| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
            let mut s = UsageScan::for_response(&h);
            for c in chunks {
                s.feed(c);
            }
            s
        };
        let json = fed("application/json", &[br#"{"error":{}}"#]);
        assert_eq!(json.missing(BodyEnd::Complete), UsageMissing::NotInAnswer);
        assert_eq!(
            json.missing(BodyEnd::Dropped),
            UsageMissing::ClientDisconnected
        );
        assert_eq!(json.missing(BodyEnd::Failed), UsageMissing::UpstreamFailed);
        let sse = fed("text/event-stream", &[b"data: {\"usage\":null}\n\n"]);
        assert_eq!(sse.missing(BodyEnd::Complete), UsageMissing::NotInStream);
        assert_eq!(
            sse.missing(BodyEnd::Dropped),
            UsageMissing::ClientDisconnected
        );
        let big = vec![b' '; MAX_USAGE_JSON_BYTES + 1];
        let large = fed("application/json", &[&big]);
        assert_eq!(large.missing(BodyEnd::Complete), UsageMissing::TooLarge);
        assert_eq!(large.missing(BodyEnd::Dropped), UsageMissing::TooLarge);
        let text = fed("text/plain", &[b"hello"]);
        assert_eq!(text.missing(BodyEnd::Complete), UsageMissing::NotScanned);
    }

    #[test]
    fn a_compressed_answer_is_not_scanned() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        h.insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
        let mut s = UsageScan::for_response(&h);
        s.feed(br#"{"usage":{"total_tokens":8}}"#);
        assert_eq!(s.usage(), None);
    }
}
