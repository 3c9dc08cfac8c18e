//! Overrides from flags and `PASSPORT_GATE_*` variables, applied over the file.

use super::error::ConfigError;
use super::file::{BindingSection, GatewayConfig};

/// Overrides from flags and `PASSPORT_GATE_*` variables, applied over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `server.listen`.
    pub listen: Option<String>,
    /// `server.admin_listen`.
    pub admin_listen: Option<String>,
    /// `server.upstream`.
    pub upstream: Option<String>,
    /// `agent_envelope.chain_id`.
    pub chain_id: Option<String>,
    /// `agent_envelope.enabled`.
    pub enabled: Option<bool>,
    /// `binding.chain_node`.
    pub chain_node: Option<String>,
}

impl Overrides {
    /// Reads `PASSPORT_GATE_LISTEN`, `_ADMIN_LISTEN`, `_UPSTREAM`, `_CHAIN_ID`,
    /// `_ENABLED` (`true`/`false`) and `_CHAIN_NODE`; a bad value is an error naming its
    /// variable.
    pub fn from_env() -> Result<Overrides, ConfigError> {
        let var = |name: &str| std::env::var(format!("PASSPORT_GATE_{name}")).ok();
        let enabled = match var("ENABLED").as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ConfigError::new(
                    "PASSPORT_GATE_ENABLED",
                    format!("{other:?} is not true or false"),
                ))
            }
        };
        Ok(Overrides {
            listen: var("LISTEN"),
            admin_listen: var("ADMIN_LISTEN"),
            upstream: var("UPSTREAM"),
            chain_id: var("CHAIN_ID"),
            enabled,
            chain_node: var("CHAIN_NODE"),
        })
    }

    /// Values set here win over `other`'s.
    pub fn over(self, other: Overrides) -> Overrides {
        Overrides {
            listen: self.listen.or(other.listen),
            admin_listen: self.admin_listen.or(other.admin_listen),
            upstream: self.upstream.or(other.upstream),
            chain_id: self.chain_id.or(other.chain_id),
            enabled: self.enabled.or(other.enabled),
            chain_node: self.chain_node.or(other.chain_node),
        }
    }
}

impl GatewayConfig {
    /// Applies overrides.
    pub fn apply(&mut self, o: Overrides) {
        if let Some(v) = o.listen {
            self.server.listen = v;
        }
        if let Some(v) = o.admin_listen {
            self.server.admin_listen = v;
        }
        if let Some(v) = o.upstream {
            self.server.upstream = v;
        }
        if let Some(v) = o.chain_id {
            self.agent_envelope.chain_id = v;
        }
        if let Some(v) = o.enabled {
            self.agent_envelope.enabled = v;
        }
        if let Some(v) = o.chain_node {
            self.binding
                .get_or_insert_with(BindingSection::default)
                .chain_node = Some(v);
        }
    }
}
