//! The conformance vector reader: any bytes, never a panic; a vector that parses is run
//! against the production layer (errors and failures are fine, panics are not).
#![no_main]

use libfuzzer_sys::fuzz_target;
use passport_conformance::{run_vector, Vector};

fuzz_target!(|data: &[u8]| {
    if let Ok(vector) = serde_json::from_slice::<Vector>(data) {
        if vector.steps.len() > 8 {
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let _ = rt.block_on(run_vector(&vector));
    }
});
