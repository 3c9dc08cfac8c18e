//! The `passport-gate` command: argument parsing and printing over the library.

mod demo;
mod echo;
mod gateway;
mod terminal;
mod wallet;

use crate::terminal::escape_controls;
use clap::{Args, Parser, Subcommand};
use passport_conformance::{generate, run_paths};
use passport_core::crypto::{decode_base64, AgentKey, AgentSecret, PrincipalKey, PrincipalSecret};
use passport_core::envelope::Envelope;
use passport_core::inspect::{window_phrase, DerivedAddress};
use passport_core::keyfile::{
    key_file_text, load_agent_secret, load_principal_secret, write_key_file, KeyFile,
};
use passport_core::mint::{
    attach_signature, sign_request, verify_json, PassportSpec, VerifyOptions,
};
use passport_core::time::Timestamp;
use std::path::{Path, PathBuf};
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
    Keygen(KeygenArgs),
    /// Mint a passport: print the X-Agent-Passport value.
    Mint(Box<MintArgs>),
    /// Sign a request: print the X-Agent-Sig value (or both headers).
    Sign(SignArgs),
    /// Show a passport's contents, derived address and validity window.
    Inspect(InspectArgs),
    /// Verify one request and print a JSON verdict (exit 0 accepted, 1 rejected).
    Verify(VerifyArgs),
    /// Run conformance vectors (files or directories), or write them with --generate.
    Conformance(ConformanceArgs),
    /// Run the gateway: a reverse proxy enforcing passports in front of an upstream.
    Serve(ServeArgs),
    /// Sign and send one request with an agent key and a passport (curl for agents).
    Request(RequestArgs),
    /// Start an echo upstream, the gateway and fresh keys, and walk through scenarios.
    Demo,
    /// Run the demo's OpenAI-compatible echo upstream alone (for the example config).
    Echo(EchoArgs),
    /// Check or summarise hash-chained audit files.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Revoke an agent, an agent key, a principal or one passport.
    Revoke(RevokeArgs),
    /// Serve the page where a principal mints a passport with a browser wallet (Keplr, Leap).
    Wallet(WalletArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain across FILEs (oldest first) and name the first broken line.
    Verify {
        /// Audit files in chain order (rotated files first: audit.jsonl.1, .2, ..., audit.jsonl).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The head hash kept elsewhere; lines removed from the end are detected against it.
        #[arg(long)]
        head: Option<String>,
    },
    /// Summarise calls and tokens by day, principal, agent and model, after checking
    /// the hash chain of audit files (a broken chain is not reported).
    Report {
        /// Audit files in chain order, or JSON-lines event files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Report without checking the chain (a loud warning says so).
        #[arg(long)]
        no_verify: bool,
    },
}

#[derive(Args)]
#[group(id = "target", required = true, multiple = false)]
struct RevokeTarget {
    /// Revoke every passport naming this agent id (1 to 256 bytes, any characters).
    #[arg(long)]
    agent_id: Option<String>,
    /// Revoke every passport naming this agent key (strict standard base64).
    #[arg(long)]
    agent_pubkey: Option<String>,
    /// Revoke every passport issued by this principal (bech32 account address).
    #[arg(long)]
    principal: Option<String>,
    /// Revoke one passport: its X-Agent-Passport value (the id is computed).
    #[arg(long)]
    passport: Option<String>,
    /// Revoke one passport: a file holding its X-Agent-Passport value.
    #[arg(long)]
    passport_file: Option<PathBuf>,
    /// Revoke one passport by its passport_id (64 hex digits: SHA-256 of its JCS form).
    #[arg(long, alias = "envelope")]
    passport_id: Option<String>,
}

#[derive(Args)]
#[group(id = "store", required = true, multiple = true)]
struct RevokeStore {
    /// The revocation file the gateways watch.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The Redis server the gateways poll, redis://host:port.
    #[arg(long)]
    redis: Option<String>,
}

#[derive(Args)]
struct RevokeArgs {
    #[command(flatten)]
    target: RevokeTarget,
    #[command(flatten)]
    store: RevokeStore,
    /// The Redis key prefix the gateways use (the set is <prefix>revoked).
    #[arg(long, default_value = "aps:")]
    key_prefix: String,
    /// Bech32 prefix of the gateways' principal addresses.
    #[arg(long, default_value = "gonka")]
    prefix: String,
}

#[derive(Args)]
struct ServeArgs {
    /// The TOML configuration file (see passport-gate.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Proxy address (overrides server.listen and PASSPORT_GATE_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// Admin address (overrides server.admin_listen).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Upstream URL (overrides server.upstream).
    #[arg(long)]
    upstream: Option<String>,
    /// Chain id (overrides agent_envelope.chain_id).
    #[arg(long)]
    chain_id: Option<String>,
    /// Enable passport checks (overrides agent_envelope.enabled).
    #[arg(long)]
    enabled: bool,
    /// Chain node REST URL for requester binding (overrides binding.chain_node).
    #[arg(long)]
    chain_node: Option<String>,
}

#[derive(Args)]
struct EchoArgs {
    /// Where to listen (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: std::net::SocketAddr,
}

#[derive(Args)]
struct RequestArgs {
    /// The URL, e.g. http://127.0.0.1:8080/v1/chat/completions.
    url: String,
    /// The agent's key file.
    #[arg(long)]
    agent_key: PathBuf,
    /// The X-Agent-Passport value.
    #[arg(long, required_unless_present = "passport_file")]
    passport: Option<String>,
    /// A file holding the X-Agent-Passport value.
    #[arg(long, conflicts_with = "passport")]
    passport_file: Option<PathBuf>,
    /// The gateway's chain id.
    #[arg(long)]
    chain_id: String,
    /// The HTTP method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Extra header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    #[command(flatten)]
    body: BodyArg,
    /// Give up when the response head has not arrived within this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_seconds: u64,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct KeyKindArg {
    /// A principal key (secp256k1, with its account address).
    #[arg(long)]
    principal: bool,
    /// An agent key (Ed25519).
    #[arg(long)]
    agent: bool,
}

#[derive(Args)]
struct KeygenArgs {
    #[command(flatten)]
    kind: KeyKindArg,
    /// Write the key file here (created with mode 0600) instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Bech32 prefix of the principal address.
    #[arg(long, default_value = "gonka")]
    prefix: String,
}

#[derive(Args)]
struct MintArgs {
    /// The principal's key file (or a file holding the 64-hex-digit secret).
    #[arg(long, required_unless_present_any = ["unsigned", "attach_sig"])]
    principal_key: Option<PathBuf>,
    /// The principal's public key, base64 (with --unsigned, instead of --principal-key).
    #[arg(long, conflicts_with = "principal_key")]
    principal_pubkey: Option<String>,
    /// The agent's key file.
    #[arg(long, conflicts_with = "agent_pubkey")]
    agent_key: Option<PathBuf>,
    /// The agent's public key, base64.
    #[arg(long)]
    agent_pubkey: Option<String>,
    /// The agent id, e.g. urn:aps:agent:<id>.
    #[arg(long)]
    agent_id: Option<String>,
    /// The chain the passport is valid on.
    #[arg(long)]
    chain_id: Option<String>,
    /// Lifetime from issue: 90s, 30m, 1h, or plain seconds.
    #[arg(long, conflicts_with = "expires_at")]
    ttl: Option<String>,
    /// Absolute expiry, RFC 3339.
    #[arg(long)]
    expires_at: Option<String>,
    /// Start of validity, RFC 3339.
    #[arg(long)]
    not_before: Option<String>,
    /// Issue time, RFC 3339 (default: now).
    #[arg(long)]
    issued_at: Option<String>,
    /// An allowed model (repeat for more). Without any, every model is allowed.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Allow no model at all (allowed_models: []).
    #[arg(long, conflicts_with = "models")]
    no_models: bool,
    /// Who the work is for.
    #[arg(long)]
    beneficiary: Option<String>,
    /// Bech32 prefix of the principal address.
    #[arg(long, default_value = "gonka")]
    prefix: String,
    /// The largest lifetime the target gateway accepts.
    #[arg(long, default_value_t = 3600)]
    max_ttl_seconds: u64,
    /// Print the envelope and the ADR-036 data to sign in a wallet, instead of signing.
    #[arg(long, conflicts_with = "attach_sig")]
    unsigned: bool,
    /// Complete an unsigned envelope (--envelope FILE) with a wallet's signature.
    #[arg(long, requires = "envelope")]
    attach_sig: Option<String>,
    /// The unsigned envelope file printed by --unsigned.
    #[arg(long)]
    envelope: Option<PathBuf>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct BodyArg {
    /// Read the body from this file (`-`: standard input).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// The body as a string.
    #[arg(long)]
    body: Option<String>,
}

impl BodyArg {
    fn read(&self) -> Result<Vec<u8>, String> {
        match (&self.body_file, &self.body) {
            (Some(p), _) if p.as_os_str() == "-" => {
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                    .map_err(|e| format!("cannot read the body from standard input: {e}"))?;
                Ok(body)
            }
            (Some(p), _) => {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
            (None, Some(s)) => Ok(s.clone().into_bytes()),
            (None, None) => Err("give --body or --body-file".into()),
        }
    }
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct PassportArg {
    /// The X-Agent-Passport value.
    #[arg(long)]
    passport: Option<String>,
    /// A file holding the X-Agent-Passport value (surrounding white space is ignored).
    #[arg(long)]
    passport_file: Option<PathBuf>,
}

impl PassportArg {
    fn read(&self) -> Result<String, String> {
        passport_value(self.passport.as_deref(), self.passport_file.as_deref())
    }
}

/// The passport given as a value or in a file (a file written by `mint > file` ends
/// with a newline, which is not part of the value).
fn passport_value(value: Option<&str>, file: Option<&Path>) -> Result<String, String> {
    match (value, file) {
        (Some(v), _) => Ok(v.to_owned()),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", f.display())),
        (None, None) => Err("give --passport or --passport-file".into()),
    }
}

#[derive(Args)]
struct SignArgs {
    /// The agent's key file.
    #[arg(long)]
    agent_key: PathBuf,
    #[command(flatten)]
    passport: PassportArg,
    /// The gateway's chain id.
    #[arg(long)]
    chain_id: String,
    /// The HTTP method.
    #[arg(long)]
    method: String,
    /// The path plus ?query, exactly as it will be sent.
    #[arg(long)]
    uri: String,
    #[command(flatten)]
    body: BodyArg,
    /// Print both headers as `Name: value` lines.
    #[arg(long)]
    headers: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// The X-Agent-Passport value.
    #[arg(required_unless_present = "passport_file")]
    passport: Option<String>,
    /// A file holding the X-Agent-Passport value.
    #[arg(long, conflicts_with = "passport")]
    passport_file: Option<PathBuf>,
    /// Bech32 prefix for the derived address.
    #[arg(long, default_value = "gonka")]
    prefix: String,
}

#[derive(Args)]
struct VerifyArgs {
    /// The gateway's chain id.
    #[arg(long)]
    chain_id: String,
    /// Verify as of this instant (RFC 3339) instead of now.
    #[arg(long)]
    now: Option<String>,
    /// The largest accepted passport lifetime.
    #[arg(long, default_value_t = 3600)]
    max_ttl_seconds: u64,
    /// Bech32 prefix of addresses.
    #[arg(long, default_value = "gonka")]
    prefix: String,
    /// The HTTP method.
    #[arg(long)]
    method: String,
    /// The request target in origin form: the path plus ?query, as sent (no scheme,
    /// host or #fragment: no request line carries those to the layer).
    #[arg(long)]
    uri: String,
    #[command(flatten)]
    passport: PassportArg,
    /// The X-Agent-Sig value, exactly as the header carries it.
    #[arg(long)]
    sig: String,
    #[command(flatten)]
    body: BodyArg,
}

#[derive(Args)]
struct ConformanceArgs {
    /// Vector files or directories.
    #[arg(required_unless_present = "generate")]
    paths: Vec<PathBuf>,
    /// Write the generated vectors into this directory instead of running.
    #[arg(long, conflicts_with = "paths")]
    generate: Option<PathBuf>,
}

/// A failure to report: the message and the exit code.
struct Failure(String, u8);

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s, 2)
    }
}

fn init_logging() {
    let level = match std::env::var("PASSPORT_GATE_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the runtime: {e}"), 1))
}

/// Prints one line (or several) to stdout for people; see [`print_out`].
macro_rules! say {
    ($($arg:tt)*) => {
        print_out(&format!($($arg)*), true)
    };
}

/// Writes `text` to stdout with every control and bidi character escaped on each line
/// (agent ids, models and file contents must not drive the terminal). A closed stdout
/// (`passport-gate inspect ... | head`) stops the output quietly: the command still
/// finishes and exits with its own status, which for `verify` is the verdict.
fn print_out(text: &str, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut lines = text.split('\n').peekable();
    let mut written = Ok(());
    while let Some(line) = lines.next() {
        let end = if lines.peek().is_some() || newline {
            "\n"
        } else {
            ""
        };
        written = written.and_then(|()| write!(out, "{}{end}", escape_controls(line)));
    }
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => eprintln!("passport-gate: cannot write to stdout: {e}"),
    }
}

fn main() -> ExitCode {
    gateway::tls::install_default_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(a) => keygen(&a),
        Command::Mint(a) => mint(&a),
        Command::Sign(a) => sign(&a),
        Command::Inspect(a) => inspect(&a),
        Command::Verify(a) => verify(&a),
        Command::Conformance(a) => conformance(&a),
        Command::Serve(a) => serve(&a),
        Command::Request(a) => request(&a),
        Command::Demo => demo(),
        Command::Echo(a) => echo(&a),
        Command::Audit(a) => audit(&a),
        Command::Revoke(a) => revoke(&a),
        Command::Wallet(a) => wallet(&a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure(msg, code)) => {
            eprintln!("passport-gate: {}", escape_controls(&msg));
            ExitCode::from(code)
        }
    }
}

fn keygen(a: &KeygenArgs) -> Result<u8, Failure> {
    let file = if a.kind.principal {
        let secret = PrincipalSecret::generate().map_err(|e| format!("no randomness: {e}"))?;
        KeyFile::principal(&secret, &a.prefix).map_err(|e| e.to_string())?
    } else {
        KeyFile::agent(&AgentSecret::generate().map_err(|e| format!("no randomness: {e}"))?)
    };
    match &a.out {
        Some(path) => {
            write_key_file(path, &file).map_err(|e| e.to_string())?;
            eprintln!("wrote {}", path.display());
            if let Some(addr) = &file.address {
                eprintln!("principal address: {addr}");
            }
            eprintln!("public key: {}", file.public_key);
        }
        None => print_out(&key_file_text(&file).map_err(|e| e.to_string())?, false),
    }
    Ok(0)
}

fn parse_time(name: &str, s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s).map_err(|e| format!("--{name}: {e}"))
}

fn parse_duration_seconds(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("--ttl {s:?}: expected a number with an optional unit s, m or h"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("--ttl {s:?}: the unit must be s, m or h")),
    };
    n.checked_mul(factor)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("--ttl {s:?}: must be positive and not absurdly large"))
}

fn agent_public(a: &MintArgs) -> Result<AgentKey, String> {
    match (&a.agent_key, &a.agent_pubkey) {
        (Some(p), _) => Ok(load_agent_secret(p)
            .map_err(|e| e.to_string())?
            .public_key()),
        (None, Some(b64)) => decode_base64(b64)
            .and_then(|b| AgentKey::from_bytes(&b))
            .ok_or_else(|| "--agent-pubkey is not base64 of a valid Ed25519 key".into()),
        (None, None) => Err("give --agent-key or --agent-pubkey".into()),
    }
}

fn mint(a: &MintArgs) -> Result<u8, Failure> {
    if let Some(sig) = &a.attach_sig {
        let path = a
            .envelope
            .as_ref()
            .ok_or("--attach-sig needs --envelope FILE".to_string())?;
        let json =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let header = attach_signature(&json, sig, &a.prefix).map_err(|e| e.to_string())?;
        say!("{header}");
        return Ok(0);
    }
    let need =
        |v: &Option<String>, flag: &str| v.clone().ok_or_else(|| format!("{flag} is required"));
    let (principal_secret, principal_key) = match (&a.principal_key, &a.principal_pubkey) {
        (Some(p), _) => {
            let s = load_principal_secret(p).map_err(|e| e.to_string())?;
            let k = s.public_key();
            (Some(s), k)
        }
        (None, Some(b64)) => (
            None,
            decode_base64(b64)
                .and_then(|b| PrincipalKey::from_compressed(&b))
                .ok_or(
                    "--principal-pubkey is not base64 of a compressed secp256k1 key".to_string(),
                )?,
        ),
        (None, None) => {
            return Err(
                "give --principal-key (or --principal-pubkey with --unsigned)"
                    .to_string()
                    .into(),
            )
        }
    };
    let issued_at = match &a.issued_at {
        Some(t) => parse_time("issued-at", t)?,
        None => Timestamp::from_unix_seconds(Timestamp::now().unix_seconds()),
    };
    let expires_at = match (&a.ttl, &a.expires_at) {
        (Some(ttl), _) => issued_at.plus_seconds(parse_duration_seconds(ttl)?),
        (None, Some(t)) => parse_time("expires-at", t)?,
        (None, None) => return Err("give --ttl or --expires-at".to_string().into()),
    };
    let spec = PassportSpec {
        chain_id: need(&a.chain_id, "--chain-id")?,
        agent_id: need(&a.agent_id, "--agent-id")?,
        agent_key: agent_public(a)?,
        principal_key,
        address_prefix: a.prefix.clone(),
        issued_at,
        expires_at,
        not_before: a
            .not_before
            .as_deref()
            .map(|t| parse_time("not-before", t))
            .transpose()?,
        allowed_models: if a.no_models {
            Some(Vec::new())
        } else if a.models.is_empty() {
            None
        } else {
            Some(a.models.clone())
        },
        beneficiary: a.beneficiary.clone(),
    };
    if a.unsigned {
        let u = spec
            .unsigned(a.max_ttl_seconds)
            .map_err(|e| e.to_string())?;
        let mut out = u.to_json().map_err(|e| e.to_string())?;
        out["next"] = "save .envelope to a file, have the wallet signArbitrary(chain_id, signer, data), then run: passport-gate mint --attach-sig <signature> --envelope <file>".into();
        say!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
        return Ok(0);
    }
    let secret =
        principal_secret.ok_or("minting needs --principal-key (or use --unsigned)".to_string())?;
    say!(
        "{}",
        spec.mint(&secret, a.max_ttl_seconds)
            .map_err(|e| e.to_string())?
    );
    Ok(0)
}

fn sign(a: &SignArgs) -> Result<u8, Failure> {
    let secret = load_agent_secret(&a.agent_key).map_err(|e| e.to_string())?;
    let passport = a.passport.read()?;
    let body = a.body.read()?;
    let sig = sign_request(&secret, &passport, &a.chain_id, &a.method, &a.uri, &body)
        .map_err(|e| e.to_string())?;
    if a.headers {
        say!("X-Agent-Passport: {}", passport.trim());
        say!("X-Agent-Sig: {sig}");
    } else {
        say!("{sig}");
    }
    Ok(0)
}

fn both_times(t: Timestamp) -> String {
    use chrono::TimeZone;
    let local = chrono::Local
        .timestamp_opt(
            t.unix_seconds(),
            (t.unix_nanos().rem_euclid(1_000_000_000)) as u32,
        )
        .single()
        .map(|l| l.format("%Y-%m-%d %H:%M:%S %:z").to_string())
        .unwrap_or_else(|| "?".into());
    format!("{t} (local {local})")
}

fn inspect(a: &InspectArgs) -> Result<u8, Failure> {
    let passport = passport_value(a.passport.as_deref(), a.passport_file.as_deref())?;
    let now = Timestamp::now();
    let i = passport_core::inspect::inspect(&passport, &a.prefix, now, None)
        .map_err(|e| e.to_string())?;
    let pretty = serde_json::to_string_pretty(&i.json)
        .map_err(|e| format!("the passport is not JSON: {e}"))?;
    say!("{pretty}");
    let f = i
        .envelope
        .map_err(|e| Failure(format!("malformed envelope: {e}"), 1))?;
    let e = &f.envelope;
    say!("");
    say!("envelope sha256:   {}", hex::encode(e.sha256()));
    say!("passport id:       {}", hex::encode(e.passport_id()));
    match &f.derived_address {
        DerivedAddress::Derived(addr) => {
            let verdict = if f.address_matches() {
                "matches"
            } else {
                "DOES NOT MATCH principal_address"
            };
            say!("derived address:   {addr} ({verdict})");
        }
        DerivedAddress::Failed(err) => say!("derived address:   cannot derive: {err}"),
        DerivedAddress::KeyInvalid => {
            say!("derived address:   principal_pubkey is not a compressed secp256k1 key")
        }
    }
    say!("issued at:         {}", both_times(e.issued_at));
    if let Some(nb) = e.scope.not_before {
        say!("not before:        {}", both_times(nb));
    }
    say!("expires at:        {}", both_times(e.scope.expires_at));
    say!(
        "now:               {} ({})",
        both_times(now),
        window_phrase(f.window)
    );
    say!("signatures:        not checked here; use `passport-gate verify`");
    Ok(0)
}

fn verify(a: &VerifyArgs) -> Result<u8, Failure> {
    // The values go through the layer's own header reading (in `verify_json`), so that a
    // value the layer refuses (surrounding spaces, control characters) or treats as
    // absent (empty) gets the same verdict here.
    let options = VerifyOptions {
        chain_id: a.chain_id.clone(),
        now: a.now.clone(),
        max_ttl_seconds: a.max_ttl_seconds,
        prefix: a.prefix.clone(),
        method: a.method.clone(),
        uri: a.uri.clone(),
        passport: a.passport.read()?,
        sig: a.sig.clone(),
    };
    let body = a.body.read()?;
    let verdict = verify_json(&options, &body).map_err(|e| e.to_string())?;
    say!("{verdict}");
    Ok(if verdict["ok"] == true { 0 } else { 1 })
}

fn conformance(a: &ConformanceArgs) -> Result<u8, Failure> {
    if let Some(dir) = &a.generate {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let vectors = generate();
        for v in &vectors {
            let path = dir.join(format!("{}.json", v.name));
            let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())? + "\n";
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        eprintln!("wrote {} vectors to {}", vectors.len(), dir.display());
        return Ok(0);
    }
    let report = run_paths(&a.paths);
    for (name, why) in &report.failed {
        say!("FAIL {name}: {why}");
    }
    for (file, why) in &report.invalid {
        say!("INVALID {}: {why}", file.display());
    }
    say!(
        "{} passed, {} failed",
        report.passed,
        report.failed.len() + report.invalid.len()
    );
    Ok(if !report.invalid.is_empty() {
        2
    } else if !report.failed.is_empty() {
        1
    } else {
        0
    })
}

fn serve(a: &ServeArgs) -> Result<u8, Failure> {
    use crate::gateway::{self, GatewayConfig, Overrides};
    // Every problem is reported in one run: the file's sections are parsed one by one,
    // and the sections that parsed are validated too.
    let (mut config, parse_errors) = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure(format!("cannot read {}: {e}", path.display()), 2))?;
            GatewayConfig::load(&text)
        }
        None => (GatewayConfig::default(), Vec::new()),
    };
    let flags = Overrides {
        listen: a.listen.clone(),
        admin_listen: a.admin_listen.clone(),
        upstream: a.upstream.clone(),
        chain_id: a.chain_id.clone(),
        enabled: a.enabled.then_some(true),
        chain_node: a.chain_node.clone(),
    };
    let env = Overrides::from_env().map_err(|e| Failure(e, 2))?;
    config.apply(flags.over(env));
    let validated = config.validate().and_then(|v| {
        if parse_errors.is_empty() {
            Ok(v)
        } else {
            Err(Vec::new())
        }
    });
    let validated = validated.map_err(|validation_errors| {
        // A section that did not parse was validated at its defaults: its own
        // validation lines would only repeat the problem.
        let failed: Vec<&str> = parse_errors
            .iter()
            .filter_map(|e| e.split_once(':').map(|(section, _)| section))
            .collect();
        let errors: Vec<String> = parse_errors
            .iter()
            .cloned()
            .chain(validation_errors.into_iter().filter(|e| {
                !failed
                    .iter()
                    .any(|f| e.starts_with(&format!("{f}.")) || e.starts_with(&format!("{f}:")))
            }))
            .collect();
        // One line per problem (the failure line itself escapes line breaks).
        eprintln!("passport-gate: invalid configuration:");
        for e in &errors {
            eprintln!("  {}", escape_controls(e));
        }
        Failure(
            format!(
                "{} configuration problem(s); nothing was started",
                errors.len()
            ),
            2,
        )
    })?;
    init_logging();
    let envelope = &validated.raw.agent_envelope;
    let describe = if envelope.enabled {
        format!(
            "passports enabled for chain {} ({:?} mode)",
            envelope.chain_id, envelope.mode
        )
    } else {
        "passports DISABLED: every request passes untouched".to_owned()
    };
    let upstream = validated.raw.server.upstream.clone();
    let scheme = if validated.raw.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let report = runtime()?
        .block_on(gateway::run(validated, gateway::shutdown_signal(), |b| {
            eprintln!(
                "passport-gate listening on {scheme}://{} (admin http://{}), upstream {upstream}, {describe}",
                b.listen, b.admin
            );
        }))
        .map_err(|e| {
            // One line per problem (the failure line itself escapes line breaks).
            let lines: Vec<&str> = e.lines().collect();
            if lines.len() > 1 {
                for l in &lines {
                    eprintln!("passport-gate: {}", escape_controls(l));
                }
                return Failure(format!("{} problem(s) at startup", lines.len()), 1);
            }
            Failure(e, 1)
        })?;
    eprintln!(
        "passport-gate stopped: {} connection(s) cut at the grace deadline, {} forwarded request(s) cut before their event",
        report.connections_cut, report.events_cut
    );
    if let Some(a) = report.attribution {
        eprintln!(
            "attribution: {} written, {} dropped (queue full), {} lost at shutdown, {} sink failures",
            a.written, a.dropped, a.lost_at_shutdown, a.sink_failures
        );
    }
    Ok(0)
}

fn request(a: &RequestArgs) -> Result<u8, Failure> {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use passport_core::mint::AgentSigner;
    use passport_gate::client::SignerLayer;
    use std::io::Write;
    use tower::{Layer, ServiceExt};

    let agent = load_agent_secret(&a.agent_key).map_err(|e| e.to_string())?;
    let passport = passport_value(a.passport.as_deref(), a.passport_file.as_deref())?;
    let signer = AgentSigner::new(agent, &passport, &a.chain_id).map_err(|e| e.to_string())?;
    let body = a.body.read()?;
    let mut req = http::Request::builder()
        .method(a.method.as_str())
        .uri(a.url.as_str());
    let mut has_content_type = false;
    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("-H {h:?}: expected `Name: value`"))?;
        has_content_type |= name.trim().eq_ignore_ascii_case("content-type");
        req = req.header(name.trim(), value.trim());
    }
    if !has_content_type {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request: {e}"))?;
    runtime()?.block_on(async move {
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let sent = SignerLayer::new(signer).layer(client).oneshot(req);
        let resp = tokio::time::timeout(std::time::Duration::from_secs(a.timeout_seconds), sent)
            .await
            .map_err(|_| {
                Failure(
                    format!(
                        "request to {} failed: timeout: no response within {} s",
                        a.url, a.timeout_seconds
                    ),
                    1,
                )
            })?
            .map_err(|e| Failure(request_failure(&a.url, &e), 1))?;
        eprintln!("{:?} {}", resp.version(), resp.status());
        for (name, value) in resp.headers() {
            eprintln!("{name}: {}", value.to_str().unwrap_or("<binary>"));
        }
        eprintln!();
        let ok = resp.status().is_success();
        let mut body = resp.into_body();
        let mut out = std::io::stdout();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure(format!("reading the response: {e}"), 1))?;
            if let Some(data) = frame.data_ref() {
                match out.write_all(data).and_then(|()| out.flush()) {
                    Ok(()) => {}
                    // The reader went away (`| head`): stop quietly.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                    Err(e) => return Err(Failure(e.to_string(), 1)),
                }
            }
        }
        Ok(if ok { 0 } else { 1 })
    })
}

/// "request to URL failed: CAUSE (detail)", with the cause named from the error chain
/// (connection refused, DNS lookup, TLS, timeout), so that the user knows what to fix.
fn request_failure(url: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = Vec::new();
    let mut cause = None;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if cause.is_none() {
            cause = match err
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind)
            {
                Some(std::io::ErrorKind::ConnectionRefused) => Some("connection refused"),
                Some(std::io::ErrorKind::TimedOut) => Some("timeout"),
                Some(std::io::ErrorKind::ConnectionReset) => Some("connection reset"),
                _ if text.contains("dns error") => Some("DNS lookup failed"),
                _ if text.contains("scheme is not http") => {
                    Some("TLS: https is not supported by this command; use http")
                }
                _ if text.to_ascii_lowercase().contains("tls") => Some("TLS handshake failed"),
                _ if text.contains("timed out") => Some("timeout"),
                _ => None,
            };
        }
        chain.push(text);
        next = err.source();
    }
    chain.dedup();
    format!(
        "request to {url} failed: {}: {}",
        cause.unwrap_or("error"),
        chain.join(": ")
    )
}

fn demo() -> Result<u8, Failure> {
    runtime()?
        .block_on(crate::demo::run())
        .map_err(|e| Failure(e, 1))
}

fn echo(a: &EchoArgs) -> Result<u8, Failure> {
    use crate::echo::EchoUpstream;
    runtime()?.block_on(async {
        let upstream = EchoUpstream::start(a.listen, std::time::Duration::from_millis(20))
            .await
            .map_err(|e| Failure(format!("--listen {}: {e}", a.listen), 1))?;
        say!(
            "echo upstream listening on http://{} (POST /v1/chat/completions, /v1/completions; GET /v1/models); Ctrl-C stops it",
            upstream.addr()
        );
        crate::gateway::shutdown_signal().await;
        Ok(0)
    })
}

fn audit(a: &AuditCommand) -> Result<u8, Failure> {
    use passport_gate::attribution::audit::{read_events, refusals, summarize, verify_files};
    match a {
        AuditCommand::Verify { files, head } => {
            let r = verify_files(files).map_err(|e| Failure(format!("cannot read: {e}"), 2))?;
            if r.starts_mid_chain {
                say!("note: the first line continues an earlier file; give every file from the first to check the whole chain");
            }
            if let Some(broken) = &r.broken {
                say!("BROKEN at {broken}");
                say!("{} line(s) verified before it", r.lines);
                return Ok(1);
            }
            if r.incomplete_tail {
                say!("note: the last line is incomplete (an interrupted write); it is not part of the chain");
            }
            say!("ok: {} line(s) verified", r.lines);
            say!("head hash: {}", r.head);
            say!(
                "lines removed from the end cannot be detected from the files alone: keep the head hash elsewhere and check it with --head"
            );
            if let Some(h) = head {
                if !h.eq_ignore_ascii_case(&r.head) {
                    say!("HEAD MISMATCH: expected {h}; lines were removed from the end or the files are not the ones that hash was taken from");
                    return Ok(1);
                }
                say!("head matches the expected hash");
            }
            Ok(0)
        }
        AuditCommand::Report {
            files,
            json,
            no_verify,
        } => {
            let read = read_events(files).map_err(|e| Failure(format!("cannot report: {e}"), 2))?;
            if !read.chained {
                if !read.events.is_empty() {
                    eprintln!("WARNING: plain JSON-lines event files have no hash chain: these numbers are NOT verified");
                }
            } else if *no_verify {
                eprintln!("WARNING: --no-verify: the hash chain was NOT checked; these numbers may include edited, inserted or reordered lines, and miss deleted ones");
            } else {
                let r = verify_files(files).map_err(|e| Failure(format!("cannot read: {e}"), 2))?;
                if let Some(broken) = &r.broken {
                    return Err(Failure(
                        format!("not reporting: the chain is BROKEN at {broken} (see `passport-gate audit verify`; --no-verify reports anyway)"),
                        1,
                    ));
                }
                eprintln!(
                    "chain verified: {} line(s), head hash {} (compare it with the head kept elsewhere: lines removed from the end are not detected otherwise)",
                    r.lines, r.head
                );
                if r.starts_mid_chain {
                    eprintln!("note: the first line continues an earlier file; give every file from the first to check the whole chain");
                }
            }
            if read.incomplete_tails > 0 {
                eprintln!(
                    "note: {} incomplete last line(s) (an interrupted write) not counted",
                    read.incomplete_tails
                );
            }
            let rows = summarize(&read.events);
            let refused = refusals(&read.events);
            if *json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
                );
                return Ok(0);
            }
            say!(
                "{:<10}  {:<46}  {:<32}  {:<24}  {:>7}  {:>10}  {:>10}  {:>10}",
                "day",
                "principal",
                "agent",
                "model",
                "calls",
                "prompt",
                "completion",
                "tokens"
            );
            for r in &rows {
                say!(
                    "{:<10}  {:<46}  {:<32}  {:<24}  {:>7}  {:>10}  {:>10}  {:>10}",
                    escape_controls(&r.day),
                    escape_controls(&r.principal_address),
                    escape_controls(&r.agent_id),
                    escape_controls(&r.model),
                    r.calls,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.total_tokens
                );
            }
            for (code, n) in &refused {
                say!("refused ({}): {n}", escape_controls(code));
            }
            let calls: u64 = rows.iter().map(|r| r.calls).sum();
            say!("{calls} call(s) in {} event file(s)", files.len());
            Ok(0)
        }
    }
}

/// The passport_id (hex) of an X-Agent-Passport value.
fn passport_id_of(header: &str) -> Result<String, String> {
    let raw = decode_base64(header.trim())
        .ok_or("the passport is not strict standard base64".to_string())?;
    let e = Envelope::parse(&raw).map_err(|e| format!("malformed envelope: {e}"))?;
    Ok(hex::encode(e.passport_id()))
}

fn revoke(a: &RevokeArgs) -> Result<u8, Failure> {
    use passport_gate::revocation::{append_to_file, Entry};
    let t = &a.target;
    let entry = if let Some(v) = &t.agent_id {
        Entry::new("agent_id", v)
    } else if let Some(v) = &t.agent_pubkey {
        Entry::new("agent_pubkey", v)
    } else if let Some(v) = &t.principal {
        Entry::new("principal", v)
    } else if let Some(v) = &t.passport {
        Entry::new("passport", &passport_id_of(v)?)
    } else if let Some(p) = &t.passport_file {
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        Entry::new("passport", &passport_id_of(&text)?)
    } else if let Some(v) = &t.passport_id {
        Entry::new("passport", v)
    } else {
        Err("give one of --agent-id, --agent-pubkey, --principal, --passport, --passport-file, --passport-id".into())
    }
    .map_err(|e| format!("refused, this entry could never match: {e}"))?;
    if !entry.fits_prefix(&a.prefix) {
        return Err(format!(
            "refused, this entry could never match: the principal's prefix is not {:?} (see --prefix)",
            a.prefix
        )
        .into());
    }
    let shown = escape_controls(&entry.to_string()).into_owned();
    if let Some(file) = &a.store.file {
        append_to_file(file, &entry)?;
        eprintln!("added `{shown}` to {}", file.display());
    }
    if let Some(url) = &a.store.redis {
        let config = passport_gate::redis_client::RedisConfig::from_url(
            url,
            std::time::Duration::from_secs(5),
        )?;
        let key = format!("{}revoked", a.key_prefix);
        runtime()?
            .block_on(
                passport_gate::redis_client::Redis::new(config).sadd(&key, &entry.to_string()),
            )
            .map_err(|e| Failure(e.to_string(), 1))?;
        eprintln!("added `{shown}` to the Redis set {key}");
    }
    Ok(0)
}

#[derive(Args)]
struct WalletArgs {
    /// Address to serve the page on (loopback unless --public).
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: std::net::SocketAddr,
    /// Serve on a non-loopback address and answer any Host header.
    #[arg(long)]
    public: bool,
    /// The chain passports are minted for.
    #[arg(long, default_value = "gonka-mainnet")]
    chain_id: String,
    /// Bech32 prefix of principal addresses.
    #[arg(long, default_value = "gonka")]
    prefix: String,
    /// The target gateway's max_ttl_seconds: the longest lifetime the page offers.
    #[arg(long, default_value_t = 3600)]
    max_ttl_seconds: u64,
    /// The chain's RPC URL, offered to a wallet that does not know the chain.
    #[arg(long, default_value = "http://127.0.0.1:26657")]
    rpc: String,
    /// The chain's REST URL, offered to a wallet that does not know the chain.
    #[arg(long, default_value = "http://127.0.0.1:1317")]
    rest: String,
    /// The chain's base denomination, offered to a wallet that does not know the chain.
    #[arg(long, default_value = "ngonka")]
    denom: String,
}

fn wallet(a: &WalletArgs) -> Result<u8, Failure> {
    use crate::wallet::{run, WalletConfig};
    let config = WalletConfig {
        public: a.public,
        max_ttl_seconds: a.max_ttl_seconds,
        rpc: a.rpc.clone(),
        rest: a.rest.clone(),
        denom: a.denom.clone(),
        ..WalletConfig::new(a.listen, &a.chain_id, &a.prefix)
    };
    config.check_listen().map_err(|e| Failure(e, 2))?;
    if a.public {
        eprintln!("passport-gate: WARNING: --public: the wallet page answers any host on {}; it holds no secret, but it is meant for this machine's browser", a.listen);
    }
    let chain = a.chain_id.clone();
    runtime()?
        .block_on(run(config, crate::gateway::shutdown_signal(), |addr| {
            eprintln!(
                "passport-gate wallet page on http://{addr}/ for chain {chain} (Ctrl-C stops it)"
            );
        }))
        .map_err(|e| Failure(e, 1))?;
    Ok(0)
}
