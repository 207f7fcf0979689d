//! The node side of the scheduler workload, behind one small trait (`NodeFleet`) so that real
//! `singularity agent` processes can replace the stand-in without touching the workload.
//!
//! `PlayedNodes` is that stand-in: the harness plays each node itself through the public API,
//! as an agent would. It registers the node with simulated devices (`RegisterNode`), heartbeats
//! (`NodeHeartbeat`, kept in the leader's memory; registering again when the leader says the
//! node is down or unknown), watches the
//! committed state with linearizable `jobs` and `nodes` reads, reports each action on its node
//! stage by stage (`ReportActionProgress`: started, checkpointed for preempt, migrate and
//! resize, completed), and reports a running job's ranks as exited (`ReportJobExit`) after
//! the job's `sim-run-ms` metadata. It runs no processes and touches no devices.
//!
//! It must not decide anything the scheduler decides: it only reports what a node would see.

use crate::error::Result;
use crate::harness::client::{CallError, Conn};
use singularity_proto::{heartbeat_asks_to_register, query};
use singularity_scheduler::{
    ActionId, CheckpointRef, Command, DeviceHealth, DeviceKind, DeviceSpec, Job, JobExit, JobId,
    JobPhase, LocalityDomain, Node, NodeId, NodeName, NodeStatus, Outcome, Progress,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The device kind of the simulated devices (the workload's jobs ask for it).
pub const SIM_DEVICE_KIND: &str = "sim";
/// Memory of one simulated device.
pub const SIM_DEVICE_MEMORY_BYTES: u64 = 16 << 30;
/// Job metadata key: how long the job's ranks run before they exit successfully.
pub const RUN_MS_KEY: &str = "sim-run-ms";
/// Run time of a job without `RUN_MS_KEY`.
const DEFAULT_RUN_MS: u64 = 1_000;
/// Time between two heartbeats of one node.
const HEARTBEAT_INTERVAL_MS: u64 = 1_000;
/// Time between two looks at the committed state.
const POLL_INTERVAL_MS: u64 = 200;
/// Time one node's write or read may take.
const NODE_CALL_TIMEOUT_MS: u64 = 1_500;
/// Nodes per locality domain.
const NODES_PER_DOMAIN: usize = 2;

/// How many nodes, and their devices.
#[derive(Debug, Clone, Copy)]
pub struct FleetOptions {
    pub nodes: usize,
    pub devices_per_node: u16,
}

/// What the nodes did, for the report.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub registrations: AtomicU64,
    pub heartbeats: AtomicU64,
    pub progress_reports: AtomicU64,
    pub exits_reported: AtomicU64,
    pub writes_failed: AtomicU64,
}

impl FleetStats {
    /// The counters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "registrations": self.registrations.load(Ordering::Relaxed),
            "heartbeats": self.heartbeats.load(Ordering::Relaxed),
            "progress_reports": self.progress_reports.load(Ordering::Relaxed),
            "exits_reported": self.exits_reported.load(Ordering::Relaxed),
            "writes_failed": self.writes_failed.load(Ordering::Relaxed),
        })
    }
}

/// The nodes of the scheduler workload.
pub trait NodeFleet: Send {
    /// Starts every node: registered, heartbeating, carrying out committed actions.
    fn start(&mut self) -> Result<()>;
    /// Stops every node (they stop heartbeating and reporting).
    fn stop(&mut self);
    /// What plays the nodes, in words, for the report.
    fn describe(&self) -> String;
    /// What the nodes did, as JSON.
    fn stats(&self) -> serde_json::Value;
}

/// The name of node `i` (0-based).
pub fn node_name(i: usize) -> String {
    format!("sim-{}", i + 1)
}

/// The locality domain of node `i` (0-based): `NODES_PER_DOMAIN` nodes to a domain.
pub fn node_domain(i: usize) -> String {
    format!("domain-{}", i / NODES_PER_DOMAIN)
}

/// Nodes played by the harness itself through the public API (see the module header).
pub struct PlayedNodes {
    options: FleetOptions,
    endpoints: Vec<String>,
    client_ids: Vec<u128>,
    handle: Handle,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    stats: Arc<FleetStats>,
}

impl PlayedNodes {
    /// `client_ids` gives each node its own client session (one per node).
    pub fn new(
        options: FleetOptions,
        endpoints: Vec<String>,
        client_ids: Vec<u128>,
        handle: Handle,
    ) -> PlayedNodes {
        PlayedNodes {
            options,
            endpoints,
            client_ids,
            handle,
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
            stats: Arc::new(FleetStats::default()),
        }
    }
}

impl NodeFleet for PlayedNodes {
    fn start(&mut self) -> Result<()> {
        for i in 0..self.options.nodes {
            let node = PlayedNode {
                name: node_name(i),
                domain: node_domain(i),
                devices: self.options.devices_per_node,
                conn: Conn::new(
                    self.endpoints.clone(),
                    self.client_ids.get(i).copied().unwrap_or(i as u128),
                    i,
                ),
                stats: self.stats.clone(),
                id: None,
                registered: false,
                stages_sent: BTreeMap::new(),
                running_since: BTreeMap::new(),
                exits_sent: BTreeSet::new(),
            };
            self.tasks
                .push(self.handle.spawn(node.run(self.stop.clone())));
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            // Each task notices the flag within one poll interval plus one call timeout.
            let _ = self.handle.block_on(async {
                tokio::time::timeout(
                    Duration::from_millis(POLL_INTERVAL_MS + 3 * NODE_CALL_TIMEOUT_MS),
                    task,
                )
                .await
            });
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} nodes of {} simulated devices played by the harness through the public API",
            self.options.nodes, self.options.devices_per_node
        )
    }

    fn stats(&self) -> serde_json::Value {
        self.stats.to_json()
    }
}

impl Drop for PlayedNodes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The next progress a node reports for an action of a job in `phase`, after `sent` reports.
pub fn next_progress(phase: JobPhase, sent: u8, action: ActionId, job: JobId) -> Option<Progress> {
    let checkpoints = matches!(
        phase,
        JobPhase::Preempting | JobPhase::Migrating | JobPhase::Resizing
    );
    match (sent, checkpoints) {
        (0, _) => Some(Progress::Started),
        (1, true) => Some(Progress::Checkpointed {
            // Every node of the action reports the same cut.
            checkpoint: CheckpointRef {
                location: format!("sim://checkpoints/job-{}/action-{}", job.0, action.0),
                step: action.0,
            },
        }),
        (1, false) | (2, true) => Some(Progress::Completed),
        _ => None,
    }
}

/// How long job `job`'s ranks run, from its metadata.
pub fn run_ms(job: &Job) -> u64 {
    job.metadata
        .get(RUN_MS_KEY)
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RUN_MS)
}

struct PlayedNode {
    name: String,
    domain: String,
    devices: u16,
    conn: Conn,
    stats: Arc<FleetStats>,
    id: Option<NodeId>,
    registered: bool,
    /// Reports sent per action (the agent's own record, so each is sent once).
    stages_sent: BTreeMap<ActionId, u8>,
    /// When this node first saw a job running on its devices, by job and assignment.
    running_since: BTreeMap<(JobId, Vec<u16>), Instant>,
    exits_sent: BTreeSet<(JobId, Vec<u16>)>,
}

impl PlayedNode {
    async fn write(&mut self, command: Command) -> std::result::Result<Outcome, CallError> {
        let result = self
            .conn
            .write(command, Duration::from_millis(NODE_CALL_TIMEOUT_MS))
            .await;
        if result.is_err() {
            self.stats.writes_failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn register(&mut self) {
        let (Ok(name), Ok(domain), Ok(kind)) = (
            NodeName::new(self.name.clone()),
            LocalityDomain::new(self.domain.clone()),
            DeviceKind::new(SIM_DEVICE_KIND),
        ) else {
            return;
        };
        let devices = (0..self.devices)
            .map(|_| DeviceSpec {
                kind: kind.clone(),
                memory_bytes: SIM_DEVICE_MEMORY_BYTES,
                uuid: String::new(),
                health: DeviceHealth::Healthy,
            })
            .collect();
        let command = Command::RegisterNode {
            name,
            domain,
            devices,
        };
        if let Ok(outcome) = self.write(command).await {
            if outcome.is_accepted() || matches!(outcome, Outcome::Duplicate(_)) {
                self.registered = true;
                self.stats.registrations.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn heartbeat(&mut self) {
        let heard = self
            .conn
            .node_heartbeat(&self.name, Duration::from_millis(NODE_CALL_TIMEOUT_MS))
            .await;
        match heard {
            Ok(status) if heartbeat_asks_to_register(&status) => self.registered = false,
            Ok(_) => {
                self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }

    async fn read<T: serde::de::DeserializeOwned>(&mut self, q: &str) -> Option<T> {
        let value = self
            .conn
            .read_query(q, false, Duration::from_millis(NODE_CALL_TIMEOUT_MS))
            .await
            .ok()?;
        serde_json::from_value(value).ok()
    }

    /// One look at the committed state: report what moved on this node.
    async fn step(&mut self) {
        let Some(nodes) = self.read::<Vec<Node>>(query::NODES).await else {
            return;
        };
        let Some(me) = nodes.iter().find(|n| n.name.as_str() == self.name) else {
            self.registered = false;
            return;
        };
        if me.status == NodeStatus::Down {
            self.registered = false;
            return;
        }
        let my_id = me.id;
        self.id = Some(my_id);
        let held: BTreeMap<JobId, Vec<u16>> =
            me.devices
                .iter()
                .enumerate()
                .fold(BTreeMap::new(), |mut acc, (index, device)| {
                    if let Some(job) = device.holder {
                        acc.entry(job).or_default().push(index as u16);
                    }
                    acc
                });
        let Some(jobs) = self.read::<Vec<Job>>(query::JOBS).await else {
            return;
        };
        for job in jobs {
            let Some(devices) = held.get(&job.id) else {
                continue;
            };
            if let Some(action) = job.action {
                let sent = self.stages_sent.get(&action).copied().unwrap_or(0);
                if let Some(progress) = next_progress(job.phase, sent, action, job.id) {
                    let command = Command::ReportActionProgress {
                        action,
                        node: my_id,
                        progress,
                    };
                    // A definite answer (accepted or rejected) moves on; a lost one is retried.
                    if self.write(command).await.is_ok() {
                        self.stages_sent.insert(action, sent + 1);
                        self.stats.progress_reports.fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
            if job.phase != JobPhase::Running {
                continue;
            }
            let key = (job.id, devices.clone());
            let since = *self
                .running_since
                .entry(key.clone())
                .or_insert_with(Instant::now);
            if self.exits_sent.contains(&key)
                || since.elapsed() < Duration::from_millis(run_ms(&job))
            {
                continue;
            }
            let command = Command::ReportJobExit {
                job: job.id,
                node: my_id,
                exit: JobExit::Succeeded,
            };
            if self.write(command).await.is_ok() {
                self.exits_sent.insert(key);
                self.stats.exits_reported.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn run(mut self, stop: Arc<AtomicBool>) {
        let heartbeat_every = Duration::from_millis(HEARTBEAT_INTERVAL_MS);
        let mut last_heartbeat: Option<Instant> = None;
        // Bounded by the stop flag: the runner sets it after the recovery window.
        while !stop.load(Ordering::Relaxed) {
            if !self.registered {
                self.register().await;
            } else {
                let due = match last_heartbeat {
                    None => true,
                    Some(t) => t.elapsed() >= heartbeat_every,
                };
                if due {
                    last_heartbeat = Some(Instant::now());
                    self.heartbeat().await;
                }
                self.step().await;
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_goes_started_checkpointed_completed_only_where_a_checkpoint_is_taken() {
        let (a, j) = (ActionId(4), JobId(9));
        assert_eq!(
            next_progress(JobPhase::Starting, 0, a, j),
            Some(Progress::Started)
        );
        assert_eq!(
            next_progress(JobPhase::Starting, 1, a, j),
            Some(Progress::Completed)
        );
        assert_eq!(next_progress(JobPhase::Starting, 2, a, j), None);
        assert!(matches!(
            next_progress(JobPhase::Preempting, 1, a, j),
            Some(Progress::Checkpointed { checkpoint }) if checkpoint.step == 4
        ));
        assert_eq!(
            next_progress(JobPhase::Migrating, 2, a, j),
            Some(Progress::Completed)
        );
        assert_eq!(next_progress(JobPhase::Resizing, 3, a, j), None);
        assert_eq!(
            next_progress(JobPhase::Stopping, 1, a, j),
            Some(Progress::Completed)
        );
        assert_eq!(node_name(0), "sim-1");
    }
}
