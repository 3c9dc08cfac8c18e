//! Printing and process helpers every command uses: the failure, stdout, logging, the runtime.

use crate::terminal::escape_controls;

/// A failure to report: the message and the exit code.
pub(crate) struct Failure(pub(crate) String, pub(crate) u8);

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s, 2)
    }
}

pub(crate) fn init_logging() {
    let level = match std::env::var("PASSPORT_GATE_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    runtime_with(0)
}

/// A runtime of `workers` threads (0: tokio's default, one per CPU core, or
/// `TOKIO_WORKER_THREADS`).
pub(crate) fn runtime_with(workers: usize) -> Result<tokio::runtime::Runtime, Failure> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the runtime: {e}"), 1))
}

/// Prints one line (or several) to stdout for people; see [`print_out`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::print_out(&format!($($arg)*), true)
    };
}
pub(crate) use say;

/// Writes `text` to stdout with every control and bidi character escaped on each line
/// (agent ids, models and file contents must not drive the terminal). A closed stdout
/// (`passport-gate inspect ... | head`) stops the output quietly: the command still
/// finishes and exits with its own status, which for `verify` is the verdict.
pub(crate) fn print_out(text: &str, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut lines = text.split('\n').peekable();
    let mut written = Ok(());
    while let Some(line) = lines.next() {
        let end = if lines.peek().is_some() || newline {
            "\n"
        } else {
            ""
        };
        written = written.and_then(|()| write!(out, "{}{end}", escape_controls(line)));
    }
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => eprintln!("passport-gate: cannot write to stdout: {e}"),
    }
}
