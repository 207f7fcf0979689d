//! The replicated control plane: openraft's type configuration, the RocksDB log store and the
//! state machine that wraps `singularity_scheduler::ClusterState`, the tonic network between
//! replicas, and the server (client API, operator API, linearizable reads, metrics).
//!
//! It must not make scheduling decisions of its own (the pure `scheduler` crate does) and must
//! never acknowledge a log append or a vote before RocksDB has synced it (DESIGN.md rule 2).

pub mod error;
pub mod limits;
pub mod network;
pub mod oplog;
pub mod proposal;
pub mod server;
pub mod store;
pub mod types;

pub use error::RaftError;
/// The client of the `Control` API lives in `singularity_proto` (the node agent uses it too);
/// re-exported here for the binary and the tests.
pub use singularity_proto::client;
pub use types::{LogId, NodeId, Raft, TypeConfig};
