//! The client side: a tower layer that signs outgoing `http::Request`s with an agent
//! key and a passport, usable with hyper-util's client.
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use passport_gate::client::SignerLayer;
//! use passport_core::keyfile::load_agent_secret;
//! use passport_core::mint::AgentSigner;
//! use tower::{Layer, ServiceExt};
//!
//! # async fn run(passport: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let agent = load_agent_secret("agent.json".as_ref())?;
//! let signer = AgentSigner::new(agent, passport, "gonka-mainnet")?;
//! let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
//! let signed = SignerLayer::new(signer).layer(client);
//! let request = http::Request::post("http://127.0.0.1:8080/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"qwen/qwen3-32b","messages":[]}"#)))?;
//! let response = signed.oneshot(request).await?;
//! println!("{}", response.status());
//! # Ok(())
//! # }
//! ```
//!
//! Calling a Gonka API node directly, the request also carries the developer's native
//! signature ([`SignerLayer::with_native`]): both signatures cover the same final body.
//!
//! ```no_run
//! # use passport_core::mint::AgentSigner;
//! use passport_core::gonka::{NativeSigner, TransferAddresses};
//! use passport_core::keyfile::principal_secret_from_hex_or_path;
//! use passport_gate::client::SignerLayer;
//!
//! # fn run(signer: AgentSigner) -> Result<(), Box<dyn std::error::Error>> {
//! let gonka = NativeSigner::new(&principal_secret_from_hex_or_path("gonka.json", "gonka key")?, "gonka")?;
//! let nodes = TransferAddresses::endpoints(
//!     ["https://node1.example/v1;gonka1w508d6qejxtdg4y5r3zarvary0c5xw7k2gsyg6"],
//!     "gonka",
//! )?;
//! let layer = SignerLayer::new(signer).with_native(gonka, nodes);
//! # Ok(())
//! # }
//! ```

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use passport_core::gonka::{EndpointError, NativeSigner, TransferAddresses};
use passport_core::mint::{AgentSigner, MintError};
use passport_core::verifier::{PASSPORT_HEADER, SIGNATURE_HEADER};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Adds `X-Agent-Passport` and `X-Agent-Sig` to every request, and with
/// [`SignerLayer::with_native`] Gonka's four native signature headers too.
#[derive(Clone, Debug)]
pub struct SignerLayer {
    signers: Arc<Signers>,
}

/// What each request is signed with.
#[derive(Debug)]
struct Signers {
    agent: AgentSigner,
    native: Option<(NativeSigner, TransferAddresses)>,
}

impl SignerLayer {
    /// A layer signing with `signer`.
    pub fn new(signer: AgentSigner) -> SignerLayer {
        SignerLayer {
            signers: Arc::new(Signers {
                agent: signer,
                native: None,
            }),
        }
    }

    /// Also signs every request natively with a developer's Gonka key, for a Gonka API
    /// node: `Authorization` (replacing any other), `X-Requester-Address`, `X-Timestamp`
    /// (from [`passport_core::gonka::monotonic_timestamp_ns`], so no two requests share
    /// one) and `X-Transfer-Address` when the request's transfer address is not empty.
    ///
    /// `transfer` gives each request's transfer address from its URI (absolute, as
    /// hyper's client takes it); a URI that no endpoint of the list serves is refused
    /// with [`SignError::Transfer`], since the node would refuse a signature for another.
    pub fn with_native(self, signer: NativeSigner, transfer: TransferAddresses) -> SignerLayer {
        SignerLayer {
            signers: Arc::new(Signers {
                agent: self.signers.agent.clone(),
                native: Some((signer, transfer)),
            }),
        }
    }
}

impl<S> Layer<S> for SignerLayer {
    type Service = SignerService<S>;
    fn layer(&self, inner: S) -> SignerService<S> {
        SignerService {
            inner,
            signers: Arc::clone(&self.signers),
        }
    }
}

/// The service produced by [`SignerLayer`]. It reads the request body once (both
/// signatures cover it), then sends exactly those bytes as a [`Full`] body.
#[derive(Clone, Debug)]
pub struct SignerService<S> {
    inner: S,
    signers: Arc<Signers>,
}

/// Why a request could not be signed or sent.
#[derive(Debug)]
pub enum SignError<E> {
    /// The body could not be read.
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// The request could not be signed.
    Sign(MintError),
    /// The passport is not a valid HTTP header value.
    PassportNotHeaderValue,
    /// The signature is not a valid HTTP header value.
    SignatureNotHeaderValue,
    /// No transfer address for the request's URI (see [`SignerLayer::with_native`]).
    Transfer(EndpointError),
    /// A native signature header (the transfer address, as configured) is not a valid
    /// HTTP header value.
    NativeNotHeaderValue {
        /// The header's name.
        name: &'static str,
    },
    /// The inner service failed.
    Inner(E),
}

impl<E: std::fmt::Display> std::fmt::Display for SignError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignError::Body(e) => write!(f, "reading the request body: {e}"),
            SignError::Sign(e) => write!(f, "signing the request: {e}"),
            SignError::PassportNotHeaderValue => {
                f.write_str("signing the request: the passport is not a valid header value")
            }
            SignError::SignatureNotHeaderValue => {
                f.write_str("signing the request: the signature is not a valid header value")
            }
            SignError::Transfer(e) => write!(f, "signing the request natively: {e}"),
            SignError::NativeNotHeaderValue { name } => {
                write!(
                    f,
                    "signing the request natively: {name} is not a valid header value"
                )
            }
            SignError::Inner(e) => write!(f, "{e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for SignError<E> {
    /// The underlying error, so that a caller can name the cause (connection refused,
    /// DNS, TLS, timeout) from the chain.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SignError::Body(e) => Some(e.as_ref()),
            SignError::Sign(e) => Some(e),
            SignError::Transfer(e) => Some(e),
            SignError::PassportNotHeaderValue
            | SignError::SignatureNotHeaderValue
            | SignError::NativeNotHeaderValue { .. } => None,
            SignError::Inner(e) => Some(e),
        }
    }
}

impl<S, B> Service<Request<B>> for SignerService<S>
where
    S: Service<Request<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = S::Response;
    type Error = SignError<S::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(SignError::Inner)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let signers = Arc::clone(&self.signers);
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| SignError::Body(e.into()))?
                .to_bytes();
            let uri = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let signer = &signers.agent;
            let sig = signer
                .sign(parts.method.as_str(), uri, &bytes)
                .map_err(SignError::Sign)?;
            let passport = HeaderValue::from_str(signer.passport())
                .map_err(|_| SignError::PassportNotHeaderValue)?;
            let sig =
                HeaderValue::from_str(&sig).map_err(|_| SignError::SignatureNotHeaderValue)?;
            parts.headers.insert(PASSPORT_HEADER, passport);
            parts.headers.insert(SIGNATURE_HEADER, sig);
            if let Some((native, transfer)) = &signers.native {
                let transfer = transfer
                    .for_url(&parts.uri.to_string())
                    .map_err(SignError::Transfer)?;
                for (name, value) in native.sign_now(&bytes, transfer).pairs() {
                    let value = HeaderValue::from_str(&value)
                        .map_err(|_| SignError::NativeNotHeaderValue { name })?;
                    parts.headers.insert(name, value);
                }
            }
            inner
                .call(Request::from_parts(parts, Full::new(bytes)))
                .await
                .map_err(SignError::Inner)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passport_core::crypto::{AgentSecret, PrincipalSecret};
    use passport_core::gonka::{verify_native, NativeHeaders};
    use passport_core::mint::{verify_json, MintOptions, VerifyOptions};
    use std::convert::Infallible;
    use std::sync::Mutex;
    use tower::ServiceExt;

    const CHAIN: &str = "gonka-test";
    const NODE1: &str = "gonka1w508d6qejxtdg4y5r3zarvary0c5xw7k2gsyg6";
    const NODE2: &str = "gonka14h0ycu78h88wzldxc7e79vhw5xsde0n85evmum";
    const BODY: &[u8] = br#"{"model":"m","messages":[]}"#;

    fn gonka_secret() -> PrincipalSecret {
        PrincipalSecret::from_bytes(&[0xb2; 32]).unwrap()
    }

    fn agent_signer() -> AgentSigner {
        let agent = AgentSecret::from_bytes(&[7; 32]);
        let options = format!(
            r#"{{"chain_id":"{CHAIN}","agent_id":"urn:aps:agent:t","agent_pubkey":"{}","ttl_seconds":600}}"#,
            agent.public_key().to_base64()
        );
        let principal = PrincipalSecret::from_bytes(&[9; 32]).unwrap();
        let passport = MintOptions::from_json(&options)
            .unwrap()
            .mint(&principal)
            .unwrap();
        AgentSigner::new(agent, &passport, CHAIN).unwrap()
    }

    type Seen = Arc<Mutex<Vec<Request<Full<Bytes>>>>>;

    /// Sends `request` through the layer to a service that keeps what it receives.
    async fn send(
        layer: SignerLayer,
        request: Request<Full<Bytes>>,
    ) -> Result<Request<Bytes>, String> {
        let seen: Seen = Arc::default();
        let keep = Arc::clone(&seen);
        let inner = tower::service_fn(move |req: Request<Full<Bytes>>| {
            keep.lock().unwrap().push(req);
            async { Ok::<_, Infallible>(()) }
        });
        layer
            .layer(inner)
            .oneshot(request)
            .await
            .map_err(|e| e.to_string())?;
        let req = seen.lock().unwrap().pop().unwrap();
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Ok(Request::from_parts(parts, bytes))
    }

    fn post(url: &str) -> Request<Full<Bytes>> {
        Request::post(url)
            .header("authorization", "Bearer unused")
            .body(Full::new(Bytes::from_static(BODY)))
            .unwrap()
    }

    fn passport_verdict(req: &Request<Bytes>) -> serde_json::Value {
        let header = |name| req.headers()[name].to_str().unwrap().to_owned();
        let options = VerifyOptions {
            chain_id: CHAIN.into(),
            now: None,
            max_ttl_seconds: 3600,
            prefix: "gonka".into(),
            method: req.method().to_string(),
            uri: req.uri().path_and_query().unwrap().to_string(),
            passport: header(PASSPORT_HEADER),
            sig: header(SIGNATURE_HEADER),
        };
        verify_json(&options, req.body()).unwrap()
    }

    fn native_layer(transfer: TransferAddresses) -> SignerLayer {
        let native = NativeSigner::new(&gonka_secret(), "gonka").unwrap();
        SignerLayer::new(agent_signer()).with_native(native, transfer)
    }

    #[tokio::test]
    async fn both_signatures_are_sent_and_each_verifies_over_the_bytes_sent() {
        let layer = native_layer(TransferAddresses::one(Some(NODE1), "gonka").unwrap());
        let req = send(layer, post("https://node1.example/v1/chat/completions?x=1"))
            .await
            .unwrap();
        assert_eq!(req.body().as_ref(), BODY);
        assert_eq!(
            passport_verdict(&req)["ok"],
            true,
            "{}",
            passport_verdict(&req)
        );
        let native = NativeHeaders::from_headers(req.headers()).unwrap();
        assert_eq!(native.transfer_address.as_deref(), Some(NODE1));
        assert!(!native.authorization.starts_with("Bearer"));
        let key = gonka_secret().public_key();
        assert_eq!(
            verify_native(&key, &native, req.body(), "gonka", NODE2),
            Ok(())
        );
        assert!(verify_native(&key, &native, b"{}", "gonka", NODE2).is_err());
    }

    #[tokio::test]
    async fn without_native_signing_only_the_passport_headers_are_added() {
        let req = send(
            SignerLayer::new(agent_signer()),
            post("https://n.example/v1"),
        )
        .await
        .unwrap();
        assert_eq!(passport_verdict(&req)["ok"], true);
        assert_eq!(req.headers()["authorization"], "Bearer unused");
        assert!(req.headers().get("x-timestamp").is_none());
    }

    #[tokio::test]
    async fn the_endpoint_list_picks_each_requests_transfer_address() {
        let list = TransferAddresses::endpoints(
            [
                format!("https://node1.example/v1;{NODE1}").as_str(),
                format!("https://node2.example/v1;{NODE2}").as_str(),
                "https://gate.example/v1",
            ],
            "gonka",
        )
        .unwrap();
        let layer = native_layer(list);
        let key = gonka_secret().public_key();
        for (url, transfer) in [
            ("https://node1.example/v1/chat/completions", Some(NODE1)),
            ("https://node2.example/v1/chat/completions", Some(NODE2)),
            ("https://gate.example/v1/chat/completions", None),
        ] {
            let req = send(layer.clone(), post(url)).await.unwrap();
            let native = NativeHeaders::from_headers(req.headers()).unwrap();
            assert_eq!(native.transfer_address.as_deref(), transfer, "{url}");
            // Without the header the node signs with its own address; a gate in front of
            // it that signed with none checks the empty one.
            let node = transfer.unwrap_or("");
            assert_eq!(
                verify_native(&key, &native, req.body(), "gonka", node),
                Ok(())
            );
        }
        let err = send(layer, post("https://node3.example/v1/chat/completions"))
            .await
            .unwrap_err();
        assert!(err.contains("no endpoint in the list serves"), "{err}");
        assert!(err.contains("node3.example"), "{err}");
    }

    #[tokio::test]
    async fn two_requests_with_the_same_body_get_different_native_signatures() {
        let layer = native_layer(TransferAddresses::one(Some(NODE1), "gonka").unwrap());
        let a = send(layer.clone(), post("https://n.example/v1"))
            .await
            .unwrap();
        let b = send(layer, post("https://n.example/v1")).await.unwrap();
        let (a, b) = (
            NativeHeaders::from_headers(a.headers()).unwrap(),
            NativeHeaders::from_headers(b.headers()).unwrap(),
        );
        assert!(b.timestamp > a.timestamp);
        assert_ne!(a.authorization, b.authorization);
    }
}
