//! The node agent: one per machine of the fleet. It discovers the machine's accelerators and
//! registers them, heartbeats with their health, watches its node's view of the committed log
//! (a stream from any replica, resumed from the last applied index it saw) and executes the
//! actions in it exactly once, runs each job's ranks as real processes (command ranks directly;
//! worker ranks attached to the node's device proxies, which it starts and which checkpoint them
//! on preempt, migrate and resize), reports how actions and runs end, and serves the ranks'
//! logs. After a restart (even `kill -9`) it kills what a previous incarnation left behind
//! (ranks and proxies) and starts what the log says should run here.
//!
//! It must never depend on the `raft` crate (it reaches the control plane only through its
//! gRPC API) and must not decide placement: it does what the committed log says.

mod executor;
mod job_run;
mod log_service;
mod proxies;
mod rank_env;
mod reporter;
mod supervisor;
mod work_dir;
mod worker_run;

pub use job_run::Launcher;
pub use job_run::{processes_of, processes_with, supervise};
pub use proxies::ProxySet;
pub use rank_env::{master_port, CHECKPOINT_DIR_VAR, STEP_FILE, WORK_DIR_VAR};
pub use work_dir::{ActionRecord, RunRecord, RunState, WorkDir};
pub use worker_run::{runtime_job_name, work_dir_token, WORKER_CHECKPOINT_TIMEOUT_MS};

use crate::discovery::{self, DeviceBackend, DeviceSource, Inventory};
use crate::error::{NodeError, Result};
use reporter::Reporter;
use singularity_proto::channel::streaming_channel;
use singularity_proto::client::Client;
use singularity_proto::heartbeat_asks_to_register;
use singularity_proto::v1::agent_server::AgentServer;
use singularity_proto::v1::node_service_client::NodeServiceClient;
use singularity_proto::v1::WatchNodeRequest;
use singularity_scheduler::{
    Command, DeviceHealth, LocalityDomain, NodeName, NodeView, Outcome, Rejection,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use supervisor::{Supervisor, SupervisorConfig};

/// A watch that has sent nothing for this long is considered dead and reopened (the server
/// sends a keep-alive view every 2 s).
const WATCH_SILENCE_MS: u64 = 6_000;
/// Longest pause between two attempts to open the watch.
const MAX_WATCH_BACKOFF_MS: u64 = 1_000;
/// Longest time the agent waits for the control plane to accept its registration.
const REGISTER_TIMEOUT_MS: u64 = 120_000;
/// Bounds of the heartbeat interval and the grace period, in milliseconds.
pub const MIN_HEARTBEAT_INTERVAL_MS: u64 = 100;
pub const MAX_GRACE_PERIOD_MS: u64 = 600_000;

/// Everything `singularity agent` is told.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Control-plane replicas, `host:port`.
    pub servers: Vec<String>,
    pub node: String,
    pub domain: String,
    pub devices: DeviceSource,
    pub work_dir: PathBuf,
    /// Where jobs' checkpoint directories live; shared storage in a real fleet.
    pub checkpoint_root: PathBuf,
    /// Where the log service listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The address others use to reach the log service; default: the bound address.
    pub advertise: Option<String>,
    pub heartbeat_interval_ms: u64,
    /// SIGTERM to SIGKILL when ranks are stopped.
    pub grace_period_ms: u64,
    /// Simulated devices only: a directory of `device-<i>.unhealthy` fault files.
    pub fault_dir: Option<PathBuf>,
    /// The device proxy program and its leading arguments (`[singularity, device-proxy]`),
    /// started once per device when a worker job first needs it; `None`: this agent refuses
    /// worker jobs.
    pub proxy_command: Option<Vec<String>>,
}

impl AgentConfig {
    /// Checks every setting; the error names the flag and how to fix it.
    pub fn validate(&self) -> Result<()> {
        if self.servers.is_empty() {
            return Err(NodeError::Config(
                "--servers is empty; give the control-plane replicas as HOST:PORT,...".into(),
            ));
        }
        NodeName::new(self.node.clone()).map_err(|e| NodeError::Config(format!("--node: {e}")))?;
        LocalityDomain::new(self.domain.clone())
            .map_err(|e| NodeError::Config(format!("--domain: {e}")))?;
        if self.heartbeat_interval_ms < MIN_HEARTBEAT_INTERVAL_MS {
            return Err(NodeError::Config(format!(
                "--heartbeat-interval-ms must be at least {MIN_HEARTBEAT_INTERVAL_MS}"
            )));
        }
        if self.grace_period_ms > MAX_GRACE_PERIOD_MS {
            return Err(NodeError::Config(format!(
                "--grace-period-ms must be at most {MAX_GRACE_PERIOD_MS}"
            )));
        }
        Ok(())
    }
}

fn register_command(config: &AgentConfig, inventory: &Inventory) -> Result<Command> {
    Ok(Command::RegisterNode {
        name: NodeName::new(config.node.clone())
            .map_err(|e| NodeError::Config(format!("--node: {e}")))?,
        domain: LocalityDomain::new(config.domain.clone())
            .map_err(|e| NodeError::Config(format!("--domain: {e}")))?,
        devices: inventory.specs(),
    })
}

/// Registers the node, retrying while the control plane is unreachable; a refusal is final.
async fn register(reporter: &Reporter, command: Command) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(REGISTER_TIMEOUT_MS);
    loop {
        match reporter.write(command.clone()).await {
            Ok(Outcome::Rejected(rejection)) => {
                return Err(NodeError::ControlPlane(format!(
                    "the control plane refused to register this node: {rejection}"
                )))
            }
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("waiting for the control plane to register this node: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Heartbeats forever: a sign of life to the leader every interval (kept in its memory, not
/// logged), and a `ReportNodeHealth` write only when a device's health changed. Registers
/// again when the control plane has declared the node down or does not know it.
async fn heartbeat(
    reporter: Reporter,
    mut backend: Box<dyn DeviceBackend>,
    config: AgentConfig,
    mut reported: BTreeMap<u16, DeviceHealth>,
) {
    let name = NodeName::new(config.node.clone()).expect("validated at start");
    let interval = Duration::from_millis(config.heartbeat_interval_ms);
    loop {
        tokio::time::sleep(interval).await;
        let mut register_again = match reporter.heartbeat(name.as_str()).await {
            Ok(status) => heartbeat_asks_to_register(&status),
            Err(e) => {
                tracing::warn!("heartbeat not heard: {e}");
                false
            }
        };
        let health = match backend.poll_health() {
            Ok(health) => health,
            Err(e) => {
                tracing::error!("reading device health: {e}");
                Vec::new()
            }
        };
        let changes: Vec<(u16, DeviceHealth)> = health
            .into_iter()
            .filter(|(index, h)| reported.get(index) != Some(h))
            .collect();
        if !register_again && !changes.is_empty() {
            for (index, h) in &changes {
                tracing::warn!(device = index, health = ?h, "device health changed");
            }
            let command = Command::ReportNodeHealth {
                name: name.clone(),
                devices: changes.clone(),
            };
            match reporter.write(command).await {
                Ok(Outcome::Rejected(
                    Rejection::NodeState { .. } | Rejection::UnknownNode { .. },
                )) => register_again = true,
                Ok(Outcome::Rejected(rejection)) => {
                    tracing::error!("health report refused: {rejection}");
                }
                Ok(_) => reported.extend(changes),
                Err(e) => tracing::warn!("health report not committed: {e}"),
            }
        }
        if register_again {
            tracing::warn!("the control plane has this node down or unknown; registering again");
            let registered = match backend.inventory() {
                Ok(inventory) => match register_command(&config, &inventory) {
                    Ok(command) => reporter.write(command).await.map(|_| inventory),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match registered {
                Ok(inventory) => {
                    reported = inventory
                        .devices
                        .iter()
                        .map(|d| (d.index, d.health.clone()))
                        .collect();
                }
                Err(e) => tracing::error!("registering again: {e}"),
            }
        }
    }
}

/// Follows the node's view: opens the watch on the replica that answered the last write (the
/// leader), resumes from the last applied index seen, reopens it on silence or error.
async fn watch(supervisor: Arc<Supervisor>, agent_addr: String) {
    let servers_rotation = supervisor.reporter.leader();
    let mut min_applied_index = 0u64;
    let mut failures = 0u32;
    loop {
        let endpoint = servers_rotation.borrow().clone();
        let outcome = watch_once(&supervisor, &endpoint, &agent_addr, &mut min_applied_index).await;
        match outcome {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(%endpoint, "watch ended: {e}");
            }
        }
        let backoff = (50u64 << failures.min(5)).min(MAX_WATCH_BACKOFF_MS);
        tokio::time::sleep(Duration::from_millis(backoff)).await;
    }
}

/// One watch stream, until it fails, falls silent, or the leader moves elsewhere.
async fn watch_once(
    supervisor: &Arc<Supervisor>,
    endpoint: &str,
    agent_addr: &str,
    min_applied_index: &mut u64,
) -> Result<()> {
    let channel = streaming_channel(endpoint)
        .map_err(|e| NodeError::ControlPlane(format!("{endpoint}: {e}")))?;
    let mut client = NodeServiceClient::new(channel);
    let mut stream = client
        .watch_node(WatchNodeRequest {
            node: supervisor.config.node.clone(),
            min_applied_index: *min_applied_index,
            agent_addr: agent_addr.to_string(),
        })
        .await
        .map_err(|s| NodeError::ControlPlane(format!("{endpoint}: {}", s.message())))?
        .into_inner();
    let mut leader = supervisor.reporter.leader();
    leader.borrow_and_update();
    loop {
        let message = tokio::select! {
            message = tokio::time::timeout(Duration::from_millis(WATCH_SILENCE_MS), stream.message()) => message,
            _ = leader.changed() => {
                // Follow the leader: a follower applies an entry only after the leader's next
                // message, so views from it come later.
                if leader.borrow_and_update().as_str() != endpoint {
                    return Ok(());
                }
                continue;
            }
        };
        let update = match message {
            Err(_) => {
                return Err(NodeError::ControlPlane(format!(
                    "{endpoint} sent nothing for {WATCH_SILENCE_MS} ms"
                )))
            }
            Ok(Err(status)) => {
                return Err(NodeError::ControlPlane(format!(
                    "{endpoint}: {}",
                    status.message()
                )))
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(update))) => update,
        };
        *min_applied_index = (*min_applied_index).max(update.applied_index);
        if update.view_json.is_empty() {
            continue;
        }
        let view: NodeView = serde_json::from_str(&update.view_json)
            .map_err(|e| NodeError::json("a node view from the control plane", e))?;
        supervisor.reconcile(view).await?;
    }
}

/// Runs the agent until `shutdown` completes, then stops every rank it runs.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    config.validate()?;
    let mut config = config;
    // Absolute paths: ranks run in their own directories, and checkpoint locations are
    // reported to the log.
    for dir in [&mut config.work_dir, &mut config.checkpoint_root] {
        std::fs::create_dir_all(&*dir)
            .map_err(|e| NodeError::io(format!("creating {}", dir.display()), e))?;
        *dir = std::fs::canonicalize(&*dir)
            .map_err(|e| NodeError::io(format!("resolving {}", dir.display()), e))?;
    }
    let work = WorkDir::open(&config.work_dir, &config.node)?;
    let leftovers = job_run::kill_leftovers(work.root());
    if !leftovers.is_empty() {
        tracing::warn!(
            pids = ?leftovers,
            "killed rank and proxy processes a previous agent left behind; the log decides what runs"
        );
    }
    for pid in &leftovers {
        crate::proxy::cleanup_after(*pid);
    }
    let segments = worker_run::remove_stale_segments(work.root());
    if !segments.is_empty() {
        tracing::warn!(
            ?segments,
            "removed collective segments a previous agent's workers left"
        );
    }
    let mut backend =
        discovery::open_with_fault_dir(&config.devices, &config.node, config.fault_dir.as_deref())?;
    let inventory = backend.inventory()?;
    tracing::info!(
        node = %config.node,
        backend = inventory.backend,
        devices = inventory.devices.len(),
        "discovered devices"
    );
    let client = Client::new(config.servers.clone())
        .map_err(|e| NodeError::Config(format!("--servers: {e}")))?;
    let reporter = Reporter::start(client);
    register(&reporter, register_command(&config, &inventory)?).await?;
    tracing::info!(node = %config.node, "node registered");

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| NodeError::io(format!("--listen {}", config.listen), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| NodeError::io("the log service address", e))?;
    let agent_addr = config
        .advertise
        .clone()
        .unwrap_or_else(|| bound.to_string());

    let supervisor = Arc::new(Supervisor::new(
        SupervisorConfig {
            node: config.node.clone(),
            grace_period_ms: config.grace_period_ms,
            checkpoint_root: config.checkpoint_root.clone(),
            proxy_command: config.proxy_command.clone(),
            device_memory_bytes: inventory
                .devices
                .iter()
                .map(|d| (d.index, d.memory_bytes))
                .collect(),
        },
        work,
        reporter.clone(),
    )?);
    let logs = tonic::transport::Server::builder()
        .add_service(AgentServer::new(log_service::LogService::new(
            supervisor.clone(),
        )))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tracing::info!(addr = %agent_addr, "serving rank logs");
    let reported = inventory
        .devices
        .iter()
        .map(|d| (d.index, d.health.clone()))
        .collect();
    let tasks = vec![
        tokio::spawn(async move {
            if let Err(e) = logs.await {
                tracing::error!("log service: {e}");
            }
        }),
        tokio::spawn(heartbeat(
            reporter.clone(),
            backend,
            config.clone(),
            reported,
        )),
        tokio::spawn(supervisor.clone().monitor_exits()),
        tokio::spawn(watch(supervisor.clone(), agent_addr)),
    ];
    shutdown.await;
    tracing::info!("stopping: ending every rank this agent runs");
    for task in &tasks {
        task.abort();
    }
    supervisor.stop_all().await;
    Ok(())
}
