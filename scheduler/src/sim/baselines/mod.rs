//! The baselines Singularity is compared with, as faithful `Policy` implementations that run
//! through the same engine and the same `ClusterState::apply`:
//!
//! - `fifo`: first come, first served; gangs; the head of the queue blocks; no preemption;
//! - `backfill`: EASY backfill as in Slurm: the head holds a reservation computed from the
//!   running jobs' expected ends (the trace duration is the user's runtime estimate), and a later
//!   job starts only if it does not delay that reservation;
//! - `tiresias`: discretized two-dimensional least-attained-service (Tiresias, NSDI'19):
//!   attained service = devices × time, priority queues by thresholds, FIFO within a queue,
//!   preemption of lower-priority jobs through Preempt/Resume actions (paying checkpoint costs).
//!
//! They know nothing of tiers (that is what users would run without Singularity) and never
//! splice. They must read only the state and the evaluation, and keep no hidden memory, so a
//! plan is a function of what apply has recorded.

mod backfill;
mod fifo;
mod pool;
mod tiresias;

pub use backfill::Backfill;
pub use fifo::Fifo;
pub use pool::FreePool;
pub use tiresias::{Tiresias, TIRESIAS_QUEUE_THRESHOLDS_DEVICE_S};

use super::engine::RUNTIME_ESTIMATE_KEY;
use crate::action::{ActionOp, Plan, PlannedAction};
use crate::ids::DeviceRef;
use crate::job::{Job, JobPhase};
use crate::planner::Evaluation;
use crate::state::ClusterState;

/// Device-milliseconds of service the job has received: its ledger's delivered device-time,
/// plus the devices it runs on since the ledger was last accrued.
pub fn attained_device_ms(job: &Job, now_ms: u64) -> u64 {
    let since = if job.phase == JobPhase::Running {
        job.assignment.len() as u64 * now_ms.saturating_sub(job.ledger.accrued_until_ms)
    } else {
        0
    };
    job.ledger.delivered_device_ms + since
}

/// The user's runtime estimate, in milliseconds (`None` when the job gave none).
pub fn runtime_estimate_ms(job: &Job) -> Option<u64> {
    job.metadata
        .get(RUNTIME_ESTIMATE_KEY)
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| s.saturating_mul(1000))
}

/// Jobs waiting for devices with nothing in flight, in submission order.
pub fn waiting_jobs(state: &ClusterState) -> impl Iterator<Item = &Job> {
    state
        .jobs()
        .filter(|j| j.phase == JobPhase::Pending && j.action.is_none())
}

/// Place a fresh job, or resume one from its checkpoint.
pub fn start(job: &Job, devices: Vec<DeviceRef>, reason: String) -> PlannedAction {
    let op = if job.checkpoint.is_some() {
        ActionOp::Resume { devices }
    } else {
        ActionOp::Place { devices }
    };
    PlannedAction {
        job: job.id,
        op,
        reason,
    }
}

/// A plan of `actions` for `evaluation`.
pub fn plan_of(
    evaluation: &Evaluation,
    computed_at_index: u64,
    actions: Vec<PlannedAction>,
) -> Plan {
    Plan {
        computed_at_index,
        trigger: evaluation.to_string(),
        actions,
    }
}
