//! The whole verifier: arbitrary passport and signature header text, body, URI and
//! method. Never a panic; and the verdict does not depend on the envelope cache: the
//! same input judged twice (the second time possibly from the cache) gets the same
//! verdict. (The seed corpus holds the conformance vectors' requests, some of them
//! valid, so acceptance itself is expected for those.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use passport_gate::time::{FixedClock, Timestamp};
use passport_gate::verifier::PassportHeaders;
use passport_gate::{Config, Verifier};
use std::sync::{Arc, OnceLock};

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        Verifier::with_clock(
            &Config::for_chain("gonka-mainnet"),
            Arc::new(FixedClock::new(Timestamp::from_unix_seconds(1_779_364_800))),
        )
        .expect("valid configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    // Fields separated by 0xff bytes: passport text, signature text, body, URI, method.
    let mut parts = data.split(|b| *b == 0xff);
    let mut next = || parts.next().unwrap_or_default();
    let passport = String::from_utf8_lossy(next()).into_owned();
    let signature = String::from_utf8_lossy(next()).into_owned();
    let body = next().to_vec();
    let uri = String::from_utf8_lossy(next()).into_owned();
    let method = String::from_utf8_lossy(next()).into_owned();
    let judge = || {
        PassportHeaders::decode(&passport, &signature)
            .and_then(|h| verifier().verify_request(&h, &method, &uri, &body))
            .map(|agent| {
                (
                    agent.agent_id().to_owned(),
                    agent.envelope_sha256(),
                    agent.body_sha256(),
                )
            })
    };
    let first = judge();
    let second = judge();
    assert_eq!(first, second, "a cached verdict differs from a fresh one");
});
