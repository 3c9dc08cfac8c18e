//! RFC 9457 problem documents: the one place that turns a code, a status and a message
//! into an HTTP answer, for passport rejections and gateway errors alike.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// `application/problem+json` with `type`, `title`, `status`, `detail`, `code` and
/// `error` (equal to `code`, the shape the reference answers).
pub fn problem_response(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "type": format!("urn:passport-gate:error:{code}"),
        "title": message,
        "status": status.as_u16(),
        "detail": message,
        "code": code,
        "error": code,
    })
    .to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}
