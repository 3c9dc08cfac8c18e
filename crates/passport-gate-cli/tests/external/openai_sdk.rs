//! The real `openai` Python SDK (tests/python/openai_sdk.py) against the real gateway:
//! rejections read as OpenAI errors, and the SDK's automatic retries after a gateway
//! that could not reach its upstream, or an upstream 503, are accepted, not replays.
//!
//! The interpreter is `$PG_PYTHON`, else `target/python-venv/bin/python` (what `.ci/run`
//! installs), else `python3`. Without the `openai` package the test is skipped and named
//! in the run's last line, except under CI, where it fails (see skip.rs).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::serve::{config, start, CHAIN};

fn python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/python-venv/bin/python");
    let candidates = [
        std::env::var_os("PG_PYTHON").map(PathBuf::from),
        Some(venv),
        Some(PathBuf::from("python3")),
    ];
    let mut found = None;
    let runs = crate::skip::requires(|| {
        found = candidates.into_iter().flatten().find(|p| {
            Command::new(p)
                .args(["-c", "import openai, httpx"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        found.is_none().then(|| {
            "a Python with the openai package (target/python-venv, made as .ci/run does)".to_owned()
        })
    });
    found.filter(|_| runs)
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// An agent key and a passport for model `echo-1` only, made with the CLI.
fn credentials(dir: &Path) -> (PathBuf, PathBuf) {
    let agent = dir.join("agent.json");
    let principal = dir.join("principal.json");
    let passport = dir.join("passport.txt");
    cli(&["keygen", "--agent", "--out", agent.to_str().unwrap()]);
    cli(&[
        "keygen",
        "--principal",
        "--out",
        principal.to_str().unwrap(),
    ]);
    let minted = cli(&[
        "mint",
        "--principal-key",
        principal.to_str().unwrap(),
        "--agent-key",
        agent.to_str().unwrap(),
        "--agent-id",
        "urn:aps:agent:sdk",
        "--chain-id",
        CHAIN,
        "--ttl",
        "1800",
        "--model",
        "echo-1",
    ]);
    std::fs::write(&passport, minted).unwrap();
    (agent, passport)
}

#[test]
fn the_openai_python_sdk_reads_rejections_and_retries_without_replays() {
    let Some(python) = python() else {
        return;
    };
    // A port nothing listens on yet: the script starts its upstream there after the
    // gateway's first 502.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let gw = start(
        "openai-sdk",
        // The script's SDK retries after a 502 and expects that retry through.
        &config(
            upstream,
            &format!(
                "replay_protection = true\n{}",
                support::serve::replay_disk("openai-sdk", "release_on_retryable = true\n")
            ),
        ),
    );
    let (agent, passport) = credentials(&gw.dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_sdk.py");
    let mut child = Command::new(python)
        .arg(script)
        .env("PG_BIN", env!("CARGO_BIN_EXE_passport-gate"))
        .env("PG_GATEWAY", format!("http://{}", gw.listen))
        .env("PG_UPSTREAM_PORT", port.to_string())
        .env("PG_AGENT_KEY", &agent)
        .env("PG_PASSPORT_FILE", &passport)
        .env("PG_CHAIN", CHAIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("\nok ").count(), 5, "{stdout}");
}
