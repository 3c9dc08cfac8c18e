//! The whole verifier: arbitrary passport and signature header text, body, URI and
//! method (see `harness.rs`). The seed corpus holds the conformance vectors' requests,
//! some of them valid, so acceptance itself is expected for those.
#![no_main]

use passport_core::time::{FixedClock, Timestamp};
use passport_core::{Config, Verifier};
use std::sync::{Arc, OnceLock};

#[path = "../harness.rs"]
mod harness;

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        Verifier::with_clock(
            // Unbounded cold verifications: every input reaches the parser, never the shed.
            &Config {
                cold_verifications_per_second: 0,
                ..Config::for_chain("gonka-mainnet")
            },
            Arc::new(FixedClock::new(Timestamp::from_unix_seconds(1_779_364_800))),
        )
        .expect("valid configuration")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::verifier(verifier(), data);
});
