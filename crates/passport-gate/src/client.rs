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

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use passport_core::mint::{AgentSigner, MintError};
use passport_core::verifier::{PASSPORT_HEADER, SIGNATURE_HEADER};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Adds `X-Agent-Passport` and `X-Agent-Sig` to every request.
#[derive(Clone, Debug)]
pub struct SignerLayer {
    signer: Arc<AgentSigner>,
}

impl SignerLayer {
    /// A layer signing with `signer`.
    pub fn new(signer: AgentSigner) -> SignerLayer {
        SignerLayer {
            signer: Arc::new(signer),
        }
    }
}

impl<S> Layer<S> for SignerLayer {
    type Service = SignerService<S>;
    fn layer(&self, inner: S) -> SignerService<S> {
        SignerService {
            inner,
            signer: Arc::clone(&self.signer),
        }
    }
}

/// The service produced by [`SignerLayer`]. It reads the request body once (the
/// signature covers it), then sends it as a [`Full`] body.
#[derive(Clone, Debug)]
pub struct SignerService<S> {
    inner: S,
    signer: Arc<AgentSigner>,
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
            SignError::PassportNotHeaderValue | SignError::SignatureNotHeaderValue => None,
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
        let signer = Arc::clone(&self.signer);
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| SignError::Body(e.into()))?
                .to_bytes();
            let uri = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let sig = signer
                .sign(parts.method.as_str(), uri, &bytes)
                .map_err(SignError::Sign)?;
            let passport = HeaderValue::from_str(signer.passport())
                .map_err(|_| SignError::PassportNotHeaderValue)?;
            let sig =
                HeaderValue::from_str(&sig).map_err(|_| SignError::SignatureNotHeaderValue)?;
            parts.headers.insert(PASSPORT_HEADER, passport);
            parts.headers.insert(SIGNATURE_HEADER, sig);
            inner
                .call(Request::from_parts(parts, Full::new(bytes)))
                .await
                .map_err(SignError::Inner)
        })
    }
}
