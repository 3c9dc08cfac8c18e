//! Grants from a chain node's Cosmos REST (LCD) API:
//! `GET /cosmos/authz/v1beta1/grants?granter=..&grantee=..&msg_type_url=..`.

use super::{
    Account, AccountFuture, AccountSource, Grant, GrantFuture, GrantQueryError, GrantSource,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use passport_core::crypto::{decode_base64, PrincipalKey};
use passport_core::time::Timestamp;
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
struct AccountAnswer {
    account: LcdAccount,
}

#[derive(Deserialize)]
struct LcdAccount {
    #[serde(default)]
    pub_key: Option<LcdPubKey>,
}

#[derive(Deserialize)]
struct LcdPubKey {
    #[serde(rename = "@type")]
    type_url: String,
    key: String,
}

/// The only key type a requester's native signature can be checked with.
const SECP256K1_PUBKEY: &str = "/cosmos.crypto.secp256k1.PubKey";

#[derive(Deserialize)]
struct ErrorAnswer {
    code: i64,
    #[serde(default)]
    message: String,
}

impl LcdGrantSource {
    /// A source for the node at `base_url` (`http://` or `https://host[:port]`, no
    /// trailing path); an `https://` node is verified against the webpki roots.
    pub fn new(base_url: &str) -> Result<LcdGrantSource, GrantQueryError> {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| GrantQueryError(format!("chain node TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        LcdGrantSource::with_tls(base_url, tls)
    }

    /// The same, verifying an `https://` node as `tls` says (its roots, a private
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

impl LcdGrantSource {
    /// `GET /cosmos/auth/v1beta1/accounts/{address}`: 404 with code 5 is no account; a
    /// `pub_key` of null (or absent) is an account without a key; a key of another type
    /// than secp256k1 (multisig, ed25519) counts as none, since no native signature can
    /// verify under it; a secp256k1 key that is not a 33-byte compressed point is an error.
    async fn account_query(&self, address: &str) -> Result<Account, GrantQueryError> {
        let url = format!(
            "{}/cosmos/auth/v1beta1/accounts/{}",
            self.base,
            percent_encode(address)
        );
        let (status, body) = self.page(url).await?;
        if !status.is_success() {
            return match serde_json::from_slice::<ErrorAnswer>(&body) {
                Ok(e) if e.code == GRPC_NOT_FOUND => Ok(Account::Unknown),
                Ok(e) => Err(GrantQueryError(format!(
                    "chain node answered {status} with code {}: {}",
                    e.code,
                    e.message.chars().take(200).collect::<String>()
                ))),
                Err(_) => Err(GrantQueryError(format!("chain node answered {status}"))),
            };
        }
        parse_account(&body)
    }
}

fn parse_account(body: &[u8]) -> Result<Account, GrantQueryError> {
    let answer: AccountAnswer = serde_json::from_slice(body)
        .map_err(|e| GrantQueryError(format!("chain node answer is not an account: {e}")))?;
    match answer.account.pub_key {
        None => Ok(Account::NoPublicKey),
        Some(k) if k.type_url != SECP256K1_PUBKEY => Ok(Account::NoPublicKey),
        Some(k) => decode_base64(&k.key)
            .and_then(|b| PrincipalKey::from_compressed(&b))
            .map(Account::Key)
            .ok_or_else(|| GrantQueryError("chain node answered an invalid secp256k1 key".into())),
    }
}

impl AccountSource for LcdGrantSource {
    fn account<'a>(&'a self, address: &'a str) -> AccountFuture<'a> {
        Box::pin(self.account_query(address))
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

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode("/inference.inference.MsgStartInference"),
            "%2Finference.inference.MsgStartInference"
        );
        assert_eq!(percent_encode("a+b="), "a%2Bb%3D");
    }

    #[test]
    fn account_answers_are_read_as_the_node_writes_them() {
        let key = "Anm+Zn753LusVaBilc6HCwcCm/zbLc4o2VnygVsW+BeY";
        let with = format!(
            r#"{{"account":{{"@type":"/cosmos.auth.v1beta1.BaseAccount","address":"gonka1x","pub_key":{{"@type":"/cosmos.crypto.secp256k1.PubKey","key":"{key}"}},"account_number":"7","sequence":"1"}}}}"#
        );
        assert!(matches!(
            parse_account(with.as_bytes()),
            Ok(Account::Key(_))
        ));
        let without = br#"{"account":{"@type":"/cosmos.auth.v1beta1.BaseAccount","address":"gonka1x","pub_key":null,"account_number":"7","sequence":"0"}}"#;
        assert_eq!(parse_account(without).unwrap(), Account::NoPublicKey);
        let multisig = br#"{"account":{"pub_key":{"@type":"/cosmos.crypto.multisig.LegacyAminoPubKey","key":"x"}}}"#;
        assert_eq!(parse_account(multisig).unwrap(), Account::NoPublicKey);
        let bad =
            br#"{"account":{"pub_key":{"@type":"/cosmos.crypto.secp256k1.PubKey","key":"AAAA"}}}"#;
        assert!(parse_account(bad).is_err());
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(LcdGrantSource::new("http://127.0.0.1:1317").is_ok());
        assert!(LcdGrantSource::new("https://node.example").is_ok());
        assert!(LcdGrantSource::new("ftp://node.example").is_err());
        assert!(LcdGrantSource::new("not a url").is_err());
    }
}
