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
/// Appends events to a Redis stream (`XADD key MAXLEN ~ n * event <json>`), so every
/// replica feeds one stream. Runs its own small runtime on the drain thread.
pub struct RedisStreamSink {
    name: String,
    runtime: tokio::runtime::Runtime,
    redis: crate::redis_client::Redis,
    key: String,
    maxlen: u64,
}

#[cfg(feature = "redis")]
impl RedisStreamSink {
    /// A sink writing to stream `key`, trimmed to about `maxlen` entries.
    pub fn new(
        config: crate::redis_client::RedisConfig,
        key: &str,
        maxlen: u64,
    ) -> io::Result<RedisStreamSink> {
        Ok(RedisStreamSink {
            name: format!("redis-stream:{key}"),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            redis: crate::redis_client::Redis::new(config),
            key: key.to_owned(),
            maxlen,
        })
    }
}

#[cfg(feature = "redis")]
impl Sink for RedisStreamSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, event: &AttributionEvent) -> io::Result<()> {
        let json = serde_json::to_vec(event)?;
        self.runtime
            .block_on(self.redis.xadd(&self.key, self.maxlen, "event", &json))
            .map_err(io::Error::other)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
