//! `cargo bench --bench verify`: in one run, the verifier cold (cache miss) and warm
//! (cache hit), the whole layer with a passport over an in-memory inner service, the
//! floors they are judged against (one k256 verify, one ed25519-dalek strict verify,
//! SHA-256 of the body) for bodies of 256 B, 4 KiB, 64 KiB and 1 MiB, the parts of a
//! cold verify, and the enabled layer without a passport against no layer. Prints the
//! ratios at the end.

use bytes::Bytes;
use criterion::{black_box, BatchSize, BenchmarkId, Criterion};
use ed25519_dalek::{Signer, SigningKey};
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use passport_core::time::{FixedClock, Timestamp};
use passport_core::verifier::{PassportHeaders, PassportRequest};
use passport_gate::{Config, PassportLayer, Verifier};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service, ServiceExt};

#[path = "../tests/support/mod.rs"]
mod support;

const SIZES: [(usize, &str); 4] = [
    (256, "256B"),
    (4 * 1024, "4KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];
const URI: &str = "/v1/chat/completions";

fn body_of(size: usize) -> Vec<u8> {
    let head = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":""#;
    let tail = br#""}]}"#;
    let mut b = head.to_vec();
    b.resize(size - tail.len(), b'a');
    b.extend_from_slice(tail);
    b
}

struct Request1 {
    headers: PassportHeaders,
    body: Vec<u8>,
}

fn signed(size: usize) -> Request1 {
    let f = support::fixture(
        "urn:aps:agent:bench",
        Some(vec!["qwen/qwen3-32b".into()]),
        Some("bench"),
    );
    let body = body_of(size);
    Request1 {
        headers: PassportHeaders::decode(&f.passport, &f.sign(URI, &body)).unwrap(),
        body,
    }
}

fn verifier() -> Verifier {
    Verifier::with_clock(
        // Cold verifications unbounded: the bench verifies thousands per second.
        &Config {
            cold_verifications_per_second: 0,
            ..Config::for_chain("gonka-mainnet")
        },
        Arc::new(FixedClock::new(
            Timestamp::parse("2026-05-21T12:00:00Z").unwrap(),
        )),
    )
    .unwrap()
}

fn verify_once(v: &Verifier, r: &Request1) {
    let result = v.verify(&PassportRequest {
        passport: &r.headers.passport,
        signature: &r.headers.signature,
        method: "POST",
        uri: URI,
        body: &r.body,
        model: "qwen/qwen3-32b",
    });
    assert!(result.is_ok());
    black_box(result.ok());
}

fn bench_verifier(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("verify");
    for (size, label) in SIZES {
        let r = signed(size);
        g.bench_with_input(BenchmarkId::new("cold", label), &r, |b, r| {
            b.iter_batched_ref(verifier, |v| verify_once(v, r), BatchSize::SmallInput)
        });
        let warm = verifier();
        verify_once(&warm, &r);
        g.bench_with_input(BenchmarkId::new("warm", label), &r, |b, r| {
            b.iter(|| verify_once(&warm, r))
        });

        // The whole layer, cache warm: headers, body read, model, verify, forward.
        let layer = PassportLayer::builder(Config::for_chain("gonka-mainnet"))
            .clock(Arc::new(FixedClock::new(
                Timestamp::parse("2026-05-21T12:00:00Z").unwrap(),
            )))
            .build()
            .unwrap();
        let svc = layer.layer(Drain);
        let passport =
            HeaderValue::from_str(&passport_core::crypto::encode_base64(&r.headers.passport))
                .unwrap();
        let sig =
            HeaderValue::from_str(&passport_core::crypto::encode_base64(&r.headers.signature))
                .unwrap();
        let body = Bytes::from(r.body.clone());
        let request = || {
            Request::post(URI)
                .header("x-agent-passport", passport.clone())
                .header("x-agent-sig", sig.clone())
                .body(http_body_util::Full::new(body.clone()))
                .unwrap()
        };
        let status = rt
            .block_on(svc.clone().oneshot(request()))
            .unwrap()
            .status();
        assert_eq!(status, 200);
        g.bench_function(BenchmarkId::new("layer", label), |b| {
            b.iter(|| rt.block_on(svc.clone().oneshot(request())).unwrap())
        });

        // Floors: what any correct verifier must do at least once per request.
        let payload = passport_core::crypto::agent_signing_payload(
            "gonka-mainnet",
            "POST",
            URI,
            b"{}",
            &r.body,
        )
        .unwrap();
        let ed = SigningKey::from_bytes(&[0x73; 32]);
        let ed_sig = ed.sign(&payload);
        let ed_pub = ed.verifying_key();
        g.bench_function(BenchmarkId::new("floor_ed25519_strict", label), |b| {
            b.iter(|| assert!(ed_pub.verify_strict(black_box(&payload), &ed_sig).is_ok()))
        });
        g.bench_function(BenchmarkId::new("floor_sha256_body", label), |b| {
            b.iter(|| black_box(Sha256::digest(black_box(&r.body))))
        });
    }
    let sk = k256::ecdsa::SigningKey::from_slice(&[0x74; 32]).unwrap();
    let digest = Sha256::digest(b"adr-036 sign bytes");
    let sig: k256::ecdsa::Signature = sk.sign_prehash(&digest).unwrap();
    let vk = *sk.verifying_key();
    g.bench_function("floor_k256_verify", |b| {
        b.iter(|| assert!(vk.verify_prehash(black_box(&digest), &sig).is_ok()))
    });
    // The same signature with libsecp256k1, which the verifier uses (docs/performance.md).
    let secp = secp256k1::Secp256k1::verification_only();
    let secp_key = secp256k1::PublicKey::from_slice(&vk.to_sec1_bytes()).unwrap();
    let secp_sig = secp256k1::ecdsa::Signature::from_compact(&sig.to_bytes()).unwrap();
    let secp_msg = secp256k1::Message::from_digest(digest.into());
    g.bench_function("floor_libsecp256k1_verify", |b| {
        b.iter(|| {
            assert!(secp
                .verify_ecdsa(black_box(&secp_msg), &secp_sig, &secp_key)
                .is_ok())
        })
    });
    g.finish();

    // The parts of a cold verify beyond the floors.
    let mut g = c.benchmark_group("cold_parts");
    let r = signed(256);
    let envelope = passport_core::envelope::Envelope::parse(&r.headers.passport).unwrap();
    let pk = passport_core::crypto::decode_base64(&envelope.principal_pubkey.public_key).unwrap();
    let ak = passport_core::crypto::decode_base64(&envelope.agent_pubkey.public_key).unwrap();
    g.bench_function("envelope_parse_and_jcs", |b| {
        b.iter(|| passport_core::envelope::Envelope::parse(black_box(&r.headers.passport)).unwrap())
    });
    g.bench_function("principal_key_decode", |b| {
        b.iter(|| passport_core::crypto::PrincipalKey::from_compressed(black_box(&pk)).unwrap())
    });
    g.bench_function("agent_key_decode", |b| {
        b.iter(|| passport_core::crypto::AgentKey::from_bytes(black_box(&ak)).unwrap())
    });
    g.bench_function("adr036_sign_bytes", |b| {
        b.iter(|| {
            passport_core::crypto::adr036_sign_bytes(
                black_box(&envelope.principal_address),
                &envelope.signing_document(),
            )
        })
    });
    g.finish();
}

/// A body delivered in 16 KiB frames, as a socket would.
struct Chunked {
    data: Bytes,
    at: usize,
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.at >= self.data.len() {
            return Poll::Ready(None);
        }
        let end = (self.at + 16 * 1024).min(self.data.len());
        let chunk = self.data.slice(self.at..end);
        self.at = end;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
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

fn bench_layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("layer");
    let layer = PassportLayer::new(Config::for_chain("gonka-mainnet")).unwrap();
    for (size, label) in [(0usize, "empty"), (64 * 1024, "64KiB")] {
        let data = Bytes::from(vec![b'x'; size]);
        let request = || {
            Request::post(URI)
                .header("content-type", "application/json")
                .body(Chunked {
                    data: data.clone(),
                    at: 0,
                })
                .unwrap()
        };
        g.bench_function(BenchmarkId::new("no_layer", label), |b| {
            b.iter(|| rt.block_on(Drain.oneshot(request())).unwrap())
        });
        let svc = layer.layer(Drain);
        g.bench_function(BenchmarkId::new("enabled_no_passport", label), |b| {
            b.iter(|| rt.block_on(svc.clone().oneshot(request())).unwrap())
        });
    }
    g.finish();
}

fn estimate_ns(group: &str, id: &str) -> Option<f64> {
    // Where criterion writes: $CARGO_TARGET_DIR/criterion, else the workspace's
    // target/criterion (criterion asks cargo for the target directory, which is the
    // workspace's, two levels above this package).
    let root = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        std::path::PathBuf::from,
    );
    let path = root
        .join("criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn print_ratios() {
    println!("\nratios (criterion mean estimates):");
    let k256 = estimate_ns("verify", "floor_k256_verify");
    for (_, label) in SIZES {
        let get = |id: &str| estimate_ns("verify", &format!("{id}/{label}"));
        if let (Some(cold), Some(warm), Some(layer), Some(ed), Some(sha), Some(k)) = (
            get("cold"),
            get("warm"),
            get("layer"),
            get("floor_ed25519_strict"),
            get("floor_sha256_body"),
            k256,
        ) {
            println!(
                "  {label}: warm {:.1} us = {:.3} x (ed25519 + sha256 = {:.1} us); cold {:.1} us = {:.3} x (k256 + ed25519 + sha256 = {:.1} us); whole layer {:.1} us = {:.3} x warm",
                warm / 1e3,
                warm / (ed + sha),
                (ed + sha) / 1e3,
                cold / 1e3,
                cold / (k + ed + sha),
                (k + ed + sha) / 1e3,
                layer / 1e3,
                layer / warm
            );
        }
    }
    if let Some(k) = k256 {
        println!("  floor k256 verify: {:.1} us", k / 1e3);
    }
    if let Some(l) = estimate_ns("verify", "floor_libsecp256k1_verify") {
        println!(
            "  libsecp256k1 verify (what the verifier uses): {:.1} us",
            l / 1e3
        );
    }
    for part in [
        "envelope_parse_and_jcs",
        "principal_key_decode",
        "agent_key_decode",
        "adr036_sign_bytes",
    ] {
        if let Some(ns) = estimate_ns("cold_parts", part) {
            println!("  cold part {part}: {:.2} us", ns / 1e3);
        }
    }
    for label in ["empty", "64KiB"] {
        if let (Some(none), Some(on)) = (
            estimate_ns("layer", &format!("no_layer/{label}")),
            estimate_ns("layer", &format!("enabled_no_passport/{label}")),
        ) {
            println!("  layer {label}: no layer {:.0} ns, enabled without passport {:.0} ns, overhead {:.0} ns", none, on, on - none);
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .sample_size(40)
        .configure_from_args();
    bench_verifier(&mut c);
    bench_layer(&mut c);
    c.final_summary();
    print_ratios();
}
