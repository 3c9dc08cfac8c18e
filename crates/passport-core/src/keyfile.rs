//! Key files for the agent-builder tools: JSON with the secret in hex and the public key
//! in base64, or a file holding only the 64-hex-digit secret.

use crate::crypto::{AddressError, AgentSecret, PrincipalSecret};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Which kind of key a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// A principal's secp256k1 key.
    Principal,
    /// An agent's Ed25519 key.
    Agent,
}

impl KeyKind {
    /// "a principal key (secp256k1)" or "an agent key (Ed25519)", for messages.
    pub const fn described(self) -> &'static str {
        match self {
            KeyKind::Principal => "a principal key (secp256k1)",
            KeyKind::Agent => "an agent key (Ed25519)",
        }
    }

    /// "principal" or "agent".
    pub const fn role(self) -> &'static str {
        match self {
            KeyKind::Principal => "principal",
            KeyKind::Agent => "agent",
        }
    }
}

/// The JSON key file written by `passport-gate keygen`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// What the key is for.
    pub kind: KeyKind,
    /// `secp256k1` or `ed25519`.
    pub key_type: String,
    /// The 32-byte secret, hex.
    pub secret_key: String,
    /// The public key, standard base64 (33 bytes compressed for secp256k1).
    pub public_key: String,
    /// The account address, for a principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A key file that cannot be read, used or written. `origin` names where the text came
/// from (a path, or what a binding called it).
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read.
    Read {
        /// The key file's path.
        path: PathBuf,
        /// Why reading failed.
        source: io::Error,
    },
    /// The text starts like JSON but is not a key file.
    NotAKeyFile {
        /// Where the text came from.
        origin: String,
        /// Why the JSON was refused.
        source: serde_json::Error,
    },
    /// The key file holds another kind of key than the one asked for.
    WrongKind {
        /// Where the text came from.
        origin: String,
        /// The kind the file holds.
        found: KeyKind,
        /// The kind asked for.
        expected: KeyKind,
    },
    /// The secret is not exactly 64 hex digits.
    SecretNotHex {
        /// Where the text came from.
        origin: String,
    },
    /// The 32 bytes are not a valid secp256k1 secret key (zero or not below the order).
    InvalidSecp256k1 {
        /// Where the text came from.
        origin: String,
    },
    /// A value that should be a secret or a key file path is neither 64 hex digits nor
    /// the path of an existing file.
    NeitherHexNorFile {
        /// What the value was given as.
        origin: String,
    },
    /// No address can be derived for the principal key under the prefix.
    Address(AddressError),
    /// The key file could not be serialized.
    Serialize(serde_json::Error),
    /// The file could not be created (it must not exist yet).
    Create {
        /// The key file's path.
        path: PathBuf,
        /// Why creating failed.
        source: io::Error,
    },
    /// The file was created but could not be written.
    Write {
        /// The key file's path.
        path: PathBuf,
        /// Why writing failed.
        source: io::Error,
    },
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Read { path, source } => {
                write!(f, "cannot read key file {}: {source}", path.display())
            }
            KeyFileError::NotAKeyFile { origin, source } => {
                write!(f, "{origin} is not a key file: {source}")
            }
            KeyFileError::WrongKind {
                origin,
                found,
                expected,
            } => write!(
                f,
                "{origin} holds {}, where {} is needed: give the {} key file",
                found.described(),
                expected.described(),
                expected.role()
            ),
            KeyFileError::SecretNotHex { origin } => {
                write!(f, "{origin}: the secret must be exactly 64 hex digits")
            }
            KeyFileError::InvalidSecp256k1 { origin } => {
                write!(f, "{origin}: not a valid secp256k1 secret key")
            }
            KeyFileError::NeitherHexNorFile { origin } => write!(
                f,
                "{origin} is neither a 64-hex-digit secret key nor the path of an existing key file"
            ),
            KeyFileError::Address(e) => e.fmt(f),
            KeyFileError::Serialize(e) => e.fmt(f),
            KeyFileError::Create { path, source } => write!(
                f,
                "cannot create {} (it must not exist yet): {source}",
                path.display()
            ),
            KeyFileError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for KeyFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyFileError::Read { source, .. }
            | KeyFileError::Create { source, .. }
            | KeyFileError::Write { source, .. } => Some(source),
            KeyFileError::NotAKeyFile { source, .. } | KeyFileError::Serialize(source) => {
                Some(source)
            }
            KeyFileError::Address(e) => Some(e),
            KeyFileError::WrongKind { .. }
            | KeyFileError::SecretNotHex { .. }
            | KeyFileError::NeitherHexNorFile { .. }
            | KeyFileError::InvalidSecp256k1 { .. } => None,
        }
    }
}

impl KeyFile {
    /// The key file for a principal key, with its address under `prefix`.
    pub fn principal(secret: &PrincipalSecret, prefix: &str) -> Result<KeyFile, KeyFileError> {
        let public = secret.public_key();
        Ok(KeyFile {
            kind: KeyKind::Principal,
            key_type: "secp256k1".into(),
            secret_key: hex::encode(secret.to_bytes()),
            public_key: public.to_base64(),
            address: Some(public.address(prefix).map_err(KeyFileError::Address)?),
        })
    }

    /// The key file for an agent key.
    pub fn agent(secret: &AgentSecret) -> KeyFile {
        KeyFile {
            kind: KeyKind::Agent,
            key_type: "ed25519".into(),
            secret_key: hex::encode(secret.to_bytes()),
            public_key: secret.public_key().to_base64(),
            address: None,
        }
    }
}

/// Reads the 32-byte secret from a key file of `kind`, or from a bare 64-hex-digit secret.
fn read_secret(path: &Path, kind: KeyKind) -> Result<[u8; 32], KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_secret(&text, &path.display().to_string(), kind)
}

/// Parses the text of a key file of `kind` (or a bare 64-hex-digit secret); `origin`
/// names where the text came from in error messages.
fn parse_secret(text: &str, origin: &str, kind: KeyKind) -> Result<[u8; 32], KeyFileError> {
    let trimmed = text.trim();
    let hex_secret = if trimmed.starts_with('{') {
        let file: KeyFile =
            serde_json::from_str(trimmed).map_err(|source| KeyFileError::NotAKeyFile {
                origin: origin.to_owned(),
                source,
            })?;
        if file.kind != kind {
            return Err(KeyFileError::WrongKind {
                origin: origin.to_owned(),
                found: file.kind,
                expected: kind,
            });
        }
        file.secret_key
    } else {
        trimmed.to_owned()
    };
    let mut secret = [0u8; 32];
    hex::decode_to_slice(&hex_secret, &mut secret).map_err(|_| KeyFileError::SecretNotHex {
        origin: origin.to_owned(),
    })?;
    Ok(secret)
}

/// Loads a principal secret key.
pub fn load_principal_secret(path: &Path) -> Result<PrincipalSecret, KeyFileError> {
    principal_from_bytes(
        read_secret(path, KeyKind::Principal)?,
        &path.display().to_string(),
    )
}

/// Loads an agent secret key.
pub fn load_agent_secret(path: &Path) -> Result<AgentSecret, KeyFileError> {
    read_secret(path, KeyKind::Agent).map(|b| AgentSecret::from_bytes(&b))
}

fn principal_from_bytes(bytes: [u8; 32], origin: &str) -> Result<PrincipalSecret, KeyFileError> {
    PrincipalSecret::from_bytes(&bytes).ok_or_else(|| KeyFileError::InvalidSecp256k1 {
        origin: origin.to_owned(),
    })
}

/// A principal secret key from the text of a key file (or a bare 64-hex-digit secret),
/// as the language bindings receive it; `origin` names the text in error messages.
pub fn parse_principal_secret(text: &str, origin: &str) -> Result<PrincipalSecret, KeyFileError> {
    principal_from_bytes(parse_secret(text, origin, KeyKind::Principal)?, origin)
}

/// A principal secret key named by one value, as a binding's `gonka_key` receives it: a
/// bare 64-hex-digit secret (with or without `0x`, as gonka-openai's `GONKA_PRIVATE_KEY`
/// writes it), else the path of a key file (`passport-gate keygen --principal`). A value
/// that is neither says both, naming `origin` but not repeating the value, which may be a
/// mistyped secret.
pub fn principal_secret_from_hex_or_path(
    value: &str,
    origin: &str,
) -> Result<PrincipalSecret, KeyFileError> {
    let trimmed = value.trim();
    let bare = trimmed.strip_prefix("0x").unwrap_or(trimmed);
    if bare.len() == 64 && bare.bytes().all(|b| b.is_ascii_hexdigit()) {
        return parse_principal_secret(bare, origin);
    }
    let path = Path::new(value);
    if !path.exists() {
        return Err(KeyFileError::NeitherHexNorFile {
            origin: origin.to_owned(),
        });
    }
    load_principal_secret(path)
}

/// An agent secret key from the text of a key file (or a bare 64-hex-digit secret).
pub fn parse_agent_secret(text: &str, origin: &str) -> Result<AgentSecret, KeyFileError> {
    parse_secret(text, origin, KeyKind::Agent).map(|b| AgentSecret::from_bytes(&b))
}

/// The text `passport-gate keygen` writes for `file`: pretty JSON and a newline.
pub fn key_file_text(file: &KeyFile) -> Result<String, KeyFileError> {
    serde_json::to_string_pretty(file)
        .map(|json| json + "\n")
        .map_err(KeyFileError::Serialize)
}

/// Writes a secret key file as `keygen --out` does: created new (an existing file is an
/// error, never overwritten) with mode 0600 on Unix, so no other user reads the secret.
pub fn write_key_file(path: &Path, file: &KeyFile) -> Result<(), KeyFileError> {
    use std::io::Write;
    let text = key_file_text(file)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(|source| KeyFileError::Create {
        path: path.to_owned(),
        source,
    })?;
    f.write_all(text.as_bytes())
        .map_err(|source| KeyFileError::Write {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, contents: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pg-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    #[test]
    fn key_files_round_trip_and_bare_hex_is_accepted() {
        let secret = PrincipalSecret::from_bytes(&[1u8; 32]).unwrap();
        let file = KeyFile::principal(&secret, "gonka").unwrap();
        let p = temp("p.json", &serde_json::to_string(&file).unwrap());
        assert_eq!(load_principal_secret(&p).unwrap().to_bytes(), [1u8; 32]);
        let bare = temp("p.hex", &format!("{}\n", hex::encode([1u8; 32])));
        assert_eq!(load_principal_secret(&bare).unwrap().to_bytes(), [1u8; 32]);
    }

    #[test]
    fn the_wrong_kind_and_bad_hex_are_clear_errors() {
        let file = KeyFile::agent(&AgentSecret::from_bytes(&[2u8; 32]));
        let p = temp("a.json", &serde_json::to_string(&file).unwrap());
        let err = load_principal_secret(&p).unwrap_err();
        assert!(matches!(
            err,
            KeyFileError::WrongKind {
                found: KeyKind::Agent,
                expected: KeyKind::Principal,
                ..
            }
        ));
        let err = err.to_string();
        assert!(
            err.ends_with("holds an agent key (Ed25519), where a principal key (secp256k1) is needed: give the principal key file"),
            "{err}"
        );
        let bad = temp("bad.hex", "abc");
        let err = load_agent_secret(&bad).unwrap_err();
        assert!(matches!(err, KeyFileError::SecretNotHex { .. }));
        assert!(err.to_string().contains("64 hex digits"));
        assert!(matches!(
            load_agent_secret(Path::new("/nonexistent/key")),
            Err(KeyFileError::Read { .. })
        ));
    }

    #[test]
    fn written_key_files_are_new_private_and_load_back() {
        let dir = std::env::temp_dir().join(format!("pg-keyfile-w-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.json");
        let _ = std::fs::remove_file(&path);
        let secret = AgentSecret::from_bytes(&[3u8; 32]);
        write_key_file(&path, &KeyFile::agent(&secret)).unwrap();
        assert_eq!(load_agent_secret(&path).unwrap().to_bytes(), [3u8; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = write_key_file(&path, &KeyFile::agent(&AgentSecret::from_bytes(&[4u8; 32])))
            .unwrap_err();
        assert!(matches!(again, KeyFileError::Create { .. }));
        assert!(again.to_string().contains("must not exist yet"));
        assert_eq!(load_agent_secret(&path).unwrap().to_bytes(), [3u8; 32]);
    }

    #[test]
    fn key_file_text_parses_back_with_its_origin_in_errors() {
        let secret = PrincipalSecret::from_bytes(&[5u8; 32]).unwrap();
        let text = key_file_text(&KeyFile::principal(&secret, "gonka").unwrap()).unwrap();
        assert!(text.ends_with("}\n"));
        assert_eq!(
            parse_principal_secret(&text, "x").unwrap().to_bytes(),
            [5u8; 32]
        );
        let err = parse_agent_secret(&text, "the key file text")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the key file text holds a principal key (secp256k1), where an agent key (Ed25519) is needed: give the agent key file"
        );
    }

    #[test]
    fn a_gonka_key_is_64_hex_digits_or_a_key_file_path() {
        let hex_secret = hex::encode([6u8; 32]);
        for value in [hex_secret.clone(), format!("0x{hex_secret}\n")] {
            let secret = principal_secret_from_hex_or_path(&value, "gonka_key").unwrap();
            assert_eq!(secret.to_bytes(), [6u8; 32]);
        }
        let secret = PrincipalSecret::from_bytes(&[6u8; 32]).unwrap();
        let p = temp(
            "g.json",
            &key_file_text(&KeyFile::principal(&secret, "gonka").unwrap()).unwrap(),
        );
        let loaded = principal_secret_from_hex_or_path(p.to_str().unwrap(), "gonka_key").unwrap();
        assert_eq!(loaded.to_bytes(), [6u8; 32]);
        let err = principal_secret_from_hex_or_path(&hex_secret[..63], "gonka_key").unwrap_err();
        assert_eq!(
            err.to_string(),
            "gonka_key is neither a 64-hex-digit secret key nor the path of an existing key file"
        );
    }
}
