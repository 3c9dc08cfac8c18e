//! Forwarding to the upstream: hop-by-hop headers dropped, `X-Forwarded-For` and
//! `Forwarded` added, the response streamed back as it arrives.

use super::config::Upstream;
use crate::layer::PassportBody;
use crate::problem::problem_response;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::Service;

/// Why the gateway itself answered instead of the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayError {
    /// The upstream could not be reached or broke the connection.
    UpstreamUnavailable,
    /// The upstream did not answer within `response_timeout_ms`.
    UpstreamTimeout,
    /// The route is not guarded and `routes.unguarded = "refuse"`.
    RouteNotAllowed,
}

impl GatewayError {
    /// The stable code.
    pub const fn code(self) -> &'static str {
        match self {
            GatewayError::UpstreamUnavailable => "upstream_unavailable",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::RouteNotAllowed => "route_not_allowed",
        }
    }

    /// The HTTP status.
    pub const fn status(self) -> StatusCode {
        match self {
            GatewayError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::RouteNotAllowed => StatusCode::NOT_FOUND,
        }
    }

    /// A one-line message.
    pub const fn message(self) -> &'static str {
        match self {
            GatewayError::UpstreamUnavailable => "the upstream inference server is unavailable",
            GatewayError::UpstreamTimeout => "the upstream inference server did not answer in time",
            GatewayError::RouteNotAllowed => "this gateway does not serve this route",
        }
    }

    /// The problem+json answer.
    pub fn http_response<B>(self) -> Response<PassportBody<B>> {
        problem_response(self.status(), self.code(), self.message()).map(PassportBody::from_full)
    }
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Appends the client to `X-Forwarded-For` and `Forwarded` (RFC 7239).
fn add_forwarded(headers: &mut HeaderMap, peer: SocketAddr, host: Option<&HeaderValue>) {
    let ip = peer.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    let node = if peer.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip
    };
    let mut element = format!("for={node};proto=http");
    if let Some(h) = host.and_then(|h| h.to_str().ok()) {
        if !h.contains(['"', '\\']) {
            element.push_str(&format!(";host=\"{h}\""));
        }
    }
    let forwarded = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}

struct Shared<B> {
    client: Client<HttpConnector, PassportBody<B>>,
    upstream: Upstream,
    response_timeout: Duration,
}

/// Forwards requests to the upstream. One per connection (it knows the peer); clones
/// share the connection pool.
pub struct Proxy<B> {
    shared: Arc<Shared<B>>,
    peer: SocketAddr,
}

impl<B> Clone for Proxy<B> {
    fn clone(&self) -> Self {
        Proxy {
            shared: Arc::clone(&self.shared),
            peer: self.peer,
        }
    }
}

impl<B> Proxy<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A proxy to `upstream` with a pooled client.
    pub fn new(
        upstream: Upstream,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Proxy<B> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        Proxy {
            shared: Arc::new(Shared {
                client: Client::builder(TokioExecutor::new()).build(connector),
                upstream,
                response_timeout,
            }),
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// This proxy, for a connection from `peer`.
    pub fn for_peer(&self, peer: SocketAddr) -> Proxy<B> {
        Proxy {
            shared: Arc::clone(&self.shared),
            peer,
        }
    }
}

/// The upstream's response body, or the gateway's own answer.
pub type ProxyBody = PassportBody<hyper::body::Incoming>;

impl<B> Service<Request<PassportBody<B>>> for Proxy<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<PassportBody<B>>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let peer = self.peer;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let target = format!("{}{path}", shared.upstream.base_path);
            let uri = Uri::builder()
                .scheme("http")
                .authority(shared.upstream.authority.clone())
                .path_and_query(target)
                .build();
            let Ok(uri) = uri else {
                return Ok(GatewayError::UpstreamUnavailable.http_response());
            };
            strip_hop_by_hop(&mut parts.headers);
            let host = parts.headers.remove(header::HOST);
            add_forwarded(&mut parts.headers, peer, host.as_ref());
            if let Some(h) = host {
                parts.headers.insert("x-forwarded-host", h);
            }
            parts.uri = uri;
            parts.version = http::Version::HTTP_11;
            let sent = shared.client.request(Request::from_parts(parts, body));
            match tokio::time::timeout(shared.response_timeout, sent).await {
                Ok(Ok(resp)) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    Ok(Response::from_parts(parts, PassportBody::original(body)))
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "upstream request failed");
                    Ok(GatewayError::UpstreamUnavailable.http_response())
                }
                Err(_) => {
                    tracing::warn!("upstream response timed out");
                    Ok(GatewayError::UpstreamTimeout.http_response())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn forwarded_headers_are_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(
            &mut h,
            "127.0.0.2:5000".parse().unwrap(),
            Some(&HeaderValue::from_static("gw.local")),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(
            h[header::FORWARDED],
            "for=127.0.0.2;proto=http;host=\"gw.local\""
        );
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "[::1]:5000".parse().unwrap(), None);
        assert_eq!(h[header::FORWARDED], "for=\"[::1]\";proto=http");
    }
}
