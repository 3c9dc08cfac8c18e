//! Tests skipped for a missing tool are visible (issue 23): a skipped test passes, and the
//! test harness shows nothing a passing test prints, so each skip is written to the
//! process's standard error directly, at once, and the last test of the binary
//! ([`zz_skipped_tests`](crate::zz_skipped_tests)) ends the run with one line naming
//! every skipped test and what it needs. Under CI (`CI` set, other than `false`), a
//! missing tool fails the test instead: `.ci/run` installs them all.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// (test, what it needs) for every test skipped so far in this process.
static SKIPPED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Checks of tools that have started and not yet decided (see [`summary`]).
static CHECKING: Mutex<usize> = Mutex::new(0);

/// Whether this is CI, where every tool must be there.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// The running test's name: the harness names each test's thread after it.
fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned()
}

/// Runs `check` (what is missing, as a phrase that says how to install it, or `None`)
/// for the running test: `true` when it may run. When something is missing the test is
/// recorded as skipped and reported at once on standard error; under CI it panics.
pub fn requires(check: impl FnOnce() -> Option<String>) -> bool {
    *CHECKING.lock().unwrap() += 1;
    let missing = check();
    let test = current_test();
    let decided = || *CHECKING.lock().unwrap() -= 1;
    let Some(needs) = missing else {
        decided();
        return true;
    };
    if under_ci() {
        decided();
        panic!("{test} needs {needs}; CI must run it (.ci/run installs it)");
    }
    // Not eprintln!: the harness would capture it, and a skipped test passes.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs {needs}");
    SKIPPED.lock().unwrap().push((test, needs));
    decided();
    false
}

/// The line that ends the run: every skipped test and what it needs, or `None` when
/// nothing was skipped. The harness starts tests in name order, so the test that calls
/// this starts after all the others; it waits for checks still running (a test that
/// started just before it) for up to 10 s.
pub fn summary() -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while *CHECKING.lock().unwrap() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let skipped = SKIPPED.lock().unwrap();
    if skipped.is_empty() {
        return None;
    }
    let mut by_need: Vec<(&str, Vec<&str>)> = Vec::new();
    for (test, needs) in skipped.iter() {
        match by_need.iter_mut().find(|(n, _)| n == needs) {
            Some((_, tests)) => tests.push(test),
            None => by_need.push((needs, vec![test])),
        }
    }
    let groups: Vec<String> = by_need
        .iter_mut()
        .map(|(needs, tests)| {
            tests.sort_unstable();
            format!("missing {needs}: {}.", tests.join(", "))
        })
        .collect();
    Some(format!(
        "SKIPPED {} test(s), shown as ok but not run: {}",
        skipped.len(),
        groups.join(" ")
    ))
}

/// Writes the summary line, if any, to standard error (past the harness's capture);
/// whether any test was skipped.
pub fn print_summary() -> bool {
    let line = summary();
    if let Some(line) = &line {
        let _ = writeln!(std::io::stderr(), "\n{line}");
    }
    line.is_some()
}
