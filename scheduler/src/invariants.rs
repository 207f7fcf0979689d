//! `ClusterState::check_invariants`: the safety properties that must hold after every entry.
//!
//! - no device holds two jobs (ranks of one spliced job share a device through one holder), and
//!   every device a job holds points back at it;
//! - every rank of a job holding devices is on a healthy device of the job's kind, with enough
//!   memory for a rank, on a live node; the device count divides the world size;
//! - phases, in-flight actions and held devices agree;
//! - ledgers add up: delivered never exceeds requested, and per-tier totals equal the sum over
//!   jobs plus what was retired;
//! - counters of active jobs and tenants match the jobs;
//! - the derived node index (node to the jobs that matter to it) equals a full scan.
//!
//! It only reads the state. It is O(devices + jobs + actions): run after every apply in tests
//! and debug builds, and after decoding a snapshot.

use crate::ids::{DeviceRef, JobId};
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
