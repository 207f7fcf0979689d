//! Apply code for action progress reported by node agents. Each node of an action moves
//! forward through `Stage`s; the action moves when all of its nodes have. A failure on any node
//! ends the action at once and sends the job back to wait, within its restart policy.
//!
//! When a migrate or resize reaches `Checkpointed` on every node, the job's old ranks are
//! stopped everywhere and its state is saved, so the devices it gives up (old devices not in
//! the target) are released at once and the job's assignment becomes the target; only the
//! target stays held until the restore completes, and the nodes left with none of the target
//! have done their part and leave the action. A failure after that point releases the target
//! and sends the job back to wait with the checkpoint just taken; the given-up devices were
//! already free (and may hold another job by then). The release before this rule freed them
//! only at completion: a snapshot it wrote is brought up to this rule when loaded
//! (`release_given_up_of_checkpointed_moves`), but replicas of the two releases would apply the
//! same log differently, so every replica of a cluster must run the same release.
//!
//! Reports that do not move anything forward (repeats after an agent restart, reports for a
//! finished action) are rejected with a named reason and change nothing, so agents may retry.

use crate::action::{ActionOp, Progress, Stage};
use crate::ids::{ActionId, DeviceRef, NodeId};
use crate::job::JobPhase;
use crate::ledger::accrue;
use crate::limits::{MAX_CHECKPOINT_REF_BYTES, MAX_REASON_BYTES};
use crate::outcome::{Effect, Rejection};
use crate::state::ClusterState;
use std::collections::BTreeSet;

impl ClusterState {
    pub(crate) fn report_progress(
        &mut self,
        id: ActionId,
        node: NodeId,
        progress: Progress,
        now_ms: u64,
    ) -> Result<Effect, Rejection> {
        let action = self
            .actions
            .get(&id)
            .ok_or(Rejection::UnknownAction { action: id })?;
        let &current = action
            .nodes
            .get(&node)
            .ok_or(Rejection::NodeNotInvolved { action: id, node })?;
        let checkpoints = matches!(
            action.op,
            ActionOp::Preempt { .. } | ActionOp::Migrate { .. } | ActionOp::Resize { .. }
        );
        let out_of_order = |problem: String| Rejection::ProgressOutOfOrder {
            action: id,
            node,
            problem,
        };
        let next = match &progress {
            Progress::Started => Stage::Started,
            Progress::Checkpointed { checkpoint } => {
                if !checkpoints {
                    return Err(out_of_order(format!(
                        "a {} action takes no checkpoint",
                        action.op.kind()
                    )));
                }
                if checkpoint.location.trim().is_empty()
                    || checkpoint.location.len() > MAX_CHECKPOINT_REF_BYTES
                {
                    return Err(Rejection::invalid(
                        "checkpoint.location",
                        format!("must be 1 to {MAX_CHECKPOINT_REF_BYTES} bytes"),
                    ));
                }
                if let Some(agreed) = &action.checkpoint {
                    if agreed != checkpoint {
                        return Err(out_of_order(format!(
                            "reports step {} at {}, but the cut is step {} at {}",
                            checkpoint.step, checkpoint.location, agreed.step, agreed.location
                        )));
                    }
                }
                Stage::Checkpointed
            }
            Progress::Completed => {
                if checkpoints && current < Stage::Checkpointed {
                    return Err(out_of_order(
                        "completed before its checkpoint was reported".to_string(),
                    ));
                }
                Stage::Completed
            }
            Progress::Failed { reason } => {
                if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
                    return Err(Rejection::invalid(
                        "reason",
                        format!("must say why the action failed, in 1 to {MAX_REASON_BYTES} bytes"),
                    ));
                }
                if current == Stage::Completed {
                    return Err(out_of_order("it already completed there".to_string()));
                }
                let job = action.job;
                let what = action.op.kind();
                self.counters.actions_failed += 1;
                self.fail_run(job, &format!("{what} failed on {node}: {reason}"), now_ms);
                return Ok(Effect::ProgressRecorded {
                    action: id,
                    job,
                    finished: true,
                    job_phase: self.jobs[&job].phase,
                });
            }
        };
        if next <= current {
            return Err(out_of_order(format!("it is already {current}")));
        }
        let action = self.actions.get_mut(&id).expect("checked above");
        let stage_before = action.stage();
        action.nodes.insert(node, next);
        if let Progress::Checkpointed { checkpoint } = progress {
            action.checkpoint.get_or_insert(checkpoint);
        }
        let stage = action.stage();
        let job_id = action.job;
        if stage >= Stage::Checkpointed && checkpoints {
            let cut = action.checkpoint.clone();
            let job = self
                .jobs
                .get_mut(&job_id)
                .expect("in-flight action's job exists");
            job.checkpoint = cut;
        }
        // Moves with a target release what they give up the moment every node has checkpointed
        // (a node cannot complete before its own checkpoint, so the action's stage always
        // passes through `Checkpointed` on its own report).
        let released = if stage_before < Stage::Checkpointed && stage >= Stage::Checkpointed {
            self.release_given_up(id)
        } else {
            None
        };
        let finished = stage == Stage::Completed;
        if finished {
            self.complete_action(id, now_ms);
        }
        let job_phase = self.jobs[&job_id].phase;
        Ok(match released {
            Some(released) if !finished => Effect::ActionCheckpointed {
                action: id,
                job: job_id,
                released,
                job_phase,
            },
            _ => Effect::ProgressRecorded {
                action: id,
                job: job_id,
                finished,
                job_phase,
            },
        })
    }

    /// A migrate or resize reached `Checkpointed` on every node: its old ranks are stopped and
    /// saved, so the job now holds only its target (`to`), the old devices not in it are freed,
    /// and the nodes with none of the target leave the action (their part, stopping and saving
    /// the old ranks, is done; only the target's nodes restore and report completion). Returns
    /// the freed devices in the old rank order; `None` for actions without a target to move to
    /// (preempt frees its devices only when it completes, as before).
    fn release_given_up(&mut self, id: ActionId) -> Option<Vec<DeviceRef>> {
        let action = self.actions.get(&id).expect("caller checked the action");
        let (ActionOp::Migrate { to } | ActionOp::Resize { to, .. }) = &action.op else {
            return None;
        };
        let to = to.clone();
        let job_id = action.job;
        let target_nodes: BTreeSet<NodeId> = to.iter().map(|d| d.node).collect();
        self.actions
            .get_mut(&id)
            .expect("caller checked the action")
            .nodes
            .retain(|node, _| target_nodes.contains(node));
        let job = self
            .jobs
            .get_mut(&job_id)
            .expect("in-flight action's job exists");
        // Not running, so its ledger accrues no delivered time on either assignment: no accrual
        // is needed before the assignment changes.
        debug_assert!(matches!(
            job.phase,
            JobPhase::Migrating | JobPhase::Resizing
        ));
        let keep: BTreeSet<DeviceRef> = to.iter().copied().collect();
        let old = std::mem::replace(&mut job.assignment, to);
        let released: Vec<DeviceRef> = old.into_iter().filter(|d| !keep.contains(d)).collect();
        for device in &released {
            let slot = &mut self
                .nodes
                .get_mut(&device.node)
                .expect("held devices' nodes exist")
                .devices[usize::from(device.index)];
            assert_eq!(
                slot.holder,
                Some(job_id),
                "released a device it did not hold"
            );
            slot.holder = None;
        }
        self.reindex_job(job_id);
        Some(released)
    }

    /// Brings a state written by a release that freed a move's given-up devices only at its
    /// completion up to today's rule: every migrate or resize already `Checkpointed` on all of
    /// its nodes whose job still holds its old devices releases them now, exactly as
    /// `report_progress` would have at its checkpoint. Used on decoding a snapshot (durability
    /// comes from snapshots, so a replica restarted on a new binary loads one); a no-op for
    /// states written by this release. In action-id order. Returns how many moves it upgraded.
    pub(crate) fn release_given_up_of_checkpointed_moves(&mut self) -> usize {
        let stale: Vec<ActionId> = self
            .actions
            .iter()
            .filter(|(_, action)| action.stage() >= Stage::Checkpointed)
            .filter(|(_, action)| match &action.op {
                ActionOp::Migrate { to } | ActionOp::Resize { to, .. } => self
                    .jobs
                    .get(&action.job)
                    .is_some_and(|job| &job.assignment != to),
                _ => false,
            })
            .map(|(&id, _)| id)
            .collect();
        for &id in &stale {
            self.release_given_up(id);
        }
        stale.len()
    }

    /// Every node completed the action: the job takes its new shape.
    fn complete_action(&mut self, id: ActionId, now_ms: u64) {
        let action = self.actions.remove(&id).expect("caller checked the action");
        self.counters.actions_completed += 1;
        let job_id = action.job;
        let job = self
            .jobs
            .get_mut(&job_id)
            .expect("in-flight action's job exists");
        accrue(job, &mut self.sla, now_ms);
        job.action = None;
        match action.op {
            ActionOp::Place { .. } | ActionOp::Resume { .. } => {
                job.phase = JobPhase::Running;
                job.exited_nodes.clear();
            }
            ActionOp::Preempt { .. } => {
                if job.cancel_requested {
                    self.finish_job(job_id, JobPhase::Cancelled, "cancelled by a client", now_ms);
                } else {
                    self.release_devices(job_id);
                    let job = self.jobs.get_mut(&job_id).expect("exists");
                    job.phase = JobPhase::Pending;
                    job.last_reason =
                        format!("{}; waiting to resume from its checkpoint", action.reason);
                }
            }
            ActionOp::Migrate { to } | ActionOp::Resize { to, .. } => {
                // The given-up devices were released at the checkpoint (`release_given_up`).
                assert_eq!(
                    job.assignment, to,
                    "a move completes only after its checkpoint moved the job to its target"
                );
                job.phase = JobPhase::Running;
                job.exited_nodes.clear();
            }
            ActionOp::Stop => {
                self.finish_job(job_id, JobPhase::Cancelled, "cancelled by a client", now_ms);
            }
        }
        self.reindex_job(job_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{devices_of, shrink_in_flight};
    use crate::CheckpointRef;

    /// A snapshot of the previous release: a shrink checkpointed on its node while the job still
    /// holds all eight devices (that release freed the upper half only at completion).
    #[test]
    fn a_snapshot_with_a_checkpointed_move_still_holding_its_old_devices_loads_upgraded() {
        let (mut fleet, job, shrink, node) = shrink_in_flight();
        let action = fleet.state.actions.get_mut(&shrink).unwrap();
        action.nodes.insert(node, Stage::Checkpointed);
        action.checkpoint = Some(CheckpointRef {
            location: "/checkpoints/job-1".into(),
            step: 7,
        });
        assert!(
            fleet.state.check_invariants().is_err(),
            "today's invariants refuse the old shape as it is"
        );
        let old_bytes = fleet.state.encode_snapshot().unwrap();

        let loaded = ClusterState::decode_snapshot(&old_bytes).unwrap();
        assert_eq!(loaded.job(job).unwrap().assignment, devices_of(node, 0, 4));
        let free: Vec<u16> = loaded.nodes[&node]
            .devices
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.holder.is_none())
            .map(|(index, _)| index as u16)
            .collect();
        assert_eq!(free, [4, 5, 6, 7]);
        // Loading it again changes nothing more, and the action completes as today's would.
        let mut again = loaded.clone();
        assert_eq!(again.release_given_up_of_checkpointed_moves(), 0);
        assert_eq!(again, loaded);
        let now_ms = again.now_ms();
        let effect = again
            .report_progress(shrink, node, Progress::Completed, now_ms)
            .unwrap();
        assert!(matches!(
            effect,
            Effect::ProgressRecorded { finished: true, .. }
        ));
        assert_eq!(again.job(job).unwrap().phase, JobPhase::Running);
        again.check_invariants().unwrap();
    }
}
