//! Grants from a chain node's Cosmos REST (LCD) API:
//! `GET /cosmos/authz/v1beta1/grants?granter=..&grantee=..&msg_type_url=..`.

use super::{Grant, GrantFuture, GrantQueryError, GrantSource};
use passport_core::time::Timestamp;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// The largest LCD answer read; a node answering more is treated as broken.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The most pages followed for one query.
const MAX_PAGES: usize = 32;
/// The gRPC status code NotFound, which the SDK answers when no grant exists.
const GRPC_NOT_FOUND: i64 = 5;

/// Queries x/authz grants from a chain node over `http://` (loopback or a private
/// network) or `https://` (certificate and name verified, see
/// [`crate::gateway::tls::client_config`]).
#[derive(Clone, Debug)]
pub struct LcdGrantSource {
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

#[derive(Deserialize)]
struct GrantsAnswer {
    #[serde(default)]
    grants: Vec<LcdGrant>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct LcdGrant {
    #[serde(default)]
    expiration: Option<Timestamp>,
}

#[derive(Deserialize)]
struct Pagination {
    #[serde(default)]
    next_key: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    code: i64,
    #[serde(default)]
    message: String,
}

impl LcdGrantSource {
    /// A source for the node at `base_url` (`http://` or `https://host[:port]`, no
    /// trailing path); an `https://` node is verified as `tls` says (its roots, a private
    /// CA, a client certificate for mTLS).
    pub fn with_tls(
        base_url: &str,
        tls: rustls::ClientConfig,
    ) -> Result<LcdGrantSource, GrantQueryError> {
        let base = base_url.trim_end_matches('/');
        let uri: http::Uri = base
            .parse()
            .map_err(|e| GrantQueryError(format!("chain node URL {base_url:?}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(GrantQueryError(format!(
                "chain node URL {base_url:?} must be http:// or https://host[:port]"
            )));
        }
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(LcdGrantSource {
            base: base.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Whether the node answers its node-info endpoint (any status) within `wait`.
    pub async fn answers(&self, wait: std::time::Duration) -> bool {
        let Ok(uri) =
            format!("{}/cosmos/base/tendermint/v1beta1/node_info", self.base).parse::<http::Uri>()
        else {
            return false;
        };
        matches!(
            tokio::time::timeout(wait, self.client.get(uri)).await,
            Ok(Ok(_))
        )
    }

    async fn page(&self, url: String) -> Result<(http::StatusCode, Bytes), GrantQueryError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| GrantQueryError(format!("bad query URL: {e}")))?;
        let resp = self.client.get(uri).await.map_err(|e| {
            GrantQueryError(format!(
                "chain node unreachable: {}",
                crate::error_chain(&e)
            ))
        })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| GrantQueryError(format!("reading the chain node's answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    }

    async fn query(
        &self,
        granter: &str,
        grantee: &str,
        msg: &str,
    ) -> Result<Vec<Grant>, GrantQueryError> {
        let mut grants = Vec::new();
        let mut next_key: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut url = format!(
                "{}/cosmos/authz/v1beta1/grants?granter={}&grantee={}&msg_type_url={}",
                self.base,
                percent_encode(granter),
                percent_encode(grantee),
                percent_encode(msg)
            );
            if let Some(k) = &next_key {
                url.push_str("&pagination.key=");
                url.push_str(&percent_encode(k));
            }
            let (status, body) = self.page(url).await?;
            if !status.is_success() {
                return match serde_json::from_slice::<ErrorAnswer>(&body) {
                    Ok(e) if e.code == GRPC_NOT_FOUND => Ok(Vec::new()),
                    Ok(e) => Err(GrantQueryError(format!(
                        "chain node answered {status} with code {}: {}",
                        e.code,
                        e.message.chars().take(200).collect::<String>()
                    ))),
                    Err(_) => Err(GrantQueryError(format!("chain node answered {status}"))),
                };
            }
            let answer: GrantsAnswer = serde_json::from_slice(&body).map_err(|e| {
                GrantQueryError(format!("chain node answer is not a grants list: {e}"))
            })?;
            grants.extend(answer.grants.into_iter().map(|g| Grant {
                granter: granter.to_owned(),
                grantee: grantee.to_owned(),
                msg_type_url: msg.to_owned(),
                expiration: g.expiration,
            }));
            next_key = answer
                .pagination
                .and_then(|p| p.next_key)
                .filter(|k| !k.is_empty());
            if next_key.is_none() {
                return Ok(grants);
            }
        }
        Err(GrantQueryError(format!(
            "more than {MAX_PAGES} pages of grants"
        )))
    }
}

impl GrantSource for LcdGrantSource {
    fn grants<'a>(
        &'a self,
        granter: &'a str,
        grantee: &'a str,
        msg_type_url: &'a str,
    ) -> GrantFuture<'a> {
        Box::pin(self.query(granter, grantee, msg_type_url))
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> rustls::ClientConfig {
        let _ = rustls::crypto::ring::default_provider().install_default();
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode("/inference.inference.MsgStartInference"),
            "%2Finference.inference.MsgStartInference"
        );
        assert_eq!(percent_encode("a+b="), "a%2Bb%3D");
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(LcdGrantSource::with_tls("http://127.0.0.1:1317", tls()).is_ok());
        assert!(LcdGrantSource::with_tls("https://node.example", tls()).is_ok());
        assert!(LcdGrantSource::with_tls("ftp://node.example", tls()).is_err());
        assert!(LcdGrantSource::with_tls("not a url", tls()).is_err());
    }
}
