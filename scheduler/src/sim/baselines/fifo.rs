//! First come, first served with gang placement: waiting jobs start in submission order while
//! their whole gang fits; the first one that does not fit blocks everything behind it. Never
//! preempts, migrates or resizes.
//!
//! Deterministic and memoryless: the plan depends only on the state.

use super::{plan_of, start, waiting_jobs, FreePool};
use crate::action::Plan;
use crate::planner::{Evaluation, Policy};
use crate::state::ClusterState;

/// The FIFO baseline.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fifo;

impl Fifo {
    pub fn new() -> Self {
        Fifo
    }
}

impl Policy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }

    fn plan(
        &mut self,
        state: &ClusterState,
        evaluation: &Evaluation,
        _now_ms: u64,
        computed_at_index: u64,
    ) -> Plan {
        let mut pool = FreePool::of(state);
        let mut actions = Vec::new();
        for job in waiting_jobs(state) {
            let Some(devices) = pool.take(job.spec.world_size as usize) else {
                break;
            };
            let reason = format!(
                "fifo: first in the queue, {} device(s) free",
                job.spec.world_size
            );
            actions.push(start(job, devices, reason));
        }
        plan_of(evaluation, computed_at_index, actions)
    }
}
