//! Loading the file section by section, so that one bad section hides nothing.

use super::error::ConfigError;
use super::file::GatewayConfig;

impl GatewayConfig {
    /// Parses TOML text; every problem is one line in the error.
    pub fn from_toml(text: &str) -> Result<GatewayConfig, String> {
        let (config, errors) = GatewayConfig::load(text);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "))
        }
    }

    /// Parses TOML text section by section, so that one bad section does not hide the
    /// problems of the others: the sections that parse are kept (a bad one is left at
    /// its default), and every problem is one line naming its section. Text that is not
    /// TOML at all is one line.
    pub fn load(text: &str) -> (GatewayConfig, Vec<ConfigError>) {
        let one_line = |e: &dyn std::fmt::Display| e.to_string().trim().replace('\n', " ");
        let mut config = GatewayConfig::default();
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => return (config, vec![ConfigError::syntax(one_line(&e))]),
        };
        let mut errors = Vec::new();
        for (key, value) in table {
            let parsed = match key.as_str() {
                "server" => value.try_into().map(|v| config.server = v),
                "agent_envelope" => value.try_into().map(|v| config.agent_envelope = v),
                "routes" => value.try_into().map(|v| config.routes = v),
                "binding" => value.try_into().map(|v| config.binding = Some(v)),
                "attribution" => value.try_into().map(|v| config.attribution = v),
                "redis" => value.try_into().map(|v| config.redis = Some(v)),
                "replay" => value.try_into().map(|v| config.replay = v),
                "revocation" => value.try_into().map(|v| config.revocation = v),
                "principals" => value.try_into().map(|v| config.principals = Some(v)),
                "forward_identity" => value.try_into().map(|v| config.forward_identity = v),
                "upstream_auth" => value.try_into().map(|v| config.upstream_auth = Some(v)),
                "tracing" => value.try_into().map(|v| config.tracing = v),
                "limits" => value.try_into().map(|v| config.limits = Some(v)),
                _ => {
                    errors.push(ConfigError::new(
                        key,
                        "unknown section; expected server, agent_envelope, routes, binding, principals, forward_identity, upstream_auth, limits, attribution, redis, replay, revocation or tracing",
                    ));
                    continue;
                }
            };
            if let Err(e) = parsed {
                errors.push(ConfigError::new(key, one_line(&e)));
            }
        }
        (config, errors)
    }
}
