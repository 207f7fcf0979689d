//! `RaftStatus`: a replica's view of its Raft group for `operator raft status` and metrics:
//! members, leader, term, log, commit and applied indexes, and each member's lag as the leader
//! sees it. It must not block on the network; it reads openraft's metrics only.

use crate::types::{Metrics, NodeId};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One member of the group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
    /// The last log index known replicated to it (leader only).
    pub matched_index: Option<u64>,
    /// Entries it is behind the leader's log (leader only).
    pub lag: Option<u64>,
}

/// The status of one replica.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RaftStatus {
    pub id: NodeId,
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    /// Committed index as far as this replica knows (applied on followers is at most this).
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    /// Digest of the applied state (hex).
    pub digest: String,
}

impl RaftStatus {
    /// Builds the status from openraft's metrics, the committed index and the state digest.
    pub fn from_metrics(
        metrics: &Metrics,
        committed_index: Option<u64>,
        digest: String,
    ) -> RaftStatus {
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let matched: BTreeMap<NodeId, Option<u64>> = metrics
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, log)| (*id, log.map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        let last = metrics.last_log_index.unwrap_or(0);
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched_index = if metrics.replication.is_some() {
                    matched.get(id).copied().flatten()
                } else {
                    None
                };
                MemberStatus {
                    id: *id,
                    addr: node.addr.clone(),
                    voter: voters.contains(id),
                    matched_index,
                    lag: metrics
                        .replication
                        .as_ref()
                        .map(|_| last.saturating_sub(matched_index.unwrap_or(0))),
                }
            })
            .collect();
        RaftStatus {
            id: metrics.id,
            state: format!("{:?}", metrics.state),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            committed_index,
            applied_index: metrics.last_applied.map(|l| l.index),
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
            members,
            digest,
        }
    }
}

/// Whether replica `id`, whose metrics these are, leads and knows it does.
pub fn leads(metrics: &Metrics, id: NodeId) -> bool {
    metrics.state == ServerState::Leader && metrics.current_leader == Some(id)
}
