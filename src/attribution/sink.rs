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
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
