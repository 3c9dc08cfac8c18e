//! What one entry of each in-process store costs in heap bytes, measured with a
//! counting allocator over many inserts (the bytes still allocated after the inserts,
//! divided by their number): a verified passport in the envelope cache, and a record
//! in the in-process replay store. Run with `--nocapture` to see the figures.

use crate::support;

use passport_core::time::{FixedClock, Timestamp};
use passport_core::verifier::{PassportHeaders, PassportRequest};
use passport_gate::replay::{MemoryReplayStore, ReplayRecord, ReplayStore};
use passport_gate::{Config, Verifier};
use std::sync::Arc;

const URI: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"m","messages":[]}"#;
const PASSPORTS: usize = 200;
const RECORDS: usize = 20_000;

#[test]
fn a_cached_passport_costs_less_than_twice_what_the_byte_budget_charges() {
    let verifier = Verifier::with_clock(
        &Config::for_chain("gonka-mainnet"),
        Arc::new(FixedClock::new(
            Timestamp::parse("2026-05-21T12:00:00Z").unwrap(),
        )),
    )
    .unwrap();
    let requests: Vec<PassportHeaders> = (0..PASSPORTS)
        .map(|i| {
            let f = support::fixture(&format!("urn:aps:agent:memory-{i:04}"), None, None);
            PassportHeaders::decode(&f.passport, &f.sign(URI, BODY)).unwrap()
        })
        .collect();
    let verify = |h: &PassportHeaders| {
        verifier
            .verify(&PassportRequest {
                passport: &h.passport,
                signature: &h.signature,
                method: "POST",
                uri: URI,
                body: BODY,
                model: "m",
            })
            .unwrap()
    };
    // The first insert builds the cache's own structures; it does not count.
    // What the byte budget counts (`VerifiedEnvelope::heap_bytes`).
    let charged = verify(&requests[0]).envelope().heap_bytes()
        + std::mem::size_of::<passport_core::verifier::VerifiedEnvelope>();
    let info = allocation_counter::measure(|| {
        for h in &requests[1..] {
            drop(verify(h));
        }
    });
    assert_eq!(verifier.cache().len(), PASSPORTS as u64);
    let per_passport = info.bytes_current as usize / (PASSPORTS - 1);
    println!(
        "envelope cache: {per_passport} bytes per cached passport (the cache charges {charged})"
    );
    assert!(
        per_passport < 2 * charged,
        "a cached passport holds {per_passport} bytes; the byte budget counts {charged}"
    );
}

#[test]
fn a_replay_record_costs_a_few_hundred_bytes() {
    let store = MemoryReplayStore::new(10 * RECORDS, 10 * RECORDS as u64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let now = Timestamp::parse("2026-05-21T12:00:00Z").unwrap();
    let principal = "gonka1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq";
    let record = |i: usize| {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_be_bytes());
        key
    };
    let insert = |range: std::ops::Range<usize>| {
        rt.block_on(async {
            for i in range {
                let key = record(i);
                store
                    .check_and_record(ReplayRecord {
                        key: &key,
                        principal,
                        now,
                        until: now.plus_seconds(3600),
                    })
                    .await
                    .unwrap();
            }
        })
    };
    insert(0..1);
    let info = allocation_counter::measure(|| insert(1..RECORDS));
    let per_record = info.bytes_current as usize / (RECORDS - 1);
    println!("replay store: {per_record} bytes per live record (amortized over {RECORDS}, table growth included)");
    assert!(per_record < 512, "a replay record holds {per_record} bytes");
}
