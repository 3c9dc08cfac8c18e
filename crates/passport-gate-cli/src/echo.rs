//! A tiny OpenAI-compatible upstream for the demo, the end-to-end tests and the load
//! script: `POST /v1/chat/completions` and `POST /v1/completions` echo the last message
//! (or prompt) back, as one JSON completion or, with `"stream": true`, as server-sent
//! events; `GET /v1/models` lists the echo model. Every answer names its inference id in
//! `x-inference-id`.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The response body of the echo upstream.
type EchoBody = http_body_util::Either<Full<Bytes>, ChannelBody>;

/// A body whose chunks come from a channel, as a generating model produces them (and as
/// a slow client sends them, in the tests).
#[derive(Debug)]
pub struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// A running echo upstream; it stops when dropped.
#[derive(Debug)]
pub struct EchoUpstream {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoUpstream {
    /// Starts on `addr` (port 0 picks a free port). `chunk_delay` is the pause between
    /// streamed chunks.
    pub async fn start(addr: SocketAddr, chunk_delay: Duration) -> std::io::Result<EchoUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let counter = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let id = counter.fetch_add(1, Ordering::Relaxed);
                        answer(req, id, chunk_delay)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(EchoUpstream { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn json_response(status: StatusCode, id: u64, v: &Value) -> Response<EchoBody> {
    let mut r = Response::new(http_body_util::Either::Left(Full::new(Bytes::from(
        v.to_string(),
    ))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&format!("echo-{id}")) {
        r.headers_mut().insert("x-inference-id", v);
    }
    r
}

fn error(status: StatusCode, id: u64, message: &str) -> Response<EchoBody> {
    json_response(
        status,
        id,
        &json!({"error": {"message": message, "type": "invalid_request_error"}}),
    )
}

async fn answer(
    req: Request<Incoming>,
    id: u64,
    chunk_delay: Duration,
) -> Result<Response<EchoBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == http::Method::GET && path == "/v1/models" {
        return Ok(json_response(
            StatusCode::OK,
            id,
            &json!({"object": "list", "data": [{"id": "echo-1", "object": "model", "owned_by": "passport-gate"}]}),
        ));
    }
    if req.method() != http::Method::POST
        || (path != "/v1/chat/completions" && path != "/v1/completions")
    {
        return Ok(error(StatusCode::NOT_FOUND, id, "no such route"));
    }
    let Ok(body) = req.into_body().collect().await.map(|c| c.to_bytes()) else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            id,
            "the body could not be read",
        ));
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return Ok(error(StatusCode::BAD_REQUEST, id, "the body is not JSON"));
    };
    let model = request["model"].as_str().unwrap_or("echo-1").to_owned();
    let text = if path == "/v1/completions" {
        request["prompt"].as_str().unwrap_or_default().to_owned()
    } else {
        request["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let reply = format!("echo: {text}");
    if request["stream"] == Value::Bool(true) {
        return Ok(stream(id, model, reply, chunk_delay));
    }
    Ok(json_response(
        StatusCode::OK,
        id,
        &json!({
            "id": format!("echo-{id}"),
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": text.split_whitespace().count(), "completion_tokens": reply.split_whitespace().count()}
        }),
    ))
}

fn stream(id: u64, model: String, reply: String, delay: Duration) -> Response<EchoBody> {
    let words: Vec<String> = reply.split_inclusive(' ').map(str::to_owned).collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for word in words {
            let chunk = json!({
                "id": format!("echo-{id}"),
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": {"content": word}}]
            });
            if tx
                .send(Bytes::from(format!("data: {chunk}\n\n")))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(delay).await;
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    let mut r = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&format!("echo-{id}")) {
        r.headers_mut().insert("x-inference-id", v);
    }
    r
}
