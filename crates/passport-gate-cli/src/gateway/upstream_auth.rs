//! The gateway's own credential towards the upstream (`[upstream_auth]`): a static token in
//! one header (`bearer`, `header`), or a Gonka native signature by the operator's key
//! (`gonka`).
//!
//! The upstream trusts the credential, so a client must never supply it: every client copy
//! of the credential's headers is removed from every forwarded request, whatever the route
//! and protocol. The gateway then adds its own only to a request the layer accepted, or to
//! one on a public route when `public_routes = true`.
//!
//! The token is held in a [`Secret`], whose `Debug` and `Display` print `[redacted]`, and
//! its header value is marked sensitive (HTTP/2 never indexes it in HPACK tables). A token
//! file is reloaded when it changes; a reload that gives an empty, unreadable or invalid
//! token is logged (without the token) and counted, and the last good token stays in force.

use super::settings::{TokenSource, UpstreamAuth, UpstreamAuthKind};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use passport_core::gonka::{NativeSigner, X_REQUESTER_ADDRESS, X_TIMESTAMP, X_TRANSFER_ADDRESS};
use passport_core::verifier::VerifiedAgent;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Marks a request on a route listed in `routes.public` (set by the dispatcher).
#[derive(Clone, Copy, Debug)]
pub struct PublicRoute;

/// A header value that carries a secret. `Debug` and `Display` print `[redacted]`.
#[derive(Clone)]
pub struct Secret(HeaderValue);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a token cannot be used. Never carries the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenProblem {
    /// The file or variable holds nothing but whitespace.
    Empty,
    /// The token has a byte a header value cannot carry (a control character, a non-ASCII
    /// byte) or inner whitespace.
    NotAHeaderValue,
    /// The file cannot be read (its path and the system's reason).
    Unreadable(String),
    /// The environment variable is not set or not UTF-8.
    Unset,
}

impl fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenProblem::Empty => f.write_str("the token is empty"),
            TokenProblem::NotAHeaderValue => f.write_str(
                "the token has whitespace inside or a character a header value cannot carry",
            ),
            TokenProblem::Unreadable(why) => write!(f, "cannot read the token: {why}"),
            TokenProblem::Unset => f.write_str("the variable is not set (or not UTF-8)"),
        }
    }
}

/// The largest token file read, in bytes: a credential is short, and a wrong path (a log,
/// a device) must not fill memory.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

impl Secret {
    /// The header value for `token` (surrounding whitespace, such as a file's final
    /// newline, removed), with `Bearer ` before it when `bearer`. Refuses an empty token
    /// and one a header value cannot carry, so an empty credential is never sent.
    pub fn from_token(token: &str, bearer: bool) -> Result<Secret, TokenProblem> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenProblem::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenProblem::NotAHeaderValue);
        }
        let text = if bearer {
            format!("Bearer {token}")
        } else {
            token.to_owned()
        };
        let mut value = HeaderValue::try_from(text).map_err(|_| TokenProblem::NotAHeaderValue)?;
        value.set_sensitive(true);
        Ok(Secret(value))
    }

    /// The token as configured: the file's text, or the variable's value.
    pub fn load(source: &TokenSource, bearer: bool) -> Result<Secret, TokenProblem> {
        let text = match source {
            TokenSource::File(path, _) => read_token_file(path)?,
            TokenSource::Env(name) => std::env::var(name).map_err(|_| TokenProblem::Unset)?,
        };
        Secret::from_token(&text, bearer)
    }
}

fn read_token_file(path: &Path) -> Result<String, TokenProblem> {
    use std::io::Read;
    let unreadable =
        |e: std::io::Error| TokenProblem::Unreadable(format!("{}: {e}", path.display()));
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(unreadable)?
        .take(MAX_TOKEN_FILE)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    Ok(text)
}

/// What the gateway adds, built once.
enum Credential {
    Header {
        name: HeaderName,
        current: Arc<RwLock<Secret>>,
    },
    Gonka {
        signer: NativeSigner,
        transfer_address: String,
        max_body_size: usize,
    },
}

/// The running `[upstream_auth]`.
pub struct UpstreamCredential {
    credential: Credential,
    public_routes: bool,
}

impl UpstreamCredential {
    /// The credential as configured; with a token file, starts its watcher, which counts
    /// reloads not taken on `failures`.
    pub fn start(
        settings: &UpstreamAuth,
        failures: prometheus::IntCounter,
    ) -> std::io::Result<UpstreamCredential> {
        let credential = match &settings.kind {
            UpstreamAuthKind::Header {
                name,
                value,
                bearer,
                source,
            } => {
                let current = Arc::new(RwLock::new(value.clone()));
                if let TokenSource::File(path, interval) = source {
                    let bearer = *bearer;
                    passport_gate::watch::watch_file(
                        "passport-gate-upstream-auth",
                        &current,
                        path.clone(),
                        *interval,
                        move |current: &RwLock<Secret>, path| match read_token_file(path)
                            .and_then(|t| Secret::from_token(&t, bearer))
                        {
                            Ok(secret) => {
                                if let Ok(mut c) = current.write() {
                                    *c = secret;
                                }
                                tracing::info!(file = %path.display(), "upstream_auth.token_file reloaded");
                            }
                            Err(problem) => {
                                failures.inc();
                                tracing::warn!(
                                    file = %path.display(),
                                    %problem,
                                    "upstream_auth.token_file not reloaded: the last good token stays in force"
                                );
                            }
                        },
                    )?;
                }
                Credential::Header {
                    name: name.clone(),
                    current,
                }
            }
            UpstreamAuthKind::Gonka {
                signer,
                transfer_address,
                max_body_size,
            } => Credential::Gonka {
                signer: signer.clone(),
                transfer_address: transfer_address.clone(),
                max_body_size: *max_body_size,
            },
        };
        Ok(UpstreamCredential {
            credential,
            public_routes: settings.public_routes,
        })
    }

    /// Removes every client copy of the credential's headers (with `gonka`, the four
    /// native-signature headers). Runs on every forwarded request: the upstream must only
    /// ever see the gateway's own.
    pub fn strip(&self, headers: &mut HeaderMap) {
        match &self.credential {
            Credential::Header { name, .. } => {
                headers.remove(name);
            }
            Credential::Gonka { .. } => {
                for name in [
                    header::AUTHORIZATION.as_str(),
                    X_REQUESTER_ADDRESS,
                    X_TIMESTAMP,
                    X_TRANSFER_ADDRESS,
                ] {
                    headers.remove(name);
                }
            }
        }
    }

    /// Whether this request gets the credential: the layer accepted its passport, or it
    /// is on a public route and `public_routes = true`.
    pub fn applies_to(&self, extensions: &http::Extensions) -> bool {
        extensions.get::<VerifiedAgent>().is_some()
            || (self.public_routes && extensions.get::<PublicRoute>().is_some())
    }

    /// With `gonka`, the largest body held to be signed; `None` when the credential does
    /// not depend on the body.
    pub fn signs_body(&self) -> Option<usize> {
        match &self.credential {
            Credential::Header { .. } => None,
            Credential::Gonka { max_body_size, .. } => Some(*max_body_size),
        }
    }

    /// Adds the credential; `body` is the exact body forwarded (used by `gonka` only).
    pub fn add(&self, headers: &mut HeaderMap, body: &[u8]) {
        match &self.credential {
            Credential::Header { name, current } => {
                let value = match current.read() {
                    Ok(v) => v.0.clone(),
                    Err(poisoned) => poisoned.into_inner().0.clone(),
                };
                headers.insert(name.clone(), value);
            }
            Credential::Gonka {
                signer,
                transfer_address,
                ..
            } => {
                for (name, value) in signer.sign_now(body, transfer_address).pairs() {
                    if let Ok(mut v) = HeaderValue::try_from(value) {
                        v.set_sensitive(name == passport_core::gonka::AUTHORIZATION);
                        headers.insert(name, v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_redacted() {
        let s = Secret::from_token("sk-very-secret\n", true).unwrap();
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.0, "Bearer sk-very-secret");
        assert!(s.0.is_sensitive());
    }

    #[test]
    fn an_empty_or_unsendable_token_is_refused() {
        assert_eq!(
            Secret::from_token(" \n", false).unwrap_err(),
            TokenProblem::Empty
        );
        assert_eq!(
            Secret::from_token("a b", false).unwrap_err(),
            TokenProblem::NotAHeaderValue
        );
        assert_eq!(
            Secret::from_token("caf\u{e9}", false).unwrap_err(),
            TokenProblem::NotAHeaderValue
        );
    }
}
