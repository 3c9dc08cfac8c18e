//! Test support for the layer: the signed fixture passports of passport-core's tests
//! (one copy, included from there) and an HTTP client that POSTs with them. The benches
//! include this file too; passport-gate-cli's tests/support builds on it.
#![allow(dead_code)]

#[path = "../../../passport-core/tests/support/mod.rs"]
mod fixtures;

pub use fixtures::*;

/// POSTs `body` to `http://addr{uri}` with `headers`; returns the status and body text.
pub async fn post(
    addr: std::net::SocketAddr,
    uri: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String) {
    use http_body_util::BodyExt;
    let mut req = http::Request::post(format!("http://{addr}{uri}"));
    for (n, v) in headers {
        req = req.header(n, v);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let resp = client
        .request(
            req.body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
                body,
            )))
            .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}
