//! W3C Trace Context: the `traceparent` header a client may send, the one the gateway
//! sends to the upstream, and the sampling decision.

use http::HeaderMap;

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";

/// The length of a version-00 `traceparent` value, in bytes: the only length read. A
/// longer value of a later version is read up to here, as the W3C recommendation asks;
/// anything else is ignored (the request starts a new trace).
const TRACEPARENT_LEN: usize = 55;

/// A span's place in a trace, as propagated: put in the request's extensions by the
/// gateway when tracing is on, and sent to the upstream as `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The gateway's span in it (the upstream's parent).
    pub span_id: [u8; 8],
    /// Whether the gateway records this trace.
    pub sampled: bool,
}

impl TraceContext {
    /// The `traceparent` value naming this span as the parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            if self.sampled { "01" } else { "00" }
        )
    }
}

/// The parent a client named in a valid `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteParent {
    /// The trace the request continues.
    pub trace_id: [u8; 16],
    /// The client's span.
    pub span_id: [u8; 8],
}

/// The parent named by the request's `traceparent`, or `None` when there is none, more
/// than one, or it is malformed (W3C Trace Context, section 3.2): a version that is not
/// two lowercase hex digits or is `ff`, a trace id or parent id not lowercase hex or all
/// zeros, a version-00 value not exactly 55 bytes. At most the first 56 bytes are read.
pub fn remote_parent(headers: &HeaderMap) -> Option<RemoteParent> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?.as_bytes();
    if values.next().is_some() || value.len() < TRACEPARENT_LEN {
        return None;
    }
    let (version, rest) = value.split_at(2);
    let version = decode_hex::<1>(version)?;
    match version[0] {
        0xff => return None,
        0x00 if value.len() != TRACEPARENT_LEN => return None,
        // A later version may append fields, after a dash.
        _ if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    let rest = &rest[..TRACEPARENT_LEN - 2];
    if rest[0] != b'-' || rest[33] != b'-' || rest[50] != b'-' {
        return None;
    }
    let trace_id = decode_hex::<16>(&rest[1..33])?;
    let span_id = decode_hex::<8>(&rest[34..50])?;
    decode_hex::<1>(&rest[51..53])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(RemoteParent { trace_id, span_id })
}

/// Lowercase hex only, as the recommendation requires.
fn decode_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N
        || !text
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Whether a trace is recorded at `ratio`: OpenTelemetry's `TraceIdRatioBased` rule (the
/// low 8 bytes of the trace id, shifted right once, below `ratio * 2^63`), so every
/// service sampling at the same ratio with that rule records the same traces. A client's
/// `sampled` flag is not obeyed: it cannot make the gateway record more than `ratio`.
pub fn sampled(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < bound
}

/// Fresh random bytes for an id; never all zeros (an invalid id).
pub fn random_id<const N: usize>() -> [u8; N] {
    let mut id = [0u8; N];
    // The OS random source does not fail on supported platforms; if it ever did, the
    // clock still gives distinct, non-zero ids.
    if passport_core::crypto::random_bytes(&mut id).is_err() || id == [0u8; N] {
        let nanos = passport_core::time::Timestamp::now()
            .unix_nanos()
            .to_be_bytes();
        for (i, b) in id.iter_mut().enumerate() {
            *b = nanos[nanos.len() - 1 - (i % nanos.len())] | 1;
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(values: &[&str]) -> Option<RemoteParent> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(TRACEPARENT, v.parse().unwrap());
        }
        remote_parent(&h)
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_names_the_parent() {
        let p = parent(&[VALID]).unwrap();
        assert_eq!(hex::encode(p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(p.span_id), "00f067aa0ba902b7");
        // A later version may append fields after a dash.
        assert!(parent(&["cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"]).is_some());
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(parent(&[bad]), None, "{bad:?}");
        }
        assert_eq!(parent(&[VALID, VALID]), None, "two values");
    }

    #[test]
    fn the_traceparent_sent_names_the_gateway_span() {
        let c = TraceContext {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            sampled: true,
        };
        let h: HeaderMap = [(
            http::HeaderName::from_static(TRACEPARENT),
            c.traceparent().parse().unwrap(),
        )]
        .into_iter()
        .collect();
        let p = remote_parent(&h).unwrap();
        assert_eq!((p.trace_id, p.span_id), (c.trace_id, c.span_id));
        assert!(c.traceparent().ends_with("-01"));
    }

    #[test]
    fn sampling_follows_the_trace_id_ratio_rule() {
        let id = |low: u64| {
            let mut t = [0u8; 16];
            t[8..].copy_from_slice(&low.to_be_bytes());
            t
        };
        assert!(sampled(&id(u64::MAX), 1.0));
        assert!(!sampled(&id(0), 0.0));
        assert!(sampled(&id(0), 0.5));
        assert!(sampled(&id(u64::MAX / 2 - 4), 0.5));
        assert!(!sampled(&id(u64::MAX / 2 + 4), 0.5));
    }
}
