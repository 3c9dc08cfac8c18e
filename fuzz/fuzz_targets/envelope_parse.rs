//! The strict envelope parser and its canonical forms: any bytes, never a panic; and
//! whatever parses canonicalizes to valid JSON that parses again to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passport_gate::envelope::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Envelope::parse(data) {
        let again = Envelope::parse(e.jcs()).expect("the JCS form of a parsed envelope parses");
        assert_eq!(again.jcs(), e.jcs(), "JCS is idempotent");
        assert_eq!(again.signing_document(), e.signing_document());
    }
});
