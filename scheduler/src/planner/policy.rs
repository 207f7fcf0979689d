//! `SingularityPolicy`: the default policy, and the free function `plan` that runs it with the
//! default config. One evaluation runs the whole pipeline over the fleet (level-triggered, so a
//! lost or rejected plan is repaired by the next one, whatever the evaluation's kind), in order:
//!
//! 1. stop running jobs a client cancelled (`Stop`, nothing else for them);
//! 2. move running jobs off draining nodes: migrate, else shrink, else preempt (`drain`);
//! 3. start pending jobs, premium first, then least attained service, then oldest (`pending`):
//!    the whole gang on one node when it fits one node, else packed into the fewest domains and
//!    nodes, best fit; basic and standard may start spliced down to their floor; a standard gang
//!    that belongs on one node may have a node cleared for it (`defrag`); a blocked premium or
//!    standard job makes room from lower tiers (a premium one also from larger premium gangs),
//!    shrinking before preempting (`victims`), and a basic job from basic jobs that have had
//!    much more service; a job with room on its way holds the free devices it will use;
//! 4. grow shrunk jobs on what is still idle (`growth`).
//!
//! Every step reads the `Session` view, so nothing targets a node that is not up and no device
//! is handed out twice; the plan's size is bounded by `PolicyConfig`. It must stay
//! deterministic: no clock, no randomness, ordered collections, ties broken by ids.

use super::config::PolicyConfig;
use super::drain::drain_nodes;
use super::growth::grow_shrunk;
use super::pending::schedule_pending;
use super::session::Session;
use super::{Evaluation, Policy};
use crate::action::{ActionOp, Plan};
use crate::state::ClusterState;

/// Singularity's policy (DESIGN.md; issue 4): gang placement with locality, tiers, shrinking
/// by splicing before preempting, growth on idle capacity, defragmentation, drain handling.
#[derive(Clone, Debug, Default)]
pub struct SingularityPolicy {
    config: PolicyConfig,
}

impl SingularityPolicy {
    /// The policy with the default config (`PolicyConfig::default()`).
    pub fn new() -> Self {
        SingularityPolicy::default()
    }

    pub fn with_config(config: PolicyConfig) -> Self {
        SingularityPolicy { config }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Computes a plan; the same as `Policy::plan`, without needing `&mut self`.
    pub fn compute(
        &self,
        state: &ClusterState,
        evaluation: &Evaluation,
        computed_at_index: u64,
    ) -> Plan {
        let mut s = Session::new(state, &self.config);
        stop_cancelled(&mut s);
        drain_nodes(&mut s);
        schedule_pending(&mut s);
        grow_shrunk(&mut s);
        Plan {
            computed_at_index,
            trigger: evaluation.to_string(),
            actions: s.actions,
        }
    }
}

/// Running jobs a client cancelled get a `Stop` (and nothing else).
fn stop_cancelled(s: &mut Session) {
    for job in s.cancelled.clone() {
        s.push(
            job.id,
            ActionOp::Stop,
            "stopped: cancelled by a client".to_string(),
        );
    }
}

impl Policy for SingularityPolicy {
    fn name(&self) -> &'static str {
        "singularity"
    }

    /// `now_ms` is not needed: the state carries the leader time of its last entry, and the
    /// policy reads ages and ledgers from it.
    fn plan(
        &mut self,
        state: &ClusterState,
        evaluation: &Evaluation,
        _now_ms: u64,
        computed_at_index: u64,
    ) -> Plan {
        self.compute(state, evaluation, computed_at_index)
    }

    fn action_limit(&self) -> usize {
        self.config.action_limit()
    }
}

/// Plans with the default policy (`SingularityPolicy::new()`).
pub fn plan(
    state: &ClusterState,
    evaluation: &Evaluation,
    _now_ms: u64,
    computed_at_index: u64,
) -> Plan {
    SingularityPolicy::new().compute(state, evaluation, computed_at_index)
}
