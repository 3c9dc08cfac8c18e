//! The configuration file: its sections (today's key names, `file`), loading section by
//! section (`load`), overrides from flags and the environment (`overrides`), and
//! validation into `gateway::Settings` (`validate`), every problem a typed `ConfigError`.

pub mod error;
pub mod file;
mod load;
mod overrides;
mod validate;

pub use error::ConfigError;
pub use file::GatewayConfig;
pub use overrides::Overrides;
