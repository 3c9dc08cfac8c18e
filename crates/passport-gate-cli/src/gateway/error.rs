//! Why the gateway itself answered instead of the upstream: one variant per reason,
//! each with a stable code, a status and a one-line message, answered as problem+json.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use passport_gate::layer::PassportBody;
use passport_gate::problem::problem_response;

/// The methods the gateway proxies, as the `Allow` header lists them.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Why the gateway itself answered instead of the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayError {
    /// The upstream could not be reached or broke the connection.
    UpstreamUnavailable,
    /// The upstream did not answer within `response_timeout_ms`.
    UpstreamTimeout,
    /// `server.max_upstream_requests` requests are already with the upstream (each
    /// holds an upstream connection until its answer ends).
    UpstreamBusy,
    /// The route is not guarded and `routes.unguarded = "refuse"`.
    RouteNotAllowed,
    /// The path has a spelling whose meaning differs between decoders (an encoded `/`,
    /// `\` or `%`, a control character, `;`, a malformed escape, `..` above the root).
    PathAmbiguous,
    /// A method the gateway does not proxy (`CONNECT`, `TRACE`, lowercase or
    /// extension methods).
    MethodNotAllowed,
    /// `Connection` nominates a header the gateway judges or adds, which forwarding
    /// would strip after it was judged.
    ConnectionHeaderInvalid,
    /// A `Transfer-Encoding` other than exactly `chunked`: forwarding would re-frame
    /// the body and silently drop the other codings.
    TransferEncodingUnsupported,
    /// A body the gateway must hold whole to sign it (`upstream_auth.kind = "gonka"` on
    /// a public route) is larger than `agent_envelope.max_body_size`, or its client
    /// broke off while sending it.
    BodyTooLarge,
    /// The connection already reached `server.max_auth_failures_per_connection`: a
    /// request on it that was received before the close (HTTP/2 streams sent at once)
    /// is answered without a passport check.
    AuthFailuresExceeded,
}

impl GatewayError {
    /// The refusals of admission (before any route or passport check), for metrics.
    pub const ADMISSION: [GatewayError; 4] = [
        GatewayError::PathAmbiguous,
        GatewayError::MethodNotAllowed,
        GatewayError::ConnectionHeaderInvalid,
        GatewayError::TransferEncodingUnsupported,
    ];

    /// The stable code.
    pub const fn code(self) -> &'static str {
        match self {
            GatewayError::UpstreamUnavailable => "upstream_unavailable",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::UpstreamBusy => "upstream_busy",
            GatewayError::RouteNotAllowed => "route_not_allowed",
            GatewayError::PathAmbiguous => "path_ambiguous",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::ConnectionHeaderInvalid => "connection_header_invalid",
            GatewayError::TransferEncodingUnsupported => "transfer_encoding_unsupported",
            GatewayError::BodyTooLarge => "body_too_large",
            GatewayError::AuthFailuresExceeded => "auth_failures_exceeded",
        }
    }

    /// The HTTP status.
    pub const fn status(self) -> StatusCode {
        match self {
            GatewayError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamBusy => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::RouteNotAllowed => StatusCode::NOT_FOUND,
            GatewayError::PathAmbiguous
            | GatewayError::ConnectionHeaderInvalid
            | GatewayError::TransferEncodingUnsupported => StatusCode::BAD_REQUEST,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::AuthFailuresExceeded => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A one-line message.
    pub const fn message(self) -> &'static str {
        match self {
            GatewayError::UpstreamUnavailable => "the upstream inference server is unavailable",
            GatewayError::UpstreamTimeout => "the upstream inference server did not answer in time",
            GatewayError::UpstreamBusy => {
                "the gateway has as many requests with the upstream as it allows; retry"
            }
            GatewayError::RouteNotAllowed => "this gateway does not serve this route",
            GatewayError::PathAmbiguous => {
                "the request path has a spelling whose meaning differs between servers"
            }
            GatewayError::MethodNotAllowed => "this gateway does not proxy this method",
            GatewayError::ConnectionHeaderInvalid => {
                "the Connection header names a header the gateway must forward"
            }
            GatewayError::TransferEncodingUnsupported => {
                "only Transfer-Encoding: chunked is accepted"
            }
            GatewayError::BodyTooLarge => "the request body is larger than this gateway accepts",
            GatewayError::AuthFailuresExceeded => {
                "this connection had too many consecutive authentication failures; open a new one"
            }
        }
    }

    /// The problem+json answer (with `Allow` for a method that is not proxied).
    pub fn http_response<B>(self) -> Response<PassportBody<B>> {
        let mut resp = problem_response(self.status(), self.code(), self.message());
        if self == GatewayError::MethodNotAllowed {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
        }
        if self == GatewayError::UpstreamBusy {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // The reason, for the access log.
        resp.extensions_mut().insert(self);
        resp.map(PassportBody::from_full)
    }
}
