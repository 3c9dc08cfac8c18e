//! The gateway's one normal form of a request path, on which every route decision is
//! made and which the upstream receives.
//!
//! Web frameworks do not agree on what a path means: Starlette (vLLM) decodes every
//! escape before routing, Tomcat strips `;` parameters, some servers merge `//` or
//! resolve `..`, and IIS reads `\` as `/`. A guard that matches raw bytes is bypassed by
//! any spelling the upstream reads differently (`/v1/chat%2Fcompletions`,
//! `/v1/chat/%63ompletions`, `/v1//chat/completions`). So the gateway decides on one
//! normal form and forwards exactly that form, and refuses the spellings whose meaning
//! depends on the decoder (Envoy's answer after its own path-normalization advisories).
//!
//! [`normalize`] decodes every escape, refuses what is ambiguous, merges repeated
//! slashes, removes dot segments (RFC 3986 section 5.2.4) and re-encodes each byte one
//! way: ALPHA DIGIT `-._~`, the sub-delimiters other than `;`, `:` and `@` raw, every
//! other byte as `%XX` with uppercase hex. Two spellings that any decoder reads as the
//! same bytes therefore have the same normal form, and the normal form is a fixed point.

use std::fmt;

/// Why a path was refused: its meaning differs between decoders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ambiguity {
    /// Not an origin-form path (`*`, or not starting with `/`).
    NotOriginForm,
    /// `%2F` or `%5C`: one segment to a strict decoder, two to a decoding router.
    EncodedSeparator,
    /// A raw `\`: a separator to some servers, a character to others.
    Backslash,
    /// `%25`: decoding twice gives another path than decoding once.
    EncodedPercent,
    /// A control character or DEL, raw or encoded.
    ControlCharacter,
    /// `;`: matrix parameters that some servers strip before routing.
    Semicolon,
    /// `%` not followed by two hex digits.
    MalformedEscape,
    /// Escapes that decode to bytes that are not UTF-8 (decoders substitute or refuse).
    NotUtf8,
    /// A `..` segment that climbs above the root.
    AboveRoot,
}

impl fmt::Display for Ambiguity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ambiguity::NotOriginForm => "not an origin-form path",
            Ambiguity::EncodedSeparator => "an encoded / or \\",
            Ambiguity::Backslash => "a backslash",
            Ambiguity::EncodedPercent => "an encoded %",
            Ambiguity::ControlCharacter => "a control character",
            Ambiguity::Semicolon => "a ;",
            Ambiguity::MalformedEscape => "a malformed escape",
            Ambiguity::NotUtf8 => "escapes that are not UTF-8",
            Ambiguity::AboveRoot => "a .. above the root",
        })
    }
}

/// Bytes written raw in the normal form: RFC 3986 unreserved characters, and the
/// sub-delimiters, `:` and `@` that decoders read as themselves (`;` is refused).
fn kept_raw(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one segment (no raw `/` inside), refusing what is ambiguous.
fn decode_segment(segment: &[u8]) -> Result<Vec<u8>, Ambiguity> {
    let mut out = Vec::with_capacity(segment.len());
    let mut i = 0;
    while i < segment.len() {
        let b = segment[i];
        let decoded = if b == b'%' {
            let (Some(hi), Some(lo)) = (
                segment.get(i + 1).copied().and_then(hex_value),
                segment.get(i + 2).copied().and_then(hex_value),
            ) else {
                return Err(Ambiguity::MalformedEscape);
            };
            i += 3;
            match hi << 4 | lo {
                b'/' | b'\\' => return Err(Ambiguity::EncodedSeparator),
                b'%' => return Err(Ambiguity::EncodedPercent),
                other => other,
            }
        } else {
            i += 1;
            match b {
                b'\\' => return Err(Ambiguity::Backslash),
                b';' => return Err(Ambiguity::Semicolon),
                other => other,
            }
        };
        if decoded < 0x20 || decoded == 0x7f {
            return Err(Ambiguity::ControlCharacter);
        }
        out.push(decoded);
    }
    Ok(out)
}

fn encode_segment(segment: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in segment {
        if kept_raw(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// The normal form of `path` (the path of a request target, without its query), or
/// why it is refused. A trailing slash is kept (`/a/` and `/a` may be different
/// resources to an upstream); [`route_key`] ignores it.
pub fn normalize(path: &str) -> Result<String, Ambiguity> {
    let rest = path.strip_prefix('/').ok_or(Ambiguity::NotOriginForm)?;
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut trailing_slash = false;
    for raw in rest.split('/') {
        let segment = decode_segment(raw.as_bytes())?;
        // A path ends in a slash when its last segment is empty, `.` or `..`
        // (RFC 3986 section 5.2.4 keeps the slash before a removed final dot segment).
        trailing_slash = matches!(segment.as_slice(), b"" | b"." | b"..");
        match segment.as_slice() {
            b"" | b"." => {}
            b".." => {
                segments.pop().ok_or(Ambiguity::AboveRoot)?;
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        std::str::from_utf8(segment).map_err(|_| Ambiguity::NotUtf8)?;
        out.push('/');
        encode_segment(segment, &mut out);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The path a route is matched on: the normal form without its trailing slash
/// (Starlette redirects `/x/` to `/x`, so both name one route).
pub fn route_key(normal: &str) -> &str {
    match normal.strip_suffix('/') {
        Some("") | None => normal,
        Some(trimmed) => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spellings_of_one_path_share_its_normal_form() {
        for spelling in [
            "/v1/chat/completions",
            "/v1/chat/%63ompletions",
            "/v1/chat/%63%6F%6D%70%6c%65%74%69%6f%6e%73",
            "/v1//chat///completions",
            "/v1/./chat/completions",
            "/v1/x/../chat/completions",
            "/v1/chat/%2E/completions",
            "/v1/chat/x/%2e%2E/completions",
        ] {
            assert_eq!(
                normalize(spelling).unwrap(),
                "/v1/chat/completions",
                "{spelling}"
            );
        }
    }

    #[test]
    fn a_trailing_slash_is_kept_in_the_path_and_ignored_by_the_route() {
        for (spelling, normal) in [
            ("/v1/models/", "/v1/models/"),
            ("/v1/models/.", "/v1/models/"),
            ("/v1/models/x/..", "/v1/models/"),
            ("/v1/models//", "/v1/models/"),
        ] {
            assert_eq!(normalize(spelling).unwrap(), normal, "{spelling}");
            assert_eq!(route_key(normal), "/v1/models");
        }
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("//").unwrap(), "/");
        assert_eq!(route_key("/"), "/");
    }

    #[test]
    fn escapes_that_are_kept_use_uppercase_hex_and_raw_bytes_are_encoded() {
        assert_eq!(normalize("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(normalize("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(normalize("/café").unwrap(), "/caf%C3%A9");
        assert_eq!(normalize("/a%20b").unwrap(), "/a%20b");
        assert_eq!(normalize("/m%3Ag%40x%2B").unwrap(), "/m:g@x+");
        assert_eq!(normalize("/{x}").unwrap(), "/%7Bx%7D");
    }

    #[test]
    fn forms_whose_meaning_differs_between_decoders_are_refused() {
        for (path, why) in [
            ("*", Ambiguity::NotOriginForm),
            ("v1/models", Ambiguity::NotOriginForm),
            ("/v1/chat%2Fcompletions", Ambiguity::EncodedSeparator),
            ("/v1%2fchat%2fcompletions", Ambiguity::EncodedSeparator),
            ("/v1/chat%5Ccompletions", Ambiguity::EncodedSeparator),
            ("/v1/chat%5ccompletions", Ambiguity::EncodedSeparator),
            ("/v1\\chat/completions", Ambiguity::Backslash),
            ("/v1/chat%252Fcompletions", Ambiguity::EncodedPercent),
            ("/v1/chat%00", Ambiguity::ControlCharacter),
            ("/v1/chat%1f", Ambiguity::ControlCharacter),
            ("/v1/chat%7F", Ambiguity::ControlCharacter),
            ("/v1/chat\u{7}", Ambiguity::ControlCharacter),
            ("/v1/chat/completions;a=b", Ambiguity::Semicolon),
            ("/v1;x/chat/completions", Ambiguity::Semicolon),
            ("/v1/chat%2", Ambiguity::MalformedEscape),
            ("/v1/chat%zz", Ambiguity::MalformedEscape),
            ("/v1/%", Ambiguity::MalformedEscape),
            ("/v1/%ff", Ambiguity::NotUtf8),
            ("/..", Ambiguity::AboveRoot),
            ("/v1/../../etc", Ambiguity::AboveRoot),
            ("/%2e%2e/v1", Ambiguity::AboveRoot),
        ] {
            assert_eq!(normalize(path), Err(why), "{path}");
        }
    }

    proptest! {
        #[test]
        fn the_normal_form_is_a_fixed_point_without_ambiguous_sequences(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("/".to_owned()),
                    Just(".".to_owned()),
                    Just("..".to_owned()),
                    Just("%2e".to_owned()),
                    Just("%41".to_owned()),
                    Just("%3b".to_owned()),
                    Just("%c3%a9".to_owned()),
                    Just("é".to_owned()),
                    "[a-zA-Z0-9~:@!$&'()*+,=_-]{1,3}",
                ],
                0..12,
            )
        ) {
            let path = format!("/{}", parts.concat());
            if let Ok(normal) = normalize(&path) {
                prop_assert_eq!(normalize(&normal), Ok(normal.clone()));
                for bad in ["//", "/./", "/../", "%2F", "%5C", "%25", ";", "\\"] {
                    prop_assert!(!normal.contains(bad), "{} in {}", bad, normal);
                }
                prop_assert!(!normal.ends_with("/.") && !normal.ends_with("/.."));
                prop_assert!(normal.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }
}
