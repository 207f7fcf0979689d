//! The result of applying one log entry: what changed (`Effect`), or why nothing did
//! (`Rejection`), or the first result again for a retried client write (`Duplicate`).
//!
//! Outcomes are returned to clients and cached per client, so they are plain serialisable data.
//! A rejection must never come with a partial change: apply checks before it writes.

use crate::ids::{ActionId, ClientId, DeviceRef, JobId, NodeId};
use crate::job::JobPhase;
use crate::node::NodeStatus;
use serde::{Deserialize, Serialize};

/// What applying an entry produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Accepted(Effect),
    Rejected(Rejection),
    /// A client retried a write that was already applied: its first effect, unchanged state.
    Duplicate(Effect),
}

impl Outcome {
    pub fn is_accepted(&self) -> bool {
        matches!(self, Outcome::Accepted(_))
    }

    pub fn effect(&self) -> Option<&Effect> {
        match self {
            Outcome::Accepted(effect) | Outcome::Duplicate(effect) => Some(effect),
            Outcome::Rejected(_) => None,
        }
    }

    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Outcome::Rejected(rejection) => Some(rejection),
            _ => None,
        }
    }
}

/// One committed action of a plan: its position in the plan and the id it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedAction {
    pub index: u32,
    pub action: ActionId,
}

/// One refused action of a plan: its position in the plan and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedAction {
    pub index: u32,
    pub reason: Rejection,
}

/// What an accepted entry changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    NodeRegistered {
        node: NodeId,
        /// The node was already registered with the same inventory (an agent restart).
        reregistered: bool,
    },
    NodeDeregistered {
        node: NodeId,
    },
    NodeHealthRecorded {
        node: NodeId,
        /// Jobs that held a device that became unhealthy; they wait to resume elsewhere.
        jobs_lost: Vec<JobId>,
    },
    NodeStatusChanged {
        node: NodeId,
        status: NodeStatus,
    },
    NodeMarkedDown {
        node: NodeId,
        jobs_lost: Vec<JobId>,
    },
    JobSubmitted {
        job: JobId,
    },
    JobCancelled {
        job: JobId,
        /// False when the job holds devices: it is stopped by a stop action first.
        immediately: bool,
    },
    MetadataUpdated {
        job: JobId,
        version: u64,
    },
    PlanApplied {
        committed: Vec<CommittedAction>,
        rejected: Vec<RejectedAction>,
    },
    ProgressRecorded {
        action: ActionId,
        job: JobId,
        /// The action finished (completed everywhere, or failed) and is no longer in flight.
        finished: bool,
        job_phase: JobPhase,
    },
    JobExitRecorded {
        job: JobId,
        job_phase: JobPhase,
    },
    Ticked {
        now_ms: u64,
    },
    /// A progress report moved a migrate or resize to `Checkpointed` on every node it
    /// involves: the job's old ranks are stopped and its state saved, so the devices it gives
    /// up (`released`: its old devices not in the target, in its old rank order) were freed at
    /// once; the devices it keeps or moves to stay held until the restore completes. Appended
    /// last so that the encodings of the variants above are unchanged.
    ActionCheckpointed {
        action: ActionId,
        job: JobId,
        released: Vec<DeviceRef>,
        job_phase: JobPhase,
    },
}

/// Why an entry, or one action of a plan, changed nothing. Each names what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("invalid {field}: {problem}")]
    InvalidField { field: String, problem: String },
    #[error("limit {limit} exceeded: at most {max} allowed")]
    LimitExceeded { limit: String, max: u64 },
    #[error(
        "entry format version {found} is not understood; this replica reads version {supported}"
    )]
    UnsupportedFormatVersion { found: u16, supported: u16 },
    #[error("client {client} sent sequence {sequence}, but its last applied sequence is {last}; use a new sequence number")]
    StaleSequence {
        client: ClientId,
        sequence: u64,
        last: u64,
    },
    #[error("no node named {node:?} is registered")]
    UnknownNode { node: String },
    #[error("no registered node has id {node}")]
    UnknownNodeId { node: NodeId },
    #[error("node {node:?} is already registered {problem}")]
    NodeConflict { node: String, problem: String },
    #[error(
        "node {node:?} still holds devices of {jobs:?}; drain it and wait for them to move first"
    )]
    NodeBusy { node: String, jobs: Vec<JobId> },
    #[error("node {node:?} is {status}: {problem}")]
    NodeState {
        node: String,
        status: NodeStatus,
        problem: String,
    },
    #[error("{job} does not exist (or finished long ago and was forgotten)")]
    UnknownJob { job: JobId },
    #[error("{job} is {phase}; {problem}")]
    WrongPhase {
        job: JobId,
        phase: JobPhase,
        problem: String,
    },
    #[error("{job} already has {action} in flight")]
    ActionInFlight { job: JobId, action: ActionId },
    #[error("version mismatch on {job}: expected {expected}, the job is at version {actual}")]
    VersionMismatch {
        job: JobId,
        expected: u64,
        actual: u64,
    },
    #[error("device {device} cannot be used: {problem}")]
    DeviceUnavailable { device: DeviceRef, problem: String },
    #[error("tier rule: {problem}")]
    TierRule { problem: String },
    #[error("{action} is not in flight (it finished, or never existed)")]
    UnknownAction { action: ActionId },
    #[error("{action} does not involve {node}")]
    NodeNotInvolved { action: ActionId, node: NodeId },
    #[error("{action} on {node}: {problem}")]
    ProgressOutOfOrder {
        action: ActionId,
        node: NodeId,
        problem: String,
    },
    #[error("no action of the plan could be committed; the first refusal: {first}")]
    PlanRejected {
        first: Box<Rejection>,
        rejected: Vec<RejectedAction>,
    },
}

impl Rejection {
    pub fn invalid(field: &str, problem: impl Into<String>) -> Self {
        Rejection::InvalidField {
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    pub fn limit(limit: &str, max: usize) -> Self {
        Rejection::LimitExceeded {
            limit: limit.to_string(),
            max: max as u64,
        }
    }

    /// A short machine-friendly name of the reason, for metrics and log summaries.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InvalidField { .. } => "invalid_field",
            Rejection::LimitExceeded { .. } => "limit_exceeded",
            Rejection::UnsupportedFormatVersion { .. } => "unsupported_format_version",
            Rejection::StaleSequence { .. } => "stale_sequence",
            Rejection::UnknownNode { .. } | Rejection::UnknownNodeId { .. } => "unknown_node",
            Rejection::NodeConflict { .. } => "node_conflict",
            Rejection::NodeBusy { .. } => "node_busy",
            Rejection::NodeState { .. } => "node_state",
            Rejection::UnknownJob { .. } => "unknown_job",
            Rejection::WrongPhase { .. } => "wrong_phase",
            Rejection::ActionInFlight { .. } => "action_in_flight",
            Rejection::VersionMismatch { .. } => "version_mismatch",
            Rejection::DeviceUnavailable { .. } => "device_unavailable",
            Rejection::TierRule { .. } => "tier_rule",
            Rejection::UnknownAction { .. } => "unknown_action",
            Rejection::NodeNotInvolved { .. } => "node_not_involved",
            Rejection::ProgressOutOfOrder { .. } => "progress_out_of_order",
            Rejection::PlanRejected { .. } => "plan_rejected",
        }
    }
}
