//! Tiresias's discretized two-dimensional least-attained-service (2D-LAS; Gu et al., NSDI'19):
//! a job's attained service is devices × time it has run; jobs sit in priority queues by
//! thresholds of attained service (fewer device-seconds, higher priority), FIFO by submission
//! within a queue. On every evaluation the policy walks all unfinished jobs in priority order and
//! admits each whose gang still fits in the fleet (the desired set); desired jobs that wait start
//! on free devices, and when some cannot, running jobs outside the desired set are preempted,
//! lowest priority first, paying the checkpoint cost; they resume later from their checkpoint.
//!
//! Not implemented: the paper's optional starvation promotion (STARVELIMIT) and its
//! consolidation profiling (placement here always packs onto the fewest nodes it can). Knows
//! nothing of tiers. Deterministic and memoryless: the plan depends only on the state.

use super::{attained_device_ms, plan_of, start, FreePool};
use crate::action::{ActionOp, Plan, PlannedAction};
use crate::job::{Job, JobPhase};
use crate::node::NodeStatus;
use crate::planner::{Evaluation, Policy};
use crate::state::ClusterState;

/// Queue thresholds in device-seconds of attained service: queue 0 below 1 device-hour, queue 1
/// below 10 device-hours, queue 2 above.
pub const TIRESIAS_QUEUE_THRESHOLDS_DEVICE_S: [u64; 2] = [3_600, 36_000];

/// The Tiresias (2D-LAS) baseline.
#[derive(Clone, Debug)]
pub struct Tiresias {
    thresholds_device_ms: Vec<u64>,
}

impl Default for Tiresias {
    fn default() -> Self {
        Tiresias::new()
    }
}

impl Tiresias {
    pub fn new() -> Self {
        Tiresias::with_thresholds(&TIRESIAS_QUEUE_THRESHOLDS_DEVICE_S)
    }

    /// Tiresias with other queue thresholds (device-seconds, ascending).
    pub fn with_thresholds(thresholds_device_s: &[u64]) -> Self {
        Tiresias {
            thresholds_device_ms: thresholds_device_s.iter().map(|s| s * 1000).collect(),
        }
    }

    fn queue_of(&self, job: &Job, now_ms: u64) -> usize {
        let attained = attained_device_ms(job, now_ms);
        self.thresholds_device_ms
            .iter()
            .position(|&t| attained < t)
            .unwrap_or(self.thresholds_device_ms.len())
    }
}

impl Policy for Tiresias {
    fn name(&self) -> &'static str {
        "tiresias"
    }

    fn plan(
        &mut self,
        state: &ClusterState,
        evaluation: &Evaluation,
        now_ms: u64,
        computed_at_index: u64,
    ) -> Plan {
        let capacity: usize = state
            .nodes()
            .filter(|n| n.status == NodeStatus::Up)
            .map(|n| n.devices.iter().filter(|d| d.health.is_healthy()).count())
            .sum();
        let mut ranked: Vec<(usize, u64, &Job)> = state
            .jobs()
            .filter(|j| !j.phase.is_terminal() && j.phase != JobPhase::Stopping)
            .map(|j| (self.queue_of(j, now_ms), j.submitted_at_ms, j))
            .collect();
        ranked.sort_by_key(|&(queue, submitted, job)| (queue, submitted, job.id));
        // The desired set: greedy in priority order over the whole fleet.
        let mut budget = capacity;
        let mut desired = vec![false; ranked.len()];
        for (i, &(_, _, job)) in ranked.iter().enumerate() {
            let world = job.spec.world_size as usize;
            if world <= budget {
                budget -= world;
                desired[i] = true;
            }
        }
        let mut pool = FreePool::of(state);
        let mut actions: Vec<PlannedAction> = Vec::new();
        let mut blocked_devices = 0usize;
        let mut first_blocked = None;
        for (i, &(queue, _, job)) in ranked.iter().enumerate() {
            if !desired[i] || job.phase != JobPhase::Pending || job.action.is_some() {
                continue;
            }
            let world = job.spec.world_size as usize;
            match pool.take(world) {
                Some(devices) => {
                    let reason = format!("tiresias: queue {queue} by attained service, gang fits");
                    actions.push(start(job, devices, reason));
                }
                None => {
                    blocked_devices += world;
                    first_blocked.get_or_insert((job.id, queue));
                }
            }
        }
        if let Some((beneficiary, queue)) = first_blocked {
            // Devices on their way back: free ones left plus those of jobs being preempted.
            let mut coming = pool.total()
                + ranked
                    .iter()
                    .filter(|(_, _, j)| j.phase == JobPhase::Preempting)
                    .map(|(_, _, j)| j.assignment.len())
                    .sum::<usize>();
            for (i, &(victim_queue, _, job)) in ranked.iter().enumerate().rev() {
                if coming >= blocked_devices {
                    break;
                }
                if desired[i] || job.phase != JobPhase::Running || job.action.is_some() {
                    continue;
                }
                coming += job.assignment.len();
                actions.push(PlannedAction {
                    job: job.id,
                    op: ActionOp::Preempt { for_job: None },
                    reason: format!(
                        "tiresias: in queue {victim_queue} by attained service; {beneficiary} in queue {queue} outranks it"
                    ),
                });
            }
        }
        plan_of(evaluation, computed_at_index, actions)
    }
}
