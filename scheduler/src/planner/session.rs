//! `Session`: the working memory of one `plan` call: the fleet view, the actions chosen so far,
//! the jobs they touch (one action per job), the devices reserved for pending jobs by actions in
//! flight, the bound on actions per plan, and what the plan has learnt so far (shapes that do
//! not fit, blocked jobs nobody can make room for).
//!
//! It lives for one call and is never shared; it reads the state and never changes it.

use super::config::PolicyConfig;
use super::reclaim::Reclaimable;
use super::victims::{class_count, class_of, victim_key};
use super::view::FleetView;
use crate::action::{ActionOp, PlannedAction};
use crate::ids::{DeviceRef, JobId, NodeId};
use crate::job::{Job, JobPhase, JobSpec};
use crate::limits::MAX_REASON_BYTES;
use crate::state::ClusterState;
use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) struct Session<'a> {
    pub state: &'a ClusterState,
    pub config: &'a PolicyConfig,
    pub view: FleetView<'a>,
    pub actions: Vec<PlannedAction>,
    /// Jobs that already have an action in this plan.
    pub touched: BTreeSet<JobId>,
    /// Devices that actions in flight (preempts, shrinks) will free for a pending job.
    pub reserved_for: BTreeMap<JobId, Vec<DeviceRef>>,
    /// Per (device kind, memory per rank): the smallest gang found not to fit in this plan.
    no_fit: BTreeMap<(String, u64), usize>,
    /// Pending jobs with nothing in flight, not cancelled, in id order.
    pub pending: Vec<&'a Job>,
    /// Running jobs with nothing in flight, not cancelled, in id order.
    pub running: Vec<&'a Job>,
    /// Running jobs a client cancelled, with nothing in flight.
    pub cancelled: Vec<&'a Job>,
    /// Running jobs in victim order (built on first use).
    victim_pool: Option<Vec<&'a Job>>,
    /// Devices held per node by running jobs, per yield class (`victims::class_of`; built on
    /// first use).
    held_by_class: OnceCell<BTreeMap<NodeId, Vec<usize>>>,
    /// Blocked jobs that tried to make room in this plan.
    pub room_attempts: usize,
    /// Per `reclaim::RoomKey` of a blocked job: whether any running job could give it room.
    pub reclaimable: Reclaimable,
}

/// Cuts a reason to the apply limit on a character boundary.
fn bounded(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

/// Devices that actions in flight (preempts and shrinks with `for_job`) will free for each
/// pending beneficiary. A shrink past its checkpoint has already freed them (its assignment is
/// its target, so it reserves nothing more) and a preemption frees them as it completes; from
/// then on they are free in the view, and the pending job holds them itself
/// (`pending::wait_for_room`).
pub(crate) fn reservations(state: &ClusterState) -> BTreeMap<JobId, Vec<DeviceRef>> {
    let mut reserved_for: BTreeMap<JobId, Vec<DeviceRef>> = BTreeMap::new();
    for action in state.actions() {
        let (for_job, keep): (Option<JobId>, &[DeviceRef]) = match &action.op {
            ActionOp::Preempt { for_job } => (*for_job, &[]),
            ActionOp::Resize { to, for_job } => (*for_job, to.as_slice()),
            _ => (None, &[]),
        };
        let Some(beneficiary) = for_job else { continue };
        let waiting = state
            .job(beneficiary)
            .is_some_and(|j| j.phase == JobPhase::Pending);
        let Some(victim) = state.job(action.job) else {
            continue;
        };
        if waiting {
            let freed = victim.assignment.iter().filter(|d| !keep.contains(d));
            reserved_for.entry(beneficiary).or_default().extend(freed);
        }
    }
    reserved_for
}

impl<'a> Session<'a> {
    pub fn new(state: &'a ClusterState, config: &'a PolicyConfig) -> Self {
        let reserved_for = reservations(state);
        let (mut pending, mut running, mut cancelled) = (Vec::new(), Vec::new(), Vec::new());
        for job in state.jobs() {
            if job.action.is_some() {
                continue;
            }
            match (job.phase, job.cancel_requested) {
                (JobPhase::Pending, false) => pending.push(job),
                (JobPhase::Running, false) => running.push(job),
                (JobPhase::Running, true) => cancelled.push(job),
                _ => {}
            }
        }
        Session {
            pending,
            running,
            cancelled,
            state,
            config,
            view: FleetView::build(state),
            actions: Vec::new(),
            touched: BTreeSet::new(),
            reserved_for,
            no_fit: BTreeMap::new(),
            victim_pool: None,
            held_by_class: OnceCell::new(),
            room_attempts: 0,
            reclaimable: Reclaimable::default(),
        }
    }

    /// Whether the plan has reached its action bound.
    pub fn full(&self) -> bool {
        self.actions.len() >= self.config.action_limit()
    }

    /// Whether `job` can take an action in this plan: none in flight, none planned, not
    /// being cancelled.
    pub fn is_free(&self, job: &Job) -> bool {
        job.action.is_none() && !job.cancel_requested && !self.touched.contains(&job.id)
    }

    /// Adds an action, taking the devices it targets out of the view. Returns false (and adds
    /// nothing) when the plan is full or the job already has an action in it.
    pub fn push(&mut self, job: JobId, op: ActionOp, reason: String) -> bool {
        if self.full() || self.touched.contains(&job) {
            return false;
        }
        if let Some(target) = op.target_devices() {
            self.view.take(target);
        }
        self.touched.insert(job);
        self.actions.push(PlannedAction {
            job,
            op,
            reason: bounded(reason),
        });
        true
    }

    fn shape(spec: &JobSpec) -> (String, u64) {
        (
            spec.device_kind.as_str().to_string(),
            spec.memory_per_rank_bytes,
        )
    }

    /// Whether a gang of `count` devices of this spec's shape is known not to fit now.
    pub fn known_not_to_fit(&self, spec: &JobSpec, count: usize) -> bool {
        self.no_fit
            .get(&Self::shape(spec))
            .is_some_and(|&smallest| count >= smallest)
    }

    /// Records that no gang of `count` devices of this spec's shape fits now.
    pub fn remember_no_fit(&mut self, spec: &JobSpec, count: usize) {
        let entry = self.no_fit.entry(Self::shape(spec)).or_insert(count);
        *entry = (*entry).min(count);
    }

    /// Running jobs without an action in flight, in victim order (`victims::victim_key`).
    pub fn victim_pool(&mut self) -> Vec<&'a Job> {
        if self.victim_pool.is_none() {
            // Keys are computed once per job (they divide), and unique (they end in the id).
            let mut keyed: Vec<_> = self.running.iter().map(|j| (victim_key(j), *j)).collect();
            keyed.sort_unstable_by_key(|(key, _)| *key);
            self.victim_pool = Some(keyed.into_iter().map(|(_, j)| j).collect());
        }
        self.victim_pool.clone().unwrap_or_default()
    }

    /// Devices held on each node by running jobs without an action in flight, per yield class.
    pub fn held_by_class(&self) -> &BTreeMap<NodeId, Vec<usize>> {
        let running = &self.running;
        let config = self.config;
        self.held_by_class.get_or_init(|| {
            let classes = class_count(config);
            let mut held: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
            for job in running {
                let class = class_of(config, job);
                for d in &job.assignment {
                    let counts = held.entry(d.node).or_insert_with(|| vec![0; classes]);
                    if let Some(count) = counts.get_mut(class) {
                        *count += 1;
                    }
                }
            }
            held
        })
    }

    /// Devices in flight toward `job` (it is pending and others are making room for it).
    pub fn reserved(&self, job: JobId) -> &[DeviceRef] {
        self.reserved_for.get(&job).map_or(&[], Vec::as_slice)
    }
}
