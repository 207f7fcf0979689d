//! The planner: pure functions from a state and an evaluation to a `Plan` (DESIGN.md, Nomad's
//! pipeline: feasibility checks, then scoring, then selection, each check a small type with a
//! named rejection reason). The leader's scheduling loop and the trace-replay simulator both
//! call it; neither has a second copy of the policy.
//!
//! A planner must be deterministic (no clock, no randomness, no hash-map order in its output),
//! must only propose, never change the state (apply re-validates every action), and must give
//! every action a reason an operator understands.

mod config;
mod defrag;
mod drain;
mod explain;
mod feasibility;
mod growth;
mod pending;
mod policy;
mod reclaim;
mod select;
mod session;
mod victims;
mod view;

pub use config::*;
pub use explain::{explain, Explanation};
pub use feasibility::{
    check_node, DeviceKindMatches, EnoughMemory, FeasibilityCheck, FreeDevices, HealthyDevice,
    NodeRejection, NodeUp, CHECKS,
};
pub use policy::{plan, SingularityPolicy};

use crate::action::Plan;
use crate::ids::{ActionId, JobId, NodeId};
use crate::state::ClusterState;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the leader (or the simulator) asks the planner to look at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Evaluation {
    JobSubmitted(JobId),
    JobCancelled(JobId),
    NodeUp(NodeId),
    NodeDown(NodeId),
    NodeDraining(NodeId),
    /// An action finished (completed or failed): capacity may have been freed.
    ActionFinished {
        action: ActionId,
        job: JobId,
    },
    /// Periodic: grow shrunk jobs, rebalance, defragment.
    Tick,
    /// A migrate or resize checkpointed on every node and released the devices it gives up
    /// (before it completes): a job waiting for room may start on them now.
    ActionCheckpointed {
        action: ActionId,
        job: JobId,
    },
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evaluation::JobSubmitted(job) => write!(f, "{job} submitted"),
            Evaluation::JobCancelled(job) => write!(f, "{job} cancelled"),
            Evaluation::NodeUp(node) => write!(f, "{node} up"),
            Evaluation::NodeDown(node) => write!(f, "{node} down"),
            Evaluation::NodeDraining(node) => write!(f, "{node} draining"),
            Evaluation::ActionFinished { action, job } => write!(f, "{action} of {job} finished"),
            Evaluation::Tick => f.write_str("tick"),
            Evaluation::ActionCheckpointed { action, job } => {
                write!(f, "{action} of {job} checkpointed and released devices")
            }
        }
    }
}

/// A scheduling policy. Singularity's own and the simulator's baselines implement it, so the
/// simulator replays every policy through the same `ClusterState::apply`.
pub trait Policy {
    /// A short name (`singularity`, `fifo`, `backfill`, `tiresias`).
    fn name(&self) -> &'static str;

    /// Proposes the actions for one evaluation of `state` at leader time `now_ms`.
    /// `computed_at_index` is the applied log index of `state`; it goes into the plan.
    /// An empty plan means nothing to do.
    fn plan(
        &mut self,
        state: &ClusterState,
        evaluation: &Evaluation,
        now_ms: u64,
        computed_at_index: u64,
    ) -> Plan;

    /// The most actions one plan of this policy holds; a plan this full is followed up at once
    /// (`follows_up`). Policies without a bound of their own are bounded by what apply takes.
    fn action_limit(&self) -> usize {
        crate::limits::MAX_ACTIONS_PER_PLAN
    }
}
