//! `passport-gate serve`: the gateway.

use crate::cli::output::{init_logging, runtime_with, Failure};
use crate::terminal::escape_controls;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct ServeArgs {
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

pub fn run(a: &ServeArgs) -> Result<u8, Failure> {
    use crate::config::{ConfigError, GatewayConfig, Overrides};
    use crate::gateway;
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
    let env = Overrides::from_env().map_err(|e| Failure(e.to_string(), 2))?;
    config.apply(flags.over(env));
    // For the startup line: the upstream as written.
    let upstream = config.server.upstream.clone();
    let validated = config.validate().and_then(|v| {
        if parse_errors.is_empty() {
            Ok(v)
        } else {
            Err(Vec::new())
        }
    });
    let validated = validated.map_err(|validation_errors| {
        // A section that did not parse was validated at its defaults: its own
        // validation lines would only repeat the problem. Text that is not TOML was not
        // read at all, so every setting is at its default, and a line about one (such
        // as `server.upstream: must be set`) would send the reader to a wrong fix.
        let unread = parse_errors
            .iter()
            .any(|e| matches!(e, ConfigError::Syntax(_)));
        let failed: Vec<&str> = parse_errors
            .iter()
            .filter_map(ConfigError::section)
            .collect();
        let errors: Vec<ConfigError> = parse_errors
            .iter()
            .cloned()
            .chain(
                validation_errors
                    .into_iter()
                    .filter(|_| !unread)
                    .filter(|e| e.section().is_none_or(|s| !failed.contains(&s))),
            )
            .collect();
        // One line per problem (the failure line itself escapes line breaks).
        eprintln!("passport-gate: invalid configuration:");
        for e in &errors {
            eprintln!("  {}", escape_controls(&e.to_string()));
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
    let envelope = &validated.envelope;
    let describe = if envelope.enabled {
        format!(
            "passports enabled for chain {} ({:?} mode)",
            envelope.chain_id, envelope.mode
        )
    } else {
        "passports DISABLED: every request passes untouched".to_owned()
    };
    let scheme = if validated.server_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let report = runtime_with(validated.worker_threads)?
        .block_on(gateway::run(validated, gateway::shutdown_signal(), |b| {
            eprintln!(
                "passport-gate listening on {scheme}://{} (admin http://{}), upstream {upstream}, {describe}",
                b.listen, b.admin
            );
        }))
        .map_err(|e| {
            // One line per problem (the failure line itself escapes line breaks).
            let problems = e.problems();
            if problems.len() > 1 {
                for p in &problems {
                    eprintln!("passport-gate: {}", escape_controls(&p.to_string()));
                }
                return Failure(format!("{} problem(s) at startup", problems.len()), 1);
            }
            Failure(e.to_string(), 1)
        })?;
    eprintln!(
        "passport-gate stopped: {} connection(s) cut at the grace deadline, {} forwarded request(s) cut with their answer unfinished (events marked cut_at_shutdown)",
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
