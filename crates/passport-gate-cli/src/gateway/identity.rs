//! The verified identity, as request headers for the upstream (`[forward_identity]`).
//!
//! An upstream can trust these headers only if nobody else can set them, so every
//! configured name is removed from every forwarded request before the gateway sets its
//! own, whatever the route, whether or not the passport was accepted, and whether or
//! not forwarding is on.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use passport_core::verifier::VerifiedAgent;
use passport_gate::layer::BoundRequester;

/// The checked header names, and whether they are set.
#[derive(Clone, Debug)]
pub struct IdentityHeaders {
    enabled: bool,
    agent_id: HeaderName,
    principal_address: HeaderName,
    beneficiary: HeaderName,
    passport_id: HeaderName,
    model: HeaderName,
    requester_address: HeaderName,
}

/// Headers the gateway judges or sets itself: an identity header must not share a name
/// with one of them.
const RESERVED: [&str; 9] = [
    "x-agent-passport",
    "x-agent-sig",
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
];

/// The identity header names as configured, not checked yet.
#[derive(Clone, Copy, Debug)]
pub struct IdentityNames<'a> {
    /// The passport's `agent_id`.
    pub agent_id: &'a str,
    /// The passport's `principal_address`.
    pub principal_address: &'a str,
    /// The passport's `beneficiary`.
    pub beneficiary: &'a str,
    /// The passport id.
    pub passport_id: &'a str,
    /// The body's `model`.
    pub model: &'a str,
    /// The bound requester.
    pub requester_address: &'a str,
}

/// A header name that cannot be used: which one (`agent_id`, ...) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameProblem {
    /// The name's field (`agent_id`, `model`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl IdentityHeaders {
    /// Checks the names: every name a valid header name, none reserved, no two alike
    /// (header names are compared in lowercase). One problem per name, naming its field.
    pub fn new(enabled: bool, n: &IdentityNames<'_>) -> Result<IdentityHeaders, Vec<NameProblem>> {
        let mut errors = Vec::new();
        let mut seen: Vec<(HeaderName, &str)> = Vec::new();
        let mut name = |key: &'static str, value: &str| -> HeaderName {
            match HeaderName::try_from(value) {
                Ok(h) if h.as_str().contains('_') => {
                    errors.push(NameProblem { field: key, problem: format!("{value:?} contains `_`, which WSGI and CGI servers read as `-`: a client could send that spelling; use `-`"
                    )});
                    h
                }
                Ok(h) if RESERVED.contains(&h.as_str()) => {
                    errors.push(NameProblem {
                        field: key,
                        problem: format!("{value:?} is a header the gateway judges or sets itself"),
                    });
                    h
                }
                Ok(h) => {
                    if let Some((_, other)) = seen.iter().find(|(n, _)| *n == h) {
                        errors.push(NameProblem {
                            field: key,
                            problem: format!("{value:?} is also forward_identity.{other}"),
                        });
                    }
                    seen.push((h.clone(), key));
                    h
                }
                Err(_) => {
                    errors.push(NameProblem {
                        field: key,
                        problem: format!("{value:?} is not a header name"),
                    });
                    HeaderName::from_static("x-invalid")
                }
            }
        };
        let headers = IdentityHeaders {
            enabled,
            agent_id: name("agent_id", n.agent_id),
            principal_address: name("principal_address", n.principal_address),
            beneficiary: name("beneficiary", n.beneficiary),
            passport_id: name("passport_id", n.passport_id),
            model: name("model", n.model),
            requester_address: name("requester_address", n.requester_address),
        };
        if errors.is_empty() {
            Ok(headers)
        } else {
            Err(errors)
        }
    }

    fn names(&self) -> [&HeaderName; 6] {
        [
            &self.agent_id,
            &self.principal_address,
            &self.beneficiary,
            &self.passport_id,
            &self.model,
            &self.requester_address,
        ]
    }

    /// Removes every client-sent header with an identity name (`HeaderMap` names are
    /// lowercase, so any spelling the client used is removed), then, when enabled and
    /// the request was accepted, sets the identity the verifier established.
    pub fn apply(&self, headers: &mut HeaderMap, extensions: &http::Extensions) {
        for name in self.names() {
            headers.remove(name);
        }
        if !self.enabled {
            return;
        }
        let Some(agent) = extensions.get::<VerifiedAgent>() else {
            return;
        };
        let mut set = |name: &HeaderName, value: String| {
            if let Ok(v) = HeaderValue::try_from(value) {
                headers.insert(name.clone(), v);
            }
        };
        set(&self.agent_id, header_text(agent.agent_id()));
        set(
            &self.principal_address,
            agent.principal_address().to_owned(),
        );
        if let Some(b) = agent.beneficiary() {
            set(&self.beneficiary, header_text(b));
        }
        set(&self.passport_id, hex::encode(agent.passport_id()));
        set(&self.model, header_text(agent.model()));
        if let Some(r) = extensions.get::<BoundRequester>() {
            set(&self.requester_address, r.0.clone());
        }
    }
}

/// A text value as a header value any upstream reads back exactly: every byte of its
/// UTF-8 outside visible ASCII (`!` to `~`), and `%` itself, becomes `%XX` (uppercase
/// hex), as in RFC 3986 percent-encoding. Decoding with any percent-decoder gives the
/// original text; a value of visible ASCII without `%` is sent as it is.
pub fn header_text(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_keeps_visible_ascii_and_escapes_the_rest() {
        assert_eq!(header_text("urn:aps:agent:e2e"), "urn:aps:agent:e2e");
        assert_eq!(header_text("a b%\r\n\u{e9}"), "a%20b%25%0D%0A%C3%A9");
        assert!(HeaderValue::try_from(header_text("\0\u{7f}\u{1F600}")).is_ok());
    }

    #[test]
    fn reserved_duplicate_and_invalid_names_are_refused_with_their_key() {
        let n = IdentityNames {
            agent_id: "X-Agent-Sig",
            principal_address: "x-aps-principal-address",
            beneficiary: "x_aps_beneficiary",
            passport_id: "bad name",
            model: "X-APS-Principal-Address",
            requester_address: "x-aps-requester-address",
        };
        let errors = IdentityHeaders::new(true, &n).unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert_eq!(errors[0].field, "agent_id");
        assert_eq!(errors[1].field, "beneficiary");
        assert!(errors[1].problem.contains("contains `_`"));
        assert_eq!(errors[2].field, "passport_id");
        assert_eq!(errors[3].field, "model");
    }
}
