//! RFC 8785 canonicalization, checked against the cyberphone/json-canonicalization test
//! data (tests/data/jcs). The canonical form is what both signatures cover, so a wrong
//! byte here breaks interoperability with every other implementation.

use std::path::PathBuf;

fn case(name: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jcs");
    (
        std::fs::read(dir.join(format!("{name}.input.json"))).unwrap(),
        std::fs::read(dir.join(format!("{name}.output.json"))).unwrap(),
    )
}

fn canonicalize(input: &[u8]) -> Vec<u8> {
    let value: serde_json::Value = serde_json::from_slice(input).unwrap();
    serde_jcs::to_vec(&value).unwrap()
}

fn check(name: &str) {
    let (input, output) = case(name);
    assert_eq!(
        String::from_utf8(canonicalize(&input)).unwrap(),
        String::from_utf8(output).unwrap(),
        "case {name}"
    );
}

#[test]
fn arrays() {
    check("arrays");
}

#[test]
fn french() {
    check("french");
}

#[test]
fn structures() {
    check("structures");
}

#[test]
fn unicode() {
    check("unicode");
}

#[test]
fn values() {
    check("values");
}

#[test]
fn weird_sorts_members_by_utf16_code_units() {
    check("weird");
}
