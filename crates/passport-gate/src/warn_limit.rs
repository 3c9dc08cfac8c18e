//! Rate-limited warnings for something that keeps failing (a store's poll, a readiness
//! probe): every failure is worth a line with its cause, but a long outage must not
//! flood the log.

use std::time::{Duration, Instant};

/// Decides which failures of one recurring check are logged: the first of an outage,
/// one whose cause differs from the last line's (at most one a second), and otherwise
/// one per `every`; the failures held back are counted into the next line. A success
/// starts over.
#[derive(Debug)]
pub struct WarnLimiter {
    every: Duration,
    last: Option<(Instant, String)>,
    held_back: u64,
}

/// The shortest time between two lines, even when the cause changes.
const MIN_GAP: Duration = Duration::from_secs(1);

impl WarnLimiter {
    /// At most one line per `every` while the cause stays the same.
    pub fn new(every: Duration) -> WarnLimiter {
        WarnLimiter {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// Whether to log a failure with `cause` now, and how many failures were held back
    /// since the last line.
    pub fn failed(&mut self, cause: &str) -> Option<u64> {
        let log = match &self.last {
            None => true,
            Some((at, last_cause)) => {
                let since = at.elapsed();
                since >= self.every || (since >= MIN_GAP && last_cause != cause)
            }
        };
        if !log {
            self.held_back += 1;
            return None;
        }
        self.last = Some((Instant::now(), cause.to_owned()));
        Some(std::mem::take(&mut self.held_back))
    }

    /// The check succeeded: the next failure is logged at once.
    pub fn succeeded(&mut self) {
        self.last = None;
        self.held_back = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_outage_and_cause_with_the_rest_counted() {
        let mut l = WarnLimiter::new(Duration::from_secs(10));
        assert_eq!(l.failed("refused"), Some(0));
        assert_eq!(l.failed("refused"), None);
        assert_eq!(l.failed("refused"), None);
        // A new cause within a second is still held back.
        assert_eq!(l.failed("no persistence"), None);
        l.succeeded();
        assert_eq!(l.failed("refused"), Some(0));
    }
}
