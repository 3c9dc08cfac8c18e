//! Spec section 7.1, where replay records live, through the real binary: the disk store
//! keeps them across a SIGKILL and a SIGTERM; a data directory that cannot be opened
//! stops the start naming its path and is never replaced; the in-process store forgets
//! them, so passports issued before its start are refused; and one principal never
//! fills a small store.

use crate::support;

use std::process::Command;
use std::time::Duration;
use support::serve::{config, refused_config, replay_dir, scripted_upstream, start, Gateway};

const URI: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"echo-1","messages":[{"role":"user","content":"once"}]}"#;

fn code(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text).map_or_else(
        |_| String::new(),
        |v| v["code"].as_str().unwrap_or("").to_owned(),
    )
}

fn body(n: usize) -> Vec<u8> {
    format!(r#"{{"model":"echo-1","messages":[{{"role":"user","content":"{n}"}}]}}"#).into_bytes()
}

fn disk_config(up: std::net::SocketAddr, dir: &std::path::Path) -> String {
    config(
        up,
        &format!(
            "replay_protection = true\n[replay]\ndata_dir = {:?}\n",
            dir.display().to_string()
        ),
    )
}

/// Sends SIGTERM and waits for the gateway to exit.
fn terminate(gw: &mut Gateway) {
    let status = Command::new("kill")
        .args(["-TERM", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = gw.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// A request accepted before the gateway died is refused after it restarts on the same
/// data directory: its record was durable before the request was forwarded.
async fn a_request_accepted_before_the_stop_is_refused_after_the_restart(
    name: &str,
    sigkill: bool,
) {
    let up = scripted_upstream(vec![]).await;
    let dir = replay_dir(name);
    let toml = disk_config(up.addr, &dir);
    let mut gw = start(name, &toml);
    let f = support::live("urn:aps:agent:durable");
    let headers = f.headers(URI, BODY);
    assert_eq!(support::post(gw.listen, URI, &headers, BODY).await.0, 200);
    if sigkill {
        gw.child.kill().unwrap();
        gw.child.wait().unwrap();
    } else {
        terminate(&mut gw);
    }
    drop(gw);
    let gw = start(name, &toml);
    let replay = support::post(gw.listen, URI, &headers, BODY).await;
    assert_eq!(
        (replay.0, code(&replay.1).as_str()),
        (401, "request_replayed"),
        "{replay:?}"
    );
    // The same passport's new requests are still served.
    let b = body(1);
    assert_eq!(
        support::post(gw.listen, URI, &f.headers(URI, &b), &b)
            .await
            .0,
        200
    );
    assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_accepted_before_a_sigkill_is_refused_after_the_restart() {
    a_request_accepted_before_the_stop_is_refused_after_the_restart("durable-kill", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_accepted_before_a_sigterm_is_refused_after_the_restart() {
    a_request_accepted_before_the_stop_is_refused_after_the_restart("durable-term", false).await;
}

/// A data directory that is missing, or holds a file that is not a replay database,
/// stops the start with one line naming `replay.data_dir` and the path; the file is
/// left as it was.
#[test]
fn a_data_dir_that_cannot_be_opened_stops_the_start_naming_its_path() {
    let up = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let dir = replay_dir("corrupt");
    let file = dir.join("replay.redb");
    let junk = vec![0x5a_u8; 16 * 1024];
    std::fs::write(&file, &junk).unwrap();
    let (exit, stderr) = refused_config("replay-corrupt", &disk_config(up, &dir));
    assert_ne!(exit, Some(0), "{stderr}");
    assert!(
        stderr.contains("replay.data_dir") && stderr.contains(&*file.to_string_lossy()),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), junk, "never replaced");

    let missing = dir.join("not-there");
    let (exit, stderr) = refused_config("replay-missing", &disk_config(up, &missing));
    assert_ne!(exit, Some(0), "{stderr}");
    assert!(
        stderr.contains("replay.data_dir") && stderr.contains(&*missing.to_string_lossy()),
        "{stderr}"
    );
    assert!(!missing.exists(), "never created");

    // Without a directory, the default (disk) store is a configuration error.
    let (exit, stderr) = refused_config("replay-no-dir", &config(up, "replay_protection = true\n"));
    assert_ne!(exit, Some(0), "{stderr}");
    assert!(stderr.contains("replay.data_dir"), "{stderr}");
}

/// With `store = "memory"` (persistence off) the records of an earlier run are gone, so
/// every passport issued before the start plus the clock skew is refused
/// `passport_predates_start`; one issued after is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_memory_store_passports_issued_before_the_start_are_refused() {
    let up = scripted_upstream(vec![]).await;
    let before = support::live("urn:aps:agent:earlier");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let gw = start(
        "replay-memory",
        &config(
            up.addr,
            "replay_protection = true\n[replay]\nstore = \"memory\"\n",
        )
        .replace("clock_skew_seconds = 300", "clock_skew_seconds = 1"),
    );
    let refused = support::post(gw.listen, URI, &before.headers(URI, BODY), BODY).await;
    assert_eq!(
        (refused.0, code(&refused.1).as_str()),
        (401, "passport_predates_start"),
        "{refused:?}"
    );
    // Issued more than the skew after the start: served.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let after = support::live("urn:aps:agent:later");
    let served = support::post(gw.listen, URI, &after.headers(URI, BODY), BODY).await;
    assert_eq!(served.0, 200, "{served:?}");
    assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Issue 22 item 17: with `replay_cache_capacity = 200` and the default quota (10,000,
/// larger than the store), one principal's 250 requests get at most a tenth of the
/// store, and another principal is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_fill_a_small_replay_store() {
    let up = scripted_upstream(vec![]).await;
    let dir = replay_dir("small-store");
    let gw = start(
        "small-store",
        &config(
            up.addr,
            &format!(
                "replay_protection = true\nreplay_cache_capacity = 200\n[replay]\ndata_dir = {:?}\n",
                dir.display().to_string()
            ),
        ),
    );
    let hog = support::live_of(0x61, "urn:aps:agent:hog");
    let mut accepted = 0;
    let mut quota = 0;
    for n in 0..250 {
        let b = body(n);
        let (status, text) = support::post(gw.listen, URI, &hog.headers(URI, &b), &b).await;
        match (status, code(&text).as_str()) {
            (200, _) => accepted += 1,
            (429, "replay_quota_exceeded") => quota += 1,
            other => panic!("request {n}: {other:?}"),
        }
    }
    assert_eq!((accepted, quota), (20, 230));
    let other = support::live_of(0x71, "urn:aps:agent:other");
    let b = body(0);
    let served = support::post(gw.listen, URI, &other.headers(URI, &b), &b).await;
    assert_eq!(served.0, 200, "{served:?}");
}
