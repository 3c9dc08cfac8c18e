//! The `passport-gate` command: argument parsing and dispatch to one module per command
//! (`cli/`), which prints over the library.

mod cli;
mod config;
mod demo;
mod echo;
mod gateway;
mod terminal;
mod transport;
mod wallet;

use crate::cli::output::Failure;
use crate::terminal::escape_controls;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "passport-gate",
    version,
    about = "Signed agent passports (aps-agent-envelope-v1) for inference gateways"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a principal (secp256k1) or agent (Ed25519) key file.
    Keygen(cli::keygen::KeygenArgs),
    /// Mint a passport: print the X-Agent-Passport value.
    Mint(Box<cli::mint::MintArgs>),
    /// Sign a request: print the X-Agent-Sig value (or both headers).
    Sign(cli::sign::SignArgs),
    /// Show a passport's contents, derived address and validity window.
    Inspect(cli::inspect::InspectArgs),
    /// Verify one request and print a JSON verdict (exit 0 accepted, 1 rejected).
    Verify(cli::verify::VerifyArgs),
    /// Run conformance vectors (files or directories), or write them with --generate.
    Conformance(cli::conformance::ConformanceArgs),
    /// Run the gateway: a reverse proxy enforcing passports in front of an upstream.
    Serve(cli::serve::ServeArgs),
    /// Print a request's Gonka native signature headers (Authorization, X-Requester-Address,
    /// X-Timestamp, X-Transfer-Address), as a Gonka API node verifies them.
    GonkaSign(cli::gonka_sign::GonkaSignArgs),
    /// Sign and send one request with an agent key and a passport (curl for agents).
    Request(cli::request::RequestArgs),
    /// Start an echo upstream, the gateway and fresh keys, and walk through scenarios.
    Demo,
    /// Run the demo's OpenAI-compatible echo upstream alone (for the example config).
    Echo(cli::echo::EchoArgs),
    /// Check or summarise hash-chained audit files.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// Requests and tokens per principal, agent and period from audit files, for billing
    /// (the hash chain is checked first; calls without usage are counted apart).
    Usage(cli::usage::UsageArgs),
    /// Revoke an agent, an agent key, a principal or one passport.
    Revoke(cli::revoke::RevokeArgs),
    /// Serve the page where a principal mints a passport with a browser wallet (Keplr, Leap).
    Wallet(cli::wallet::WalletArgs),
}

fn main() -> ExitCode {
    transport::tls::install_default_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(a) => cli::keygen::run(&a),
        Command::Mint(a) => cli::mint::run(&a),
        Command::Sign(a) => cli::sign::run(&a),
        Command::Inspect(a) => cli::inspect::run(&a),
        Command::Verify(a) => cli::verify::run(&a),
        Command::Conformance(a) => cli::conformance::run(&a),
        Command::Serve(a) => cli::serve::run(&a),
        Command::GonkaSign(a) => cli::gonka_sign::run(&a),
        Command::Request(a) => cli::request::run(&a),
        Command::Demo => cli::demo::run(),
        Command::Echo(a) => cli::echo::run(&a),
        Command::Audit(a) => cli::audit::run(&a),
        Command::Usage(a) => cli::usage::run(&a),
        Command::Revoke(a) => cli::revoke::run(&a),
        Command::Wallet(a) => cli::wallet::run(&a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure(msg, code)) => {
            eprintln!("passport-gate: {}", escape_controls(&msg));
            ExitCode::from(code)
        }
    }
}
