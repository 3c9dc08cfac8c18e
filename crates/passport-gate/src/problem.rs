//! The HTTP answers of refusals ([`passport_core::problem`]) with the layer's body type.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use passport_core::Rejection;
use std::sync::OnceLock;

/// The problem document for `status`, `code` and `message` as an HTTP answer.
pub fn problem_response(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    full(passport_core::problem::problem_response(
        status, code, message,
    ))
}

/// `body` as an `application/problem+json` answer with `status`.
pub fn problem_json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    full(passport_core::problem::problem_json(status, body))
}

/// The complete HTTP answer to a rejection ([`Rejection::http_response`]). The answers
/// are built once, at the first refusal: a refusal (what a flood of forged passports
/// mostly gets) then costs a copy of a ready head and a reference to a ready body, and
/// no JSON document built, formatted and serialized per request.
pub fn rejection_response(rejection: Rejection) -> Response<Full<Bytes>> {
    static READY: OnceLock<Vec<Response<Bytes>>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        Rejection::ALL
            .iter()
            .map(|r| r.http_response().map(Bytes::from))
            .collect()
    });
    // Every rejection is in `Rejection::ALL` (a unit test says so); one that were not
    // would be built here as before.
    match Rejection::ALL
        .iter()
        .position(|r| *r == rejection)
        .and_then(|i| ready.get(i))
    {
        Some(answer) => {
            let mut resp = Response::new(Full::new(answer.body().clone()));
            *resp.status_mut() = answer.status();
            *resp.headers_mut() = answer.headers().clone();
            resp
        }
        None => full(rejection.http_response()),
    }
}

fn full(resp: Response<String>) -> Response<Full<Bytes>> {
    resp.map(|body| Full::new(Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_carries_code_and_the_openai_error_shape() {
        use http_body_util::BodyExt;
        let resp = rejection_response(Rejection::AgentSigInvalid);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        assert!(resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("agent_sig_invalid"));
        let body = futures_lite_block_on(resp.into_body().collect())
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "agent_sig_invalid");
        assert_eq!(v["error"]["code"], "agent_sig_invalid");
        assert_eq!(v["error"]["message"], Rejection::AgentSigInvalid.message());
        assert_eq!(v["error"]["type"], "authentication_error");
        assert!(v["error"]["param"].is_null());
        assert_eq!(v["status"], 401);
    }

    #[test]
    fn every_ready_answer_is_the_one_built_for_it() {
        use http_body_util::BodyExt;
        for r in Rejection::ALL {
            for _ in 0..2 {
                let ready = rejection_response(r);
                let built = r.http_response();
                assert_eq!(ready.status(), built.status(), "{r:?}");
                assert_eq!(ready.headers(), built.headers(), "{r:?}");
                let body = futures_lite_block_on(ready.into_body().collect())
                    .unwrap()
                    .to_bytes();
                assert_eq!(body, built.body().as_bytes(), "{r:?}");
            }
        }
    }

    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
