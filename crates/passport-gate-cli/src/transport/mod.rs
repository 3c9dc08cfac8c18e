//! Transport pieces that know nothing of passports: TLS configuration and reloading.

pub mod tls;
