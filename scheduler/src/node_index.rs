//! `NodeIndex`: for every node, the jobs that matter to its agent (ranks assigned there, or an
//! in-flight action whose nodes include it), so `ClusterState::node_view` costs O(jobs on the
//! node) instead of a scan of every job.
//!
//! It is derived data: it is not replicated, not encoded in snapshots and not part of the
//! digest; `ClusterState` rebuilds it when a snapshot is decoded and keeps it current in the
//! shared transitions that change a job's assignment or action (`ClusterState::reindex_job`).
//! `check_invariants` compares it with a full scan. It must not hold anything that is not a
//! pure function of the replicated state, and it uses ordered collections only.

use crate::ids::{JobId, NodeId};
use crate::job::Job;
use crate::state::ClusterState;
use std::collections::BTreeSet;

/// (node, job) pairs, and the same pairs as (job, node) so a job's entries can be replaced
/// without a scan. Flat ordered sets rather than maps of sets: an update allocates no per-node
/// or per-job collection, and a node's jobs are one range, in job order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NodeIndex {
    by_node: BTreeSet<(NodeId, JobId)>,
    by_job: BTreeSet<(JobId, NodeId)>,
}

impl NodeIndex {
    /// Records that `job` matters to exactly `nodes` (none: it is forgotten). Costs
    /// O((old + new nodes of the job) x log n).
    pub(crate) fn set_job(&mut self, job: JobId, nodes: BTreeSet<NodeId>) {
        let old: Vec<NodeId> = self.nodes_of(job).collect();
        if old.iter().eq(nodes.iter()) {
            return;
        }
        for &node in old.iter().filter(|n| !nodes.contains(n)) {
            self.by_job.remove(&(job, node));
            self.by_node.remove(&(node, job));
        }
        for &node in nodes.iter().filter(|n| old.binary_search(n).is_err()) {
            self.by_job.insert((job, node));
            self.by_node.insert((node, job));
        }
    }

    /// The jobs that matter to `node`, in job order.
    pub(crate) fn jobs_on(&self, node: NodeId) -> impl Iterator<Item = JobId> + '_ {
        self.by_node
            .range((node, JobId(u64::MIN))..=(node, JobId(u64::MAX)))
            .map(|&(_, job)| job)
    }

    /// The nodes `job` matters to, in node order.
    fn nodes_of(&self, job: JobId) -> impl Iterator<Item = NodeId> + '_ {
        self.by_job
            .range((job, NodeId(u32::MIN))..=(job, NodeId(u32::MAX)))
            .map(|&(_, node)| node)
    }

    /// The first difference from `expected`, described for a human (for invariant reports).
    pub(crate) fn difference_from(&self, expected: &NodeIndex) -> String {
        if let Some((job, node)) = self.by_job.symmetric_difference(&expected.by_job).next() {
            let have: Vec<NodeId> = self.nodes_of(*job).collect();
            let want: Vec<NodeId> = expected.nodes_of(*job).collect();
            return format!(
                "{job} is indexed on nodes {have:?}, but matters to {want:?} (first at {node})"
            );
        }
        if let Some((node, job)) = self.by_node.symmetric_difference(&expected.by_node).next() {
            return format!("{node} and {job} are paired in one direction of the index only");
        }
        "none".to_string()
    }
}

impl ClusterState {
    /// The nodes `job` matters to: those of its assignment and those its in-flight action
    /// involves. This is the definition the index and `node_view` share.
    pub(crate) fn nodes_involving(&self, job: &Job) -> BTreeSet<NodeId> {
        let mut nodes: BTreeSet<NodeId> = job.assignment.iter().map(|d| d.node).collect();
        if let Some(action) = job.action.and_then(|a| self.actions.get(&a)) {
            nodes.extend(action.nodes.keys().copied());
        }
        nodes
    }

    /// Brings the index up to date for one job after its assignment or action changed (or it
    /// was forgotten). The shared transitions that change either call it: `commit_action`,
    /// `complete_action`, `release_devices`, `drop_action`, and `finish_job` when it forgets a
    /// job. `check_invariants` catches a path that does not.
    pub(crate) fn reindex_job(&mut self, id: JobId) {
        let nodes = match self.jobs.get(&id) {
            Some(job) => self.nodes_involving(job),
            None => BTreeSet::new(),
        };
        self.node_index.set_job(id, nodes);
    }

    /// The index built from scratch by a scan of every job: used after decoding a snapshot and
    /// as the oracle the invariant check compares the maintained index with. O(jobs).
    pub(crate) fn scanned_node_index(&self) -> NodeIndex {
        let mut index = NodeIndex::default();
        for job in self.jobs.values() {
            index.set_job(job.id, self.nodes_involving(job));
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{devices_of, job_spec, Fleet, H100_MEMORY_BYTES};
    use crate::tier::Tier;

    fn nodes(ids: &[u32]) -> BTreeSet<NodeId> {
        ids.iter().map(|&n| NodeId(n)).collect()
    }

    #[test]
    fn replacing_and_forgetting_a_job_leaves_no_empty_entries() {
        let mut index = NodeIndex::default();
        index.set_job(JobId(1), nodes(&[1, 2]));
        index.set_job(JobId(2), nodes(&[2]));
        assert_eq!(
            index.jobs_on(NodeId(2)).collect::<Vec<_>>(),
            [JobId(1), JobId(2)]
        );
        index.set_job(JobId(1), nodes(&[3]));
        assert_eq!(index.jobs_on(NodeId(1)).count(), 0);
        assert_eq!(index.jobs_on(NodeId(2)).collect::<Vec<_>>(), [JobId(2)]);
        assert_eq!(index.jobs_on(NodeId(3)).collect::<Vec<_>>(), [JobId(1)]);
        index.set_job(JobId(1), BTreeSet::new());
        index.set_job(JobId(2), BTreeSet::new());
        assert_eq!(index, NodeIndex::default());
    }

    #[test]
    fn the_invariant_check_catches_a_stale_index_and_decode_rebuilds_it() {
        let mut fleet = Fleet::new();
        let ids = fleet.add_nodes("gpu", 2, 4, "h100", H100_MEMORY_BYTES, 2);
        let mut devices = devices_of(ids[0], 0, 2);
        devices.extend(devices_of(ids[1], 0, 2));
        let job = fleet.run_job(job_spec("j", Tier::Standard, 4, "h100"), devices);
        assert_eq!(
            fleet.state.node_index.jobs_on(ids[1]).collect::<Vec<_>>(),
            [job]
        );
        fleet.state.check_invariants().expect("maintained index");

        let mut stale = fleet.state.clone();
        stale.node_index.set_job(job, nodes(&[ids[0].0]));
        let violation = stale
            .check_invariants()
            .expect_err("a stale index is caught");
        assert!(violation.0.contains("node index"), "{violation}");

        // The index is not encoded: a decoded snapshot rebuilds it, and the digest ignores it.
        assert_eq!(stale.digest(), fleet.state.digest());
        let restored = ClusterState::decode_snapshot(&stale.encode_snapshot().unwrap()).unwrap();
        assert_eq!(restored.node_index, fleet.state.node_index);
    }
}
