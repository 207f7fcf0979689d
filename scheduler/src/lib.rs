//! Singularity's scheduler core: pure, synchronous and deterministic.
//!
//! It holds the model (nodes, devices, tenants, jobs, plans and actions), the `Command`s that
//! are the payload of every log entry, `ClusterState::apply` (the replicated state machine:
//! deterministic, re-validating every plan, exactly-once for client retries), the invariants
//! that must hold after every entry, a digest of the whole state, and the byte encodings of
//! entries and snapshots.
//!
//! It must not depend on tokio, tonic, rocksdb or openraft (a test checks the dependency tree),
//! must not read a clock or draw random numbers, and must not let hash-map order reach a result.

pub mod action;
mod apply_job;
mod apply_node;
mod apply_plan;
mod apply_progress;
pub mod codec;
pub mod command;
pub mod error;
pub mod evaluations;
pub mod ids;
pub mod invariants;
pub mod job;
pub mod ledger;
pub mod limits;
pub mod names;
pub mod node;
mod node_index;
pub mod node_view;
pub mod outcome;
pub mod planner;
pub mod sim;
pub mod state;
pub mod testkit;
pub mod tier;

pub use action::{Action, ActionKind, ActionOp, Plan, PlannedAction, Progress, Stage};
pub use command::{ClientRequest, Command, Entry, JobExit, FORMAT_VERSION};
pub use error::SchedulerError;
pub use evaluations::{evaluations_for, silent_nodes, EvaluationQueue};
pub use ids::{ActionId, ClientId, DeviceRef, JobId, NodeId};
pub use invariants::InvariantViolation;
pub use job::{CheckpointRef, Job, JobPhase, JobSpec, RunSpec, SlaLedger};
pub use ledger::{SlaTotals, TierLedger};
pub use names::{DeviceKind, LocalityDomain, NodeName, TenantName};
pub use node::{Device, DeviceHealth, DeviceSpec, Node, NodeStatus};
pub use node_view::{NodeAction, NodeJob, NodeView, RankPlacement};
pub use outcome::{CommittedAction, Effect, Outcome, RejectedAction, Rejection};
pub use state::{ClientSession, ClusterState, Counters, StateDigest};
pub use tier::Tier;
