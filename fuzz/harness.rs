//! The properties the fuzz targets check, shared with `tests/fuzz_corpus.rs`, which
//! replays the committed corpora under `cargo test`.
#![allow(dead_code)]

use passport_core::envelope::Envelope;
use passport_core::verifier::PassportHeaders;
use passport_core::Verifier;

/// Whatever parses re-parses from its canonical form to the same canonical forms.
pub fn envelope_parse(data: &[u8]) -> bool {
    match Envelope::parse(data) {
        Ok(e) => {
            let again = Envelope::parse(e.jcs()).expect("the JCS form of a parsed envelope parses");
            assert_eq!(again.jcs(), e.jcs(), "JCS is idempotent");
            assert_eq!(again.signing_document(), e.signing_document());
            true
        }
        Err(_) => false,
    }
}

/// Input: passport text, signature text, body, URI and method separated by 0xff bytes.
/// Never a panic, and a verdict from the envelope cache equals a fresh one.
pub fn verifier(verifier: &Verifier, data: &[u8]) {
    let mut parts = data.split(|b| *b == 0xff);
    let mut next = || parts.next().unwrap_or_default();
    let passport = String::from_utf8_lossy(next()).into_owned();
    let signature = String::from_utf8_lossy(next()).into_owned();
    let body = next().to_vec();
    let uri = String::from_utf8_lossy(next()).into_owned();
    let method = String::from_utf8_lossy(next()).into_owned();
    let judge = || {
        PassportHeaders::decode(&passport, &signature)
            .and_then(|h| verifier.verify_request(&h, &method, &uri, &body))
            .map(|a| {
                (
                    a.agent_id().to_owned(),
                    a.envelope_sha256(),
                    a.body_sha256(),
                )
            })
    };
    let first = judge();
    let second = judge();
    assert_eq!(first, second, "a cached verdict differs from a fresh one");
}
