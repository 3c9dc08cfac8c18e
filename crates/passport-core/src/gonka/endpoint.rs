//! Which transfer address a request is signed with: gonka-openai's `url;address`
//! endpoint list.
//!
//! A node checks the signature with the address in `X-Transfer-Address`, or its own
//! address when the header is absent; a client sending to several nodes signs each request
//! with the address of the node it goes to. gonka-openai spells an endpoint
//! `https://node1.example/v1;gonka1…`; an entry without `;` names a node (or a gate in
//! front of one) that signs with its own address, so no transfer address is sent.

use crate::crypto::{check_address, AddressProblem};
use std::fmt;

/// Why an endpoint entry, a transfer address or a request URL was refused. The entry or
/// URL is quoted, so the message says which one to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointError {
    /// The URL part of an entry is not an absolute `http://` or `https://` URL.
    UrlNotAbsolute {
        /// The entry as given.
        entry: String,
    },
    /// The address after `;` is empty.
    AddressEmpty {
        /// The entry as given.
        entry: String,
    },
    /// The transfer address is not a canonical account address under the prefix.
    AddressInvalid {
        /// The entry (or the address, when given alone).
        entry: String,
        /// The address prefix expected.
        prefix: String,
        /// What is wrong with it.
        problem: AddressProblem,
    },
    /// No endpoint of the list serves this request URL.
    NoEndpointFor {
        /// The request URL.
        url: String,
    },
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::UrlNotAbsolute { entry } => write!(
                f,
                "endpoint {entry:?}: the URL must be absolute, http:// or https:// (\"url;transfer_address\")"
            ),
            EndpointError::AddressEmpty { entry } => write!(
                f,
                "endpoint {entry:?}: the transfer address after ';' is empty (leave out the ';' for none)"
            ),
            EndpointError::AddressInvalid {
                entry,
                prefix,
                problem,
            } => write!(
                f,
                "transfer address in {entry:?} is not a {prefix}1... account address: {problem}"
            ),
            EndpointError::NoEndpointFor { url } => {
                write!(f, "no endpoint in the list serves {url:?}")
            }
        }
    }
}

impl std::error::Error for EndpointError {}

/// Checks a transfer address given on its own: a canonical account address under `prefix`.
pub fn check_transfer_address(address: &str, prefix: &str) -> Result<(), EndpointError> {
    check_address(prefix, address).map_err(|problem| EndpointError::AddressInvalid {
        entry: address.to_owned(),
        prefix: prefix.to_owned(),
        problem,
    })
}

/// One node: its base URL and the transfer address requests to it are signed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    scheme: String,
    authority: String,
    path: String,
    transfer_address: Option<String>,
}

impl Endpoint {
    /// Parses `url;transfer_address` (or `url` alone: no transfer address). White space
    /// around either part is ignored. Refuses a URL that is not absolute `http(s)`, an
    /// empty address after `;`, and an address that is not a canonical account address
    /// under `prefix` (another chain's address would sign for a node that does not exist).
    pub fn parse(entry: &str, prefix: &str) -> Result<Endpoint, EndpointError> {
        let (url, address) = match entry.split_once(';') {
            Some((url, address)) => (url.trim(), Some(address.trim())),
            None => (entry.trim(), None),
        };
        let (scheme, authority, path) =
            split_url(url).ok_or_else(|| EndpointError::UrlNotAbsolute {
                entry: entry.to_owned(),
            })?;
        let transfer_address = match address {
            None => None,
            Some("") => {
                return Err(EndpointError::AddressEmpty {
                    entry: entry.to_owned(),
                })
            }
            Some(address) => {
                check_address(prefix, address).map_err(|problem| {
                    EndpointError::AddressInvalid {
                        entry: entry.to_owned(),
                        prefix: prefix.to_owned(),
                        problem,
                    }
                })?;
                Some(address.to_owned())
            }
        };
        Ok(Endpoint {
            url: url.to_owned(),
            path: path.trim_end_matches('/').to_owned(),
            scheme,
            authority,
            transfer_address,
        })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The transfer address, if the entry names one.
    pub fn transfer_address(&self) -> Option<&str> {
        self.transfer_address.as_deref()
    }

    /// How well this endpoint serves `url`: `None` when it does not (another scheme, host
    /// or port, or a path outside the endpoint's), else the length of the endpoint's path,
    /// so that the most specific endpoint wins. Scheme and host compare case-insensitively;
    /// the path matches whole segments only (`/v1` serves `/v1/chat`, not `/v10`).
    fn serves(&self, url: &str) -> Option<usize> {
        let (scheme, authority, path) = split_url(url)?;
        if scheme != self.scheme || authority != self.authority {
            return None;
        }
        let rest = path.strip_prefix(self.path.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(self.path.len())
    }
}

/// `(scheme, authority, path)` of an absolute http(s) URL, scheme and authority
/// lowercased, the query and fragment dropped.
fn split_url(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return None;
    }
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    Some((
        scheme,
        authority.to_ascii_lowercase(),
        rest[..path_end].to_owned(),
    ))
}

/// Where each request's transfer address comes from: one address for every request, or
/// an endpoint list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferAddresses {
    /// The same transfer address (empty: none) for every request.
    One(String),
    /// The address of the endpoint serving the request URL.
    Endpoints(Vec<Endpoint>),
}

impl TransferAddresses {
    /// One transfer address for every request, checked under `prefix`; `None` for none.
    pub fn one(address: Option<&str>, prefix: &str) -> Result<TransferAddresses, EndpointError> {
        match address {
            None | Some("") => Ok(TransferAddresses::One(String::new())),
            Some(address) => {
                check_transfer_address(address, prefix)?;
                Ok(TransferAddresses::One(address.to_owned()))
            }
        }
    }

    /// An endpoint list from `url;address` entries (see [`Endpoint::parse`]).
    pub fn endpoints<'a>(
        entries: impl IntoIterator<Item = &'a str>,
        prefix: &str,
    ) -> Result<TransferAddresses, EndpointError> {
        entries
            .into_iter()
            .map(|entry| Endpoint::parse(entry, prefix))
            .collect::<Result<_, _>>()
            .map(TransferAddresses::Endpoints)
    }

    /// The transfer address to sign a request to `url` with (empty: none). With an
    /// endpoint list, the endpoint with the longest path serving `url`; refuses a URL that
    /// no endpoint serves, since signing for the wrong node fails at the node.
    pub fn for_url(&self, url: &str) -> Result<&str, EndpointError> {
        match self {
            TransferAddresses::One(address) => Ok(address),
            TransferAddresses::Endpoints(endpoints) => endpoints
                .iter()
                .filter_map(|e| e.serves(url).map(|score| (score, e)))
                .max_by_key(|(score, _)| *score)
                .map(|(_, e)| e.transfer_address().unwrap_or(""))
                .ok_or_else(|| EndpointError::NoEndpointFor {
                    url: url.to_owned(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE1: &str = "gonka1w508d6qejxtdg4y5r3zarvary0c5xw7k2gsyg6";
    const NODE2: &str = "gonka14h0ycu78h88wzldxc7e79vhw5xsde0n85evmum";

    #[test]
    fn an_entry_with_a_semicolon_names_the_transfer_address() {
        let e = Endpoint::parse(&format!(" https://node1.example/v1 ; {NODE1} "), "gonka").unwrap();
        assert_eq!(e.url(), "https://node1.example/v1");
        assert_eq!(e.transfer_address(), Some(NODE1));
    }

    #[test]
    fn an_entry_without_a_semicolon_has_no_transfer_address() {
        let e = Endpoint::parse("https://node1.example/v1", "gonka").unwrap();
        assert_eq!(e.transfer_address(), None);
    }

    #[test]
    fn a_bad_address_or_url_is_refused_naming_the_entry() {
        let entry = "https://node1.example/v1;gonka1test";
        let err = Endpoint::parse(entry, "gonka").unwrap_err();
        assert!(matches!(err, EndpointError::AddressInvalid { .. }));
        assert!(err.to_string().contains(entry), "{err}");
        let cosmos = format!("https://n/v1;{}", NODE1.replace("gonka", "cosmos"));
        let err = Endpoint::parse(&cosmos, "gonka").unwrap_err();
        assert!(err.to_string().contains("gonka1..."), "{err}");
        assert!(matches!(
            Endpoint::parse("https://n/v1;", "gonka"),
            Err(EndpointError::AddressEmpty { .. })
        ));
        for url in ["node1.example/v1", "ftp://n/v1", "https:///v1", ""] {
            let err = Endpoint::parse(&format!("{url};{NODE1}"), "gonka").unwrap_err();
            assert!(matches!(err, EndpointError::UrlNotAbsolute { .. }), "{url}");
            assert!(err.to_string().contains(url));
        }
    }

    #[test]
    fn a_request_is_signed_for_the_endpoint_that_serves_its_url() {
        let list = TransferAddresses::endpoints(
            [
                format!("https://node1.example/v1;{NODE1}").as_str(),
                format!("https://Node2.example:8443;{NODE2}").as_str(),
                "http://gate.example/v1",
            ],
            "gonka",
        )
        .unwrap();
        let at = |url| list.for_url(url);
        assert_eq!(
            at("https://node1.example/v1/chat/completions?x=1"),
            Ok(NODE1)
        );
        assert_eq!(at("https://NODE1.example/v1"), Ok(NODE1));
        assert_eq!(
            at("https://node2.example:8443/v1/chat/completions"),
            Ok(NODE2)
        );
        assert_eq!(at("http://gate.example/v1/chat/completions"), Ok(""));
        for other in [
            "https://node1.example/v10/chat",
            "http://node1.example/v1/chat",
            "https://node2.example/v1/chat",
            "https://node3.example/v1",
        ] {
            assert_eq!(
                at(other),
                Err(EndpointError::NoEndpointFor { url: other.into() })
            );
        }
    }

    #[test]
    fn the_longest_matching_path_wins() {
        let list = TransferAddresses::endpoints(
            [
                format!("https://n.example;{NODE1}").as_str(),
                format!("https://n.example/v1/;{NODE2}").as_str(),
            ],
            "gonka",
        )
        .unwrap();
        assert_eq!(list.for_url("https://n.example/v1/chat"), Ok(NODE2));
        assert_eq!(list.for_url("https://n.example/health"), Ok(NODE1));
    }

    #[test]
    fn one_address_is_checked_and_used_for_every_request() {
        assert_eq!(
            TransferAddresses::one(Some(NODE1), "gonka")
                .unwrap()
                .for_url("anything"),
            Ok(NODE1)
        );
        assert_eq!(
            TransferAddresses::one(None, "gonka").unwrap().for_url("x"),
            Ok("")
        );
        let err = TransferAddresses::one(Some(NODE1), "cosmos").unwrap_err();
        assert!(err.to_string().contains(NODE1) && err.to_string().contains("cosmos1..."));
    }
}
