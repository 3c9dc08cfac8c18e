//! What every request on the proxy listener must pass before a route is chosen and
//! before the passport layer judges anything: a proxied method, a path with one
//! meaning, a `Connection` header that cannot strip a judged header, and framing the
//! gateway forwards as it was received.

use super::error::GatewayError;
use super::path;
use http::header::{self, HeaderMap, HeaderName};
use http::Method;

/// The methods the gateway proxies. `CONNECT` would open a tunnel past every check,
/// `TRACE` echoes credentials back, and extension methods (including lowercase
/// `post`, which HTTP treats as a different method) are read differently by
/// upstream frameworks.
pub fn is_proxied(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .contains(method)
}

/// End-to-end headers the gateway judges or adds. A `Connection` header that names one
/// of them makes forwarding drop it (hop-by-hop rules) after the layer read it, so the
/// upstream would see another request than the one judged.
const JUDGED: [HeaderName; 8] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    HeaderName::from_static("x-agent-passport"),
    HeaderName::from_static("x-agent-sig"),
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    header::FORWARDED,
];

/// The prefix of the identity headers the gateway adds.
const IDENTITY_PREFIX: &str = "x-aps-";

/// Refuses a `Connection` header that nominates a judged header, the configured
/// requester header or any `x-aps-*` header.
fn connection_strips_judged(headers: &HeaderMap, requester: Option<&HeaderName>) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .any(|name| {
            JUDGED.contains(&name)
                || requester == Some(&name)
                || name.as_str().starts_with(IDENTITY_PREFIX)
        })
}

/// True unless `Transfer-Encoding` is absent or exactly `chunked`. hyper refuses a
/// request whose last coding is not `chunked`, but accepts `gzip, chunked`, which the
/// gateway would forward re-framed as plain chunked with the gzip coding lost.
fn transfer_encoding_unsupported(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(str::trim);
    match codings.next() {
        None => false,
        Some(first) => !first.eq_ignore_ascii_case("chunked") || codings.next().is_some(),
    }
}

/// The per-listener admission check.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    requester: Option<HeaderName>,
}

impl Admission {
    /// Admission that also protects the binding's requester header, when there is one.
    pub fn new(requester: Option<HeaderName>) -> Admission {
        Admission { requester }
    }

    /// The normal form of the request path, or why the request is refused.
    pub fn admit(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Result<String, GatewayError> {
        if !is_proxied(method) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let normal = path::normalize(uri.path()).map_err(|why| {
            tracing::debug!(reason = %why, "path refused");
            GatewayError::PathAmbiguous
        })?;
        if connection_strips_judged(headers, self.requester.as_ref()) {
            return Err(GatewayError::ConnectionHeaderInvalid);
        }
        if transfer_encoding_unsupported(headers) {
            return Err(GatewayError::TransferEncodingUnsupported);
        }
        Ok(normal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_the_seven_proxied_methods_pass() {
        for m in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            assert!(
                is_proxied(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        for m in ["CONNECT", "TRACE", "post", "Get", "PROPFIND", "BREW"] {
            assert!(
                !is_proxied(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
    }

    #[test]
    fn connection_may_not_nominate_a_judged_header() {
        let requester = HeaderName::from_static("x-requester-address");
        for v in [
            "x-requester-address",
            "keep-alive, X-Agent-Passport",
            "x-agent-sig",
            "Host",
            "content-length",
            "content-type",
            "x-forwarded-for",
            "x-forwarded-host",
            "forwarded",
            "x-aps-principal",
        ] {
            let h = with("connection", &[v]);
            assert!(connection_strips_judged(&h, Some(&requester)), "{v}");
        }
        let h = with("connection", &["keep-alive", "x-hop-secret, close"]);
        assert!(!connection_strips_judged(&h, Some(&requester)));
    }

    #[test]
    fn transfer_encoding_must_be_exactly_chunked() {
        assert!(!transfer_encoding_unsupported(&HeaderMap::new()));
        assert!(!transfer_encoding_unsupported(&with(
            "transfer-encoding",
            &["Chunked"]
        )));
        for values in [
            &["gzip, chunked"][..],
            &["gzip", "chunked"],
            &["identity"],
            &["chunked, chunked"],
            &[""],
        ] {
            assert!(
                transfer_encoding_unsupported(&with("transfer-encoding", values)),
                "{values:?}"
            );
        }
    }
}
