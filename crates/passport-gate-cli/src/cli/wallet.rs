//! `passport-gate wallet`: the page where a browser wallet mints a passport.

use crate::cli::output::{runtime, Failure};
use clap::Args;

#[derive(Args)]
pub(crate) struct WalletArgs {
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

pub fn run(a: &WalletArgs) -> Result<u8, Failure> {
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
    // The page shares the gateway's accept loop, which logs (at a bounded rate) the
    // connections it refuses when its slots are full; without a subscriber those lines
    // went nowhere.
    crate::cli::output::init_logging();
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
