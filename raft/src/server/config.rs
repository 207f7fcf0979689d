//! `ServerConfig`: everything a replica needs to start, with safe defaults and checks (the
//! heartbeat well below the election timeout). It must not open files or sockets.

use crate::error::RaftError;
use crate::limits::*;
use crate::types::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// How a replica starts.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node_id: NodeId,
    /// The cluster's name; a data dir of another cluster is refused.
    pub cluster: String,
    pub listen_addr: SocketAddr,
    /// The address peers and clients use to reach this replica (`host:port`).
    pub advertise_addr: String,
    pub data_dir: PathBuf,
    /// Voters of a new cluster, by id; empty when joining a running cluster.
    pub initial_cluster: BTreeMap<NodeId, String>,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub snapshot_every_entries: u64,
    pub logs_kept_after_snapshot: u64,
    pub metrics_addr: Option<SocketAddr>,
    /// The leader's scheduling loop.
    pub scheduling: super::scheduling::SchedulingConfig,
}

impl ServerConfig {
    /// A configuration with the default timeouts.
    pub fn new(
        node_id: NodeId,
        listen_addr: SocketAddr,
        advertise_addr: String,
        data_dir: PathBuf,
    ) -> Self {
        ServerConfig {
            node_id,
            cluster: "singularity".to_string(),
            listen_addr,
            advertise_addr,
            data_dir,
            initial_cluster: BTreeMap::new(),
            election_timeout_min_ms: DEFAULT_ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: DEFAULT_ELECTION_TIMEOUT_MAX_MS,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            snapshot_every_entries: DEFAULT_SNAPSHOT_EVERY_ENTRIES,
            logs_kept_after_snapshot: DEFAULT_LOGS_KEPT_AFTER_SNAPSHOT,
            metrics_addr: None,
            scheduling: super::scheduling::SchedulingConfig::default(),
        }
    }

    /// openraft's configuration, after checking the timeouts make sense.
    pub fn raft_config(&self) -> Result<Arc<openraft::Config>, RaftError> {
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return Err(RaftError::Config(format!(
                "election timeout min ({} ms) must be below its max ({} ms)",
                self.election_timeout_min_ms, self.election_timeout_max_ms
            )));
        }
        if self.heartbeat_interval_ms.saturating_mul(3) > self.election_timeout_min_ms {
            return Err(RaftError::Config(format!(
                "heartbeat interval ({} ms) must be at most a third of the election timeout ({} ms)",
                self.heartbeat_interval_ms, self.election_timeout_min_ms
            )));
        }
        if !self.initial_cluster.is_empty() && !self.initial_cluster.contains_key(&self.node_id) {
            return Err(RaftError::Config(format!(
                "--initial-cluster does not name this node ({})",
                self.node_id
            )));
        }
        let config = openraft::Config {
            cluster_name: self.cluster.clone(),
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            heartbeat_interval: self.heartbeat_interval_ms,
            install_snapshot_timeout: 10_000,
            max_payload_entries: MAX_ENTRIES_PER_APPEND,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            ..Default::default()
        };
        Ok(Arc::new(
            config
                .validate()
                .map_err(|e| RaftError::Config(e.to_string()))?,
        ))
    }
}

/// Parses `1=host:port,2=host:port,...`.
pub fn parse_initial_cluster(text: &str) -> Result<BTreeMap<NodeId, String>, RaftError> {
    let mut members = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            RaftError::Config(format!(
                "initial cluster member {part:?} is not ID=HOST:PORT"
            ))
        })?;
        let id: NodeId = id.trim().parse().map_err(|_| {
            RaftError::Config(format!(
                "initial cluster member {part:?}: {id:?} is not a node id"
            ))
        })?;
        if addr.trim().is_empty() || !addr.contains(':') {
            return Err(RaftError::Config(format!(
                "initial cluster member {part:?}: {addr:?} is not HOST:PORT"
            )));
        }
        if members.insert(id, addr.trim().to_string()).is_some() {
            return Err(RaftError::Config(format!(
                "initial cluster names node {id} twice"
            )));
        }
    }
    if members.is_empty() {
        return Err(RaftError::Config("initial cluster is empty".to_string()));
    }
    Ok(members)
}
