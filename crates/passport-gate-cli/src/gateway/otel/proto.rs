//! The OTLP/HTTP request body: an `ExportTraceServiceRequest` in protobuf, hand-encoded.
//!
//! Only the messages and fields the gateway fills are written, with the field numbers of
//! `opentelemetry/proto/collector/trace/v1/trace_service.proto`,
//! `opentelemetry/proto/trace/v1/trace.proto`,
//! `opentelemetry/proto/common/v1/common.proto` and
//! `opentelemetry/proto/resource/v1/resource.proto` (opentelemetry-proto 1.x). The
//! external test decodes what arrives with the `opentelemetry-proto` Python package.

use super::span::{SpanRecord, Value};

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// `Span.SpanKind.SPAN_KIND_SERVER`.
const SPAN_KIND_SERVER: u64 = 2;
/// `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_CODE_ERROR: u64 = 2;
/// `SpanFlags`: the W3C sampled flag, and "whether the parent is remote" known.
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, u64::from(field << 3 | u32::from(wire)));
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A nested message: written to its own buffer, then length-prefixed.
fn message_field(out: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    write(&mut inner);
    bytes_field(out, field, &inner);
}

/// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string_value = 1; int_value =
/// 3; double_value = 4 }`.
fn key_value(out: &mut Vec<u8>, field: u32, k: &str, v: &Value) {
    message_field(out, field, |kv| {
        bytes_field(kv, 1, k.as_bytes());
        message_field(kv, 2, |any| match v {
            Value::Str(s) => bytes_field(any, 1, s.as_bytes()),
            Value::Int(i) => {
                key(any, 3, VARINT);
                varint(any, *i as u64);
            }
            Value::Double(d) => {
                key(any, 4, FIXED64);
                any.extend_from_slice(&d.to_bits().to_le_bytes());
            }
        });
    });
}

/// `Span` (trace.proto).
fn span(out: &mut Vec<u8>, s: &SpanRecord) {
    bytes_field(out, 1, &s.trace_id);
    bytes_field(out, 2, &s.span_id);
    if let Some(parent) = &s.parent {
        bytes_field(out, 4, parent);
    }
    bytes_field(out, 5, s.name.as_bytes());
    key(out, 6, VARINT);
    varint(out, SPAN_KIND_SERVER);
    key(out, 7, FIXED64);
    out.extend_from_slice(&s.start_unix_nanos.to_le_bytes());
    key(out, 8, FIXED64);
    out.extend_from_slice(&s.end_unix_nanos.to_le_bytes());
    for (k, v) in &s.attributes {
        key_value(out, 9, k, v);
    }
    if let Some(message) = &s.error {
        // Status { message = 2; code = 3 }
        message_field(out, 15, |status| {
            bytes_field(status, 2, message.as_bytes());
            key(status, 3, VARINT);
            varint(status, STATUS_CODE_ERROR);
        });
    }
    let remote = if s.parent.is_some() {
        FLAG_IS_REMOTE
    } else {
        0
    };
    key(out, 16, FIXED32);
    out.extend_from_slice(&(FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | remote).to_le_bytes());
}

/// What every export names: the service (resource) and the instrumentation scope.
#[derive(Clone, Debug)]
pub struct Origin {
    /// `service.name`.
    pub service_name: String,
}

/// `ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }` with one
/// `ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2 }`, one
/// `ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2 }`.
pub fn export_request(origin: &Origin, spans: &[SpanRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + spans.len() * 512);
    message_field(&mut out, 1, |rs| {
        // Resource { repeated KeyValue attributes = 1 }
        message_field(rs, 1, |resource| {
            key_value(
                resource,
                1,
                "service.name",
                &Value::Str(origin.service_name.clone()),
            );
            key_value(
                resource,
                1,
                "service.version",
                &Value::Str(env!("CARGO_PKG_VERSION").to_owned()),
            );
        });
        message_field(rs, 2, |ss| {
            // InstrumentationScope { name = 1; version = 2 }
            message_field(ss, 1, |scope| {
                bytes_field(scope, 1, b"passport-gate");
                bytes_field(scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
            });
            for s in spans {
                message_field(ss, 2, |out| span(out, s));
            }
        });
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_little_endian_base_128() {
        for (v, expected) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out, expected, "{v}");
        }
    }

    #[test]
    fn a_string_attribute_is_a_key_value_message() {
        let mut out = Vec::new();
        key_value(&mut out, 9, "a", &Value::Str("b".into()));
        // field 9 LEN, 8 bytes: key "a" (0a 01 61), value AnyValue (12 03 0a 01 62)
        assert_eq!(out, [0x4a, 8, 0x0a, 1, b'a', 0x12, 3, 0x0a, 1, b'b']);
    }
}
