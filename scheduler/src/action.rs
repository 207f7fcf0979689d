//! Plans and actions: what the leader decides (a `Plan` of `PlannedAction`s, one log entry),
//! and what the state tracks once an action commits (`Action`, in flight until every node it
//! involves has reported it completed or one has reported it failed).
//!
//! This module only describes; validation and effects live in the apply code. Every action
//! carries a human-readable reason (DESIGN.md rule 3).

use crate::ids::{format_devices, ActionId, DeviceRef, JobId, NodeId};
use crate::job::CheckpointRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What an action does to its job.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionOp {
    /// Start a pending job without a checkpoint on these devices (all ranks, or none).
    Place { devices: Vec<DeviceRef> },
    /// Start a pending job from its checkpoint on these devices.
    Resume { devices: Vec<DeviceRef> },
    /// Checkpoint the job, then release its devices; it waits to resume.
    /// `for_job` names the job this makes room for, if any (tier rules are checked against it).
    Preempt { for_job: Option<JobId> },
    /// Checkpoint the job and restore it on other devices (same device count).
    Migrate { to: Vec<DeviceRef> },
    /// Checkpoint the job and restore it on a different number of devices (splicing).
    /// `for_job` names the job a shrink makes room for, if any.
    Resize {
        to: Vec<DeviceRef>,
        for_job: Option<JobId>,
    },
    /// Stop the job's ranks and release its devices (the job was cancelled).
    Stop,
}

impl ActionOp {
    pub fn kind(&self) -> ActionKind {
        match self {
            ActionOp::Place { .. } => ActionKind::Place,
            ActionOp::Resume { .. } => ActionKind::Resume,
            ActionOp::Preempt { .. } => ActionKind::Preempt,
            ActionOp::Migrate { .. } => ActionKind::Migrate,
            ActionOp::Resize { .. } => ActionKind::Resize,
            ActionOp::Stop => ActionKind::Stop,
        }
    }

    /// The devices the job will hold once this action completes, where it names them.
    pub fn target_devices(&self) -> Option<&[DeviceRef]> {
        match self {
            ActionOp::Place { devices } | ActionOp::Resume { devices } => Some(devices),
            ActionOp::Migrate { to } | ActionOp::Resize { to, .. } => Some(to),
            ActionOp::Preempt { .. } | ActionOp::Stop => None,
        }
    }
}

/// The kind of an action, without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActionKind {
    Place,
    Resume,
    Preempt,
    Migrate,
    Resize,
    Stop,
}

impl ActionKind {
    /// Every kind, in declaration order (for parsers of the names `Display` prints).
    pub const ALL: [ActionKind; 6] = [
        ActionKind::Place,
        ActionKind::Resume,
        ActionKind::Preempt,
        ActionKind::Migrate,
        ActionKind::Resize,
        ActionKind::Stop,
    ];
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActionKind::Place => "place",
            ActionKind::Resume => "resume",
            ActionKind::Preempt => "preempt",
            ActionKind::Migrate => "migrate",
            ActionKind::Resize => "resize",
            ActionKind::Stop => "stop",
        })
    }
}

/// One action as the leader proposes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlannedAction {
    pub job: JobId,
    pub op: ActionOp,
    /// Why, in words an operator understands ("preempted for job 42, tier premium").
    pub reason: String,
}

impl fmt::Display for PlannedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.kind(), self.job)?;
        if let Some(devices) = self.op.target_devices() {
            write!(f, " on {}", format_devices(devices))?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// One scheduling decision: the actions the leader proposes together, in one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Plan {
    /// The applied log index of the state the plan was computed on (for staleness reports).
    pub computed_at_index: u64,
    /// What the leader was evaluating ("job 42 submitted", "node gpu-7 down", "tick").
    pub trigger: String,
    pub actions: Vec<PlannedAction>,
}

/// How far one node has got with an action. Ordered: a node's stage only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stage {
    Committed,
    Started,
    Checkpointed,
    Completed,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Committed => "committed",
            Stage::Started => "started",
            Stage::Checkpointed => "checkpointed",
            Stage::Completed => "completed",
        })
    }
}

/// What a node agent reports about an action.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Progress {
    Started,
    /// All of this node's ranks reached the checkpoint's step boundary and wrote their state.
    Checkpointed {
        checkpoint: CheckpointRef,
    },
    Completed,
    /// The action could not be carried out on this node; its ranks there are stopped.
    Failed {
        reason: String,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Started => f.write_str("started"),
            Progress::Checkpointed { checkpoint } => write!(
                f,
                "checkpointed at step {} to {}",
                checkpoint.step, checkpoint.location
            ),
            Progress::Completed => f.write_str("completed"),
            Progress::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// A committed action in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub id: ActionId,
    pub job: JobId,
    pub op: ActionOp,
    pub reason: String,
    pub committed_at_ms: u64,
    /// Every node the action involves and how far it has got there.
    pub nodes: BTreeMap<NodeId, Stage>,
    /// The checkpoint the action's nodes agreed on, once the first one reported it.
    pub checkpoint: Option<CheckpointRef>,
}

impl Action {
    /// The least advanced stage over all nodes: the action's own stage.
    pub fn stage(&self) -> Stage {
        self.nodes
            .values()
            .copied()
            .min()
            .unwrap_or(Stage::Completed)
    }
}
