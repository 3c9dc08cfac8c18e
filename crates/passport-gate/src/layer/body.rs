//! The body type of the layer, for requests and responses alike: either the original
//! body, whose frames are forwarded unchanged (so a request without a passport streams
//! exactly as it arrived), or bytes the layer holds (a verified request body, or a
//! rejection document).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::OwnedSemaphorePermit;

use crate::attribution::usage::{BodyEnd, EventOnEnd};

pin_project! {
    /// The body handed to the inner service, and the body of the layer's responses.
    #[project = PassportBodyProj]
    #[derive(Debug)]
    #[allow(missing_docs)]
    pub enum PassportBody<B> {
        /// The original body, untouched: a request without a passport (or with the layer
        /// off), or the inner service's response.
        Original { #[pin] body: B },
        /// Bytes the layer holds: the verified request body, read once and forwarded
        /// byte for byte, or a problem+json rejection. A request body keeps its share
        /// of the layer's body budget until it is dropped.
        Held { #[pin] body: Full<Bytes>, budget: Option<OwnedSemaphorePermit> },
        /// The inner service's response to an accepted request, forwarded unchanged
        /// while its attribution event takes note of the token usage it carries; the
        /// event is queued when the body ends or is dropped.
        Metered { #[pin] body: B, event: Box<EventOnEnd> },
    }
}

/// The layer's response body: the inner service's body, or a rejection document.
pub type ResponseBody<B> = PassportBody<B>;

impl<B> PassportBody<B> {
    /// Wraps the original body without reading it.
    pub fn original(body: B) -> Self {
        PassportBody::Original { body }
    }

    /// A body holding `bytes`.
    pub fn held(bytes: Bytes) -> Self {
        PassportBody::Held {
            body: Full::new(bytes),
            budget: None,
        }
    }

    /// A body holding `bytes` that were counted against the body budget: the bytes
    /// return to the budget when the body is dropped (once the inner service is done
    /// with it).
    pub(crate) fn held_within_budget(bytes: Bytes, budget: Option<OwnedSemaphorePermit>) -> Self {
        PassportBody::Held {
            body: Full::new(bytes),
            budget,
        }
    }

    /// `body`, metered for `event`. A body that is empty from the start is never
    /// polled (hyper checks `is_end_stream` first), so its event is queued here.
    pub(crate) fn metered(body: B, mut event: Box<EventOnEnd>) -> Self
    where
        B: Body,
    {
        if body.is_end_stream() {
            event.finish(BodyEnd::Complete);
        }
        PassportBody::Metered { body, event }
    }

    /// A body held whole in memory (an answer the gateway or the layer made itself).
    pub fn from_full(body: Full<Bytes>) -> Self {
        PassportBody::Held { body, budget: None }
    }
}

fn never<E>(e: Infallible) -> E {
    match e {}
}

impl<B> Body for PassportBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            PassportBodyProj::Original { body } => body.poll_frame(cx),
            PassportBodyProj::Held { body, .. } => body.poll_frame(cx).map_err(never),
            PassportBodyProj::Metered { mut body, event } => {
                let polled = body.as_mut().poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            event.feed(data);
                        }
                        // hyper stops polling, and drops the body, once it says it
                        // ended: that is an end, not a client hanging up.
                        if body.is_end_stream() {
                            event.finish(BodyEnd::Complete);
                        }
                    }
                    Poll::Ready(None) => event.finish(BodyEnd::Complete),
                    Poll::Ready(Some(Err(_))) => event.finish(BodyEnd::Failed),
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PassportBody::Original { body } => body.is_end_stream(),
            PassportBody::Held { body, .. } => body.is_end_stream(),
            PassportBody::Metered { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PassportBody::Original { body } => body.size_hint(),
            PassportBody::Held { body, .. } => body.size_hint(),
            PassportBody::Metered { body, .. } => body.size_hint(),
        }
    }
}
