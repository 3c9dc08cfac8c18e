//! The configuration file: its sections (today's key names), loading and validation.

pub mod file;

pub use file::{GatewayConfig, Overrides};
