//! Singularity's wire contract: the `.proto` files of the client, operator and
//! replica-to-replica gRPC services, the tonic/prost code generated from them, and the small
//! conventions around them (the leader-hint header), and the `Client` of the `Control` API that
//! the CLI, the node agent and tests share (leader following, exactly-once retries).
//!
//! It must not hold logic beyond wire conventions and that client: no scheduling decisions, no
//! storage.

pub mod agents;
pub mod channel;
pub mod client;
pub mod error;
pub mod limits;

pub use error::ClientError;

/// Generated messages, clients and servers of package `singularity.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("singularity.v1");
}

/// The subset of etcd's v3 KV API the load generator uses to compare against etcd.
pub mod etcd {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("etcdserverpb");
}

/// The response header in which a follower names the leader's address.
pub const LEADER_HEADER: &str = "x-singularity-leader";

/// `NodeHeartbeatReply.status` for a node the leader does not know (not registered); the
/// other answers are a registered node's status as it displays (`up`, `draining`, `down`).
pub const NODE_STATUS_UNKNOWN: &str = "unknown";

/// Whether a `NodeHeartbeatReply.status` tells the node's agent to register it again: the
/// leader does not know the node, or has declared it down.
pub fn heartbeat_asks_to_register(status: &str) -> bool {
    status == NODE_STATUS_UNKNOWN || status == singularity_scheduler::NodeStatus::Down.to_string()
}

/// Read queries the `Control.Read` RPC understands.
pub mod query {
    pub const JOBS: &str = "jobs";
    pub const JOB: &str = "job";
    pub const NODES: &str = "nodes";
    pub const CLUSTER: &str = "cluster";
    /// Why a job is where it is: which check turned away how many nodes, its SLA attainment
    /// (a JSON string of text lines).
    pub const EXPLAIN: &str = "explain";
}
