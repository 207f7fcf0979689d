//! The trace-replay simulator core: replays a job trace through a `Policy` and the real
//! `ClusterState::apply` on a simulated clock, with a cost model for checkpoint, restore,
//! migration and splicing, and reports utilisation, completion times and SLA attainment.
//!
//! It must stay pure and deterministic like the rest of the crate: no file or terminal I/O
//! (the binary reads the trace and draws the progress bar), no wall clock (planner latency is
//! measured through an injected `Stopwatch`), no randomness (tiers come from a stable hash).
//!
//! - `trace`: the ITP trace format and its parser;
//! - `tiers`: FNV-1a tier assignment and the `--tier-mix` parser;
//! - `cost`: the cost model (see its header for the formulas);
//! - `config`: fleet shape, limits and errors;
//! - `engine`, `work`, `report`: the discrete-event loop, per-job work, the report;
//! - `metrics`, `stopwatch`: what a run reports and how latency is measured;
//! - `premium_bound`: how many premium jobs must miss their target under any policy;
//! - `baselines`: fifo, EASY backfill and Tiresias as `Policy` implementations.

pub mod baselines;
pub mod config;
pub mod cost;
pub mod engine;
pub mod metrics;
pub mod premium_bound;
mod report;
pub mod stopwatch;
pub mod tiers;
pub mod trace;
pub mod work;

pub use config::{SimConfig, SimError, MAX_EVENTS_PER_RUN};
pub use cost::CostModel;
pub use engine::{SimProgress, Simulator, StepStatus};
pub use metrics::Report;
pub use premium_bound::PremiumBound;
pub use stopwatch::{FakeStopwatch, Stopwatch};
pub use tiers::TierMix;
pub use trace::{parse_trace, TraceError, TraceJob};

use crate::planner::Policy;

/// Policy names `policy_by_name` knows, Singularity's first.
pub const POLICY_NAMES: [&str; 4] = ["singularity", "fifo", "backfill", "tiresias"];

/// A fresh policy by name (`singularity`, `fifo`, `backfill` or `tiresias`).
pub fn policy_by_name(name: &str) -> Option<Box<dyn Policy>> {
    match name {
        "singularity" => Some(Box::new(crate::planner::SingularityPolicy::new())),
        "fifo" => Some(Box::new(baselines::Fifo::new())),
        "backfill" => Some(Box::new(baselines::Backfill::new())),
        "tiresias" => Some(Box::new(baselines::Tiresias::new())),
        _ => None,
    }
}
