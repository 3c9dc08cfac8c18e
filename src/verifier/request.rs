//! Steps 1 and 2 of verification: the two headers and the request body, before the
//! envelope is looked at.

use super::Rejection;
use crate::crypto::decode_base64;
use http::HeaderMap;
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
    /// The agent's Ed25519 signature from `X-Agent-Sig`.
    pub signature: [u8; 64],
}

impl PassportHeaders {
    /// Decodes the two header values.
    ///
    /// Rejects (`header_malformed`) anything but strict standard base64, and a signature
    /// that is not exactly 64 bytes.
    pub fn decode(passport_b64: &str, signature_b64: &str) -> Result<PassportHeaders, Rejection> {
        let passport = decode_base64(passport_b64).ok_or(Rejection::HeaderMalformed)?;
        let signature = decode_base64(signature_b64)
            .and_then(|s| <[u8; 64]>::try_from(s).ok())
            .ok_or(Rejection::HeaderMalformed)?;
        Ok(PassportHeaders {
            passport,
            signature,
        })
    }

    /// Finds and decodes the passport headers. `Ok(None)`: neither header was sent, and
    /// the request is not ours to judge.
    ///
    /// Rejects: exactly one of the two headers (`sig_header_mismatch`); either header
    /// more than once (`header_malformed`: the reference takes the first and a proxy in
    /// front of it may take the last, so a repeat could make two components judge two
    /// different passports); a value that is not visible ASCII.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<PassportHeaders>, Rejection> {
        let mut passports = headers.get_all(PASSPORT_HEADER).iter();
        let mut signatures = headers.get_all(SIGNATURE_HEADER).iter();
        let (passport, signature) = match (passports.next(), signatures.next()) {
            (None, None) => return Ok(None),
            (Some(p), Some(s)) => (p, s),
            _ => return Err(Rejection::SigHeaderMismatch),
        };
        if passports.next().is_some() || signatures.next().is_some() {
            return Err(Rejection::HeaderMalformed);
        }
        let passport = passport.to_str().map_err(|_| Rejection::HeaderMalformed)?;
        let signature = signature.to_str().map_err(|_| Rejection::HeaderMalformed)?;
        PassportHeaders::decode(passport, signature).map(Some)
    }
}

/// Whether any passport header is present (cheap; no decoding).
pub fn has_passport_headers(headers: &HeaderMap) -> bool {
    headers.contains_key(PASSPORT_HEADER) || headers.contains_key(SIGNATURE_HEADER)
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
/// missing, empty or not a string, and a `model` given twice (Go and Python keep the
/// last of two, other parsers the first; refusing keeps the scope check and the upstream
/// looking at the same model).
pub fn requested_model(body: &[u8]) -> Result<String, Rejection> {
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
    fn signature_must_be_64_bytes_of_strict_base64() {
        let sig63 = crate::crypto::encode_base64(&[0u8; 63]);
        assert_eq!(
            PassportHeaders::decode("e30=", &sig63),
            Err(Rejection::HeaderMalformed)
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
