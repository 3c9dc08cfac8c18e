//! Steps 1 and 2 of verification: the two headers and the request body, before the
//! envelope is looked at.

use super::Rejection;
use crate::crypto::decode_base64;
use http::{HeaderMap, HeaderValue, Uri};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// The passport header name.
pub const PASSPORT_HEADER: &str = "x-agent-passport";
/// The agent signature header name.
pub const SIGNATURE_HEADER: &str = "x-agent-sig";

/// The two passport headers, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassportHeaders {
    /// The envelope JSON bytes, exactly as decoded from `X-Agent-Passport`.
    pub passport: Vec<u8>,
    /// The bytes decoded from `X-Agent-Sig`. Their length is not checked here: as in the
    /// reference, anything but 64 bytes fails at the agent signature step, after every
    /// envelope check and the principal signature.
    pub signature: Vec<u8>,
}

impl PassportHeaders {
    /// Decodes the two header values.
    ///
    /// Rejects (`header_malformed`) anything but strict standard base64.
    pub fn decode(passport_b64: &str, signature_b64: &str) -> Result<PassportHeaders, Rejection> {
        let passport = decode_base64(passport_b64).ok_or(Rejection::HeaderMalformed)?;
        let signature = decode_base64(signature_b64).ok_or(Rejection::HeaderMalformed)?;
        Ok(PassportHeaders {
            passport,
            signature,
        })
    }

    /// Finds and decodes the passport headers. `Ok(None)`: neither header was sent (a
    /// header sent once with an empty value counts as not sent, as in the reference), and
    /// the request is not ours to judge.
    ///
    /// Rejects: exactly one of the two headers (`sig_header_mismatch`); either header
    /// more than once (`header_malformed`: the reference takes the first and a proxy in
    /// front of it may take the last, so a repeat could make two components judge two
    /// different passports); a value that is not visible ASCII.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<PassportHeaders>, Rejection> {
        let (passport, signature) = match (
            presence(headers, PASSPORT_HEADER),
            presence(headers, SIGNATURE_HEADER),
        ) {
            (Presence::Repeated, _) | (_, Presence::Repeated) => {
                return Err(Rejection::HeaderMalformed)
            }
            (Presence::Absent, Presence::Absent) => return Ok(None),
            (Presence::Once(p), Presence::Once(s)) => (p, s),
            _ => return Err(Rejection::SigHeaderMismatch),
        };
        let passport = passport.to_str().map_err(|_| Rejection::HeaderMalformed)?;
        let signature = signature.to_str().map_err(|_| Rejection::HeaderMalformed)?;
        PassportHeaders::decode(passport, signature).map(Some)
    }
}

/// How often a passport header was sent.
enum Presence<'a> {
    /// Not sent, or sent once with an empty value.
    Absent,
    /// Sent once, with a value.
    Once(&'a HeaderValue),
    /// Sent more than once (whatever the values).
    Repeated,
}

fn presence<'a>(headers: &'a HeaderMap, name: &str) -> Presence<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Presence::Absent,
        (Some(v), None) if v.is_empty() => Presence::Absent,
        (Some(v), None) => Presence::Once(v),
        (Some(_), Some(_)) => Presence::Repeated,
    }
}

/// Whether any passport header is present (cheap; no decoding). A header sent once with
/// an empty value does not count, so two empty headers pass through like none.
pub fn has_passport_headers(headers: &HeaderMap) -> bool {
    [PASSPORT_HEADER, SIGNATURE_HEADER]
        .into_iter()
        .any(|name| !matches!(presence(headers, name), Presence::Absent))
}

/// The request target the agent signs: the path plus `?query` when present, exactly as
/// sent (`/` for a target without a path). The layer and the `verify` tool both use it.
pub fn signed_target(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

/// Parses a request target given outside HTTP (a tool's argument) into the string
/// [`signed_target`] would give for a request carrying it.
///
/// Refuses what no request line hands the layer unchanged: anything but origin-form
/// (`/path?query`; the absolute form is reduced to its path on the wire, so its
/// signature would cover other bytes) and a `#fragment` (never sent; `http` drops it).
pub fn origin_form_target(target: &str) -> Option<&str> {
    let uri: Uri = target.parse().ok()?;
    if uri.scheme().is_some() || uri.authority().is_some() || !target.starts_with('/') {
        return None;
    }
    (signed_target(&uri) == target).then_some(target)
}

/// The deepest nesting of arrays and objects a body may have: the reference's JSON
/// decoder refuses more than 10,000 levels anywhere in the body.
pub const MAX_BODY_DEPTH: usize = 10_000;

/// Whether `body`'s arrays and objects nest deeper than [`MAX_BODY_DEPTH`]. Brackets
/// inside strings do not count. One pass, no allocation; the JSON parser checks the rest.
fn nests_too_deep(body: &[u8]) -> bool {
    // Depth needs an opening bracket per level: a body with no more than the limit of
    // them cannot be too deep. Counting is one vectorized pass; the exact scan below
    // runs only for the rare body with more.
    if body.len() <= MAX_BODY_DEPTH || opening_brackets(body) <= MAX_BODY_DEPTH {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_BODY_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// How many `[` and `{` bytes `body` holds. `b | 0x20 == b'{'` holds for exactly those
/// two bytes, and counting into a byte per 255-byte chunk lets the compiler vectorize
/// the loop (about 30 µs per MiB here, against 390 µs for a plain filtered count).
fn opening_brackets(body: &[u8]) -> usize {
    body.chunks(255)
        .map(|c| {
            c.iter()
                .fold(0u8, |n, &b| n.wrapping_add(u8::from((b | 0x20) == b'{')))
                as usize
        })
        .sum()
}

/// The `model` member of a JSON object body; other members are skipped unread.
struct ModelMember<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for ModelMember<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = ModelMember<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut model = None;
                while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                    if name != "model" {
                        map.next_value::<IgnoredAny>()?;
                    } else if model.is_some() {
                        return Err(de::Error::duplicate_field("model"));
                    } else {
                        model = Some(map.next_value::<Cow<'de, str>>()?);
                    }
                }
                Ok(ModelMember(model))
            }
        }
        d.deserialize_map(ObjectOnly)
    }
}

/// The body's top-level `"model"`.
///
/// Rejects (`envelope_malformed`): a body that is not one JSON object, a `model` that is
/// missing, empty or not a string, a `model` given twice (Go and Python keep the
/// last of two, other parsers the first; refusing keeps the scope check and the upstream
/// looking at the same model), and a body nested deeper than [`MAX_BODY_DEPTH`] (the
/// reference's limit; members other than `model` are skipped without recursion here, so
/// the depth is counted separately).
pub fn requested_model(body: &[u8]) -> Result<String, Rejection> {
    if let Some(model) = super::model::fast_model(body) {
        return Ok(model.to_owned());
    }
    if nests_too_deep(body) {
        return Err(Rejection::EnvelopeMalformed);
    }
    let parsed: ModelMember<'_> =
        serde_json::from_slice(body).map_err(|_| Rejection::EnvelopeMalformed)?;
    match parsed.0 {
        Some(m) if !m.is_empty() => Ok(m.into_owned()),
        _ => Err(Rejection::EnvelopeMalformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn no_headers_means_not_ours() {
        assert_eq!(PassportHeaders::from_headers(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn one_header_alone_is_a_mismatch() {
        let mut h = HeaderMap::new();
        h.insert(PASSPORT_HEADER, HeaderValue::from_static("e30="));
        assert_eq!(
            PassportHeaders::from_headers(&h),
            Err(Rejection::SigHeaderMismatch)
        );
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, HeaderValue::from_static("e30="));
        assert_eq!(
            PassportHeaders::from_headers(&h),
            Err(Rejection::SigHeaderMismatch)
        );
    }

    #[test]
    fn repeated_headers_are_malformed() {
        let sig = crate::crypto::encode_base64(&[0u8; 64]);
        let mut h = HeaderMap::new();
        h.append(PASSPORT_HEADER, HeaderValue::from_static("e30="));
        h.append(PASSPORT_HEADER, HeaderValue::from_static("e30="));
        h.append(SIGNATURE_HEADER, HeaderValue::from_str(&sig).unwrap());
        assert_eq!(
            PassportHeaders::from_headers(&h),
            Err(Rejection::HeaderMalformed)
        );
    }

    #[test]
    fn empty_values_count_as_absent() {
        let mut h = HeaderMap::new();
        h.insert(PASSPORT_HEADER, HeaderValue::from_static(""));
        h.insert(SIGNATURE_HEADER, HeaderValue::from_static(""));
        assert!(!has_passport_headers(&h));
        assert_eq!(PassportHeaders::from_headers(&h), Ok(None));
        h.insert(SIGNATURE_HEADER, HeaderValue::from_static("e30="));
        assert!(has_passport_headers(&h));
        assert_eq!(
            PassportHeaders::from_headers(&h),
            Err(Rejection::SigHeaderMismatch)
        );
    }

    #[test]
    fn only_origin_form_targets_are_signable() {
        assert_eq!(origin_form_target("/v1/x?a=1"), Some("/v1/x?a=1"));
        assert_eq!(origin_form_target("/"), Some("/"));
        for bad in ["http://h/v1/x", "/v1/x#frag", "/v1/x?a#b", "v1/x", "*", ""] {
            assert_eq!(origin_form_target(bad), None, "{bad}");
        }
    }

    #[test]
    fn bodies_may_nest_ten_thousand_levels_deep() {
        let nested = |depth: usize| {
            let mut b = br#"{"model":"m","x":"#.to_vec();
            b.extend(std::iter::repeat_n(b'[', depth - 1));
            b.extend(std::iter::repeat_n(b']', depth - 1));
            b.push(b'}');
            b
        };
        assert_eq!(requested_model(&nested(MAX_BODY_DEPTH)).unwrap(), "m");
        assert_eq!(
            requested_model(&nested(MAX_BODY_DEPTH + 1)),
            Err(Rejection::EnvelopeMalformed)
        );
        let in_string = format!(
            r#"{{"model":"m","x":"{}\""}}"#,
            "[".repeat(MAX_BODY_DEPTH + 1)
        );
        assert_eq!(requested_model(in_string.as_bytes()).unwrap(), "m");
        assert_eq!(opening_brackets(&[b'['; 600]), 600);
        assert_eq!(opening_brackets(b"{[]}\x7b\x5b;{"), 5);
        // Many brackets side by side are not depth.
        let wide = format!(
            r#"{{"model":"m","x":[{}[]]}}"#,
            "[],".repeat(MAX_BODY_DEPTH)
        );
        assert_eq!(requested_model(wide.as_bytes()).unwrap(), "m");
    }

    #[test]
    fn the_signature_length_is_not_checked_with_the_headers() {
        let sig63 = crate::crypto::encode_base64(&[0u8; 63]);
        assert_eq!(
            PassportHeaders::decode("e30=", &sig63).map(|h| h.signature.len()),
            Ok(63)
        );
        assert_eq!(
            PassportHeaders::decode("e30", &crate::crypto::encode_base64(&[0u8; 64])),
            Err(Rejection::HeaderMalformed)
        );
        assert!(PassportHeaders::decode("e30=", &crate::crypto::encode_base64(&[0u8; 64])).is_ok());
    }

    #[test]
    fn model_must_be_a_non_empty_string_given_once() {
        assert_eq!(
            requested_model(br#"{"model":"m","x":[1,{"model":2}]}"#).unwrap(),
            "m"
        );
        assert_eq!(
            requested_model(br#"{"model":"caf\u00e9"}"#).unwrap(),
            "café"
        );
        for bad in [
            &br#"{"model":""}"#[..],
            br#"{"model":5}"#,
            br#"{"messages":[]}"#,
            br#"["model"]"#,
            br#"{"model":"a","model":"b"}"#,
            b"not json",
            br#"{"model":"m"} trailing"#,
        ] {
            assert_eq!(requested_model(bad), Err(Rejection::EnvelopeMalformed));
        }
    }
}
