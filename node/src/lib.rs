//! Everything that runs on a machine of the fleet: the node agent that executes committed
//! actions exactly once, device discovery (NVML and simulated), the device proxy that owns each
//! accelerator, and the worker runtime that training programs link to.
//!
//! It must never depend on the `raft` crate: agents reach the control plane only through its
//! gRPC API. Present: the agent (`agent`: registration, heartbeats, the watch of its node's
//! view, exactly-once execution of actions, process ranks, proxied worker ranks with their
//! checkpoints through the device proxies, logs, reconcile after restarts),
//! device discovery (`discovery`), the simulated device, the device proxy with its
//! shared-memory channel and collectives, transparent checkpoints, replica splicing, the worker
//! runtime, the example training job, and the launcher API for proxied ranks.

pub mod agent;
pub mod channel;
pub mod checkpoint;
pub mod collective;
pub mod control;
pub mod device;
pub mod discovery;
pub mod error;
pub mod example;
pub mod launcher;
pub mod limits;
pub mod proxy;
pub mod runtime;
pub mod shm;

pub use error::{NodeError, Result};
