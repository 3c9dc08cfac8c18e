//! A configuration problem, printed as one line: `key: problem` for a setting, or the
//! parser's message for text that is not TOML at all.

use std::fmt;

/// One configuration problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The text is not TOML at all (the parser's message, on one line).
    Syntax(String),
    /// A setting or a section is wrong.
    Key {
        /// The setting, e.g. `server.upstream`, `binding` or `principals.allow[2]`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    /// A problem with `key`.
    pub fn new(key: impl fmt::Display, problem: impl fmt::Display) -> ConfigError {
        ConfigError::Key {
            key: key.to_string(),
            problem: problem.to_string(),
        }
    }

    /// Text that is not TOML.
    pub fn syntax(message: impl fmt::Display) -> ConfigError {
        ConfigError::Syntax(message.to_string())
    }

    /// The file section the problem is in (`server` for `server.tls.reload_ms`); none
    /// for a syntax error.
    pub fn section(&self) -> Option<&str> {
        match self {
            ConfigError::Syntax(_) => None,
            ConfigError::Key { key, .. } => key.split(['.', ' ', '[']).next(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Syntax(message) => f.write_str(message),
            ConfigError::Key { key, problem } => write!(f, "{key}: {problem}"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_prints_as_one_key_line_and_knows_its_section() {
        let e = ConfigError::new("server.tls.reload_ms", "5 is out of range");
        assert_eq!(e.to_string(), "server.tls.reload_ms: 5 is out of range");
        assert_eq!(e.section(), Some("server"));
        assert_eq!(ConfigError::new("binding", "x").section(), Some("binding"));
        assert_eq!(
            ConfigError::new("principals.allow[2]", "x").section(),
            Some("principals")
        );
        assert_eq!(
            ConfigError::new("server.upstream TLS", "x").section(),
            Some("server")
        );
        assert_eq!(ConfigError::syntax("bad").section(), None);
        assert_eq!(ConfigError::syntax("bad").to_string(), "bad");
    }
}
