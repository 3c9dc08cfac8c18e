//! No input panics the verifier, and no single flipped byte of a valid request is
//! accepted.

use passport_core::time::{FixedClock, Timestamp};
use passport_core::verifier::{requested_model, PassportHeaders, PassportRequest};
use passport_core::{Config, Verifier};
use proptest::prelude::*;
use std::sync::Arc;

use crate::support;

const NOW: &str = "2026-05-21T12:00:00Z";
const BODY: &[u8] = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"hi"}]}"#;
const URI: &str = "/v1/chat/completions?x=1";

fn verifier() -> Verifier {
    Verifier::with_clock(
        &Config::for_chain("gonka-mainnet"),
        Arc::new(FixedClock::new(Timestamp::parse(NOW).unwrap())),
    )
    .unwrap()
}

/// A valid (passport, signature) pair for BODY, as raw bytes.
fn valid() -> (Vec<u8>, Vec<u8>) {
    let f = support::fixture(
        "urn:aps:agent:prop",
        Some(vec!["qwen/qwen3-32b".into()]),
        Some("prop"),
    );
    let h = PassportHeaders::decode(&f.passport, &f.sign(URI, BODY)).unwrap();
    (h.passport, h.signature)
}

#[test]
fn the_unmodified_request_is_accepted() {
    let (passport, sig) = valid();
    let h = PassportHeaders {
        passport,
        signature: sig,
    };
    assert!(verifier().verify_request(&h, "POST", URI, BODY).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_rejected_without_panic(
        passport in proptest::collection::vec(any::<u8>(), 0..600),
        sig in proptest::array::uniform32(any::<u8>()),
        sig2 in proptest::array::uniform32(any::<u8>()),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        uri in ".{0,40}",
        method in "[A-Z]{0,8}",
    ) {
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&sig);
        signature[32..].copy_from_slice(&sig2);
        let v = verifier();
        let _ = requested_model(&body);
        let r = v.verify(&PassportRequest {
            passport: &passport, signature: &signature, method: &method, uri: &uri, body: &body, model: "m",
        });
        prop_assert!(r.is_err());
        let h = PassportHeaders { passport: passport.clone(), signature: signature.to_vec() };
        prop_assert!(v.verify_request(&h, &method, &uri, &body).is_err());
    }

    #[test]
    fn arbitrary_header_text_is_rejected_without_panic(p in ".{0,200}", s in ".{0,100}") {
        let r = PassportHeaders::decode(&p, &s)
            .and_then(|h| verifier().verify_request(&h, "POST", "/", BODY));
        prop_assert!(r.is_err());
    }

    #[test]
    fn a_single_flipped_byte_anywhere_is_rejected(
        part in 0usize..5,
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (mut passport, mut sig) = valid();
        let mut body = BODY.to_vec();
        let mut uri = URI.as_bytes().to_vec();
        let mut method = b"POST".to_vec();
        let target: &mut [u8] = match part {
            0 => &mut passport,
            1 => &mut sig,
            2 => &mut body,
            3 => &mut uri,
            _ => &mut method,
        };
        let i = index.index(target.len());
        target[i] ^= 1 << bit;
        let uri = String::from_utf8_lossy(&uri).into_owned();
        let method = String::from_utf8_lossy(&method).into_owned();
        let h = PassportHeaders { passport, signature: sig };
        prop_assert!(verifier().verify_request(&h, &method, &uri, &body).is_err());
    }
}
