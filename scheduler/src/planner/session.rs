//! `Session`: the working memory of one `plan` call: the fleet view, the actions chosen so far,
//! the jobs they touch (one action per job), the devices reserved for pending jobs by actions in
//! flight, and the bound on actions per plan.
//!
//! It lives for one call and is never shared; it reads the state and never changes it.

use super::config::PolicyConfig;
use super::view::FleetView;
use crate::action::{ActionOp, PlannedAction};
use crate::ids::{DeviceRef, JobId};
use crate::job::{Job, JobPhase};
use crate::limits::MAX_REASON_BYTES;
use crate::state::ClusterState;
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
/// pending beneficiary. Apply forgets the beneficiary once such an action completes, so the
/// pending job holds the freed devices itself in later plans (`pending::wait_for_room`).
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
        Session {
            state,
            config,
            view: FleetView::build(state),
            actions: Vec::new(),
            touched: BTreeSet::new(),
            reserved_for,
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

    /// Devices in flight toward `job` (it is pending and others are making room for it).
    pub fn reserved(&self, job: JobId) -> &[DeviceRef] {
        self.reserved_for.get(&job).map_or(&[], Vec::as_slice)
    }
}
