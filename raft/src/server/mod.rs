//! The control-plane server of one replica: its configuration, start-up (open the data dir,
//! start openraft, serve gRPC, bootstrap or join), the client and operator API, status and
//! Prometheus metrics, and clean shutdown. It must not decide scheduling itself.

pub mod config;
pub mod control;
pub mod group_commit;
pub mod liveness;
pub mod metrics;
pub mod node_service;
pub mod replica;
pub mod scheduling;
pub mod status;
pub mod transfer;

pub use config::ServerConfig;
pub use liveness::NodeLiveness;
pub use replica::Replica;
pub use scheduling::{SchedulingConfig, SchedulingLoop};
pub use status::RaftStatus;
pub use transfer::{ProposalGate, TransferOutcome};
