//! openraft's type configuration for Singularity: the log's application data is a `Proposal`
//! (one scheduler `Entry`, or a batch of client writes committed together), the state
//! machine's response one `Outcome` per scheduler entry. It must not hold behaviour.

use crate::proposal::{Outcomes, Proposal};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// Singularity's openraft types.
    pub TypeConfig:
        D = Proposal,
        R = Outcomes,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A replica's id.
pub type NodeId = u64;
/// A running Raft node.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;
/// A log entry as openraft sees it.
pub type LogEntry = openraft::Entry<TypeConfig>;
/// openraft's storage error for our node id.
pub type StorageError = openraft::StorageError<NodeId>;
/// Membership as stored with the applied state.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// What openraft reports about a replica (term, leader, log, replication progress).
pub type Metrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;
