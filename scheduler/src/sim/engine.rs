//! The discrete-event engine: replays a trace on a simulated clock through a `Policy` and the
//! real `ClusterState::apply`, and plays the node agents (reports Started, Checkpointed and
//! Completed after the cost model's delay; reports each job's exit when its work is done).
//!
//! Events, in time order (ties: agent events, then submissions, then the tick): a submission
//! (evaluated as `JobSubmitted`), an action's checkpoint (evaluated as apply's effect asks,
//! through `evaluations_for` as the leader does: `ActionCheckpointed` when a migrate or resize
//! freed the devices it gives up) and its completion (`ActionFinished`), a job's
//! exit (evaluated as `Tick`: the evaluation set has no exit event, and the exit frees devices),
//! and a periodic `Tick` every `tick_ms` while jobs are active. Each plan is applied as one
//! entry. As the leader's scheduling loop does, a full plan (as many actions as the policy
//! allows) that committed actions is followed at once, at the same simulated instant, by
//! another plan for the same evaluation, while each is (`follows_up`), at most
//! `MAX_FOLLOW_UP_PLANS` times in a row: a burst larger than one plan is placed by follow-up
//! plans, not at the next event. No policy logic lives here, and nothing here reads a clock
//! (planner latency comes from the injected `Stopwatch`), draws random numbers or does I/O.

use super::config::{SimConfig, SimError, MAX_IDLE_TICKS};
use super::metrics::JobRecord;
use super::stopwatch::Stopwatch;
use super::trace::TraceJob;
use super::work::SimJob;
use crate::action::{ActionOp, Progress, Stage};
use crate::command::{Command, Entry, JobExit};
use crate::evaluations::evaluations_for;
use crate::ids::{ActionId, JobId};
use crate::job::{CheckpointRef, JobPhase, JobSpec, RunSpec};
use crate::limits::DEFAULT_MAX_RESTARTS;
use crate::names::{DeviceKind, LocalityDomain, NodeName, TenantName};
use crate::node::{DeviceHealth, DeviceSpec};
use crate::outcome::{Effect, Outcome, Rejection};
use crate::planner::{follows_up, Evaluation, Policy, MAX_FOLLOW_UP_PLANS};
use crate::state::ClusterState;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Metadata key holding the user's runtime estimate (the trace duration), in seconds.
pub const RUNTIME_ESTIMATE_KEY: &str = "sim.runtime_estimate_s";
/// Metadata key holding the job's trace line.
pub const TRACE_LINE_KEY: &str = "sim.trace_line";
/// Rejection messages kept for the report.
const MAX_REJECTIONS_KEPT: usize = 5;
/// Tenant of every trace job (the traces have no user column).
const TENANT: &str = "itp";

/// An agent or job event at a simulated time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Checkpointed(ActionId),
    ActionDone(ActionId),
    JobDone { job: JobId, generation: u64 },
}

/// Where a run is, for progress bars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimProgress {
    pub now_ms: u64,
    pub jobs_total: u64,
    pub jobs_submitted: u64,
    pub jobs_finished: u64,
    pub events: u64,
}

/// What one `step` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    Advanced,
    /// Every job finished; `step` does nothing more.
    Done,
}

/// A simulation in progress.
pub struct Simulator {
    pub(super) config: SimConfig,
    pub(super) trace: Vec<TraceJob>,
    pub(super) policy: Box<dyn Policy>,
    stopwatch: Box<dyn Stopwatch>,
    pub(super) state: ClusterState,
    pub(super) now_ms: u64,
    applied: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    sequence: u64,
    next_submission: usize,
    next_tick_ms: u64,
    idle_ticks: u32,
    pub(super) jobs: BTreeMap<JobId, SimJob>,
    pub(super) records: Vec<JobRecord>,
    pub(super) latencies_ns: Vec<u64>,
    pub(super) counts: super::metrics::Counts,
    pub(super) rejections: Vec<String>,
    pub(super) events: u64,
    busy_devices: u64,
    pub(super) busy_device_ms: u128,
    pub(super) window_busy_device_ms: u128,
}

impl Simulator {
    /// Builds the fleet (registering every node through apply) and readies the trace.
    pub fn new(
        config: SimConfig,
        trace: Vec<TraceJob>,
        policy: Box<dyn Policy>,
        stopwatch: Box<dyn Stopwatch>,
    ) -> Result<Simulator, SimError> {
        config.validate()?;
        if let Some(job) = trace.iter().find(|j| j.num_gpu > config.devices) {
            return Err(SimError::JobTooLarge {
                line: job.line,
                id: job.id.clone(),
                num_gpu: job.num_gpu,
                devices: config.devices,
            });
        }
        let first_ms = trace.first().map_or(0, |j| j.submission_s * 1000);
        let mut sim = Simulator {
            state: ClusterState::new(),
            now_ms: first_ms,
            applied: 0,
            queue: BinaryHeap::new(),
            sequence: 0,
            next_submission: 0,
            next_tick_ms: first_ms + config.tick_ms,
            idle_ticks: 0,
            jobs: BTreeMap::new(),
            records: Vec::with_capacity(trace.len()),
            latencies_ns: Vec::new(),
            counts: Default::default(),
            rejections: Vec::new(),
            events: 0,
            busy_devices: 0,
            busy_device_ms: 0,
            window_busy_device_ms: 0,
            config,
            trace,
            policy,
            stopwatch,
        };
        sim.state.set_verify_invariants(false);
        sim.register_fleet()?;
        Ok(sim)
    }

    /// Checks every invariant of the state after every entry (slow; for tests and small runs).
    pub fn set_verify_invariants(&mut self, on: bool) {
        self.state.set_verify_invariants(on);
    }

    /// The replicated state as the simulation left it.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The jobs finished so far, in the order they finished.
    pub fn records(&self) -> &[JobRecord] {
        &self.records
    }

    /// The (sorted) trace being replayed.
    pub fn trace(&self) -> &[TraceJob] {
        &self.trace
    }

    pub fn progress(&self) -> SimProgress {
        SimProgress {
            now_ms: self.now_ms,
            jobs_total: self.trace.len() as u64,
            jobs_submitted: self.next_submission as u64,
            jobs_finished: self.records.len() as u64,
            events: self.events,
        }
    }

    fn register_fleet(&mut self) -> Result<(), SimError> {
        let kind = DeviceKind::new(self.config.device_kind.clone())
            .map_err(|r| refused("the device kind", r))?;
        let nodes = self.config.devices / self.config.devices_per_node;
        for n in 0..nodes {
            let devices = (0..self.config.devices_per_node)
                .map(|_| DeviceSpec {
                    kind: kind.clone(),
                    memory_bytes: self.config.device_memory_bytes,
                    uuid: String::new(),
                    health: DeviceHealth::Healthy,
                })
                .collect();
            let name = NodeName::new(format!("sim-{n}")).map_err(|r| refused("a node name", r))?;
            let domain = LocalityDomain::new(format!("sim-d{}", n / self.config.nodes_per_domain))
                .map_err(|r| refused("a domain name", r))?;
            let outcome = self.apply(Command::RegisterNode {
                name,
                domain,
                devices,
            });
            if let Outcome::Rejected(reason) = outcome {
                return Err(refused(&format!("registering node sim-{n}"), reason));
            }
        }
        Ok(())
    }

    fn apply(&mut self, command: Command) -> Outcome {
        self.applied += 1;
        self.state.apply(Entry::system(self.now_ms, command))
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((at_ms, self.sequence, event)));
    }

    fn active_jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Processes the next event. Returns `Done` once every job has finished.
    pub fn step(&mut self) -> Result<StepStatus, SimError> {
        // Done when every job has finished; events still queued are stale (a finish scheduled
        // for a running segment that an action ended) and must not move the clock.
        if self.jobs.is_empty() && self.next_submission == self.trace.len() {
            return Ok(StepStatus::Done);
        }
        let next_event = self.queue.peek().map(|Reverse((at, _, _))| *at);
        let next_submission = self
            .trace
            .get(self.next_submission)
            .map(|j| j.submission_s * 1000);
        let next_tick = (self.active_jobs() > 0).then_some(self.next_tick_ms);
        let Some(at_ms) = [next_event, next_submission, next_tick]
            .into_iter()
            .flatten()
            .min()
        else {
            return Ok(StepStatus::Done);
        };
        if self.events >= self.config.max_events {
            return Err(SimError::EventLimit {
                max_events: self.config.max_events,
            });
        }
        self.events += 1;
        self.advance_to(at_ms);
        if next_event == Some(at_ms) {
            let Some(Reverse((_, _, event))) = self.queue.pop() else {
                return Ok(StepStatus::Advanced);
            };
            match event {
                Event::Checkpointed(action) => self.agent_checkpointed(action),
                Event::ActionDone(action) => self.agent_completed(action),
                Event::JobDone { job, generation } => self.job_done(job, generation),
            }
        } else if next_submission == Some(at_ms) {
            self.submit()?;
        } else {
            self.tick()?;
        }
        Ok(StepStatus::Advanced)
    }

    /// Runs to the end, calling `on_progress` every `every_events` events and once at the end.
    pub fn run(
        &mut self,
        every_events: u64,
        on_progress: &mut dyn FnMut(&SimProgress),
    ) -> Result<(), SimError> {
        loop {
            if self.step()? == StepStatus::Done {
                on_progress(&self.progress());
                return Ok(());
            }
            if every_events > 0 && self.events % every_events == 0 {
                on_progress(&self.progress());
            }
        }
    }

    fn advance_to(&mut self, at_ms: u64) {
        let from = self.now_ms;
        if at_ms <= from {
            return;
        }
        let busy = u128::from(self.busy_devices);
        self.busy_device_ms += busy * u128::from(at_ms - from);
        let (window_start, window_end) = self.window_ms();
        let overlap = at_ms.min(window_end).saturating_sub(from.max(window_start));
        self.window_busy_device_ms += busy * u128::from(overlap);
        self.now_ms = at_ms;
    }

    /// First to last submission, in milliseconds.
    pub(super) fn window_ms(&self) -> (u64, u64) {
        let first = self.trace.first().map_or(0, |j| j.submission_s * 1000);
        let last = self.trace.last().map_or(0, |j| j.submission_s * 1000);
        (first, last)
    }

    fn submit(&mut self) -> Result<(), SimError> {
        let index = self.next_submission;
        self.next_submission += 1;
        let trace_job = &self.trace[index];
        let tier = self.config.tier_mix.assign(self.config.seed, &trace_job.id);
        let spec = job_spec(trace_job, tier, &self.config)?;
        let (line, world, duration_ms) = (
            trace_job.line,
            trace_job.num_gpu,
            trace_job.duration_s * 1000,
        );
        let job = match self.apply(Command::SubmitJob { spec }) {
            Outcome::Accepted(Effect::JobSubmitted { job }) => job,
            other => {
                let reason = other
                    .rejection()
                    .map_or_else(|| format!("{other:?}"), ToString::to_string);
                return Err(SimError::Refused {
                    what: format!("the job on trace line {line}"),
                    reason,
                });
            }
        };
        self.jobs.insert(
            job,
            SimJob::new(index, tier, world, duration_ms, self.now_ms),
        );
        if self.next_tick_ms <= self.now_ms {
            self.next_tick_ms = self.now_ms + self.config.tick_ms;
        }
        self.evaluate(Evaluation::JobSubmitted(job));
        Ok(())
    }

    fn tick(&mut self) -> Result<(), SimError> {
        self.next_tick_ms = self.now_ms + self.config.tick_ms;
        self.apply(Command::Tick);
        let committed = self.evaluate(Evaluation::Tick);
        let quiet = self.queue.is_empty() && self.next_submission == self.trace.len();
        if quiet && committed == 0 {
            self.idle_ticks += 1;
            if self.idle_ticks >= MAX_IDLE_TICKS {
                return Err(SimError::Stalled {
                    waiting_jobs: self.jobs.len() as u64,
                    now_ms: self.now_ms,
                });
            }
        } else {
            self.idle_ticks = 0;
        }
        Ok(())
    }

    /// Plans for `evaluation` and applies the plan; after a full plan that committed actions
    /// (`follows_up`), plans again for the same evaluation at the same instant (a follow-up
    /// plan, as the leader's loop runs), until a plan is not full or commits nothing, or
    /// `MAX_FOLLOW_UP_PLANS` follow-ups ran in a row. Returns the actions all of them committed.
    fn evaluate(&mut self, evaluation: Evaluation) -> usize {
        self.counts.evaluations += 1;
        let action_limit = self.policy.action_limit();
        let (mut planned, mut committed) = self.plan_and_apply(&evaluation);
        let mut committed_total = committed;
        let mut follow_ups: u32 = 0;
        while follows_up(planned, committed, action_limit) {
            if follow_ups == MAX_FOLLOW_UP_PLANS {
                // The policy still had work: it waits for the next event, as on the leader.
                self.counts.follow_up_limits_reached += 1;
                break;
            }
            follow_ups += 1;
            self.counts.follow_up_plans += 1;
            (planned, committed) = self.plan_and_apply(&evaluation);
            if planned > 0 {
                self.counts.follow_up_plans_with_actions += 1;
            }
            committed_total += committed;
        }
        committed_total
    }

    /// Asks the policy for one plan and applies it; returns the numbers of actions planned and
    /// committed.
    fn plan_and_apply(&mut self, evaluation: &Evaluation) -> (usize, usize) {
        let started_ns = self.stopwatch.now_ns();
        let plan = self
            .policy
            .plan(&self.state, evaluation, self.now_ms, self.applied);
        let ended_ns = self.stopwatch.now_ns();
        self.latencies_ns.push(ended_ns.saturating_sub(started_ns));
        if plan.actions.is_empty() {
            return (0, 0);
        }
        self.counts.plans_proposed += 1;
        let planned = plan.actions.len();
        match self.apply(Command::ApplyPlan { plan }) {
            Outcome::Accepted(Effect::PlanApplied {
                committed,
                rejected,
            }) => {
                self.counts.actions_rejected += rejected.len() as u64;
                for r in &rejected {
                    self.keep_rejection(&r.reason);
                }
                for c in &committed {
                    self.on_commit(c.action);
                }
                (planned, committed.len())
            }
            other => {
                self.counts.plans_rejected += 1;
                self.counts.actions_rejected += planned as u64;
                if let Some(reason) = other.rejection() {
                    let reason = reason.clone();
                    self.keep_rejection(&reason);
                }
                (planned, 0)
            }
        }
    }

    fn keep_rejection(&mut self, reason: &Rejection) {
        if self.rejections.len() < MAX_REJECTIONS_KEPT {
            self.rejections
                .push(format!("at {} s: {reason}", self.now_ms / 1000));
        }
    }

    /// An action committed: stop the job's progress if it ran, and schedule the agent reports.
    fn on_commit(&mut self, id: ActionId) {
        self.counts.actions_committed += 1;
        let Some(action) = self.state.action(id) else {
            return;
        };
        let (job_id, op) = (action.job, action.op.clone());
        let held = self.state.job(job_id).map_or(0, |j| j.assignment.len());
        let now = self.now_ms;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let stopped = job.stop(now);
        self.busy_devices -= u64::from(stopped);
        match op {
            ActionOp::Place { .. } | ActionOp::Resume { .. } => job.unwait(now),
            ActionOp::Preempt { .. } => self.counts.preemptions += 1,
            ActionOp::Migrate { .. } => self.counts.migrations += 1,
            ActionOp::Resize { .. } => self.counts.resizes += 1,
            ActionOp::Stop => {}
        }
        let timing = self.config.cost.timing(&op, job.world_size, held);
        if timing.checkpoint_ms > 0 {
            self.schedule(now + timing.checkpoint_ms, Event::Checkpointed(id));
        }
        self.schedule(now + timing.complete_ms, Event::ActionDone(id));
    }

    /// Applies one agent report; returns the evaluations its outcome calls for.
    fn agent_report(
        &mut self,
        action: ActionId,
        node: crate::ids::NodeId,
        progress: Progress,
    ) -> Vec<Evaluation> {
        let outcome = self.apply(Command::ReportActionProgress {
            action,
            node,
            progress,
        });
        if !outcome.is_accepted() {
            self.counts.agent_reports_rejected += 1;
            if let Some(reason) = outcome.rejection() {
                let reason = reason.clone();
                self.keep_rejection(&reason);
            }
        }
        evaluations_for(&outcome)
    }

    /// Every node of a checkpointing action reports Started, then the agreed checkpoint. A
    /// migrate or resize frees the devices it gives up with the last report; the evaluation
    /// that calls for is planned at once, as the leader's loop would.
    fn agent_checkpointed(&mut self, id: ActionId) {
        let Some(action) = self.state.action(id) else {
            return;
        };
        let job_id = action.job;
        let nodes: Vec<_> = action.nodes.iter().map(|(&n, &s)| (n, s)).collect();
        let step = self.jobs.get(&job_id).map_or(0, |job| {
            job.done_ms(self.trace[job.trace_index].duration_s * 1000) / 1000
        });
        let checkpoint = CheckpointRef {
            location: format!("sim://checkpoints/job-{}", job_id.0),
            step,
        };
        let mut evaluations = Vec::new();
        for (node, stage) in nodes {
            if stage < Stage::Started {
                self.agent_report(id, node, Progress::Started);
            }
            if stage < Stage::Checkpointed {
                evaluations.extend(self.agent_report(
                    id,
                    node,
                    Progress::Checkpointed {
                        checkpoint: checkpoint.clone(),
                    },
                ));
            }
        }
        for evaluation in evaluations {
            self.evaluate(evaluation);
        }
    }

    /// Every node reports Completed (and Started first where it has not yet).
    fn agent_completed(&mut self, id: ActionId) {
        let Some(action) = self.state.action(id) else {
            return;
        };
        let job_id = action.job;
        let nodes: Vec<_> = action.nodes.iter().map(|(&n, &s)| (n, s)).collect();
        for &(node, stage) in &nodes {
            if stage < Stage::Started {
                self.agent_report(id, node, Progress::Started);
            }
        }
        for &(node, _) in &nodes {
            self.agent_report(id, node, Progress::Completed);
        }
        let now = self.now_ms;
        let cost = self.config.cost;
        let mut finish = None;
        if let (Some(state_job), Some(job)) = (self.state.job(job_id), self.jobs.get_mut(&job_id)) {
            match state_job.phase {
                JobPhase::Running => {
                    let devices = state_job.assignment.len() as u32;
                    let rate = cost.rate_ppm(job.world_size, devices as usize);
                    let done_at = job.start(now, devices, rate);
                    self.busy_devices += u64::from(devices);
                    finish = Some((done_at, job.generation));
                }
                JobPhase::Pending => job.wait(now),
                _ => {}
            }
        }
        if let Some((done_at, generation)) = finish {
            self.schedule(
                done_at,
                Event::JobDone {
                    job: job_id,
                    generation,
                },
            );
        }
        self.evaluate(Evaluation::ActionFinished {
            action: id,
            job: job_id,
        });
    }

    /// The job's work is done: every node reports its ranks exited successfully.
    fn job_done(&mut self, job_id: JobId, generation: u64) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        if job.generation != generation {
            return;
        }
        let nodes = match self.state.job(job_id) {
            Some(j) if j.phase == JobPhase::Running => j.nodes(),
            _ => return,
        };
        for node in nodes {
            let outcome = self.apply(Command::ReportJobExit {
                job: job_id,
                node,
                exit: JobExit::Succeeded,
            });
            if !outcome.is_accepted() {
                self.counts.agent_reports_rejected += 1;
            }
        }
        let finished = self
            .state
            .job(job_id)
            .filter(|j| j.phase.is_terminal())
            .cloned();
        let Some(finished) = finished else {
            return;
        };
        let now = self.now_ms;
        if let Some(mut job) = self.jobs.remove(&job_id) {
            let devices = job.stop(now);
            self.busy_devices -= u64::from(devices);
            self.records.push(JobRecord {
                trace_index: job.trace_index,
                tier: job.tier,
                completion_ms: now.saturating_sub(job.submitted_ms),
                queueing_ms: job.queueing_ms,
                attainment_ppm: finished.ledger.attainment_ppm(),
                delivered_device_ms: finished.ledger.delivered_device_ms,
                preemptions: finished.preemptions,
            });
        }
        self.evaluate(Evaluation::Tick);
    }
}

fn refused(what: &str, reason: Rejection) -> SimError {
    SimError::Refused {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// The job spec of a trace job: one rank per GPU it used, 1 GiB per rank, the trace duration as
/// the user's runtime estimate in metadata (backfill reads it; Singularity's policy may too).
fn job_spec(
    trace_job: &TraceJob,
    tier: crate::tier::Tier,
    config: &SimConfig,
) -> Result<JobSpec, SimError> {
    let tenant = TenantName::new(TENANT).map_err(|r| refused("the tenant name", r))?;
    let device_kind =
        DeviceKind::new(config.device_kind.clone()).map_err(|r| refused("the device kind", r))?;
    let metadata = BTreeMap::from([
        (
            RUNTIME_ESTIMATE_KEY.to_string(),
            trace_job.duration_s.to_string(),
        ),
        (TRACE_LINE_KEY.to_string(), trace_job.line.to_string()),
    ]);
    Ok(JobSpec {
        name: trace_job.id.clone(),
        tenant,
        tier,
        world_size: trace_job.num_gpu,
        device_kind,
        memory_per_rank_bytes: 1 << 30,
        run: RunSpec::Command {
            argv: vec!["train".to_string()],
            env: BTreeMap::new(),
        },
        max_restarts: DEFAULT_MAX_RESTARTS,
        metadata,
    })
}
