//! The wallet page end to end: the real `passport-gate wallet` binary, driven in Debian's
//! chromium by tests/wallet/wallet.test.mjs with a test Keplr wallet (real ADR-036
//! signatures), mints a passport; the real `passport-gate serve` then accepts a request
//! signed with it. Without node, chromium or the npm packages the browser test is skipped
//! and named in the run's last line, except under CI, where it fails (see skip.rs).

use passport_core::crypto::AgentSecret;
use passport_core::mint::AgentSigner;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

use support::serve::{config, echo, send, start, start_wallet, text, workdir, CHAIN};

const MODEL: &str = "qwen/qwen3-32b";

fn browser_test_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wallet")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// What is missing to run the browser test, if anything.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        missing.push("node".to_owned());
    }
    if !chromium().exists() {
        missing.push(format!(
            "{} (apt-get install chromium)",
            chromium().display()
        ));
    }
    if !browser_test_dir()
        .join("node_modules/playwright-core")
        .exists()
    {
        missing.push("tests/wallet/node_modules (npm ci in tests/wallet)".to_owned());
    }
    missing
}

/// Runs the node test with a bound on its time; panics with its output when it fails.
fn run_browser_test(envs: &[(&str, &str)]) {
    let dir = browser_test_dir();
    let out_path = std::env::temp_dir().join(format!("pg-wallet-node-{}.log", std::process::id()));
    let log = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new("node")
        .args(["--test", "--test-reporter=spec", "wallet.test.mjs"])
        .current_dir(&dir)
        .envs(envs.iter().copied())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{output}");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("the browser test failed ({s}):\n{output}"),
        None => panic!("the browser test did not finish in 180 s:\n{output}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passport_minted_with_a_browser_wallet_is_accepted_by_the_gateway() {
    if !crate::skip::requires(|| {
        let missing = missing_tools();
        (!missing.is_empty()).then(|| missing.join(", "))
    }) {
        return;
    }
    // The demo's echo upstream, run by the binary (`passport-gate echo`).
    let echo = echo();
    let gateway = start("wallet-browser", &config(echo.addr, ""));
    let page = start_wallet(&["--max-ttl-seconds", "3600"]);
    let url = page.url();
    let agent = AgentSecret::from_bytes(&[21u8; 32]);
    let dir = workdir("wallet-browser-out");
    let passport_file = dir.join("passport.txt");
    let agent_pubkey = agent.public_key().to_base64();
    let shots = std::env::var("WALLET_SCREENSHOTS").unwrap_or_default();
    let browser = chromium();
    let envs = [
        ("WALLET_URL", url.as_str()),
        ("CHAIN_ID", CHAIN),
        ("PREFIX", "gonka"),
        ("AGENT_PUBKEY", agent_pubkey.as_str()),
        ("MODEL", MODEL),
        ("PASSPORT_OUT", passport_file.to_str().unwrap()),
        ("CHROMIUM", browser.to_str().unwrap()),
        ("SCREENSHOTS", shots.as_str()),
    ];
    tokio::task::block_in_place(|| run_browser_test(&envs));

    let passport =
        std::fs::read_to_string(&passport_file).expect("the browser test wrote the passport");
    let signer = AgentSigner::new(agent, &passport, CHAIN).unwrap();
    let body = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"minted in a browser"}}]}}"#
    );
    let sig = signer
        .sign("POST", "/v1/chat/completions", body.as_bytes())
        .unwrap();
    let resp = send(
        gateway.listen,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-agent-passport", passport.trim()),
            ("x-agent-sig", sig.as_str()),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await;
    let status = resp.status();
    let answer = text(resp).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("minted in a browser"), "{answer}");
}
