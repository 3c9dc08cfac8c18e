//! The configuration file: its sections (today's key names), loading and validation.

pub mod error;
pub mod file;

pub use error::ConfigError;
pub use file::{GatewayConfig, Overrides};
