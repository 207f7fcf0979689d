//! Apply code for job commands (submit, cancel, metadata compare-and-set, rank exits, ticks)
//! and the job transitions other handlers share: release devices, lose a job, finish a job.
//!
//! Every handler validates the whole command before it changes anything; the shared
//! transitions assume their caller has validated.

use crate::command::JobExit;
use crate::ids::{JobId, NodeId};
use crate::job::{validate_metadata_entry, Job, JobPhase, JobSpec, SlaLedger};
use crate::ledger::accrue;
use crate::limits::*;
use crate::outcome::{Effect, Rejection};
use crate::state::ClusterState;
use std::collections::{BTreeMap, BTreeSet};

impl ClusterState {
    fn known_job(&self, id: JobId) -> Result<&Job, Rejection> {
        self.jobs.get(&id).ok_or(Rejection::UnknownJob { job: id })
    }

    pub(crate) fn submit_job(
        &mut self,
        mut spec: JobSpec,
        now_ms: u64,
    ) -> Result<Effect, Rejection> {
        spec.validate()?;
        if self.active_jobs >= MAX_ACTIVE_JOBS as u64 {
            return Err(Rejection::limit("active jobs", MAX_ACTIVE_JOBS));
        }
        let tenant_jobs = self.tenants.get(&spec.tenant).copied().unwrap_or(0);
        if tenant_jobs >= MAX_ACTIVE_JOBS_PER_TENANT as u64 {
            return Err(Rejection::limit(
                "active jobs per tenant",
                MAX_ACTIVE_JOBS_PER_TENANT,
            ));
        }
        let id = JobId(self.next_job_id);
        self.next_job_id += 1;
        *self.tenants.entry(spec.tenant.clone()).or_insert(0) += 1;
        self.active_jobs += 1;
        let metadata = std::mem::take(&mut spec.metadata);
        let job = Job {
            id,
            spec,
            phase: JobPhase::Pending,
            version: 1,
            metadata,
            assignment: Vec::new(),
            action: None,
            checkpoint: None,
            ledger: SlaLedger {
                accrued_until_ms: now_ms,
                ..SlaLedger::default()
            },
            submitted_at_ms: now_ms,
            finished_at_ms: None,
            restarts: 0,
            preemptions: 0,
            cancel_requested: false,
            exited_nodes: BTreeSet::new(),
            last_reason: "submitted; waiting for devices".to_string(),
        };
        self.jobs.insert(id, job);
        Ok(Effect::JobSubmitted { job: id })
    }

    pub(crate) fn cancel_job(&mut self, id: JobId, now_ms: u64) -> Result<Effect, Rejection> {
        let job = self.known_job(id)?;
        if job.phase.is_terminal() {
            return Err(Rejection::WrongPhase {
                job: id,
                phase: job.phase,
                problem: "it has already finished".into(),
            });
        }
        if job.phase == JobPhase::Pending {
            self.finish_job(id, JobPhase::Cancelled, "cancelled by a client", now_ms);
            return Ok(Effect::JobCancelled {
                job: id,
                immediately: true,
            });
        }
        let job = self.jobs.get_mut(&id).expect("checked above");
        job.cancel_requested = true;
        job.last_reason = "cancelled by a client; stopping its ranks".to_string();
        Ok(Effect::JobCancelled {
            job: id,
            immediately: false,
        })
    }

    pub(crate) fn update_metadata(
        &mut self,
        id: JobId,
        expected_version: Option<u64>,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    ) -> Result<Effect, Rejection> {
        let job = self.known_job(id)?;
        if let Some(expected) = expected_version {
            if expected != job.version {
                return Err(Rejection::VersionMismatch {
                    job: id,
                    expected,
                    actual: job.version,
                });
            }
        }
        if set.is_empty() && remove.is_empty() {
            return Err(Rejection::invalid(
                "metadata",
                "the update sets and removes nothing",
            ));
        }
        if set.len() > MAX_METADATA_ENTRIES || remove.len() > MAX_METADATA_ENTRIES {
            return Err(Rejection::limit("metadata entries", MAX_METADATA_ENTRIES));
        }
        for (key, value) in &set {
            validate_metadata_entry(key, value)?;
        }
        for key in &remove {
            if set.contains_key(key) {
                return Err(Rejection::invalid(
                    "metadata",
                    format!("key {key:?} is both set and removed"),
                ));
            }
        }
        let after = job
            .metadata
            .keys()
            .filter(|k| !remove.contains(k))
            .chain(set.keys())
            .collect::<BTreeSet<_>>()
            .len();
        if after > MAX_METADATA_ENTRIES {
            return Err(Rejection::limit("metadata entries", MAX_METADATA_ENTRIES));
        }
        let job = self.jobs.get_mut(&id).expect("checked above");
        for key in &remove {
            job.metadata.remove(key);
        }
        job.metadata.extend(set);
        job.version += 1;
        Ok(Effect::MetadataUpdated {
            job: id,
            version: job.version,
        })
    }

    pub(crate) fn report_job_exit(
        &mut self,
        id: JobId,
        node: NodeId,
        exit: JobExit,
        now_ms: u64,
    ) -> Result<Effect, Rejection> {
        let job = self.known_job(id)?;
        if job.phase != JobPhase::Running {
            return Err(Rejection::WrongPhase {
                job: id,
                phase: job.phase,
                problem: "only a running job's ranks can exit".into(),
            });
        }
        if !job.assignment.iter().any(|d| d.node == node) {
            return Err(Rejection::invalid(
                "node",
                format!("{id} has no ranks on {node}"),
            ));
        }
        match exit {
            JobExit::Succeeded => {
                if job.exited_nodes.contains(&node) {
                    return Err(Rejection::invalid(
                        "node",
                        format!("{node} already reported that {id} exited"),
                    ));
                }
                let job = self.jobs.get_mut(&id).expect("checked above");
                job.exited_nodes.insert(node);
                if job.exited_nodes == job.nodes() {
                    self.finish_job(
                        id,
                        JobPhase::Succeeded,
                        "every rank exited successfully",
                        now_ms,
                    );
                }
            }
            JobExit::Failed { reason } => {
                if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
                    return Err(Rejection::invalid(
                        "reason",
                        format!("must say how the ranks failed, in 1 to {MAX_REASON_BYTES} bytes"),
                    ));
                }
                self.fail_run(id, &format!("ranks on {node} failed: {reason}"), now_ms);
            }
        }
        Ok(Effect::JobExitRecorded {
            job: id,
            job_phase: self.jobs.get(&id).map_or(JobPhase::Succeeded, |j| j.phase),
        })
    }

    pub(crate) fn tick(&mut self, now_ms: u64) -> Effect {
        let sla = &mut self.sla;
        for job in self.jobs.values_mut() {
            accrue(job, sla, now_ms);
        }
        Effect::Ticked { now_ms }
    }

    // ---- shared transitions (callers have validated) --------------------------------------

    /// Releases every device the job holds: its assignment and its in-flight action's target.
    pub(crate) fn release_devices(&mut self, id: JobId) {
        let job = self.jobs.get_mut(&id).expect("caller checked the job");
        let mut held = std::mem::take(&mut job.assignment);
        if let Some(action) = job.action.and_then(|a| self.actions.get(&a)) {
            if let Some(target) = action.op.target_devices() {
                held.extend_from_slice(target);
            }
        }
        for device in held {
            if let Some(node) = self.nodes.get_mut(&device.node) {
                if let Some(slot) = node.devices.get_mut(usize::from(device.index)) {
                    if slot.holder == Some(id) {
                        slot.holder = None;
                    }
                }
            }
        }
        self.reindex_job(id);
    }

    /// Drops the job's in-flight action, if any.
    pub(crate) fn drop_action(&mut self, id: JobId) {
        let job = self.jobs.get_mut(&id).expect("caller checked the job");
        if let Some(action) = job.action.take() {
            self.actions.remove(&action);
        }
        self.reindex_job(id);
    }

    /// The job's ranks are gone (node down, device unhealthy) through no fault of its own:
    /// release everything; it waits to resume from its last checkpoint (or stops if cancelled).
    pub(crate) fn lose_job(&mut self, id: JobId, reason: &str, now_ms: u64) {
        let job = self.jobs.get_mut(&id).expect("caller checked the job");
        accrue(job, &mut self.sla, now_ms);
        if job.cancel_requested {
            self.finish_job(id, JobPhase::Cancelled, reason, now_ms);
            return;
        }
        self.return_to_pending(
            id,
            format!("{reason}; waiting to resume from its last checkpoint"),
        );
    }

    /// Releases everything the job holds and drops its action; it waits to start again (from
    /// its checkpoint, if it has one).
    fn return_to_pending(&mut self, id: JobId, last_reason: String) {
        self.release_devices(id);
        self.drop_action(id);
        let job = self.jobs.get_mut(&id).expect("caller checked the job");
        job.phase = JobPhase::Pending;
        job.exited_nodes.clear();
        job.last_reason = last_reason;
    }

    /// The job's ranks failed (crash, failed action): restart it within its restart policy.
    pub(crate) fn fail_run(&mut self, id: JobId, reason: &str, now_ms: u64) {
        let job = self.jobs.get_mut(&id).expect("caller checked the job");
        accrue(job, &mut self.sla, now_ms);
        job.restarts += 1;
        if job.cancel_requested {
            self.finish_job(id, JobPhase::Cancelled, reason, now_ms);
        } else if job.restarts > job.spec.max_restarts {
            let limit = job.spec.max_restarts;
            self.finish_job(
                id,
                JobPhase::Failed,
                &format!("{reason}; gave up after {limit} restart(s)"),
                now_ms,
            );
        } else {
            let last_reason = format!(
                "{reason}; restart {} of {} pending",
                job.restarts, job.spec.max_restarts
            );
            self.return_to_pending(id, last_reason);
        }
    }

    /// Moves a job to a terminal phase, releases what it holds, and forgets the oldest
    /// finished jobs beyond `MAX_FINISHED_JOBS_RETAINED`.
    pub(crate) fn finish_job(&mut self, id: JobId, phase: JobPhase, reason: &str, now_ms: u64) {
        assert!(phase.is_terminal(), "finish_job needs a terminal phase");
        let job = self.jobs.get_mut(&id).expect("caller checked the job");
        assert!(!job.phase.is_terminal(), "{id} finished twice");
        accrue(job, &mut self.sla, now_ms);
        self.release_devices(id);
        self.drop_action(id);
        let job = self.jobs.get_mut(&id).expect("caller checked the job");
        job.phase = phase;
        job.finished_at_ms = Some(now_ms);
        job.last_reason = reason.to_string();
        let tenant = job.spec.tenant.clone();
        let count = self
            .tenants
            .get_mut(&tenant)
            .expect("active job has a tenant");
        *count -= 1;
        if *count == 0 {
            self.tenants.remove(&tenant);
        }
        self.active_jobs -= 1;
        self.finished.push_back(id);
        while self.finished.len() > MAX_FINISHED_JOBS_RETAINED {
            let oldest = self.finished.pop_front().expect("non-empty");
            if let Some(job) = self.jobs.remove(&oldest) {
                self.sla.retire(&job);
            }
            self.reindex_job(oldest);
        }
    }
}
