//! `singularity server`: runs one control-plane replica until SIGTERM or SIGINT, then shuts it
//! down cleanly. Flags map one to one onto `singularity_raft::server::ServerConfig`; this file
//! holds no logic of its own beyond parsing and the signal wait.

use crate::logging::{self, LogFormat};
use anyhow::Context;
use clap::Args;
use singularity_raft::client::Client;
use singularity_raft::limits::*;
use singularity_raft::server::config::parse_initial_cluster;
use singularity_raft::server::{Replica, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Run a control-plane replica.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// This replica's id (a positive integer, unique in the cluster).
    #[arg(long)]
    pub node_id: u64,
    /// Address to listen on for gRPC (peers and clients).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Address others use to reach this replica; defaults to --listen.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Where the log, vote and snapshots live (RocksDB).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Name of the cluster; a data dir of another cluster is refused.
    #[arg(long, default_value = "singularity")]
    pub cluster_name: String,
    /// Voters of a new cluster: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`.
    #[arg(long, conflicts_with = "join")]
    pub initial_cluster: Option<String>,
    /// Join a running cluster as a learner through these endpoints (`HOST:PORT,...`); promote
    /// it with `operator raft change-membership`.
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
    #[arg(long, default_value_t = DEFAULT_ELECTION_TIMEOUT_MIN_MS)]
    pub election_timeout_min_ms: u64,
    #[arg(long, default_value_t = DEFAULT_ELECTION_TIMEOUT_MAX_MS)]
    pub election_timeout_max_ms: u64,
    #[arg(long, default_value_t = DEFAULT_HEARTBEAT_INTERVAL_MS)]
    pub heartbeat_interval_ms: u64,
    /// Take a snapshot after this many applied entries.
    #[arg(long, default_value_t = DEFAULT_SNAPSHOT_EVERY_ENTRIES)]
    pub snapshot_every_entries: u64,
    /// Keep this many log entries behind a snapshot.
    #[arg(long, default_value_t = DEFAULT_LOGS_KEPT_AFTER_SNAPSHOT)]
    pub logs_kept_after_snapshot: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Declare a node down after this long without a heartbeat from its agent (leader time);
    /// 0 never does.
    #[arg(long, default_value_t = 30_000)]
    pub node_heartbeat_timeout_ms: u64,
    /// How often the leader proposes a tick (SLA accrual, growth and rebalancing).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub tick_interval_ms: u64,
    /// Do not run the leader's scheduling loop on this replica (it still stores and serves the
    /// log); for tests and benchmarks of the bare log.
    #[arg(long)]
    pub no_scheduling: bool,
}

impl ServerArgs {
    fn config(&self) -> anyhow::Result<ServerConfig> {
        let advertise = self
            .advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string());
        let mut config =
            ServerConfig::new(self.node_id, self.listen, advertise, self.data_dir.clone());
        config.cluster = self.cluster_name.clone();
        if let Some(text) = &self.initial_cluster {
            config.initial_cluster = parse_initial_cluster(text)?;
        } else if self.join.is_empty() && !self.data_dir.join("CURRENT").exists() {
            anyhow::bail!("a new replica needs --initial-cluster or --join");
        }
        config.election_timeout_min_ms = self.election_timeout_min_ms;
        config.election_timeout_max_ms = self.election_timeout_max_ms;
        config.heartbeat_interval_ms = self.heartbeat_interval_ms;
        config.snapshot_every_entries = self.snapshot_every_entries;
        config.logs_kept_after_snapshot = self.logs_kept_after_snapshot;
        config.metrics_addr = self.metrics_listen;
        config.scheduling.enabled = !self.no_scheduling;
        config.scheduling.tick_interval_ms = self.tick_interval_ms;
        config.scheduling.heartbeat_timeout_ms =
            (self.node_heartbeat_timeout_ms > 0).then_some(self.node_heartbeat_timeout_ms);
        Ok(config)
    }
}

/// Runs the server until a signal arrives.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    logging::init(args.log_format);
    let config = args.config()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let replica = Replica::start(config)
            .await
            .context("starting the replica")?;
        if !args.join.is_empty() {
            let mut client = Client::new(args.join.clone())?;
            let advertise = replica.config.advertise_addr.clone();
            client
                .add_learner(args.node_id, &advertise)
                .await
                .context("joining the cluster as a learner")?;
            tracing::info!(node = args.node_id, "joined as a learner");
        }
        wait_for_signal().await?;
        tracing::info!("signal received; shutting down");
        replica.shutdown().await.context("shutting down")?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
