//! Transport pieces that know nothing of passports: TLS configuration and reloading,
//! and the upstream's HTTP/2 stream limit.

pub mod h2_settings;
pub mod tls;
