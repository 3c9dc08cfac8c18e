//! What is in a passport: its JSON, its ids, the address its key derives, where an instant
//! falls in its validity window and, when a verifier is given, that verifier's verdict.
//!
//! One [`inspect`] builds an [`Inspection`]; `passport-gate inspect` prints it as text,
//! [`crate::mint::inspect_json`] renders it as JSON for the language bindings, and the
//! wallet page's decoder renders it as its own JSON. None of them decodes a passport itself.

use crate::crypto::{decode_base64, AddressError, PrincipalKey};
use crate::envelope::{Envelope, EnvelopeError, Window};
use crate::time::Timestamp;
use crate::verifier::{Rejection, Verifier};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// Whether `c` must not reach a terminal or a log line raw: C0 controls (line breaks included), DEL,
/// C1 controls, the bidi embeddings, overrides, isolates and marks, and the Unicode line
/// and paragraph separators.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every unsafe character written as `\uXXXX` (the JSON escape, so the result
/// is still valid inside a JSON string, and applied to a whole serialized JSON text it
/// leaves the same JSON value): an agent-chosen string printed or logged cannot drive a
/// terminal, nor read differently from its bytes through a bidi override. Borrows when
/// there is nothing to escape.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Why a text is not a passport at all (as opposed to a malformed envelope, which an
/// [`Inspection`] still shows as JSON).
#[derive(Debug)]
pub enum InspectError {
    /// Not strict standard base64.
    NotBase64,
    /// Base64, but not of JSON.
    NotJson(serde_json::Error),
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InspectError::NotBase64 => f.write_str("the passport is not strict standard base64"),
            InspectError::NotJson(e) => write!(f, "the passport is not JSON: {e}"),
        }
    }
}

impl std::error::Error for InspectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InspectError::NotBase64 => None,
            InspectError::NotJson(e) => Some(e),
        }
    }
}

/// The address `principal_pubkey` derives under the inspection's prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DerivedAddress {
    /// The derived address.
    Derived(String),
    /// `principal_pubkey` is not base64 of a compressed secp256k1 key.
    KeyInvalid,
    /// The prefix cannot make an address.
    Failed(AddressError),
}

impl DerivedAddress {
    /// The derived address, if there is one.
    pub fn address(&self) -> Option<&str> {
        match self {
            DerivedAddress::Derived(a) => Some(a),
            DerivedAddress::KeyInvalid | DerivedAddress::Failed(_) => None,
        }
    }
}

/// What a well-formed envelope says, seen at one instant.
#[derive(Clone, Debug)]
pub struct EnvelopeFacts {
    /// The parsed envelope (ids, times, scope).
    pub envelope: Envelope,
    /// The address `principal_pubkey` derives.
    pub derived_address: DerivedAddress,
    /// Where the inspection's instant falls in the validity window.
    pub window: Window,
}

impl EnvelopeFacts {
    /// Whether the derived address is the envelope's `principal_address`.
    pub fn address_matches(&self) -> bool {
        self.derived_address.address() == Some(self.envelope.principal_address.as_str())
    }
}

/// What is in one passport.
#[derive(Debug)]
pub struct Inspection {
    /// The passport's JSON as sent (any JSON, even when it is not an envelope).
    pub json: Value,
    /// The instant the validity window is judged at.
    pub now: Timestamp,
    /// The envelope's facts, or why the JSON is not a well-formed envelope.
    pub envelope: Result<EnvelopeFacts, EnvelopeError>,
    /// The verifier's verdict on the passport alone (principal signature, address, scope,
    /// time), when a verifier was given; `None`: signatures were not checked.
    pub verdict: Option<Result<(), Rejection>>,
}

/// Decodes `passport` (surrounding whitespace ignored), derives the principal address under
/// `prefix`, places `now` in the validity window and, with a `verifier`, asks it whether it
/// accepts the passport. Refuses only text that is not base64 of JSON.
pub fn inspect(
    passport: &str,
    prefix: &str,
    now: Timestamp,
    verifier: Option<&Verifier>,
) -> Result<Inspection, InspectError> {
    let raw = decode_base64(passport.trim()).ok_or(InspectError::NotBase64)?;
    let json = serde_json::from_slice::<Value>(&raw).map_err(InspectError::NotJson)?;
    let verdict = verifier.map(|v| v.check_passport(&raw).map(|_| ()));
    let envelope = Envelope::parse(&raw).map(|envelope| {
        let derived_address = match decode_base64(&envelope.principal_pubkey.public_key)
            .and_then(|b| PrincipalKey::from_compressed(&b))
        {
            None => DerivedAddress::KeyInvalid,
            Some(k) => match k.address(prefix) {
                Ok(a) => DerivedAddress::Derived(a),
                Err(e) => DerivedAddress::Failed(e),
            },
        };
        let window = envelope.scope.window_at(now);
        EnvelopeFacts {
            envelope,
            derived_address,
            window,
        }
    });
    Ok(Inspection {
        json,
        now,
        envelope,
        verdict,
    })
}

/// The window as a snake_case code, for JSON read by programs.
pub fn window_code(window: Window) -> &'static str {
    match window {
        Window::Expired => "expired",
        Window::NotYetValid => "not_yet_valid",
        Window::Valid => "valid",
    }
}

/// The window in words, for people (the CLI and the wallet page).
pub fn window_phrase(window: Window) -> &'static str {
    match window {
        Window::Expired => "expired",
        Window::NotYetValid => "not yet valid",
        Window::Valid => "inside its validity window",
    }
}

impl Inspection {
    /// The JSON the language bindings return: the envelope, its ids, the derived address
    /// and whether it matches, the times and the window's code at `now`. Refuses a
    /// malformed envelope.
    pub fn into_json(self) -> Result<Value, EnvelopeError> {
        let facts = self.envelope?;
        let e = &facts.envelope;
        Ok(serde_json::json!({
            "envelope": self.json,
            "envelope_sha256": hex::encode(e.sha256()),
            "passport_id": hex::encode(e.passport_id()),
            "derived_address": facts.derived_address.address(),
            "address_matches": facts.address_matches(),
            "issued_at": e.issued_at.to_rfc3339(),
            "not_before": e.scope.not_before.map(Timestamp::to_rfc3339),
            "expires_at": e.scope.expires_at.to_rfc3339(),
            "state": window_code(facts.window),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::encode_base64;

    #[test]
    fn text_that_is_not_base64_of_json_is_not_a_passport() {
        let now = Timestamp::now();
        assert!(matches!(
            inspect("not base64!", "gonka", now, None),
            Err(InspectError::NotBase64)
        ));
        assert!(matches!(
            inspect(&encode_base64(b"{"), "gonka", now, None),
            Err(InspectError::NotJson(_))
        ));
    }

    #[test]
    fn a_malformed_envelope_is_still_shown_as_json() {
        let i = inspect(
            &encode_base64(br#"{"agent_id":"a"}"#),
            "gonka",
            Timestamp::now(),
            None,
        )
        .unwrap();
        assert_eq!(i.json["agent_id"], "a");
        assert!(matches!(i.envelope, Err(EnvelopeError::Json(_))));
        assert!(i.verdict.is_none());
    }
}
