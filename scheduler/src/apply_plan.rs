//! Apply code for plans: every action is re-validated against the state it meets at apply
//! (DESIGN.md rule 4), in plan order, each seeing the effects of the ones committed before it.
//! What no longer fits is refused with a named reason; the rest commits. A plan of which
//! nothing commits is rejected whole and changes nothing.
//!
//! This is the last line of defence for the safety rules: no device to two jobs, gangs all or
//! nothing, devices healthy, of the right kind and memory, on nodes that take work, and the tier
//! promises (floors; who may be preempted or shrunk for whom). It must never trust the planner.

use crate::action::{Action, ActionOp, Plan, PlannedAction, Stage};
use crate::ids::{ActionId, DeviceRef, JobId, NodeId};
use crate::job::{Job, JobPhase};
use crate::ledger::accrue;
use crate::limits::{MAX_ACTIONS_IN_FLIGHT, MAX_ACTIONS_PER_PLAN, MAX_REASON_BYTES};
use crate::node::NodeStatus;
use crate::outcome::{CommittedAction, Effect, RejectedAction, Rejection};
use crate::state::ClusterState;
use std::collections::{BTreeMap, BTreeSet};

fn wrong_phase(job: &Job, problem: &str) -> Rejection {
    Rejection::WrongPhase {
        job: job.id,
        phase: job.phase,
        problem: problem.to_string(),
    }
}

impl ClusterState {
    pub(crate) fn apply_plan(&mut self, plan: Plan, now_ms: u64) -> Result<Effect, Rejection> {
        if plan.actions.is_empty() {
            return Err(Rejection::invalid("plan", "has no actions"));
        }
        if plan.actions.len() > MAX_ACTIONS_PER_PLAN {
            return Err(Rejection::limit("actions per plan", MAX_ACTIONS_PER_PLAN));
        }
        if plan.trigger.len() > MAX_REASON_BYTES {
            return Err(Rejection::invalid(
                "trigger",
                format!("is longer than {MAX_REASON_BYTES} bytes"),
            ));
        }
        let mut committed = Vec::new();
        let mut rejected = Vec::new();
        for (index, action) in plan.actions.into_iter().enumerate() {
            let index = index as u32;
            match self.validate_action(&action) {
                Ok(()) => {
                    let id = self.commit_action(action, now_ms);
                    committed.push(CommittedAction { index, action: id });
                }
                Err(reason) => rejected.push(RejectedAction { index, reason }),
            }
        }
        if committed.is_empty() {
            let first = Box::new(rejected[0].reason.clone());
            return Err(Rejection::PlanRejected { first, rejected });
        }
        self.counters.plans_committed += 1;
        Ok(Effect::PlanApplied {
            committed,
            rejected,
        })
    }

    /// Checks one action against the current state. Changes nothing.
    pub(crate) fn validate_action(&self, action: &PlannedAction) -> Result<(), Rejection> {
        if action.reason.trim().is_empty() || action.reason.len() > MAX_REASON_BYTES {
            return Err(Rejection::invalid(
                "reason",
                format!("every action must say why, in 1 to {MAX_REASON_BYTES} bytes"),
            ));
        }
        if self.actions.len() >= MAX_ACTIONS_IN_FLIGHT {
            return Err(Rejection::limit("actions in flight", MAX_ACTIONS_IN_FLIGHT));
        }
        let job = self
            .jobs
            .get(&action.job)
            .ok_or(Rejection::UnknownJob { job: action.job })?;
        if job.phase.is_terminal() {
            return Err(wrong_phase(job, "a finished job takes no actions"));
        }
        if let Some(in_flight) = job.action {
            return Err(Rejection::ActionInFlight {
                job: job.id,
                action: in_flight,
            });
        }
        if job.cancel_requested && !matches!(action.op, ActionOp::Stop) {
            return Err(wrong_phase(
                job,
                "it is being cancelled; only a stop applies",
            ));
        }
        match &action.op {
            ActionOp::Place { devices } => {
                if job.phase != JobPhase::Pending {
                    return Err(wrong_phase(job, "only a pending job can be placed"));
                }
                if job.checkpoint.is_some() {
                    return Err(wrong_phase(job, "it has a checkpoint: resume it instead"));
                }
                self.validate_target(job, devices)
            }
            ActionOp::Resume { devices } => {
                if job.phase != JobPhase::Pending {
                    return Err(wrong_phase(job, "only a pending job can be resumed"));
                }
                if job.checkpoint.is_none() {
                    return Err(wrong_phase(job, "it has no checkpoint: place it instead"));
                }
                self.validate_target(job, devices)
            }
            ActionOp::Preempt { for_job } => {
                if job.phase != JobPhase::Running {
                    return Err(wrong_phase(job, "only a running job can be preempted"));
                }
                if let Some(beneficiary) = for_job {
                    let tier = self.beneficiary_tier(job.id, *beneficiary)?;
                    if !job.spec.tier.may_be_preempted_for(tier) {
                        return Err(Rejection::TierRule {
                            problem: format!(
                                "{} of tier {} may not be preempted for {beneficiary} of tier {tier}",
                                job.id, job.spec.tier
                            ),
                        });
                    }
                }
                Ok(())
            }
            ActionOp::Migrate { to } => {
                if job.phase != JobPhase::Running {
                    return Err(wrong_phase(job, "only a running job can be migrated"));
                }
                if to.len() != job.assignment.len() {
                    return Err(Rejection::invalid(
                        "to",
                        format!(
                            "a migration keeps the device count ({}), got {}; use resize to change it",
                            job.assignment.len(),
                            to.len()
                        ),
                    ));
                }
                let from: BTreeSet<&DeviceRef> = job.assignment.iter().collect();
                if to.iter().collect::<BTreeSet<_>>() == from {
                    return Err(Rejection::invalid(
                        "to",
                        "the job already runs on exactly these devices",
                    ));
                }
                self.validate_target(job, to)
            }
            ActionOp::Resize { to, for_job } => {
                if job.phase != JobPhase::Running {
                    return Err(wrong_phase(job, "only a running job can be resized"));
                }
                if to.len() == job.assignment.len() {
                    return Err(Rejection::invalid(
                        "to",
                        "a resize changes the device count; use migrate to move the job",
                    ));
                }
                if let (Some(beneficiary), true) = (for_job, to.len() < job.assignment.len()) {
                    let tier = self.beneficiary_tier(job.id, *beneficiary)?;
                    if !job.spec.tier.may_be_shrunk_for(tier) {
                        return Err(Rejection::TierRule {
                            problem: format!(
                                "{} of tier {} may not be shrunk for {beneficiary} of tier {tier}",
                                job.id, job.spec.tier
                            ),
                        });
                    }
                }
                self.validate_target(job, to)
            }
            ActionOp::Stop => {
                if job.phase != JobPhase::Running {
                    return Err(wrong_phase(job, "only a running job can be stopped"));
                }
                Ok(())
            }
        }
    }

    fn beneficiary_tier(
        &self,
        victim: JobId,
        beneficiary: JobId,
    ) -> Result<crate::Tier, Rejection> {
        if beneficiary == victim {
            return Err(Rejection::invalid(
                "for_job",
                "a job cannot make room for itself",
            ));
        }
        let job = self
            .jobs
            .get(&beneficiary)
            .ok_or(Rejection::UnknownJob { job: beneficiary })?;
        if job.phase.is_terminal() {
            return Err(wrong_phase(job, "a finished job needs no room"));
        }
        Ok(job.spec.tier)
    }

    /// Checks the devices a job would hold after an action: a whole gang that divides the world
    /// size, at or above the tier's floor, no repeats, each device healthy, of the job's kind,
    /// large enough, and either already the job's or free on a node that takes new work.
    fn validate_target(&self, job: &Job, devices: &[DeviceRef]) -> Result<(), Rejection> {
        let world = job.spec.world_size;
        let count = devices.len();
        if count == 0 || count > world as usize || world % count as u32 != 0 {
            return Err(Rejection::invalid(
                "devices",
                format!(
                    "{count} device(s) for world size {world}: the count must divide the world size (all ranks placed, or none)"
                ),
            ));
        }
        let floor = job.spec.tier.min_devices(world);
        if (count as u32) < floor {
            return Err(Rejection::TierRule {
                problem: format!(
                    "{} of tier {} and world size {world} must keep at least {floor} device(s), got {count}",
                    job.id, job.spec.tier
                ),
            });
        }
        let mut sorted = devices.to_vec();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Rejection::invalid(
                "devices",
                format!("device {} is listed twice", pair[0]),
            ));
        }
        for &device in devices {
            let node = self
                .nodes
                .get(&device.node)
                .ok_or(Rejection::UnknownNodeId { node: device.node })?;
            let slot = node.devices.get(usize::from(device.index)).ok_or_else(|| {
                Rejection::DeviceUnavailable {
                    device,
                    problem: format!(
                        "node {} has only {} device(s)",
                        node.name,
                        node.devices.len()
                    ),
                }
            })?;
            let own = slot.holder == Some(job.id);
            match slot.holder {
                Some(other) if other != job.id => {
                    return Err(Rejection::DeviceUnavailable {
                        device,
                        problem: format!("it is held by {other}"),
                    })
                }
                _ => {}
            }
            if !own && node.status != NodeStatus::Up {
                return Err(Rejection::NodeState {
                    node: node.name.to_string(),
                    status: node.status,
                    problem: "nothing new is placed on it".into(),
                });
            }
            if own && !node.status.is_alive() {
                return Err(Rejection::NodeState {
                    node: node.name.to_string(),
                    status: node.status,
                    problem: "the job cannot keep devices there".into(),
                });
            }
            if !slot.health.is_healthy() {
                return Err(Rejection::DeviceUnavailable {
                    device,
                    problem: "it is unhealthy".into(),
                });
            }
            if slot.kind != job.spec.device_kind {
                return Err(Rejection::DeviceUnavailable {
                    device,
                    problem: format!(
                        "it is of kind {}, the job needs {}",
                        slot.kind, job.spec.device_kind
                    ),
                });
            }
            if slot.memory_bytes < job.spec.memory_per_rank_bytes {
                return Err(Rejection::DeviceUnavailable {
                    device,
                    problem: format!(
                        "it has {} bytes of memory, a rank needs {}",
                        slot.memory_bytes, job.spec.memory_per_rank_bytes
                    ),
                });
            }
        }
        Ok(())
    }

    /// Commits a validated action: holds its target devices, moves the job's phase, and records
    /// the action as in flight on every node it involves.
    fn commit_action(&mut self, planned: PlannedAction, now_ms: u64) -> ActionId {
        let id = ActionId(self.next_action_id);
        self.next_action_id += 1;
        let job_id = planned.job;
        let job = self.jobs.get_mut(&job_id).expect("validated");
        accrue(job, &mut self.sla, now_ms);
        let mut nodes: BTreeSet<NodeId> = BTreeSet::new();
        let holds_current = !matches!(planned.op, ActionOp::Place { .. } | ActionOp::Resume { .. });
        if holds_current {
            nodes.extend(job.assignment.iter().map(|d| d.node));
        }
        if let Some(target) = planned.op.target_devices() {
            nodes.extend(target.iter().map(|d| d.node));
            for device in target {
                let slot = &mut self.nodes.get_mut(&device.node).expect("validated").devices
                    [usize::from(device.index)];
                assert!(
                    slot.holder.is_none() || slot.holder == Some(job_id),
                    "validated device {device} is held by another job"
                );
                slot.holder = Some(job_id);
            }
        }
        job.phase = match &planned.op {
            ActionOp::Place { devices } | ActionOp::Resume { devices } => {
                job.assignment = devices.clone();
                JobPhase::Starting
            }
            ActionOp::Preempt { .. } => {
                job.preemptions += 1;
                self.counters.preemptions += 1;
                JobPhase::Preempting
            }
            ActionOp::Migrate { .. } => {
                self.counters.migrations += 1;
                JobPhase::Migrating
            }
            ActionOp::Resize { .. } => {
                self.counters.resizes += 1;
                JobPhase::Resizing
            }
            ActionOp::Stop => JobPhase::Stopping,
        };
        job.action = Some(id);
        job.last_reason = planned.reason.clone();
        let stages: BTreeMap<NodeId, Stage> =
            nodes.into_iter().map(|n| (n, Stage::Committed)).collect();
        self.actions.insert(
            id,
            Action {
                id,
                job: job_id,
                op: planned.op,
                reason: planned.reason,
                committed_at_ms: now_ms,
                nodes: stages,
                checkpoint: None,
            },
        );
        self.counters.actions_committed += 1;
        self.reindex_job(job_id);
        id
    }
}
