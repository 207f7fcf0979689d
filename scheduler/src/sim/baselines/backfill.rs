//! EASY backfill, as Slurm's backfill scheduler does it with one reservation: waiting jobs start
//! in submission order while they fit. The first that does not fit (the head) gets a reservation
//! at the shadow time, the earliest moment enough devices free up by the running jobs' expected
//! ends (start + the user's runtime estimate). A later job may start now only if it fits now and
//! either ends (by its estimate) before the shadow time or uses only devices the head will not
//! need then (the extra devices), so it never delays the head.
//!
//! Jobs without an estimate are treated as never ending. Never preempts. Deterministic and
//! memoryless: the plan depends only on the state.

use super::{attained_device_ms, plan_of, runtime_estimate_ms, start, waiting_jobs, FreePool};
use crate::action::Plan;
use crate::job::Job;
use crate::planner::{Evaluation, Policy};
use crate::state::ClusterState;

/// The EASY-backfill baseline.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backfill;

impl Backfill {
    pub fn new() -> Self {
        Backfill
    }
}

/// When a job that holds devices is expected to release them.
fn expected_end_ms(job: &Job, now_ms: u64) -> u64 {
    let Some(estimate_ms) = runtime_estimate_ms(job) else {
        return u64::MAX;
    };
    let ran_ms = attained_device_ms(job, now_ms) / u64::from(job.spec.world_size.max(1));
    now_ms.saturating_add(estimate_ms.saturating_sub(ran_ms))
}

impl Policy for Backfill {
    fn name(&self) -> &'static str {
        "backfill"
    }

    fn plan(
        &mut self,
        state: &ClusterState,
        evaluation: &Evaluation,
        now_ms: u64,
        computed_at_index: u64,
    ) -> Plan {
        let mut pool = FreePool::of(state);
        let mut actions = Vec::new();
        // Device releases expected in the future: (when, devices).
        let mut releases: Vec<(u64, usize)> = state
            .jobs()
            .filter(|j| j.phase.holds_devices())
            .map(|j| (expected_end_ms(j, now_ms), j.assignment.len()))
            .collect();
        let mut waiting = waiting_jobs(state);
        let mut head = None;
        for job in waiting.by_ref() {
            let world = job.spec.world_size as usize;
            match pool.take(world) {
                Some(devices) => {
                    releases.push((expected_end_ms(job, now_ms), world));
                    let reason = format!("backfill: next in the queue, {world} device(s) free");
                    actions.push(start(job, devices, reason));
                }
                None => {
                    head = Some(job);
                    break;
                }
            }
        }
        let Some(head) = head else {
            return plan_of(evaluation, computed_at_index, actions);
        };
        // The head's reservation: the shadow time and the devices spare at it.
        let head_world = head.spec.world_size as usize;
        releases.sort_unstable();
        let mut available = pool.total();
        let mut shadow_ms = u64::MAX;
        let mut extra = 0usize;
        for (end_ms, devices) in releases {
            available += devices;
            if available >= head_world {
                shadow_ms = end_ms;
                extra = available - head_world;
                break;
            }
        }
        for job in waiting {
            let world = job.spec.world_size as usize;
            if world > pool.total() {
                continue;
            }
            let ends_ms = runtime_estimate_ms(job).map_or(u64::MAX, |e| now_ms.saturating_add(e));
            let ends_before_shadow = ends_ms <= shadow_ms;
            if !ends_before_shadow && world > extra {
                continue;
            }
            let Some(devices) = pool.take(world) else {
                continue;
            };
            if !ends_before_shadow {
                extra -= world;
            }
            let reason = if ends_before_shadow {
                format!(
                    "backfill: ends before the reservation of {} at {} s",
                    head.id,
                    shadow_ms / 1000
                )
            } else {
                format!(
                    "backfill: uses devices the reservation of {} does not need",
                    head.id
                )
            };
            actions.push(start(job, devices, reason));
        }
        plan_of(evaluation, computed_at_index, actions)
    }
}
