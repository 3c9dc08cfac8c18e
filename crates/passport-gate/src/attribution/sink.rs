//! Where attribution events are written.

use super::AttributionEvent;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// A destination for attribution events. Called from the drain thread only.
pub trait Sink: Send + 'static {
    /// A short name for logs and errors.
    fn name(&self) -> &str;
    /// Writes one event.
    fn write(&mut self, event: &AttributionEvent) -> io::Result<()>;
    /// Makes what was written durable or visible; called when the queue runs empty and
    /// at shutdown.
    fn flush(&mut self) -> io::Result<()>;
    /// Whether this sink takes refusal events (`outcome: refused`). Only the audit file
    /// does by default: the other sinks feed billing and dashboards, which count calls.
    fn records_refusals(&self) -> bool {
        false
    }
}

/// One JSON object per line, to stdout or to a file opened for appending.
pub struct JsonLinesSink {
    name: String,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl JsonLinesSink {
    /// Writes to standard output.
    pub fn stdout() -> JsonLinesSink {
        JsonLinesSink {
            name: "stdout".into(),
            out: BufWriter::new(Box::new(io::stdout())),
        }
    }

    /// Appends to `path`, creating it if needed.
    pub fn create_file(path: &Path) -> io::Result<JsonLinesSink> {
        let file: File = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonLinesSink {
            name: format!("file:{}", path.display()),
            out: BufWriter::new(Box::new(file)),
        })
    }
}

impl Sink for JsonLinesSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, event: &AttributionEvent) -> io::Result<()> {
        // Bidi and C1 controls as JSON escapes, as in the audit file: same value, and a
        // line that reads as its bytes.
        let text = serde_json::to_string(event)?;
        self.out
            .write_all(passport_core::inspect::escape_controls(&text).as_bytes())?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(feature = "redis")]
/// How large a Redis stream of events may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamBounds {
    /// Entries kept, at most (`attribution.redis_stream_maxlen`).
    pub max_entries: u64,
    /// Bytes of Redis memory the stream may take, at most
    /// (`attribution.redis_stream_max_bytes`).
    pub max_bytes: u64,
    /// The largest event written, in bytes of JSON
    /// (`attribution.redis_stream_max_event_bytes`).
    pub max_event_bytes: usize,
}

#[cfg(feature = "redis")]
impl StreamBounds {
    /// Redis memory charged for one entry of at most `max_event_bytes` of JSON: twice
    /// that, plus 256. An entry costs its JSON, its id and field name, its node's
    /// headers and radix-tree share, and the allocator's rounding of the node (a node
    /// holds at most `stream-node-max-bytes`, 4 KiB by default, so large entries sit one
    /// or two to a node). Measured on redis-server 7.0 with jemalloc, the worst was 1.38
    /// times the JSON (2,048-byte events, 2,828 bytes each by `MEMORY USAGE`); twice
    /// leaves room for other allocators and versions. docs/redis.md has the table and
    /// the command.
    pub fn entry_bytes(max_event_bytes: u64) -> u64 {
        max_event_bytes.saturating_mul(2).saturating_add(256)
    }

    /// The `MAXLEN ~` the stream is trimmed to: the entry bound, or fewer, so that
    /// entries of the largest size fit in the byte bound.
    pub fn maxlen(&self) -> u64 {
        let per_entry = Self::entry_bytes(self.max_event_bytes as u64);
        self.max_entries.min(self.max_bytes / per_entry).max(1)
    }
}

#[cfg(feature = "redis")]
/// Appends events to a Redis stream (`XADD key MAXLEN ~ n * event <json>`), so every
/// replica feeds one stream. Every entry is at most `max_event_bytes` (a larger event
/// has its long strings cut, and is dropped if that is not enough), and `n` is chosen
/// so that the stream stays within `max_bytes`. Runs its own small runtime on the drain
/// thread.
pub struct RedisStreamSink {
    name: String,
    runtime: tokio::runtime::Runtime,
    redis: crate::redis_client::Redis,
    key: String,
    maxlen: u64,
    max_event_bytes: usize,
}

#[cfg(feature = "redis")]
impl RedisStreamSink {
    /// A sink writing to stream `key` within `bounds`; commands refused at `maxmemory`
    /// are counted on `out_of_memory`.
    pub fn new(
        config: crate::redis_client::RedisConfig,
        key: &str,
        bounds: StreamBounds,
        out_of_memory: crate::metrics::IntCounter,
    ) -> io::Result<RedisStreamSink> {
        Ok(RedisStreamSink {
            name: format!("redis-stream:{key}"),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            redis: crate::redis_client::Redis::new(config).count_out_of_memory_on(out_of_memory),
            key: key.to_owned(),
            maxlen: bounds.maxlen(),
            max_event_bytes: bounds.max_event_bytes,
        })
    }

    /// The `MAXLEN ~` this sink trims to.
    pub fn maxlen(&self) -> u64 {
        self.maxlen
    }
}

/// Strings of a stream entry longer than this are cut when the event is over its bound.
#[cfg(feature = "redis")]
const CUT_STRINGS_TO: usize = 128;

/// `event` as JSON of at most `max` bytes: as it is when it fits; otherwise with every
/// string longer than [`CUT_STRINGS_TO`] bytes cut (at a character boundary, ending in
/// `…`) and `"cut": true` added; an error when even that does not fit.
#[cfg(feature = "redis")]
pub fn bounded_json(event: &AttributionEvent, max: usize) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(event)?;
    if json.len() <= max {
        return Ok(json);
    }
    let mut value = serde_json::to_value(event)?;
    cut_strings(&mut value);
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("cut".into(), serde_json::Value::Bool(true));
    }
    let json = serde_json::to_vec(&value)?;
    if json.len() <= max {
        Ok(json)
    } else {
        Err(io::Error::other(format!(
            "event of {} bytes even with its strings cut, over the stream's {max}",
            json.len()
        )))
    }
}

#[cfg(feature = "redis")]
fn cut_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.len() > CUT_STRINGS_TO => {
            let mut end = CUT_STRINGS_TO;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push('…');
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(cut_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(cut_strings),
        _ => {}
    }
}

#[cfg(feature = "redis")]
impl Sink for RedisStreamSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, event: &AttributionEvent) -> io::Result<()> {
        let json = bounded_json(event, self.max_event_bytes)?;
        self.runtime
            .block_on(self.redis.xadd(&self.key, self.maxlen, "event", &json))
            .map_err(io::Error::other)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
