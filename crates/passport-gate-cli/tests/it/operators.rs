//! What gateway operators rely on, over real HTTP with the real binary: the verified
//! identity reaches the upstream (and nobody else can set it), the fixed requester and
//! the principal allowlist of a devshard sidecar, every configuration problem in one
//! run, the access log, the upstream probe behind /readyz, and the example
//! configuration as shipped in front of `passport-gate echo`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support;

use support::serve::{
    config, echo, refused_config, send, start, start_file, text, upstream, workdir,
};

const PATH: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"hi"}]}"#;

fn headers(f: &support::Fixture, body: &[u8]) -> Vec<(String, String)> {
    f.headers(PATH, body)
}

/// Header pairs as `send` takes them.
fn pairs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

/// `BODY` posted to `PATH` with `f`'s passport and signature.
async fn post_as(
    gateway: std::net::SocketAddr,
    f: &support::Fixture,
) -> http::Response<hyper::body::Incoming> {
    send(gateway, "POST", PATH, &pairs(&headers(f, BODY)), BODY).await
}

/// A passport issued now by the principal whose secret is 32 bytes of `principal`,
/// for `agent_id`, with `beneficiary`.
fn passport(principal: u8, agent_id: &str, beneficiary: Option<&str>) -> support::Fixture {
    let now = passport_core::time::Timestamp::from_unix_seconds(
        passport_core::time::Timestamp::now().unix_seconds(),
    );
    support::fixture_of(principal, agent_id, None, beneficiary, now)
}

/// Percent-decodes a header value (what an upstream does to read the identity back).
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Polls `check` every 50 ms for up to `wait`.
async fn eventually(wait: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verified_identity_reaches_the_upstream_and_client_copies_never_do() {
    let up = upstream().await;
    let gw = start("identity", &config(up.addr, ""));
    let nasty = "agent \r\nx-aps-model: evil\u{0}\u{e9}%41\u{1F600}";
    let f = passport(0x61, nasty, Some("ben\u{e9}ficiary 1"));
    let mut h = headers(&f, BODY);
    for (name, value) in [
        ("X-APS-Agent-Id", "forged"),
        ("x-aps-principal-address", "gonka1forged"),
        ("X-Aps-Beneficiary", "forged"),
        ("x-aps-passport-id", "forged"),
        ("x-aps-model", "forged"),
        ("x-aps-requester-address", "forged"),
        ("x_aps_agent_id", "forged"),
        ("accept-encoding", "gzip, br"),
        ("accept_encoding", "gzip"),
    ] {
        h.push((name.into(), value.into()));
    }
    let resp = send(gw.listen, "POST", PATH, &pairs(&h), BODY).await;
    assert_eq!(resp.status(), 200);
    let seen = up.seen();
    let got = &seen.last().unwrap().headers;
    assert_eq!(got.get_all("x-aps-agent-id").iter().count(), 1);
    assert_eq!(
        percent_decode(got["x-aps-agent-id"].to_str().unwrap()),
        nasty
    );
    assert!(got.get("x_aps_agent_id").is_none(), "{got:?}");
    // Its answer is read for token usage, so the upstream is asked not to compress it.
    assert_eq!(got["accept-encoding"], "identity");
    assert!(got.get("accept_encoding").is_none(), "{got:?}");
    assert_eq!(
        got["x-aps-principal-address"].to_str().unwrap(),
        f.principal_address
    );
    assert_eq!(
        percent_decode(got["x-aps-beneficiary"].to_str().unwrap()),
        "ben\u{e9}ficiary 1"
    );
    assert_eq!(got["x-aps-model"], "qwen/qwen3-32b");
    let id = got["x-aps-passport-id"].to_str().unwrap();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(
        got.get("x-aps-requester-address").is_none(),
        "binding is off"
    );

    // An unguarded route, without a passport: every client copy is removed too, and so
    // are the `_` spellings that WSGI/CGI upstreams read as the same variable.
    let forged = [
        ("X-APS-Agent-Id", "forged"),
        ("x-aps-model", "forged"),
        ("x_aps_agent_id", "forged"),
        ("X_Aps_Principal-Address", "gonka1forged"),
        ("x_agent_passport", "forged"),
        ("x_forwarded_for", "10.9.9.9"),
        ("x-forwarded-proto", "https"),
        ("x_unrelated_header", "kept"),
    ];
    let resp = send(gw.listen, "GET", "/v1/models", &forged, b"").await;
    assert_eq!(resp.status(), 200);
    let got = up.seen().last().unwrap().headers.clone();
    assert!(got.get("x-aps-agent-id").is_none(), "{got:?}");
    assert!(got.get("x-aps-model").is_none(), "{got:?}");
    for underscored in [
        "x_aps_agent_id",
        "x_aps_principal-address",
        "x_agent_passport",
        "x_forwarded_for",
    ] {
        assert!(got.get(underscored).is_none(), "{underscored}: {got:?}");
    }
    // Every `_` name is dropped, as nginx does: an upstream that merges it with the
    // `-` spelling must never see a client's value beside one the gateway set or judged.
    assert!(got.get("x_unrelated_header").is_none(), "{got:?}");
    // How the client connected is said by the gateway alone.
    assert_eq!(got["x-forwarded-proto"], "http");

    // A guarded route without a passport (optional mode passes it through): removed.
    let resp = send(gw.listen, "POST", PATH, &forged, BODY).await;
    assert_eq!(resp.status(), 200);
    let got = up.seen().last().unwrap().headers.clone();
    assert!(got.get("x-aps-agent-id").is_none(), "{got:?}");
    assert!(got.get("x-aps-model").is_none(), "{got:?}");

    // A passport request that the layer refuses never reaches the upstream at all.
    let before = up.seen().len();
    let mut bad = headers(&f, b"{\"model\":\"other\"}");
    bad.push(("x-aps-agent-id".into(), "forged".into()));
    let resp = send(gw.listen, "POST", PATH, &pairs(&bad), BODY).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(up.seen().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_identity_names_are_removed_even_with_forwarding_off() {
    let up = upstream().await;
    let extra = "\n[forward_identity]\nenabled = false\nagent_id = \"X-Who\"\n";
    let gw = start("identity-off", &config(up.addr, extra));
    let f = passport(0x61, "urn:aps:agent:off", None);
    let mut h = headers(&f, BODY);
    h.push(("x-who".into(), "forged".into()));
    h.push(("x-aps-model".into(), "forged".into()));
    let resp = send(gw.listen, "POST", PATH, &pairs(&h), BODY).await;
    assert_eq!(resp.status(), 200);
    let got = up.seen().last().unwrap().headers.clone();
    assert!(got.get("x-who").is_none(), "{got:?}");
    assert!(got.get("x-aps-model").is_none(), "{got:?}");
    assert!(got.get("x-aps-principal-address").is_none(), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_requester_binds_every_request_to_the_operator() {
    let up = upstream().await;
    let operator = passport(0x61, "operator", None).principal_address;
    let user = passport(0x63, "user", None);
    let stranger = passport(0x64, "stranger", None);
    let extra = format!(
        "\n[binding]\nrequester = \"{}\"\ngrants = [{{ granter = \"{}\", grantee = \"{operator}\", msg_type_url = \"/inference.inference.MsgStartInference\" }}]\n",
        operator.to_uppercase(),
        user.principal_address
    );
    let gw = start("fixed-requester", &config(up.addr, &extra));

    // The operator's own passport, and a user who granted the operator: accepted, and
    // the upstream learns the requester. A client's requester header changes nothing.
    for f in [passport(0x61, "operator", None), user] {
        let mut h = headers(&f, BODY);
        h.push((
            "x-requester-address".into(),
            stranger.principal_address.clone(),
        ));
        let resp = send(gw.listen, "POST", PATH, &pairs(&h), BODY).await;
        assert_eq!(resp.status(), 200);
        let got = up.seen().last().unwrap().headers.clone();
        assert_eq!(got["x-aps-requester-address"].to_str().unwrap(), operator);
    }
    // A principal that granted the operator nothing: principal_mismatch.
    let resp = post_as(gw.listen, &stranger).await;
    assert_eq!(resp.status(), 403);
    assert!(text(resp).await.contains("\"principal_mismatch\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_from_the_header_reaches_the_upstream_once_bound() {
    let up = upstream().await;
    let extra = "\n[binding]\nrequester_header = \"X-Requester-Address\"\ngrants = []\n";
    let gw = start("header-requester", &config(up.addr, extra));
    let f = passport(0x61, "urn:aps:agent:bound", None);
    let mut h = headers(&f, BODY);
    h.push(("x-requester-address".into(), f.principal_address.clone()));
    h.push(("x-aps-requester-address".into(), "gonka1forged".into()));
    let resp = send(gw.listen, "POST", PATH, &pairs(&h), BODY).await;
    assert_eq!(resp.status(), 200);
    let got = up.seen().last().unwrap().headers.clone();
    assert_eq!(got.get_all("x-aps-requester-address").iter().count(), 1);
    assert_eq!(
        got["x-aps-requester-address"].to_str().unwrap(),
        f.principal_address
    );
}

#[test]
fn a_fixed_requester_with_a_requester_header_is_a_config_error_naming_both() {
    let operator = passport(0x61, "operator", None).principal_address;
    let toml = config(
        "127.0.0.1:9".parse().unwrap(),
        &format!("\n[binding]\nrequester = \"{operator}\"\nrequester_header = \"X-Requester-Address\"\ngrants = []\n"),
    );
    let (code, stderr) = refused_config("fixed-and-header", &toml);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("binding.requester and binding.requester_header"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_off_the_allowlist_get_403_principal_not_allowed() {
    let up = upstream().await;
    let allowed = passport(0x61, "allowed", None);
    let other = passport(0x63, "other", None);
    // Written in uppercase: the allowlist compares the lowercase normal form.
    let extra = format!(
        "\n[principals]\nallow = [\"{}\"]\n",
        allowed.principal_address.to_uppercase()
    );
    let gw = start("allowlist", &config(up.addr, &extra));
    let resp = post_as(gw.listen, &allowed).await;
    assert_eq!(resp.status(), 200);
    let calls = up.seen().len();
    let resp = post_as(gw.listen, &other).await;
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(body["code"], "principal_not_allowed");
    assert_eq!(
        up.seen().len(),
        calls,
        "a refused principal reached the upstream"
    );
    assert_eq!(
        gw.metric(
            "passport_gate_requests_total{code=\"principal_not_allowed\",outcome=\"rejected\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_file_is_reloaded_and_a_bad_line_never_widens_it_nor_blocks_a_removal() {
    let up = upstream().await;
    let a = passport(0x61, "a", None);
    let b = passport(0x63, "b", None);
    let dir = workdir("allow-file-list");
    let file = dir.join("principals.txt");
    std::fs::write(&file, format!("# operators\n{}\n", a.principal_address)).unwrap();
    let extra = format!(
        "\n[principals]\nallow_file = {:?}\nreload_ms = 20\n",
        file.display().to_string()
    );
    let gw = start("allow-file", &config(up.addr, &extra));
    let status = |f: &support::Fixture| {
        let h = headers(f, BODY);
        let addr = gw.listen;
        async move { send(addr, "POST", PATH, &pairs(&h), BODY).await.status() }
    };
    assert_eq!(status(&a).await, 200);
    assert_eq!(status(&b).await, 403);

    std::fs::write(&file, format!("{}\n", b.principal_address)).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || status(&b).await == 200).await,
        "the changed file was not taken"
    );
    assert_eq!(status(&a).await, 403);

    // The operator removes b and adds a, with a typo on another line: the removal is
    // applied, and nothing is added until the file is clean.
    std::fs::write(&file, format!("{}\nnot-an-address\n", a.principal_address)).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || gw
            .metric("passport_gate_principals_reload_failures_total")
            .await
            >= 1.0)
        .await,
        "the bad file was not counted"
    );
    assert!(
        gw.drain_lines()
            .iter()
            .any(|l| l.contains("principal allowlist has bad lines") && l.contains("line 2")),
        "the bad file was not logged"
    );
    assert_eq!(
        status(&b).await,
        403,
        "a removal is applied despite a bad line"
    );
    assert_eq!(status(&a).await, 403, "no entry of a bad file is added");

    // Fixed: a is allowed. Deleted: nobody from the file is.
    std::fs::write(&file, format!("{}\n", a.principal_address)).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || status(&a).await == 200).await,
        "the fixed file was not taken"
    );
    // A file of the same size and modification time renamed over it (as `cp -p` or an
    // unpacked image leave it) is taken too.
    let swap = dir.join("principals.txt.new");
    std::fs::write(&swap, format!("{}\n", b.principal_address)).unwrap();
    let old = std::fs::metadata(&file).unwrap();
    assert_eq!(std::fs::metadata(&swap).unwrap().len(), old.len());
    std::fs::File::options()
        .write(true)
        .open(&swap)
        .unwrap()
        .set_modified(old.modified().unwrap())
        .unwrap();
    std::fs::rename(&swap, &file).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || status(&b).await == 200).await,
        "a same-size, same-mtime replacement was not taken"
    );
    assert_eq!(status(&a).await, 403);
    std::fs::remove_file(&file).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || status(&b).await == 403).await,
        "a deleted file still allowed its principals"
    );
}

#[test]
fn invalid_allowlist_entries_stop_startup_with_their_key() {
    let good = passport(0x61, "a", None).principal_address;
    let mixed = format!("G{}", &good[1..]);
    let toml = config(
        "127.0.0.1:9".parse().unwrap(),
        &format!("\n[principals]\nallow = [\"{good}\", \"{mixed}\", \"cosmos1xyz\"]\nallow_file = \"missing.txt\"\n"),
    );
    let (code, stderr) = refused_config("allow-invalid", &toml);
    assert_eq!(code, Some(2), "{stderr}");
    for key in [
        "principals.allow[1]",
        "principals.allow[2]",
        "principals.allow_file",
    ] {
        assert!(stderr.contains(key), "{key} missing from {stderr}");
    }
    assert!(!stderr.contains("principals.allow[0]"), "{stderr}");
}

#[test]
fn every_configuration_problem_is_reported_in_one_run() {
    let toml = "[server]\nupstream = \"http://127.0.0.1:9\"\nlisten_adress = \"127.0.0.1:0\"\n\n[routes]\nguarded = [\"post /v1/chat/completions\"]\n\n[agent_envelope]\nenabled = true\nchain_id = \"gonka-mainnet\"\n\n[binding]\nrequester = \"gonka1operator\"\ngrants = []\n";
    let (code, stderr) = refused_config("three-errors", toml);
    assert_eq!(code, Some(2), "{stderr}");
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(problems.len(), 3, "{stderr}");
    assert!(problems[0].starts_with("server: unknown field `listen_adress`"));
    assert!(problems.iter().any(|p| p.starts_with("routes.guarded:")));
    assert!(problems.iter().any(|p| p.starts_with("binding.requester:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_json_line_per_request() {
    let up = upstream().await;
    let dir = workdir("access-log-file");
    let log = dir.join("access.jsonl");
    let toml = config(up.addr, "").replacen(
        "[server]\n",
        &format!("[server]\naccess_log = {:?}\n", log.display().to_string()),
        1,
    );
    let gw = start("access-log", &toml);
    let f = passport(0x61, "urn:aps:agent:log", None);
    let ok = post_as(gw.listen, &f).await;
    assert_eq!(ok.status(), 200);
    let bad = headers(&f, b"{}");
    let rejected = send(gw.listen, "POST", PATH, &pairs(&bad), BODY).await;
    assert_eq!(rejected.status(), 401);
    let refused = send(gw.listen, "POST", "/v1/a%2Fb?secret=1", &[], b"").await;
    assert_eq!(refused.status(), 400);
    let forwarded = send(gw.listen, "GET", "/v1/models?key=secret", &[], b"").await;
    assert_eq!(forwarded.status(), 200);

    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines.len() < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
    }
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let expect = [
        (
            "POST",
            PATH,
            200,
            "accepted",
            None,
            Some("urn:aps:agent:log"),
        ),
        (
            "POST",
            PATH,
            401,
            "rejected",
            Some("agent_sig_invalid"),
            None,
        ),
        (
            "POST",
            "/v1/a%2Fb",
            400,
            "refused",
            Some("path_ambiguous"),
            None,
        ),
        ("GET", "/v1/models", 200, "forwarded", None, None),
    ];
    for (line, (method, path, status, outcome, code, agent)) in lines.iter().zip(expect) {
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["path"], path, "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["outcome"], outcome, "{line}");
        assert_eq!(line["code"].as_str(), code, "{line}");
        assert_eq!(line["agent"].as_str(), agent, "{line}");
        assert!(line["latency_ms"].is_u64(), "{line}");
        assert!(line["time"].is_string(), "{line}");
    }
    assert!(!std::fs::read_to_string(&log).unwrap().contains("secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_controls_in_an_agent_id_are_escaped_in_the_access_log() {
    let up = upstream().await;
    let dir = workdir("access-log-bidi");
    let log = dir.join("access.jsonl");
    let toml = config(up.addr, "").replacen(
        "[server]\n",
        &format!("[server]\naccess_log = {:?}\n", log.display().to_string()),
        1,
    );
    let gw = start("access-log-bidi", &toml);
    let agent_id = "urn:aps:agent:\u{202e}gpj.exe\u{2066}\u{85}";
    let f = passport(0x61, agent_id, None);
    assert_eq!(post_as(gw.listen, &f).await.status(), 200);
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !text.contains('\n') && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    let line = text.lines().next().expect("one access log line");
    assert!(
        !line.contains(['\u{202e}', '\u{2066}', '\u{85}']),
        "raw bidi or C1 control in {line:?}"
    );
    assert!(
        line.contains(r"urn:aps:agent:\u202egpj.exe\u2066\u0085"),
        "{line:?}"
    );
    // Still JSON, with the same value.
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(value["agent"], agent_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_access_log_sink_drops_lines_instead_of_holding_requests() {
    let up = upstream().await;
    let toml = config(up.addr, "").replacen(
        "[server]\n",
        "[server]\naccess_log = \"stdout\"\naccess_log_buffer_lines = 4\n",
        1,
    );
    let dir = workdir("slow-sink-config");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, toml).unwrap();
    // Stdout is a pipe nobody reads: once its 64 KiB are full, the writer blocks.
    let gw = start_file("slow-sink", &file, &[], Stdio::piped());
    // Lines are bounded (paths cut to 1024 bytes), so it takes about 60 of them to
    // fill the pipe and the writer's buffer.
    let long = format!("/v1/{}", "a".repeat(8_000));
    let started = Instant::now();
    for _ in 0..150 {
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            send(gw.listen, "GET", &long, &[], b""),
        )
        .await
        .expect("a request waited for the access log");
        assert_eq!(resp.status(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    let dropped = gw.metric("passport_gate_access_log_dropped_total").await;
    assert!(dropped >= 50.0, "dropped {dropped}");
}

/// Anyone can send refused requests with paths up to `max_header_bytes`: each access
/// log line is bounded in bytes (the path cut to 1024 bytes, with `path_cut_bytes`),
/// and lines about refusals are written at most `access_log_refusals_per_second` a
/// second, the rest counted; lines about other requests are not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_are_bounded_and_refusal_lines_rate_limited() {
    let up = upstream().await;
    let dir = workdir("access-log-bounds");
    let log = dir.join("access.jsonl");
    let routes = "\n[routes]\nunguarded = \"refuse\"\npublic = [\"GET /v1/models\"]\n";
    let toml = config(up.addr, routes).replacen(
        "[server]\n",
        &format!(
            "[server]\naccess_log = {:?}\naccess_log_refusals_per_second = 10\n",
            log.display().to_string()
        ),
        1,
    );
    let gw = start("access-log-bounds", &toml);
    // Not a route (404 route_not_allowed), with a 60,000-byte path.
    let long = format!("/x/{}", "a".repeat(60_000));
    const REFUSED: usize = 200;
    let started = Instant::now();
    for _ in 0..REFUSED / 20 {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (addr, path) = (gw.listen, long.clone());
                tokio::spawn(async move { send(addr, "GET", &path, &[], b"").await.status() })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 404);
        }
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    // Past the second of the flood, one more refusal reports the last drops, and a
    // forwarded request is logged whatever the refusals did.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(send(gw.listen, "GET", &long, &[], b"").await.status(), 404);
    assert_eq!(
        send(gw.listen, "GET", "/v1/models", &[], b"")
            .await
            .status(),
        200
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let (lines, text) = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.iter().any(|l| l["outcome"] == "forwarded") || Instant::now() > deadline {
            break (lines, text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    eprintln!(
        "access log: longest line {longest} bytes for a {}-byte path",
        long.len()
    );
    assert!(longest <= 1_400, "a line of {longest} bytes");
    for l in lines.iter().filter(|l| l["outcome"] == "refused") {
        assert_eq!(l["code"], "route_not_allowed", "{l}");
        assert_eq!(l["path"].as_str().unwrap(), &long[..1024], "{l}");
        assert_eq!(l["path_cut_bytes"], long.len() - 1024, "{l}");
    }
    let refused = lines.iter().filter(|l| l["outcome"] == "refused").count();
    let dropped = gw
        .metric("passport_gate_access_log_refusals_dropped_total")
        .await as usize;
    assert_eq!(
        refused + dropped,
        REFUSED + 1,
        "{refused} written, {dropped} dropped"
    );
    assert!(
        (1..=10 * (seconds + 2)).contains(&refused),
        "{refused} refusal lines in about {seconds} s"
    );
    // Each refusal line written says how many were dropped since the one before it:
    // together, every dropped line (the last refusal came after the flood's last drop).
    let told: u64 = lines
        .iter()
        .filter_map(|l| l["refusals_dropped_before"].as_u64())
        .sum();
    assert_eq!(told as usize, dropped);
    let forwarded: Vec<_> = lines
        .iter()
        .filter(|l| l["outcome"] == "forwarded")
        .collect();
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert!(forwarded[0].get("path_cut_bytes").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_upstream_probe_from_a_cached_result() {
    let up = upstream().await;
    let extra =
        "\n[server.upstream_probe]\npath = \"/v1/models\"\ninterval_ms = 300\ntimeout_ms = 200\n";
    let toml =
        config(up.addr, "").replacen("[agent_envelope]", &format!("{extra}\n[agent_envelope]"), 1);
    let gw = start("probe", &toml);
    let ready = eventually(Duration::from_secs(5), async || {
        send(gw.admin, "GET", "/readyz", &[], b"").await.status() == 200
    })
    .await;
    assert!(ready, "never ready");
    let before = up.calls.load(std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let mut body = String::new();
    for _ in 0..30 {
        let resp = send(gw.admin, "GET", "/readyz", &[], b"").await;
        assert_eq!(resp.status(), 200);
        body = text(resp).await;
    }
    let probes = up.calls.load(std::sync::atomic::Ordering::SeqCst) - before;
    let most = started.elapsed().as_millis() as usize / 300 + 2;
    assert!(
        probes <= most,
        "{probes} upstream requests for 30 /readyz calls"
    );
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(
        body.contains("upstream: ok (GET /v1/models answered 200"),
        "{body}"
    );
    assert_eq!(gw.metric("passport_gate_upstream_up").await, 1.0);

    // An upstream that is not there: not ready, and the body says why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let gw = start(
        "probe-down",
        &config(gone, "").replacen("[agent_envelope]", &format!("{extra}\n[agent_envelope]"), 1),
    );
    let failing = eventually(Duration::from_secs(5), async || {
        let resp = send(gw.admin, "GET", "/readyz", &[], b"").await;
        resp.status() == 503 && text(resp).await.contains("upstream: failing")
    })
    .await;
    assert!(failing);
}

/// An upstream that answers every request with `status` and closes the connection.
async fn answering(status: u16) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 {status} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// The state `/readyz` settles in (within 3 s) with a probe of `upstream` and `server`
/// keys, and the gateway's lines.
async fn settled_readyz(
    name: &str,
    upstream: std::net::SocketAddr,
    server: &str,
) -> (u16, String, Vec<String>) {
    let extra = format!(
        "{server}\n[server.upstream_probe]\npath = \"/v1/models\"\ninterval_ms = 200\ntimeout_ms = 100\n"
    );
    let toml =
        config(upstream, "").replacen("[agent_envelope]", &format!("{extra}\n[agent_envelope]"), 1);
    let gw = start(name, &toml);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let resp = send(gw.admin, "GET", "/readyz", &[], b"").await;
    let status = resp.status().as_u16();
    let body = text(resp).await;
    (status, body, gw.drain_lines())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_probe_counts_answers_below_500_or_the_configured_statuses() {
    // A 404 on the probe path still proves the upstream answers.
    let not_found = answering(404).await;
    let (status, body, _) = settled_readyz("probe-404", not_found, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("upstream: ok (GET /v1/models answered 404"),
        "{body}"
    );
    // A 5xx does not; every failed probe is logged at WARN with its cause, rate-limited.
    let (status, body, lines) = settled_readyz("probe-500", answering(500).await, "").await;
    assert_eq!(status, 503, "{body}");
    let warned: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("readiness probe failed"))
        .collect();
    assert_eq!(warned.len(), 1, "{lines:#?}");
    assert!(warned[0].contains("answered 500"), "{}", warned[0]);
    // Configured statuses replace the default.
    let (status, body, lines) =
        settled_readyz("probe-only-200", not_found, "readiness_ok_statuses = [200]").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("answered 404")),
        "{lines:#?}"
    );
    let (code, stderr) = refused_config(
        "probe-bad-status",
        &config(not_found, "").replacen(
            "[agent_envelope]",
            "readiness_ok_statuses = [2000]\n[server.upstream_probe]\n[agent_envelope]",
            1,
        ),
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("server.readiness_ok_statuses"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_as_shipped_serves_the_echo_upstream() {
    let echo = echo();
    let upstream = format!("http://{}", echo.addr);
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../passport-gate.example.toml");
    let gw = start_file(
        "example",
        &example,
        &[
            ("PASSPORT_GATE_LISTEN", "127.0.0.1:0"),
            ("PASSPORT_GATE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("PASSPORT_GATE_UPSTREAM", &upstream),
        ],
        Stdio::null(),
    );
    let f = support::live("urn:aps:agent:example");
    // Accepted.
    let resp = post_as(gw.listen, &f).await;
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: hi");
    // Refused.
    let resp = send(
        gw.listen,
        "POST",
        PATH,
        &pairs(&headers(&f, b"{\"model\":\"x\"}")),
        BODY,
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert!(text(resp).await.contains("agent_sig_invalid"));
    // Streamed.
    let streamed = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"one two three"}],"stream":true}"#;
    let resp = send(
        gw.listen,
        "POST",
        PATH,
        &pairs(&headers(&f, streamed)),
        streamed,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = text(resp).await;
    assert!(events.matches("data: {").count() >= 3, "{events}");
    assert!(events.ends_with("data: [DONE]\n\n"), "{events}");
    // The shipped probe finds the echo upstream healthy.
    let ready = eventually(Duration::from_secs(10), async || {
        send(gw.admin, "GET", "/readyz", &[], b"").await.status() == 200
    })
    .await;
    assert!(ready);
}

/// The TOML block under the operator guide's "Devshard sidecar" heading (docs/operators.md).
fn readme_devshard_config() -> String {
    let readme = include_str!("../../../../docs/operators.md");
    let section = readme
        .split("## Devshard sidecar")
        .nth(1)
        .expect("docs/operators.md has a Devshard sidecar section");
    section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the section has a toml block")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_devshard_sidecar_config_parses_and_runs() {
    let echo = echo();
    let upstream = format!("http://{}", echo.addr);
    let dir = workdir("devshard-config");
    let file = dir.join("devshard.toml");
    std::fs::write(&file, readme_devshard_config()).unwrap();
    let gw = start_file(
        "devshard",
        &file,
        &[
            ("PASSPORT_GATE_LISTEN", "127.0.0.1:0"),
            ("PASSPORT_GATE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("PASSPORT_GATE_UPSTREAM", &upstream),
        ],
        Stdio::null(),
    );
    // The README's operator is the fixture principal: its own agents are served...
    let operator = passport(0x61, "urn:aps:agent:sidecar", None);
    let resp = post_as(gw.listen, &operator).await;
    assert_eq!(resp.status(), 200, "{}", text(resp).await);
    // ...and a principal off the allowlist is not.
    let other = passport(0x63, "urn:aps:agent:other", None);
    let resp = post_as(gw.listen, &other).await;
    assert_eq!(resp.status(), 403);
    assert!(text(resp).await.contains("principal_not_allowed"));
}

#[test]
fn files_that_cannot_be_opened_at_startup_are_reported_together() {
    let dir = workdir("unopenable-files");
    let revoked = dir.join("revoked.txt");
    std::fs::write(&revoked, "agent_id ok\nnonsense\n").unwrap();
    let toml = config("127.0.0.1:9".parse().unwrap(), "").replacen(
        "[server]\n",
        "[server]\naccess_log = \"no-such-dir/access.jsonl\"\n",
        1,
    ) + &format!(
        "\n[attribution]\naudit_file = \"no-such-dir/audit.jsonl\"\n\n[revocation]\nfile = {:?}\n",
        revoked.display().to_string()
    );
    let (code, stderr) = refused_config("unopenable", &toml);
    assert_eq!(code, Some(1), "{stderr}");
    for key in [
        "attribution.audit_file: cannot open",
        "revocation.file:",
        "server.access_log: cannot open",
    ] {
        assert!(stderr.contains(key), "{key} missing from {stderr}");
    }
}

/// The runtime's worker threads of a running gateway, by their name in `/proc`
/// (`tokio-rt-worker`, tokio's name for them).
fn runtime_workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == "tokio-rt-worker")
        .count()
}

/// `server.worker_threads` sets how many threads run requests (0: one per core), and
/// the gateway still serves with one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_sets_the_number_of_request_threads() {
    let up = upstream().await;
    for workers in [1usize, 3] {
        let toml = config(up.addr, "").replacen(
            "[server]\n",
            &format!("[server]\nworker_threads = {workers}\n"),
            1,
        );
        let gw = start(&format!("workers-{workers}"), &toml);
        let f = passport(1, "urn:aps:agent:workers", None);
        let resp = post_as(gw.listen, &f).await;
        assert_eq!(resp.status(), 200, "{}", text(resp).await);
        assert_eq!(runtime_workers(gw.child.id()), workers);
    }
}
