//! A request without passport headers costs no heap allocation in the layer, whether
//! the layer is disabled or enabled.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use passport_gate::{Config, PassportLayer};
use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use tower::{Layer, Service};

/// An inner service that allocates nothing itself.
#[derive(Clone)]
struct Ready;

impl<B> Service<Request<B>> for Ready {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Empty<Bytes>>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<B>) -> Self::Future {
        std::future::ready(Ok(Response::new(Empty::new())))
    }
}

fn allocations_for_one_request(layer: &PassportLayer) -> u64 {
    let mut svc = layer.layer(Ready);
    let mut cx = Context::from_waker(Waker::noop());
    // Warm up once so that lazily initialised statics do not count.
    for round in 0..2 {
        let req = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let mut status = 0;
        let info = allocation_counter::measure(|| {
            assert!(Service::<Request<Empty<Bytes>>>::poll_ready(&mut svc, &mut cx).is_ready());
            let mut fut = std::pin::pin!(svc.call(req));
            if let Poll::Ready(Ok(resp)) = fut.as_mut().poll(&mut cx) {
                status = resp.status().as_u16();
            }
        });
        assert_eq!(status, 200, "the pass-through future completes at once");
        if round == 1 {
            return info.count_total;
        }
    }
    unreachable!()
}

#[test]
fn pass_through_allocates_nothing_in_the_layer() {
    let counted = allocation_counter::measure(|| {
        std::hint::black_box(Box::new([0u8; 64]));
    });
    assert_eq!(
        counted.count_total, 1,
        "the counter sees allocations on this thread"
    );
    let enabled = PassportLayer::new(Config::for_chain("gonka-mainnet")).unwrap();
    assert_eq!(
        allocations_for_one_request(&enabled),
        0,
        "enabled, no passport"
    );
    let disabled = PassportLayer::new(Config::default()).unwrap();
    assert_eq!(allocations_for_one_request(&disabled), 0, "disabled");
}
