//! The simulator's configuration (fleet shape, tier mix, cost model, tick period, limits) and
//! its errors.
//!
//! Plain data with validation; it decides nothing and reads nothing from outside.

use super::cost::CostModel;
use super::tiers::TierMix;
use crate::limits::{MAX_DEVICES_PER_NODE, MAX_NODES};
use crate::testkit::H100_MEMORY_BYTES;
use std::fmt;

/// Events one run may process (submissions, agent reports, job exits, ticks); a run that needs
/// more stops with `SimError::EventLimit` instead of running forever.
pub const MAX_EVENTS_PER_RUN: u64 = 50_000_000;
/// Consecutive ticks with jobs waiting, nothing in flight, nothing left to arrive and nothing
/// decided, after which a run is declared stalled.
pub const MAX_IDLE_TICKS: u32 = 10;
/// Default period of the `Tick` evaluation, in simulated milliseconds.
pub const DEFAULT_TICK_MS: u64 = 60_000;

/// How to simulate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    pub devices: u32,
    pub devices_per_node: u32,
    /// Nodes per locality domain (a domain is, say, one rack or one NVLink/IB island).
    pub nodes_per_domain: u32,
    pub tier_mix: TierMix,
    /// Mixed into the tier hash: another seed, another (equally deterministic) tier draw.
    pub seed: u64,
    pub cost: CostModel,
    pub tick_ms: u64,
    pub max_events: u64,
    pub device_kind: String,
    pub device_memory_bytes: u64,
}

impl SimConfig {
    /// A fleet of `devices` devices with every other setting at its default.
    pub fn new(devices: u32) -> Self {
        SimConfig {
            devices,
            devices_per_node: 8,
            nodes_per_domain: 4,
            tier_mix: TierMix::default(),
            seed: 0,
            cost: CostModel::default(),
            tick_ms: DEFAULT_TICK_MS,
            max_events: MAX_EVENTS_PER_RUN,
            device_kind: "gpu".to_string(),
            device_memory_bytes: H100_MEMORY_BYTES,
        }
    }

    /// Checks the fleet shape and limits.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |problem: String| Err(SimError::InvalidConfig(problem));
        if self.devices_per_node == 0 || self.devices_per_node as usize > MAX_DEVICES_PER_NODE {
            return invalid(format!(
                "devices per node must be 1 to {MAX_DEVICES_PER_NODE}, got {}",
                self.devices_per_node
            ));
        }
        if self.devices == 0 || self.devices % self.devices_per_node != 0 {
            return invalid(format!(
                "the fleet must be a positive multiple of {} devices (whole nodes), got {}",
                self.devices_per_node, self.devices
            ));
        }
        if (self.devices / self.devices_per_node) as usize > MAX_NODES {
            return invalid(format!("more than {MAX_NODES} nodes"));
        }
        if self.nodes_per_domain == 0 {
            return invalid("nodes per domain must be at least 1".to_string());
        }
        if self.tick_ms == 0 {
            return invalid("the tick period must be at least 1 ms".to_string());
        }
        if self.max_events == 0 || self.max_events > MAX_EVENTS_PER_RUN {
            return invalid(format!(
                "the event limit must be 1 to {MAX_EVENTS_PER_RUN}, got {}",
                self.max_events
            ));
        }
        Ok(())
    }
}

/// Why a run could not start or could not finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    InvalidConfig(String),
    /// A job needs more devices than the whole fleet has: it could never run.
    JobTooLarge {
        line: usize,
        id: String,
        num_gpu: u32,
        devices: u32,
    },
    /// Apply refused something the simulated world needs (registering a node, submitting a job).
    Refused {
        what: String,
        reason: String,
    },
    EventLimit {
        max_events: u64,
    },
    /// Jobs wait, nothing is in flight or left to arrive, and the policy decides nothing.
    Stalled {
        waiting_jobs: u64,
        now_ms: u64,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::InvalidConfig(problem) => write!(f, "invalid simulation settings: {problem}"),
            SimError::JobTooLarge {
                line,
                id,
                num_gpu,
                devices,
            } => write!(
                f,
                "job {id:?} (trace line {line}) needs {num_gpu} devices but the fleet has only {devices}; use a larger --devices"
            ),
            SimError::Refused { what, reason } => write!(f, "apply refused {what}: {reason}"),
            SimError::EventLimit { max_events } => write!(
                f,
                "the run exceeded {max_events} events; use fewer jobs (--limit-jobs) or a larger fleet"
            ),
            SimError::Stalled {
                waiting_jobs,
                now_ms,
            } => write!(
                f,
                "stalled at simulated second {}: {waiting_jobs} job(s) wait, nothing runs, and the policy plans nothing",
                now_ms / 1000
            ),
        }
    }
}

impl std::error::Error for SimError {}
