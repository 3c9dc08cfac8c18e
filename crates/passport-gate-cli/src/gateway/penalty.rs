//! The optional per-address penalty (`server.auth_failure_penalty_seconds`, off by
//! default): an address whose connection was closed for
//! `server.max_auth_failures_per_connection` consecutive authentication failures has its
//! new proxy connections closed at accept, unread, for that many seconds.
//!
//! Closing one connection makes a forger pay a handshake every few attempts; the penalty
//! makes it wait. Its cost falls on everyone who shares the address: every client behind
//! one NAT, one corporate proxy or one load balancer is shut out together when one of
//! them forges (docs/operators.md says when to turn it on).
//!
//! One address, one entry: an IPv4-mapped IPv6 address counts as its IPv4 address, and an
//! IPv6 address as its /64 network (what one host is commonly given, so a host cannot
//! leave the penalty by changing its interface identifier). The table holds at most
//! [`MAX_ADDRESSES`] entries; when it is full the entry that ends first makes room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most addresses under penalty at once.
pub const MAX_ADDRESSES: usize = 65_536;

/// One address as the penalty counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
}

fn key(ip: IpAddr) -> Key {
    match ip.to_canonical() {
        IpAddr::V4(v4) => Key::V4(u32::from(v4)),
        IpAddr::V6(v6) => Key::V6Net((u128::from(v6) >> 64) as u64),
    }
}

/// Addresses under penalty, each until its end.
#[derive(Debug)]
pub struct Penalty {
    length: Duration,
    until: Mutex<HashMap<Key, Instant>>,
}

impl Penalty {
    /// A penalty of `length`; `None` when it is zero (off).
    pub fn new(length: Duration) -> Option<Penalty> {
        (!length.is_zero()).then(|| Penalty {
            length,
            until: Mutex::new(HashMap::new()),
        })
    }

    /// Puts `ip` under penalty from now.
    pub fn impose(&self, ip: IpAddr) {
        self.impose_at(ip, Instant::now());
    }

    fn impose_at(&self, ip: IpAddr, now: Instant) {
        let end = now + self.length;
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let key = key(ip);
        if until.len() >= MAX_ADDRESSES && !until.contains_key(&key) {
            until.retain(|_, end| *end > now);
            if until.len() >= MAX_ADDRESSES {
                let first = until.iter().min_by_key(|(_, end)| **end).map(|(k, _)| *k);
                if let Some(first) = first {
                    until.remove(&first);
                }
            }
        }
        until.insert(key, end);
    }

    /// Whether `ip` is under penalty now (an ended penalty is forgotten here).
    pub fn holds(&self, ip: IpAddr) -> bool {
        self.holds_at(ip, Instant::now())
    }

    fn holds_at(&self, ip: IpAddr, now: Instant) -> bool {
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let key = key(ip);
        match until.get(&key) {
            Some(end) if *end > now => true,
            Some(_) => {
                until.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Addresses in the table (some may have ended and not been forgotten yet).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.until.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn zero_is_off() {
        assert!(Penalty::new(Duration::ZERO).is_none());
    }

    #[test]
    fn an_address_is_held_for_the_length_then_let_go() {
        let p = Penalty::new(Duration::from_secs(10)).unwrap();
        let t = Instant::now();
        p.impose_at(ip("192.0.2.7"), t);
        assert!(p.holds_at(ip("192.0.2.7"), t + Duration::from_secs(9)));
        assert!(!p.holds_at(ip("192.0.2.8"), t));
        assert!(!p.holds_at(ip("192.0.2.7"), t + Duration::from_secs(10)));
        assert_eq!(p.len(), 0, "an ended penalty is forgotten");
    }

    #[test]
    fn two_spellings_of_one_address_are_one_entry() {
        let p = Penalty::new(Duration::from_secs(10)).unwrap();
        let t = Instant::now();
        p.impose_at(ip("::ffff:192.0.2.7"), t);
        assert!(p.holds_at(ip("192.0.2.7"), t));
        p.impose_at(ip("2001:db8:1:2::1"), t);
        assert!(p.holds_at(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t));
        assert!(!p.holds_at(ip("2001:db8:1:3::1"), t));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_full_table_makes_room_with_the_entry_that_ends_first() {
        let p = Penalty::new(Duration::from_secs(100)).unwrap();
        let t = Instant::now();
        for i in 0..MAX_ADDRESSES as u32 {
            p.impose_at(
                IpAddr::V4((0x0a00_0000 + i).into()),
                t + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(p.len(), MAX_ADDRESSES);
        let later = t + Duration::from_secs(1);
        p.impose_at(ip("192.0.2.7"), later);
        assert_eq!(p.len(), MAX_ADDRESSES);
        assert!(p.holds_at(ip("192.0.2.7"), later));
        assert!(
            !p.holds_at(ip("10.0.0.0"), later),
            "the first to end made room"
        );
        assert!(p.holds_at(ip("10.0.0.1"), later));
    }
}
