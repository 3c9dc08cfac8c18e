//! Closing a connection after `server.max_auth_failures_per_connection` consecutive
//! authentication failures, so that a client sending forged passports pays for a new
//! connection (a TCP and perhaps a TLS handshake) every few attempts instead of
//! streaming them down one keep-alive connection.
//!
//! An authentication failure is a passport rejection the client causes: status 400, 401,
//! 403, 409 or 431 (malformed, forged, expired, not allowed, replayed, too large), and
//! 503 `verification_busy` (a passport not verified yet while the cold-verification
//! budget is spent: what a flood of distinct forged passports mostly gets; an agent
//! reuses its passport, which is cached after its first success and never needs the
//! budget again). Other rejections (the gateway's own unavailability, a quota, a slow or
//! large body) neither count nor reset; any answer that is not a rejection resets the
//! count. The answer to the last failure closes the connection: HTTP/1.1 with
//! `Connection: close`, HTTP/2 with `GOAWAY` (streams already open finish).

use super::penalty::Penalty;
use http::header::{HeaderValue, CONNECTION};
use http::StatusCode;
use passport_core::verifier::Rejection;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// The consecutive authentication failures of one connection.
#[derive(Debug)]
pub struct AuthFailures {
    limit: u32,
    consecutive: AtomicU32,
    close: Notify,
    /// The per-address penalty and this connection's peer, when the penalty is on.
    penalty: Option<(Arc<Penalty>, IpAddr)>,
}

/// Whether a rejection counts as an authentication failure.
fn is_auth_failure(r: Rejection) -> bool {
    r == Rejection::VerificationBusy
        || matches!(
            r.status(),
            StatusCode::BAD_REQUEST
                | StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::CONFLICT
                | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        )
}

impl AuthFailures {
    /// A connection closed after `limit` consecutive failures; 0 never closes one.
    pub fn new(limit: u32) -> AuthFailures {
        AuthFailures {
            limit,
            consecutive: AtomicU32::new(0),
            close: Notify::new(),
            penalty: None,
        }
    }

    /// Also puts `peer` under `penalty` when this connection reaches the limit.
    pub fn with_penalty(mut self, penalty: Option<&Arc<Penalty>>, peer: IpAddr) -> AuthFailures {
        self.penalty = penalty.map(|p| (Arc::clone(p), peer));
        self
    }

    /// Counts the answer to one request. When it is the failure that reaches the limit,
    /// marks an HTTP/1 answer `Connection: close` (an HTTP/2 one may not carry it),
    /// wakes [`AuthFailures::closing`], puts the peer under the penalty when it is on,
    /// and returns true.
    pub fn record<B>(&self, response: &mut http::Response<B>) -> bool {
        if self.limit == 0 {
            return false;
        }
        let Some(rejection) = response.extensions().get::<Rejection>() else {
            // A relaxed load first: the common case (an accepted request on a clean
            // connection) writes nothing.
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            return false;
        };
        if !is_auth_failure(*rejection) {
            return false;
        }
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n != self.limit {
            return false;
        }
        if response.version() != http::Version::HTTP_2 {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some((penalty, peer)) = &self.penalty {
            penalty.impose(*peer);
        }
        self.close.notify_one();
        true
    }

    /// Completes once the connection reached the limit (used to send HTTP/2 `GOAWAY`).
    pub async fn closing(&self) {
        self.close.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(rejection: Option<Rejection>) -> http::Response<()> {
        let mut r = http::Response::new(());
        if let Some(rej) = rejection {
            *r.status_mut() = rej.status();
            r.extensions_mut().insert(rej);
        }
        r
    }

    #[test]
    fn the_limit_th_consecutive_failure_closes_and_success_resets() {
        let f = AuthFailures::new(3);
        let forged = || answer(Some(Rejection::HeaderMalformed));
        assert!(!f.record(&mut forged()));
        assert!(!f.record(&mut forged()));
        assert!(!f.record(&mut answer(None)));
        assert!(!f.record(&mut forged()));
        assert!(!f.record(&mut forged()));
        let mut third = forged();
        assert!(f.record(&mut third));
        assert_eq!(third.headers()[CONNECTION], "close");
    }

    #[test]
    fn gateway_side_refusals_neither_count_nor_reset() {
        let f = AuthFailures::new(2);
        assert!(!f.record(&mut answer(Some(Rejection::HeaderMalformed))));
        assert!(!f.record(&mut answer(Some(Rejection::ReplayStoreUnavailable))));
        assert!(!f.record(&mut answer(Some(Rejection::ReplayQuotaExceeded))));
        assert!(f.record(&mut answer(Some(Rejection::VerificationBusy))));
    }

    #[test]
    fn reaching_the_limit_puts_the_peer_under_the_penalty() {
        let penalty = Arc::new(Penalty::new(std::time::Duration::from_secs(60)).unwrap());
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let f = AuthFailures::new(2).with_penalty(Some(&penalty), peer);
        assert!(!f.record(&mut answer(Some(Rejection::HeaderMalformed))));
        assert!(!penalty.holds(peer));
        assert!(f.record(&mut answer(Some(Rejection::HeaderMalformed))));
        assert!(penalty.holds(peer));
    }

    #[test]
    fn zero_never_closes() {
        let f = AuthFailures::new(0);
        for _ in 0..100 {
            assert!(!f.record(&mut answer(Some(Rejection::HeaderMalformed))));
        }
    }
}
