//! The native signature's rules, one test each.

use super::*;
use crate::crypto::{decode_base64, encode_base64, PrincipalKey, PrincipalSecret};
use http::{HeaderMap, HeaderValue};
use k256::ecdsa::signature::DigestSigner;
use k256::ecdsa::{Signature, SigningKey};
use k256::elliptic_curve::scalar::IsHigh;
use sha2::{Digest, Sha256};

const NODE: &str = "gonka1node";

fn secret(hex_scalar: &str) -> PrincipalSecret {
    let bytes: [u8; 32] = hex::decode(hex_scalar).unwrap().try_into().unwrap();
    PrincipalSecret::from_bytes(&bytes).unwrap()
}

fn one() -> PrincipalSecret {
    secret("0000000000000000000000000000000000000000000000000000000000000001")
}

fn signer() -> NativeSigner {
    NativeSigner::new(&one(), "gonka").unwrap()
}

fn verify(key: &PrincipalKey, h: &NativeHeaders, body: &[u8]) -> Result<(), NativeSigError> {
    verify_native(key, h, body, "gonka", NODE)
}

/// `(address, Authorization)` for one public fixture.
fn signed(scalar: &str, body: &[u8], ts: i64, transfer: &str) -> (String, String) {
    let h = NativeSigner::new(&secret(scalar), "gonka")
        .unwrap()
        .sign(body, ts, transfer);
    (h.requester_address, h.authorization)
}

#[test]
fn public_fixture_hello_is_reproduced_byte_for_byte() {
    assert_eq!(
        signed(
            "0000000000000000000000000000000000000000000000000000000000000001",
            b"hello",
            1_000_000_000,
            "gonka1test"
        ),
        (
            "gonka1w508d6qejxtdg4y5r3zarvary0c5xw7k2gsyg6".into(),
            "/x6JuvqXWpT9YNgjYt0eNLxK8nDjccY/VyJrDn4bGjNbWWu3Px9doIlUQUOOf2Eu7SqyZ4oyGlDoY+4XpGA2JQ==".into()
        )
    );
}

#[test]
fn public_fixture_at_timestamp_zero_signs_the_zero() {
    assert_eq!(
        native_signed_input(b"", 0, ""),
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8550"
    );
    assert_eq!(
        signed(
            "0000000000000000000000000000000000000000000000000000000000000001",
            b"",
            0,
            ""
        ),
        (
            "gonka1w508d6qejxtdg4y5r3zarvary0c5xw7k2gsyg6".into(),
            "NyKMAuRc/FRjptcjm94Q3Fqeevcl2fJUeb0Dxwh1HZpH7sgFk7ajJdBPt8FVa1mxG5OY623oKNb6xkGerdqIiw==".into()
        )
    );
}

#[test]
fn public_fixture_with_the_largest_scalar_is_reproduced_byte_for_byte() {
    assert_eq!(
        signed(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140",
            b"hello",
            1_000_000_000,
            "gonka1test"
        ),
        (
            "gonka14h0ycu78h88wzldxc7e79vhw5xsde0n85evmum".into(),
            "jtbBiX1nUgLiIH7FjLxy7Nn1Ckp3jq+8t6iLNjCKliJPXKOGHoo997xqbo3R9FNsTK8TmCyQW3PPvRJQFKhRXg==".into()
        )
    );
}

#[test]
fn every_native_fixture_in_the_sdk_fixtures_file_is_reproduced() {
    const PATH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../conformance/sdk-fixtures.json"
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let cases = file["gonka_native"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for c in cases {
        let s = |k: &str| c[k].as_str().unwrap();
        let name = s("name");
        let secret = secret(s("secret_hex"));
        let body = decode_base64(s("body_base64")).unwrap();
        let ts: i64 = s("timestamp_ns").parse().unwrap();
        let transfer = s("transfer_address");
        assert_eq!(
            native_signed_input(&body, ts, transfer),
            s("signed_input").as_bytes(),
            "{name}"
        );
        let h = NativeSigner::new(&secret, s("prefix"))
            .unwrap()
            .sign(&body, ts, transfer);
        assert_eq!(h.requester_address, s("address"), "{name}");
        assert_eq!(h.authorization, s("authorization"), "{name}");
        // Without the header, the verifier signs with the node's address: here, the same "".
        let verdict = verify_native(&secret.public_key(), &h, &body, s("prefix"), transfer);
        if ts > 0 {
            assert_eq!(verdict, Ok(()), "{name}");
        } else {
            assert_eq!(verdict, Err(NativeSigError::TimestampNotPositive), "{name}");
        }
    }
}

#[test]
fn headers_are_listed_in_order_and_transfer_only_when_not_empty() {
    let h = signer().sign(b"x", 5, "gonka1test");
    let names: Vec<_> = h.pairs().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "Authorization",
            "X-Requester-Address",
            "X-Timestamp",
            "X-Transfer-Address"
        ]
    );
    assert_eq!(h.pairs()[2].1, "5");
    let h = signer().sign(b"x", 5, "");
    assert_eq!(h.transfer_address, None);
    assert_eq!(h.pairs().len(), 3);
}

#[test]
fn a_signature_verifies_after_a_round_trip_through_http_headers() {
    let h = signer().sign_now(b"{\"model\":\"m\"}", "gonka1test");
    let mut map = HeaderMap::new();
    for (name, value) in h.pairs() {
        map.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    let parsed = NativeHeaders::from_headers(&map).unwrap();
    assert_eq!(parsed, h);
    assert_eq!(
        verify(&one().public_key(), &parsed, b"{\"model\":\"m\"}"),
        Ok(())
    );
}

#[test]
fn without_a_transfer_header_the_node_address_is_signed() {
    let h = signer().sign(b"x", 7, NODE);
    let mut without = h.clone();
    without.transfer_address = None;
    assert_eq!(verify(&one().public_key(), &without, b"x"), Ok(()));
    assert_eq!(
        verify_native(&one().public_key(), &without, b"x", "gonka", "gonka1other"),
        Err(NativeSigError::SignatureInvalid)
    );
}

#[test]
fn a_tampered_body_timestamp_or_transfer_address_fails() {
    let key = one().public_key();
    let h = signer().sign(b"body", 1_700_000_000_000_000_000, "gonka1test");
    assert_eq!(verify(&key, &h, b"body"), Ok(()));
    assert_eq!(
        verify(&key, &h, b"bodY"),
        Err(NativeSigError::SignatureInvalid)
    );
    let mut t = h.clone();
    t.timestamp += 1;
    assert_eq!(
        verify(&key, &t, b"body"),
        Err(NativeSigError::SignatureInvalid)
    );
    let mut t = h.clone();
    t.transfer_address = Some("gonka1tesu".into());
    assert_eq!(
        verify(&key, &t, b"body"),
        Err(NativeSigError::SignatureInvalid)
    );
}

#[test]
fn another_key_or_a_foreign_address_is_refused() {
    let h = signer().sign(b"x", 9, "gonka1test");
    let other = PrincipalSecret::from_bytes(&[7u8; 32])
        .unwrap()
        .public_key();
    assert_eq!(
        verify(&other, &h, b"x"),
        Err(NativeSigError::AddressMismatch)
    );
    let mut t = h.clone();
    t.requester_address = one().public_key().address("cosmos").unwrap();
    assert_eq!(
        verify(&one().public_key(), &t, b"x"),
        Err(NativeSigError::AddressMismatch)
    );
    assert!(matches!(
        verify_native(&one().public_key(), &h, b"x", "Gonka", NODE),
        Err(NativeSigError::PrefixInvalid(_))
    ));
}

#[test]
fn the_high_s_twin_of_a_valid_signature_is_refused() {
    let h = signer().sign(b"x", 11, "gonka1test");
    let low = Signature::from_slice(&decode_base64(&h.authorization).unwrap()).unwrap();
    let high = Signature::from_scalars(low.r().to_bytes(), (-*low.s()).to_bytes()).unwrap();
    assert!(bool::from(high.s().is_high()));
    let mut t = h.clone();
    t.authorization = encode_base64(&high.to_bytes());
    assert_eq!(
        verify(&one().public_key(), &t, b"x"),
        Err(NativeSigError::SignatureHighS)
    );
}

#[test]
fn an_authorization_of_63_or_65_bytes_or_not_base64_is_refused() {
    let key = one().public_key();
    let h = signer().sign(b"x", 13, "gonka1test");
    let sig = decode_base64(&h.authorization).unwrap();
    let with = |auth: String| NativeHeaders {
        authorization: auth,
        ..h.clone()
    };
    assert_eq!(
        verify(&key, &with(encode_base64(&sig[..63])), b"x"),
        Err(NativeSigError::SignatureWrongLength { len: 63 })
    );
    let mut long = sig.clone();
    long.push(0);
    assert_eq!(
        verify(&key, &with(encode_base64(&long)), b"x"),
        Err(NativeSigError::SignatureWrongLength { len: 65 })
    );
    for bad in [
        format!("Bearer {}", h.authorization),
        h.authorization.trim_end_matches('=').to_owned(),
        h.authorization.replace('+', "-").replace('/', "_"),
    ] {
        if bad != h.authorization {
            assert_eq!(
                verify(&key, &with(bad), b"x"),
                Err(NativeSigError::SignatureMalformed)
            );
        }
    }
    assert_eq!(
        verify(&key, &with(encode_base64(&[0u8; 64])), b"x"),
        Err(NativeSigError::SignatureOutOfRange)
    );
}

#[test]
fn a_signature_whose_r_or_s_starts_with_a_zero_byte_is_still_64_bytes_and_verifies() {
    let signer = signer();
    let key = one().public_key();
    let found = (1..=4000i64).find_map(|ts| {
        let h = signer.sign(b"hello", ts, "gonka1test");
        let sig = decode_base64(&h.authorization).unwrap();
        (sig[0] == 0 || sig[32] == 0).then_some((h, sig))
    });
    let (h, sig) = found.expect("about one signature in 128 has a leading zero byte");
    assert_eq!(sig.len(), 64);
    assert_eq!(verify(&key, &h, b"hello"), Ok(()));
}

#[test]
fn signing_a_pre_hash_double_hashes_and_does_not_verify() {
    let input = native_signed_input(b"x", 15, "gonka1test");
    let key = SigningKey::from_bytes(&one().to_bytes().into()).unwrap();
    let sig: Signature = key.sign_digest(Sha256::new_with_prefix(Sha256::digest(&input)));
    let sig = sig.normalize_s().unwrap_or(sig);
    let mut h = signer().sign(b"x", 15, "gonka1test");
    assert_eq!(verify(&one().public_key(), &h, b"x"), Ok(()));
    h.authorization = encode_base64(&sig.to_bytes());
    assert_eq!(
        verify(&one().public_key(), &h, b"x"),
        Err(NativeSigError::SignatureInvalid)
    );
}

#[test]
fn a_timestamp_at_or_before_the_epoch_is_refused_by_the_verifier() {
    for ts in [0, -1] {
        let h = signer().sign(b"x", ts, "gonka1test");
        assert_eq!(
            verify(&one().public_key(), &h, b"x"),
            Err(NativeSigError::TimestampNotPositive)
        );
    }
}

#[test]
fn the_monotonic_clock_never_repeats_across_threads() {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                (0..2500)
                    .map(|_| monotonic_timestamp_ns())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        let values = t.join().unwrap();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "goes backwards");
        all.extend(values);
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "a timestamp repeated");
    assert!(
        all[0] > 1_700_000_000_000_000_000,
        "not nanoseconds since the epoch"
    );
}

#[test]
fn the_window_includes_exactly_ten_seconds_each_way_and_no_more() {
    let now = 1_765_140_000_000_000_000;
    let check = |ts| check_native_window(ts, now, DEFAULT_MAX_AGE_NS, DEFAULT_MAX_ADVANCE_NS);
    assert_eq!(DEFAULT_MAX_AGE_NS, 10_000_000_000);
    assert_eq!(DEFAULT_MAX_ADVANCE_NS, 10_000_000_000);
    assert_eq!(check(now), Ok(()));
    assert_eq!(check(now - 10_000_000_000), Ok(()));
    assert_eq!(check(now + 10_000_000_000), Ok(()));
    assert_eq!(
        check(now - 10_000_000_001),
        Err(NativeSigError::TimestampTooOld)
    );
    assert_eq!(
        check(now + 10_000_000_001),
        Err(NativeSigError::TimestampTooFarAhead)
    );
    assert_eq!(
        check_native_window(i64::MIN, i64::MAX, i64::MAX, i64::MAX),
        Err(NativeSigError::TimestampTooOld)
    );
}

#[test]
fn headers_that_are_missing_repeated_or_not_ascii_are_told_apart() {
    let h = signer().sign(b"x", 17, "gonka1test");
    let full = || {
        let mut map = HeaderMap::new();
        for (name, value) in h.pairs() {
            map.insert(name, HeaderValue::from_str(&value).unwrap());
        }
        map
    };
    for name in [AUTHORIZATION, X_REQUESTER_ADDRESS, X_TIMESTAMP] {
        let mut map = full();
        map.remove(name);
        assert_eq!(
            NativeHeaders::from_headers(&map),
            Err(NativeSigError::HeaderMissing { name })
        );
        let mut map = full();
        map.append(name, HeaderValue::from_static("again"));
        assert_eq!(
            NativeHeaders::from_headers(&map),
            Err(NativeSigError::HeaderRepeated { name })
        );
        let mut map = full();
        map.insert(name, HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert_eq!(
            NativeHeaders::from_headers(&map),
            Err(NativeSigError::HeaderNotAscii { name })
        );
    }
    let mut map = full();
    map.remove(X_TRANSFER_ADDRESS);
    assert_eq!(
        NativeHeaders::from_headers(&map).unwrap().transfer_address,
        None
    );
    map.insert(X_TRANSFER_ADDRESS, HeaderValue::from_static(""));
    assert_eq!(
        NativeHeaders::from_headers(&map).unwrap().transfer_address,
        None
    );
}

#[test]
fn only_the_canonical_decimal_timestamp_is_read() {
    assert_eq!(
        parse_timestamp("1765140000123456789"),
        Ok(1_765_140_000_123_456_789)
    );
    assert_eq!(parse_timestamp("0"), Ok(0));
    for bad in [
        "",
        "+1",
        "01",
        "-0",
        " 1",
        "1 ",
        "1e9",
        "1.0",
        "9223372036854775808",
        "0x10",
    ] {
        assert_eq!(
            parse_timestamp(bad),
            Err(NativeSigError::TimestampMalformed),
            "{bad:?}"
        );
    }
}

#[test]
fn error_codes_are_unique_snake_case_and_messages_one_line() {
    let all = [
        NativeSigError::HeaderMissing { name: X_TIMESTAMP },
        NativeSigError::HeaderRepeated { name: X_TIMESTAMP },
        NativeSigError::HeaderNotAscii { name: X_TIMESTAMP },
        NativeSigError::SignatureMalformed,
        NativeSigError::SignatureWrongLength { len: 63 },
        NativeSigError::SignatureOutOfRange,
        NativeSigError::SignatureHighS,
        NativeSigError::SignatureInvalid,
        NativeSigError::TimestampMalformed,
        NativeSigError::TimestampNotPositive,
        NativeSigError::TimestampTooOld,
        NativeSigError::TimestampTooFarAhead,
        NativeSigError::AddressMismatch,
        NativeSigError::PrefixInvalid(crate::crypto::AddressError::PrefixCharacters {
            prefix: "X".into(),
        }),
    ];
    let mut codes: Vec<_> = all.iter().map(NativeSigError::code).collect();
    for (e, code) in all.iter().zip(&codes) {
        assert!(code.starts_with("requester_"));
        assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        assert!(!e.message().contains('\n'));
        assert_eq!(e.to_string(), e.message());
    }
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
}
