//! The four headers of a native request signature, written and read.

use super::NativeSigError;
use http::HeaderMap;

/// `Authorization`: standard base64 of the 64-byte `r ‖ s`, with no `Bearer`.
pub const AUTHORIZATION: &str = "Authorization";
/// `X-Requester-Address`: the signer's bech32 account address.
pub const X_REQUESTER_ADDRESS: &str = "X-Requester-Address";
/// `X-Timestamp`: unix time in nanoseconds, decimal.
pub const X_TIMESTAMP: &str = "X-Timestamp";
/// `X-Transfer-Address`: the transfer agent's address; sent only when not empty.
pub const X_TRANSFER_ADDRESS: &str = "X-Transfer-Address";

/// The native signature headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeHeaders {
    /// The `Authorization` value (base64 of `r ‖ s`).
    pub authorization: String,
    /// The `X-Requester-Address` value.
    pub requester_address: String,
    /// The `X-Timestamp` value, nanoseconds since the epoch.
    pub timestamp: i64,
    /// The `X-Transfer-Address` value; `None` when absent or empty.
    pub transfer_address: Option<String>,
}

impl NativeHeaders {
    /// `(name, value)` pairs to send, in the order `Authorization`, `X-Requester-Address`,
    /// `X-Timestamp`, then `X-Transfer-Address` only when there is one.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (AUTHORIZATION, self.authorization.clone()),
            (X_REQUESTER_ADDRESS, self.requester_address.clone()),
            (X_TIMESTAMP, self.timestamp.to_string()),
        ];
        if let Some(transfer) = &self.transfer_address {
            pairs.push((X_TRANSFER_ADDRESS, transfer.clone()));
        }
        pairs
    }

    /// Reads the four headers of a request.
    ///
    /// Refuses a missing `Authorization`, `X-Requester-Address` or `X-Timestamp`, any of
    /// the four repeated (which copy counts would depend on the reader), a value that is
    /// not visible ASCII, and a timestamp that is not canonical decimal (see
    /// [`parse_timestamp`]). An empty `X-Transfer-Address` is the same as none: both sign
    /// the same bytes.
    pub fn from_headers(headers: &HeaderMap) -> Result<NativeHeaders, NativeSigError> {
        let required = |name| single(headers, name)?.ok_or(NativeSigError::HeaderMissing { name });
        let authorization = required(AUTHORIZATION)?.to_owned();
        let requester_address = required(X_REQUESTER_ADDRESS)?.to_owned();
        let timestamp = parse_timestamp(required(X_TIMESTAMP)?)?;
        let transfer_address = single(headers, X_TRANSFER_ADDRESS)?
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok(NativeHeaders {
            authorization,
            requester_address,
            timestamp,
            transfer_address,
        })
    }
}

/// The one value of header `name`, if present, as visible ASCII.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, NativeSigError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(NativeSigError::HeaderRepeated { name });
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| NativeSigError::HeaderNotAscii { name })
}

/// Parses `X-Timestamp`: only the canonical decimal form of an `i64` (what the SDKs
/// write), so no `+`, no leading zeros, no `-0`, no white space. One timestamp has one
/// spelling, and the value signed is the value the node reformats and checks.
pub fn parse_timestamp(value: &str) -> Result<i64, NativeSigError> {
    match value.parse::<i64>() {
        Ok(ts) if ts.to_string() == value => Ok(ts),
        _ => Err(NativeSigError::TimestampMalformed),
    }
}
