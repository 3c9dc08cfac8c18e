//! `passport-gate demo`: the guided walk-through.

use crate::cli::output::{runtime, Failure};

pub fn run() -> Result<u8, Failure> {
    runtime()?
        .block_on(crate::demo::run())
        .map_err(|e| Failure(e, 1))
}
