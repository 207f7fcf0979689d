//! The leader's queue of evaluations: what to plan next. It is fed from applied entries (a
//! job submitted, an action finished, a migrate or resize that freed devices at its checkpoint,
//! a node down...), rebuilt from the replicated state when a replica becomes leader, and drained
//! by the scheduling loop, which plans each evaluation and proposes the plan as one entry.
//!
//! Pure and deterministic like the rest of the crate: it holds no clock (callers pass leader
//! time in) and never changes the state. It is bounded (`MAX_QUEUED_EVALUATIONS`): past the
//! limit it collapses into one `Tick`, which re-examines everything, so nothing is lost.

use crate::job::JobPhase;
use crate::names::NodeName;
use crate::node::NodeStatus;
use crate::outcome::{Effect, Outcome};
use crate::planner::Evaluation;
use crate::state::ClusterState;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Evaluations waiting at once; beyond this the queue collapses into one `Tick`.
pub const MAX_QUEUED_EVALUATIONS: usize = 65_536;

/// The evaluations an applied entry's outcome calls for.
pub fn evaluations_for(outcome: &Outcome) -> Vec<Evaluation> {
    let Outcome::Accepted(effect) = outcome else {
        return Vec::new();
    };
    match effect {
        Effect::JobSubmitted { job } => vec![Evaluation::JobSubmitted(*job)],
        // A cancel that held nothing freed nothing; one that holds devices needs a stop.
        Effect::JobCancelled { job, immediately } => {
            if *immediately {
                Vec::new()
            } else {
                vec![Evaluation::JobCancelled(*job)]
            }
        }
        Effect::NodeRegistered { node, .. } => vec![Evaluation::NodeUp(*node)],
        Effect::NodeStatusChanged { node, status } => vec![match status {
            NodeStatus::Draining => Evaluation::NodeDraining(*node),
            NodeStatus::Up => Evaluation::NodeUp(*node),
            NodeStatus::Down => Evaluation::NodeDown(*node),
        }],
        Effect::NodeMarkedDown { node, .. } => vec![Evaluation::NodeDown(*node)],
        Effect::NodeHealthRecorded { node, jobs_lost } if !jobs_lost.is_empty() => {
            vec![Evaluation::NodeDown(*node)]
        }
        Effect::ProgressRecorded {
            action,
            job,
            finished: true,
            ..
        } => vec![Evaluation::ActionFinished {
            action: *action,
            job: *job,
        }],
        // A move past its checkpoint freed the devices it gives up, before it completes.
        Effect::ActionCheckpointed {
            action,
            job,
            released,
            ..
        } if !released.is_empty() => vec![Evaluation::ActionCheckpointed {
            action: *action,
            job: *job,
        }],
        // Devices were freed, or a job went back to pending after a crash.
        Effect::JobExitRecorded { .. } => vec![Evaluation::Tick],
        // Part of a plan no longer fitted: look again on the fresher state.
        Effect::PlanApplied { rejected, .. } if !rejected.is_empty() => vec![Evaluation::Tick],
        _ => Vec::new(),
    }
}

/// Nodes an up-to-date leader should declare down: alive, and silent for longer than
/// `heartbeat_timeout_ms` at leader time `now_ms`. A node was last heard at the later of its
/// last logged report (registration or health change) and `last_heard_ms`, the heartbeats the
/// leader heard (they are not logged). In node-id order.
pub fn silent_nodes(
    state: &ClusterState,
    now_ms: u64,
    heartbeat_timeout_ms: u64,
    last_heard_ms: &BTreeMap<NodeName, u64>,
) -> Vec<NodeName> {
    state
        .nodes()
        .filter(|n| n.status.is_alive())
        .filter(|n| {
            let heard_ms = last_heard_ms.get(&n.name).copied().unwrap_or(0);
            now_ms.saturating_sub(n.last_heartbeat_ms.max(heard_ms)) > heartbeat_timeout_ms
        })
        .map(|n| n.name.clone())
        .collect()
}

/// A bounded, de-duplicated FIFO of evaluations.
#[derive(Clone, Debug, Default)]
pub struct EvaluationQueue {
    order: VecDeque<Evaluation>,
    queued: BTreeSet<Evaluation>,
    /// Set when the queue overflowed: the next pop is a `Tick` that covers everything.
    collapsed: bool,
}

impl EvaluationQueue {
    pub fn new() -> Self {
        EvaluationQueue::default()
    }

    /// What a new leader must look at: every pending job and every job cancelled while holding
    /// devices, then a `Tick` for growth and rebalancing. Actions in flight need nothing: their
    /// completion reports will enqueue what follows.
    pub fn rebuilt_from(state: &ClusterState) -> Self {
        let mut queue = EvaluationQueue::new();
        for job in state.jobs() {
            if job.phase == JobPhase::Pending {
                queue.push(Evaluation::JobSubmitted(job.id));
            } else if job.cancel_requested && job.action.is_none() && !job.phase.is_terminal() {
                queue.push(Evaluation::JobCancelled(job.id));
            }
        }
        queue.push(Evaluation::Tick);
        queue
    }

    /// Adds an evaluation unless the same one is already waiting.
    pub fn push(&mut self, evaluation: Evaluation) {
        if self.collapsed || self.queued.contains(&evaluation) {
            return;
        }
        if self.order.len() >= MAX_QUEUED_EVALUATIONS {
            self.order.clear();
            self.queued.clear();
            self.collapsed = true;
            return;
        }
        self.queued.insert(evaluation.clone());
        self.order.push_back(evaluation);
    }

    pub fn extend(&mut self, evaluations: impl IntoIterator<Item = Evaluation>) {
        for evaluation in evaluations {
            self.push(evaluation);
        }
    }

    /// The next evaluation, oldest first.
    pub fn pop(&mut self) -> Option<Evaluation> {
        if self.collapsed {
            self.collapsed = false;
            return Some(Evaluation::Tick);
        }
        let evaluation = self.order.pop_front()?;
        self.queued.remove(&evaluation);
        Some(evaluation)
    }

    pub fn len(&self) -> usize {
        self.order.len() + usize::from(self.collapsed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ActionId, JobId, NodeId};
    use crate::testkit::{devices_of, job_spec, Fleet, H100_MEMORY_BYTES};
    use crate::{ActionOp, Command, Tier};

    #[test]
    fn entries_map_to_evaluations() {
        let submitted = Outcome::Accepted(Effect::JobSubmitted { job: JobId(3) });
        assert_eq!(
            evaluations_for(&submitted),
            vec![Evaluation::JobSubmitted(JobId(3))]
        );
        let finished = Outcome::Accepted(Effect::ProgressRecorded {
            action: ActionId(9),
            job: JobId(3),
            finished: true,
            job_phase: JobPhase::Running,
        });
        assert_eq!(
            evaluations_for(&finished),
            vec![Evaluation::ActionFinished {
                action: ActionId(9),
                job: JobId(3)
            }]
        );
        let released = Outcome::Accepted(Effect::ActionCheckpointed {
            action: ActionId(9),
            job: JobId(3),
            released: vec![crate::DeviceRef::new(NodeId(1), 4)],
            job_phase: JobPhase::Resizing,
        });
        assert_eq!(
            evaluations_for(&released),
            vec![Evaluation::ActionCheckpointed {
                action: ActionId(9),
                job: JobId(3)
            }]
        );
        // A resize that grows gives nothing up at its checkpoint: nothing to look at.
        let grown = Outcome::Accepted(Effect::ActionCheckpointed {
            action: ActionId(9),
            job: JobId(3),
            released: Vec::new(),
            job_phase: JobPhase::Resizing,
        });
        assert!(evaluations_for(&grown).is_empty());
        let rejected = Outcome::Rejected(crate::Rejection::UnknownJob { job: JobId(1) });
        assert!(evaluations_for(&rejected).is_empty());
    }

    #[test]
    fn the_queue_deduplicates_and_collapses_when_full() {
        let mut queue = EvaluationQueue::new();
        queue.push(Evaluation::NodeUp(NodeId(1)));
        queue.push(Evaluation::NodeUp(NodeId(1)));
        queue.push(Evaluation::Tick);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop(), Some(Evaluation::NodeUp(NodeId(1))));
        for i in 0..=MAX_QUEUED_EVALUATIONS as u64 {
            queue.push(Evaluation::JobSubmitted(JobId(i)));
        }
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.pop(), Some(Evaluation::Tick));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn a_new_leader_rebuilds_its_queue_from_the_state() {
        let mut fleet = Fleet::new();
        let nodes = fleet.add_nodes("gpu", 1, 8, "h100", H100_MEMORY_BYTES, 1);
        let pending = fleet.submit(job_spec("waiting", Tier::Basic, 4, "h100"));
        let running = fleet.run_job(
            job_spec("running", Tier::Basic, 4, "h100"),
            devices_of(nodes[0], 0, 4),
        );
        fleet.apply(Command::CancelJob { job: running });
        let moving = fleet.submit(job_spec("moving", Tier::Basic, 4, "h100"));
        fleet.commit(
            moving,
            ActionOp::Place {
                devices: devices_of(nodes[0], 4, 4),
            },
            "place",
        );
        let mut queue = EvaluationQueue::rebuilt_from(&fleet.state);
        let drained: Vec<Evaluation> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(
            drained,
            vec![
                Evaluation::JobSubmitted(pending),
                Evaluation::JobCancelled(running),
                Evaluation::Tick
            ]
        );
    }

    #[test]
    fn silent_nodes_are_found_by_leader_time() {
        let mut fleet = Fleet::new();
        fleet.add_nodes("gpu", 2, 8, "h100", H100_MEMORY_BYTES, 1);
        let registered_ms = fleet.state.now_ms();
        let none = BTreeMap::new();
        assert!(silent_nodes(&fleet.state, registered_ms + 5_000, 10_000, &none).is_empty());
        let silent = silent_nodes(&fleet.state, registered_ms + 20_000, 10_000, &none);
        assert_eq!(silent.len(), 2);
        assert_eq!(silent[0].as_str(), "gpu-0");
        // A heartbeat the leader heard (not logged) keeps gpu-1 alive.
        let gpu1 = NodeName::new("gpu-1").unwrap();
        let heard = BTreeMap::from([(gpu1, registered_ms + 15_000)]);
        let silent = silent_nodes(&fleet.state, registered_ms + 20_000, 10_000, &heard);
        assert_eq!(silent.len(), 1);
        assert_eq!(silent[0].as_str(), "gpu-0");
    }
}
