//! The strict envelope parser and its canonical forms (see `harness.rs`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::envelope_parse(data);
});
