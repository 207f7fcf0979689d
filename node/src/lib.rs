//! Everything that runs on a machine of the fleet: the node agent that executes committed
//! actions exactly once, device discovery (NVML and simulated), the device proxy that owns each
//! accelerator, and the worker runtime that training programs link to.
//!
//! It must never depend on the `raft` crate: agents reach the control plane only through its
//! gRPC API. Nothing lives here yet; the agent and device-proxy issues fill it.
