//! axum extractors for the verified identity (the `axum` feature): a handler takes
//! `VerifiedAgent` or `Option<VerifiedAgent>`, and a `Rejection` is an axum answer.

use super::{Rejection, VerifiedAgent};
use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use std::convert::Infallible;

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.http_response().map(axum_core::body::Body::new)
    }
}

/// `VerifiedAgent` as a handler argument: present when the layer accepted a passport,
/// otherwise 401 `passport_required`.
impl<S: Send + Sync> FromRequestParts<S> for VerifiedAgent {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Rejection> {
        parts
            .extensions
            .get::<VerifiedAgent>()
            .cloned()
            .ok_or(Rejection::PassportRequired)
    }
}

/// `Option<VerifiedAgent>` as a handler argument: `None` for requests without a passport.
impl<S: Send + Sync> OptionalFromRequestParts<S> for VerifiedAgent {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<VerifiedAgent>().cloned())
    }
}
