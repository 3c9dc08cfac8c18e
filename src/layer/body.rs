//! The request and response body types of the layer: thin enums that forward frames
//! unchanged, so a request without a passport streams exactly as it arrived.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The request body handed to the inner service.
    #[project = PassportBodyProj]
    #[derive(Debug)]
    #[allow(missing_docs)]
    pub enum PassportBody<B> {
        /// The original body, untouched (no passport, or the layer is off).
        Passthrough {
            #[pin]
            body: B,
        },
        /// The verified body, read once and forwarded byte for byte.
        Verified {
            #[pin]
            body: Full<Bytes>,
        },
    }
}

impl<B> PassportBody<B> {
    /// Wraps the original body without reading it.
    pub fn passthrough(body: B) -> Self {
        PassportBody::Passthrough { body }
    }

    /// A body holding the bytes that were verified.
    pub fn verified(bytes: Bytes) -> Self {
        PassportBody::Verified {
            body: Full::new(bytes),
        }
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
            PassportBodyProj::Passthrough { body } => body.poll_frame(cx),
            PassportBodyProj::Verified { body } => body.poll_frame(cx).map_err(never),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PassportBody::Passthrough { body } => body.is_end_stream(),
            PassportBody::Verified { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PassportBody::Passthrough { body } => body.size_hint(),
            PassportBody::Verified { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// The response body: the inner service's, or a rejection document.
    #[project = ResponseBodyProj]
    #[derive(Debug)]
    #[allow(missing_docs)]
    pub enum ResponseBody<B> {
        /// What the inner service answered.
        Inner {
            #[pin]
            body: B,
        },
        /// A problem+json rejection.
        Rejection {
            #[pin]
            body: Full<Bytes>,
        },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub fn inner(body: B) -> Self {
        ResponseBody::Inner { body }
    }

    pub(crate) fn rejection(body: Full<Bytes>) -> Self {
        ResponseBody::Rejection { body }
    }
}

impl<B> Body for ResponseBody<B>
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
            ResponseBodyProj::Inner { body } => body.poll_frame(cx),
            ResponseBodyProj::Rejection { body } => body.poll_frame(cx).map_err(never),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Inner { body } => body.is_end_stream(),
            ResponseBody::Rejection { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Inner { body } => body.size_hint(),
            ResponseBody::Rejection { body } => body.size_hint(),
        }
    }
}
