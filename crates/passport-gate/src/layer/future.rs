//! The layer's response future. The pass-through arm polls the inner future in place:
//! no box and no allocation for requests without a passport.

use super::body::{PassportBody, ResponseBody};
use http::Response;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// The boxed future of a request that carries a passport.
pub(crate) type VerifyingFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

pin_project! {
    /// Response future of [`PassportService`](super::PassportService).
    #[project = ResponseFutureProj]
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Passthrough { #[pin] inner: F },
        Verifying { future: VerifyingFuture<B, E> },
        Rejected { response: Option<Response<ResponseBody<B>>> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn passthrough(inner: F) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { inner },
        }
    }

    pub(crate) fn verifying(future: VerifyingFuture<B, E>) -> Self {
        ResponseFuture {
            kind: Kind::Verifying { future },
        }
    }

    pub(crate) fn rejected(response: Response<ResponseBody<B>>) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { inner } => {
                let resp = ready!(inner.poll(cx))?;
                Poll::Ready(Ok(resp.map(PassportBody::original)))
            }
            KindProj::Verifying { future } => future.as_mut().poll(cx),
            KindProj::Rejected { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Pending,
            },
        }
    }
}
