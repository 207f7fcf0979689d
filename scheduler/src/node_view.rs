//! `NodeView`: what one node's agent must do, derived from the applied state. For every job
//! with ranks on the node, or with an in-flight action that involves the node, it says which
//! ranks run here now, what the action asks of this node (stop ranks, report the checkpoint,
//! start ranks on which devices) and how far every node of the action has got.
//!
//! Agents are level-triggered on this view (DESIGN.md rule 7): they compare it with what runs
//! locally and with what they have already done, so seeing it twice, late or after a restart
//! changes nothing. It is a pure function of the state: no clock, no I/O, no hash order. It
//! reads only the jobs the node index lists for the node (`node_index.rs`), never every job;
//! the full scan is kept as the test oracle and benchmark baseline only.

use crate::action::{ActionKind, ActionOp, Stage};
use crate::ids::{ActionId, DeviceRef, JobId, NodeId};
use crate::job::{CheckpointRef, Job, JobPhase, RunSpec};
use crate::names::NodeName;
use crate::node::{Node, NodeStatus};
use crate::state::ClusterState;
use crate::tier::Tier;
use serde::{Deserialize, Serialize};

/// One rank and the device (by index on this node) it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RankPlacement {
    pub rank: u32,
    pub device_index: u16,
    /// Ranks of this job on the same node before this one (torchrun's LOCAL_RANK).
    pub local_rank: u32,
}

/// What an in-flight action asks of this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAction {
    pub id: ActionId,
    pub kind: ActionKind,
    pub reason: String,
    /// This node's stage of the action.
    pub stage_here: Stage,
    /// Every node of the action and its stage, in node order.
    pub stages: Vec<(NodeId, Stage)>,
    /// Nodes whose current ranks must be stopped (and checkpointed, for actions that
    /// checkpoint) before the new ranks may start.
    pub source_nodes: Vec<NodeId>,
    /// Whether this node's current ranks stop in this action.
    pub stops_here: bool,
    /// Whether the action takes a checkpoint (preempt, migrate, resize).
    pub checkpoints: bool,
    /// Whether this node reports the checkpoint first (it holds rank 0 now); the other nodes
    /// report the same checkpoint once it is agreed.
    pub reports_checkpoint_first: bool,
    /// The checkpoint the nodes agreed on, once the first one reported it.
    pub checkpoint: Option<CheckpointRef>,
    /// Ranks to start here when the action's stop phase is done (empty: none start here).
    pub start_ranks: Vec<RankPlacement>,
    /// The node of rank 0 after the action (MASTER_ADDR), if the action places ranks.
    pub start_master_node: Option<NodeName>,
}

impl NodeAction {
    /// Whether every source node has reached at least `Checkpointed` (or, for actions without
    /// a checkpoint, `Started`): the old ranks are stopped everywhere.
    pub fn sources_stopped(&self) -> bool {
        let needed = if self.checkpoints {
            Stage::Checkpointed
        } else {
            Stage::Started
        };
        self.source_nodes.iter().all(|source| {
            self.stages
                .iter()
                .any(|(node, stage)| node == source && *stage >= needed)
        })
    }
}

/// One job as one node's agent sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeJob {
    pub id: JobId,
    pub name: String,
    pub tier: Tier,
    pub phase: JobPhase,
    pub run: RunSpec,
    pub world_size: u32,
    pub restarts: u32,
    pub max_restarts: u32,
    /// Ranks that run here under the job's current assignment.
    pub ranks_here: Vec<RankPlacement>,
    /// The node of rank 0 under the current assignment (MASTER_ADDR).
    pub master_node: Option<NodeName>,
    /// The checkpoint the job resumes from, if it has one.
    pub checkpoint: Option<CheckpointRef>,
    /// The in-flight action, if it involves this node.
    pub action: Option<NodeAction>,
}

/// Everything one node's agent needs to reconcile, at one applied state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: NodeId,
    pub name: NodeName,
    pub status: NodeStatus,
    /// Jobs with ranks here or an action involving this node, in job order.
    pub jobs: Vec<NodeJob>,
}

/// Ranks of `world_size` spread over `devices` (rank r on devices[r / per_device]) that fall
/// on `node`, with their local ranks.
fn ranks_on(node: NodeId, devices: &[DeviceRef], world_size: u32) -> Vec<RankPlacement> {
    if devices.is_empty() {
        return Vec::new();
    }
    let per_device = world_size / devices.len() as u32;
    assert!(
        per_device > 0,
        "an assignment never has more devices than ranks"
    );
    let mut placements = Vec::new();
    for rank in 0..world_size {
        let device = devices[(rank / per_device) as usize];
        if device.node == node {
            placements.push(RankPlacement {
                rank,
                device_index: device.index,
                local_rank: placements.len() as u32,
            });
        }
    }
    placements
}

impl ClusterState {
    fn node_name_of(&self, devices: &[DeviceRef]) -> Option<NodeName> {
        let first = devices.first()?;
        self.node(first.node).map(|n| n.name.clone())
    }

    fn node_action(&self, job: &Job, node: NodeId) -> Option<NodeAction> {
        let action = self.action(job.action?)?;
        let &stage_here = action.nodes.get(&node)?;
        let source_nodes: Vec<NodeId> = job.nodes().into_iter().collect();
        let targets = action.op.target_devices().unwrap_or(&[]);
        let checkpoints = matches!(
            action.op,
            ActionOp::Preempt { .. } | ActionOp::Migrate { .. } | ActionOp::Resize { .. }
        );
        // A place or resume action has no running ranks to stop: its devices are already the
        // job's assignment, and they are the ones to start on.
        let starts_fresh = matches!(action.op, ActionOp::Place { .. } | ActionOp::Resume { .. });
        let (source_nodes, start_ranks) = if starts_fresh {
            (
                Vec::new(),
                ranks_on(node, &job.assignment, job.spec.world_size),
            )
        } else {
            (source_nodes, ranks_on(node, targets, job.spec.world_size))
        };
        let stops_here = source_nodes.contains(&node);
        let reports_checkpoint_first =
            checkpoints && job.assignment.first().map(|d| d.node) == Some(node);
        let start_master_node = if starts_fresh {
            self.node_name_of(&job.assignment)
        } else {
            self.node_name_of(targets)
        };
        Some(NodeAction {
            id: action.id,
            kind: action.op.kind(),
            reason: action.reason.clone(),
            stage_here,
            stages: action.nodes.iter().map(|(n, s)| (*n, *s)).collect(),
            source_nodes,
            stops_here,
            checkpoints,
            reports_checkpoint_first,
            checkpoint: action.checkpoint.clone(),
            start_ranks,
            start_master_node,
        })
    }

    /// What `job` means to node `id`, or `None` if it has no ranks there and no action that
    /// involves it.
    fn node_job(&self, job: &Job, id: NodeId) -> Option<NodeJob> {
        let holds_here = job.assignment.iter().any(|d| d.node == id);
        let action = self.node_action(job, id);
        if !holds_here && action.is_none() {
            return None;
        }
        // Ranks of a place/resume run only once the action completes; until then they are
        // the action's to start.
        let ranks_here = match job.phase {
            JobPhase::Starting => Vec::new(),
            _ => ranks_on(id, &job.assignment, job.spec.world_size),
        };
        Some(NodeJob {
            id: job.id,
            name: job.spec.name.clone(),
            tier: job.spec.tier,
            phase: job.phase,
            run: job.spec.run.clone(),
            world_size: job.spec.world_size,
            restarts: job.restarts,
            max_restarts: job.spec.max_restarts,
            ranks_here,
            master_node: self.node_name_of(&job.assignment),
            checkpoint: job.checkpoint.clone(),
            action,
        })
    }

    /// The view of node `name`, or `None` if no such node is registered. Costs O(jobs that
    /// matter to the node), through the node index: no scan of every job.
    pub fn node_view(&self, name: &NodeName) -> Option<NodeView> {
        let node = self.node_by_name(name)?;
        let jobs = self
            .node_index
            .jobs_on(node.id)
            .filter_map(|job| self.jobs.get(&job));
        Some(self.view_of(node, jobs))
    }

    /// The same view computed by scanning every job: O(all jobs). It is the oracle the tests
    /// compare `node_view` with and the baseline of `benches/node_view.rs`; never call it on a
    /// production path.
    #[doc(hidden)]
    pub fn node_view_by_full_scan(&self, name: &NodeName) -> Option<NodeView> {
        let node = self.node_by_name(name)?;
        Some(self.view_of(node, self.jobs()))
    }

    /// `node`'s view built from `candidates`, the jobs that may matter to it.
    fn view_of<'a>(&'a self, node: &Node, candidates: impl Iterator<Item = &'a Job>) -> NodeView {
        let jobs = candidates
            .filter_map(|job| self.node_job(job, node.id))
            .collect();
        NodeView {
            node: node.id,
            name: node.name.clone(),
            status: node.status,
            jobs,
        }
    }
}
