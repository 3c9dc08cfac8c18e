//! The bound on cold verifications: how many passports the verifier checks in full (one
//! secp256k1 verification each) at once and per second.
//!
//! A client without credentials can send a passport of valid shape that no cache has
//! seen, and each one costs the verifier a secp256k1 verification (tens of microseconds of one
//! core). Unbounded, a flood of them takes every core and requests with cached
//! passports (a few microseconds each) wait behind it. With this bound the flood gets a
//! fixed share of the machine: a cold verification beyond it is refused at once, before
//! the envelope is parsed, with 503 `verification_busy` and `Retry-After`, and cached
//! passports never wait for one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// The bound: concurrent cold verifications and a token bucket refilled at `per_second`
/// and holding at most `per_second` tokens (one second of burst). Zero for either turns
/// that part off.
#[derive(Debug)]
pub struct ColdAdmission {
    max_concurrent: u64,
    in_flight: AtomicU64,
    per_second: u64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// One admitted cold verification; the concurrency slot is released on drop.
#[derive(Debug)]
pub struct ColdPermit<'a> {
    admission: &'a ColdAdmission,
}

impl Drop for ColdPermit<'_> {
    fn drop(&mut self) {
        self.admission.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ColdAdmission {
    /// At most `max_concurrent` cold verifications at once and `per_second` per second
    /// (0: no bound of that kind).
    pub fn new(max_concurrent: u64, per_second: u64) -> ColdAdmission {
        ColdAdmission {
            max_concurrent,
            in_flight: AtomicU64::new(0),
            per_second,
            bucket: Mutex::new(Bucket {
                tokens: per_second as f64,
                refilled: Instant::now(),
            }),
        }
    }

    /// Admits one cold verification, or `None` when the concurrency bound is reached or
    /// the bucket is empty. A refused attempt takes no token.
    pub fn try_admit(&self) -> Option<ColdPermit<'_>> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = ColdPermit { admission: self };
        if self.max_concurrent != 0 && before >= self.max_concurrent {
            return None;
        }
        if self.per_second != 0 && !self.take_token() {
            return None;
        }
        Some(permit)
    }

    /// Cold verifications running now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    fn take_token(&self) -> bool {
        // A poisoned lock only means another thread panicked between two float
        // updates; the bucket is still a valid bound.
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let rate = self.per_second as f64;
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_cold_verifications_beyond_the_bound_are_refused() {
        let a = ColdAdmission::new(2, 0);
        let one = a.try_admit();
        let two = a.try_admit();
        assert!(one.is_some() && two.is_some());
        assert!(a.try_admit().is_none());
        assert_eq!(a.in_flight(), 2);
        drop(one);
        assert!(a.try_admit().is_some());
    }

    #[test]
    fn cold_verifications_beyond_the_rate_are_refused_until_the_bucket_refills() {
        let a = ColdAdmission::new(0, 3);
        for _ in 0..3 {
            assert!(a.try_admit().is_some());
        }
        assert!(a.try_admit().is_none());
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert!(a.try_admit().is_some());
    }

    #[test]
    fn zero_turns_both_bounds_off() {
        let a = ColdAdmission::new(0, 0);
        let held: Vec<_> = (0..1000).map(|_| a.try_admit()).collect();
        assert!(held.iter().all(Option::is_some));
    }
}
