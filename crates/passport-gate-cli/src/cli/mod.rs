//! One module per command: its arguments and its body. `main` only dispatches.

pub mod audit;
pub mod conformance;
pub mod demo;
pub mod echo;
pub mod gonka_sign;
pub mod input;
pub mod inspect;
pub mod keygen;
pub mod mint;
pub mod output;
pub mod request;
pub mod revoke;
pub mod serve;
pub mod sign;
pub mod usage;
pub mod verify;
pub mod wallet;
