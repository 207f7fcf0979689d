//! `Command`, the payload of every log entry, and `Entry`, the versioned envelope around it
//! with the client's id and sequence number (for exactly-once retries) and the leader's time.
//!
//! Commands are data only. They may be invalid (apply rejects them with a named reason); they
//! must never carry anything a replica would have to look up outside the state to apply them.

use crate::action::{Plan, Progress};
use crate::ids::{ActionId, ClientId, JobId, NodeId};
use crate::job::JobSpec;
use crate::names::{LocalityDomain, NodeName};
use crate::node::{DeviceHealth, DeviceSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The entry format this build writes and reads. Bump it when any encoded type changes, and
/// add a golden file for the new version (see `tests/golden.rs`).
pub const FORMAT_VERSION: u16 = 1;

/// How a node's ranks of a job ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobExit {
    /// Every rank on the node exited with status 0.
    Succeeded,
    /// A rank crashed or exited non-zero.
    Failed { reason: String },
}

/// The payload of a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    /// An agent registers its node and devices (again after a restart: same inventory, no-op).
    RegisterNode {
        name: NodeName,
        domain: LocalityDomain,
        devices: Vec<DeviceSpec>,
    },
    /// Forget a node that holds no devices of any job.
    DeregisterNode {
        name: NodeName,
    },
    /// An agent's heartbeat, with the health of the devices whose health changed.
    ReportNodeHealth {
        name: NodeName,
        devices: Vec<(u16, DeviceHealth)>,
    },
    /// An operator drains a node (nothing new is placed there) or puts it back in service.
    SetNodeDraining {
        name: NodeName,
        draining: bool,
    },
    /// The leader declares a node lost (missed heartbeats), or an operator does.
    NodeDown {
        name: NodeName,
        reason: String,
    },
    SubmitJob {
        spec: JobSpec,
    },
    CancelJob {
        job: JobId,
    },
    /// Set and remove metadata keys; with `expected_version`, only if the job is at it (CAS).
    UpdateJobMetadata {
        job: JobId,
        expected_version: Option<u64>,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    },
    /// One scheduling decision.
    ApplyPlan {
        plan: Plan,
    },
    /// An agent reports how far it got with an action on its node.
    ReportActionProgress {
        action: ActionId,
        node: NodeId,
        progress: Progress,
    },
    /// An agent reports that a job's ranks on its node ended.
    ReportJobExit {
        job: JobId,
        node: NodeId,
        exit: JobExit,
    },
    /// Time passes: ledgers accrue up to the entry's leader time.
    Tick,
}

impl Command {
    /// A short name of the command's kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::RegisterNode { .. } => "register_node",
            Command::DeregisterNode { .. } => "deregister_node",
            Command::ReportNodeHealth { .. } => "node_health",
            Command::SetNodeDraining { .. } => "node_draining",
            Command::NodeDown { .. } => "node_down",
            Command::SubmitJob { .. } => "submit_job",
            Command::CancelJob { .. } => "cancel_job",
            Command::UpdateJobMetadata { .. } => "update_metadata",
            Command::ApplyPlan { .. } => "plan",
            Command::ReportActionProgress { .. } => "action_progress",
            Command::ReportJobExit { .. } => "job_exit",
            Command::Tick => "tick",
        }
    }

    /// One line an operator reads in `singularity operator log`, with the decision's reasons.
    pub fn summary(&self) -> String {
        match self {
            Command::RegisterNode {
                name,
                domain,
                devices,
            } => {
                let kinds: std::collections::BTreeSet<&str> =
                    devices.iter().map(|d| d.kind.as_str()).collect();
                let kinds: Vec<&str> = kinds.into_iter().collect();
                format!(
                    "register node {name} in domain {domain} with {} device(s) of kind {}",
                    devices.len(),
                    kinds.join(",")
                )
            }
            Command::DeregisterNode { name } => format!("deregister node {name}"),
            Command::ReportNodeHealth { name, devices } => {
                if devices.is_empty() {
                    format!("heartbeat from node {name}")
                } else {
                    let changes: Vec<String> = devices
                        .iter()
                        .map(|(index, health)| match health {
                            DeviceHealth::Healthy => format!("device {index} healthy"),
                            DeviceHealth::Unhealthy { reason } => {
                                format!("device {index} unhealthy ({reason})")
                            }
                        })
                        .collect();
                    format!("node {name} health: {}", changes.join(", "))
                }
            }
            Command::SetNodeDraining { name, draining } => {
                if *draining {
                    format!("drain node {name}")
                } else {
                    format!("return node {name} to service")
                }
            }
            Command::NodeDown { name, reason } => format!("node {name} down: {reason}"),
            Command::SubmitJob { spec } => format!(
                "submit {:?} for tenant {} tier {} world size {} on {}",
                spec.name, spec.tenant, spec.tier, spec.world_size, spec.device_kind
            ),
            Command::CancelJob { job } => format!("cancel {job}"),
            Command::UpdateJobMetadata {
                job,
                expected_version,
                set,
                remove,
            } => {
                let cas = match expected_version {
                    Some(v) => format!(" if at version {v}"),
                    None => String::new(),
                };
                format!(
                    "update metadata of {job}{cas}: set {} key(s), remove {}",
                    set.len(),
                    remove.len()
                )
            }
            Command::ApplyPlan { plan } => {
                let actions: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
                format!(
                    "plan for {} (computed at index {}): {}",
                    plan.trigger,
                    plan.computed_at_index,
                    if actions.is_empty() {
                        "no actions".to_string()
                    } else {
                        actions.join("; ")
                    }
                )
            }
            Command::ReportActionProgress {
                action,
                node,
                progress,
            } => format!("{action} on {node}: {progress}"),
            Command::ReportJobExit { job, node, exit } => match exit {
                JobExit::Succeeded => format!("{job} ranks on {node} exited successfully"),
                JobExit::Failed { reason } => format!("{job} ranks on {node} failed: {reason}"),
            },
            Command::Tick => "tick".to_string(),
        }
    }
}

/// Identifies a client write for exactly-once retries (DESIGN.md rule 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientRequest {
    pub client_id: ClientId,
    /// Increases by one per new write of this client; a retry reuses the same number.
    pub sequence: u64,
}

/// A log entry: the versioned envelope around one command.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub format_version: u16,
    /// Present for client writes; absent for the leader's own entries (plans, ticks).
    pub client: Option<ClientRequest>,
    /// The leader's wall-clock time when it proposed the entry: the only clock apply sees.
    pub leader_time_ms: u64,
    pub command: Command,
}

impl Entry {
    /// An entry of the current format version.
    pub fn new(client: Option<ClientRequest>, leader_time_ms: u64, command: Command) -> Self {
        Entry {
            format_version: FORMAT_VERSION,
            client,
            leader_time_ms,
            command,
        }
    }

    /// A leader entry (no client).
    pub fn system(leader_time_ms: u64, command: Command) -> Self {
        Entry::new(None, leader_time_ms, command)
    }

    /// Write number `sequence` of client `client_id`, as the client proposes it (the leader
    /// stamps its time on it later).
    pub fn from_client(client_id: ClientId, sequence: u64, command: Command) -> Self {
        Entry::new(
            Some(ClientRequest {
                client_id,
                sequence,
            }),
            0,
            command,
        )
    }
}
