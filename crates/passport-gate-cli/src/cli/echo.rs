//! `passport-gate echo`: the demo's echo upstream alone.

use crate::cli::output::{runtime, say, Failure};
use clap::Args;

#[derive(Args)]
pub(crate) struct EchoArgs {
    /// Where to listen (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: std::net::SocketAddr,
}

pub fn run(a: &EchoArgs) -> Result<u8, Failure> {
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
