//! `ClusterState::check_invariants`: the safety properties that must hold after every entry.
//!
//! - no device holds two jobs (ranks of one spliced job share a device through one holder), and
//!   every device a job holds points back at it;
//! - every rank of a job holding devices is on a healthy device of the job's kind, with enough
//!   memory for a rank, on a live node; the device count divides the world size;
//! - phases, in-flight actions and held devices agree; a migrate or resize holds its job's old
//!   devices and its target until every node has checkpointed, and from then on only its target
//!   (the job's assignment is the target exactly when the action is past its checkpoint); an
//!   action involves only nodes where its job holds devices (so a node that goes down or is
//!   deregistered never leaves an action waiting for it);
//! - ledgers add up: delivered never exceeds requested, and per-tier totals equal the sum over
//!   jobs plus what was retired;
//! - counters of active jobs and tenants match the jobs;
//! - the derived node index (node to the jobs that matter to it) equals a full scan.
//!
//! It only reads the state. It is O(devices + jobs + actions): run after every apply in tests
//! and debug builds, and after decoding a snapshot.

use crate::action::{ActionOp, Stage};
use crate::ids::{DeviceRef, JobId, NodeId};
use crate::job::JobPhase;
use crate::ledger::TierLedger;
use crate::limits::MAX_FINISHED_JOBS_RETAINED;
use crate::names::TenantName;
use crate::state::ClusterState;
use std::collections::{BTreeMap, BTreeSet};

/// A broken invariant, described for a human.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvariantViolation(pub String);

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(InvariantViolation(format!($($fmt)+)));
        }
    };
}

impl ClusterState {
    /// Checks every invariant in this module's header.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.check_nodes()?;
        self.check_jobs_and_devices()?;
        self.check_actions()?;
        self.check_ledgers()?;
        self.check_counters()?;
        self.check_node_index()?;
        Ok(())
    }

    fn check_node_index(&self) -> Result<(), InvariantViolation> {
        let scanned = self.scanned_node_index();
        ensure!(
            self.node_index == scanned,
            "the node index differs from a scan of the jobs: {}",
            self.node_index.difference_from(&scanned)
        );
        Ok(())
    }

    fn check_nodes(&self) -> Result<(), InvariantViolation> {
        ensure!(
            self.node_names.len() == self.nodes.len(),
            "{} node names for {} nodes",
            self.node_names.len(),
            self.nodes.len()
        );
        for (name, id) in &self.node_names {
            let node = self.nodes.get(id);
            ensure!(
                node.is_some_and(|n| &n.name == name && n.id == *id),
                "node name {name} points at {id}, which does not carry it"
            );
        }
        if let Some((&last, _)) = self.nodes.last_key_value() {
            ensure!(
                last.0 < self.next_node_id,
                "{last} is not below the next node id"
            );
        }
        Ok(())
    }

    fn check_jobs_and_devices(&self) -> Result<(), InvariantViolation> {
        // Every held device points at a job that claims it.
        let mut claimed: BTreeMap<DeviceRef, JobId> = BTreeMap::new();
        for job in self.jobs.values() {
            let mut held: Vec<DeviceRef> = job.assignment.clone();
            if let Some(action) = job.action.and_then(|a| self.actions.get(&a)) {
                if let Some(target) = action.op.target_devices() {
                    held.extend(target.iter().filter(|d| !job.assignment.contains(d)));
                }
            }
            ensure!(
                job.phase.holds_devices() != held.is_empty(),
                "{} is {} but holds {} device(s)",
                job.id,
                job.phase,
                held.len()
            );
            let needs_action = matches!(
                job.phase,
                JobPhase::Starting
                    | JobPhase::Preempting
                    | JobPhase::Migrating
                    | JobPhase::Resizing
                    | JobPhase::Stopping
            );
            ensure!(
                needs_action == job.action.is_some(),
                "{} is {} with action {:?}",
                job.id,
                job.phase,
                job.action
            );
            if !job.assignment.is_empty() {
                let count = job.assignment.len() as u32;
                ensure!(
                    count <= job.spec.world_size && job.spec.world_size % count == 0,
                    "{} has {count} device(s) for world size {}",
                    job.id,
                    job.spec.world_size
                );
            }
            for device in held {
                if let Some(other) = claimed.insert(device, job.id) {
                    ensure!(
                        other == job.id,
                        "device {device} is given to {other} and {}",
                        job.id
                    );
                }
                let node = self.nodes.get(&device.node);
                ensure!(
                    node.is_some(),
                    "{} holds {device} on a node that does not exist",
                    job.id
                );
                let node = node.expect("checked");
                let slot = node.devices.get(usize::from(device.index));
                ensure!(
                    slot.is_some(),
                    "{} holds {device}, which does not exist",
                    job.id
                );
                let slot = slot.expect("checked");
                ensure!(
                    slot.holder == Some(job.id),
                    "{} holds {device}, but the device names {:?}",
                    job.id,
                    slot.holder
                );
                ensure!(
                    node.status.is_alive(),
                    "{} has ranks on {device} of node {}, which is {}",
                    job.id,
                    node.name,
                    node.status
                );
                ensure!(
                    slot.health.is_healthy(),
                    "{} has ranks on unhealthy {device}",
                    job.id
                );
                ensure!(
                    slot.kind == job.spec.device_kind,
                    "{} needs {} but holds {device} of kind {}",
                    job.id,
                    job.spec.device_kind,
                    slot.kind
                );
                ensure!(
                    slot.memory_bytes >= job.spec.memory_per_rank_bytes,
                    "{} needs {} bytes per rank; {device} has {}",
                    job.id,
                    job.spec.memory_per_rank_bytes,
                    slot.memory_bytes
                );
            }
            ensure!(
                job.id.0 < self.next_job_id,
                "{} is not below the next job id",
                job.id
            );
        }
        for node in self.nodes.values() {
            for (index, slot) in node.devices.iter().enumerate() {
                if let Some(holder) = slot.holder {
                    let device = DeviceRef::new(node.id, index as u16);
                    ensure!(
                        claimed.get(&device) == Some(&holder),
                        "{device} names {holder} as holder, but that job does not hold it"
                    );
                }
            }
        }
        Ok(())
    }

    fn check_actions(&self) -> Result<(), InvariantViolation> {
        for (id, action) in &self.actions {
            ensure!(action.id == *id, "{id} is stored as {}", action.id);
            ensure!(
                id.0 < self.next_action_id,
                "{id} is not below the next action id"
            );
            let job = self.jobs.get(&action.job);
            ensure!(
                job.is_some_and(|j| j.action == Some(*id)),
                "{id} is in flight for {}, which does not point back at it",
                action.job
            );
            ensure!(!action.nodes.is_empty(), "{id} involves no node");
            for node in action.nodes.keys() {
                ensure!(
                    self.nodes.contains_key(node),
                    "{id} involves unknown {node}"
                );
            }
            let Some(job) = job else { continue };
            let past_checkpoint = action.stage() >= Stage::Checkpointed;
            if let ActionOp::Migrate { to } | ActionOp::Resize { to, .. } = &action.op {
                ensure!(
                    past_checkpoint == (&job.assignment == to),
                    "{id} ({}) is {} but {} holds {} device(s) of its target of {}: the \
                         devices given up are released exactly when every node has checkpointed",
                    action.op.kind(),
                    action.stage(),
                    job.id,
                    job.assignment.iter().filter(|d| to.contains(d)).count(),
                    to.len()
                );
            }
            let mut held_nodes: BTreeSet<NodeId> = job.assignment.iter().map(|d| d.node).collect();
            if let Some(target) = action.op.target_devices() {
                held_nodes.extend(target.iter().map(|d| d.node));
            }
            for node in action.nodes.keys() {
                ensure!(
                    held_nodes.contains(node),
                    "{id} involves {node}, where {} holds no device",
                    job.id
                );
            }
        }
        Ok(())
    }

    fn check_ledgers(&self) -> Result<(), InvariantViolation> {
        let mut sums = [TierLedger::default(); 3];
        for job in self.jobs.values() {
            ensure!(
                job.ledger.delivered_device_ms <= job.ledger.requested_device_ms,
                "{} was delivered {} device-ms of {} requested",
                job.id,
                job.ledger.delivered_device_ms,
                job.ledger.requested_device_ms
            );
            ensure!(
                job.ledger.accrued_until_ms <= self.now_ms,
                "{} accrued until {} ms, after the state's time {} ms",
                job.id,
                job.ledger.accrued_until_ms,
                self.now_ms
            );
            let sum = &mut sums[job.spec.tier.index()];
            sum.requested_device_ms += job.ledger.requested_device_ms;
            sum.delivered_device_ms += job.ledger.delivered_device_ms;
        }
        ensure!(
            sums == self.sla.live,
            "per-tier ledgers {:?} do not match the sum over jobs {:?}",
            self.sla.live,
            sums
        );
        Ok(())
    }

    fn check_counters(&self) -> Result<(), InvariantViolation> {
        let mut tenants: BTreeMap<&TenantName, u64> = BTreeMap::new();
        let mut active = 0u64;
        for job in self.jobs.values().filter(|j| !j.phase.is_terminal()) {
            *tenants.entry(&job.spec.tenant).or_insert(0) += 1;
            active += 1;
        }
        ensure!(
            active == self.active_jobs,
            "{active} active jobs, counted {}",
            self.active_jobs
        );
        let counted: BTreeMap<&TenantName, u64> =
            self.tenants.iter().map(|(t, n)| (t, *n)).collect();
        ensure!(
            tenants == counted,
            "tenant counts {counted:?} differ from jobs {tenants:?}"
        );
        ensure!(
            self.finished.len() <= MAX_FINISHED_JOBS_RETAINED,
            "{} finished jobs retained",
            self.finished.len()
        );
        let finished: BTreeSet<JobId> = self.finished.iter().copied().collect();
        ensure!(
            finished.len() == self.finished.len(),
            "a finished job is listed twice"
        );
        for id in &finished {
            ensure!(
                self.jobs.get(id).is_some_and(|j| j.phase.is_terminal()),
                "{id} is listed as finished but is not"
            );
        }
        let terminal = self.jobs.values().filter(|j| j.phase.is_terminal()).count();
        ensure!(
            terminal == finished.len(),
            "{terminal} terminal jobs, {} listed as finished",
            finished.len()
        );
        ensure!(
            self.sessions.len() == self.session_lru.len(),
            "{} sessions, {} in the eviction order",
            self.sessions.len(),
            self.session_lru.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::ids::JobId;
    use crate::testkit::{devices_of, shrink_in_flight, Fleet, H100_MEMORY_BYTES};

    /// A job on 8 devices of one node with a shrink to the first 4 in flight, checked after
    /// every entry.
    fn shrinking() -> (Fleet, JobId, crate::ids::ActionId) {
        let (mut fleet, job, shrink, _) = shrink_in_flight();
        fleet.state.set_verify_invariants(true);
        (fleet, job, shrink)
    }

    #[test]
    fn a_move_must_release_what_it_gives_up_exactly_at_its_checkpoint() {
        // Released before every node checkpointed: the old ranks may still be on them.
        let (mut fleet, job, _) = shrinking();
        let state = &mut fleet.state;
        let kept = devices_of(crate::ids::NodeId(1), 0, 4);
        for d in devices_of(crate::ids::NodeId(1), 4, 4) {
            state.nodes.get_mut(&d.node).unwrap().devices[usize::from(d.index)].holder = None;
        }
        state.jobs.get_mut(&job).unwrap().assignment = kept;
        state.reindex_job(job);
        let early = state.check_invariants().unwrap_err().to_string();
        assert!(early.contains("released exactly when"), "{early}");

        // Still held after every node checkpointed: the devices would idle through the restore.
        let (mut fleet, job, shrink) = shrinking();
        fleet.checkpoint_action(shrink, 1);
        fleet
            .state
            .check_invariants()
            .expect("released at the checkpoint");
        let state = &mut fleet.state;
        for d in devices_of(crate::ids::NodeId(1), 4, 4) {
            state.nodes.get_mut(&d.node).unwrap().devices[usize::from(d.index)].holder = Some(job);
        }
        state.jobs.get_mut(&job).unwrap().assignment = devices_of(crate::ids::NodeId(1), 0, 8);
        state.reindex_job(job);
        let late = state.check_invariants().unwrap_err().to_string();
        assert!(late.contains("released exactly when"), "{late}");
    }

    #[test]
    fn an_action_may_not_involve_a_node_where_its_job_holds_nothing_before_its_checkpoint() {
        let (mut fleet, job, shrink) = shrinking();
        let other = fleet.add_nodes("spare", 1, 8, "h100", H100_MEMORY_BYTES, 1)[0];
        let state = &mut fleet.state;
        state
            .actions
            .get_mut(&shrink)
            .unwrap()
            .nodes
            .insert(other, crate::action::Stage::Committed);
        state.reindex_job(job);
        let text = state.check_invariants().unwrap_err().to_string();
        assert!(text.contains("holds no device"), "{text}");
    }
}
