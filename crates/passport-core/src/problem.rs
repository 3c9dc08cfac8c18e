//! RFC 9457 problem documents: the one place that turns a code, a status and a message
//! into an error answer, for passport rejections and gateway errors alike. The answer's
//! body is a `String`; the layer and the axum extractor put it in their body types.

use http::{HeaderValue, Response, StatusCode};

/// The problem document for `status`, `code` and `message` as an HTTP answer.
pub fn problem_response(status: StatusCode, code: &str, message: &str) -> Response<String> {
    problem_json(status, &problem_document(status, code, message))
}

/// `body` as an `application/problem+json` answer with `status`.
pub fn problem_json(status: StatusCode, body: &serde_json::Value) -> Response<String> {
    let mut resp = Response::new(body.to_string());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

/// The `application/problem+json` document with `type`, `title`, `status`, `detail` and
/// `code`, and `error` in OpenAI's error shape (`message`, `type`, `code`, `param`), so that
/// the OpenAI SDKs an agent is built on read our code and message instead of a bare status.
pub fn problem_document(status: StatusCode, code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "type": format!("urn:passport-gate:error:{code}"),
        "title": message,
        "status": status.as_u16(),
        "detail": message,
        "code": code,
        "error": {
            "message": message,
            "type": openai_error_type(status),
            "code": code,
            "param": null,
        },
    })
}

/// The OpenAI error `type` for a status, as OpenAI's own API names its classes.
pub fn openai_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}
