//! `passport-gate conformance`: run or write the conformance vectors.

use crate::cli::output::{say, Failure};
use clap::Args;
use passport_conformance::{generate, run_paths};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct ConformanceArgs {
    /// Vector files or directories.
    #[arg(required_unless_present = "generate")]
    paths: Vec<PathBuf>,
    /// Write the generated vectors into this directory instead of running.
    #[arg(long, conflicts_with = "paths")]
    generate: Option<PathBuf>,
}

pub fn run(a: &ConformanceArgs) -> Result<u8, Failure> {
    if let Some(dir) = &a.generate {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let vectors = generate();
        for v in &vectors {
            let path = dir.join(format!("{}.json", v.name));
            let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())? + "\n";
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        eprintln!("wrote {} vectors to {}", vectors.len(), dir.display());
        return Ok(0);
    }
    let report = run_paths(&a.paths);
    for (name, why) in &report.failed {
        say!("FAIL {name}: {why}");
    }
    for (file, why) in &report.invalid {
        say!("INVALID {}: {why}", file.display());
    }
    say!(
        "{} passed, {} failed",
        report.passed,
        report.failed.len() + report.invalid.len()
    );
    Ok(if !report.invalid.is_empty() {
        2
    } else if !report.failed.is_empty() {
        1
    } else {
        0
    })
}
