//! The path of a request as its events record it.

/// The normal form of the request path, put in the request's extensions by whoever
/// normalised it (the gateway's dispatcher, before its route check). The layer records
/// this path in attribution events, so that two spellings of one path are one path in the
/// audit trail, and the gateway forwards exactly the path the route was chosen on; the
/// agent signature is still verified over the target as the client sent it. Without it
/// both use the path as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestPath(pub String);
