//! The verified identity, as request headers for the upstream (`[forward_identity]`).
//!
//! An upstream can trust these headers only if nobody else can set them, so every
//! configured name is removed from every forwarded request before the gateway sets its
//! own, whatever the route, whether or not the passport was accepted, and whether or
//! not forwarding is on.

use crate::config::file::ForwardIdentitySection;
use crate::config::ConfigError;
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
const RESERVED: [&str; 7] = [
    "x-agent-passport",
    "x-agent-sig",
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "forwarded",
];

impl IdentityHeaders {
    /// Checks the section: every name a valid header name, none reserved, no two alike
    /// (header names are compared in lowercase). One line per problem, naming its key.
    pub fn from_section(s: &ForwardIdentitySection) -> Result<IdentityHeaders, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut seen: Vec<(HeaderName, &str)> = Vec::new();
        let mut name = |key: &'static str, value: &str| -> HeaderName {
            match HeaderName::try_from(value) {
                Ok(h) if h.as_str().contains('_') => {
                    errors.push(ConfigError::new(format!("forward_identity.{key}"), format!("{value:?} contains `_`, which WSGI and CGI servers read as `-`: a client could send that spelling; use `-`"
                    )));
                    h
                }
                Ok(h) if RESERVED.contains(&h.as_str()) => {
                    errors.push(ConfigError::new(
                        format!("forward_identity.{key}"),
                        format!("{value:?} is a header the gateway judges or sets itself"),
                    ));
                    h
                }
                Ok(h) => {
                    if let Some((_, other)) = seen.iter().find(|(n, _)| *n == h) {
                        errors.push(ConfigError::new(
                            format!("forward_identity.{key}"),
                            format!("{value:?} is also forward_identity.{other}"),
                        ));
                    }
                    seen.push((h.clone(), key));
                    h
                }
                Err(_) => {
                    errors.push(ConfigError::new(
                        format!("forward_identity.{key}"),
                        format!("{value:?} is not a header name"),
                    ));
                    HeaderName::from_static("x-invalid")
                }
            }
        };
        let headers = IdentityHeaders {
            enabled: s.enabled,
            agent_id: name("agent_id", &s.agent_id),
            principal_address: name("principal_address", &s.principal_address),
            beneficiary: name("beneficiary", &s.beneficiary),
            passport_id: name("passport_id", &s.passport_id),
            model: name("model", &s.model),
            requester_address: name("requester_address", &s.requester_address),
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
        let s = ForwardIdentitySection {
            agent_id: "X-Agent-Sig".into(),
            model: "X-APS-Principal-Address".into(),
            passport_id: "bad name".into(),
            beneficiary: "x_aps_beneficiary".into(),
            ..ForwardIdentitySection::default()
        };
        let errors: Vec<String> = IdentityHeaders::from_section(&s)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("forward_identity.agent_id"));
        assert!(errors[1].starts_with("forward_identity.beneficiary"));
        assert!(errors[1].contains("contains `_`"));
        assert!(errors[2].starts_with("forward_identity.passport_id"));
        assert!(errors[3].starts_with("forward_identity.model"));
    }
}
