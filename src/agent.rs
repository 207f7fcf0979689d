//! `singularity agent`: the node agent's flags and start-up. Everything it does lives in
//! `singularity_node::agent`; this module only turns flags into an `AgentConfig`, installs
//! logging and the signal handlers, and runs it.

use crate::logging::{self, LogFormat};
use anyhow::Context;
use clap::Args;
use singularity_node::agent::{self, AgentConfig};
use singularity_node::discovery::{self, DeviceSource, DEVICES_HELP};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `singularity agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Control-plane replicas (`HOST:PORT,...`); the agent follows the leader among them.
    #[arg(
        long,
        env = "SINGULARITY_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7070"
    )]
    pub servers: Vec<String>,
    /// This node's name in the fleet (letters, digits, '-', '_', '.'); stable across restarts.
    #[arg(long)]
    pub node: String,
    #[arg(long, help = DEVICES_HELP, default_value = "sim:8")]
    pub devices: DeviceSource,
    /// The agent's own directory: action and run records, rank logs. One agent per directory.
    #[arg(long)]
    pub work_dir: PathBuf,
    /// Where jobs' checkpoint directories live (shared storage when jobs move between
    /// machines); default: WORK_DIR/checkpoints.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// The node's locality domain (a rack or a switch: gangs prefer one domain).
    #[arg(long, default_value = "default")]
    pub domain: String,
    /// Where the agent serves its ranks' logs (`singularity job logs`); port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The address others reach the log service at, if not the listen address.
    #[arg(long)]
    pub advertise: Option<String>,
    /// How often the agent tells the leader it is alive (kept in the leader's memory, not
    /// logged); device health changes found at the same time are written to the log.
    #[arg(long, default_value_t = 2_000)]
    pub heartbeat_interval_ms: u64,
    /// How long a stopped rank has between SIGTERM and SIGKILL (to save its checkpoint).
    #[arg(long, default_value_t = 10_000)]
    pub grace_period_ms: u64,
    /// Simulated devices only: a directory where a file `device-<i>.unhealthy` marks device i
    /// unhealthy (its content is the reason); for fault-injection tests.
    #[arg(long)]
    pub fault_dir: Option<PathBuf>,
    /// Print the discovered devices and exit without contacting the control plane.
    #[arg(long)]
    pub discover_only: bool,
    /// With --discover-only: print JSON.
    #[arg(long, requires = "discover_only")]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The device proxy the agent starts per device: this binary's `device-proxy` subcommand.
fn proxy_command() -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe().context("finding this binary for `device-proxy`")?;
    let exe = exe
        .to_str()
        .with_context(|| format!("this binary's path {} is not UTF-8", exe.display()))?;
    Ok(vec![exe.to_string(), "device-proxy".to_string()])
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    if args.discover_only {
        let inventory = discovery::discover(&args.devices, &args.node)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&inventory)?);
        } else {
            print!("{}", discovery::format_inventory(&inventory));
        }
        return Ok(());
    }
    logging::init(args.log_format);
    let checkpoint_root = args
        .checkpoint_dir
        .clone()
        .unwrap_or_else(|| args.work_dir.join("checkpoints"));
    let config = AgentConfig {
        servers: args.servers,
        node: args.node,
        domain: args.domain,
        devices: args.devices,
        work_dir: args.work_dir,
        checkpoint_root,
        listen: args.listen,
        advertise: args.advertise,
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        grace_period_ms: args.grace_period_ms,
        fault_dir: args.fault_dir,
        proxy_command: Some(proxy_command()?),
    };
    config.validate()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = async {
            if let Err(e) = crate::server::wait_for_signal().await {
                tracing::error!("{e:#}");
            }
        };
        agent::run(config, shutdown).await?;
        tracing::info!("agent stopped");
        Ok(())
    })
}
