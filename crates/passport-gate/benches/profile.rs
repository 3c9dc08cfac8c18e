//! `cargo bench --bench profile -- MODE SIZE ITERATIONS`: runs one path of the verify
//! bench in a plain loop, for `valgrind --tool=callgrind` (instruction counts are
//! deterministic where wall-clock time on a shared machine is not). MODE is `warm` (the
//! verifier, cache hit), `layer` (the whole layer, cache hit, over an inner service that
//! drains the body), `cold` (the verifier, cache miss), `shed` (the layer refusing a
//! passport with `verification_busy`), `k256` or `libsecp256k1` (key decode and one
//! verification); SIZE is the body in bytes.
//!
//! ```text
//! cargo bench --bench profile --no-run
//! valgrind --tool=callgrind --callgrind-out-file=layer.out \
//!     target/release/deps/profile-* layer 65536 200
//! callgrind_annotate layer.out | head -40
//! ```

use bytes::Bytes;
use criterion::black_box;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use passport_core::time::{FixedClock, Timestamp};
use passport_core::verifier::{PassportHeaders, PassportRequest};
use passport_gate::{Config, PassportLayer, Verifier};
use sha2::Digest;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service, ServiceExt};

#[path = "../tests/support/mod.rs"]
mod support;

const URI: &str = "/v1/chat/completions";
const NOW: &str = "2026-05-21T12:00:00Z";

fn body_of(size: usize) -> Vec<u8> {
    let head = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":""#;
    let tail = br#""}]}"#;
    let mut b = head.to_vec();
    b.resize(size.max(head.len() + tail.len()) - tail.len(), b'a');
    b.extend_from_slice(tail);
    b
}

fn config() -> Config {
    Config {
        cold_verifications_per_second: 0,
        ..Config::for_chain("gonka-mainnet")
    }
}

fn verifier() -> Verifier {
    Verifier::with_clock(
        &config(),
        Arc::new(FixedClock::new(Timestamp::parse(NOW).unwrap())),
    )
    .unwrap()
}

/// The inner service: drains the body and answers an empty 200.
#[derive(Clone)]
struct Drain;

impl<B: Body<Data = Bytes> + Send + 'static> Service<Request<B>> for Drain {
    type Response = Response<http_body_util::Empty<Bytes>>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<B>) -> Self::Future {
        Box::pin(async move {
            let mut body = std::pin::pin!(req.into_body());
            while let Some(f) = body.frame().await {
                black_box(f.ok());
            }
            Ok(Response::new(http_body_util::Empty::new()))
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map_or("layer", String::as_str);
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let iterations: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let f = support::fixture(
        "urn:aps:agent:bench",
        Some(vec!["qwen/qwen3-32b".into()]),
        Some("bench"),
    );
    let body = body_of(size);
    let headers = PassportHeaders::decode(&f.passport, &f.sign(URI, &body)).unwrap();
    let request = PassportRequest {
        passport: &headers.passport,
        signature: &headers.signature,
        method: "POST",
        uri: URI,
        body: &body,
        model: "qwen/qwen3-32b",
    };
    match mode {
        "warm" => {
            let v = verifier();
            v.verify(&request).unwrap();
            for _ in 0..iterations {
                black_box(v.verify(black_box(&request)).unwrap());
            }
        }
        "cold" => {
            for _ in 0..iterations {
                black_box(verifier().verify(black_box(&request)).unwrap());
            }
        }
        "layer" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let layer = PassportLayer::builder(config())
                .clock(Arc::new(FixedClock::new(Timestamp::parse(NOW).unwrap())))
                .build()
                .unwrap();
            let svc = layer.layer(Drain);
            let passport = HeaderValue::from_str(&f.passport).unwrap();
            let sig = HeaderValue::from_str(&f.sign(URI, &body)).unwrap();
            let body = Bytes::from(body.clone());
            let request = || {
                Request::post(URI)
                    .header("x-agent-passport", passport.clone())
                    .header("x-agent-sig", sig.clone())
                    .body(http_body_util::Full::new(body.clone()))
                    .unwrap()
            };
            for _ in 0..=iterations {
                let r = rt.block_on(svc.clone().oneshot(request())).unwrap();
                assert_eq!(r.status(), 200);
            }
        }
        // A forged passport refused by the cold-verification bound (503
        // verification_busy), through the whole layer: what shedding costs.
        "shed" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let layer = PassportLayer::builder(Config {
                cold_verifications_per_second: 1,
                ..Config::for_chain("gonka-mainnet")
            })
            .clock(Arc::new(FixedClock::new(Timestamp::parse(NOW).unwrap())))
            .build()
            .unwrap();
            let svc = layer.layer(Drain);
            let passport = HeaderValue::from_str(&f.passport).unwrap();
            let sig = HeaderValue::from_str(&f.sign(URI, &body)).unwrap();
            let body = Bytes::from(body.clone());
            let request = || {
                Request::post(URI)
                    .header("x-agent-passport", passport.clone())
                    .header("x-agent-sig", sig.clone())
                    .body(http_body_util::Full::new(body.clone()))
                    .unwrap()
            };
            // A first passport takes the one token; this one is never cached.
            let _ = rt.block_on(svc.clone().oneshot(request())).unwrap();
            let other = support::fixture("urn:aps:agent:other", None, None);
            let other_passport = HeaderValue::from_str(&other.passport).unwrap();
            for _ in 0..=iterations {
                let mut r = request();
                r.headers_mut()
                    .insert("x-agent-passport", other_passport.clone());
                let r = rt.block_on(svc.clone().oneshot(r)).unwrap();
                assert_eq!(r.status(), 503);
            }
        }
        // The secp256k1 part of a cold verify: decoding the compressed principal key and
        // checking one signature over a prehashed message, with k256 (what the verifier
        // uses) and with libsecp256k1 (the `secp256k1` crate, evaluated for issue 15).
        "k256" => {
            use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
            let sk = k256::ecdsa::SigningKey::from_slice(&[0x74; 32]).unwrap();
            let digest: [u8; 32] = sha2::Sha256::digest(b"adr-036 sign bytes").into();
            let sig: k256::ecdsa::Signature = sk.sign_prehash(&digest).unwrap();
            let key = sk.verifying_key().to_sec1_bytes();
            for _ in 0..iterations {
                let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(black_box(&key)).unwrap();
                assert!(vk.verify_prehash(black_box(&digest), &sig).is_ok());
            }
        }
        "libsecp256k1" => {
            let secp = secp256k1::Secp256k1::verification_only();
            let sk = k256::ecdsa::SigningKey::from_slice(&[0x74; 32]).unwrap();
            let digest: [u8; 32] = sha2::Sha256::digest(b"adr-036 sign bytes").into();
            let sig: k256::ecdsa::Signature =
                k256::ecdsa::signature::hazmat::PrehashSigner::sign_prehash(&sk, &digest).unwrap();
            let key = sk.verifying_key().to_sec1_bytes();
            let sig = secp256k1::ecdsa::Signature::from_compact(&sig.to_bytes()).unwrap();
            let msg = secp256k1::Message::from_digest(digest);
            for _ in 0..iterations {
                let pk = secp256k1::PublicKey::from_slice(black_box(&key)).unwrap();
                assert!(secp.verify_ecdsa(black_box(&msg), &sig, &pk).is_ok());
            }
        }
        other => panic!("unknown mode {other}: warm, layer, cold, shed, k256 or libsecp256k1"),
    }
}
