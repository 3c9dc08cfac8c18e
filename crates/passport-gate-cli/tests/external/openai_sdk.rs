//! The real `openai` Python SDK (tests/python/openai_sdk.py) against the real gateway:
//! rejections read as OpenAI errors, and the SDK's automatic retries after a gateway
//! that could not reach its upstream, or an upstream 503, are accepted, not replays;
//! the limits in front of a devshard stand-in (limits_sdk.py), and one budget across two
//! replicas sharing a Redis or a Redis Cluster (limits_replicas_sdk.py).
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
    let port = free_port();
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
    let stdout = run_script(
        &python,
        "openai_sdk.py",
        &[
            ("PG_GATEWAY", format!("http://{}", gw.listen)),
            ("PG_UPSTREAM_PORT", port.to_string()),
            ("PG_AGENT_KEY", agent.display().to_string()),
            ("PG_PASSPORT_FILE", passport.display().to_string()),
        ],
    );
    assert_eq!(stdout.matches("\nok ").count(), 5, "{stdout}");
}

/// Runs tests/python/`script` with `env` (and `PG_BIN`, `PG_CHAIN`), within two
/// minutes; asserts it succeeded and returns what it printed.
fn run_script(python: &Path, script: &str, env: &[(&str, String)]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut child = Command::new(python)
        .arg(script)
        .env("PG_BIN", env!("CARGO_BIN_EXE_passport-gate"))
        .env("PG_CHAIN", CHAIN)
        .envs(env.iter().map(|(k, v)| (k, v)))
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
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The broker mode of docs/broker.md in front of a devshard stand-in (written in
/// tests/python/limits_sdk.py from devshardctl's documented behaviour), through the
/// real SDK: 429 `rate_limit_exceeded` and `insufficient_quota` read as `e.code`, the
/// `x-ratelimit-*` headers, twenty parallel requests within one token budget,
/// settlement, a stream without usage charged its reservation, `max_tokens` over the
/// cap, and the upstream only ever seeing the gateway's key.
#[test]
fn the_openai_python_sdk_meets_the_limits_in_front_of_a_devshard_stand_in() {
    let Some(python) = python() else {
        return;
    };
    let port = free_port();
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let files = support::serve::workdir("limits-sdk-files");
    let key_file = files.join("devshard.key");
    std::fs::write(&key_file, "sk-devshard-operator-key\n").unwrap();
    let policy = files.join("limits.toml");
    std::fs::write(&policy, "").unwrap();
    let extra = format!(
        "replay_protection = true\n\n{}\n[upstream_auth]\nkind = \"bearer\"\ntoken_file = \"{}\"\n\n[limits]\nmax_tokens_cap = 4096\ndefault_max_tokens = 1024\npolicy_file = \"{}\"\nreload_ms = 50\n\n[limits.principal]\nrequests_per_minute = 1000\n",
        support::serve::replay_disk("limits-sdk", ""),
        key_file.display(),
        policy.display()
    );
    // Twenty requests signed by as many CLI processes may take seconds on a busy
    // machine, and the upstream holds the admitted ones until all are judged.
    let toml = config(upstream, &extra)
        .replace("response_timeout_ms = 3000", "response_timeout_ms = 60000");
    let gw = start("limits-sdk", &toml);
    let stdout = run_script(
        &python,
        "limits_sdk.py",
        &[
            ("PG_GATEWAY", format!("http://{}", gw.listen)),
            ("PG_UPSTREAM_PORT", port.to_string()),
            ("PG_UPSTREAM_KEY", "sk-devshard-operator-key".to_owned()),
            ("PG_POLICY_FILE", policy.display().to_string()),
            ("PG_WORKDIR", files.display().to_string()),
        ],
    );
    assert_eq!(stdout.matches("\nok ").count(), 8, "{stdout}");
}

/// Two `serve` replicas with `[limits]` in one shared Redis (`kind`: one server, or a
/// three-node Redis Cluster), through the real SDK (tests/python/limits_replicas_sdk.py):
/// requests alternating between the replicas meet one request rate (429
/// `rate_limit_exceeded` from both once the principal's bucket is empty) and one token
/// budget (twenty parallel requests, half to each, admitted only as far as the budget
/// goes; the rest 429 `insufficient_quota`), as `e.status_code` and `e.code` read them.
/// Without redis-server, or without the SDK, skipped and named, except under CI, where
/// it fails.
async fn the_openai_python_sdk_meets_one_budget_across_two_replicas(kind: crate::redis::Kind) {
    let Some(python) = python() else {
        return;
    };
    if !crate::redis::redis_available() {
        return;
    }
    let redis = crate::redis::Deployment::start(kind).await;
    let redis_toml = redis.redis_toml.as_deref().expect("a [redis] section");
    let port = free_port();
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let name = format!("limits-replicas-sdk-{kind:?}").to_lowercase();
    let files = support::serve::workdir(&format!("{name}-files"));
    let policy = files.join("limits.toml");
    std::fs::write(&policy, "").unwrap();
    // The test servers keep nothing on disk: accepted for the test.
    let extra = format!(
        "\n[limits]\nstore = \"redis\"\naccept_forgetful_redis = true\npolicy_file = \"{}\"\nreload_ms = 50\n\n[redis]\n{redis_toml}timeout_ms = 2000\n",
        policy.display()
    );
    // Twenty requests signed by as many CLI processes may take seconds on a busy
    // machine, and the upstream holds the admitted ones until all are judged.
    let toml = config(upstream, &extra)
        .replace("response_timeout_ms = 3000", "response_timeout_ms = 60000");
    let a = start(&format!("{name}-a"), &toml);
    let b = start(&format!("{name}-b"), &toml);
    let stdout = run_script(
        &python,
        "limits_replicas_sdk.py",
        &[
            (
                "PG_GATEWAYS",
                format!("http://{},http://{}", a.listen, b.listen),
            ),
            ("PG_UPSTREAM_PORT", port.to_string()),
            ("PG_POLICY_FILE", policy.display().to_string()),
            ("PG_WORKDIR", files.display().to_string()),
        ],
    );
    assert_eq!(stdout.matches("\nok ").count(), 2, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_meets_one_budget_across_two_replicas_sharing_redis() {
    the_openai_python_sdk_meets_one_budget_across_two_replicas(crate::redis::Kind::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_meets_one_budget_across_two_replicas_sharing_a_redis_cluster() {
    the_openai_python_sdk_meets_one_budget_across_two_replicas(crate::redis::Kind::Cluster).await;
}
